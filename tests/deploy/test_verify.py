"""verify(): runtime vs fake-quant simulation, checked against a hand-run of both."""

import json

import numpy as np
import paddle
import pytest

import paddle_quant as quant
from paddle_quant.common.errors import ConfigError, ConfigTypeError
from paddle_quant import verify
from paddle_quant.deploy.cpu import int8_dot_product

import qat_digits
from support.inference import save_built_model


@pytest.fixture(scope="module")
def int8_model(digits_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("verify") / "int8"
    quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(digits_model.folder), str(out), algo="hist",
                     data_loader=digits_model.calibration_batches())
    return out


def _feeds(digits_model, count=2, size=32):
    return [{"image": digits_model.test_images[i * size:(i + 1) * size]} for i in range(count)]


def _by_hand(model_dir, feeds):
    """oneDNN int8 outputs and Executor outputs, computed without paddle_quant."""
    predictor = qat_digits.create_predictor(str(model_dir / "model.pdmodel"), str(model_dir / "model.pdiparams"), True)
    onednn = np.concatenate([qat_digits.predict(predictor, f["image"]) for f in feeds])
    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        program, _, fetches = paddle.static.load_inference_model(str(model_dir / "model"), exe)
        simulated = np.concatenate([exe.run(program, feed=f, fetch_list=fetches)[0] for f in feeds])
    return onednn, simulated, fetches[0].name


def test_report_matches_a_hand_computed_deviation(digits_model, int8_model):
    feeds = _feeds(digits_model)
    report = verify(int8_model, "onednn", feeds, fp32_model=digits_model.folder, repeats=3)
    onednn, simulated, name = _by_hand(int8_model, feeds)
    entry = json.loads((int8_model / "scale_table.json").read_text())["tensors"][name]
    step = entry["scale"][0] / 127
    (output,) = report.outputs
    assert output.name == name and output.step_source == "scale table"
    assert output.step == pytest.approx(step)
    assert output.max_steps == pytest.approx(np.abs(onednn - simulated).max() / step, rel=1e-6)
    r, s = onednn.astype(np.float64).ravel(), simulated.astype(np.float64).ravel()
    cosine = float(r @ s / np.linalg.norm(r) / np.linalg.norm(s))
    assert output.cosine == pytest.approx(cosine, abs=1e-9)
    assert report.batches == 2 and report.latency_ms > 0 and report.fp32_latency_ms > 0
    assert "int8/fp32" in report.table()
    assert report.cpu_int8_dot_product is int8_dot_product()


@pytest.mark.vnni
def test_onednn_int8_stays_within_a_few_steps_of_the_simulation(digits_model, int8_model):
    report = verify(int8_model, "onednn", _feeds(digits_model), repeats=1)
    # oneDNN requantizes conv outputs the simulation keeps in float: a few steps, never wild.
    assert report.within(8.0), report.table()


def test_simulation_against_itself_is_exact(digits_model, int8_model):
    report = verify(int8_model, "executor", _feeds(digits_model, 1), repeats=1)
    assert report.max_steps == 0.0 and report.outputs[0].cosine == pytest.approx(1.0)
    assert report.latency_ratio is None


def test_without_a_table_the_step_comes_from_the_simulation(digits_model, int8_model, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("model.pdmodel", "model.pdiparams"):
        (copy / name).write_bytes((int8_model / name).read_bytes())
    report = verify(copy, "executor", _feeds(digits_model, 1), repeats=1)
    assert report.outputs[0].step_source.startswith("abs max")


def test_plain_arrays_are_batches_of_a_single_input_model(digits_model, int8_model):
    images = digits_model.test_images[:32]
    # paddle_fp32 runs the QDQ ops in float: its deviation from the simulation depends on the data fed
    as_dict = verify(int8_model, "paddle_fp32", [{"image": images}], repeats=1)
    assert as_dict.max_steps > 0
    for inputs in ([images], images, [(images,)]):
        report = verify(int8_model, "paddle_fp32", inputs, repeats=1)
        assert report.batches == 1 and report.outputs == as_dict.outputs


def _two_inputs():
    a = paddle.static.data("a", [-1, 4], "float32")
    b = paddle.static.data("b", [-1, 4], "float32")
    return [a, b], [paddle.static.nn.fc(a + b, 2)]


def test_one_array_for_a_two_input_model_names_the_feeds(tmp_path):
    folder = save_built_model(tmp_path / "two", _two_inputs)
    x = np.ones((3, 4), np.float32)
    with pytest.raises(ConfigError, match=r"inputs\[0\] holds 1 tensor\(s\) but the model has 2 feed\(s\) \['a', 'b'\]"):
        verify(folder, "executor", [x], repeats=1)
    report = verify(folder, "executor", [(x, 2 * x)], repeats=1)  # a tuple in feed order
    assert report.batches == 1 and report.max_steps == 0.0


@pytest.mark.parametrize("kwargs, error, match", [
    ({"inputs": None}, ConfigError, "inputs is required"),
    ({"inputs": "x"}, ConfigTypeError, "feed dict"),
    ({"inputs": [1]}, ConfigTypeError, r"inputs\[0\]"),
    ({"runtime": "tpu"}, ConfigError, "runtime must be one of"),
    ({"runtime": "onnxruntime"}, ConfigError, "runtime_model"),
])
def test_bad_arguments(digits_model, int8_model, kwargs, error, match):
    args = {"runtime": "onednn", "inputs": _feeds(digits_model, 1), **kwargs}
    with pytest.raises(error, match=match):
        verify(int8_model, **args)


def test_tensorrt_without_a_gpu_says_so(digits_model, int8_model):
    if paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        pytest.skip("this Paddle has a GPU: the gpu-marked test covers TensorRT")
    with pytest.raises(ConfigError, match="CUDA"):
        verify(int8_model, "tensorrt", _feeds(digits_model, 1))


def test_missing_model_dir(tmp_path, digits_model):
    with pytest.raises(ConfigError, match="is not a directory"):
        verify(tmp_path / "absent", "onednn", _feeds(digits_model, 1))


@pytest.mark.gpu
def test_tensorrt_int8_runs_the_qdq_model(digits_model, int8_model):
    report = verify(int8_model, "tensorrt", _feeds(digits_model, 2), repeats=3)
    assert report.outputs[0].cosine > 0.99, report.table()


def test_the_simulation_requantizes_what_the_onnx_file_requantizes(digits_model, tmp_path):
    """An export that requantizes the int8 ops' outputs (QLinearConv in onnxruntime; uint8 storage, exact on any
    x86 CPU) is compared with a simulation that rounds those outputs too."""
    pytest.importorskip("onnxruntime")
    from paddle_quant.export.onnx import export_onnx

    model_dir = tmp_path / "int8"
    quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(digits_model.folder), str(model_dir), algo="avg",
                     data_loader=digits_model.calibration_batches())
    exported = export_onnx(model_dir, tmp_path / "m.onnx", observers="int8_ops", activation_type="uint8",
                           weight_type="uint8")
    assert "fc_0.tmp_0" in exported.observers
    report = verify(model_dir, "onnxruntime", _feeds(digits_model, count=8, size=64), runtime_model=exported.path,
                    repeats=1)
    # measured 1.0 steps (a rounding tie); with the observers left identities in the simulation, 80 steps: the
    # avg scale clips the logits onnxruntime requantizes
    assert report.within(2.001), report.table()
