"""TensorRT calibration cache: the activation scales of a scale table in TensorRT's text format.

TensorRT (and Paddle-TRT's ``trt_calib_*`` files) store one line per tensor,
``name: XXXXXXXX``, the big-endian hex of a float32 *TensorRT scale*
``threshold / 127`` (real = q * scale), after a header line such as
``TRT-8601-EntropyCalibration2``. Only activations go in the cache: TensorRT
computes weight scales itself. Per-channel or non-8-bit entries cannot be
expressed and are refused.
"""

from __future__ import annotations

import os
import re
import struct
import tempfile
from pathlib import Path

import numpy as np

from ..common.errors import ConfigError
from .scale_table import ScaleTable

__all__ = ["DEFAULT_HEADER", "TENSORRT_CACHE_FILENAME", "tensorrt_scale", "tensorrt_cache_text", "write_tensorrt_cache",
           "read_tensorrt_cache"]

DEFAULT_HEADER = "TRT-8601-EntropyCalibration2"
"""The header TensorRT 8.6 writes for entropy calibration caches."""

TENSORRT_CACHE_FILENAME = "trt_calibration.cache"
"""File name of the cache a post-training run with ``deploy_backend='tensorrt'`` writes next to its model."""

_QMAX = 127
_LINE = re.compile(r"^(?P<name>.+): (?P<hex>[0-9a-fA-F]{8})$")


def tensorrt_scale(threshold: float) -> np.float32:
    """TensorRT's per-tensor scale for an abs-max ``threshold``: ``float32(threshold / 127)``."""
    return np.float32(np.float64(np.float32(threshold)) / _QMAX)


def _hex(value: np.float32) -> str:
    return struct.pack(">f", float(value)).hex()


def _lines(table: ScaleTable) -> list[str]:
    lines = []
    for name, entry in table.tensors.items():
        if entry.kind == "weight":
            continue
        if entry.bits != 8 or len(entry.scale) != 1:
            raise ConfigError(f"tensor {name!r} has bits={entry.bits} and {len(entry.scale)} scale(s); "
                              "a TensorRT cache holds 8-bit per-tensor activation scales only")
        if ":" in name or "\n" in name:
            raise ConfigError(f"tensor name {name!r} cannot be written to a TensorRT cache (contains ':' or a newline)")
        lines.append(f"{name}: {_hex(tensorrt_scale(entry.scale[0]))}")
    return lines


def tensorrt_cache_text(table: ScaleTable, *, header: str = DEFAULT_HEADER) -> str:
    """The cache file's text for the activation and output scales of ``table``."""
    return "\n".join([header, *_lines(table)]) + "\n"


def write_tensorrt_cache(table: ScaleTable, path, *, header: str = DEFAULT_HEADER) -> Path:
    """Write the activation and output scales of ``table`` as a TensorRT calibration cache, atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = tensorrt_cache_text(table, header=header)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def read_tensorrt_cache(path) -> tuple[str, dict[str, np.float32]]:
    """Parse a TensorRT calibration cache into ``(header, {tensor: TensorRT scale})``.

    Multiply a scale by 127 for the abs-max threshold. Raises ConfigError naming the
    line that is not ``name: 8 hex digits``.
    """
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"TensorRT cache {str(path)!r} is not a file")
    lines = source.read_text(encoding="ascii", errors="replace").splitlines()
    if not lines:
        raise ConfigError(f"TensorRT cache {str(path)!r} is empty")
    scales = {}
    for number, line in enumerate(lines[1:], start=2):
        match = _LINE.match(line.strip())
        if not match:
            raise ConfigError(f"TensorRT cache {str(path)!r} line {number}: {line!r} is not 'name: XXXXXXXX'")
        scales[match["name"]] = np.float32(struct.unpack(">f", bytes.fromhex(match["hex"]))[0])
    return lines[0], scales
