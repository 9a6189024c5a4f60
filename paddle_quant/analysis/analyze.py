"""Quantization analysis: per-layer error, per-layer sensitivity, an automatic skip list, a report.

:func:`analyze` calibrates a saved fp32 inference model once (the same plan,
observers and weight scales as ``quant_post``), then

1. **per-layer error**: runs the fake-quant eval program (every planned tensor
   quantized, QDQ ops with float kernels, in the Paddle Executor) next to the
   fp32 program on the calibration batches and compares the output of each
   quantized op. With ``x`` the fp32 output and ``y`` the quantized one, summed
   over all elements of all batches::

       SQNR   = 10 * log10( sum x^2 / sum (x - y)^2 )      [dB; inf when y == x]
       cosine = sum x*y / sqrt( sum x^2 * sum y^2 )

   The errors are those of the whole quantized model at that point (upstream
   errors included), which is what the next op sees.
2. **sensitivity** (:mod:`paddle_quant.analysis.sensitivity`): the metric change when only
   one unit is quantized (``drop_alone``) and when only that unit is left in
   float (``gain_float``).
3. **skip list**: with ``max_drop``, units are left in float greedily, most
   sensitive first, until the metric is within ``max_drop`` of fp32.
4. **report** (:mod:`paddle_quant.analysis.report`): ``report.html`` with per-layer tables
   and PNG plots, and ``analysis.json`` (top-level ``"skip_list"``).

The metric (higher is better) is the user's ``metric(outputs_per_batch)`` or, by
default, the output cosine: for each fetch target the cosine above over all
batches between the fp32 and the evaluated outputs, averaged over fetch targets
(fp32 scores 1.0). ``max_drop`` is in the metric's own units, except for the
default cosine where it is in percent: the target is ``100 * (1 - cosine) <= max_drop``
(``max_drop=0.5`` asks for an output cosine of at least 0.995).

Cost, with ``B`` batches, ``L`` quantized ops, ``U`` units (``U = L`` per layer,
the number of quantized op types per op type) and ``F`` one forward pass:
calibration ``B·F``; per-layer error ``2·ceil(L / fetch_group)·B·F``;
sensitivity ``(2 + U·ways)·B·F`` (ways: 1 or 2); the greedy skip list at most
``(U - 1)·B·F``. Programs are cloned from the fp32 program and the plan is
re-applied per configuration (milliseconds); scales are computed once and
found in the scope, never recalibrated. In deployed mode (``runner=``) each
sensitivity or greedy step also freezes and saves the model and builds a
predictor (seconds for PP-OCRv4 rec with oneDNN int8).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
import paddle

from ..common import registry
from ..common.program import legacy_ir
from ..ptq.calibration import calibrate
from ..common.errors import ConfigError, ConfigTypeError
from ..observers import make_observer
from ..passes.plan import OpQuant, QuantPlan
from ..passes.rewrite import apply_plan
from ..common.model_files import model_files
from ..common.model_files import load_inference_program as _load
from ..ptq.steps import make_observers, plan_post_training, prepare_fp32, weight_scales, write_scales
from ..ptq.config import PTQConfig
from .metrics import _Sums, cosine, output_cosine, score_metric, sqnr_db
from .results import AnalysisResult, LayerRow, TensorHistogram, UnitRow
from .sensitivity import (DeployedEvaluator, Runner, SimulationEvaluator, Unit, greedy_skip_list,
                          unit_sensitivities)

__all__ = ["analyze", "HISTOGRAM_ALGORITHMS", "SENSITIVITY_WAYS", "GRANULARITIES"]

_logger = logging.getLogger(__name__)

HISTOGRAM_ALGORITHMS: tuple[str, ...] = ("abs_max", "avg", "hist", "KL", "mse", "emd")
"""Algorithms whose thresholds the report draws on each activation histogram."""

SENSITIVITY_WAYS: tuple[str, ...] = ("both", "drop_alone", "gain_float", "none")
"""``sensitivity=`` values: which of the two sensitivities are measured."""

GRANULARITIES: tuple[str, ...] = ("layer", "op_type")
"""``granularity=`` values: a unit of the skip list is one quantized op, or every op of one type."""


# ---------------------------------------------------------------- arguments
def _materialize(batches, limit: int | None) -> list[dict]:
    source = batches() if callable(batches) else batches
    if isinstance(source, Mapping) or not isinstance(source, Iterable):
        raise ConfigTypeError("batches must be an iterable of feed dicts {feed name: ndarray}, or a callable "
                              f"returning one; got {type(source).__name__}")
    out = []
    for index, feed in enumerate(source):
        if limit is not None and index >= limit:
            break
        if not isinstance(feed, Mapping):
            raise ConfigTypeError(f"batch {index} is a {type(feed).__name__}; each batch must be a feed dict "
                                  "{feed name: ndarray}")
        out.append({str(k): np.asarray(v) for k, v in feed.items()})
    if not out:
        raise ConfigError("batches yielded no batch; analyze needs at least one calibration batch")
    return out


def _check_args(ptq_config, max_drop, metric, sensitivity, granularity, fetch_group) -> None:
    if not isinstance(ptq_config, PTQConfig):
        raise ConfigTypeError(f"ptq_config must be a paddle_quant.PTQConfig, got {type(ptq_config).__name__}")
    if max_drop is not None and (isinstance(max_drop, bool) or not isinstance(max_drop, (int, float))
                                 or not math.isfinite(max_drop) or max_drop < 0):
        raise ConfigError(f"max_drop must be None or a finite number >= 0, got {max_drop!r}")
    if metric is not None and not callable(metric):
        raise ConfigTypeError(f"metric must be None or a callable(outputs_per_batch) -> float, got {metric!r}")
    if sensitivity not in SENSITIVITY_WAYS:
        raise ConfigError(f"sensitivity must be one of {list(SENSITIVITY_WAYS)}, got {sensitivity!r}")
    if granularity not in GRANULARITIES:
        raise ConfigError(f"granularity must be one of {list(GRANULARITIES)}, got {granularity!r}")
    if isinstance(fetch_group, bool) or not isinstance(fetch_group, int) or fetch_group < 1:
        raise ConfigError(f"fetch_group must be an int >= 1, got {fetch_group!r}")
    if max_drop is not None and sensitivity == "none":
        raise ConfigError("max_drop needs a sensitivity ranking; sensitivity='none' measures none (use 'both', "
                          "'drop_alone' or 'gain_float')")


def _report_dir(report_dir, model: Path) -> Path:
    if report_dir is None:
        raise ConfigError("report_dir is required: the folder the report is written into")
    target = Path(report_dir)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"report_dir {str(report_dir)!r} exists and is not a directory")
    if target.resolve() == model.parent.resolve():
        raise ConfigError(f"report_dir {str(report_dir)!r} is the model folder; choose another folder")
    return target


# ---------------------------------------------------------------- layers and units
def _output_of(block, op_quant: OpQuant) -> str:
    op = block.ops[op_quant.index]
    spec = registry.WEIGHT_OP_SPECS.get(op.type) or registry.ACTIVATION_OP_SPECS.get(op.type)
    slots = spec.outputs if spec is not None else op.output_names
    return next(op.output(slot)[0] for slot in slots if slot in op.output_names and op.output(slot))


def _units(plan: QuantPlan, granularity: str) -> list[Unit]:
    if granularity == "layer":
        return [Unit(f"{o.op_type}#{o.index}", o.op_type, tuple(n for _, n in o.inputs)) for o in plan.ops]
    grouped: dict[str, list[str]] = {}
    for op in plan.ops:
        grouped.setdefault(op.op_type, []).extend(n for _, n in op.inputs)
    return [Unit(t, t, tuple(dict.fromkeys(names))) for t, names in grouped.items()]


# ---------------------------------------------------------------- per-layer error
class _Probe:
    """Histogram of one activation plus the avg observer, for the report's threshold plot."""

    def __init__(self, ptq: PTQConfig) -> None:
        self.hist = make_observer("hist", bits=ptq.activation_bits, hist_percent=ptq.hist_percent)
        self.avg = make_observer("avg")
        self.emd = make_observer("emd", bits=ptq.activation_bits)  # scores each batch: needs every update
        self.ptq = ptq

    def update(self, value: np.ndarray) -> None:
        self.hist.update(value)
        self.avg.update(value)
        self.emd.update(value)

    def result(self, tensor: str) -> TensorHistogram:
        thresholds = {"abs_max": float(self.hist.histogram.abs_max), "avg": float(self.avg.compute_scale()[0]),
                      "emd": float(self.emd.compute_scale()[0])}
        for algo in ("hist", "KL", "mse"):
            observer = make_observer(algo, bits=self.ptq.activation_bits, hist_percent=self.ptq.hist_percent)
            observer.histogram = self.hist.histogram
            thresholds[algo] = float(observer.compute_scale()[0])
        histogram = self.hist.histogram
        return TensorHistogram(tensor, histogram.counts.copy(), float(histogram.bin_width), thresholds,
                               self.ptq.activation_algorithm)


def _layer_errors(exe, scope, fp32, quantized, plan: QuantPlan, outputs: list[str], probes: Mapping[str, _Probe],
                  batches, fetch_group: int) -> dict[str, _Sums]:
    """Running sums per output tensor; the probes see the fp32 activations of the same runs.

    Ops are taken ``fetch_group`` at a time: their outputs (both programs) and their
    not yet seen quantized activations (fp32 program) are fetched together.
    """
    sums, seen = {name: _Sums() for name in outputs}, set()
    for start in range(0, len(outputs), fetch_group):
        group = list(dict.fromkeys(outputs[start:start + fetch_group]))
        acts = [n for op in plan.ops[start:start + fetch_group] for _, n in op.inputs if n in probes and n not in seen]
        acts = list(dict.fromkeys(acts))
        seen.update(acts)
        for feed in batches:
            ref = exe.run(fp32, feed=dict(feed), fetch_list=group + acts, scope=scope, return_numpy=True)
            got = exe.run(quantized, feed=dict(feed), fetch_list=group, scope=scope, return_numpy=True)
            for name, x, y in zip(group, ref, got):
                sums[name].add(x, y)
            for name, value in zip(acts, ref[len(group):]):
                probes[name].update(value)
    return sums


# ---------------------------------------------------------------- the run
@dataclass
class _Model:
    program: object
    feed_names: list
    fetch_names: list
    files: tuple
    scope: object
    exe: object
    place: object


def _calibrated_model(model_dir, model_filename, params_filename, ptq: PTQConfig, batches) -> tuple[_Model, QuantPlan]:
    model, params = model_files(model_dir, model_filename, params_filename)
    if params is None:
        raise ConfigError(f"model_dir {str(model_dir)!r}: analyze needs a combined params file; pass params_filename=")
    scope, place = paddle.static.Scope(), paddle.CPUPlace()
    exe = paddle.static.Executor(place)
    program, feed_names, fetch_names = _load(exe, scope, model, params)
    prepare_fp32(exe, program, scope, place, ptq, lambda: iter(batches), feed_names)  # equalize, smooth: exact
    plan = plan_post_training(program, ptq)
    observers = make_observers(plan, ptq)
    calibrate(exe, program, scope, iter(batches), observers, feed_names=feed_names, show_progress=ptq.show_progress)
    write_scales(scope, place, {n: o.compute_scale() for n, o in observers.items()})
    write_scales(scope, place, weight_scales(plan, scope, ptq))
    return _Model(program, feed_names, fetch_names, (model, params), scope, exe, place), plan


def _evaluator(m: _Model, plan: QuantPlan, ptq: PTQConfig, batches, runner, work_dir):
    args = (m.program, plan, ptq.to_quant_config(), m.scope, m.place, m.exe, m.feed_names, m.fetch_names, batches)
    if runner is None:
        return SimulationEvaluator(*args)
    return DeployedEvaluator(*args, fp32_files=m.files, runner=runner, work_dir=work_dir)


def _ways(sensitivity: str) -> tuple[str, ...]:
    return {"both": ("drop_alone", "gain_float"), "none": ()}.get(sensitivity, (sensitivity,))


def _layer_rows(plan, errors, outputs, sens, skipped_units, granularity) -> tuple[LayerRow, ...]:
    unit_of = {op.index: (f"{op.op_type}#{op.index}" if granularity == "layer" else op.op_type) for op in plan.ops}
    rows = []
    for op, output in zip(plan.ops, outputs):
        s, unit = errors[output], unit_of[op.index]
        values = sens.get(unit, {}) if granularity == "layer" else {}
        rows.append(LayerRow(f"{op.op_type}#{op.index}", op.op_type, op.index, output,
                             tuple(n for _, n in op.inputs), sqnr_db(s.xx, s.ee), cosine(s.xy, s.xx, s.yy),
                             values.get("drop_alone"), values.get("gain_float"), unit in skipped_units))
    return tuple(rows)


def analyze(model_dir, batches, ptq_config: PTQConfig, *, report_dir, max_drop: float | None = None,
            metric: Callable[[list], float] | None = None, model_filename=None, params_filename=None,
            sensitivity: str = "both", granularity: str = "layer", runner: Runner | None = None,
            fetch_group: int = 16, plots: bool = True, max_plots: int = 24, eval_batches=None) -> AnalysisResult:
    """Per-layer error, per-layer sensitivity and an automatic skip list for ``quant_post``; writes a report.

    See the module docstring for the math and the cost.

    Args:
        model_dir: folder of the fp32 inference model (never written to).
        batches: feed dicts ``{feed name: ndarray}`` (a list, an iterable, or a zero-argument callable
            returning an iterator); at most ``ptq_config.batch_nums`` are used, kept in memory.
        ptq_config: the quant_post options (algo, bits, weight method, quantizable_op_type, output_scales,
            skip_tensor_list, ...): the plan, observers and scales are quant_post's.
        report_dir: folder for ``report.html``, ``analysis.json`` and ``plots/`` (created; files there
            with those names are replaced).
        max_drop: target for the skip list (metric units; percent of cosine for the default metric);
            None: no skip list is searched.
        metric: ``metric(outputs_per_batch) -> float``, higher is better (outputs in fetch-target order);
            None: output cosine against fp32.
        model_filename / params_filename: file names inside ``model_dir`` (as quant_post).
        sensitivity: ``"both"``, ``"drop_alone"``, ``"gain_float"`` or ``"none"``.
        granularity: ``"layer"`` (one unit per quantized op) or ``"op_type"``.
        runner: None evaluates configurations in the Executor (fake-quant simulation); a
            :data:`~paddle_quant.analysis.sensitivity.Runner` (e.g. :func:`~paddle_quant.analysis.sensitivity.onednn_runner`)
            evaluates the saved, frozen models on a runtime (the deployed accuracy).
        fetch_group: quantized-op outputs fetched per run in the per-layer error pass (memory bound).
        plots: draw PNG plots (needs matplotlib, the ``report`` extra).
        max_plots: histograms drawn at most (the most sensitive layers' activations first).
        eval_batches: feed dicts the metric (sensitivity, skip list) is measured on; None: ``batches``.

    Returns:
        :class:`AnalysisResult`.

    Raises:
        ConfigError / ConfigTypeError: bad arguments, model folder or batches.
        ReportDependencyError: ``plots=True`` without matplotlib (checked before any work).
        ProgramStateError: nothing in the model can be quantized under ``ptq_config``.
    """
    from .report import check_plotting, write_report

    started = time.perf_counter()
    _check_args(ptq_config, max_drop, metric, sensitivity, granularity, fetch_group)
    if plots:
        check_plotting()
    target = _report_dir(report_dir, *model_files(model_dir, model_filename, params_filename)[:1])
    data = _materialize(batches, ptq_config.batch_nums)
    eval_data = data if eval_batches is None else _materialize(eval_batches, None)
    with legacy_ir(), tempfile.TemporaryDirectory(prefix="paddle-quant-analyze-") as work:
        m, plan = _calibrated_model(model_dir, model_filename, params_filename, ptq_config, data)
        outputs = [_output_of(m.program.global_block(), op) for op in plan.ops]
        probes = {t.var: _Probe(ptq_config) for t in plan.tensors if t.role == "activation"}
        errors = _layer_errors(m.exe, m.scope, m.program, _fully_quantized(m, plan, ptq_config), plan, outputs,
                               probes, data, fetch_group)
        evaluator = _evaluator(m, plan, ptq_config, eval_data, runner, Path(work))
        search = _search(evaluator, metric, _units(plan, granularity), _ways(sensitivity), max_drop)
    skip_names = {u.name for u in search.skipped}
    skipped_tensors = [t for u in search.skipped for t in u.tensors]
    result = AnalysisResult(
        _layer_rows(plan, errors, outputs, search.sensitivity, skip_names, granularity),
        tuple(UnitRow(u.name, u.op_type, u.tensors, search.sensitivity[u.name].get("drop_alone"),
                      search.sensitivity[u.name].get("gain_float"), u.name in skip_names) for u in search.units),
        tuple(dict.fromkeys(list(ptq_config.skip_tensor_list) + skipped_tensors)),
        target / "report.html", target / "analysis.json", search.metric_name, search.reference,
        search.all_quantized, search.steps[-1].metric if search.steps else None, max_drop, search.met,
        tuple(search.steps), "simulation" if runner is None else "deployed", len(data), evaluator.runs,
        time.perf_counter() - started)
    _logger.info("analyze: %d layers, %d evaluations, skip list of %d tensors, %.1f s", len(result.layers),
                 result.evaluations, len(result.skip_list), result.seconds)
    write_report(result, [probes[name].result(name) for name in probes], target, plots=plots,
                 max_plots=max_plots, config=ptq_config)
    return result


def _fully_quantized(m: _Model, plan: QuantPlan, ptq: PTQConfig):
    """The eval program with every planned tensor quantized (output observers dropped: identities)."""
    program = m.program.clone(for_test=True)
    apply_plan(program, dataclasses.replace(plan, observers=()), ptq.to_quant_config(), m.scope, m.place,
               mode="test", rewire_backward=False)
    return program


@dataclass
class _Search:
    units: list
    sensitivity: dict
    metric_name: str
    reference: float
    all_quantized: float
    skipped: list
    steps: list
    met: bool | None


def _search(evaluator, metric, units: list[Unit], ways: tuple[str, ...], max_drop) -> _Search:
    """Reference metrics, sensitivities and (with ``max_drop``) the greedy skip list."""
    fp32_outputs = evaluator.fp32_outputs()
    score = metric if metric is not None else output_cosine(fp32_outputs)
    checked = functools.partial(score_metric, score)
    reference, all_quantized = checked(fp32_outputs), checked(evaluator.outputs([]))
    sens = unit_sensitivities(evaluator, checked, units, ways=ways, reference=reference, all_quantized=all_quantized)
    skipped, steps, met = [], [], None
    if max_drop is not None:
        budget = max_drop / 100.0 if metric is None else float(max_drop)
        skipped, steps, met = greedy_skip_list(evaluator, checked, units, sens, reference=reference,
                                               all_quantized=all_quantized, max_drop=budget)
    return _Search(units, sens, getattr(score, "__name__", "metric"), reference, all_quantized, skipped, steps, met)
