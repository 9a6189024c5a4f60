"""The report's HTML page: it shows before it tells.

Order: the summary (fp32 vs every unit quantized vs the skip list, target met or not), then the
pictures (per-layer error in graph order, sensitivity per unit, activation histograms), then the
tables. Table cells are coloured by severity (:data:`SEVERITY`) and every column sorts on a click
(a small inline script; no external asset). Every text taken from the model is HTML-escaped.
"""

from __future__ import annotations

import html
import math
from typing import Optional, Sequence

__all__ = ["SEVERITY", "render_html"]

SEVERITY = {"sqnr_db": (15.0, 25.0), "cosine": (0.99, 0.999)}
"""Per column, (bad below, warn below). Sensitivities (metric units) are coloured against
``max_drop``: above it bad, above half of it warn; without ``max_drop`` they are not coloured."""

_STYLE = (
    "body{font-family:sans-serif;margin:1em 1.5em;color:#222}h1{font-size:1.4em;margin:.2em 0}"
    "h2{font-size:1.1em;margin:1.2em 0 .4em}.headline{font-size:1.05em;margin:.4em 0}"
    ".headline b{font-size:1.15em}.badge{padding:1px 8px;border-radius:9px;color:#fff}"
    ".met{background:#2e7d32}.missed{background:#c62828}.none{background:#777}"
    ".details{color:#555;font-size:12px;margin:.2em 0 .6em}"
    "table{border-collapse:collapse;font-size:12px;margin:.5em 0}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}"
    "th{background:#eee;cursor:pointer;user-select:none}th[data-order=asc]:after{content:' \\25B2'}"
    "th[data-order=desc]:after{content:' \\25BC'}td.bad{background:#ffcdd2}td.warn{background:#fff3c4}"
    "img{max-width:100%}code,pre{background:#f4f4f4}.legend{font-size:11px;color:#555}")

_SORT_SCRIPT = (
    "document.querySelectorAll('table.sortable th').forEach(function(th){th.addEventListener('click',function(){"
    "var table=th.closest('table'),body=table.tBodies[0],i=th.cellIndex,asc=th.dataset.order!=='asc';"
    "table.querySelectorAll('th').forEach(function(h){delete h.dataset.order});th.dataset.order=asc?'asc':'desc';"
    "function key(row){var c=row.cells[i];if(c.dataset.v===undefined)return c.textContent;"
    "var v=parseFloat(c.dataset.v);return isNaN(v)?-Infinity:v}"
    "Array.from(body.rows).sort(function(a,b){var x=key(a),y=key(b);"
    "var d=(typeof x==='string')?x.localeCompare(y):(x<y?-1:(x>y?1:0));return asc?d:-d})"
    ".forEach(function(r){body.appendChild(r)})})});")


# ---------------------------------------------------------------- cells
def fmt(value, digits=4) -> str:
    """A value as escaped HTML text (None: a dash)."""
    if value is None:
        return "&ndash;"
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    return f"{value:.{digits}g}" if isinstance(value, float) else html.escape(str(value))


def _cell(text: str, *, sort_value: Optional[float] = None, severity: str = "") -> str:
    attrs = f" class='{severity}'" if severity else ""
    if sort_value is not None or text == "&ndash;":
        value = "" if sort_value is None else (repr(float(sort_value)) if math.isfinite(sort_value) else
                                               ("1e308" if sort_value > 0 else "-1e308"))
        attrs += f" data-v='{value}'"
    return f"<td{attrs}>{text}</td>"


def _number_cell(value, digits=4, severity: str = "") -> str:
    return _cell(fmt(value, digits), sort_value=None if value is None else float(value), severity=severity)


def _below(value, bad: float, warn: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return "bad" if value < bad else ("warn" if value < warn else "")


def _above(value, max_drop) -> str:
    if value is None or max_drop is None:
        return ""
    return "bad" if value > max_drop else ("warn" if value > max_drop / 2 else "")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A sortable table; each row's cells are ``<td>`` strings (:func:`_cell`) or plain escaped text."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table class='sortable'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# ---------------------------------------------------------------- sections
def _headline(result) -> str:
    if result.target_met is None:
        badge = "<span class='badge none'>no target (max_drop not given)</span>"
    else:
        met = "met" if result.target_met else "missed"
        badge = f"<span class='badge {met}'>target {met}: max_drop {fmt(result.max_drop)}</span>"
    return (f"<p class='headline'>{html.escape(result.metric_name)}: fp32 <b>{fmt(result.fp32_metric)}</b>"
            f" &middot; every unit quantized <b>{fmt(result.quantized_metric)}</b> &middot; with the skip list "
            f"({len(result.skip_list)} tensor(s) in float) <b>{fmt(result.skip_metric)}</b> &nbsp;{badge}</p>")


def _details(result, config) -> str:
    items = [("sensitivity measured by", result.mode), ("batches", result.batches),
             ("evaluations", result.evaluations), ("wall time (s)", round(result.seconds, 1)),
             ("algo", config.algo if config else None),
             ("quantizable_op_type", ", ".join(config.quantizable_op_type) if config else None)]
    return "<p class='details'>" + " &middot; ".join(f"{html.escape(k)} {fmt(v)}" for k, v in items) + "</p>"


def _pictures(drawn) -> list[str]:
    if not drawn:
        return []
    parts = []
    if drawn["layers"]:
        parts.append(f"<img src='{html.escape(drawn['layers'])}' alt='per-layer SQNR and cosine, graph order'>")
    if drawn["sensitivity"]:
        parts += ["<h2>Sensitivity per unit</h2>",
                  f"<img src='{html.escape(drawn['sensitivity'])}' alt='sensitivity bar chart'>"]
    if drawn["histograms"]:
        parts.append("<h2>Activation histograms and thresholds per algorithm</h2>")
        parts += [f"<h3>{html.escape(t)}</h3><img src='{html.escape(p)}' alt='histogram of {html.escape(t)}'>"
                  for t, p in drawn["histograms"]]
    return parts


def _layer_table(result) -> str:
    bad_sqnr, warn_sqnr = SEVERITY["sqnr_db"]
    bad_cos, warn_cos = SEVERITY["cosine"]
    rows = [[_cell(fmt(r.name)), _cell(fmt(r.op_type)), _cell(fmt(r.output)),
             _cell("<br>".join(html.escape(n) for n in r.inputs)),
             _number_cell(r.sqnr_db, severity=_below(r.sqnr_db, bad_sqnr, warn_sqnr)),
             _number_cell(r.cosine, 6, severity=_below(r.cosine, bad_cos, warn_cos)),
             _number_cell(r.drop_alone, severity=_above(r.drop_alone, result.max_drop)),
             _number_cell(r.gain_float, severity=_above(r.gain_float, result.max_drop)),
             _cell("yes" if r.skipped else "")] for r in result.layers]
    return table(["layer", "op type", "output", "quantized inputs", "SQNR (dB)", "cosine", "drop_alone",
                  "gain_float", "skipped"], rows)


def _unit_table(result) -> str:
    rows = [[_cell(fmt(u.name)), _cell(fmt(u.op_type)), _number_cell(len(u.tensors)),
             _number_cell(u.drop_alone, severity=_above(u.drop_alone, result.max_drop)),
             _number_cell(u.gain_float, severity=_above(u.gain_float, result.max_drop)),
             _cell("yes" if u.skipped else "")] for u in result.units]
    return table(["unit", "op type", "tensors", "drop_alone", "gain_float", "skipped"], rows)


def _greedy_table(result) -> str:
    rows = [[_number_cell(len(s.skipped_units)), _cell(html.escape(", ".join(s.skipped_units)) or "&ndash;"),
             _number_cell(s.metric, 6)] for s in result.greedy]
    return table(["units skipped", "units", "metric"], rows)


def _legend() -> str:
    (bad_sqnr, warn_sqnr), (bad_cos, warn_cos) = SEVERITY["sqnr_db"], SEVERITY["cosine"]
    return (f"<p class='legend'>Cells: red below {bad_sqnr:g} dB SQNR or cosine {bad_cos:g}, amber below "
            f"{warn_sqnr:g} dB or {warn_cos:g}; sensitivities red above max_drop, amber above half of it. "
            "Click a column header to sort.</p>")


def render_html(result, drawn, config) -> str:
    """The whole page (``drawn``: :func:`~paddle_quant.analysis.report_plots.draw_plots`'s paths, or None)."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>paddle-quant analysis</title>"
             f"<style>{_STYLE}</style></head><body><h1>Quantization analysis</h1>",
             _headline(result), _details(result, config), *_pictures(drawn),
             "<h2>Skip list</h2>",
             f"<p>{len(result.skip_list)} tensor(s), also in <code>analysis.json</code> (<code>skip_list</code>):</p>",
             "<pre>" + html.escape("\n".join(result.skip_list) or "(empty)") + "</pre>",
             "<h2>Per-layer error (every planned tensor quantized, Executor simulation)</h2>", _legend(),
             _layer_table(result), "<h2>Sensitivity per unit: table</h2>", _unit_table(result)]
    if result.greedy:
        parts += ["<h2>Greedy skip-list search</h2>", _greedy_table(result)]
    parts.append(f"<script>{_SORT_SCRIPT}</script></body></html>")
    return "\n".join(parts)
