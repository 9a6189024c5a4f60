"""The report page shows before it tells: summary, pictures, then sortable, coloured tables."""

import math
import re
from pathlib import Path

import numpy as np
import pytest

from paddle_quant.analysis.report import write_report
from paddle_quant.analysis.report_html import SEVERITY, render_html
from paddle_quant.analysis.results import AnalysisResult, LayerRow, TensorHistogram, UnitRow


def _result(target_met=True, max_drop=0.02, name="conv2d#0"):
    layers = (LayerRow(name, "conv2d", 0, "conv_out", ("w", "x"), 31.0, 0.9999, 0.001, 0.002, False),
              LayerRow("conv2d#3", "conv2d", 3, "c3", ("w3", "c2"), 12.0, 0.98, 0.05, 0.015, True),
              LayerRow("mul#7", "mul", 7, "m7", ("w7", "f"), 21.0, 0.995, None, None, False))
    units = tuple(UnitRow(r.name, r.op_type, r.inputs, r.drop_alone, r.gain_float, r.skipped) for r in layers)
    return AnalysisResult(layers, units, ("w3", "c2"), Path("r/report.html"), Path("r/analysis.json"),
                          "output_cosine", 1.0, 0.93, 0.99, max_drop, target_met, (), "simulation", 2, 6, 1.5)


def _cell_classes(page, row_name):
    row = re.search(r"<tr><td[^>]*>" + re.escape(row_name) + r"</td>(.*?)</tr>", page).group(1)
    return re.findall(r"<td(?: class='(\w+)')?", row)


def test_the_summary_comes_first_then_pictures_then_tables():
    drawn = {"layers": "plots/layers.png", "sensitivity": "plots/sensitivity.png",
             "histograms": [("x", "plots/hist_000.png")]}
    page = render_html(_result(), drawn, None)
    order = [page.index(s) for s in ("fp32 <b>1</b>", "target met", "plots/layers.png", "plots/sensitivity.png",
                                     "plots/hist_000.png", "<table")]
    assert order == sorted(order)
    assert "with the skip list (2 tensor(s) in float) <b>0.99</b>" in page


@pytest.mark.parametrize("met, text", [(True, "target met"), (False, "target missed"), (None, "no target")])
def test_the_headline_says_whether_the_target_is_met(met, text):
    assert text in render_html(_result(target_met=met, max_drop=None if met is None else 0.02), None, None)


def test_cells_are_coloured_by_severity():
    page = render_html(_result(), None, None)
    # after the name: op type, output, inputs, SQNR, cosine, drop_alone, gain_float, skipped
    assert _cell_classes(page, "conv2d#0")[3:7] == ["", "", "", ""]
    assert _cell_classes(page, "conv2d#3")[3:7] == ["bad", "bad", "bad", "warn"]  # 12 dB, 0.98, 0.05 > 0.02
    assert _cell_classes(page, "mul#7")[3:5] == ["warn", "warn"]  # 21 dB, 0.995
    assert SEVERITY["sqnr_db"] == (15.0, 25.0)


def test_without_max_drop_sensitivities_are_not_coloured():
    page = render_html(_result(target_met=None, max_drop=None), None, None)
    assert _cell_classes(page, "conv2d#3")[5:7] == ["", ""]


def test_numeric_columns_sort_by_value_and_the_script_is_inline():
    page = render_html(_result(), None, None)
    assert "<table class='sortable'>" in page and "addEventListener('click'" in page
    assert "<script src" not in page and "http" not in page  # no external asset
    assert "data-v='12.0'" in page and "data-v='31.0'" in page
    assert "data-v='' class" not in page and "<td data-v=''>&ndash;</td>" in page  # missing values sort first


def test_infinite_sqnr_sorts_as_the_largest():
    result = _result()
    exact = LayerRow("exact#1", "conv2d", 1, "e", ("w",), math.inf, 1.0, None, None, False)
    result = AnalysisResult(**{**result.__dict__, "layers": result.layers + (exact,)})
    page = render_html(result, None, None)
    assert "data-v='1e308'>inf</td>" in page


def test_model_text_is_escaped_everywhere():
    page = render_html(_result(name="<img src=x onerror=alert(1)>"), None, None)
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_the_layer_chart_is_drawn_in_graph_order(tmp_path):
    pytest.importorskip("matplotlib")
    histogram = TensorHistogram("x", np.ones(16), 0.1, {"abs_max": 1.5, "hist": 1.2}, "hist")
    path = write_report(_result(), [histogram], tmp_path, max_plots=1)
    page = path.read_text(encoding="utf-8")
    plots = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert plots == ["hist_000.png", "layers.png", "sensitivity.png"]
    assert page.index("plots/layers.png") < page.index("plots/sensitivity.png") < page.index("<table")
    assert (tmp_path / "plots" / "layers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
