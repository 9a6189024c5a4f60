"""Reduce observed tensors inside the program so calibration fetches statistics, not activations.

Fetching every observed activation keeps all of them alive until the end of a
batch (7.4 GB on PP-OCRv4 rec with batch 8). Instead, right after each observed
tensor is produced, a few ops reduce it per sample: abs max, min, max, sum (for
the NaN/Inf check) and a strided sample for histograms whose
start moves from batch to batch. The activation is then
freed as usual and only these small tensors are fetched.

The fetched statistics are persistable: the executor allocates them once, in the
first batch, and every later batch writes them in place. As ordinary temporaries
they were allocated anew in each batch, in between the activations, and lived
until the fetch at the end of the batch; those scattered live blocks fragmented
the C heap a little differently every batch and the peak crept up (PP-OCRv4 rec,
hist: +8 to +16 MB from 10 to 100 batches; none with persistable statistics,
bench/ptq_memory.py). :func:`statistic_buffers` names them, to be erased from the
scope afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

from paddle.base import core

from ..common.program import insert_ops

__all__ = ["TensorStatistics", "STATISTICS", "shape_program", "statistics_program", "sample_start",
           "statistic_buffers", "channel_peak_program"]

_INT_MAX = 2**31 - 1
STATISTICS = ("peak", "low", "high", "total", "sample")
"""Per-sample statistics available: abs max, min, max, sum, and a strided sample of the values."""

_REDUCERS = {"low": "reduce_min", "high": "reduce_max", "total": "reduce_sum"}


@dataclass(frozen=True)
class TensorStatistics:
    """Names of the fetched statistics of one tensor (only those requested are set)."""

    var: str
    fetches: dict


def sample_start(var: str) -> str:
    """Name of the persistable int32 [1] variable holding the first element of ``var``'s strided sample.

    Setting a different start before each batch (e.g. ``batch % stride``) makes the
    sample visit different positions instead of the same ones every time.
    """
    return f"{var}@sample_start"


def _insert_position(block, name: str) -> int:
    for index, op in enumerate(block.ops):
        if name in op.output_arg_names:
            return index + 1
    return 0


def _new_var(block, name, dtype=core.VarDesc.VarType.FP32, persistable=False):
    if not block.has_var(name):
        block.create_var(name=name, shape=[1] if persistable else [-1], dtype=dtype, persistable=persistable)
    return name


def _fetched_var(block, name):
    """A persistable float32 variable of any shape: allocated once, rewritten in place by every batch."""
    if not block.has_var(name):
        block.create_var(name=name, shape=[-1], dtype=core.VarDesc.VarType.FP32, persistable=True)
    return name


def statistic_buffers(stats) -> list[str]:
    """The persistable variables a statistics program leaves in its scope (fetched statistics and sample
    starts), for ``stats`` as returned by :func:`statistics_program`; erase them when calibration ends."""
    names = []
    for tensor in stats.values():
        names += tensor.fetches.values()
        if "sample" in tensor.fetches:
            names.append(sample_start(tensor.var))
    return names


def _reduce(op_type, source, out):
    return (op_type, {"X": [source]}, {"Out": [out]}, {"dim": [1], "keep_dim": False, "reduce_all": False})


def _ops_for(block, var: str, wanted, stride: int):
    """(ops, fetches) computing ``wanted`` statistics of ``var`` per sample (rows of the flattened tensor)."""
    flat, shape = f"{var}@flat", f"{var}@flat_shape"
    rows = [1, -1] if len(block.var(var).shape) == 0 else [0, -1]  # a 0-d tensor (a mean, a loss) is one row
    ops = [("reshape2", {"X": [var]}, {"Out": [_new_var(block, flat)], "XShape": [_new_var(block, shape)]},
            {"shape": rows})]
    fetches = {}
    for stat in ("low", "high", "total"):
        if stat in wanted:
            fetches[stat] = _fetched_var(block, f"{var}@{stat}")
            ops.append(_reduce(_REDUCERS[stat], flat, fetches[stat]))
    if "peak" in wanted:  # max(max x, -min x) per row: no full-size |x| temporary
        high, low = _new_var(block, f"{var}@peak_high"), _new_var(block, f"{var}@peak_low")
        negated, fetches["peak"] = _new_var(block, f"{var}@peak_negated_low"), _fetched_var(block, f"{var}@peak")
        ops += [_reduce("reduce_max", flat, high), _reduce("reduce_min", flat, low),
                ("scale", {"X": [low]}, {"Out": [negated]}, {"scale": -1.0, "bias": 0.0, "bias_after_scale": True}),
                ("elementwise_max", {"X": [high], "Y": [negated]}, {"Out": [fetches["peak"]]}, {"axis": -1})]
    if "sample" in wanted:
        fetches["sample"] = _fetched_var(block, f"{var}@sample")
        start = _new_var(block, sample_start(var), core.VarDesc.VarType.INT32, persistable=True)
        ops.append(("strided_slice", {"Input": [flat], "StartsTensor": [start]}, {"Out": [fetches["sample"]]},
                    {"axes": [1], "starts": [0], "ends": [_INT_MAX], "strides": [stride], "infer_flags": [1],
                     "decrease_axis": []}))
    return ops, fetches


def _insert_all(program, per_var_ops) -> None:
    block = program.global_block()
    placed = sorted(((_insert_position(block, var), ops) for var, ops in per_var_ops.items()),
                    key=lambda item: item[0], reverse=True)
    for position, ops in placed:
        insert_ops(block, position, ops)
    program._sync_with_cpp()


def shape_program(program, names) -> tuple[object, dict[str, str]]:
    """A copy of ``program`` that also outputs the shape of each tensor in ``names``."""
    copy = program.clone(for_test=True)
    block = copy.global_block()
    shapes = {name: _new_var(block, f"{name}@shape", core.VarDesc.VarType.INT32) for name in names}
    _insert_all(copy, {name: [("shape", {"Input": [name]}, {"Out": [shapes[name]]}, {})] for name in names})
    return copy, shapes


def statistics_program(program, wanted: dict, strides: dict[str, int]) -> tuple[object, dict[str, TensorStatistics]]:
    """A copy of ``program`` computing, per tensor, the statistics ``wanted[name]`` (a set from STATISTICS).

    ``strides[name]`` is the step of the per-sample strided sample (for ``"sample"``).
    """
    copy = program.clone(for_test=True)
    block = copy.global_block()
    per_var, stats = {}, {}
    for name, needed in wanted.items():
        ops, fetches = _ops_for(block, name, needed, strides.get(name, 1))
        per_var[name], stats[name] = ops, TensorStatistics(name, fetches)
    _insert_all(copy, per_var)
    return copy, stats


def channel_peak_program(program, axes: dict[str, int]) -> tuple[object, dict[str, str]]:
    """A copy of ``program`` that also computes, for each tensor ``name``, ``max |x|`` per channel along
    ``axes[name]`` over the batch and every other axis (a ``[C]`` tensor ``{name}@channel_peak``)."""
    copy = program.clone(for_test=True)
    block = copy.global_block()
    per_var, peaks = {}, {}
    for name, axis in axes.items():
        rank = len(block.var(name).shape)
        magnitude, peaks[name] = _new_var(block, f"{name}@abs"), _new_var(block, f"{name}@channel_peak")
        per_var[name] = [("abs", {"X": [name]}, {"Out": [magnitude]}, {}),
                         ("reduce_max", {"X": [magnitude]}, {"Out": [peaks[name]]},
                          {"dim": [d for d in range(rank) if d != axis % rank], "keep_dim": False,
                           "reduce_all": False})]
    _insert_all(copy, per_var)
    return copy, peaks
