"""The analysis report: ``report.html`` (per-layer tables), ``analysis.json`` and PNG plots.

Plots need matplotlib (the ``report`` extra, ``pip install 'paddle_quant[report]'``);
it is imported only here and only when plots are drawn, through
``matplotlib.figure.Figure`` (no pyplot, no global backend change).

Files are written into a temporary folder inside ``report_dir`` and moved into
place, the HTML last, so a reader never sees a report whose plots or JSON are
missing; nothing is written outside ``report_dir``.
"""

from __future__ import annotations

import html
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from ..common.errors import MissingDependencyError

__all__ = ["ReportDependencyError", "check_plotting", "write_report", "report_json"]

_PLOTS = "plots"
_ALGO_COLORS = {"abs_max": "black", "avg": "tab:blue", "hist": "tab:green", "KL": "tab:red", "mse": "tab:purple",
                "emd": "tab:orange", "min_max": "tab:gray"}


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


# ---------------------------------------------------------------- plots
def _sensitivity_plot(units, path: Path) -> bool:
    from matplotlib.figure import Figure

    ways = [w for w in ("drop_alone", "gain_float") if any(getattr(u, w) is not None for u in units)]
    if not ways or not units:
        return False
    fig = Figure(figsize=(8, max(2.5, 0.25 * len(units) + 1.2)))
    ax = fig.add_subplot()
    positions = np.arange(len(units))
    height = 0.8 / len(ways)
    for k, way in enumerate(ways):
        values = [getattr(u, way) or 0.0 for u in units]
        ax.barh(positions + k * height, values, height, label=way)
    ax.set_yticks(positions + height * (len(ways) - 1) / 2, [u.name + (" *" if u.skipped else "") for u in units],
                  fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("metric change (drop_alone: fp32 - only this unit quantized; "
                  "gain_float: all-but-this - all quantized)", fontsize=7)
    ax.legend(fontsize=7)
    ax.set_title("sensitivity per unit (* = in the skip list)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return True


def _histogram_plot(histogram, path: Path) -> None:
    from matplotlib.figure import Figure

    counts = np.asarray(histogram.counts, np.float64)
    edges = np.arange(len(counts) + 1) * histogram.bin_width
    fig = Figure(figsize=(7, 3))
    ax = fig.add_subplot()
    ax.stairs(np.maximum(counts, 0.5), edges, fill=True, color="0.75")
    ax.set_yscale("log")
    for algo, threshold in histogram.thresholds.items():
        width = 2.5 if algo == histogram.chosen else 1.0
        ax.axvline(threshold, color=_ALGO_COLORS.get(algo, "tab:brown"), lw=width, ls="-" if width > 1 else "--",
                   label=f"{algo} {threshold:.4g}" + (" (used)" if algo == histogram.chosen else ""))
    ax.set_xlim(0, 1.05 * max([*histogram.thresholds.values(), histogram.bin_width]))
    ax.set_xlabel("|x|", fontsize=8)
    ax.set_ylabel("count", fontsize=8)
    ax.set_title(histogram.tensor, fontsize=8)
    ax.legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def _plot_order(result, histograms) -> list:
    """Histograms of the most sensitive layers' activations first (then lowest SQNR)."""
    by_name = {h.tensor: h for h in histograms}
    units = {u.name: u for u in result.units}

    def key(row):
        unit = units.get(row.name) or units.get(row.op_type)
        sens = max((v for v in (getattr(unit, "gain_float", None), getattr(unit, "drop_alone", None))
                    if v is not None), default=0.0)
        return (-sens, row.sqnr_db)

    ordered = []
    for row in sorted(result.layers, key=key):
        ordered.extend(by_name[n] for n in row.inputs if n in by_name and by_name[n] not in ordered)
    return ordered + [h for h in histograms if h not in ordered]


def _draw(result, histograms, folder: Path, max_plots: int) -> dict:
    folder.mkdir()
    drawn = {"sensitivity": None, "histograms": []}
    if _sensitivity_plot(result.units, folder / "sensitivity.png"):
        drawn["sensitivity"] = f"{_PLOTS}/sensitivity.png"
    for k, histogram in enumerate(_plot_order(result, histograms)[:max_plots]):
        name = f"hist_{k:03d}.png"
        _histogram_plot(histogram, folder / name)
        drawn["histograms"].append((histogram.tensor, f"{_PLOTS}/{name}"))
    return drawn


# ---------------------------------------------------------------- HTML
def _fmt(value, digits=4) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    return f"{value:.{digits}g}" if isinstance(value, float) else html.escape(str(value))


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _summary(result, config) -> str:
    items = [("metric", result.metric_name), ("sensitivity measured by", result.mode),
             ("fp32", _fmt(result.fp32_metric)), ("every unit quantized", _fmt(result.quantized_metric)),
             ("with the skip list", _fmt(result.skip_metric)), ("max_drop", _fmt(result.max_drop)),
             ("target met", _fmt(result.target_met)), ("batches", _fmt(result.batches)),
             ("evaluations", _fmt(result.evaluations)), ("wall time (s)", _fmt(round(result.seconds, 1))),
             ("algo", _fmt(config.algo if config else None)),
             ("quantizable_op_type", _fmt(", ".join(config.quantizable_op_type) if config else None))]
    rows = [[html.escape(k), v] for k, v in items]
    return _table(["", "value"], rows)


def _layer_table(result) -> str:
    rows = [[_fmt(r.name), _fmt(r.op_type), _fmt(r.output), "<br>".join(html.escape(n) for n in r.inputs),
             _fmt(r.sqnr_db), _fmt(r.cosine, 6), _fmt(r.drop_alone), _fmt(r.gain_float),
             "yes" if r.skipped else ""] for r in result.layers]
    return _table(["layer", "op type", "output", "quantized inputs", "SQNR (dB)", "cosine", "drop_alone",
                   "gain_float", "skipped"], rows)


def _unit_table(result) -> str:
    rows = [[_fmt(u.name), _fmt(u.op_type), _fmt(len(u.tensors)), _fmt(u.drop_alone), _fmt(u.gain_float),
             "yes" if u.skipped else ""] for u in result.units]
    return _table(["unit", "op type", "tensors", "drop_alone", "gain_float", "skipped"], rows)


def _greedy_table(result) -> str:
    rows = [[_fmt(len(s.skipped_units)), html.escape(", ".join(s.skipped_units)) or "&ndash;", _fmt(s.metric, 6)]
            for s in result.greedy]
    return _table(["units skipped", "units", "metric"], rows)


_STYLE = ("body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;font-size:12px;margin:1em 0}"
          "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}th{background:#eee}"
          "img{max-width:100%}code{background:#f4f4f4}")


def _html(result, drawn, config) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>paddle-quant analysis</title>"
             f"<style>{_STYLE}</style></head><body><h1>Quantization analysis</h1>", _summary(result, config),
             "<h2>Skip list</h2>",
             f"<p>{len(result.skip_list)} tensor(s), also in <code>analysis.json</code> (<code>skip_list</code>):</p>",
             "<pre>" + html.escape("\n".join(result.skip_list) or "(empty)") + "</pre>",
             "<h2>Per-layer error (every planned tensor quantized, Executor simulation)</h2>", _layer_table(result),
             "<h2>Sensitivity per unit</h2>", _unit_table(result)]
    if drawn and drawn["sensitivity"]:
        parts.append(f"<img src='{html.escape(drawn['sensitivity'])}' alt='sensitivity bar chart'>")
    if result.greedy:
        parts += ["<h2>Greedy skip-list search</h2>", _greedy_table(result)]
    if drawn and drawn["histograms"]:
        parts.append("<h2>Activation histograms and thresholds per algorithm</h2>")
        parts += [f"<h3>{html.escape(t)}</h3><img src='{html.escape(p)}' alt='histogram of {html.escape(t)}'>"
                  for t, p in drawn["histograms"]]
    parts.append("</body></html>")
    return "\n".join(parts)


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
            drawn = _draw(result, histograms, staging / _PLOTS, max_plots)
        (staging / "analysis.json").write_text(json.dumps(report_json(result), indent=1), encoding="utf-8")
        (staging / "report.html").write_text(_html(result, drawn, config), encoding="utf-8")
        for name in (_PLOTS, "analysis.json", "report.html"):
            _move_into(staging, target, name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / "report.html"
