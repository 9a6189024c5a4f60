"""Keep oneDNN from reading a signed residual into an unsigned convolution output.

Paddle 3.3.1's oneDNN int8 passes fuse ``conv -> elementwise_add(residual) -> relu`` into one
``fused_conv2d`` (``conv_elementwise_add_onednn_fuse_pass``, then ``conv_activation_onednn_fuse_pass``)
whose output, a relu's, is stored u8 (:mod:`paddle_quant.passes.unsigned_grid`), while the residual it
adds in place is quantized s8 when it can be negative. oneDNN's sum post-op then reads the s8 residual
as u8: every negative residual value becomes a large positive one. Measured on ``relu(conv(hardswish(
conv(x))) + x) -> conv`` (``bench/onednn_patterns.py`` builders): 30 output steps from the simulation,
mean 2.6, on every ``onednn_cpu`` and output-scale setting; ``relu6`` the same (31 steps).

No program states that, so this pass emits one that keeps oneDNN from doing it: such a ``relu`` becomes
``leaky_relu(alpha=0)`` and such a ``relu6`` becomes ``clip(0, threshold)``, the same functions, which
oneDNN fuses the same way but does not mark unsigned: the fused conv writes s8, as its residual is.
The tensor then has 127 levels on ``[0, scale]`` instead of oneDNN's 255 (the program states it either
way). ``quant_post`` runs it on the fp32 program before planning, for ``deploy_backend='onednn'``
(:attr:`~paddle_quant.common.backends.BackendProfile.unsigned_grid`).

A residual that is itself a relu output is u8 already and is left alone, as is an add whose operands are
not a convolution's output (nothing is fused into a conv there).

:func:`sign_all_activations` rewrites every relu/relu6 that way: a model trained on the 127-level grid
(dygraph QAT, saved for ``deploy_backend='onednn'``) then runs on that grid in oneDNN too, instead of on
the u8 grid it was not trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..common.program import is_persistable, writer_by_var
from .unsigned_grid import writes_unsigned

__all__ = ["ResidualActivation", "sign_all_activations", "sign_residual_activations"]

_CONVS = ("conv2d", "depthwise_conv2d")
_CONV_TAIL = ("elementwise_add", "batch_norm")
"""What stands between a conv and the residual add in an fp32 program and is fused into the conv (bias, norm)."""


@dataclass(frozen=True)
class ResidualActivation:
    """One activation rewritten: its output, its type before, and the op type now."""

    output: str
    was: str
    now: str


def _conv_branch(writers: dict, name: str) -> bool:
    """Whether ``name`` is a conv's output, through a bias add (persistable operand) or a batch norm."""
    writer = writers.get(name)
    while writer is not None and writer.type in _CONV_TAIL:
        if writer.type == "elementwise_add" and not _has_parameter_operand(writer):
            return False
        writer = writers.get(writer.input("X")[0])
    return writer is not None and writer.type in _CONVS


def _has_parameter_operand(op) -> bool:
    return any(is_persistable(op.block, name) for name in op.input("Y"))


def _signed_residual(writers: dict, add) -> bool:
    """Whether ``add`` is ``conv branch + residual`` with a residual oneDNN would not store unsigned."""
    x, y = add.input("X")[0], add.input("Y")[0]
    for branch, residual in ((x, y), (y, x)):
        if _conv_branch(writers, branch):
            writer = writers.get(residual)
            return not (writer is not None and writes_unsigned(writer, writers))
    return False


def sign_residual_activations(program) -> list[ResidualActivation]:
    """Rewrite each relu/relu6 that follows ``conv + signed residual`` (module doc) in an fp32 ``program``,
    in place; returns what was rewritten, in program order."""
    block = program.global_block()
    writers = writer_by_var(block)
    done = []
    for op in block.ops:
        if op.type not in ("relu", "relu6"):
            continue
        add = writers.get(op.input("X")[0])
        if add is None or add.type != "elementwise_add" or _has_parameter_operand(add) \
                or not _signed_residual(writers, add):
            continue
        done.append(_as_signed(op))
    program._sync_with_cpp()
    return done


def sign_all_activations(program) -> list[ResidualActivation]:
    """Rewrite every relu/relu6 of ``program`` as leaky_relu(0)/clip(0, threshold), in place (module doc);
    returns what was rewritten, in program order."""
    done = [_as_signed(op) for op in program.global_block().ops if op.type in ("relu", "relu6")]
    program._sync_with_cpp()
    return done


def _as_signed(op) -> ResidualActivation:
    """``op`` (relu or relu6) rewritten in place as the same function oneDNN does not mark unsigned."""
    was = op.type
    if was == "relu":
        op.desc.set_type("leaky_relu")
        op._set_attr("alpha", 0.0)
    else:
        threshold = float(op.attr("threshold")) if op.has_attr("threshold") else 6.0
        op.desc.set_type("clip")
        op._set_attr("min", 0.0)
        op._set_attr("max", threshold)
    return ResidualActivation(op.output("Out")[0], was, op.desc.type())
