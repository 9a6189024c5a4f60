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
    "pool_input",
    "float_pool",
    "anchor_slice",
    "anchor_zero",
    "anchor_bridge",
    "anchored",
    "equalized",
    "smoothed",
    "is_derived",
    "embedding_int_table",
    "embedding_scale",
    "log_dictionary",
    "lookup_codes",
    "pq_codes",
    "pq_codebook",
    "pq_offsets",
    "pq_wide_codes",
    "pq_index",
    "pq_subvectors",
    "pq_xshape",
]

_SUFFIXES = (".quantized", ".dequantized", "@scale", "@zero_point", "@state", "@accum", "@int8", "@frozen", "@window", ".range_out", "@corrected", "@int8_scale",
             "@pool_input", "@float_pool", "@equalized", "@smoothed", "@anchor_slice", "@anchor_zero", "@anchored")


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


def pool_input(name: str) -> str:
    """``name`` as an average pool reads it through its own quantizer (oneDNN's int8 pool input)."""
    return f"{name}@pool_input"


def float_pool(name: str) -> str:
    """The float output of the average pool that writes ``name`` through an ``assign`` (``float_pools``)."""
    return f"{name}@float_pool"


def anchor_slice(name: str) -> str:
    """The first channel of ``name``, sliced to make the zero channel of an anchored conv (passes/anchor_channel.py)."""
    return f"{name}@anchor_slice"


def anchor_zero(name: str) -> str:
    """A channel of zeros shaped like one channel of ``name`` (passes/anchor_channel.py)."""
    return f"{name}@anchor_zero"


def anchor_bridge(name: str) -> str:
    """``name + 0``: a float copy an anchored conv's concat reads instead of an int8 one (passes/anchor_channel.py)."""
    return f"{name}@anchor_bridge"


def anchored(name: str) -> str:
    """``name`` with the zero channel appended, as an anchored conv reads it (passes/anchor_channel.py)."""
    return f"{name}@anchored"


def equalized(name: str) -> str:
    """Copy of parameter ``name`` rescaled per channel by cross-layer equalization (passes/equalize.py)."""
    return f"{name}@equalized"


def input_folded(name: str) -> str:
    """Copy of parameter ``name`` with the affine op its convolution read folded in (passes/input_affine.py)."""
    return f"{name}@input_folded"


def smoothed(name: str) -> str:
    """Copy of parameter ``name`` rescaled per channel by activation smoothing (passes/smooth.py)."""
    return f"{name}@smoothed"


def is_derived(name: str) -> bool:
    """True if ``name`` looks like a variable paddle_quant (or Paddle's passes) derived."""
    return any(suffix in name for suffix in _SUFFIXES)


# ------------------------------------------------------------- quant_embedding
def embedding_int_table(name: str) -> str:
    """Integer (abs_max / log) embedding table made from table ``name`` (PaddleSlim's ``{W}.int``)."""
    return f"{name}.int"


def embedding_scale(name: str) -> str:
    """Per-tensor abs_max scale ``[1]`` of embedding table ``name`` (PaddleSlim's ``{W}.scale``)."""
    return f"{name}.scale"


def log_dictionary(name: str) -> str:
    """The 128-entry magnitude dictionary of a log-quantized table (PaddleSlim's ``{W}.dict``)."""
    return f"{name}.dict"


def lookup_codes(name: str) -> str:
    """Integer output of a lookup on a quantized table; the dequant op then writes ``name`` itself."""
    return f"{name}.int"


def pq_codes(name: str) -> str:
    """Product-quantization codes ``[V, M]`` (int8) of embedding table ``name``."""
    return f"{name}.pq_codes"


def pq_codebook(name: str) -> str:
    """Concatenated product-quantization codebooks ``[M*K, D/M]`` of embedding table ``name``."""
    return f"{name}.pq_codebook"


def pq_offsets(name: str) -> str:
    """int64 ``[M]`` offsets turning stored codes into rows of the concatenated codebook."""
    return f"{name}.pq_offsets"


def pq_wide_codes(name: str) -> str:
    """Looked-up codes of output ``name`` cast to int64."""
    return f"{name}.pq_codes64"


def pq_index(name: str) -> str:
    """Codebook row indices (int64) of the looked-up output ``name``."""
    return f"{name}.pq_index"


def pq_subvectors(name: str) -> str:
    """Looked-up centroids ``[..., M, D/M]`` of output ``name`` before the reshape to ``[..., D]``."""
    return f"{name}.pq_subvectors"


def pq_xshape(name: str) -> str:
    """The ``XShape`` output of the reshape2 that rebuilds output ``name``."""
    return f"{name}.pq_xshape"
