"""Streaming calibration: run batches, fetch the observed tensors, update observers, drop the arrays.

Memory stays flat in the number of batches: no activation is made persistable
or kept after its observer has seen it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
from paddle.base import core
from tqdm import tqdm

from ..common.errors import ConfigError
from ..common.program import ops_in_program_order
from ..observers import DEFAULT_MAX_SAMPLES, AbsMaxObserver, AvgObserver, MinMaxObserver, sample_stride
from ..passes.statistics import (channel_peak_program, sample_start, shape_program, statistic_buffers,
                                 statistics_program)

__all__ = ["CalibrationStats", "check_feed", "calibrate", "channel_peaks", "tensor_sizes", "WHOLE_TENSOR_BUDGET",
           "release_free_heap"]

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


# Which per-sample statistics each observer needs ("total" is always added, for the NaN/Inf check).
_NEEDS = ((AbsMaxObserver, {"peak"}), (AvgObserver, {"peak"}), (MinMaxObserver, {"low", "high"}))
_HISTOGRAM_NEEDS = {"peak", "sample"}


def _needs(observer) -> set[str]:
    for kind, needs in _NEEDS:
        if isinstance(observer, kind):
            return needs | {"total"}
    return _HISTOGRAM_NEEDS | {"total"}


def _observation(values: Mapping[str, np.ndarray]) -> np.ndarray:
    """The array an observer is updated with, rebuilt from the fetched statistics.

    Abs-max and avg observers see one value per sample (its exact abs max), min-max
    observers the per-sample minima and maxima, histogram observers the strided
    sample plus the batch's exact abs max (once, so it does not weigh on percentiles).
    """
    if "sample" in values:  # the batch's abs max is counted once, as the observers do themselves
        return np.concatenate([values["sample"].ravel(), values["peak"].max(keepdims=True)])
    if "low" in values:
        return np.concatenate([values["low"].ravel(), values["high"].ravel()])
    return values["peak"].reshape(-1, 1)


WHOLE_TENSOR_BUDGET = 64 * 2**20
"""Bytes of observed activations per batch up to which they are fetched whole (cheaper for small models:
PP-OCR cls, 62 MiB per batch of 8). Fetched whole, a batch's activations are alive together and leave the
heap fragmented: PP-OCRv4 rec with conv2d quantized (77 MiB) added 398 MB at peak and 436 MB over 100
batches; through in-graph statistics 156 and 157 MB, about 8 % slower (bench/ptq_memory.py)."""


def tensor_sizes(exe, program, scope, names, feed) -> dict[str, int]:
    """Element count of each tensor in ``names`` for this batch: static shapes, probed where a dim is dynamic."""
    block = program.global_block()
    batch = next(iter(feed.values())).shape[0] if feed else 1
    sizes, dynamic = {}, []
    for name in names:
        dims = list(block.var(name).shape)
        if dims and dims[0] < 0:
            dims[0] = batch
        if any(d < 0 for d in dims):
            dynamic.append(name)
        else:
            sizes[name] = int(np.prod(dims))
    if dynamic:
        probe, shapes = shape_program(program, dynamic)
        values = exe.run(probe, feed=dict(feed), fetch_list=[shapes[n] for n in dynamic], scope=scope,
                         return_numpy=True)
        sizes.update((name, int(np.prod(shape))) for name, shape in zip(dynamic, values))
    return sizes


class _Runner(NamedTuple):
    """How calibration runs a batch: the program, what it fetches, what reads the fetched values, what is set
    before each run, and the persistable variables the program leaves in the scope (erased at the end)."""

    program: object
    fetch_list: list
    update: Callable
    before_run: Callable
    buffers: list


def _whole_tensor_runner(program, observers):
    names = list(observers)

    def update(values, batch):
        for name, value in zip(names, values):
            _check_finite(name, value, batch)
            observers[name].update(value)

    return _Runner(program, names, update, lambda batch: None, [])


def _statistics_runner(scope, program, observers, sizes: Mapping[str, int]):
    wanted = {name: _needs(observer) for name, observer in observers.items()}
    strides = {name: sample_stride(sizes[name], DEFAULT_MAX_SAMPLES) for name, needs in wanted.items()
               if "sample" in needs}
    runner, tensor_stats = statistics_program(program, wanted, strides)
    fetches = [(name, stat, var) for name, ts in tensor_stats.items() for stat, var in ts.fetches.items()]

    def update(values, batch):
        _update(observers, fetches, values, batch)
        release_free_heap()  # large models only: about 8 ms against a second or so per batch

    return _Runner(runner, [var for _, _, var in fetches], update,
                   lambda batch: _set_sample_starts(scope, strides, batch), statistic_buffers(tensor_stats))


def _malloc_trim():
    """glibc's ``malloc_trim(0)`` as a callable, or a no-op where the C library has none (not glibc)."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


release_free_heap = _malloc_trim()
"""Give the C heap's free memory back to the system. Without it the executor's freed activations stay in
the heap, fragmented, and the peak creeps up batch after batch: on PP-OCRv4 rec (activations fetched
whole, trimmed by hand after every run) 401 -> 435 MB added over 100 batches untrimmed, 337-352 MB
trimmed. Called after every in-graph-statistics batch and at the end of calibration."""


def _make_runner(exe, program, scope, feed, observers):
    """Fetch small activations whole; reduce large or dynamically shaped ones inside the program."""
    sizes = tensor_sizes(exe, program, scope, list(observers), feed)
    if 4 * sum(sizes.values()) <= WHOLE_TENSOR_BUDGET:
        return _whole_tensor_runner(program, observers)
    return _statistics_runner(scope, program, observers, sizes)


def calibrate(exe, program, scope, batches: Iterator[Mapping[str, np.ndarray]], observers: Mapping[str, object], *,
              feed_names: Sequence[str], batch_nums: int | None = None,
              mean_of: Mapping[str, Callable[[np.ndarray], np.ndarray]] | None = None,
              show_progress: bool | None = None) -> CalibrationStats:
    """Feed ``batches`` through ``program`` and update ``observers[name]`` from each tensor.

    When the observed activations of a batch fit in :data:`WHOLE_TENSOR_BUDGET`
    they are fetched whole. Otherwise (PP-OCRv4 rec: 7.4 GB per batch of 8) the
    statistics are computed inside a copy of the program right after each tensor
    is produced (see :mod:`paddle_quant.passes.statistics`), only a few values per
    sample are fetched, and the first batch also runs once through a probe that
    reads the tensors' shapes.

    Args:
        exe: executor; ``program`` runs in ``scope``.
        batches: feed dicts, consumed one at a time.
        observers: tensor name -> observer (``update(array)``).
        feed_names: the model's feed names, for checking each batch.
        batch_nums: stop after this many batches; ConfigError if the data ends sooner.
        mean_of: tensor name -> reducer giving that batch's per-feature mean; these
            tensors are fetched whole and the average over batches is returned (for bias correction).
        show_progress: progress bar; None shows it only on a terminal.

    Returns:
        The number of batches seen and the requested channel means.
    """
    mean_of = dict(mean_of or {})
    block, stats = program.global_block(), CalibrationStats()
    sums: dict[str, np.ndarray] = {}
    limited = itertools.islice(batches, batch_nums) if batch_nums is not None else batches
    runner = None
    try:
        with ops_in_program_order():  # each statistic runs right after its tensor, which is then freed
            for index, feed in enumerate(_progress(limited, batch_nums, show_progress)):
                check_feed(block, feed_names, feed, index)
                if runner is None:
                    runner = _make_runner(exe, program, scope, feed, observers)
                runner.before_run(index)
                values = exe.run(runner.program, feed=dict(feed), fetch_list=runner.fetch_list + list(mean_of),
                                 scope=scope, return_numpy=True)
                runner.update(values[:len(runner.fetch_list)], index)
                for name, value in zip(mean_of, values[len(runner.fetch_list):]):
                    _check_finite(name, value, index)
                    sums[name] = sums.get(name, 0) + mean_of[name](value).astype(np.float64)
                stats.batches += 1
    finally:
        if runner is not None and runner.buffers:
            scope.erase(runner.buffers)  # the caller's scope gets back only what it had
        release_free_heap()  # what this call freed goes back before the caller's next step
    _check_count(stats.batches, batch_nums)
    stats.channel_means = {name: (total / stats.batches).astype(np.float32) for name, total in sums.items()}
    return stats


def channel_peaks(exe, program, scope, batches: Iterator[Mapping[str, np.ndarray]], axes: Mapping[str, int], *,
                  feed_names: Sequence[str], batch_nums: int | None = None, keep: Sequence[str] = (),
                  keep_batches: int = 2, show_progress: bool | None = None):
    """``max |x|`` per channel (along ``axes[name]``) of each tensor over the calibration batches, reduced
    inside the program (:func:`~paddle_quant.passes.statistics.channel_peak_program`); the tensors in
    ``keep`` are also fetched whole from the first ``keep_batches`` batches (samples for a search).

    Returns:
        (name -> float64 ``[C]`` peaks, name -> list of kept arrays).

    Raises:
        ConfigError: no batch, fewer than ``batch_nums`` batches, or NaN/Inf in a tensor.
    """
    runner, peaks_of = channel_peak_program(program, dict(axes))
    names, block = list(axes), program.global_block()
    peaks: dict[str, np.ndarray] = {}
    kept: dict[str, list] = {name: [] for name in keep}
    limited = itertools.islice(batches, batch_nums) if batch_nums is not None else batches
    seen = 0
    with ops_in_program_order():
        for index, feed in enumerate(_progress(limited, batch_nums, show_progress)):
            check_feed(block, feed_names, feed, index)
            whole = list(keep) if index < keep_batches else []
            values = exe.run(runner, feed=dict(feed), fetch_list=[peaks_of[n] for n in names] + whole, scope=scope,
                             return_numpy=True)
            for name, value in zip(names, values):
                _check_finite(name, value, index)
                peaks[name] = np.maximum(peaks.get(name, 0.0), value.astype(np.float64))
            for name, value in zip(whole, values[len(names):]):
                kept[name].append(value)
            seen += 1
    release_free_heap()
    _check_count(seen, batch_nums)
    return peaks, kept


def _set_sample_starts(scope, strides: Mapping[str, int], batch: int) -> None:
    for name, stride in strides.items():
        scope.var(sample_start(name)).get_tensor().set(np.array([batch % stride], np.int32), core.CPUPlace())


def _update(observers, fetches, values, batch: int) -> None:
    grouped: dict[str, dict[str, np.ndarray]] = {}
    for (name, stat, _var), value in zip(fetches, values):
        grouped.setdefault(name, {})[stat] = value
    for name, stat_values in grouped.items():
        _check_finite(name, stat_values.pop("total"), batch)
        observers[name].update(_observation(stat_values))


def _check_count(seen: int, batch_nums: int | None) -> None:
    if seen == 0:
        raise ConfigError("the calibration data yielded no batch; no model was written")
    if batch_nums is not None and seen < batch_nums:
        raise ConfigError(
            f"batch_nums={batch_nums} but the calibration data ended after {seen} batch(es); "
            f"pass batch_nums <= {seen} or None to use all of it. No model was written"
        )
