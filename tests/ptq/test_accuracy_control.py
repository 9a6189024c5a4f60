"""quant_post(..., accuracy_control=AccuracyControl(...)): search, what is written, what is returned, bad input."""

import logging
import math

import numpy as np
import paddle
import pytest

import paddle_quant as quant
from paddle_quant.common.errors import ConfigError, ConfigTypeError

EXE = paddle.static.Executor(paddle.CPUPlace())


def _eval_batches(digits_model, count=3, size=64):
    images = digits_model.test_images
    return [{"image": images[i * size:(i + 1) * size]} for i in range(count)]


def _top1(digits_model, count=3, size=64):
    labels = digits_model.test_labels.ravel()

    def top1(outputs):
        predicted = np.concatenate([out[0].argmax(axis=1) for out in outputs])
        return 100.0 * float((predicted == labels[:len(predicted)]).mean())

    return top1


def _control(digits_model, **overrides):
    options = dict(metric=_top1(digits_model), eval_batches=_eval_batches(digits_model), max_drop=1.0,
                   runtime="executor", algos=("abs_max", "avg"), recovery=({},))
    return quant.AccuracyControl(**{**options, **overrides})


def _run(digits_model, out, control, **options):
    return quant.quant_post(EXE, str(digits_model.folder), str(out), data_loader=digits_model.calibration_batches(),
                            batch_nums=4, accuracy_control=control, **options)


def test_a_reachable_target_writes_the_best_candidate_and_says_so(digits_model, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="paddle_quant")
    result = _run(digits_model, tmp_path / "int8", _control(digits_model))
    found = result.accuracy_control
    assert found.target_met and found.fp32_metric - found.int8_metric <= 1.0
    assert [c.options["algo"] for c in found.candidates] == ["abs_max", "avg"]
    assert found.int8_metric == max(c.metric for c in found.candidates) and not found.skipped_tensors
    assert result.model_file == tmp_path / "int8" / "model.pdmodel" and result.model_file.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8"]  # the candidates' folders are gone
    simulated = quant.verify(str(tmp_path / "int8"), runtime="executor", inputs=list(_control(digits_model).eval_batches))
    assert simulated.outputs[0].max_steps == 0  # the folder holds the model that was measured
    assert sum("accuracy_control [" in r.getMessage() for r in caplog.records) == 2


def test_an_unreachable_target_writes_the_best_model_warns_and_reports_it(digits_model, tmp_path, caplog):
    calls = []

    def stingy(outputs):  # 100 for the fp32 model (measured first), 50 for every quantized one
        calls.append(1)
        return 100.0 if len(calls) == 1 else 50.0

    control = _control(digits_model, metric=stingy, max_drop=0.0, search_skip_list=False)
    result = _run(digits_model, tmp_path / "int8", control)
    assert not result.accuracy_control.target_met and result.model_file.is_file()
    assert "no setting met max_drop" in caplog.text


@pytest.mark.parametrize("skip_search_batches", [None, 1])
def test_the_skip_list_search_leaves_the_most_sensitive_tensors_in_float(digits_model, tmp_path, skip_search_batches):
    from paddle_quant.deploy.runtimes import make_runner

    batches = _eval_batches(digits_model)
    fp32 = make_runner("executor", digits_model.folder / "model.pdmodel", digits_model.folder / "model.pdiparams")
    reference = [fp32.run(feed)[0] for feed in batches]

    def closeness(outputs):  # 0 for the fp32 model, below 0 for any quantized one
        return -1000.0 * float(np.mean([np.abs(o[0] - r).mean() for o, r in zip(outputs, reference)]))

    control = _control(digits_model, metric=closeness, max_drop=0.0, algos=("abs_max",),
                       skip_search_batches=skip_search_batches)
    found = _run(digits_model, tmp_path / "int8", control).accuracy_control
    plain = quant.quant_post(EXE, str(digits_model.folder), str(tmp_path / "plain"), algo="abs_max", batch_nums=4,
                             data_loader=digits_model.calibration_batches())
    searched = found.candidates[1:]  # 1, 2, 4, ... layers in float; no quantized model is exact: none meets 0.0
    assert len(searched) >= 2 and [len(c.skipped_tensors) for c in searched] == sorted(len(c.skipped_tensors)
                                                                                     for c in searched)
    assert found.skipped_tensors and set(found.skipped_tensors) <= set(plain.quantized_tensors)
    assert found.int8_metric == max(c.metric for c in found.candidates) > found.candidates[0].metric
    assert not found.target_met


def test_recovery_settings_are_tried_with_every_algorithm(digits_model, tmp_path):
    control = _control(digits_model, max_drop=100.0, algos=("abs_max",), recovery=({}, {"bias_correction": True}))
    found = _run(digits_model, tmp_path / "int8", control).accuracy_control
    assert [c.options for c in found.candidates] == [{"algo": "abs_max"}, {"algo": "abs_max", "bias_correction": True}]


def test_default_recovery_adds_depthwise_smoothing_only_where_depthwise_convs_are_quantized(digits_model):
    from paddle_quant.common.model_files import model_op_types
    from paddle_quant.ptq.accuracy_control import DEFAULT_RECOVERY, DEPTHWISE_RECOVERY, recovery_sets

    control, ops = _control(digits_model, recovery=None), {"conv2d", "depthwise_conv2d", "mul"}
    assert recovery_sets(control, {"quantizable_op_type": ["conv2d", "depthwise_conv2d"]}, ops) == (
        DEFAULT_RECOVERY + DEPTHWISE_RECOVERY)
    assert {"smooth_depthwise": True} in DEPTHWISE_RECOVERY
    assert recovery_sets(control, {"quantizable_op_type": ["conv2d", "mul"]}, ops) == DEFAULT_RECOVERY
    assert recovery_sets(control, {"weight_quantize_type": "abs_max"}, ops) == DEFAULT_RECOVERY  # per-tensor weights
    assert recovery_sets(control, {"smooth_depthwise": True}, ops) == DEFAULT_RECOVERY  # already asked for
    assert recovery_sets(control, {"smooth_depthwise": False}, ops) == DEFAULT_RECOVERY  # refused by the caller
    onednn = recovery_sets(control, {"deploy_backend": "onednn"}, ops)  # smooths by default: tried off as well
    assert onednn == DEFAULT_RECOVERY + ({"smooth_depthwise": False}, {"smooth_depthwise": False,
                                                                       "bias_correction": True})
    assert recovery_sets(control, {"deploy_backend": "onednn", "onednn_cpu": "avx2"}, ops) == DEFAULT_RECOVERY
    digits_ops = model_op_types(next(digits_model.folder.glob("*.pdmodel")))
    assert "conv2d" in digits_ops and "depthwise_conv2d" not in digits_ops
    assert recovery_sets(control, {}, digits_ops) == DEFAULT_RECOVERY  # the model has none
    assert recovery_sets(_control(digits_model), {}, ops) == ({},)  # given sets are kept


def test_float_pools_is_tried_where_a_pool_may_read_a_float_conv_on_onednn(digits_model):
    from paddle_quant.ptq.accuracy_control import DEFAULT_RECOVERY, recovery_sets

    control, ops = _control(digits_model, recovery=None), {"conv2d", "depthwise_conv2d", "pool2d"}
    conv2d_only = {"deploy_backend": "onednn", "quantizable_op_type": ["conv2d"]}
    assert recovery_sets(control, conv2d_only, ops) == DEFAULT_RECOVERY + tuple(
        {**options, "float_pools": True} for options in DEFAULT_RECOVERY)
    skipped = recovery_sets(control, {"deploy_backend": "onednn", "skip_tensor_list": ["x"]}, ops)
    assert {"float_pools": True} in skipped and {"smooth_depthwise": False, "float_pools": True} in skipped
    assert not any("float_pools" in options for options in recovery_sets(control, {"deploy_backend": "onednn"}, ops))
    assert recovery_sets(control, {"quantizable_op_type": ["conv2d"]}, ops) == DEFAULT_RECOVERY  # no backend
    assert recovery_sets(control, {**conv2d_only, "float_pools": True}, ops) == DEFAULT_RECOVERY  # asked for
    assert recovery_sets(control, conv2d_only, ops - {"pool2d"}) == DEFAULT_RECOVERY  # no pool


@pytest.mark.vnni
def test_onednn_runtime_measures_the_deployed_model(digits_model, tmp_path):
    found = _run(digits_model, tmp_path / "int8", _control(digits_model, runtime="onednn")).accuracy_control
    assert found.runtime == "onednn" and found.target_met


@pytest.mark.parametrize("field, value, error, fragment", [
    ("metric", "top1", ConfigTypeError, "metric must be callable"),
    ("eval_batches", [], ConfigError, "eval_batches is empty"),
    ("eval_batches", {"image": 1}, ConfigTypeError, "list of feed dicts"),
    ("max_drop", -1.0, ConfigError, "max_drop must be a finite number >= 0"),
    ("max_drop", math.nan, ConfigError, "max_drop must be a finite number >= 0"),
    ("runtime", "tensorrt", ConfigError, "one of ['onednn', 'executor']"),
    ("algos", ("KL", "median"), ConfigError, "algos"),
    ("recovery", ({"bias_corection": True},), ConfigError, "bias_corection"),
    ("skip_search_batches", 0, ConfigError, "None or an int >= 1"),
], ids=lambda v: str(v)[:20])
def test_bad_control_names_the_field_and_what_is_allowed(digits_model, field, value, error, fragment):
    with pytest.raises(error) as info:
        _control(digits_model, **{field: value})
    assert fragment in str(info.value) and field in str(info.value)


@pytest.mark.parametrize("metric, fragment", [
    (lambda outputs: math.nan, "must return a finite float"),
    (lambda outputs: np.array([1.0, 2.0]), "must return a finite float"),
], ids=["nan", "vector"])
def test_a_metric_that_returns_no_finite_scalar_is_refused(digits_model, tmp_path, metric, fragment):
    with pytest.raises(ConfigError, match=fragment):
        _run(digits_model, tmp_path / "int8", _control(digits_model, metric=metric))
    assert not (tmp_path / "int8").exists()


def test_eval_batches_that_do_not_match_the_feeds_are_refused(digits_model, tmp_path):
    control = _control(digits_model, eval_batches=[{"pixels": digits_model.test_images[:8]}])
    with pytest.raises(ConfigError, match="lacks feed"):
        _run(digits_model, tmp_path / "int8", control)


def test_accuracy_control_with_a_scale_table_is_refused(digits_model, digits_int8_model, tmp_path):
    with pytest.raises(ConfigError, match="cannot be combined with scale_table"):
        quant.quant_post(EXE, str(digits_model.folder), str(tmp_path / "out"), accuracy_control=_control(digits_model),
                         scale_table=str(digits_int8_model / "scale_table.json"))


def test_accuracy_control_of_another_type_is_refused(digits_model, tmp_path):
    with pytest.raises(ConfigTypeError, match="paddle_quant.AccuracyControl"):
        _run(digits_model, tmp_path / "int8", {"max_drop": 1.0})


class _ScriptedSearch:
    """try_options scored by how many layers are in float (each layer one tensor here)."""

    def __init__(self, metric_of_count, fp32=10.0, max_drop=0.5):
        self.metric_of_count, self.fp32, self.max_drop, self.tried = metric_of_count, fp32, max_drop, []

    def try_options(self, options, skipped):
        self.tried.append(len(skipped))
        return self.metric_of_count(len(skipped))

    def meets(self, metric):
        return self.fp32 - metric <= self.max_drop


@pytest.mark.parametrize("needed, tried", [(1, [1]), (3, [1, 2, 4, 3]), (4, [1, 2, 4, 3]), (5, [1, 2, 4, 8, 6, 5]),
                                           (9, [1, 2, 4, 8, 9]), (10, [1, 2, 4, 8, 9]), (None, [1, 2, 4, 8, 9])])
def test_the_fewest_layers_in_float_are_found_by_doubling_then_bisecting(needed, tried):
    """Ten ranked layers (at most nine in float); the target is met from ``needed`` layers in float on."""
    from paddle_quant.ptq.accuracy_control import _fewest_layers_in_float

    search = _ScriptedSearch(lambda count: 10.0 if needed is not None and count >= needed else 0.0)
    _fewest_layers_in_float(search, {}, [(f"t{i}",) for i in range(10)])
    assert search.tried == tried


def test_the_chosen_candidate_meets_the_target_with_the_fewest_tensors_in_float(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import paddle_quant.ptq.accuracy_control as module

    metrics = iter([5.0, 9.5, 9.0, 8.0, 9.8])  # fp32: 10, max_drop 1
    monkeypatch.setattr(module, "_measure", lambda *args: next(metrics))
    written = SimpleNamespace(model_file=None, params_file=None)
    search = module._Search(SimpleNamespace(runtime="executor", max_drop=1.0), lambda *args: written, tmp_path, 10.0)
    for count in (0, 4, 2, 1, 3):  # tensors in float per candidate
        search.try_options({"algo": "avg"}, tuple(f"t{i}" for i in range(count)))
    chosen, folder = search.best
    assert (len(chosen.skipped_tensors), chosen.metric, folder.name) == (2, 9.0, "candidate2")
