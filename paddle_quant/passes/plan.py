"""Plan: walk a Program and decide, without changing it, what gets quantized.

The plan is pure data (frozen dataclasses) so tests can inspect it and the
rewrite step can apply it to a training or an inference program alike.

Rules (the same as PaddleSlim's passes, minus their duplicates):
- An op whose type is one of the config's weight op types and which reads a
  persistable weight in its weight slot: every input slot is quantized, the
  weight with ``weight_quantize_type`` (per channel along the registry's axis
  when channel-wise), the others with ``activation_quantize_type``.
- An op whose type is one of the config's activation-only op types: each float,
  non-persistable input is quantized with the activation quantizer.
- A tensor is quantized once, however many quantized ops read it.
- Ops whose ``op_namescope`` contains a ``not_quant_pattern`` are skipped.
- Every float output of a supported op gets an output-scale observer.
- A deploy backend's ``float_op_types`` stay in float (the runtime computes them differently in int8;
  ``BackendProfile.float_reason``), and no observer hands them a scale through the ops the runtime
  propagates scales across (:mod:`.scale_propagation`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Literal

from ..common import registry
from ..common.backends import backend_profile
from ..common.program import is_float_var, is_forward_op
from ..common.config import QuantConfig
from .scale_propagation import observers_reaching

__all__ = ["TensorQuant", "OpQuant", "SkippedOp", "ObservedOutput", "QuantPlan", "plan_quantization"]

_logger = logging.getLogger(__name__)

Role = Literal["weight", "activation"]


@dataclass(frozen=True)
class TensorQuant:
    """One quantizer on one tensor.

    Attributes:
        var: name of the tensor quantized.
        role: ``"weight"`` (persistable parameter) or ``"activation"``.
        method: quantize type (``abs_max``, ``channel_wise_abs_max``, ``range_abs_max``, ``moving_average_abs_max``).
        bits: bit width.
        axis: channel axis for per-channel scales, -1 for a per-tensor scale.
        first_consumer: index of the first op (in the original block) that reads the quantized tensor.
    """

    var: str
    role: Role
    method: str
    bits: int
    axis: int
    first_consumer: int


@dataclass(frozen=True)
class OpQuant:
    """A quantized op: which of its input arguments are replaced by dequantized tensors."""

    index: int
    op_type: str
    inputs: tuple[tuple[str, str], ...]
    with_weight: bool

    def reads_quantized(self, slot: str) -> bool:
        """Whether the op's input argument ``slot`` (e.g. a conv's ``"Input"``) is one of those quantized."""
        return any(name == slot for name, _ in self.inputs)


@dataclass(frozen=True)
class SkippedOp:
    """An op of a configured type that is left in float, and why."""

    index: int
    op_type: str
    reason: str


@dataclass(frozen=True)
class ObservedOutput:
    """A float output whose range is observed for inference annotations."""

    var: str
    producer: int
    runtime_input: bool = False
    """True for a tensor the deploy runtime quantizes as an op's input (oneDNN's average-pool inputs): calibrated
    like the quantized activations, not with ``output_algo``."""


@dataclass(frozen=True)
class QuantPlan:
    """Everything the rewrite step needs; built by :func:`plan_quantization`."""

    tensors: tuple[TensorQuant, ...]
    ops: tuple[OpQuant, ...]
    observers: tuple[ObservedOutput, ...]
    skipped: tuple[SkippedOp, ...]

    @property
    def is_empty(self) -> bool:
        """True when no tensor would be quantized."""
        return not self.tensors

    def without_tensors(self, names) -> "QuantPlan":
        """A plan that leaves the tensors ``names`` in float (ops left with no quantized input are skipped)."""
        names = set(names)
        tensors = tuple(t for t in self.tensors if t.var not in names)
        ops, skipped = [], list(self.skipped)
        for op in self.ops:
            inputs = tuple(arg for arg in op.inputs if arg[1] not in names)
            if inputs:
                ops.append(OpQuant(op.index, op.op_type, inputs, op.with_weight))
            else:
                skipped.append(SkippedOp(op.index, op.op_type, "every input is in skip_tensor_list"))
        return QuantPlan(tensors, tuple(ops), self.observers, tuple(skipped))

    def without_ops(self, indices, reason: str) -> "QuantPlan":
        """A plan that leaves the ops at ``indices`` in float (skipped with ``reason``), and the tensors no
        other quantized op reads."""
        indices = set(indices)
        kept = tuple(op for op in self.ops if op.index not in indices)
        skipped = self.skipped + tuple(SkippedOp(op.index, op.op_type, reason) for op in self.ops
                                       if op.index in indices)
        read = {var for op in kept for _, var in op.inputs}
        return QuantPlan(tuple(t for t in self.tensors if t.var in read), kept, self.observers, skipped)

    def tensor(self, var: str) -> TensorQuant:
        """The quantizer planned for ``var`` (KeyError if none)."""
        for tensor in self.tensors:
            if tensor.var == var:
                return tensor
        raise KeyError(var)


def _namescope_skipped(op, patterns: tuple[str, ...]) -> bool:
    scope = op.attr("op_namescope") if op.has_attr("op_namescope") else ""
    return bool(scope) and any(pattern in scope for pattern in patterns)


def _weight_tensor(block, op, spec, config: QuantConfig, index: int) -> TensorQuant | None:
    names = op.input(spec.weight_slot) if spec.weight_slot in op.input_names else []
    if len(names) != 1 or not block.has_var(names[0]) or not block.var(names[0]).persistable:
        return None
    channel_wise = config.weight_quantize_type == "channel_wise_abs_max"
    axis = registry.weight_channel_axis(spec, {a: op.attr(a) for a in op.attr_names}) if channel_wise else -1
    return TensorQuant(names[0], "weight", config.weight_quantize_type, config.weight_bits, axis, index)


def _activation_tensor(name: str, config: QuantConfig, index: int) -> TensorQuant:
    return TensorQuant(name, "activation", config.activation_quantize_type, config.activation_bits, -1, index)


def _activation_inputs(block, op, slots):
    for slot in slots:
        if slot not in op.input_names:
            continue
        for name in op.input(slot):
            if is_float_var(block, name) and not block.var(name).persistable:
                yield slot, name


def _plan_op(block, op, index, config, tensors):
    """Quantizers for one op, or a skip reason string."""
    weight_spec = registry.WEIGHT_OP_SPECS.get(op.type) if op.type in config.weight_op_types else None
    if weight_spec is not None:
        weight = _weight_tensor(block, op, weight_spec, config, index)
        if weight is None:
            return f"no persistable weight in slot '{weight_spec.weight_slot}'"
        tensors.setdefault(weight.var, weight)
        args = [(weight_spec.weight_slot, weight.var)]
        act_slots = [s for s in weight_spec.inputs if s != weight_spec.weight_slot]
        with_weight = True
    else:
        act_slots = registry.ACTIVATION_OP_SPECS[op.type].inputs
        args, with_weight = [], False
    for slot, name in _activation_inputs(block, op, act_slots):
        tensors.setdefault(name, _activation_tensor(name, config, index))
        args.append((slot, name))
    if not args:
        return "no float activation input"
    return OpQuant(index, op.type, tuple(args), with_weight)


def _observed_outputs(block, op, index):
    spec = registry.WEIGHT_OP_SPECS.get(op.type) or registry.ACTIVATION_OP_SPECS.get(op.type)
    if spec is None:
        return []
    names = [n for slot in spec.outputs if slot in op.output_names for n in op.output(slot)]
    return [ObservedOutput(n, index) for n in names if is_float_var(block, n)]


def plan_quantization(block, config: QuantConfig) -> QuantPlan:
    """Decide which tensors of ``block`` get quantized under ``config``.

    Only forward ops are considered; backward and optimizer ops are left to the
    rewrite step (which rewires gradient ops for the straight-through estimator).

    Args:
        block: the global block of a legacy Program.
        config: validated configuration.

    Returns:
        The immutable plan; ``plan.is_empty`` when nothing matched.
    """
    wanted = set(config.weight_op_types) | set(config.activation_op_types)
    patterns = config.not_quant_patterns
    tensors: dict[str, TensorQuant] = {}
    ops, skipped, observers = [], [], []
    for index, op in enumerate(block.ops):
        if not is_forward_op(op):
            continue
        observers.extend(_observed_outputs(block, op, index))
        if op.type not in wanted:
            continue
        if _namescope_skipped(op, patterns):
            skipped.append(SkippedOp(index, op.type, "op_namescope matches not_quant_pattern"))
            continue
        outcome = _plan_op(block, op, index, config, tensors)
        if isinstance(outcome, str):
            skipped.append(SkippedOp(index, op.type, outcome))
        else:
            ops.append(outcome)
    plan = QuantPlan(tuple(tensors.values()), tuple(ops), tuple(observers), tuple(skipped))
    return _backend_float_ops(plan, block, config.deploy_backend)


def _backend_float_ops(plan: QuantPlan, block, backend) -> QuantPlan:
    """The plan with the backend's ``float_op_types`` left in float and the observers dropped whose scale
    the runtime would hand to the inputs of any op of those types (which would put it back in int8: the
    ones the plan skips, and those it never quantizes, such as a matmul of two activations)."""
    profile = backend_profile(backend)
    indices = [op.index for op in plan.ops if profile is not None and op.op_type in profile.float_op_types]
    if not indices:
        return plan
    types = sorted({block.ops[i].type for i in indices})
    _logger.warning("%d %s op(s) left in float for deploy_backend=%r: %s", len(indices), "/".join(types),
                    backend, profile.float_reason)
    plan = plan.without_ops(indices, f"left in float for deploy_backend={backend!r}: {profile.float_reason}")
    float_inputs = [name for op in block.ops if op.type in profile.float_op_types and is_forward_op(op)
                    for _, name in _activation_inputs(block, op, ("X", "Y"))]
    activations = [t.var for t in plan.tensors if t.role == "activation"]
    dropped, tied = observers_reaching(block, [o.var for o in plan.observers], activations, float_inputs)
    if dropped:
        _logger.info("no output scale on %s: oneDNN would pass it on to the input of an op left in float and run "
                     "that op in int8", dropped)
        plan = dataclasses.replace(plan, observers=tuple(o for o in plan.observers if o.var not in set(dropped)))
    if tied:
        _logger.warning("inputs %s of ops left in float share a scale with a quantized tensor through "
                        "transpose/reshape/pool/slice ops: the runtime may run those ops in int8 anyway", tied)
    return plan
