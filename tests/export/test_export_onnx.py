"""ONNX int8 QDQ export (paddle_quant.export.onnx) and the QDQ scale reader, checked in onnxruntime.

Oracles: the Paddle Executor running the same quantized program (observer pairs left as
identities, or made real quantizers where the ONNX graph has a QuantizeLinear), the fp32
weights of the fp32 model, and Paddle Inference (oneDNN int8) accuracy on the digits test set.
Tolerances are in quantization steps of the output's observer scale (scale / 127).
"""

from __future__ import annotations

import shutil
import sys

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

import paddle_quant as quant
from paddle_quant.common.errors import ConfigError, ProgramStateError
from paddle_quant.export.qdq_scales import load_quantized_model, read_qdq_scales

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from paddle_quant.export.onnx import MissingDependencyError, export_float_onnx, export_onnx

from support.digits_model import accuracy  # noqa: E402
from support.inference import legacy_static as _static, save_built_model  # noqa: E402

WEIGHTS = {"conv2d_0.w_0": 0, "conv2d_1.w_0": 0, "fc_0.w_0": 1}
ACTIVATIONS = {"image", "relu_0.tmp_0", "flatten_0.tmp_0"}


@pytest.fixture(scope="module")
def int8_dir(digits_model, tmp_path_factory):
    """The digits CNN after quant_post (avg, default op types, observer scales on every output)."""
    out = tmp_path_factory.mktemp("onnx") / "int8"
    with _static():
        quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(digits_model.folder), str(out),
                         data_loader=digits_model.calibration_batches(), algo="avg")
    return out


def _ort(path, images):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def _paddle(model_dir, images, active_observers=()):
    """The quantized model in the Paddle Executor; observer pairs on ``active_observers`` really quantize."""
    model = load_quantized_model(model_dir)
    block = model.program.global_block()
    for op in block.ops:
        if op.type in ("quantize_linear", "dequantize_linear") and op.attr("only_observer"):
            source = op.input("X")[0]
            tensor = source[: -len(".quantized")] if op.type == "dequantize_linear" else source
            op._set_attr("only_observer", tensor not in set(active_observers))
    with paddle.static.scope_guard(model.scope):
        exe = paddle.static.Executor(paddle.CPUPlace())
        return exe.run(model.program, feed={model.feed_names[0]: images}, fetch_list=list(model.fetch_names))[0]


def _output_step(model_dir, tensor):
    model = load_quantized_model(model_dir)
    return float(read_qdq_scales(model.program, model.scope)[tensor].scale[0]) / 127.0


def _onnx_quantized_tensors(path):
    return {node.input[0] for node in onnx.load(str(path)).graph.node if node.op_type == "QuantizeLinear"}


def _initializers(model):
    return {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}


# ---------------------------------------------------------------- the scale reader
def test_reader_names_every_quantized_tensor_with_kind_axis_and_int8_weights(digits_model, int8_dir):
    model = load_quantized_model(int8_dir)
    scales = read_qdq_scales(model.program, model.scope)
    kinds = {name: s.kind for name, s in scales.items()}
    assert {n for n, k in kinds.items() if k == "weight"} == set(WEIGHTS)
    assert {n for n, k in kinds.items() if k == "activation"} == ACTIVATIONS
    assert "fc_0.tmp_0" in {n for n, k in kinds.items() if k == "observer"}
    fp32 = load_quantized_model(digits_model.folder)
    for name, axis in WEIGHTS.items():
        weight = scales[name]
        assert weight.axis == axis and weight.bits == 8 and weight.int_values.dtype == np.int8
        original = np.array(fp32.scope.find_var(name).get_tensor())
        shape = [-1 if i == axis else 1 for i in range(original.ndim)]
        step = weight.scale.reshape(shape) / 127.0
        # the stored integers reproduce the fp32 weight to half a step per channel
        assert np.all(np.abs(weight.int_values * step - original) <= step / 2 + 1e-7)
        assert np.array_equal(weight.scale.reshape(shape), np.abs(original).max(
            axis=tuple(i for i in range(original.ndim) if i != axis), keepdims=True))
    assert all(s.axis is None and s.scale.shape == (1,) for s in scales.values() if s.kind != "weight")
    assert all(not s.zero_point.any() for s in scales.values())


def test_reader_finds_nothing_in_an_fp32_model(digits_model):
    model = load_quantized_model(digits_model.folder)
    assert read_qdq_scales(model.program, model.scope) == {}


# ---------------------------------------------------------------- numerics in onnxruntime
def test_fp32_export_matches_the_paddle_executor(digits_model, tmp_path):
    result = export_float_onnx(digits_model.folder, tmp_path / "fp32.onnx")
    images = digits_model.test_images[:128]
    expected = _paddle(digits_model.folder, images)
    np.testing.assert_allclose(_ort(result.path, images), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_unfolded_export_without_observers_computes_what_the_executor_computes(digits_model, int8_dir, tmp_path):
    result = export_onnx(int8_dir, tmp_path / "m.onnx", observers="none", fold_conv=False)
    images = digits_model.test_images
    got, expected = _ort(result.path, images), _paddle(int8_dir, images)
    step = _output_step(int8_dir, "fc_0.tmp_0")
    # measured: 2e-5 (0.0002 steps); one step allows a rounding tie decided the other way upstream
    assert np.abs(got - expected).max() <= 1.001 * step
    assert np.array_equal(got.argmax(1), expected.argmax(1))


@pytest.mark.vnni  # observers made real: onnxruntime runs int8 kernels (QLinearConv)
def test_observer_pairs_quantize_like_the_executor_with_observers_made_real(digits_model, int8_dir, tmp_path):
    result = export_onnx(int8_dir, tmp_path / "m.onnx", observers="all", fold_conv=False)
    assert set(result.observers) <= _onnx_quantized_tensors(result.path)
    images = digits_model.test_images
    got = _ort(result.path, images)
    expected = _paddle(int8_dir, images, active_observers=result.observers)
    assert np.abs(got - expected).max() <= 1.001 * _output_step(int8_dir, "fc_0.tmp_0")


@pytest.mark.vnni  # folded convs with quantized outputs: onnxruntime runs int8 kernels
def test_folded_export_matches_the_executor_with_the_same_quantizers(digits_model, int8_dir, tmp_path):
    result = export_onnx(int8_dir, tmp_path / "m.onnx", observers="int8_ops")  # fold_conv=True by default
    quantized = _onnx_quantized_tensors(result.path)
    images = digits_model.test_images
    got = _ort(result.path, images)
    expected = _paddle(int8_dir, images, active_observers=quantized)
    # the folded bias is int32 at x_scale * w_scale instead of a float add: a few rounding ties move
    assert np.abs(got - expected).max() <= 2.001 * _output_step(int8_dir, "fc_0.tmp_0")
    assert np.mean(got.argmax(1) == expected.argmax(1)) >= 0.99


def test_onnxruntime_int8_accuracy_is_within_half_a_point_of_paddle_inference_int8(digits_model, int8_dir, tmp_path):
    result = export_onnx(int8_dir, tmp_path / "m.onnx")
    images, labels = digits_model.test_images, digits_model.test_labels.ravel()
    onnx_acc = 100.0 * np.mean(_ort(result.path, images).argmax(1) == labels)
    paddle_acc = accuracy(int8_dir / "model.pdmodel", int8_dir / "model.pdiparams", images, labels, int8=True)
    assert abs(onnx_acc - paddle_acc) <= 0.5, (onnx_acc, paddle_acc)


# ---------------------------------------------------------------- op converters against the Executor (fp32)
def _add_on_axis_1(x):
    """Legacy ``elementwise_add`` with ``axis=1``: a [C] vector aligned with the channel axis."""
    y = paddle.static.create_parameter([4], "float32", default_initializer=paddle.nn.initializer.Normal())
    block = paddle.static.default_main_program().global_block()
    out = block.create_var(name="add_axis_1.out", shape=x.shape, dtype="float32")
    block.append_op(type="elementwise_add", inputs={"X": [x], "Y": [y]}, outputs={"Out": [out]}, attrs={"axis": 1})
    return out


def _legacy_op(op_type, inputs, **attrs):
    """Append one legacy op writing ``Out`` (for ops whose Python API has left legacy static mode)."""
    block = paddle.static.default_main_program().global_block()
    out = block.create_var(name=f"{op_type}.out", dtype="float32")
    block.append_op(type=op_type, inputs=inputs, outputs={"Out": [out]}, attrs=attrs)
    return out


CONVERTER_CASES = {
    "conv_asymmetric_pads_groups": lambda x: paddle.nn.Conv2D(4, 6, 3, stride=2, padding=[1, 2, 0, 1], groups=2)(x),
    "conv_same_dilated": lambda x: paddle.nn.Conv2D(4, 4, 3, padding="SAME", dilation=2)(x),
    "depthwise": lambda x: paddle.nn.Conv2D(4, 8, 3, padding=1, groups=4)(x),
    "max_pool_ceil": lambda x: F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True),
    "avg_pool_inclusive": lambda x: F.avg_pool2d(x, 2, stride=2, padding=1, exclusive=False),
    "avg_pool_exclusive": lambda x: F.avg_pool2d(x, 3, stride=2, padding=1),
    "adaptive_avg_pool_1x1": lambda x: F.adaptive_avg_pool2d(x, 1),
    "gelu": lambda x: _legacy_op("gelu", {"X": [x]}, approximate=False),
    "activations": lambda x: (F.relu6(x) + F.leaky_relu(x, 0.1) + F.swish(x) + F.silu(x)
                              + F.hardswish(x) + F.hardsigmoid(x) + _legacy_op("sigmoid", {"X": [x]}) + _legacy_op("tanh", {"X": [x]})),
    "softmax_axis_1": lambda x: F.softmax(x, axis=1),
    "reduce_mean": lambda x: paddle.mean(x, axis=[2, 3], keepdim=True) + paddle.mean(x, axis=1, keepdim=True)
    + paddle.mean(x),
    "scale_bias_before_and_after": lambda x: (paddle.scale(x, 2.0, bias=1.0, bias_after_scale=False)
                                              + paddle.scale(x, 0.5, bias=-1.0)),
    "layer_norm": lambda x: paddle.nn.LayerNorm(6)(x),
    "flatten_middle_axes": lambda x: paddle.flatten(x, 1, 2),
    "reshape_transpose": lambda x: paddle.transpose(paddle.reshape(x, [0, -1, 6]), [0, 2, 1]),
    "squeeze_unsqueeze_concat": lambda x: paddle.concat([paddle.squeeze(paddle.unsqueeze(x, 1), 1), x], axis=2),
    "slice_with_decrease": lambda x: x[:, 1:3, :, 2],
    "matmul_v2_transposed": lambda x: _legacy_op("matmul_v2", {"X": [x], "Y": [x]}, trans_x=True, trans_y=False),
    "matmul_v1_alpha": lambda x: _legacy_op("matmul", {"X": [x], "Y": [x]}, transpose_Y=True, alpha=0.5),
    "fc_num_flatten_dims_2": lambda x: paddle.static.nn.fc(x, 5, num_flatten_dims=2),
    "dropout_downscale_in_infer": lambda x: F.dropout(x, 0.3, training=False, mode="downscale_in_infer"),
    "reshape_from_shape_tensor": lambda x: paddle.reshape(x, [paddle.shape(x)[0], -1]),
    "elementwise_add_axis_1": _add_on_axis_1,
    "elementwise_and_unary": lambda x: _legacy_op("elementwise_max", {"X": [_legacy_op("elementwise_sub", {
        "X": [_legacy_op("elementwise_mul", {"X": [x], "Y": [x]})], "Y": [_legacy_op("exp", {"X": [x]})]})],
        "Y": [_legacy_op("elementwise_min", {"X": [_legacy_op("assign", {"X": [x]})], "Y": [_legacy_op(
            "elementwise_div", {"X": [x], "Y": [_legacy_op("sqrt", {"X": [_legacy_op("abs", {"X": [x]})]})]})]})]}),
}


def _converter_case_matches_the_executor(case, tmp_path, rng, opset=17):
    paddle.seed(0)
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        x = paddle.static.data("x", [None, 4, 6, 6], "float32")
        out = CONVERTER_CASES[case](x)
    exe = paddle.static.Executor(paddle.CPUPlace())
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        exe.run(startup)
        paddle.static.save_inference_model(str(tmp_path / "m" / "model"), [x], [out], exe, program=main)
    images = rng.normal(0, 1, (3, 4, 6, 6)).astype("float32")
    expected = _paddle(tmp_path / "m", images)
    got = _ort(export_float_onnx(tmp_path / "m", tmp_path / "m.onnx", opset=opset).path, images)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(expected).max()))


@pytest.mark.filterwarnings("ignore:no variable in your model")  # the parameterless cases
@pytest.mark.parametrize("case", sorted(CONVERTER_CASES))
def test_each_op_converter_matches_the_executor_in_fp32(case, tmp_path, rng):
    _converter_case_matches_the_executor(case, tmp_path, rng)


@pytest.mark.filterwarnings("ignore:no variable in your model")
def test_reduce_mean_takes_its_axes_as_an_input_from_opset_18(tmp_path, rng):
    _converter_case_matches_the_executor("reduce_mean", tmp_path, rng, opset=18)
    nodes = [node for node in onnx.load(str(tmp_path / "m.onnx")).graph.node if node.op_type == "ReduceMean"]
    assert len(nodes) == 3 and not any(attr.name == "axes" for node in nodes for attr in node.attribute)


# ---------------------------------------------------------------- structure
def test_unfolded_graph_has_one_qdq_per_quantized_tensor_and_int8_weights(int8_dir, tmp_path):
    result = export_onnx(int8_dir, tmp_path / "m.onnx", observers="all", fold_conv=False)
    model = onnx.load(str(result.path))
    onnx.checker.check_model(model)
    assert (model.opset_import[0].version, model.ir_version) == (17, 8)  # oldest IR carrying opset 17
    nodes = model.graph.node
    paddle_model = load_quantized_model(int8_dir)
    scales = read_qdq_scales(paddle_model.program, paddle_model.scope)
    runtime_quantized = [s for s in scales.values() if s.kind != "weight"]
    assert sum(n.op_type == "QuantizeLinear" for n in nodes) == len(runtime_quantized)
    assert sum(n.op_type == "DequantizeLinear" for n in nodes) == len(scales)
    initializers = _initializers(model)
    for name, axis in WEIGHTS.items():
        dequant = next(n for n in nodes if n.op_type == "DequantizeLinear" and n.input[0] == f"{name}@int8")
        assert initializers[dequant.input[0]].dtype == np.int8
        np.testing.assert_array_equal(initializers[dequant.input[0]], scales[name].int_values)
        assert onnx.helper.get_attribute_value(next(a for a in dequant.attribute if a.name == "axis")) == axis
        np.testing.assert_allclose(initializers[dequant.input[1]], scales[name].scale / 127.0, rtol=1e-7)
        assert initializers[dequant.input[2]].dtype == np.int8 and not initializers[dequant.input[2]].any()
        assert name not in initializers  # no float copy of a quantized weight
    assert set(result.weights) == set(WEIGHTS) and set(result.activations) == ACTIVATIONS


def test_folded_convs_without_a_requantize_keep_a_float_bias(int8_dir, tmp_path):
    model = onnx.load(str(export_onnx(int8_dir, tmp_path / "m.onnx").path))  # observers='none'
    nodes = {output: node for node in model.graph.node for output in node.output}
    initializers = _initializers(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 2
    for conv in convs:  # no QuantizeLinear follows, so no QLinearConv: rounding the bias would only add error
        assert conv.input[2] in initializers and conv.input[2] not in nodes
        assert initializers[conv.input[2]].dtype == np.float32


def test_folded_convs_take_an_int32_bias_and_no_add_follows(int8_dir, tmp_path):
    model = onnx.load(str(export_onnx(int8_dir, tmp_path / "m.onnx", observers="all").path))
    nodes = {output: node for node in model.graph.node for output in node.output}
    initializers = _initializers(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 2
    for conv in convs:
        bias = nodes[conv.input[2]]
        assert bias.op_type == "DequantizeLinear" and initializers[bias.input[0]].dtype == np.int32
        weight_scale = initializers[nodes[conv.input[1]].input[1]]
        input_scale = initializers[nodes[conv.input[0]].input[1]]
        np.testing.assert_allclose(initializers[bias.input[1]], weight_scale * input_scale, rtol=1e-6)
        assert not any(n.op_type == "Add" and conv.output[0] in n.input for n in model.graph.node)


def test_int8_ops_mode_quantizes_only_the_outputs_of_ops_with_int8_weights(int8_dir, tmp_path):
    result = export_onnx(int8_dir, tmp_path / "m.onnx", observers="int8_ops")
    # conv2d -> bias add folded: the add's output; the fc's mul is not folded: its own output
    assert set(result.observers) == {"conv2d_0.tmp_1", "conv2d_1.tmp_1", "fc_0.tmp_0"}
    assert _onnx_quantized_tensors(result.path) == set(result.observers) | ACTIVATIONS
    unfolded = export_onnx(int8_dir, tmp_path / "u.onnx", observers="int8_ops", fold_conv=False)
    assert set(unfolded.observers) == {"conv2d_0.tmp_0", "conv2d_1.tmp_0", "fc_0.tmp_0"}
    assert export_onnx(int8_dir, tmp_path / "n.onnx", observers="none").observers == ()


def _relu_net():
    """conv (+bias) -> relu -> conv (+bias) -> flatten."""
    x = paddle.static.data("x", [None, 3, 8, 8], "float32")
    features = F.relu(paddle.static.nn.conv2d(x, 16, 3, padding=1))
    return [x], [paddle.flatten(paddle.static.nn.conv2d(features, 8, 3, padding=1), 1)]


def test_int8_ops_leaves_a_conv_output_to_the_relu_quantizer_onnxruntime_fuses(tmp_path, rng):
    from paddle_quant.export.onnx_requantize import default_weight_type

    model = save_built_model(tmp_path / "fp32", _relu_net)
    quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(model), str(tmp_path / "int8"),
                     data_loader=lambda: ({"x": rng.normal(0, 1, (8, 3, 8, 8)).astype("float32")} for _ in range(3)),
                     algo="abs_max", quantizable_op_type=["conv2d"], deploy_backend="onednn", onednn_cpu="vnni",
                     output_scales="int8_ops")  # oneDNN's u8 grid on the relu output: zero point 0 in the export
    result = export_onnx(tmp_path / "int8", tmp_path / "m.onnx", observers="int8_ops", activation_type="uint8",
                         weight_type=default_weight_type())
    assert len(result.observers) == 1  # the second conv's output; the first conv's is the relu quantizer's
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(result.path), options, providers=["CPUExecutionProvider"])
    ran = [node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert ran.count("QLinearConv") == 2 and not {"Conv", "FusedConv", "Relu"} & set(ran)
    images = rng.normal(0, 1, (16, 3, 8, 8)).astype("float32")
    expected = _paddle(tmp_path / "int8", images, active_observers=result.observers)
    assert np.abs(_ort(result.path, images) - expected).max() <= 1.001 * np.abs(expected).max() / 127.0


def test_named_observers_quantize_those_outputs_only(digits_model, int8_dir, tmp_path):
    result = export_onnx(int8_dir, tmp_path / "m.onnx", observers=["conv2d_1.tmp_1"], activation_type="uint8",
                         weight_type="uint8")
    assert result.observers == ("conv2d_1.tmp_1",)
    assert _onnx_quantized_tensors(result.path) == {"conv2d_1.tmp_1"} | ACTIVATIONS
    images = digits_model.test_images
    expected = _paddle(int8_dir, images, active_observers=result.observers)
    assert np.abs(_ort(result.path, images) - expected).max() <= 2.001 * _output_step(int8_dir, "fc_0.tmp_0")


@pytest.mark.parametrize("observers, match", [
    (["relu_9.tmp_0"], r"without an output-scale observer in the model: \['relu_9.tmp_0'\]"),
    (["conv2d_1.tmp_0"], r"observers \['conv2d_1.tmp_0'\] sit inside a folded conv chain"),
    ([3], "list/tuple/set of tensor names"),
])
def test_bad_observer_names_are_named(int8_dir, tmp_path, observers, match):
    with pytest.raises(ConfigError, match=match):
        export_onnx(int8_dir, tmp_path / "m.onnx", observers=observers)
    assert not (tmp_path / "m.onnx").exists()


# ---------------------------------------------------------------- batch_norm folding
def _conv_bn_model(folder, rng):
    """conv(no bias)-BN-relu-conv-BN saved as an inference model, BN stats random, some gammas negative."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        x = paddle.static.data("x", [None, 3, 8, 8], "float32")
        h = paddle.nn.Conv2D(3, 8, 3, padding=1, bias_attr=False)(x)
        h = paddle.nn.functional.relu(paddle.nn.BatchNorm2D(8)(h))
        out = paddle.nn.BatchNorm2D(4)(paddle.nn.Conv2D(8, 4, 3, stride=2, bias_attr=False)(h))
    test = main.clone(for_test=True)
    scope, exe = paddle.static.Scope(), paddle.static.Executor(paddle.CPUPlace())
    with paddle.static.scope_guard(scope):
        exe.run(startup)
        for op in test.global_block().ops:
            if op.type == "batch_norm":
                channels = test.global_block().var(op.input("Scale")[0]).shape[0]
                values = {"Scale": rng.uniform(0.5, 2, channels) * rng.choice([-1, 1], channels),
                          "Bias": rng.normal(0, 1, channels), "Mean": rng.normal(0, 0.5, channels),
                          "Variance": rng.uniform(0.2, 3, channels)}
                for slot, value in values.items():
                    scope.find_var(op.input(slot)[0]).get_tensor().set(value.astype("float32"), paddle.CPUPlace())
        paddle.static.save_inference_model(str(folder / "model"), [x], [out], exe, program=test)
    return folder


def test_batch_norm_folds_into_the_conv_exactly_in_fp32_and_within_steps_in_int8(tmp_path, rng):
    fp32_dir = _conv_bn_model(tmp_path / "fp32", rng)
    images = rng.normal(0, 1, (16, 3, 8, 8)).astype("float32")
    fp32 = export_float_onnx(fp32_dir, tmp_path / "fp32.onnx")
    assert not any(n.op_type == "BatchNormalization" for n in onnx.load(str(fp32.path)).graph.node)
    expected = _paddle(fp32_dir, images)
    np.testing.assert_allclose(_ort(fp32.path, images), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())

    quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(fp32_dir), str(tmp_path / "int8"),
                     data_loader=lambda: ({"x": rng.normal(0, 1, (8, 3, 8, 8)).astype("float32")} for _ in range(3)),
                     algo="abs_max")
    result = export_onnx(tmp_path / "int8", tmp_path / "int8.onnx")
    assert not any(n.op_type == "BatchNormalization" for n in onnx.load(str(result.path)).graph.node)
    got = _ort(result.path, images)
    expected = _paddle(tmp_path / "int8", images, active_observers=_onnx_quantized_tensors(result.path))
    step = np.abs(expected).max() / 127.0
    assert np.abs(got - expected).max() <= 2.001 * step


def _elementwise(op_type, x, y, name, shape):
    """Legacy ``op_type`` of ``x`` and ``y`` (PP-LCNetV3's learnable affine block writes ``a * x + b``)."""
    block = paddle.static.default_main_program().global_block()
    out = block.create_var(name=name, dtype="float32", shape=shape)
    block.append_op(type=op_type, inputs={"X": [x], "Y": [y]}, outputs={"Out": [out]}, attrs={"axis": -1})
    return out


def _learnable_affine_model(folder):
    """conv -> BN -> a * h + b -> hard_swish -> conv -> (* per-channel c), a, b scalar parameters of shape [1]
    (a negative: the fold flips the weight's sign)."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        x = paddle.static.data("x", [None, 3, 8, 8], "float32")
        h = paddle.nn.BatchNorm2D(8)(paddle.nn.Conv2D(3, 8, 3, padding=1)(x))
        constant = paddle.nn.initializer.Constant
        a = paddle.static.create_parameter([1], "float32", name="lab_a", default_initializer=constant(-1.5))
        b = paddle.static.create_parameter([1], "float32", name="lab_b", default_initializer=constant(0.7))
        c = paddle.static.create_parameter([4], "float32", name="chan_c",
                                           default_initializer=paddle.nn.initializer.Uniform(0.5, 2.0))
        h = _elementwise("elementwise_add", _elementwise("elementwise_mul", a, h, "scaled", h.shape), b, "shifted",
                         h.shape)
        h = paddle.nn.Conv2D(8, 4, 3, padding=1)(F.hardswish(h))
        block = paddle.static.default_main_program().global_block()
        out = block.create_var(name="out", dtype="float32", shape=h.shape)
        block.append_op(type="elementwise_mul", inputs={"X": [h], "Y": [c]}, outputs={"Out": [out]}, attrs={"axis": 1})
    test = main.clone(for_test=True)
    exe = paddle.static.Executor(paddle.CPUPlace())
    with paddle.static.scope_guard(paddle.static.Scope()):
        exe.run(startup)
        paddle.static.save_inference_model(str(folder / "model"), [x], [out], exe, program=test)
    return folder


def test_scalar_and_channel_affine_ops_fold_into_the_conv_so_onnxruntime_fuses_its_activation(tmp_path, rng):
    fp32_dir = _learnable_affine_model(tmp_path / "fp32")
    images = rng.normal(0, 1, (16, 3, 8, 8)).astype("float32")
    fp32 = export_float_onnx(fp32_dir, tmp_path / "fp32.onnx")
    assert [n.op_type for n in onnx.load(str(fp32.path)).graph.node] == ["Conv", "HardSwish", "Conv"]
    expected = _paddle(fp32_dir, images)
    np.testing.assert_allclose(_ort(fp32.path, images), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(fp32.path), options, providers=["CPUExecutionProvider"])
    ran = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert "HardSigmoid" not in ran and "HardSwish" not in ran  # fused into the first conv

    quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(fp32_dir), str(tmp_path / "int8"),
                     data_loader=lambda: ({"x": rng.normal(0, 1, (8, 3, 8, 8)).astype("float32")} for _ in range(3)),
                     algo="abs_max")  # no deploy_backend: the program keeps the affine ops
    result = export_onnx(tmp_path / "int8", tmp_path / "int8.onnx")
    assert not {"Mul", "Add", "BatchNormalization"} & {n.op_type for n in onnx.load(str(result.path)).graph.node}
    got = _ort(result.path, images)
    expected = _paddle(tmp_path / "int8", images, active_observers=_onnx_quantized_tensors(result.path))
    assert np.abs(got - expected).max() <= 2.001 * np.abs(expected).max() / 127.0


def _save_copy(model, folder):
    block = model.program.global_block()
    with paddle.static.scope_guard(model.scope):
        paddle.static.save_inference_model(
            str(folder / "model"), [block.var(n) for n in model.feed_names], [block.var(n) for n in model.fetch_names],
            paddle.static.Executor(paddle.CPUPlace()), program=model.program)
    return folder


def _set_tensor(model, name, update):
    tensor = model.scope.find_var(name).get_tensor()
    values = np.array(tensor)
    update(values)
    tensor.set(values, paddle.CPUPlace())


def test_an_all_zero_weight_channel_with_scale_0_exports_and_runs(digits_model, tmp_path):
    fp32 = load_quantized_model(digits_model.folder)
    _set_tensor(fp32, "conv2d_0.w_0", lambda w: w.__setitem__(3, 0.0))  # a pruned output channel
    _save_copy(fp32, tmp_path / "fp32")
    quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(tmp_path / "fp32"), str(tmp_path / "int8"),
                     data_loader=digits_model.calibration_batches(), algo="avg")
    int8 = load_quantized_model(tmp_path / "int8")
    assert not read_qdq_scales(int8.program, int8.scope)["conv2d_0.w_0"].int_values[3].any()
    # quant_post stores 1.0 for an all-zero channel; other producers store its abs max, 0
    _set_tensor(int8, "conv2d_0.w_0@scale", lambda s: s.__setitem__(3, 0.0))
    folder = _save_copy(int8, tmp_path / "zero_scale")
    images = digits_model.test_images[:128]
    for fold in (False, True):
        result = export_onnx(folder, tmp_path / f"m{fold}.onnx", fold_conv=fold)
        got, expected = _ort(result.path, images), _paddle(folder, images)
        assert np.abs(got - expected).max() <= 1.001 * _output_step(folder, "fc_0.tmp_0")


# ---------------------------------------------------------------- errors and outputs
def test_a_model_without_quant_ops_is_refused(digits_model, tmp_path):
    with pytest.raises(ProgramStateError, match="no quantize_linear/dequantize_linear"):
        export_onnx(digits_model.folder, tmp_path / "m.onnx")


def test_missing_model_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="nope"):
        export_onnx(tmp_path / "nope", tmp_path / "m.onnx")


def test_the_output_may_not_be_an_input_file(int8_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(int8_dir, copy)
    before = (copy / "model.pdmodel").read_bytes()
    with pytest.raises(ConfigError, match="input model file"):
        export_onnx(copy, copy / "model.pdmodel")
    assert (copy / "model.pdmodel").read_bytes() == before


@pytest.mark.parametrize("kwargs, match", [({"observers": "keep"}, "observers must be one of"),
                                           ({"opset": 13}, "opset must be an int >= 17")])
def test_bad_arguments_name_the_argument(int8_dir, tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        export_onnx(int8_dir, tmp_path / "m.onnx", **kwargs)


def test_sub_8_bit_activations_are_named(digits_model, tmp_path):
    quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(digits_model.folder), str(tmp_path / "q"),
                     data_loader=digits_model.calibration_batches(), algo="abs_max", activation_bits=6)
    with pytest.raises(ProgramStateError, match=r"'image' \(activation\): bits=6"):
        export_onnx(tmp_path / "q", tmp_path / "m.onnx")


@pytest.mark.filterwarnings("ignore:no variable in your model")
def test_an_op_without_converter_is_named(tmp_path):
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        x = paddle.static.data("x", [None, 4], "float32")
        out = paddle.cumsum(x, axis=1)
    exe = paddle.static.Executor(paddle.CPUPlace())
    exe.run(startup)
    paddle.static.save_inference_model(str(tmp_path / "m" / "model"), [x], [out], exe, program=main)
    with pytest.raises(ProgramStateError, match=r"no converter for op types \['cumsum'\]"):
        export_float_onnx(tmp_path / "m", tmp_path / "m.onnx")


def test_missing_onnx_names_the_extra(int8_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` raise ImportError
    with pytest.raises(MissingDependencyError, match=r"paddle_quant\[onnx\]"):
        export_onnx(int8_dir, tmp_path / "m.onnx")
    assert isinstance(MissingDependencyError("x"), ImportError)
    assert not (tmp_path / "m.onnx").exists()


def test_output_is_replaced_atomically_and_no_temporary_file_stays(int8_dir, tmp_path):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")
    export_onnx(int8_dir, target)
    first = target.read_bytes()
    assert first != b"old" and onnx.load_from_string(first).graph.node
    with pytest.raises(ConfigError):
        export_onnx(int8_dir, target, observers="bad")
    assert target.read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


# ---------------------------------------------------------------- the real PP-OCR classifier
@pytest.mark.slow
def test_ppocr_cls_int8_in_onnxruntime_agrees_with_paddle_int8(tmp_path, ppocr_models):
    import ppocr  # demos/ppocr.py (conftest puts demos/ on the path)
    models = ppocr_models
    feeds = list(ppocr.calibration_feeds("cls", 2, 8, 0))
    quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(models["cls"]), str(tmp_path / "cls"),
                     data_loader=lambda: iter(feeds), algo="hist",
                     quantizable_op_type=["conv2d", "depthwise_conv2d"], output_scales="all")
    images, labels = ppocr.cls_dataset(64, 0)
    batch = ppocr.cls_batch(images)
    exact = export_onnx(tmp_path / "cls", tmp_path / "exact.onnx", observers="none", fold_conv=False)
    assert len(exact.weights) == 53 and len(exact.activations) == 53
    # probabilities; measured 0.048 on 200 lines (rounding ties decided differently upstream)
    assert np.abs(_ort(exact.path, batch) - _paddle(tmp_path / "cls", batch)).max() <= 0.1

    deployed = export_onnx(tmp_path / "cls", tmp_path / "cls.onnx")  # defaults: folded, observers="none"
    got = _ort(deployed.path, batch)
    expected = _paddle(tmp_path / "cls", batch, active_observers=_onnx_quantized_tensors(deployed.path))
    assert np.mean(got.argmax(1) == expected.argmax(1)) >= 0.95
    onnx_acc = ppocr.cls_accuracy(got, labels)
    paddle_acc = ppocr.evaluate_cls(tmp_path / "cls", images, labels, int8=True)["accuracy"]
    # bench/onnx_ppocr.py measures the 0.5-point acceptance on 1000 lines; 64 lines allow 3 images of noise
    assert abs(onnx_acc - paddle_acc) <= 3 * 100.0 / 64 + 1e-9, (onnx_acc, paddle_acc)


# ---------------------------------------------------------------- storage types (uint8 = the same grid + 128)
@pytest.mark.parametrize("observers, fold", [("all", False), ("int8_ops", True)])
def test_uint8_storage_quantizes_like_the_executor_on_any_x86_cpu(digits_model, int8_dir, tmp_path, observers, fold):
    """uint8 activations and weights (zero point 128): onnxruntime's fused int8 ops (u8u8 kernels, exact without
    VNNI) compute what the Executor computes with the same quantizers."""
    result = export_onnx(int8_dir, tmp_path / "m.onnx", observers=observers, fold_conv=fold,
                         activation_type="uint8", weight_type="uint8")
    quantized = _onnx_quantized_tensors(result.path)
    images = digits_model.test_images
    got = _ort(result.path, images)
    expected = _paddle(int8_dir, images, active_observers=quantized)
    # fold: the int32 bias at x_scale * w_scale instead of a float add moves a few rounding ties
    assert np.abs(got - expected).max() <= (2.001 if fold else 1.001) * _output_step(int8_dir, "fc_0.tmp_0")
    assert np.mean(got.argmax(1) == expected.argmax(1)) >= 0.99
    assert _fused_op_counts(result.path, tmp_path).get("QLinearConv", 0) >= 1


def _fused_op_counts(path, tmp_path):
    """Op types of onnxruntime's optimized graph (what it really runs), counted."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    counts = {}
    for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def test_uint8_storage_holds_the_int8_values_plus_128(int8_dir, tmp_path):
    signed = _initializers(onnx.load(str(export_onnx(int8_dir, tmp_path / "s.onnx", observers="all",
                                                     fold_conv=False).path)))
    shifted_model = onnx.load(str(export_onnx(int8_dir, tmp_path / "u.onnx", observers="all", fold_conv=False,
                                              activation_type="uint8", weight_type="uint8").path))
    shifted = _initializers(shifted_model)
    for name in (f"{weight}@int8" for weight in WEIGHTS):
        assert shifted[name].dtype == np.uint8 and signed[name].dtype == np.int8
        assert np.array_equal(shifted[name].astype(np.int16) - 128, signed[name])
    zero_points = [shifted[node.input[2]] for node in shifted_model.graph.node
                   if node.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert zero_points and all(z.dtype == np.uint8 and np.all(z == 128) for z in zero_points)


@pytest.mark.parametrize("field", ["activation_type", "weight_type"])
def test_a_bad_storage_type_is_named(int8_dir, tmp_path, field):
    with pytest.raises(ConfigError, match=f"{field} must be one of \\['int8', 'uint8'\\], got 'int4'"):
        export_onnx(int8_dir, tmp_path / "m.onnx", **{field: "int4"})


# ---------------------------------------------------------------- per-tensor scales are rank 0 (QLinearMul fusion)
def _gated_model(folder):
    """conv(x) * hardsigmoid(conv(x)) -> 1x1 conv: a squeeze-and-excite style multiply of two quantized tensors."""
    def build():
        x = paddle.static.data("x", [None, 3, 8, 8], "float32")
        features = paddle.static.nn.conv2d(x, 4, 3, padding=1)
        gate = F.hardsigmoid(paddle.static.nn.conv2d(x, 4, 1))
        return [x], [paddle.static.nn.conv2d(features * gate, 2, 1)]
    return save_built_model(folder, build)


def test_per_tensor_scales_are_rank_0_so_onnxruntime_fuses_a_quantized_multiply(tmp_path, rng):
    """onnxruntime fuses DequantizeLinear x2 -> Mul -> QuantizeLinear into QLinearMul only when the per-tensor
    scale and zero point are scalars (rank 0); a 1-element vector leaves the float Mul."""
    batches = [{"x": rng.standard_normal((4, 3, 8, 8)).astype("float32")} for _ in range(2)]
    with _static():
        _gated_model(tmp_path / "fp32")
        quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(tmp_path / "fp32"), str(tmp_path / "int8"),
                         data_loader=lambda: iter(batches), algo="abs_max", output_scales="all",
                         quantizable_op_type=["conv2d", "elementwise_mul"])
        result = export_onnx(tmp_path / "int8", tmp_path / "m.onnx", observers="all",
                             activation_type="uint8", weight_type="uint8")
        model = onnx.load(str(result.path))
        values = _initializers(model)
        per_tensor = [node for node in model.graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")
                      and not any(attr.name == "axis" for attr in node.attribute)]
        assert per_tensor and all(values[name].ndim == 0 for node in per_tensor for name in node.input[1:])
        assert _fused_op_counts(result.path, tmp_path).get("QLinearMul", 0) == 1
        images = batches[0]["x"]
        got, expected = _ort(result.path, images), _paddle(tmp_path / "int8", images,
                                                           _onnx_quantized_tensors(result.path))
    # a rounding tie of the product moves the last 1x1 conv's output by one product step times a weight
    model = load_quantized_model(tmp_path / "int8")
    scales = read_qdq_scales(model.program, model.scope)
    ops = model.program.global_block().ops
    product = next(op.output("Out")[0] for op in ops if op.type == "elementwise_mul")
    bound = float(scales[product].scale[0]) / 127.0 * 4 * float(scales["conv2d_2.w_0"].scale.max())
    assert np.abs(got - expected).max() <= bound


def test_every_conv_names_its_kernel_shape_as_paddle2onnx_does(digits_model, int8_dir, tmp_path):
    """kernel_shape is optional in ONNX; written as paddle2onnx writes it, folded and unfolded, fp32 and int8."""
    exports = [export_float_onnx(digits_model.folder, tmp_path / "f.onnx"),
               export_onnx(int8_dir, tmp_path / "q.onnx", observers="int8_ops"),
               export_onnx(int8_dir, tmp_path / "u.onnx", fold_conv=False)]
    for result in exports:
        convs = [node for node in onnx.load(str(result.path)).graph.node if node.op_type == "Conv"]
        assert convs and all([attr.ints for attr in node.attribute if attr.name == "kernel_shape"] == [[3, 3]]
                             for node in convs)
