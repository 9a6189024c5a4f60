"""What :func:`~paddle_quant.analysis.analyze.analyze` returns: per-layer rows, units, histograms, the result."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .sensitivity import GreedyStep

__all__ = ["LayerRow", "UnitRow", "TensorHistogram", "AnalysisResult"]


@dataclass(frozen=True)
class LayerRow:
    """One quantized op of the model.

    Attributes:
        name: ``"{op_type}#{index}"``, index in the fp32 program's global block.
        op_type: the op's type.
        index: the op's index in the fp32 program's global block.
        output: the op's output tensor compared against fp32.
        inputs: quantized input tensors (weight and activations): the op's skip-list entries.
        sqnr_db: SQNR of the output vs fp32 in dB (``inf`` when identical).
        cosine: cosine similarity of the output vs fp32.
        drop_alone: metric(fp32) - metric(only this layer's unit quantized), or None if not measured.
        gain_float: metric(all but this layer's unit quantized) - metric(all quantized), or None.
        skipped: True if its unit is in the automatic skip list.
    """

    name: str
    op_type: str
    index: int
    output: str
    inputs: tuple[str, ...]
    sqnr_db: float
    cosine: float
    drop_alone: float | None
    gain_float: float | None
    skipped: bool


@dataclass(frozen=True)
class UnitRow:
    """One unit of the skip-list search: its tensors and sensitivities (None when not measured)."""

    name: str
    op_type: str
    tensors: tuple[str, ...]
    drop_alone: float | None
    gain_float: float | None
    skipped: bool


@dataclass(frozen=True)
class TensorHistogram:
    """Histogram of ``|x|`` for one quantized activation and the threshold each algorithm picks.

    Attributes:
        tensor: activation name.
        counts: counts per bin of ``|x|``.
        bin_width: width of each bin (bins start at 0).
        thresholds: algorithm -> threshold (the float ``|x|`` mapped to qmax).
        chosen: the algorithm of the run (its threshold is the scale used).
    """

    tensor: str
    counts: np.ndarray
    bin_width: float
    thresholds: dict
    chosen: str


@dataclass(frozen=True)
class AnalysisResult:
    """What :func:`analyze` measured and where the report is.

    Attributes:
        layers: per quantized op, in program order.
        units: the skip-list units with their sensitivities.
        skip_list: tensor names to leave in float (``PTQConfig.skip_tensor_list`` / ``quant_post``'s
            ``skip_tensor_list=``); includes the config's own ``skip_tensor_list``.
        report_path: the HTML report.
        json_path: ``analysis.json`` next to it (top-level ``"skip_list"``).
        metric_name: ``"output_cosine"`` or the user metric's name.
        fp32_metric / quantized_metric / skip_metric: metric of the fp32 model, with every unit
            quantized, and with the skip list applied (None when no skip list was searched).
        max_drop: the target, as given.
        target_met: whether the skip list meets it (None without ``max_drop``).
        greedy: the greedy search's steps.
        mode: ``"simulation"`` (Executor) or ``"deployed"`` (the runner) for the sensitivity.
        batches: calibration batches used.
        evaluations: model evaluations spent on sensitivity and the greedy search.
        seconds: wall time of the analysis.
    """

    layers: tuple[LayerRow, ...]
    units: tuple[UnitRow, ...]
    skip_list: tuple[str, ...]
    report_path: Path
    json_path: Path
    metric_name: str
    fp32_metric: float
    quantized_metric: float
    skip_metric: float | None
    max_drop: float | None
    target_met: bool | None
    greedy: tuple[GreedyStep, ...]
    mode: str
    batches: int
    evaluations: int
    seconds: float
