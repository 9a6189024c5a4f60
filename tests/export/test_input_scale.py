"""The one-value multiply of the affine a float conv reads, folded into the conv's weights at export.

``conv(a * h + b, W) = conv(h + b / a, a W)``, also where the conv pads (the learnable affine before PP-OCRv4 rec's
depthwise convs). Oracles: the Paddle Executor in fp32 (relative 1e-5) and ``verify`` for the int8 export (output
steps of the simulation).
"""

from __future__ import annotations

import numpy as np
import paddle
import pytest

import paddle_quant as quant
from paddle_quant.common.errors import ConfigError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from paddle_quant.export.onnx import export_float_onnx, export_onnx  # noqa: E402

from support.inference import legacy_static as _static, save_built_model  # noqa: E402

A, B = -0.7, 0.3
"""The affine's values: a negative multiply and a shift, so both the sign and the border term are exercised."""


def _affine_before_depthwise(extra_reader: bool = False):
    """x -> conv 3x3 -> hard_swish -> a * h + b -> depthwise conv 3x3, padded (PP-LCNetV3's block); with
    ``extra_reader`` the product ``a * h`` is fetched too, so the multiply cannot be folded away."""
    x = paddle.static.data("x", [None, 16, 8, 8], "float32")
    h = paddle.nn.functional.hardswish(paddle.static.nn.conv2d(x, 16, 3, padding=1))
    a = paddle.static.create_parameter([1], "float32", default_initializer=paddle.nn.initializer.Constant(A))
    b = paddle.static.create_parameter([1], "float32", default_initializer=paddle.nn.initializer.Constant(B))
    scaled = h * a
    depthwise = paddle.static.nn.conv2d(scaled + b, 16, 3, padding=1, groups=16, use_cudnn=False)
    out = paddle.flatten(depthwise, 1)
    return [x], [out, paddle.flatten(scaled, 1)] if extra_reader else [out]


def _batches(seed, count):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((8, 16, 8, 8)).astype("float32")} for _ in range(count)]


def _run(path, batch):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, batch)


def _executor(model_dir, batch):
    with _static():
        exe = paddle.static.Executor(paddle.CPUPlace())
        with paddle.static.scope_guard(paddle.static.Scope()):
            program, feeds, fetches = paddle.static.load_inference_model(str(model_dir / "model"), exe)
            return exe.run(program, feed=batch, fetch_list=fetches)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{'fp32', 'fp32_shared', 'int8'}: the net, the net with the product read twice, and the net after quant_post
    (conv2d quantized; the depthwise_conv2d stays float)."""
    folder = tmp_path_factory.mktemp("input_scale")
    batches = _batches(3, 3)
    with _static():
        save_built_model(folder / "fp32", _affine_before_depthwise, seed=1)
        save_built_model(folder / "fp32_shared", lambda: _affine_before_depthwise(extra_reader=True), seed=1)
        quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(folder / "fp32"), str(folder / "int8"),
                         data_loader=lambda: iter(batches), algo="abs_max", quantizable_op_type=["conv2d"],
                         deploy_backend="onednn")
    return {name: folder / name for name in ("fp32", "fp32_shared", "int8")}


def _op_types(path):
    return [node.op_type for node in onnx.load(str(path)).graph.node]


def test_the_fp32_export_folds_the_multiply_into_the_padded_depthwise_conv_and_computes_the_executors_output(
        models, tmp_path):
    folded = export_float_onnx(models["fp32"], tmp_path / "folded.onnx", fold_input_affine=True)
    plain = export_float_onnx(models["fp32"], tmp_path / "plain.onnx")
    assert len(folded.folded_input_scales) == 1 and plain.folded_input_scales == ()
    assert _op_types(plain.path).count("Mul") == 1 and "Mul" not in _op_types(folded.path)
    for batch in _batches(5, 2):
        expected = _executor(models["fp32"], batch)[0]
        np.testing.assert_allclose(_run(folded.path, batch)[0], expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_a_multiply_read_elsewhere_too_is_left_alone(models, tmp_path):
    result = export_float_onnx(models["fp32_shared"], tmp_path / "m.onnx", fold_input_affine=True)
    assert result.folded_input_scales == () and _op_types(result.path).count("Mul") == 1


def test_the_int8_export_folds_it_into_the_float_depthwise_conv_and_verify_holds(models, tmp_path):
    result = export_onnx(models["int8"], tmp_path / "int8.onnx", fold_input_scales=True)
    assert len(result.folded_input_scales) == 1 and "Mul" not in _op_types(result.path)
    report = quant.verify(models["int8"], "onnxruntime", _batches(11, 3), runtime_model=str(result.path))
    assert report.outputs[0].max_steps <= 1.0


def test_a_bad_fold_input_scales_is_named_and_nothing_is_written(models, tmp_path):
    with pytest.raises(ConfigError, match="fold_input_scales must be True or False, got 1"):
        export_onnx(models["int8"], tmp_path / "m.onnx", fold_input_scales=1)
    assert not (tmp_path / "m.onnx").exists()
