"""Portable scale tables: every quantized tensor's scale, written once, re-applied anywhere.

A post-training run writes ``scale_table.json`` next to the model it emits
(:data:`SCALE_TABLE_FILENAME`). ``quant_post(..., scale_table=path)`` reads
one back and skips calibration ("calibrate once, deploy many"); the same
program, weights and scales give a byte-identical model.

Format (``format = "paddle_quant.scale_table"``, ``version = 1``), one entry
per tensor name::

    {"kind": "weight" | "activation" | "output",
     "scale": [s, ...],          # Paddle convention: real = q * s / qmax, qmax = 2**(bits-1) - 1
     "zero_point": [0, ...],     # symmetric: zeros, one per scale
     "bits": 8,
     "axis": 0 | null,           # channel axis of per-channel scales, null per tensor
     "algorithm": "hist",        # activation algorithm or weight method
     "statistics": {...},        # what calibration saw (abs_max, elements, batches, ...)
     "rounding": "...",          # weights of a round_type="adaround" run only: the learned rounding
     "rounding_grid": "onednn_half"}  # only where the rounding is on oneDNN's half grid (below)

``rounding`` is one bit per weight value (C order, ``numpy.packbits``, base64): the integer is
``clip(floor(v) + bit, -qmax-1, qmax)`` with ``v`` the value Paddle's kernel rounds
(:func:`paddle_quant.ptq.adaround.rounded_weight`), so re-applying the table gives AdaRound's
integers without the calibration data. Tables without it are read as before. With
``rounding_grid = "onednn_half"`` (``onednn_cpu="avx2"`` convs with signed inputs) the bit is on the
7-bit grid of the even integers instead (:mod:`paddle_quant.ptq.onednn_cpu`, :func:`half_grid_scale`);
a run re-applies such a rounding only to a weight it puts on that grid, and the other way round.

A run with ``smooth_depthwise`` or ``smooth_activations`` also writes, beside ``tensors``, a
``"smoothing": {tensor: [s, ...]}`` map: the per-channel scales each tensor was divided by (and its
readers' weights multiplied by) before calibration, as float64 decimals, so a re-application rewrites the
program the same way without data. It must name exactly the tensors the re-applying run smooths. Tables
without it (every run without smoothing) are written and read as before.

Scales are float32 values stored as the exact decimal of their float64
widening, so reading gives back the same float32 bits.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Literal, Mapping, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..common.errors import ConfigError

__all__ = [
    "SCALE_TABLE_FILENAME",
    "SCALE_TABLE_VERSION",
    "TensorScaleEntry",
    "ScaleTable",
    "observer_statistics",
    "make_entry",
    "table_json",
    "write_scale_table",
    "read_scale_table",
]

SCALE_TABLE_FILENAME = "scale_table.json"
"""File name of the table a post-training run writes next to its model."""

SCALE_TABLE_VERSION = 1
"""Version of the JSON layout this module writes and reads."""

_FORMAT = "paddle_quant.scale_table"


class TensorScaleEntry(BaseModel):
    """The quantization parameters of one tensor."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["weight", "activation", "output"] = Field(
        description="weight: a parameter; activation: an input of a quantized op; output: an observed op output.")
    scale: tuple[float, ...] = Field(min_length=1, description="Abs-max scale(s): real = q * scale / qmax.")
    zero_point: tuple[int, ...] = Field(min_length=1, description="Zero point(s), one per scale (0: symmetric).")
    bits: int = Field(ge=2, le=16, description="Bit width of the integer grid.")
    axis: Optional[int] = Field(None, ge=0, description="Channel axis of per-channel scales; None per tensor.")
    algorithm: str = Field(description="Activation algorithm (KL, hist, ...) or weight method (abs_max, ...).")
    statistics: dict[str, float] = Field(default_factory=dict, description="What calibration observed.")
    rounding: Optional[str] = Field(
        None, description="Weights of an AdaRound run: base64 of one packed bit per value (round up from floor).")
    rounding_grid: Optional[Literal["onednn_half"]] = Field(
        None, description="The grid the rounding is on when not the entry's: 'onednn_half', the even integers of "
                          "onednn_cpu='avx2' convs (7 bits at scale * 126/127).")

    @model_validator(mode="after")
    def _consistent(self) -> "TensorScaleEntry":
        if self.rounding is not None and self.kind != "weight":
            raise ValueError(f"rounding is only for weights, this entry is kind {self.kind!r}")
        if self.rounding_grid is not None and self.rounding is None:
            raise ValueError(f"rounding_grid {self.rounding_grid!r} needs a rounding")
        if len(self.zero_point) != len(self.scale):
            raise ValueError(f"zero_point has {len(self.zero_point)} values but scale has {len(self.scale)}")
        if len(self.scale) > 1 and self.axis is None:
            raise ValueError(f"{len(self.scale)} scales need a channel axis, got axis=None")
        if not all(math.isfinite(s) and s >= 0 for s in self.scale):
            raise ValueError("every scale must be finite and >= 0")
        return self

    def scale_array(self) -> np.ndarray:
        """The scales as a float32 vector."""
        return np.asarray(self.scale, dtype=np.float32)


class ScaleTable(BaseModel):
    """Scales of every quantized tensor of one model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["paddle_quant.scale_table"] = Field(_FORMAT, description="Marks the file type.")
    version: Literal[1] = Field(SCALE_TABLE_VERSION, description="Layout version.")
    model: str = Field("", description="Model file the scales were calibrated on (informational).")
    tensors: dict[str, TensorScaleEntry] = Field(description="Tensor name -> its quantization parameters.")
    smoothing: dict[str, tuple[float, ...]] = Field(
        default_factory=dict,
        description="Tensor name -> the per-channel scales s it was divided by before calibration (smooth_depthwise, "
        "smooth_activations; its readers' weights multiplied by them), so a re-application needs no data.")

    @model_validator(mode="after")
    def _positive_smoothing(self) -> "ScaleTable":
        for name, values in self.smoothing.items():
            if not values or not all(math.isfinite(v) and v > 0 for v in values):
                raise ValueError(f"smoothing of {name!r} must be a non-empty list of finite values > 0")
        return self

    def scales(self, names, *, kinds: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The float32 scales of ``names``; ConfigError naming every missing or mis-kinded tensor."""
        missing = [n for n in names if n not in self.tensors]
        if missing:
            raise ConfigError(
                f"scale_table has no entry for {len(missing)} tensor(s) this run quantizes: {missing[:10]}"
                f"{' ...' if len(missing) > 10 else ''}; the table was written for other settings or another model")
        wrong = [n for n in names if self.tensors[n].kind not in kinds]
        if wrong:
            raise ConfigError(f"scale_table entries {wrong[:10]} have kind "
                              f"{sorted({self.tensors[n].kind for n in wrong})}, expected one of {list(kinds)}")
        return {n: self.tensors[n].scale_array() for n in names}

    def roundings(self, names, half_grid=frozenset()) -> dict[str, str]:
        """The packed AdaRound roundings of the weights ``names``; ConfigError naming those without one, and
        those whose rounding is on another grid than this run puts them on (``half_grid``: the weights on
        oneDNN's half grid, ``rounding_grid="onednn_half"``)."""
        missing = [n for n in names if self.tensors[n].rounding is None]
        if missing:
            raise ConfigError(
                f"round_type='adaround' re-applies the rounding a table records, but its entries {missing[:10]}"
                f"{' ...' if len(missing) > 10 else ''} have none (the table was written by a run with "
                "round_type='round'); allowed: a table written with round_type='adaround', or round_type='round'")
        other = [n for n in names if (self.tensors[n].rounding_grid == "onednn_half") != (n in half_grid)]
        if other:
            first = other[0]
            raise ConfigError(
                f"scale_table's rounding of {other[:10]} is on grid {self.tensors[first].rounding_grid or '8-bit'!r} "
                f"but this run puts {first!r} on grid {'onednn_half' if first in half_grid else '8-bit'!r}; "
                "re-apply a table with the onednn_cpu it was written with (the 'onednn_half' grid is "
                "onednn_cpu='avx2''s, for convs with signed inputs)")
        return {n: self.tensors[n].rounding for n in names}

    @property
    def has_roundings(self) -> bool:
        """Whether any entry records an AdaRound rounding."""
        return any(entry.rounding is not None for entry in self.tensors.values())


def _float_list(values) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype=np.float32).ravel()]


def observer_statistics(observer) -> dict[str, float]:
    """What an observer saw, as plain numbers (empty for observers without known attributes)."""
    hist = getattr(observer, "histogram", None)
    if hist is not None:
        return {"abs_max": float(hist.abs_max), "elements": float(hist.size), "updates": float(hist.updates),
                "bins": float(hist.bins), "histogram_range": float(hist.range)}
    stats = {}
    for attr in ("abs_max", "min", "max", "mean", "batches"):
        value = getattr(observer, attr, None)
        if isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool):
            stats[attr] = float(value)
    return stats


def make_entry(kind: str, scale, *, bits: int, axis: int | None, algorithm: str,
               statistics: Mapping[str, float] | None = None, rounding: str | None = None,
               rounding_grid: str | None = None) -> TensorScaleEntry:
    """One table entry from a numpy scale (symmetric: zero points are 0)."""
    values = _float_list(scale)
    return TensorScaleEntry(kind=kind, scale=tuple(values), zero_point=(0,) * len(values), bits=bits,
                            axis=None if axis is None or axis < 0 else axis, algorithm=algorithm,
                            statistics=dict(statistics or {}), rounding=rounding, rounding_grid=rounding_grid)


def table_json(table: ScaleTable) -> str:
    """The table as JSON text (stable key order, one entry per tensor; ``rounding`` only where recorded)."""
    data = table.model_dump(mode="json")
    if not data["smoothing"]:
        del data["smoothing"]
    for entry in data["tensors"].values():
        for optional in ("rounding", "rounding_grid"):
            if entry[optional] is None:
                del entry[optional]
    return json.dumps(data, indent=1, sort_keys=False) + "\n"


def write_scale_table(table: ScaleTable, path) -> Path:
    """Write ``table`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(table_json(table))
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def read_scale_table(path) -> ScaleTable:
    """Read and validate a table written by :func:`write_scale_table`.

    Raises:
        ConfigError: missing file, not JSON, another format or version, or an invalid entry
            (the message names the tensor and the field).
    """
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"scale_table {str(path)!r} is not a file")
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"scale_table {str(path)!r} is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise ConfigError(f"scale_table {str(path)!r} is not a paddle_quant scale table (format must be {_FORMAT!r})")
    if data.get("version") != SCALE_TABLE_VERSION:
        raise ConfigError(f"scale_table {str(path)!r} has version {data.get('version')!r}; "
                          f"this paddle_quant reads version {SCALE_TABLE_VERSION}")
    try:
        return ScaleTable.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"scale_table {str(path)!r}: field {where!r}: {first['msg']}") from None
