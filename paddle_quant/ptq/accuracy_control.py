"""Accuracy-controlled post-training quantization: ask for a target, not for settings.

``quant_post(..., accuracy_control=AccuracyControl(metric, eval_batches, max_drop))`` searches for
the model with the most int8 compute whose metric, measured on the deployed runtime, stays within
``max_drop`` of the fp32 model's:

1. every calibration algorithm of ``algos`` with every option set of ``recovery`` (e.g. bias
   correction on/off), all op types quantized: the best candidate wins; if it meets the target,
   that is the model (every candidate quantizes the same ops, so the one with the best metric);
2. otherwise the fewest layers left in float: ``analyze`` ranks the layers by how much the metric
   gains when each alone stays in float (with the winning settings, on the runtime, on
   ``eval_batches`` or their first ``skip_search_batches``: one model per layer, so this bounds the
   cost); then the 1, 2, 4, ... most sensitive layers are left in float, each a ``quant_post``
   measured on all of ``eval_batches``, until one meets the target, and the count is bisected
   between the last miss and that hit.

The chosen model is the one meeting the target with the fewest tensors in float (the best metric
among those), written to ``quantize_model_path``; when nothing meets the target the best model
found is written, a warning is logged and ``target_met`` is False. The calibration data is read
once and kept in memory (``batch_nums`` batches) so every candidate sees the same batches.

Cost: one ``quant_post`` and one evaluation per candidate, then (if needed) one ``analyze``
(an evaluation per quantized layer) and about ``2 log2(k)`` more candidates for ``k`` layers in float.

An earlier version took ``analyze``'s greedy skip list, whose steps were judged on the ranking
batches: with 8 batches of rec a 0.5-point target means not one line lost, and the greedy left 46 of
48 tensors in float. Judging every count on all of ``eval_batches`` is what the target is about.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..common.errors import ConfigError, ConfigTypeError
from ..common.validation import translate_validation_error
from .config import ALGORITHMS, PTQConfig

__all__ = ["AccuracyControl", "AccuracyCandidate", "AccuracyControlResult", "DEFAULT_RECOVERY", "DEPTHWISE_RECOVERY",
           "recovery_sets", "search_quantization"]

_logger = logging.getLogger(__name__)

_RUNTIMES = {"onednn": ("paddle_fp32", "onednn"), "executor": ("executor", "executor")}
"""``runtime=`` -> (runner for the fp32 model, runner for the int8 models)."""

_ALLOWED = {
    "metric": "a callable(outputs_per_batch) -> float, higher is better",
    "eval_batches": "a non-empty list of feed dicts {feed name: ndarray}",
    "max_drop": "a finite number >= 0, in the metric's units",
    "runtime": f"one of {list(_RUNTIMES)}",
    "algos": f"a non-empty list of algorithms from {list(ALGORITHMS)}",
    "recovery": "None (the defaults) or a non-empty list of dicts of quant_post options (e.g. "
                "{'bias_correction': True})",
    "search_skip_list": "True or False",
    "skip_search_batches": "None or an int >= 1",
    "threads": "an int >= 1",
}


class AccuracyControl(BaseModel):
    """What ``quant_post(..., accuracy_control=...)`` must reach, and where to look (see the module docstring).

    Example:
        >>> control = AccuracyControl(metric=top1, eval_batches=batches, max_drop=0.5)
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    metric: Callable[[list], float] = Field(
        description="metric(outputs_per_batch) -> float, higher is better; outputs in fetch-target order "
        "(the contract of analyze's metric).")
    eval_batches: tuple[dict, ...] = Field(description="Feed dicts the metric is measured on (not calibration data).")
    max_drop: float = Field(description="Largest allowed metric drop from fp32, in the metric's units, >= 0.")
    runtime: Literal["onednn", "executor"] = Field(
        "onednn", description="Where candidates are measured: 'onednn' (Paddle Inference int8, the deployed "
        "accuracy) or 'executor' (the fake-quant simulation).")
    algos: tuple[str, ...] = Field(("hist", "avg", "emd", "mse"), description="Calibration algorithms tried.")
    recovery: Optional[tuple[dict, ...]] = Field(
        None,
        description="quant_post option sets tried with each algorithm (accuracy-recovery methods on/off). None: "
        "bias correction off and on (DEFAULT_RECOVERY), each also with smooth_depthwise when the call quantizes "
        "depthwise convs with per-channel weights and leaves smooth_depthwise unset (DEPTHWISE_RECOVERY; without "
        "it where the deploy_backend smooths by default); every set also with float_pools=True where the backend is "
        "onednn, the model has pools and the call leaves some conv in float (a conv type not quantized, a skip "
        "list).")
    search_skip_list: bool = Field(True, description="Leave the most sensitive layers in float if no candidate "
                                   "meets the target.")
    skip_search_batches: Optional[int] = Field(
        None, ge=1, description="How many of eval_batches the skip-list search ranks layers on (one model per "
        "layer, so this bounds its cost; None: all); each count of layers in float is then measured on all of "
        "them. With a number, the metric must score the outputs of any first batches of eval_batches.")
    threads: int = Field(2, ge=1, description="CPU threads of the runtime.")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise translate_validation_error(exc, data, type(self).model_fields, _ALLOWED) from None

    @field_validator("metric", mode="before")
    @classmethod
    def _callable(cls, value: Any) -> Any:
        if not callable(value):
            raise ConfigTypeError(f"metric must be callable, got {type(value).__name__}")
        return value

    @field_validator("eval_batches", mode="before")
    @classmethod
    def _feed_dicts(cls, value: Any) -> Any:
        if isinstance(value, Mapping) or not isinstance(value, (list, tuple)):
            raise ConfigTypeError(f"eval_batches must be a list of feed dicts, got {type(value).__name__}")
        if not value:
            raise ConfigError("eval_batches is empty; the metric needs at least one batch")
        for index, feed in enumerate(value):
            if not isinstance(feed, Mapping) or not feed:
                raise ConfigTypeError(f"eval_batches[{index}] is {type(feed).__name__}, not a feed dict")
        return tuple({str(k): np.asarray(v) for k, v in feed.items()} for feed in value)

    @field_validator("max_drop", mode="before")
    @classmethod
    def _finite_non_negative(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"max_drop must be a finite number >= 0, got {value!r}")
        return float(value)

    @field_validator("algos", mode="before")
    @classmethod
    def _known_algos(cls, value: Any) -> Any:
        value = tuple(value) if isinstance(value, list) else value
        if not isinstance(value, tuple) or not value or any(a not in ALGORITHMS for a in value):
            raise ConfigError(f"algos got {value!r}")
        return value

    @field_validator("recovery", mode="before")
    @classmethod
    def _option_sets(cls, value: Any) -> Any:
        if value is None:
            return None
        value = tuple(value) if isinstance(value, list) else value
        if not isinstance(value, tuple) or not value or not all(isinstance(v, dict) for v in value):
            raise ConfigError(f"recovery got {value!r}")
        for options in value:
            PTQConfig(**options)  # a bad option is refused here, naming it, before any work
        return value


DEFAULT_RECOVERY: tuple[dict, ...] = ({}, {"bias_correction": True})
"""Recovery option sets tried with every algorithm when ``recovery`` is None."""
DEPTHWISE_RECOVERY: tuple[dict, ...] = ({"smooth_depthwise": True}, {"smooth_depthwise": True, "bias_correction": True})
"""Added to :data:`DEFAULT_RECOVERY` when the call quantizes depthwise convs with per-channel weights (PP-OCRv4 rec
with PaddleSlim's four op types: avg 69 -> 90 % exact match deployed on oneDNN, docs/ptq.md)."""


def recovery_sets(control: "AccuracyControl", base_options: Mapping[str, Any], model_ops) -> tuple[dict, ...]:
    """The option sets tried with each algorithm: ``control.recovery``, or the defaults for the call's options
    and a model with the op types ``model_ops`` (each set also with ``float_pools=True`` where
    :func:`_pools_may_read_float`)."""
    if control.recovery is not None:
        return control.recovery
    base = PTQConfig(**base_options)
    sets = _smoothing_sets(base, model_ops)
    if _pools_may_read_float(base, model_ops):
        return sets + tuple({**options, "float_pools": True} for options in sets)
    return sets


def _smoothing_sets(base: PTQConfig, model_ops) -> tuple[dict, ...]:
    depthwise = ("depthwise_conv2d" in model_ops and "depthwise_conv2d" in base.to_quant_config().weight_op_types
                 and base.weight_quantize_type == "channel_wise_abs_max" and base.smooth_depthwise is None
                 and not base.onednn_without_vnni)
    if not depthwise:
        return DEFAULT_RECOVERY
    if base.effective_smooth_depthwise:  # the backend smooths by default (onednn): the sets try it off as well
        return DEFAULT_RECOVERY + tuple({**options, "smooth_depthwise": False} for options in DEPTHWISE_RECOVERY)
    return DEFAULT_RECOVERY + DEPTHWISE_RECOVERY


def _pools_may_read_float(base: PTQConfig, model_ops) -> bool:
    """Whether ``float_pools`` can change the model (PP-OCR cls with conv2d only: 89.75 -> 94.50 %, PP-OCRv4 rec
    with conv2d only 1.3-4.8 points lower, docs/ptq.md): the backend runs average pools at their output's scale
    (oneDNN), the model has pools, a convolution the call leaves in float (a conv type not quantized, or a skip
    list) may write a pool's input, and the call leaves ``float_pools`` off."""
    conv_types = {"conv2d", "depthwise_conv2d", "conv2d_transpose"} & set(model_ops)
    float_convs = bool(conv_types - set(base.to_quant_config().weight_op_types)) or bool(base.skip_tensor_list)
    return base.quantize_pool_inputs and not base.float_pools and "pool2d" in model_ops and float_convs


@dataclass(frozen=True)
class AccuracyCandidate:
    """One measured setting: its options, the skip list, its metric and the time it took."""

    options: dict
    skipped_tensors: tuple[str, ...]
    metric: float
    seconds: float


@dataclass(frozen=True)
class AccuracyControlResult:
    """What the search found (``PTQResult.accuracy_control``).

    Attributes:
        fp32_metric / int8_metric: the metric of the fp32 model and of the model written, on ``runtime``.
        max_drop / target_met: the target and whether the written model meets it.
        options: the quant_post options of the written model (algorithm and recovery settings).
        skipped_tensors: the tensors left in float by the search (besides the call's own skip list).
        candidates: every setting measured, in order.
        runtime / seconds: where it was measured and how long the whole search took.
    """

    fp32_metric: float
    int8_metric: float
    max_drop: float
    target_met: bool
    options: dict
    skipped_tensors: tuple[str, ...]
    candidates: tuple[AccuracyCandidate, ...]
    runtime: str
    seconds: float


def _measure(control: AccuracyControl, runtime: str, model_file, params_file) -> float:
    from ..analysis.metrics import score_metric
    from ..deploy.runtimes import make_runner

    runner = make_runner(runtime, model_file, params_file, threads=control.threads)
    missing = [sorted(set(runner.input_names) - set(feed)) for feed in control.eval_batches]
    if any(missing):
        raise ConfigError(f"eval_batches[{next(i for i, m in enumerate(missing) if m)}] lacks feed(s) "
                          f"{next(m for m in missing if m)}; the model's feeds are {list(runner.input_names)}")
    return score_metric(control.metric, [runner.run(feed) for feed in control.eval_batches])


def _describe(options: dict, skipped: tuple[str, ...]) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "defaults"
    return text + (f", {len(skipped)} tensors in float" if skipped else "")


class _Search:
    """The state of one search: where candidates go, what was measured, the best so far."""

    def __init__(self, control, run, work: Path, fp32_metric: float) -> None:
        self.control, self.run, self.work, self.fp32_metric = control, run, work, fp32_metric
        self.candidates: list[AccuracyCandidate] = []
        self.best: tuple[AccuracyCandidate, Any] | None = None

    def meets(self, candidate: AccuracyCandidate) -> bool:
        return self.fp32_metric - candidate.metric <= self.control.max_drop

    def try_options(self, options: dict, skipped: tuple[str, ...] = ()) -> AccuracyCandidate:
        started = time.perf_counter()
        folder = self.work / f"candidate{len(self.candidates)}"
        result = self.run(folder, options, skipped)
        metric = _measure(self.control, _RUNTIMES[self.control.runtime][1], result.model_file, result.params_file)
        candidate = AccuracyCandidate(dict(options), skipped, metric, time.perf_counter() - started)
        self.candidates.append(candidate)
        _logger.info("accuracy_control [%d] %s: metric %.4g (fp32 %.4g, drop %.4g, target %.4g)%s",
                        len(self.candidates), _describe(options, skipped), metric, self.fp32_metric,
                        self.fp32_metric - metric, self.control.max_drop, " - target met" if self.meets(candidate)
                        else "")
        if self.best is None or self._rank(candidate) > self._rank(self.best[0]):
            self.best = (candidate, folder)
        return candidate

    def _rank(self, candidate: AccuracyCandidate):
        """Meeting the target first, then the fewest tensors in float, then the metric."""
        met = self.meets(candidate)
        return (met, -len(candidate.skipped_tensors) if met else 0, candidate.metric)


def _ranked_layers(control, files: tuple[Path, Path], calibration, options: dict, base_options: dict,
                   work: Path) -> list[tuple[str, ...]]:
    """The tensors of each quantized layer (``analyze``'s units), the layer whose float version gains the metric
    most first; the call's own skip list is left out."""
    from ..analysis.analyze import analyze
    from ..analysis.sensitivity import onednn_runner

    ptq = PTQConfig(**{**base_options, **options})
    runner = onednn_runner(threads=control.threads) if control.runtime == "onednn" else None
    _logger.info("accuracy_control: no candidate met the target; ranking layers on %d eval batches (one model "
                 "per layer)", len(control.eval_batches[:control.skip_search_batches]))
    result = analyze(str(files[0].parent), calibration, ptq, report_dir=work / "analysis", metric=control.metric,
                     model_filename=files[0].name, params_filename=files[1].name, sensitivity="gain_float",
                     runner=runner, plots=False,
                     eval_batches=list(control.eval_batches[:control.skip_search_batches]))  # None: all
    own = set(ptq.skip_tensor_list)
    ranked = sorted(result.units, key=lambda u: (u.gain_float or 0.0, u.drop_alone or 0.0), reverse=True)
    layers = [tuple(t for t in unit.tensors if t not in own) for unit in ranked]
    return [tensors for tensors in layers if tensors]


def _tensors_of(layers: list[tuple[str, ...]], count: int) -> tuple[str, ...]:
    return tuple(dict.fromkeys(t for tensors in layers[:count] for t in tensors))


def _doubling(limit: int):
    """1, 2, 4, ... below ``limit``, then ``limit`` itself (nothing when ``limit`` < 1)."""
    count = 1
    while count < limit:
        yield count
        count *= 2
    if limit >= 1:
        yield limit


def _fewest_layers_in_float(search: _Search, options: dict, layers: list[tuple[str, ...]]) -> None:
    """Leave the first 1, 2, 4, ... of ``layers`` in float until a candidate meets the target, then bisect the
    count between the last miss and that hit. At least one layer stays quantized."""
    miss, hit = 0, None
    for count in _doubling(len(layers) - 1):
        if search.meets(search.try_options(options, _tensors_of(layers, count))):
            hit = count
            break
        miss = count
    while hit is not None and hit - miss > 1:
        middle = (miss + hit) // 2
        if search.meets(search.try_options(options, _tensors_of(layers, middle))):
            hit = middle
        else:
            miss = middle


def search_quantization(control: AccuracyControl, *, fp32_files: tuple[Path, Path], target: Path, calibration: list,
                        base_options: dict, run: Callable) -> tuple[AccuracyControlResult, Path]:
    """Run the search (module docstring) and move the chosen model into ``target``.

    Args:
        control: the target and the search space.
        fp32_files: ``(model_file, params_file)`` of the fp32 model.
        target: the folder the chosen model is written to (replaced atomically).
        calibration: the calibration feed dicts, in memory.
        base_options: the caller's PTQConfig options (a candidate's options override them).
        run: ``run(folder, options, skipped_tensors) -> PTQResult``: quant_post into ``folder``.

    Returns:
        The result and the folder the chosen candidate was written to before it was moved to ``target``.
    """
    from ..common.model_files import model_op_types, swap_into_place

    started = time.perf_counter()
    recovery = recovery_sets(control, base_options, model_op_types(fp32_files[0]))
    fp32_metric = _measure(control, _RUNTIMES[control.runtime][0], *fp32_files)
    _logger.info("accuracy_control: fp32 metric %.4g on %s; %d candidates, target drop <= %.4g", fp32_metric,
                    control.runtime, len(control.algos) * len(recovery), control.max_drop)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.search.", dir=target.parent) as work_name:
        work = Path(work_name)
        search = _Search(control, run, work, fp32_metric)
        for algo in control.algos:
            for options in recovery:
                search.try_options({"algo": algo, **options})
        best = search.best[0]
        if not search.meets(best) and control.search_skip_list:
            layers = _ranked_layers(control, fp32_files, calibration, best.options, base_options, work)
            _fewest_layers_in_float(search, best.options, layers)
        chosen, folder = search.best
        swap_into_place(folder, target)
    met = search.meets(chosen)
    if not met:
        _logger.warning("accuracy_control: no setting met max_drop=%.4g; wrote the best (%s: metric %.4g, fp32 "
                        "%.4g)", control.max_drop, _describe(chosen.options, chosen.skipped_tensors), chosen.metric,
                        fp32_metric)
    return AccuracyControlResult(fp32_metric, chosen.metric, control.max_drop, met, chosen.options,
                                 chosen.skipped_tensors, tuple(search.candidates), control.runtime,
                                 time.perf_counter() - started), folder
