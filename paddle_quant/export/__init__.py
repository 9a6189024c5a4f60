"""Exporters of quantized models for deployment runtimes (ONNX, ...); one module per target."""

__all__ = []
