"""The steps quant_post strings together, shared with analyze so the two cannot drift apart:
plan what to quantize, make the observers, compute weight scales, write scales into the scope."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from ..common import naming
from ..common.program import read_tensor, write_tensor
from ..common.errors import ProgramStateError
from ..observers import make_observer
from ..passes.plan import QuantPlan, plan_quantization
from ..passes.pool_inputs import pool_inputs_to_observe
from .config import DEFAULT_OP_TYPE_LISTS, PTQConfig
from .weight_methods import weight_scale

__all__ = ["observed_names", "make_observers", "weight_scales", "write_scales", "plan_post_training"]

_logger = logging.getLogger(__name__)


def observed_names(plan: QuantPlan) -> list[str]:
    """Activations the plan quantizes, then the observed outputs that are not quantized tensors."""
    names = [t.var for t in plan.tensors if t.role == "activation"]
    quantized = {t.var for t in plan.tensors}
    names += [o.var for o in plan.observers if o.var not in quantized]
    return list(dict.fromkeys(names))


def make_observers(plan: QuantPlan, ptq: PTQConfig) -> dict:
    """A fresh observer of ``ptq``'s algorithm for every tensor in :func:`observed_names`."""
    algo = ptq.activation_algorithm
    return {name: make_observer(algo, bits=ptq.activation_bits, hist_percent=ptq.hist_percent)
            for name in observed_names(plan)}


def weight_scales(plan: QuantPlan, scope, ptq: PTQConfig) -> dict[str, np.ndarray]:
    """The scale of every weight the plan quantizes, by ``ptq.weight_method``, from the scope."""
    return {t.var: weight_scale(read_tensor(scope, t.var), ptq.weight_method, bits=t.bits, axis=t.axis)
            for t in plan.tensors if t.role == "weight"}


def write_scales(scope, place, scales: dict[str, np.ndarray]) -> None:
    """Write ``{tensor: scale}`` into the scope as the ``{tensor}@scale`` vars the QDQ ops read."""
    for name, value in scales.items():
        write_tensor(scope, place, naming.scale(name), np.asarray(value, np.float32).reshape(-1))


def plan_post_training(program, ptq: PTQConfig) -> QuantPlan:
    """What quant_post quantizes in ``program``: the plan minus ``skip_tensor_list``, observers per
    ``output_scales`` (plus, for oneDNN, the pool inputs its int8 convolutions would requantize); warns
    about absent op types, ProgramStateError when nothing can be quantized."""
    config = ptq.to_quant_config()
    plan = plan_quantization(program.global_block(), config).without_tensors(ptq.skip_tensor_list)
    present = {op.type for op in program.global_block().ops}
    absent = sorted(set(config.effective_op_types) - present) if not ptq.is_full_quantize else []
    if absent:
        # a default list names types for many models: one this model lacks is not news; a type the user named is
        level = logging.INFO if ptq.quantizable_op_type in DEFAULT_OP_TYPE_LISTS else logging.WARNING
        _logger.log(level, "quant_post: op types %s are not in the model; nothing of those types is quantized",
                    absent)
    if ptq.effective_output_scales == "none":
        plan = dataclasses.replace(plan, observers=())
    if ptq.quantize_pool_inputs:
        requantized = pool_inputs_to_observe(program.global_block(), plan)
        plan = dataclasses.replace(plan, observers=plan.observers + requantized)
    if plan.is_empty:
        raise ProgramStateError(
            f"no tensor of the model can be quantized with quantizable_op_type={list(config.effective_op_types)}; "
            f"the model's op types are {sorted(present)}"
        )
    return plan
