"""The analysis report: ``report.html``, ``analysis.json`` and PNG plots, written atomically.

The page is :mod:`.report_html` (summary, pictures, then sortable tables); the plots are
:mod:`.report_plots` and need matplotlib (the ``report`` extra,
``pip install 'paddle_quant[report]'``), imported only when plots are drawn.

Files are written into a temporary folder inside ``report_dir`` and moved into
place, the HTML last, so a reader never sees a report whose plots or JSON are
missing; nothing is written outside ``report_dir``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

from ..common.errors import MissingDependencyError
from .report_html import render_html
from .report_plots import PLOTS_FOLDER, draw_plots

__all__ = ["ReportDependencyError", "check_plotting", "write_report", "report_json"]


class ReportDependencyError(MissingDependencyError):
    """An optional dependency of the report (matplotlib) is not installed."""


def check_plotting() -> None:
    """Raise ReportDependencyError when matplotlib cannot be imported."""
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError as exc:
        raise ReportDependencyError(
            "plots=True needs matplotlib: pip install 'paddle_quant[report]' (or matplotlib), or pass "
            "plots=False for a report with tables only") from exc


# ---------------------------------------------------------------- JSON
def _number(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def report_json(result) -> dict:
    """The JSON document: ``skip_list`` first, then the metrics, layers and units (inf/NaN as null)."""
    return {
        "skip_list": list(result.skip_list),
        "metric": result.metric_name,
        "fp32_metric": _number(result.fp32_metric),
        "quantized_metric": _number(result.quantized_metric),
        "skip_metric": _number(result.skip_metric),
        "max_drop": result.max_drop,
        "target_met": result.target_met,
        "mode": result.mode,
        "batches": result.batches,
        "evaluations": result.evaluations,
        "seconds": round(result.seconds, 3),
        "layers": [{"name": r.name, "op_type": r.op_type, "index": r.index, "output": r.output,
                    "inputs": list(r.inputs), "sqnr_db": _number(r.sqnr_db), "cosine": _number(r.cosine),
                    "drop_alone": _number(r.drop_alone), "gain_float": _number(r.gain_float),
                    "skipped": r.skipped} for r in result.layers],
        "units": [{"name": u.name, "op_type": u.op_type, "tensors": list(u.tensors),
                   "drop_alone": _number(u.drop_alone), "gain_float": _number(u.gain_float),
                   "skipped": u.skipped} for u in result.units],
        "greedy": [{"skipped_units": list(s.skipped_units), "metric": _number(s.metric)} for s in result.greedy],
    }


# ---------------------------------------------------------------- writing
def _move_into(staging: Path, target: Path, name: str) -> None:
    """Move ``staging/name`` to ``target/name``; an older ``target/name`` folder goes to staging (deleted)."""
    source, dest = staging / name, target / name
    if dest.is_dir() and not dest.is_symlink():
        os.replace(dest, staging / f"{name}.old")
    if source.exists():
        os.replace(source, dest)


def write_report(result, histograms, report_dir, *, plots: bool = True, max_plots: int = 24, config=None) -> Path:
    """Write ``report.html``, ``analysis.json`` and (with ``plots``) ``plots/*.png`` into ``report_dir``.

    Returns:
        The HTML file's path.
    """
    target = Path(report_dir)
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".report-", dir=target))
    try:
        drawn = None
        if plots:
            check_plotting()
            drawn = draw_plots(result, histograms, staging / PLOTS_FOLDER, max_plots)
        (staging / "analysis.json").write_text(json.dumps(report_json(result), indent=1), encoding="utf-8")
        (staging / "report.html").write_text(render_html(result, drawn, config), encoding="utf-8")
        for name in (PLOTS_FOLDER, "analysis.json", "report.html"):
            _move_into(staging, target, name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / "report.html"
