"""paddle_quant: int8 quantization for PaddlePaddle legacy static Programs.

Drop-in for ``paddleslim.quant``: ``import paddle_quant as quant`` and keep calling
``quant.quant_aware``, ``quant.convert`` with the same dict configs.
"""

from .config import QuantConfig, as_quant_config
from .errors import (
    ConfigError,
    ConfigTypeError,
    NonFiniteError,
    PaddleQuantError,
    ProgramStateError,
    ScopeError,
    UnsupportedProgramError,
)
from .ptq import PTQResult, quant_post, quant_post_static
from .ptq_config import PTQConfig
from .qat import convert, quant_aware
from .registry import QUANT_DEQUANT_PASS_OP_TYPES, TENSORRT_OP_TYPES, TRANSFORM_PASS_OP_TYPES

__version__ = "0.1.0"

__all__ = [
    "QuantConfig",
    "as_quant_config",
    "quant_aware",
    "convert",
    "quant_post",
    "quant_post_static",
    "PTQConfig",
    "PTQResult",
    "TENSORRT_OP_TYPES",
    "TRANSFORM_PASS_OP_TYPES",
    "QUANT_DEQUANT_PASS_OP_TYPES",
    "PaddleQuantError",
    "ConfigError",
    "ConfigTypeError",
    "NonFiniteError",
    "ProgramStateError",
    "ScopeError",
    "UnsupportedProgramError",
]
