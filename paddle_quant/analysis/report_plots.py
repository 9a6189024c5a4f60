"""The report's PNG plots: per-layer error in graph order, sensitivity per unit, activation histograms.

matplotlib (the ``report`` extra) is imported only here, through ``matplotlib.figure.Figure``
(no pyplot, no global backend change).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = ["PLOTS_FOLDER", "draw_plots"]

PLOTS_FOLDER = "plots"
_ALGO_COLORS = {"abs_max": "black", "avg": "tab:blue", "hist": "tab:green", "KL": "tab:red", "mse": "tab:purple",
                "emd": "tab:orange", "min_max": "tab:gray"}
_SKIPPED_COLOR, _QUANTIZED_COLOR = "tab:red", "tab:blue"
_MAX_NAMED_TICKS = 40
_INF_SQNR_DB = 100.0
"""Where an exact layer (infinite SQNR) is drawn."""


def _finite_sqnr(value: float) -> float:
    return _INF_SQNR_DB if value is None or not math.isfinite(value) else value


def _layer_plot(layers, path: Path) -> bool:
    """SQNR (dB) and cosine per quantized layer, in graph order; skipped layers in red."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    if not layers:
        return False
    positions = np.arange(len(layers))
    colors = [_SKIPPED_COLOR if row.skipped else _QUANTIZED_COLOR for row in layers]
    fig = Figure(figsize=(14, 3.6))
    sqnr_ax, cosine_ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    sqnr_ax.bar(positions, [_finite_sqnr(row.sqnr_db) for row in layers], color=colors)
    sqnr_ax.set_ylabel("SQNR (dB)", fontsize=8)
    sqnr_ax.set_title("per-layer error vs fp32, in graph order (every planned tensor quantized)", fontsize=9)
    sqnr_ax.legend(handles=[Patch(color=_QUANTIZED_COLOR, label="quantized"),
                            Patch(color=_SKIPPED_COLOR, label="in the skip list")], fontsize=7, loc="upper right")
    cosine_ax.bar(positions, [1.0 - (row.cosine if row.cosine is not None else 1.0) for row in layers], color=colors)
    cosine_ax.set_yscale("symlog", linthresh=1e-5)
    cosine_ax.set_ylabel("1 - cosine", fontsize=8)
    if len(layers) <= _MAX_NAMED_TICKS:
        cosine_ax.set_xticks(positions, [row.name for row in layers], rotation=90, fontsize=6)
    else:
        cosine_ax.set_xlabel("quantized layer, in graph order (names in the per-layer table)", fontsize=8)
    for ax in (sqnr_ax, cosine_ax):
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return True


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


def draw_plots(result, histograms, folder: Path, max_plots: int) -> dict:
    """Draw every plot into ``folder``; returns the relative paths: ``layers``, ``sensitivity``
    (None when not drawn) and ``histograms`` (``(tensor, path)`` pairs)."""
    folder.mkdir()
    drawn = {"layers": None, "sensitivity": None, "histograms": []}
    if _layer_plot(result.layers, folder / "layers.png"):
        drawn["layers"] = f"{PLOTS_FOLDER}/layers.png"
    if _sensitivity_plot(result.units, folder / "sensitivity.png"):
        drawn["sensitivity"] = f"{PLOTS_FOLDER}/sensitivity.png"
    for k, histogram in enumerate(_plot_order(result, histograms)[:max_plots]):
        name = f"hist_{k:03d}.png"
        _histogram_plot(histogram, folder / name)
        drawn["histograms"].append((histogram.tensor, f"{PLOTS_FOLDER}/{name}"))
    return drawn
