"""What Paddle Inference's oneDNN int8 passes turn a model into: the optimized program it runs.

``Config.enable_save_optim_model(True)`` writes the program after every pass (``cpu_quantize_pass``,
``cpu_quantize_squash_pass``, the fuse passes) into the optimization cache folder. Read back, it
says which ops run in int8, what they fused, and where the data is quantized, requantized and
dequantized: the facts :mod:`.locate` reports instead of guessing them from the QDQ program.

Which tensors are int8 is derived from the op structure: ``quantize`` and ``requantize`` write int8;
an op reading int8 writes int8 unless it has ``force_fp32_output=True``; ``dequantize`` writes
float. (The dumped variable descriptions keep float dtypes, so they cannot tell.)
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from paddle.base import core

from .runtimes import create_predictor, onednn_config

__all__ = ["OptimizedOp", "onednn_int8_program", "ops_between", "describe_ops"]

_INT8_SOURCES = ("quantize", "requantize")
_FLOAT_SOURCES = ("dequantize", "feed")
_SHOWN_ATTRS = ("fuse_activation", "Scale", "Scale_in", "Scale_out", "force_fp32_output",
                "fuse_residual_connection", "is_negative_input")


@dataclass(frozen=True)
class OptimizedOp:
    """One op of the optimized program, as oneDNN runs it."""

    type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    int8_input: bool
    int8_output: bool
    attrs: tuple[tuple[str, object], ...]

    def describe(self) -> str:
        shown = dict(self.attrs)
        parts = ["int8 in" if self.int8_input else "fp32 in", "int8 out" if self.int8_output else "fp32 out"]
        if shown.get("fuse_activation"):
            parts.append(f"{shown['fuse_activation']} fused")
        if shown.get("fuse_residual_connection"):
            parts.append("residual add fused")
        for key in ("Scale", "Scale_in", "Scale_out"):
            if isinstance(shown.get(key), float) and shown[key] not in (0.0, 1.0):
                parts.append(f"{key} {shown[key]:.4g}")
        return f"{self.type}[{', '.join(parts)}]"


def onednn_int8_program(model_file: Path, params_file: Path | None, *, threads: int = 2) -> list[OptimizedOp]:
    """The ops Paddle Inference (CPU, oneDNN, ``enable_onednn_int8``) runs for the model, in order."""
    cache = Path(tempfile.mkdtemp(prefix="paddle-quant-optim-"))
    try:
        config = onednn_config(model_file, params_file, threads=threads, int8=True)
        config.enable_save_optim_model(True)
        config.set_optim_cache_dir(str(cache))
        create_predictor(config)
        desc = core.ProgramDesc((cache / "_optimized.pdmodel").read_bytes())
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return _ops_of(desc.block(0))


def _ops_of(block) -> list[OptimizedOp]:
    int8_tensors: set[str] = set()
    ops = []
    for index in range(block.op_size()):
        op = block.op(index)
        names = op.attr_names()
        inputs, outputs = tuple(op.input_arg_names()), tuple(op.output_arg_names())
        int8_input = op.type() == "dequantize" or any(name in int8_tensors for name in inputs)
        forced_fp32 = "force_fp32_output" in names and bool(op.attr("force_fp32_output"))
        int8_output = op.type() in _INT8_SOURCES or (int8_input and not forced_fp32
                                                     and op.type() not in _FLOAT_SOURCES)
        if int8_output:
            int8_tensors.update(outputs)
        attrs = tuple((name, op.attr(name)) for name in _SHOWN_ATTRS if name in names)
        ops.append(OptimizedOp(op.type(), inputs, outputs, int8_input, int8_output, attrs))
    return ops


def ops_between(ops: list[OptimizedOp], start: str | None, end: str) -> list[OptimizedOp]:
    """The ops on the way from tensor ``start`` (None: the model inputs) to tensor ``end``."""
    reached = {start} if start is not None else {name for op in ops if op.type == "feed" for name in op.outputs}
    forward = []
    for op in ops:
        if op.type not in ("feed", "fetch") and any(name in reached for name in op.inputs):
            reached.update(op.outputs)
            forward.append(op)
    needed, path = {end}, []
    for op in reversed(forward):
        if any(name in needed for name in op.outputs):
            needed.update(op.inputs)
            path.append(op)
    return path[::-1]


def describe_ops(ops: list[OptimizedOp]) -> str:
    """``a[...] -> b[...] -> ...``, one entry per op."""
    return " -> ".join(op.describe() for op in ops) if ops else "(no op)"
