"""export_onnx(round_float_readers=...): float readers of a runtime-quantized tensor read its rounded copy.

Oracles: onnxruntime's optimized graph (which ops it fuses into int8 kernels) and the Paddle Executor with the same
readers pointed at the rounded copy (paddle_quant.passes.rounded_readers), through ``verify``; tolerances in steps
of the output's scale.
"""

from __future__ import annotations


import numpy as np
import paddle
import pytest

import paddle_quant as quant
from paddle_quant.common.errors import ConfigError
from paddle_quant.export.qdq_scales import load_quantized_model
from paddle_quant.passes.rounded_readers import float_read_quantized_tensors, round_float_readers

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from paddle_quant.export.onnx import export_onnx  # noqa: E402
from paddle_quant.export.onnx_requantize import default_weight_type  # noqa: E402

from support.inference import legacy_static as _static, save_built_model  # noqa: E402


def _residual_net():
    """a = conv(x); out = conv(a + conv(a)): ``a`` feeds a quantized conv and, in float, the residual add
    (MobileNetV3's residual block)."""
    x = paddle.static.data("x", [None, 4, 8, 8], "float32")
    block_input = paddle.static.nn.conv2d(x, 8, 3, padding=1)
    branch = paddle.static.nn.conv2d(block_input, 8, 1)
    return [x], [paddle.flatten(paddle.static.nn.conv2d(block_input + branch, 4, 1), 1)]


@pytest.fixture(scope="module")
def residual_int8(tmp_path_factory):
    """The residual net after quant_post (abs_max, conv2d and elementwise_add quantized, int8_ops observers)."""
    folder = tmp_path_factory.mktemp("rounded_readers")
    rng = np.random.default_rng(3)
    batches = [{"x": rng.standard_normal((8, 4, 8, 8)).astype("float32")} for _ in range(3)]
    with _static():
        save_built_model(folder / "fp32", _residual_net, seed=1)  # order-independent weights (some draws put
        # a rounding tie of the block input one step apart in the two runtimes: 1.08-1.15 output steps)
        quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(folder / "fp32"), str(folder / "int8"),
                         data_loader=lambda: iter(batches), algo="abs_max", output_scales="int8_ops",
                         quantizable_op_type=["conv2d"])
    return folder / "int8"


def _block_input(model_dir):
    """The first conv's output (after its bias add): the residual add's first operand."""
    block = load_quantized_model(model_dir).program.global_block()
    return next(op.input("X")[0] for op in block.ops if op.type == "elementwise_add"
                and not any(block.var(name).persistable for name in op.input_arg_names))


def _ran(path, tmp_path):
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]


def test_the_pass_finds_the_tensor_a_quantizer_and_a_float_op_read_and_points_the_float_op_at_its_rounded_copy(
        residual_int8):
    with _static():
        program = load_quantized_model(residual_int8).program
        block = program.global_block()
        tensor = _block_input(residual_int8)
        assert float_read_quantized_tensors(block) == {tensor: f"{tensor}.quantized.dequantized"}
        assert round_float_readers(program, ["no_such_tensor"]) == []
        assert round_float_readers(program) == [tensor]
        add = next(op for op in block.ops if op.type == "elementwise_add" and tensor + ".quantized.dequantized"
                   in op.input_arg_names)
        assert tensor not in add.input_arg_names
        assert float_read_quantized_tensors(block) == {}  # idempotent: nothing left to point


def test_onnxruntime_fuses_the_block_input_conv_and_the_residual_add_only_with_rounded_readers(residual_int8,
                                                                                               tmp_path):
    storage = {"observers": "int8_ops", "activation_type": "uint8", "weight_type": default_weight_type()}
    plain = export_onnx(residual_int8, tmp_path / "plain.onnx", **storage)
    rounded = export_onnx(residual_int8, tmp_path / "rounded.onnx", round_float_readers=True, **storage)
    assert plain.rounded_readers == () and rounded.rounded_readers == (_block_input(residual_int8),)
    before, after = _ran(plain.path, tmp_path), _ran(rounded.path, tmp_path)
    assert "Conv" in before and "Add" in before  # the block input's conv and the add stay float
    assert after.count("QLinearConv") == 3 and after.count("QLinearAdd") == 1
    assert not {"Conv", "FusedConv", "Add"} & set(after)


@pytest.mark.parametrize("rounded", [True, False])
def test_verify_rounds_the_readers_the_file_rounds_and_no_others(residual_int8, tmp_path, rounded):
    result = export_onnx(residual_int8, tmp_path / "m.onnx", observers="int8_ops", activation_type="uint8",
                         weight_type=default_weight_type(), round_float_readers=rounded)
    rng = np.random.default_rng(11)
    batches = [{"x": rng.standard_normal((8, 4, 8, 8)).astype("float32")} for _ in range(4)]
    report = quant.verify(residual_int8, "onnxruntime", batches, runtime_model=str(result.path))
    assert report.outputs[0].max_steps <= 1.0  # 3.0 steps (0.3 mean) when the simulation rounds otherwise


@pytest.mark.parametrize("value, match", [
    ("yes", "round_float_readers must be True, False or a list/tuple/set of tensor names"),
    (["x"], r"round_float_readers names tensors that are not both quantized at run time and read in float: \['x'\]"),
])
def test_bad_round_float_readers_are_named(residual_int8, tmp_path, value, match):
    with pytest.raises(ConfigError, match=match):
        export_onnx(residual_int8, tmp_path / "m.onnx", round_float_readers=value)
    assert not (tmp_path / "m.onnx").exists()


def _pool_and_mean_net():
    """conv -> hard_swish -> (global average pool -> 1x1 conv) and a float mean of the same activation."""
    x = paddle.static.data("x", [None, 3, 9, 9], "float32")
    features = paddle.nn.functional.hardswish(paddle.static.nn.conv2d(x, 8, 3, padding=1))
    pooled = paddle.nn.functional.adaptive_avg_pool2d(features, 1)
    return [x], [paddle.flatten(paddle.static.nn.conv2d(pooled, 4, 1), 1), paddle.mean(features, axis=[2, 3])]


def test_a_pool_input_pair_at_the_pooled_scale_is_not_the_tensors_rounded_copy(tmp_path):
    """oneDNN's pool input pair (pool_inputs.py) rounds at the pooled tensor's scale; pointing the float mean at
    it would clip the activation at the pooled average's range."""
    rng = np.random.default_rng(5)
    batches = [{"x": rng.standard_normal((4, 3, 9, 9)).astype("float32")} for _ in range(3)]
    with _static():
        save_built_model(tmp_path / "fp32", _pool_and_mean_net)
        quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(tmp_path / "fp32"), str(tmp_path / "int8"),
                         data_loader=lambda: iter(batches), algo="abs_max", quantizable_op_type=["conv2d"],
                         skip_tensor_list=["x"], deploy_backend="onednn")
        block = load_quantized_model(tmp_path / "int8").program.global_block()
        pair = next(op for op in block.ops if op.type == "quantize_linear" and "@pool_input" in op.output("Y")[0])
        activation = pair.input("X")[0]
        assert any(op.type == "reduce_mean" for op in block.ops if activation in op.input_arg_names)
        assert activation not in float_read_quantized_tensors(block)
