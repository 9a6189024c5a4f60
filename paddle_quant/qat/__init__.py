"""Quantization-aware training on legacy static Programs: ``quant_aware`` and ``convert``.

``quant_aware`` plans (:mod:`paddle_quant.passes.plan`) and inserts trainable fake-quant ops
(:mod:`paddle_quant.passes.rewrite`); ``convert`` freezes the trained program for inference
(:mod:`paddle_quant.passes.freeze`). Both live in :mod:`paddle_quant.qat.quant_aware`.
"""

__all__ = []
