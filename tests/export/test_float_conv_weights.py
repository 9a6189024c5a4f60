"""export_onnx(float_conv_weights=True): the convs onnxruntime runs in float read float32 weights.

Oracles: the ONNX file itself (which conv reads which initializer), onnxruntime with every graph optimization off
(the two files must compute the same bits) and onnxruntime's optimized graph (the float conv moves to its NCHWc
kernels and no weight is dequantized at run time; the requantized conv stays a QLinearConv).
"""

from __future__ import annotations

import numpy as np
import paddle
import pytest

import paddle_quant as quant
from paddle_quant.common.errors import ConfigError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from paddle_quant.export.onnx import export_onnx  # noqa: E402
from paddle_quant.export.onnx_requantize import default_weight_type  # noqa: E402

from support.inference import legacy_static as _static, save_built_model  # noqa: E402


def _three_convs():
    """x -> conv 3x3 -> relu -> conv 1x1 -> conv 1x1: 16 and 32 channels, so onnxruntime's NCHWc kernels take them."""
    x = paddle.static.data("x", [None, 16, 8, 8], "float32")
    first = paddle.nn.functional.relu(paddle.static.nn.conv2d(x, 32, 3, padding=1))
    second = paddle.static.nn.conv2d(first, 32, 1)
    return [x], [paddle.flatten(paddle.static.nn.conv2d(second, 16, 1), 1)]


def _batches(seed, count):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((8, 16, 8, 8)).astype("float32")} for _ in range(count)]


@pytest.fixture(scope="module")
def three_convs_int8(tmp_path_factory):
    """The net after quant_post (abs_max, conv2d quantized, observers on the int8 ops' outputs)."""
    folder = tmp_path_factory.mktemp("float_conv_weights")
    batches = _batches(3, 3)
    with _static():
        save_built_model(folder / "fp32", _three_convs, seed=1)
        quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(folder / "fp32"), str(folder / "int8"),
                         data_loader=lambda: iter(batches), algo="abs_max", output_scales="int8_ops",
                         quantizable_op_type=["conv2d"])
    return folder / "int8"


SECOND = "conv2d_1.tmp_1"
"""The second conv's output: the third conv's input quantizer requantizes it, so onnxruntime runs a QLinearConv."""


def _export(model_dir, path, **options):
    """The export with no observer requantized: the second conv fused (its output is the third conv's quantized
    input); the first and the third run in float, but the first one's output reaches a quantizer through its relu,
    so onnxruntime would quantize a float weight of it per tensor at a scale of its own."""
    return export_onnx(model_dir, path, observers=[], activation_type="uint8", weight_type=default_weight_type(),
                       **options)


def _conv_weights(path):
    """{conv output: 'float' or 'dequantized'} (what the conv's weight input is) of the ONNX file."""
    model = onnx.load(str(path))
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    writers = {name: node for node in model.graph.node for name in node.output}
    kinds = {}
    for node in model.graph.node:
        if node.op_type == "Conv":
            weight = node.input[1]
            if weight in initializers:
                assert initializers[weight].data_type == onnx.TensorProto.FLOAT
                kinds[node.output[0]] = "float"
            else:
                assert writers[weight].op_type == "DequantizeLinear"
                kinds[node.output[0]] = "dequantized"
    return kinds


def _session(path, optimized_to=None):
    options = ort.SessionOptions()
    if optimized_to is None:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    else:
        options.optimized_model_filepath = str(optimized_to)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_the_conv_run_in_float_reads_float32_weights_and_the_graph_computes_the_same_bits(three_convs_int8,
                                                                                        tmp_path):
    plain = _export(three_convs_int8, tmp_path / "plain.onnx")
    floats = _export(three_convs_int8, tmp_path / "float.onnx", float_conv_weights=True)
    assert plain.float_conv_weights == ()
    kinds = _conv_weights(floats.path)
    # the first conv stays int8: its output leads to the relu's quantizer (with a float weight there, verify
    # reads 3.06 steps: onnxruntime re-quantizes it per tensor)
    assert kinds == {"conv2d_0.tmp_1": "dequantized", SECOND: "dequantized", "conv2d_2.tmp_1": "float"}
    assert floats.float_conv_weights == ("conv2d_2.tmp_1",)
    assert set(_conv_weights(plain.path).values()) == {"dequantized"}
    for batch in _batches(5, 2):
        before = _session(plain.path).run(None, batch)[0]
        after = _session(floats.path).run(None, batch)[0]
        assert np.array_equal(before, after)


def test_onnxruntime_runs_the_float_conv_on_its_nchwc_kernels_without_dequantizing_its_weight(three_convs_int8,
                                                                                             tmp_path):
    def ran(path):
        _session(path, optimized_to=tmp_path / "optimized.onnx")
        graph = onnx.load(str(tmp_path / "optimized.onnx")).graph
        initializers = {tensor.name for tensor in graph.initializer}
        weight_dequantizes = sum(node.op_type == "DequantizeLinear" and node.input[0] in initializers
                                 and len(next(t for t in graph.initializer if t.name == node.input[0]).dims) == 4
                                 for node in graph.node)
        return [(node.op_type, node.domain) for node in graph.node], weight_dequantizes

    plain_ops, plain_dequantizes = ran(_export(three_convs_int8, tmp_path / "plain.onnx").path)
    float_ops, float_dequantizes = ran(_export(three_convs_int8, tmp_path / "f.onnx", float_conv_weights=True).path)
    assert plain_dequantizes == 2 and float_dequantizes == 1  # the first conv's, every run
    assert ("Conv", "com.microsoft.nchwc") not in plain_ops
    assert float_ops.count(("Conv", "com.microsoft.nchwc")) == 1
    assert [op for op, _ in plain_ops].count("QLinearConv") == [op for op, _ in float_ops].count("QLinearConv") == 1


def test_verify_still_holds_the_export_to_the_simulation(three_convs_int8, tmp_path):
    result = _export(three_convs_int8, tmp_path / "m.onnx", float_conv_weights=True)
    report = quant.verify(three_convs_int8, "onnxruntime", _batches(11, 3), runtime_model=str(result.path))
    assert report.outputs[0].max_steps <= 1.0


def test_a_bad_float_conv_weights_is_named_and_nothing_is_written(three_convs_int8, tmp_path):
    with pytest.raises(ConfigError, match="float_conv_weights must be True or False, got 'yes'"):
        export_onnx(three_convs_int8, tmp_path / "m.onnx", float_conv_weights="yes")
    assert not (tmp_path / "m.onnx").exists()
