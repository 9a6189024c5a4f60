"""locate: the first quantized tensor where a runtime and the fake-quant simulation part ways.

When :func:`~paddle_quant.deploy.verify.verify` finds a runtime's outputs far from the simulation,
the output alone does not say which op the runtime computes differently. The candidates are the
tensors the program quantizes (the ``X`` of each activation ``quantize_linear``, observers
included), in program order. For a candidate ``t`` the model is cut at ``t`` (the same program,
pruned to fetch ``t``: everything upstream of ``t`` exactly as shipped), run on the runtime, and
compared with the simulation's ``t`` on ``t``'s grid: both rounded to integers of its quantizer's step
``scale / qmax``, since a runtime may hand ``t`` over already quantized (oneDNN's int8 pool) where the
simulation holds the value its quantizer rounds next (compared unrounded, that read 0.5 steps max and
0.25 mean on an exact pool). A deviation is then a whole number of steps; one rounding flip is 1.
A bisection over the candidates finds the first one beyond ``tolerance_steps`` whose predecessor is
within it.

Assumptions (docs/deploy.md says them too): a divergence, once there, stays downstream (bisection checks
``log2(n)`` cuts, not all ``n``), and cutting at ``t`` changes only the fusions *at* ``t`` (``t`` is
fetched in float instead of feeding its readers in int8).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import paddle

from ..common.errors import ConfigError
from ..common.model_files import load_inference_program, save_inference_atomically
from ..common.numerics import qmax
from ..common.program import legacy_ir, read_tensor, readers_by_var, writer_by_var
from ..passes.unsigned_grid import UNSIGNED_QMAX, is_unsigned_grid
from .optimized import OptimizedOp, describe_ops, onednn_int8_program, ops_between
from .runtimes import make_runner

__all__ = ["Candidate", "CutDeviation", "Divergence", "LOCATABLE_RUNTIMES", "ONEDNN_RULES", "check_locatable", "locate_divergence",
           "quantized_tensors"]

LOCATABLE_RUNTIMES = ("onednn", "paddle_fp32", "tensorrt")
"""Runtimes that load the cut Paddle models directly (onnxruntime would need an export per cut)."""

ONEDNN_RULES: dict[str, str] = {
    "quantize": "cpu_quantize_pass: a float tensor quantized to s8/u8 at its quantizer's scale",
    "requantize": "cpu_quantize_squash_pass: an int8 output rescaled to the next int8 op's scale",
    "dequantize": "cpu_quantize_pass: int8 back to float at the tensor's scale",
    "fused_conv2d": "cpu_quantize_pass: int8 convolution (bias as int32 at scale_in * scale_weights, activation "
                    "fused, output requantized at Scale_out for every reader: passes/requantized_outputs.py, or kept "
                    "in fp32)",
    "conv2d": "cpu_quantize_pass: int8 convolution",
    "depthwise_conv2d": "cpu_quantize_pass: int8 depthwise convolution",
    "conv2d_transpose": "cpu_quantize_pass: int8 conv2d_transpose",
    "fc": "cpu_quantize_pass: int8 fc (mul + elementwise_add fused by fc_fuse_pass) whose weight scales "
          "compute_propagate_scales_onednn_pass takes from runs of the (in, out) weight, not its columns: "
          "oneDNN re-rounds the weights (docs/deploy.md, oneDNN's int8 fc; quantize with "
          "deploy_backend='onednn' to keep weight matmuls float)",
    "fused_matmul": "cpu_quantize_pass: int8 matmul (output requantized or dequantized)",
    "matmul": "cpu_quantize_pass: int8 matmul",
    "matmul_v2": "cpu_quantize_pass: int8 matmul_v2",
    "elementwise_add": "cpu_quantize_pass: int8 elementwise_add",
    "fused_elementwise_add": "cpu_quantize_pass: int8 elementwise_add",
    "elementwise_mul": "cpu_quantize_pass: int8 elementwise_mul",
    "fused_elementwise_mul": "cpu_quantize_pass: int8 elementwise_mul",
    "pool2d": "int8 pool2d at its input's scale (passes/pool_inputs.py)",
    "concat": "compute_propagate_scales_onednn_pass: concat on int8 inputs, one scale",
    "transpose2": "compute_propagate_scales_onednn_pass: transpose2 on int8 data, scale passed through",
    "fused_transpose": "compute_propagate_scales_onednn_pass: transpose on int8 data, scale passed through",
    "reshape2": "compute_propagate_scales_onednn_pass: reshape2 on int8 data, scale passed through",
    "fused_reshape2": "compute_propagate_scales_onednn_pass: reshape2 on int8 data, scale passed through",
}
"""Op type in oneDNN's optimized program -> what Paddle 3.3.1's int8 passes do there (docs/deploy.md)."""


@dataclass(frozen=True)
class Candidate:
    """A tensor the program quantizes, where the model can be cut."""

    tensor: str
    step: float
    producer: str
    readers: tuple[str, ...]


@dataclass(frozen=True)
class CutDeviation:
    """The runtime's value of one candidate tensor against the simulation's."""

    candidate: Candidate
    max_steps: float
    mean_steps: float


@dataclass(frozen=True)
class Divergence:
    """Where :func:`locate_divergence` found the runtime leaving the simulation."""

    first: CutDeviation | None
    """The first quantized tensor beyond the tolerance; None when every one is within it (the
    difference arises after the last quantized tensor, in float ops)."""
    last_within: CutDeviation | None
    """The candidate just before it, within the tolerance (None: the first candidate already diverges)."""
    tolerance_steps: float
    candidates: int
    cuts_run: int
    rule: str
    runtime_ops: str | None = None
    """For ``onednn``: the ops oneDNN's optimized program runs from the tensor within to the first one
    beyond (:mod:`.optimized`), with their int8 inputs/outputs, fusions and scales."""

    def describe(self) -> str:
        """One paragraph for the verify table."""
        if self.first is None:
            return (f"locate: all {self.candidates} quantized tensors within {self.tolerance_steps:g} step(s) "
                    f"({self.cuts_run} cuts run); the outputs diverge after the last one, in float ops")
        c = self.first.candidate
        lines = [f"locate: first diverging quantized tensor {c.tensor!r} (written by {c.producer}, read by "
                 f"{', '.join(c.readers) or 'nothing'}): max {self.first.max_steps:.2f} steps, mean "
                 f"{self.first.mean_steps:.3f} steps of {c.step:.4g}"]
        if self.last_within is not None:
            p = self.last_within
            lines.append(f"  the quantized tensor before it, {p.candidate.tensor!r} ({p.candidate.producer}), is "
                         f"within: max {p.max_steps:.2f} steps")
        if self.runtime_ops is not None:
            lines.append(f"  oneDNN ran between them: {self.runtime_ops}")
        lines.append(f"  rule: {self.rule}")
        lines.append(f"  ({self.cuts_run} of {self.candidates} candidate cuts run, by bisection)")
        return "\n".join(lines)


def check_locatable(runtime: str) -> None:
    """ConfigError unless ``runtime`` is one of :data:`LOCATABLE_RUNTIMES`."""
    if runtime not in LOCATABLE_RUNTIMES:
        raise ConfigError(f"locate runs cut Paddle models; runtime must be one of {list(LOCATABLE_RUNTIMES)}, "
                          f"got {runtime!r}")


def quantized_tensors(program, scope) -> list[Candidate]:
    """The tensors ``program`` quantizes that it computes from its inputs (``X`` of ``quantize_linear``),
    in program order. Left out: the model inputs (what was fed cannot diverge) and tensors computed
    from parameters alone (a reshaped bias: constants a runtime folds)."""
    block = program.global_block()
    writers, readers = writer_by_var(block), readers_by_var(block)
    fed = _computed_from_inputs(block)
    seen: dict[str, Candidate] = {}
    for op in block.ops:
        if op.type != "quantize_linear":
            continue
        name = op.input("X")[0]
        if name in seen or name not in fed or writers[name].type == "feed":
            continue
        scale = float(np.max(read_tensor(scope, op.input("Scale")[0])))
        levels = UNSIGNED_QMAX if is_unsigned_grid(op) else qmax(int(op.attr("bit_length")))
        step = scale / levels if scale > 0 else 1.0
        seen[name] = Candidate(name, step, writers[name].type, _quantized_readers(op, readers))
    return list(seen.values())


def _computed_from_inputs(block) -> set[str]:
    """Names of the variables that depend on a fed input (the feed ops' outputs and all downstream)."""
    reached: set[str] = set()
    for op in block.ops:
        if op.type == "feed" or any(name in reached for name in op.input_arg_names):
            reached.update(op.output_arg_names)
    return reached


def _quantized_readers(quantize_op, readers) -> tuple[str, ...]:
    """Op types that read the quantized tensor (through its dequantize_linear, or directly for observers)."""
    found = []
    for name in quantize_op.output_arg_names:
        for reader in readers.get(name, []):
            if reader.type == "dequantize_linear":
                found += [r.type for r in readers.get(reader.output("Y")[0], [])]
            else:
                found.append(reader.type)
    return tuple(dict.fromkeys(found))


def _rule_for(candidate: Candidate, ops: list[OptimizedOp] | None, cpu_note: str | None) -> str:
    """The int8 rules on the way (from oneDNN's optimized ops when known, else the QDQ producer)."""
    if ops:
        types = dict.fromkeys(op.type for op in ops if op.int8_input or op.int8_output)
        rules = [ONEDNN_RULES.get(kind, f"{kind}: no int8 rule recorded") for kind in types]
        rule = "; ".join(rules) if rules else "every op on the way runs in float"
    else:
        rule = ONEDNN_RULES.get(candidate.producer, f"{candidate.producer}: no int8 rule recorded; its output "
                                                    "scale is propagated or the tensor is dequantized to float")
    return rule if cpu_note is None else f"{rule}; {cpu_note}"


def locate_divergence(model: Path, params: Path | None, runtime: str, batches: Sequence[dict], *,
                      tolerance_steps: float = 1.0, threads: int = 2, cpu_note: str | None = None) -> Divergence:
    """Bisect over the quantized tensors of ``model`` for the first one ``runtime`` computes differently.

    Raises:
        ConfigError: ``runtime`` cannot load cut Paddle models, the tolerance is not positive, or the
            model quantizes no activation (nothing to cut at).
    """
    check_locatable(runtime)
    if not tolerance_steps > 0:
        raise ConfigError(f"tolerance_steps must be > 0, got {tolerance_steps!r}")
    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    with legacy_ir():
        program, feed_names, _ = load_inference_program(exe, scope, Path(model), params)
        candidates = quantized_tensors(program, scope)
        if not candidates:
            raise ConfigError(f"locate: {str(model)!r} quantizes no activation (no quantize_linear on a computed "
                              "tensor); there is no quantized tensor to cut at")
        work = Path(tempfile.mkdtemp(prefix="paddle-quant-locate-"))
        try:
            cuts: dict[str, tuple[Path, Path]] = {}

            def measure(candidate: Candidate) -> CutDeviation:
                cut = save_inference_atomically(exe, scope, program, feed_names, [candidate.tensor],
                                                work / f"cut{len(cuts)}")
                cuts[candidate.tensor] = cut
                simulation, runner = make_runner("executor", *cut), make_runner(runtime, *cut, threads=threads)
                want = [simulation.run(b)[0] for b in batches]
                got = [runner.run(b)[0] for b in batches]
                return _cut_deviation(candidate, got, want)

            measured: dict[int, CutDeviation] = {}
            first, last = _bisect(candidates, measure, tolerance_steps, measured)
            ops = None
            if first is not None and runtime == "onednn":
                ops = _onednn_ops_between(cuts[first.candidate.tensor], last, threads)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if first is None:
        return Divergence(None, last, tolerance_steps, len(candidates), len(measured),
                          "float ops after the last quantized tensor")
    return Divergence(first, last, tolerance_steps, len(candidates), len(measured),
                      _rule_for(first.candidate, ops, cpu_note), None if ops is None else describe_ops(ops))


def _onednn_ops_between(cut: tuple[Path, Path], last: CutDeviation | None, threads: int) -> list[OptimizedOp]:
    """The ops oneDNN runs in the cut model from ``last``'s tensor (or the inputs) to the fetched one."""
    ops = onednn_int8_program(*cut, threads=threads)
    fetched = next(op.inputs[0] for op in ops if op.type == "fetch")
    start = None if last is None else last.candidate.tensor
    if start is not None and not any(start in op.inputs for op in ops):
        start = None  # oneDNN fused it away: show the whole way from the inputs
    return ops_between(ops, start, fetched)


def _bisect(candidates: list[Candidate], measure: Callable[[Candidate], CutDeviation], tolerance: float,
            measured: dict[int, CutDeviation]):
    """(first candidate beyond ``tolerance``, the one before it), each as measured; None where absent."""
    def beyond(index: int) -> bool:
        if index not in measured:
            measured[index] = measure(candidates[index])
        return measured[index].max_steps > tolerance

    low, high = -1, len(candidates)  # invariant: low is within (or before the first), high beyond (or past the last)
    while high - low > 1:
        middle = (low + high) // 2
        if beyond(middle):
            high = middle
        else:
            low = middle
    first = measured.get(high) if high < len(candidates) else None
    last = measured.get(low) if low >= 0 else None
    return first, last


def _cut_deviation(candidate: Candidate, got, want) -> CutDeviation:
    r = np.concatenate([np.asarray(g, dtype=np.float64).ravel() for g in got])
    s = np.concatenate([np.asarray(w, dtype=np.float64).ravel() for w in want])
    if r.shape != s.shape:
        raise ConfigError(f"locate: tensor {candidate.tensor!r}: the runtime gave {r.size} values, the simulation "
                          f"{s.size}")
    diff = np.abs(np.round(r / candidate.step) - np.round(s / candidate.step))
    return CutDeviation(candidate, float(diff.max()), float(diff.mean()))
