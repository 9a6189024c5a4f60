"""Quantization-aware training: ``quant_aware`` and ``convert`` with PaddleSlim's signatures."""

from __future__ import annotations

import logging

import paddle

from ..common.program import check_program, has_backward, legacy_ir, resolve_scope
from ..common.config import QuantConfig, as_quant_config
from ..common.errors import ConfigError, ProgramStateError
from ..passes.freeze import freeze_program
from ..passes.plan import QuantPlan, plan_quantization
from ..passes.rewrite import QUANTIZED_OP_ATTR, apply_plan

__all__ = ["quant_aware", "convert"]

_logger = logging.getLogger(__name__)


def _refuse_requantization(program) -> None:
    if any(op.has_attr(QUANTIZED_OP_ATTR) for op in program.global_block().ops):
        raise ProgramStateError(
            "program already went through quant_aware; pass the original (unquantized) program"
        )


def _check_supported_options(config: QuantConfig) -> None:
    if config.quant_post_first:
        raise ConfigError(
            "config key 'quant_post_first' got True: calibrating scales with post-training quantization "
            "before QAT is not available in paddle_quant yet; allowed: False"
        )


def _report_empty(plan: QuantPlan, config: QuantConfig) -> None:
    skipped = ", ".join(f"{s.op_type}#{s.index} ({s.reason})" for s in plan.skipped) or "none"
    _logger.warning(
        "quant_aware: no op of the configured types %s can be quantized; returning the program "
        "unchanged. Skipped ops: %s", list(config.effective_op_types), skipped,
    )


def quant_aware(program, place, config=None, scope=None, for_test=False, return_program=False):
    """Insert fake-quantization ops into a copy of ``program`` for QAT or evaluation.

    The input program is not modified; scale and state variables are created in
    ``scope`` (never overwriting ones that already exist with the same shape, so
    building the eval program after training started keeps trained scales).

    Training programs (``for_test=False``) quantize with fused quantize-dequantize
    ops whose gradient is the identity (straight-through estimator). Call it
    either after ``optimizer.minimize(loss)`` (PaddleSlim's order; the existing
    gradient ops are rewired to read the dequantized tensors) or before it, with
    ``return_program=True`` so ``minimize`` can be called on the result.

    Args:
        program: legacy ``paddle.static.Program`` (training or test).
        place: ``paddle.CPUPlace()`` / ``paddle.CUDAPlace(i)`` for the new state tensors.
        config: dict in PaddleSlim's format or a :class:`QuantConfig`; None means defaults.
        scope: scope holding the parameters; None means the global scope.
        for_test: True for an eval program (format ops, no statistics update).
        return_program: return a Program rather than a CompiledProgram for training.

    Returns:
        A Program (``for_test`` or ``return_program``) or a CompiledProgram (training).
    """
    config = as_quant_config(config)
    _check_supported_options(config)
    program = check_program(program)
    scope = resolve_scope(scope)
    with legacy_ir():
        _refuse_requantization(program)
        quant_program = program.clone()
        block = quant_program.global_block()
        plan = plan_quantization(block, config)
        if plan.is_empty:
            _report_empty(plan, config)
        else:
            mode = "test" if for_test else "train"
            apply_plan(quant_program, plan, config, scope, place, mode=mode, rewire_backward=has_backward(block))
        if for_test or return_program:
            return quant_program
        return paddle.static.CompiledProgram(quant_program)


def convert(program, place, config=None, scope=None, save_int8=False):
    """Freeze a quantized eval program into an inference program.

    Weights are put on the integer grid, weight quantizers are folded, activation
    scales are kept where the runtime reads them and output scales come from the
    observers. The input program and the float parameters in ``scope`` are left
    intact (frozen weights are stored under ``{name}@int8``).

    Args:
        program: eval Program returned by ``quant_aware(..., for_test=True)``.
        place: device of the new tensors.
        config: the config used for ``quant_aware`` (dict or QuantConfig).
        scope: scope with the trained parameters and scales; None means global.
        save_int8: also return a program whose weights are stored as int8.

    Returns:
        The inference Program, or ``(program, int8_program)`` when ``save_int8``.
    """
    config = as_quant_config(config)
    program = check_program(program)
    scope = resolve_scope(scope)
    with legacy_ir():
        frozen, frozen_int8 = freeze_program(program, config, scope, place)
    return (frozen, frozen_int8) if save_int8 else frozen
