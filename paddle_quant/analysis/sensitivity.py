"""Sensitivity of a metric to quantizing each unit of a model, and the greedy skip list.

A *unit* is what the skip list can leave in float: one quantized op (its
weight and activation inputs) or every quantized op of one type. Each
configuration of the model (which units are quantized) is built from the fp32
program and the calibrated scales already in the scope: the plan is filtered
with :meth:`~paddle_quant.passes.plan.QuantPlan.without_tensors`, applied to a
clone of the fp32 program, and the scales are found in the scope (never
recalibrated). A configuration is evaluated either in the Paddle Executor
(fake-quant simulation) or, through a :data:`Runner`, on a deployed runtime
(e.g. Paddle Inference with oneDNN int8, :func:`onednn_runner`).

Definitions (``m`` the metric, higher is better; ``Q`` the set of quantized units):

* ``drop_alone[u] = m(fp32) - m(Q = {u})``: the metric lost when only ``u`` is quantized.
* ``gain_float[u] = m(Q = all - {u}) - m(Q = all)``: the metric won back when only ``u`` stays float.
* Greedy skip list: units sorted by ``gain_float`` (ties and the missing way broken by
  ``drop_alone``), descending; the shortest prefix ``S`` with ``m(fp32) - m(Q = all - S) <= max_drop``.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import paddle

from ..deploy.runtimes import create_predictor, onednn_config
from ..passes.freeze import freeze_in_place
from ..passes.plan import QuantPlan
from ..passes.rewrite import apply_plan

__all__ = ["Unit", "Runner", "Evaluator", "SimulationEvaluator", "DeployedEvaluator", "onednn_runner",
           "unit_sensitivities", "greedy_skip_list", "GreedyStep"]

_logger = logging.getLogger(__name__)

Runner = Callable[[Path, Path, Sequence[Mapping[str, np.ndarray]]], list]
"""``runner(model_file, params_file, batches) -> outputs per batch`` (a list of arrays per batch)."""


@dataclass(frozen=True)
class Unit:
    """What one skip-list step leaves in float.

    Attributes:
        name: ``"conv2d#12"`` for one op (its index in the fp32 block), or the op type.
        op_type: type of the op(s).
        tensors: the quantized input tensors the unit owns (its skip-list entries).
    """

    name: str
    op_type: str
    tensors: tuple[str, ...]


@dataclass(frozen=True)
class GreedyStep:
    """One step of the greedy search: the skip list so far and its metric."""

    skipped_units: tuple[str, ...]
    metric: float


class Evaluator:
    """Outputs of the model with some tensors left in float (base class; see the two below)."""

    def __init__(self, program, plan: QuantPlan, quant_config, scope, place, exe,
                 feed_names: Sequence[str], fetch_names: Sequence[str], batches) -> None:
        self.program, self.plan, self.config = program, plan, quant_config
        self.scope, self.place, self.exe = scope, place, exe
        self.feed_names, self.fetch_names, self.batches = list(feed_names), list(fetch_names), batches
        self.runs = 0

    def _quantized_program(self, skip: Sequence[str], *, observers: bool):
        plan = self.plan.without_tensors(skip)
        if not observers:
            plan = dataclasses.replace(plan, observers=())
        program = self.program.clone(for_test=True)
        apply_plan(program, plan, self.config, self.scope, self.place, mode="test", rewire_backward=False)
        return program

    def fp32_outputs(self) -> list:
        """Outputs of the unquantized model, per batch."""
        raise NotImplementedError

    def outputs(self, skip: Sequence[str]) -> list:
        """Outputs per batch with every planned tensor quantized except ``skip``."""
        raise NotImplementedError


class SimulationEvaluator(Evaluator):
    """Runs the fake-quant eval program (QDQ ops, float kernels) in the Paddle Executor."""

    def _run(self, program) -> list:
        self.runs += 1
        with paddle.static.scope_guard(self.scope):
            return [self.exe.run(program, feed=dict(feed), fetch_list=self.fetch_names, scope=self.scope,
                                 return_numpy=True) for feed in self.batches]

    def fp32_outputs(self) -> list:
        return self._run(self.program)

    def outputs(self, skip: Sequence[str]) -> list:
        return self._run(self._quantized_program(skip, observers=False))


class DeployedEvaluator(Evaluator):
    """Freezes and saves each configuration (as ``quant_post`` would) and runs it with ``runner``.

    Args:
        fp32_files: ``(model_file, params_file)`` of the fp32 model, run with the same runner.
        runner: see :data:`Runner`.
        work_dir: where configurations are saved (one at a time, deleted after the run).
    """

    def __init__(self, *args, fp32_files: tuple[Path, Path], runner: Runner, work_dir: Path, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fp32_files, self.runner, self.work_dir = fp32_files, runner, Path(work_dir)

    def fp32_outputs(self) -> list:
        self.runs += 1
        return self.runner(self.fp32_files[0], self.fp32_files[1], self.batches)

    def outputs(self, skip: Sequence[str]) -> list:
        frozen = freeze_in_place(self._quantized_program(skip, observers=True), self.config, self.scope,
                                 self.place)
        folder = Path(tempfile.mkdtemp(prefix="config-", dir=self.work_dir))
        try:
            block = frozen.global_block()
            with paddle.static.scope_guard(self.scope):
                paddle.static.save_inference_model(
                    str(folder / "model"), [block.var(n) for n in self.feed_names],
                    [block.var(n) for n in self.fetch_names], self.exe, program=frozen)
            self.runs += 1
            return self.runner(folder / "model.pdmodel", folder / "model.pdiparams", self.batches)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def onednn_runner(*, threads: int = 2) -> Runner:
    """A :data:`Runner` on Paddle Inference (CPU, oneDNN, ``enable_onednn_int8()``).

    Quantized models run in int8 there, fp32 models in fp32. The predictor's inputs
    are fed by name from each batch; all its outputs are returned, in order.
    """
    def run(model_file: Path, params_file: Path, batches) -> list:
        predictor = create_predictor(onednn_config(model_file, params_file, threads=threads, int8=True))
        return [_predict(predictor, feed) for feed in batches]

    return run


def _predict(predictor, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    for name in predictor.get_input_names():
        handle = predictor.get_input_handle(name)
        value = np.ascontiguousarray(feed[name])
        handle.reshape(list(value.shape))
        handle.copy_from_cpu(value)
    predictor.run()
    return [predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()]


def _skip_of(units: Sequence[Unit], chosen: set[str]) -> list[str]:
    return [t for u in units if u.name in chosen for t in u.tensors]


def unit_sensitivities(evaluator: Evaluator, metric: Callable[[list], float], units: Sequence[Unit], *,
                       ways: Sequence[str], reference: float, all_quantized: float) -> dict[str, dict[str, float]]:
    """``{unit name: {"drop_alone": ..., "gain_float": ...}}`` for the requested ``ways``.

    Cost: ``len(units)`` evaluations per way.
    """
    names = {u.name for u in units}
    result: dict[str, dict[str, float]] = {u.name: {} for u in units}
    for unit in units:
        if "drop_alone" in ways:
            value = metric(evaluator.outputs(_skip_of(units, names - {unit.name})))
            result[unit.name]["drop_alone"] = reference - value
        if "gain_float" in ways:
            value = metric(evaluator.outputs(list(unit.tensors)))
            result[unit.name]["gain_float"] = value - all_quantized
        _logger.info("sensitivity of %s: %s", unit.name, result[unit.name])
    return result


def _order(units: Sequence[Unit], sensitivity: Mapping[str, Mapping[str, float]]) -> list[Unit]:
    def key(unit: Unit):
        values = sensitivity[unit.name]
        return (values.get("gain_float", 0.0), values.get("drop_alone", 0.0))

    return sorted(units, key=key, reverse=True)


def greedy_skip_list(evaluator: Evaluator, metric: Callable[[list], float], units: Sequence[Unit],
                     sensitivity: Mapping[str, Mapping[str, float]], *, reference: float, all_quantized: float,
                     max_drop: float) -> tuple[list[Unit], list[GreedyStep], bool]:
    """Leave units in float, most sensitive first, until ``reference - metric <= max_drop``.

    At least one unit stays quantized (a model with nothing quantized is not a
    quant_post output). Cost: one evaluation per step, at most ``len(units) - 1``.

    Returns:
        (skipped units in order, the steps taken, whether the target was met).
    """
    steps = [GreedyStep((), all_quantized)]
    if reference - all_quantized <= max_drop:
        return [], steps, True
    ordered, chosen = _order(units, sensitivity), []
    for unit in ordered[:-1]:
        chosen.append(unit)
        value = metric(evaluator.outputs(_skip_of(units, {u.name for u in chosen})))
        steps.append(GreedyStep(tuple(u.name for u in chosen), value))
        if reference - value <= max_drop:
            return chosen, steps, True
    return chosen, steps, False
