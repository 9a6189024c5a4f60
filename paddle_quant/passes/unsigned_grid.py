"""State oneDNN's unsigned int8 storage in the program: relu outputs on a 255-level grid.

Paddle Inference's oneDNN int8 passes store some quantized tensors as **u8** (Paddle 3.3.1):
``compute_propagate_scales_onednn_pass`` marks a tensor unsigned when it has a scale and a ``relu`` op
writes it, or a conv/fc with a fused ``relu``/``relu6`` does (``UpdateReluOutputScales``), and hands the
mark on with the scale through the ops it treats as scale-preserving (pool2d, transpose2, reshape2,
slice, split, nearest_interp, scale); ``cpu_quantize_pass`` quantizes a concat's inputs unsigned when
all of them are. ``cpu_quantize_pass`` then quantizes a marked tensor at ``255 / scale`` instead of
``127 / scale``: twice the resolution the QDQ program states (``round(x · 127 / scale)``), on every
CPU. On ``conv_relu_conv`` of ``bench/onednn_patterns.py`` that was a mean deviation of 0.19-0.26
output steps, and PP-OCR cls (relu convs) read up to 1.7 points higher deployed than simulated on
an AMX machine (docs/deploy.md).

This pass writes that grid into the program: the ``quantize_linear``/``dequantize_linear`` pairs
(quantizers and observers) of those tensors get ``qmin=0, qmax=255``. The Executor's kernels read
their integer range from ``qmin``/``qmax``; Paddle Inference reads ``bit_length`` (still 8) and the
scale (the tensor's range, unchanged), so the program rounds where oneDNN rounds. An ONNX export
stores such a tensor as uint8 with zero point 0 (:mod:`paddle_quant.export.onnx`), the same grid.
``quant_post`` runs it for ``deploy_backend='onednn'``
(:attr:`~paddle_quant.common.backends.BackendProfile.unsigned_grid`); the scale table keeps the
calibrated scales, so re-applying it gives the same model.
"""

from __future__ import annotations

from typing import Collection

from ..common.program import writer_by_var

__all__ = ["UNSIGNED_QMAX", "UNSIGNED_PRODUCERS", "FUSED_UNSIGNED", "SCALE_PRESERVING", "writes_unsigned",
           "unsigned_tensors", "state_unsigned_grid", "is_unsigned_grid", "through_qdq"]

UNSIGNED_QMAX = 255
"""The largest integer of oneDNN's u8 grid for a tensor of range ``scale``: ``real = q · scale / 255``."""

UNSIGNED_PRODUCERS = ("relu",)
"""Op types whose quantized output oneDNN marks unsigned wherever they stand."""

FUSED_UNSIGNED = ("relu6",)
"""Activations whose output oneDNN marks unsigned only when fused into the conv or fc before them."""

_FUSING_PRODUCERS = ("conv2d", "depthwise_conv2d", "conv2d_transpose", "mul", "matmul", "matmul_v2")
"""The ops ``conv_activation_onednn_fuse_pass`` / ``fc_act_onednn_fuse_pass`` fuse a relu6 into."""

_FUSED_ON_THE_WAY = ("elementwise_add", "batch_norm")
"""What stands between such an op and its activation in a QDQ program and is fused too (bias, folded norm)."""

SCALE_PRESERVING = {"pool2d": "X", "transpose2": "X", "reshape2": "X", "slice": "Input", "split": "X",
                    "nearest_interp": "X", "nearest_interp_v2": "X", "scale": "X"}
"""Op type -> data input: ops that hand their input's scale, and its unsigned mark, to their output
(``compute_propagate_scales_onednn_pass``: ``scale_immutable_ops`` and ``scale``)."""


def through_qdq(writers: dict, name: str) -> str:
    """The tensor ``name`` is a quantize/dequantize copy of (itself when it is none)."""
    writer = writers.get(name)
    while writer is not None and writer.type in ("quantize_linear", "dequantize_linear"):
        name = writer.input("X")[0]
        writer = writers.get(name)
    return name


def _fused_into_producer(writers: dict, activation) -> bool:
    """Whether the relu6 ``activation`` follows (through bias add / batch norm / QDQ pairs) a conv or fc."""
    writer = writers.get(through_qdq(writers, activation.input("X")[0]))
    while writer is not None and writer.type in _FUSED_ON_THE_WAY:
        writer = writers.get(through_qdq(writers, writer.input("X")[0]))
    return writer is not None and writer.type in _FUSING_PRODUCERS


def writes_unsigned(op, writers: dict) -> bool:
    """Whether oneDNN marks ``op``'s output unsigned when it has a scale: a relu, or a relu6 fused into the conv
    or fc before it (``writers``: var name -> the op writing it, ``common.program.writer_by_var``)."""
    return op.type in UNSIGNED_PRODUCERS or (op.type in FUSED_UNSIGNED and _fused_into_producer(writers, op))


def unsigned_tensors(block, scaled: Collection[str] | None = None) -> list[str]:
    """The tensors of ``block`` oneDNN int8 stores unsigned, in program order: those with a scale that a relu
    writes, or a fused relu6, or a scale-preserving op from such a tensor, or a concat of such tensors only.

    Args:
        block: a QDQ program's block, or an fp32 one with ``scaled`` given.
        scaled: the tensors that have a scale (default: those a ``quantize_linear``, quantizer or observer,
            reads); for an fp32 program, the tensors a plan quantizes or observes.
    """
    scaled = {op.input("X")[0] for op in block.ops if op.type == "quantize_linear"} if scaled is None else set(scaled)
    writers = writer_by_var(block)
    marked: dict[str, None] = {}  # ordered set
    for op in block.ops:
        if writes_unsigned(op, writers):
            unsigned = True
        elif op.type in SCALE_PRESERVING:
            source = through_qdq(writers, op.input(SCALE_PRESERVING[op.type])[0])
            unsigned = source in marked  # only tensors with a scale are ever marked
        elif op.type == "concat":
            sources = [through_qdq(writers, name) for name in op.input("X")]
            unsigned = all(source in marked for source in sources)
        else:
            continue
        if unsigned:
            marked.update((name, None) for name in op.output_arg_names if name in scaled)
    return list(marked)


def is_unsigned_grid(op) -> bool:
    """Whether a ``quantize_linear``/``dequantize_linear`` op rounds on the u8 grid this pass states."""
    return op.has_attr("qmax") and int(op.attr("qmax")) == UNSIGNED_QMAX


def state_unsigned_grid(program) -> list[str]:
    """Put the quantize/dequantize pairs of :func:`unsigned_tensors` on the u8 grid (``qmin=0``,
    ``qmax=255``), in place; returns those tensors. A pair that reads another pair's copy of such a tensor
    (the input pair of an average pool, :mod:`paddle_quant.passes.pool_inputs`) rounds the same u8 data."""
    block = program.global_block()
    tensors = unsigned_tensors(block)
    wanted = set(tensors)
    writers = writer_by_var(block)
    quantized = set()
    for op in block.ops:
        if op.type == "quantize_linear" and through_qdq(writers, op.input("X")[0]) in wanted:
            _set_unsigned(op)
            quantized.add(op.output("Y")[0])
    for op in block.ops:
        if op.type == "dequantize_linear" and op.input("X")[0] in quantized:
            _set_unsigned(op)
    return tensors


def _set_unsigned(op) -> None:
    op._set_attr("qmin", 0)
    op._set_attr("qmax", UNSIGNED_QMAX)
