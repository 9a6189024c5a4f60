"""deploy_backend: options a runtime cannot run are refused; the emitted model takes the backend's shape."""

import paddle
import pytest

import paddle_quant as quant
from paddle_quant.common.backends import (BACKENDS, NO_BACKEND_OUTPUT_SCALES_WARNING, ONEDNN_INT8_OPS_WARNING,
                                         ONEDNN_OUTPUT_SCALES_WARNING)
from paddle_quant.common.errors import ConfigError, ConfigTypeError
from paddle_quant.export.tensorrt_cache import TENSORRT_CACHE_FILENAME


@pytest.mark.parametrize("backend, option, value", [
    ("onednn", "activation_bits", 4),
    ("onednn", "weight_bits", 16),
    ("tensorrt", "weight_quantize_type", "abs_max"),
    ("onnx", "activation_bits", 16),
    ("paddle_lite", "weight_bits", 16),
])
def test_options_the_runtime_cannot_run_are_refused(backend, option, value):
    with pytest.raises(ConfigError, match=rf"deploy_backend={backend!r}.*{option}={value!r}"):
        quant.QuantConfig(deploy_backend=backend, **{option: value})
    with pytest.raises(ConfigError, match=option):  # PTQConfig may refuse the value on its own first
        quant.PTQConfig(deploy_backend=backend, **{option: value})


def test_the_old_format_is_refused_where_the_runtime_needs_qdq():
    for backend in ("onednn", "onnx"):
        with pytest.raises(ConfigError, match="onnx_format=False"):
            quant.QuantConfig(deploy_backend=backend, onnx_format=False)
    assert quant.QuantConfig(deploy_backend="tensorrt", onnx_format=False).onnx_format is False


def test_paddleslim_spellings_map_to_profiles():
    assert quant.QuantConfig(deploy_backend="mkldnn").deploy_backend == "onednn"
    assert {quant.PTQConfig(deploy_backend=b).deploy_backend for b in BACKENDS} == set(BACKENDS)


def _observer_pairs(model_file):
    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        program, _, _ = paddle.static.load_inference_model(str(model_file.with_suffix("")), exe)
    ops = [op for op in program.global_block().ops if op.type == "quantize_linear"]
    return sum(bool(op.attr("only_observer")) for op in ops), len(ops)


@pytest.mark.parametrize("backend, observers, side_file", [
    ("onednn", False, None), ("onnx", False, None), ("tensorrt", True, TENSORRT_CACHE_FILENAME),
])
def test_ptq_output_takes_the_backend_shape(digits_model, tmp_path, backend, observers, side_file):
    result = quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(digits_model.folder),
                              str(tmp_path / backend), algo="abs_max", deploy_backend=backend,
                              data_loader=digits_model.calibration_batches())
    only_observer, total = _observer_pairs(result.model_file)
    assert total > 0 and bool(only_observer) is observers
    names = {p.name for p in result.model_file.parent.iterdir()}
    assert (TENSORRT_CACHE_FILENAME in names) is (side_file is not None)


def test_explicit_output_scales_win_over_the_backend_default():
    assert quant.PTQConfig(deploy_backend="onnx", output_scales="all").effective_output_scales == "all"
    assert quant.PTQConfig(deploy_backend="onednn").effective_output_scales == "none"
    assert quant.PTQConfig(deploy_backend="onednn", output_scales="all").effective_output_scales == "all"
    assert quant.PTQConfig().effective_output_scales == "all"  # no backend: PaddleSlim's graph


def test_explicit_output_scales_all_on_onednn_is_kept_with_a_warning(digits_model, tmp_path, caplog):
    for scales in ("all", "int8_ops", None):
        caplog.clear()
        result = quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(digits_model.folder),
                                  str(tmp_path / str(scales)), algo="abs_max", deploy_backend="onednn",
                                  onednn_cpu="vnni", output_scales=scales, data_loader=digits_model.calibration_batches())
        assert bool(_observer_pairs(result.model_file)[0]) is (scales is not None)
        assert (ONEDNN_OUTPUT_SCALES_WARNING in caplog.text) is (scales == "all")
        assert (ONEDNN_INT8_OPS_WARNING in caplog.text) is (scales == "int8_ops")


def test_output_scales_none_or_int8_ops_without_a_backend_warn_that_onednn_runs_it_otherwise(digits_model, tmp_path,
                                                                                                caplog):
    for backend, scales in ((None, "none"), (None, "int8_ops"), (None, "all"), (None, None), ("onnx", "none")):
        caplog.clear()
        quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(digits_model.folder),
                         str(tmp_path / f"{backend}_{scales}"), algo="abs_max", deploy_backend=backend,
                         output_scales=scales, data_loader=digits_model.calibration_batches())
        warned = (NO_BACKEND_OUTPUT_SCALES_WARNING % scales) in caplog.text
        assert warned is (backend is None and scales in ("none", "int8_ops")), (backend, scales)


def test_fold_affine_follows_the_backend_unless_given():
    assert quant.PTQConfig().effective_fold_affine is False  # no backend: the graph PaddleSlim emits
    assert quant.PTQConfig(deploy_backend="onednn").effective_fold_affine is True
    assert {b: quant.PTQConfig(deploy_backend=b).effective_fold_affine for b in BACKENDS} == {
        "onednn": True, "tensorrt": False, "paddle_lite": False, "onnx": False}
    assert quant.PTQConfig(deploy_backend="onednn", fold_affine=False).effective_fold_affine is False
    assert quant.PTQConfig(fold_affine=True).effective_fold_affine is True
    with pytest.raises(ConfigTypeError, match="fold_affine"):
        quant.PTQConfig(fold_affine="yes")
