"""Every derived variable name paddle_quant creates comes from here.

The names follow Paddle's own passes (``x.quantized``, ``x@scale`` ...) so the
runtimes and tools that look for them keep working.
"""

from __future__ import annotations

__all__ = [
    "quantized",
    "dequantized",
    "scale",
    "zero_point",
    "state",
    "accum",
    "int_weight",
    "frozen_weight",
    "range_window",
    "range_scratch",
    "global_step",
    "channel_scale",
    "corrected_bias",
    "int8_scale",
    "is_derived",
]

_SUFFIXES = (".quantized", ".dequantized", "@scale", "@zero_point", "@state", "@accum", "@int8", "@frozen", "@window", ".range_out", "@corrected", "@int8_scale")


def quantized(name: str) -> str:
    """Integer-grid tensor produced by quantizing ``name``."""
    return f"{name}.quantized"


def dequantized(name: str) -> str:
    """Float tensor read by the quantized op in place of ``name``: ``{name}.quantized.dequantized``."""
    return f"{quantized(name)}.dequantized"


def scale(name: str) -> str:
    """Persistable scale of ``name`` (per tensor ``[1]`` or per channel ``[C]``)."""
    return f"{name}@scale"


def zero_point(name: str) -> str:
    """Persistable int32 zero point (all zeros: symmetric quantization) for a QDQ op writing ``name``."""
    return f"{name}@zero_point"


def state(name: str) -> str:
    """Moving-average denominator state of the scale of ``name``."""
    return f"{name}@state"


def accum(name: str) -> str:
    """Moving-average numerator accumulator of the scale of ``name``."""
    return f"{name}@accum"


def int_weight(name: str) -> str:
    """Frozen weight stored on the integer grid (int8/int16, or integer-valued float32)."""
    return f"{name}@int8"


def frozen_weight(name: str) -> str:
    """Old-format frozen weight: integer values stored as float32, read directly by the op."""
    return f"{name}@frozen"


def range_window(name: str) -> str:
    """Window buffer of past abs-max values for ``range_abs_max``."""
    return f"{name}@window"


def range_scratch(name: str) -> str:
    """Unused quantized output of the ``fake_quantize_range_abs_max`` statistics op."""
    return f"{name}.range_out"


def global_step() -> str:
    """Shared int64 step counter that ``range_abs_max`` windows index with."""
    return "paddle_quant@global_step"


def channel_scale(name: str) -> str:
    """Per-channel weight scale carried by an old-format post-op dequantizer."""
    return f"{name}@channel_scale"


def corrected_bias(name: str) -> str:
    """Bias with the mean weight-quantization error removed (bias correction)."""
    return f"{name}@corrected"


def int8_scale(name: str) -> str:
    """Scale of a sub-8-bit weight restated for a 127 range (runtimes that assume int8)."""
    return f"{name}@int8_scale"


def is_derived(name: str) -> bool:
    """True if ``name`` looks like a variable paddle_quant (or Paddle's passes) derived."""
    return any(suffix in name for suffix in _SUFFIXES)
