"""paddle_quant: int8 quantization for PaddlePaddle legacy static Programs.

Drop-in for ``paddleslim.quant``: ``import paddle_quant as quant`` and keep calling
``quant.quant_aware``, ``quant.convert``, ``quant.quant_post``, ``quant.quant_embedding``
with the same dict configs.

The public names are imported on first use (PEP 562), so ``import paddle_quant`` and the
command line's config checks do not pay for importing Paddle.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "QuantConfig": ".config",
    "as_quant_config": ".config",
    "quant_aware": ".qat",
    "convert": ".qat",
    "quant_post": ".ptq",
    "quant_post_static": ".ptq",
    "PTQResult": ".ptq",
    "PTQConfig": ".ptq_config",
    "quant_embedding": ".embedding",
    "EmbeddingConfig": ".embedding_config",
    "verify": ".verification",
    "VerifyReport": ".verification",
    "export_onnx": ".export.onnx",
    "TENSORRT_OP_TYPES": ".registry",
    "TRANSFORM_PASS_OP_TYPES": ".registry",
    "QUANT_DEQUANT_PASS_OP_TYPES": ".registry",
    "PaddleQuantError": ".errors",
    "ConfigError": ".errors",
    "ConfigTypeError": ".errors",
    "NonFiniteError": ".errors",
    "ProgramStateError": ".errors",
    "ScopeError": ".errors",
    "UnsupportedProgramError": ".errors",
    "MissingDependencyError": ".errors",
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
