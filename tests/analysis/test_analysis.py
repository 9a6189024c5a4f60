"""analyze: per-layer SQNR/cosine, sensitivity, automatic skip list, report files, bad input.

Oracles: quant_post's saved int8 model run in the Executor next to the fp32 model, with SQNR and
cosine recomputed in numpy from the fetched tensors; a layer with a deliberately destroyed weight
scale; quant_post's own output with the skip list.
"""

import json
import math

import numpy as np
import paddle
import pytest

import paddle_quant as quant
from paddle_quant.analysis.analyze import analyze
from paddle_quant.common.errors import ConfigError, ConfigTypeError
from paddle_quant.ptq.config import PTQConfig
from paddle_quant.analysis.report import ReportDependencyError, check_plotting

BATCHES = 3
BATCH = 32


def _batches(digits, count=BATCHES):
    return [{"image": digits.train_images[i * BATCH:(i + 1) * BATCH]} for i in range(count)]


def _exe():
    return paddle.static.Executor(paddle.CPUPlace())


def _load(folder):
    scope, exe = paddle.static.Scope(), _exe()
    with paddle.static.scope_guard(scope):
        program, feeds, fetches = paddle.static.load_inference_model(str(folder / "model"), exe)
    return program, feeds, fetches, scope, exe


def _fetch(folder, feeds, names):
    program, _, _, scope, exe = _load(folder)
    with paddle.static.scope_guard(scope):
        return [exe.run(program, feed=feed, fetch_list=names, return_numpy=True) for feed in feeds]


def _numpy_sqnr_cosine(ref, got):
    x = np.concatenate([np.asarray(a, np.float64).ravel() for a in ref])
    y = np.concatenate([np.asarray(a, np.float64).ravel() for a in got])
    sqnr = 10 * np.log10(np.sum(x * x) / np.sum((x - y) ** 2))
    return sqnr, np.dot(x, y) / np.sqrt(np.dot(x, x) * np.dot(y, y))


@pytest.fixture(scope="module")
def analysed(digits_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("analysis")
    ptq = PTQConfig(algo="abs_max", batch_nums=BATCHES)
    result = analyze(digits_model.folder, _batches(digits_model), ptq, report_dir=out / "report", max_drop=0.01)
    return result, ptq, out


# ---------------------------------------------------------------- per-layer error
def test_sqnr_and_cosine_equal_numpy_on_quant_post_model(digits_model, analysed, tmp_path):
    result, ptq, _ = analysed
    feeds = _batches(digits_model)
    quant.quant_post(_exe(), str(digits_model.folder), str(tmp_path / "int8"), data_loader=lambda: iter(feeds),
                     algo=ptq.algo, batch_nums=BATCHES)
    names = [row.output for row in result.layers]
    fp32 = _fetch(digits_model.folder, feeds, names)
    int8 = _fetch(tmp_path / "int8", feeds, names)
    assert [r.op_type for r in result.layers] == ["conv2d", "conv2d", "mul"]
    for k, row in enumerate(result.layers):
        sqnr, cos = _numpy_sqnr_cosine([b[k] for b in fp32], [b[k] for b in int8])
        assert row.sqnr_db == pytest.approx(sqnr, abs=1e-3), row.name
        assert row.cosine == pytest.approx(cos, abs=1e-7), row.name
        assert 10 < row.sqnr_db < 80 and row.cosine < 1.0


def test_rows_name_the_quantized_inputs(analysed):
    result, _, _ = analysed
    assert result.layers[0].inputs == ("conv2d_0.w_0", "image")
    assert result.layers[2].inputs == ("fc_0.w_0", "flatten_0.tmp_0")
    assert result.mode == "simulation" and result.batches == BATCHES
    assert result.fp32_metric == pytest.approx(1.0)
    assert result.quantized_metric < 1.0


# ---------------------------------------------------------------- report
def test_report_files_exist_and_name_every_layer(analysed):
    result, _, out = analysed
    report = out / "report"
    text = result.report_path.read_text(encoding="utf-8")
    assert result.report_path == report / "report.html"
    for row in result.layers:
        assert row.name in text and row.output in text
    document = json.loads(result.json_path.read_text(encoding="utf-8"))
    assert document["skip_list"] == list(result.skip_list)
    assert [layer["name"] for layer in document["layers"]] == [r.name for r in result.layers]
    plots = sorted(p.name for p in (report / "plots").iterdir())
    assert "sensitivity.png" in plots and sum(p.startswith("hist_") for p in plots) == 3
    for name in plots:
        assert (report / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plots/{name}" in text
    assert sorted(p.name for p in report.iterdir()) == ["analysis.json", "plots", "report.html"]
    assert sorted(p.name for p in out.iterdir()) == ["report"]


def test_html_escapes_tensor_names(digits_model, tmp_path):
    from paddle_quant.analysis.report_html import fmt, table

    cell = fmt("<script>x</script>")
    assert "<script>" not in table(["a<b"], [[cell]])


# ---------------------------------------------------------------- sensitivity and skip list
@pytest.fixture(scope="module")
def broken_model(digits_model, tmp_path_factory):
    """The digits model with a second conv whose per-tensor weight scale is destroyed.

    Input channel 0 of the second conv is made dead (the first conv's channel 0 has zero weights
    and bias, so it is 0 after relu) and one weight reading it is set to 60x the layer's abs max:
    the fp32 outputs do not change, but with a per-tensor weight scale every other weight of that
    layer rounds to 0 (step = 60 max / 127).
    """
    folder = tmp_path_factory.mktemp("broken")
    with paddle.pir_utils.OldIrGuard():
        paddle.enable_static()
        program, feeds, fetches, scope, exe = _load(digits_model.folder)
        values = {n: np.array(scope.find_var(n).get_tensor()) for n in ("conv2d_0.w_0", "conv2d_0.b_0", "conv2d_1.w_0")}
        values["conv2d_0.w_0"][0] = 0
        values["conv2d_0.b_0"][0] = 0
        values["conv2d_1.w_0"][:, 0] = 0
        values["conv2d_1.w_0"][0, 0, 1, 1] = 60 * np.abs(values["conv2d_1.w_0"]).max()
        for name, value in values.items():
            scope.find_var(name).get_tensor().set(value, paddle.CPUPlace())
        block = program.global_block()
        with paddle.static.scope_guard(scope):
            paddle.static.save_inference_model(str(folder / "model"), [block.var(n) for n in feeds], fetches,
                                               exe, program=program)
    return folder


@pytest.fixture(scope="module")
def broken_analysis(digits_model, broken_model, tmp_path_factory):
    ptq = PTQConfig(algo="abs_max", weight_quantize_type="abs_max", batch_nums=BATCHES)
    result = analyze(broken_model, _batches(digits_model), ptq, max_drop=1.0, plots=False,
                     report_dir=tmp_path_factory.mktemp("broken_report"))
    return result, ptq


def test_destroyed_layer_is_most_sensitive_and_skipped(broken_analysis):
    result, _ = broken_analysis
    by_name = {row.name: row for row in result.layers}
    broken = by_name["conv2d#5"]
    others = [row for row in result.layers if row is not broken]
    assert broken.gain_float > max(row.gain_float for row in others)
    assert broken.drop_alone > max(row.drop_alone for row in others)
    assert broken.sqnr_db < min(row.sqnr_db for row in others) and broken.sqnr_db < 10  # downstream layers inherit it
    assert result.quantized_metric < 0.99  # the broken layer ruins the output without a skip list
    assert result.skip_list[:2] == ("conv2d_1.w_0", "relu_0.tmp_0")
    assert broken.skipped and result.target_met
    assert 100 * (1 - result.skip_metric) <= 1.0


def test_skip_list_round_trips_through_quant_post(digits_model, broken_model, broken_analysis, tmp_path):
    result, ptq = broken_analysis
    feeds = _batches(digits_model)
    skip = json.loads(result.json_path.read_text(encoding="utf-8"))["skip_list"]
    out = quant.quant_post(_exe(), str(broken_model), str(tmp_path / "int8"), data_loader=lambda: iter(feeds),
                           algo=ptq.algo, weight_quantize_type="abs_max", batch_nums=BATCHES,
                           skip_tensor_list=skip)
    assert not set(skip) & set(out.quantized_tensors)
    program, _, fetches, scope, exe = _load(tmp_path / "int8")
    quantized_inputs = {op.input("X")[0] for op in program.global_block().ops if op.type == "quantize_linear"
                        and not op.attr("only_observer")}
    assert not set(skip) & quantized_inputs
    conv = [op for op in program.global_block().ops if op.type == "conv2d"][1]
    assert conv.input("Filter") == ["conv2d_1.w_0"]  # float weight, not conv2d_1.w_0@int8
    # the skip list's metric (output cosine, simulation) is what quant_post's model gives in the Executor
    fp32 = _fetch(broken_model, feeds, [fetches[0].name])
    with paddle.static.scope_guard(scope):
        got = [exe.run(program, feed=f, fetch_list=fetches, return_numpy=True) for f in feeds]
    _, cos = _numpy_sqnr_cosine([b[0] for b in fp32], [b[0] for b in got])
    assert result.skip_metric == pytest.approx(cos, abs=1e-6)


def test_user_metric_and_op_type_granularity(digits_model, tmp_path):
    feeds = _batches(digits_model)
    seen = []

    def top1_agreement(outputs):  # how often the model agrees with fp32's argmax, in percent
        seen.append(len(outputs))
        return 100.0 * np.mean([np.mean(o[0].argmax(1) == r) for o, r in zip(outputs, reference)])

    fetch_name = _load(digits_model.folder)[2][0].name
    reference = [b[0].argmax(1) for b in _fetch(digits_model.folder, feeds, [fetch_name])]
    result = analyze(digits_model.folder, lambda: iter(feeds), PTQConfig(algo="abs_max"), metric=top1_agreement,
                     granularity="op_type", sensitivity="gain_float", plots=False, report_dir=tmp_path / "r")
    assert result.fp32_metric == 100.0 and result.metric_name == "top1_agreement"
    assert [u.name for u in result.units] == ["conv2d", "mul"]
    assert all(u.drop_alone is None and u.gain_float is not None for u in result.units)
    assert all(row.gain_float is None for row in result.layers)
    assert set(seen) == {len(feeds)}
    assert result.skip_list == () and result.target_met is None


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, error, words", [
    ({"ptq_config": {"algo": "KL"}}, ConfigTypeError, "PTQConfig"),
    ({"max_drop": -1}, ConfigError, "max_drop"),
    ({"max_drop": float("nan")}, ConfigError, "max_drop"),
    ({"metric": "accuracy"}, ConfigTypeError, "metric"),
    ({"granularity": "block"}, ConfigError, "granularity"),
    ({"sensitivity": "all"}, ConfigError, "sensitivity"),
    ({"max_drop": 1.0, "sensitivity": "none"}, ConfigError, "sensitivity"),
    ({"fetch_group": 0}, ConfigError, "fetch_group"),
    ({"batches": []}, ConfigError, "no batch"),
    ({"batches": [np.zeros((2, 1, 8, 8), np.float32)]}, ConfigTypeError, "feed dict"),
    ({"batches": [{"x": np.zeros((2, 1, 8, 8), np.float32)}]}, ConfigError, "feeds"),
    ({"batches": [{"image": np.zeros((2, 1, 8, 8), np.float64)}]}, ConfigError, "dtype"),
    ({"ptq_config": PTQConfig(quantizable_op_type=["matmul_v2"])}, quant.ProgramStateError, "no tensor"),
])
def test_bad_arguments_raise_typed_errors(digits_model, tmp_path, kwargs, error, words):
    args = {"model_dir": digits_model.folder, "batches": _batches(digits_model, 1), "ptq_config": PTQConfig(),
            "report_dir": tmp_path / "r", "plots": False}
    args.update(kwargs)
    with pytest.raises(error, match=words):
        analyze(**args)
    assert not (tmp_path / "r").exists()


def test_missing_model_and_bad_report_dir(digits_model, tmp_path):
    batches = _batches(digits_model, 1)
    with pytest.raises(ConfigError, match="not a directory"):
        analyze(tmp_path / "missing", batches, PTQConfig(), report_dir=tmp_path / "r", plots=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="report_dir"):
        analyze(digits_model.folder, batches, PTQConfig(), report_dir=tmp_path / "file", plots=False)
    with pytest.raises(ConfigError, match="model folder"):
        analyze(digits_model.folder, batches, PTQConfig(), report_dir=digits_model.folder, plots=False)


def test_missing_matplotlib_is_a_typed_error_before_any_work(digits_model, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ReportDependencyError, match="paddle_quant\\[report\\]"):
        check_plotting()
    with pytest.raises(ImportError):
        analyze(digits_model.folder, _batches(digits_model, 1), PTQConfig(), report_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_sqnr_and_cosine_edge_cases():
    from paddle_quant.analysis.metrics import cosine, sqnr_db

    assert sqnr_db(4.0, 0.0) == math.inf
    assert sqnr_db(100.0, 1.0) == pytest.approx(20.0)
    assert cosine(0.0, 0.0, 0.0) == 1.0 and cosine(0.0, 1.0, 0.0) == 0.0


@pytest.mark.slow
def test_deployed_runner_measures_quant_post_models_on_onednn(digits_model, tmp_path):
    from paddle_quant.analysis.sensitivity import onednn_runner

    feeds, runner = _batches(digits_model, 2), onednn_runner(threads=1)
    ptq = PTQConfig(algo="abs_max", batch_nums=2)
    result = analyze(digits_model.folder, feeds, ptq, runner=runner, granularity="op_type",
                     sensitivity="gain_float", plots=False, report_dir=tmp_path / "r")
    assert result.mode == "deployed" and [u.name for u in result.units] == ["conv2d", "mul"]
    quant.quant_post(_exe(), str(digits_model.folder), str(tmp_path / "int8"), data_loader=lambda: iter(feeds),
                     algo="abs_max", batch_nums=2)
    fp32 = runner(digits_model.folder / "model.pdmodel", digits_model.folder / "model.pdiparams", feeds)
    int8 = runner(tmp_path / "int8" / "model.pdmodel", tmp_path / "int8" / "model.pdiparams", feeds)
    _, cos = _numpy_sqnr_cosine([b[0] for b in fp32], [b[0] for b in int8])
    assert result.quantized_metric == pytest.approx(cos, abs=1e-6)
    assert result.quantized_metric < 1.0


def test_second_report_replaces_the_first(digits_model, tmp_path):
    batches, ptq = _batches(digits_model, 1), PTQConfig(algo="abs_max")
    analyze(digits_model.folder, batches, ptq, report_dir=tmp_path, sensitivity="none", max_plots=1)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["hist_000.png", "layers.png"]
    (tmp_path / "mine.txt").write_text("kept")
    result = analyze(digits_model.folder, batches, ptq, report_dir=tmp_path, sensitivity="none", plots=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["analysis.json", "mine.txt", "report.html"]
    assert "<img" not in result.report_path.read_text(encoding="utf-8")
    assert result.units[0].drop_alone is None and result.skip_list == ()


def test_metric_must_return_a_finite_number(digits_model, tmp_path):
    with pytest.raises(ConfigError, match="finite float"):
        analyze(digits_model.folder, _batches(digits_model, 1), PTQConfig(), metric=lambda outputs: float("nan"),
                report_dir=tmp_path / "r", plots=False)


class _AdditiveEvaluator:
    """Metric = 100 - sum of the penalties of the quantized units (outputs carry the skipped tensors)."""

    def __init__(self, penalties):
        self.penalties, self.runs = penalties, 0

    def outputs(self, skip):
        self.runs += 1
        return [sorted(skip)]


def test_greedy_takes_the_shortest_sensitive_prefix_and_reports_an_unmet_target():
    from paddle_quant.analysis.sensitivity import Unit, greedy_skip_list, unit_sensitivities

    penalties = {"a": 0.5, "b": 4.0, "c": 2.0, "d": 0.1}
    units = [Unit(n, "conv2d", (f"{n}.w", f"{n}.x")) for n in penalties]
    metric = lambda outputs: 100.0 - sum(p for n, p in penalties.items() if f"{n}.w" not in outputs[0])  # noqa: E731
    evaluator, all_q = _AdditiveEvaluator(penalties), 100.0 - sum(penalties.values())
    sens = unit_sensitivities(evaluator, metric, units, ways=("drop_alone", "gain_float"), reference=100.0,
                              all_quantized=all_q)
    assert {n: s["drop_alone"] for n, s in sens.items()} == pytest.approx(penalties)
    assert {n: s["gain_float"] for n, s in sens.items()} == pytest.approx(penalties)
    skipped, steps, met = greedy_skip_list(evaluator, metric, units, sens, reference=100.0, all_quantized=all_q,
                                           max_drop=0.7)
    assert [u.name for u in skipped] == ["b", "c"] and met  # 0.6 left: a + d
    assert [s.metric for s in steps] == pytest.approx([all_q, 100.0 - 2.6, 100.0 - 0.6])
    skipped, _, met = greedy_skip_list(evaluator, metric, units, sens, reference=100.0, all_quantized=all_q,
                                       max_drop=0.0)
    assert [u.name for u in skipped] == ["b", "c", "a"] and not met  # one unit always stays quantized
