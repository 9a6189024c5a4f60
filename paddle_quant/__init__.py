"""paddle_quant: int8 quantization for PaddlePaddle: legacy static Programs and dygraph Layers.

Drop-in for ``paddleslim.quant``: ``import paddle_quant as quant`` and keep calling
``quant.quant_aware``, ``quant.convert``, ``quant.quant_post``, ``quant.quant_embedding``
with the same dict configs; for dygraph models ``quant.QAT(config)`` replaces ``paddleslim.QAT``.

The public names are imported on first use (PEP 562), so ``import paddle_quant`` and the
command line's config checks do not pay for importing Paddle.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "QuantConfig": ".common.config",
    "as_quant_config": ".common.config",
    "quant_aware": ".qat.quant_aware",
    "convert": ".qat.quant_aware",
    "QAT": ".qat.dygraph",
    "DygraphQATConfig": ".qat.dygraph_config",
    "quant_post": ".ptq.quant_post",
    "quant_post_static": ".ptq.quant_post",
    "PTQResult": ".ptq.quant_post",
    "PTQConfig": ".ptq.config",
    "AccuracyControl": ".ptq.accuracy_control",
    "quant_embedding": ".embedding.quant_embedding",
    "EmbeddingConfig": ".embedding.config",
    "verify": ".deploy.verify",
    "VerifyReport": ".deploy.verify",
    "export_onnx": ".export.onnx",
    "TENSORRT_OP_TYPES": ".common.registry",
    "TRANSFORM_PASS_OP_TYPES": ".common.registry",
    "QUANT_DEQUANT_PASS_OP_TYPES": ".common.registry",
    "PaddleQuantError": ".common.errors",
    "ConfigError": ".common.errors",
    "ConfigTypeError": ".common.errors",
    "NonFiniteError": ".common.errors",
    "ProgramStateError": ".common.errors",
    "ScopeError": ".common.errors",
    "UnsupportedProgramError": ".common.errors",
    "MissingDependencyError": ".common.errors",
    "ExportError": ".common.errors",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    """Import ``name`` on first access and cache it in the module."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    try:
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module 'paddle_quant' has no attribute {name!r}") from None


def __dir__():
    return sorted(set(globals()) | set(__all__))
