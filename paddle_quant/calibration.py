"""Streaming calibration: run batches, fetch the observed tensors, update observers, drop the arrays.

Memory stays flat in the number of batches: no activation is made persistable
or kept after its observer has seen it.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
from paddle.base import core
from tqdm import tqdm

from .errors import ConfigError

__all__ = ["CalibrationStats", "check_feed", "calibrate"]

_NUMPY_DTYPES = {
    core.VarDesc.VarType.FP32: np.float32, core.VarDesc.VarType.FP64: np.float64,
    core.VarDesc.VarType.FP16: np.float16, core.VarDesc.VarType.INT64: np.int64,
    core.VarDesc.VarType.INT32: np.int32, core.VarDesc.VarType.UINT8: np.uint8,
    core.VarDesc.VarType.INT8: np.int8, core.VarDesc.VarType.BOOL: np.bool_,
}


@dataclass
class CalibrationStats:
    """What a calibration run saw: batch count and, per requested tensor, its per-channel mean."""

    batches: int = 0
    channel_means: dict[str, np.ndarray] = field(default_factory=dict)


def _shape_ok(expected: Sequence[int], got: Sequence[int]) -> bool:
    return len(expected) == len(got) and all(e < 0 or e == g for e, g in zip(expected, got))


def check_feed(block, feed_names: Sequence[str], feed: Mapping[str, np.ndarray], batch: int) -> None:
    """Raise ConfigError naming the batch and tensor if ``feed`` does not fit the model's inputs."""
    if set(feed) != set(feed_names):
        raise ConfigError(f"calibration batch {batch} feeds {sorted(feed)}; the model's feeds are {sorted(feed_names)}")
    for name in feed_names:
        var, value = block.var(name), feed[name]
        want = _NUMPY_DTYPES.get(var.dtype)
        if want is not None and value.dtype != want:
            raise ConfigError(f"calibration batch {batch}, feed '{name}': dtype {value.dtype}, the model expects "
                              f"{np.dtype(want).name}")
        if not _shape_ok(var.shape, value.shape):
            raise ConfigError(f"calibration batch {batch}, feed '{name}': shape {list(value.shape)}, the model "
                              f"expects {list(var.shape)} (-1: any size)")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ConfigError(f"calibration batch {batch}, feed '{name}' contains NaN or Inf")


def _check_finite(name: str, value: np.ndarray, batch: int) -> None:
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise ConfigError(
            f"tensor '{name}' is NaN or Inf in calibration batch {batch}; no model was written. "
            "Check the inputs of that batch and the model's preprocessing"
        )


def _progress(batches: Iterator, total, show: bool | None):
    enabled = sys.stderr.isatty() if show is None else show
    return tqdm(batches, total=total, desc="calibrating", unit="batch", disable=not enabled, leave=False)


def calibrate(exe, program, scope, batches: Iterator[Mapping[str, np.ndarray]], observers: Mapping[str, object], *,
              feed_names: Sequence[str], batch_nums: int | None = None,
              mean_of: Mapping[str, Callable[[np.ndarray], np.ndarray]] | None = None,
              show_progress: bool | None = None) -> CalibrationStats:
    """Feed ``batches`` through ``program`` and update ``observers[name]`` with each fetched tensor.

    Args:
        exe: executor; ``program`` runs in ``scope``.
        batches: feed dicts, consumed one at a time.
        observers: tensor name -> observer (``update(array)``).
        feed_names: the model's feed names, for checking each batch.
        batch_nums: stop after this many batches; ConfigError if the data ends sooner.
        mean_of: tensor name -> reducer giving that batch's per-feature mean; the
            average over batches is returned (for bias correction).
        show_progress: progress bar; None shows it only on a terminal.

    Returns:
        The number of batches seen and the requested channel means.
    """
    mean_of = dict(mean_of or {})
    names = list(dict.fromkeys(list(observers) + list(mean_of)))
    block, stats = program.global_block(), CalibrationStats()
    sums: dict[str, np.ndarray] = {}
    limited = itertools.islice(batches, batch_nums) if batch_nums is not None else batches
    for index, feed in enumerate(_progress(limited, batch_nums, show_progress)):
        check_feed(block, feed_names, feed, index)
        values = exe.run(program, feed=dict(feed), fetch_list=names, scope=scope, return_numpy=True)
        for name, value in zip(names, values):
            _check_finite(name, value, index)
            if name in observers:
                observers[name].update(value)
            if name in mean_of:
                sums[name] = sums.get(name, 0) + mean_of[name](value).astype(np.float64)
        stats.batches += 1
    _check_count(stats.batches, batch_nums)
    stats.channel_means = {name: (total / stats.batches).astype(np.float32) for name, total in sums.items()}
    return stats


def _check_count(seen: int, batch_nums: int | None) -> None:
    if seen == 0:
        raise ConfigError("the calibration data yielded no batch; no model was written")
    if batch_nums is not None and seen < batch_nums:
        raise ConfigError(
            f"batch_nums={batch_nums} but the calibration data ended after {seen} batch(es); "
            f"pass batch_nums <= {seen} or None to use all of it. No model was written"
        )
