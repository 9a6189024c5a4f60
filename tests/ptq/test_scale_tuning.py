"""tune_scales: the activation scale search against the fp32 outputs (paddle_quant/ptq/scale_tuning.py)."""

import logging

import numpy as np
import paddle
import pytest

import paddle_quant as quant
from paddle_quant.common.errors import ConfigError
from paddle_quant.deploy.runtimes import make_runner
from paddle_quant.ptq.scale_tuning import output_error
from support.inference import save_built_model

WEIGHT = np.random.default_rng(7).uniform(-0.4, 0.4, (32, 16)).astype("float32")


def _fc_model(folder):
    def fc():
        x = paddle.static.data("x", [-1, 32], "float32")
        attr = paddle.ParamAttr(initializer=paddle.nn.initializer.Assign(WEIGHT))
        return [x], [paddle.static.nn.fc(x, 16, weight_attr=attr)]

    save_built_model(folder, fc)
    return folder


def _calibration():
    """Positive inputs with a long tail: hist at 90 % clips them hard, so the calibrated scale is too small."""
    return [{"x": np.random.default_rng(seed).exponential(1.0, (512, 32)).astype("float32")} for seed in range(4)]


def _quantize(fp32, out, **options):
    return quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(fp32), str(out),
                            data_loader=_calibration, algo="hist", hist_percent=0.9, quantizable_op_type=["mul"],
                            output_scales="none", **options)


def _error_on_calibration(fp32, result):
    expected = make_runner("executor", fp32 / "model.pdmodel", fp32 / "model.pdiparams")
    quantized = make_runner("executor", result.model_file, result.params_file)
    return output_error([expected.run(feed) for feed in _calibration()],
                        [quantized.run(feed) for feed in _calibration()])


def _input_scale(result):
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        paddle.static.load_inference_model(str(result.model_file.parent / "model"),
                                           paddle.static.Executor(paddle.CPUPlace()))
        return float(np.array(scope.find_var("x@scale").get_tensor())[0])


def test_tuning_lowers_the_output_error_of_a_clipping_scale_and_moves_the_scale_up(tmp_path):
    fp32 = _fc_model(tmp_path / "fp32")
    plain, tuned = _quantize(fp32, tmp_path / "plain"), _quantize(fp32, tmp_path / "tuned", tune_scales=True)
    plain_error, tuned_error = _error_on_calibration(fp32, plain), _error_on_calibration(fp32, tuned)
    assert tuned_error < 0.8 * plain_error, (plain_error, tuned_error)
    assert _input_scale(tuned) > _input_scale(plain)


def test_the_rebuild_after_the_search_does_not_repeat_the_settings_warnings(tmp_path, caplog):
    fp32 = _fc_model(tmp_path / "fp32")
    with caplog.at_level(logging.WARNING, logger="paddle_quant"):
        _quantize(fp32, tmp_path / "tuned", tune_scales=True)  # output_scales='none' without a backend warns
    assert sum("output_scales" in record.getMessage() for record in caplog.records) == 1


def test_the_scale_table_of_a_tuned_model_re_applies_byte_identically(tmp_path):
    fp32 = _fc_model(tmp_path / "fp32")
    tuned = _quantize(fp32, tmp_path / "tuned", tune_scales=True)
    for flag in (True, False):  # the table records the tuned scales: no second search either way
        again = quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(fp32), str(tmp_path / f"again{flag}"),
                                 scale_table=str(tuned.scale_table), algo="hist", hist_percent=0.9,
                                 quantizable_op_type=["mul"], output_scales="none", tune_scales=flag)
        assert again.params_file.read_bytes() == tuned.params_file.read_bytes()
        assert again.model_file.read_bytes() == tuned.model_file.read_bytes()


def test_output_error_is_relative_squared_error_averaged_over_outputs():
    reference = [[np.array([3.0, 4.0]), np.array([1.0])]]
    assert output_error(reference, reference) == 0.0
    assert output_error(reference, [[np.array([3.0, 3.0]), np.array([1.0])]]) == pytest.approx(0.5 * 1.0 / 25.0)


def test_output_error_compares_probabilities_as_logarithms():
    """A confident softmax output whose small probability is off by 10x: tiny in squared probability, large in
    log-probability, which is what moves a decision near the boundary."""
    reference = [[np.array([[0.999, 0.001]])]]
    off = [[np.array([[0.99, 0.01]])]]
    expected = ((np.log(0.99) - np.log(0.999)) ** 2 + (np.log(0.01) - np.log(0.001)) ** 2) / 2
    assert output_error(reference, off) == pytest.approx(expected)
    assert output_error(reference, [[np.array([[1.0, 0.0]])]]) == pytest.approx(
        ((np.log(1.0) - np.log(0.999)) ** 2 + (np.log(1e-7) - np.log(0.001)) ** 2) / 2)


def test_bad_tuning_options_are_refused_naming_the_option(tmp_path):
    fp32 = _fc_model(tmp_path / "fp32")
    with pytest.raises(ConfigError, match="tune_scales_batches.*tune_scales is False"):
        _quantize(fp32, tmp_path / "a", tune_scales_batches=2)
    with pytest.raises(ConfigError, match="tune_scales_batches"):
        _quantize(fp32, tmp_path / "b", tune_scales=True, tune_scales_batches=0)
    with pytest.raises(ConfigError, match="tune_scales=True"):
        quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(fp32), str(tmp_path / "c"),
                         data_loader=iter(_calibration()), quantizable_op_type=["mul"], tune_scales=True)
    assert not any((tmp_path / name).exists() for name in "abc")


def _residual_model(folder):
    """a = relu(conv(x)), b = relu(conv(a)), out = a + conv(b): ``a`` crosses the cut at ``b``'s quantizer."""
    def residual():
        x = paddle.static.data("x", [-1, 4, 6, 6], "float32")
        a = paddle.nn.functional.relu(paddle.static.nn.conv2d(x, 8, 3, padding=1))
        b = paddle.nn.functional.relu(paddle.static.nn.conv2d(a, 8, 1))
        return [x], [paddle.flatten(a + paddle.static.nn.conv2d(b, 8, 1), 1)]

    save_built_model(folder, residual, seed=3)
    return folder


def test_a_run_from_a_quantizer_on_computes_what_the_whole_program_computes(tmp_path):
    from paddle_quant.common import naming
    from paddle_quant.ptq.scale_tuning import _Suffix, _first_reader, _live_at, program_outputs, tunable_scales

    fp32 = _residual_model(tmp_path / "fp32")
    batches = [{"x": np.random.default_rng(seed).standard_normal((4, 4, 6, 6)).astype("float32")} for seed in range(3)]
    result = quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(fp32), str(tmp_path / "int8"),
                              data_loader=lambda: iter(batches), algo="abs_max", quantizable_op_type=["conv2d"],
                              output_scales="none")
    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        program, _, fetches = paddle.static.load_inference_model(str(result.model_file.parent / "model"), exe)
    fetch_names = [var.name for var in fetches]
    block = program.global_block()
    tunable = tunable_scales(program, [name for name in block.vars])
    assert len(tunable) == 3
    whole = program_outputs(exe, program, scope, batches, fetch_names)
    cuts = [_first_reader(block, naming.scale(name)) for name in tunable]
    lives = [_live_at(block, cut, ["x"], fetch_names) for cut in cuts]
    assert lives[2] == sorted([tunable[1], tunable[2]])  # the residual tensor and the last conv's input
    for live in lives:
        cache = [{name: value for name, value in zip(live, exe.run(program, feed=feed, fetch_list=live, scope=scope))}
                 for feed in batches]
        outputs, _ = _Suffix(exe, program, scope, live, fetch_names).run(cache, [])
        assert all(np.array_equal(o[0], w[0]) for o, w in zip(outputs, whole))

