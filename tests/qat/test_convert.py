"""convert: frozen programs compute what the eval program computed, and real runtimes load them."""

import os

import numpy as np
import paddle
import pytest

import paddle_quant as quant
from paddle_quant.common import naming
from paddle_quant.common.numerics import qmax

from support.inference import predict, predictor, save_model
from support.nets import conv_net, run

PLACE = paddle.CPUPlace()


def _trained(rng, config, steps=20, **net_kwargs):
    net = conv_net(minimize=True, **net_kwargs)
    train = quant.quant_aware(net.main, PLACE, config, scope=net.scope)
    test = quant.quant_aware(net.test, PLACE, config, scope=net.scope, for_test=True)
    for _ in range(steps):
        run(net, train, net.feed(rng, 32), [net.loss])
    return net, test


def _output_step(net, bits=8):
    return float(np.array(net.scope.find_var(naming.scale(net.logits)).get_tensor())[0]) / qmax(bits)


CONFIGS = [
    {},
    {"onnx_format": False},
    {"weight_quantize_type": "abs_max", "activation_quantize_type": "range_abs_max"},
    {"onnx_format": False, "weight_quantize_type": "abs_max", "activation_quantize_type": "abs_max"},
    {"weight_quantize_type": "moving_average_abs_max", "weight_bits": 4, "activation_bits": 6},
    {"onnx_format": False, "weight_bits": 5, "quantize_op_types": ["conv2d", "mul", "relu", "pool2d"]},
    {"weight_quantize_type": "range_abs_max", "activation_quantize_type": "abs_max"},
    {"onnx_format": False, "weight_quantize_type": "range_abs_max"},
]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_frozen_program_matches_eval_program(rng, config):
    net, test = _trained(rng, config, skip_second_conv=True)
    frozen = quant.convert(test, PLACE, config, scope=net.scope)
    feed = net.feed(rng, 16)
    expected, = run(net, test, feed, [net.logits])
    got, = run(net, frozen, feed, [net.logits])
    np.testing.assert_allclose(got, expected, atol=0.01 * _output_step(net), rtol=0)


def test_qdq_weights_are_int8_with_channel_scales_of_shape_c(rng):
    net, test = _trained(rng, {}, steps=2)
    frozen = quant.convert(test, PLACE, None, scope=net.scope)
    block = frozen.global_block()
    dequant = [op for op in block.ops if op.type == "dequantize_linear" and op.input("X")[0] == "conv2d_0.w_0@int8"]
    assert len(dequant) == 1 and not any(op.type == "quantize_linear" and op.input("X")[0] == "conv2d_0.w_0"
                                         for op in block.ops)
    assert np.array(net.scope.find_var("conv2d_0.w_0@int8").get_tensor()).dtype == np.int8
    assert block.var("conv2d_0.w_0@int8").dtype == paddle.int8
    assert np.array(net.scope.find_var("conv2d_0.w_0@scale").get_tensor()).shape == (4,)


def test_convert_leaves_float_weights_and_eval_program_usable(rng):
    net, test = _trained(rng, {}, steps=2)
    before = np.array(net.scope.find_var("conv2d_0.w_0").get_tensor())
    feed = net.feed(rng)
    expected, = run(net, test, feed, [net.logits])
    quant.convert(test, PLACE, None, scope=net.scope)
    np.testing.assert_array_equal(np.array(net.scope.find_var("conv2d_0.w_0").get_tensor()), before)
    np.testing.assert_array_equal(run(net, test, feed, [net.logits])[0], expected)


def test_no_tensor_gets_two_qdq_pairs(rng):
    net, test = _trained(rng, {"quantize_op_types": ["conv2d", "mul", "relu"]}, steps=2)
    frozen = quant.convert(test, PLACE, {"quantize_op_types": ["conv2d", "mul", "relu"]}, scope=net.scope)
    quantized = [op.input("X")[0] for op in frozen.global_block().ops if op.type == "quantize_linear"]
    assert len(quantized) == len(set(quantized))
    assert not any(op.type == "moving_average_abs_max_scale" for op in frozen.global_block().ops)


def test_observers_become_only_observer_pairs_carrying_trained_scales(rng):
    net, test = _trained(rng, {}, steps=3)
    frozen = quant.convert(test, PLACE, None, scope=net.scope)
    pairs = [op for op in frozen.global_block().ops if op.type == "quantize_linear" and op.attr("only_observer")]
    observed = {op.input("X")[0] for op in pairs}
    assert {"conv2d_0.tmp_0", "fc_0.tmp_0", net.logits} <= observed
    assert float(np.array(net.scope.find_var(naming.scale(net.logits)).get_tensor())[0]) != 1.0


def test_old_format_writes_thresholds_and_post_dequantizers(rng):
    config = {"onnx_format": False}
    net, test = _trained(rng, config, steps=3)
    frozen = quant.convert(test, PLACE, config, scope=net.scope)
    ops = frozen.global_block().ops
    types = [op.type for op in ops]
    assert types.count("fake_channel_wise_dequantize_max_abs") == 3
    conv = next(op for op in ops if op.type == "conv2d")
    assert conv.input("Filter") == ["conv2d_0.w_0@frozen"] and conv.input("Input") == ["x.quantized"]
    threshold = float(np.array(net.scope.find_var("conv2d_0.tmp_0@scale").get_tensor())[0])
    assert conv.attr("out_threshold") == pytest.approx(threshold) and conv.attr("Output0_threshold") == pytest.approx(threshold)
    frozen_w = np.array(net.scope.find_var("conv2d_0.w_0@frozen").get_tensor())
    np.testing.assert_array_equal(frozen_w, np.round(frozen_w))


@pytest.mark.parametrize("onnx_format", [True, False])
def test_save_int8_program_runs_and_matches(rng, tmp_path, onnx_format):
    config = {"onnx_format": onnx_format}
    net, test = _trained(rng, config, steps=3)
    frozen, int8_program = quant.convert(test, PLACE, config, scope=net.scope, save_int8=True)
    feed = net.feed(rng)
    np.testing.assert_allclose(run(net, int8_program, feed, [net.logits])[0], run(net, frozen, feed, [net.logits])[0],
                               atol=1e-5)
    sizes = {name: os.path.getsize(save_model(net, program, tmp_path / name, ["x"], [net.logits])[1])
             for name, program in (("fp32", net.test), ("frozen", frozen), ("int8", int8_program))}
    # measured (bytes): QDQ fp32 6663, frozen 3011, int8 3011; old format fp32 6663, frozen 6907, int8 2095
    assert sizes["int8"] < 0.5 * sizes["fp32"], sizes
    if onnx_format:  # the QDQ frozen program already stores its weights as int8
        assert sizes["int8"] == sizes["frozen"], sizes
    else:  # the old format's frozen program keeps float weights on the integer grid
        assert sizes["int8"] < 0.5 * sizes["frozen"], sizes


@pytest.mark.vnni
@pytest.mark.parametrize("config", [{}, {"quantize_op_types": ["conv2d", "mul", "pool2d", "elementwise_add", "relu"]}],
                         ids=["default", "with-activation-ops"])
def test_paddle_inference_onednn_int8_agrees_with_eval_program(rng, tmp_path, config):
    net, test = _trained(rng, config, steps=30)
    frozen = quant.convert(test, PLACE, config, scope=net.scope)
    model, params = save_model(net, frozen, tmp_path / "qat", ["x"], [net.logits])
    feed = {"x": net.feed(rng, 64)["x"]}
    expected, = run(net, test, feed | {"y": np.zeros((64, 1), "int64")}, [net.logits])
    got, = predict(predictor(model, params, int8=True), feed)
    deviation = np.abs(got - expected) / _output_step(net)
    # oneDNN really requantizes the conv/fc outputs (the only_observer pairs), which the
    # simulation leaves in float: measured 4.4 / 8.3 output steps at most, 0.7 / 1.5 on average.
    assert deviation.max() <= 10, deviation.max()
    assert deviation.mean() <= 2, deviation.mean()
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.9


def test_convert_on_untouched_program_is_refused():
    net = conv_net(minimize=False)
    with pytest.raises(quant.ProgramStateError, match="quant_aware\\(..., for_test=True\\)"):
        quant.convert(net.test, PLACE, None, scope=net.scope)


def test_convert_on_training_program_is_refused():
    net = conv_net(minimize=True)
    train = quant.quant_aware(net.main, PLACE, None, scope=net.scope, return_program=True)
    with pytest.raises(quant.ProgramStateError, match="training program"):
        quant.convert(train, PLACE, None, scope=net.scope)


def test_convert_with_the_other_format_is_refused(rng):
    net, test = _trained(rng, {}, steps=1)
    with pytest.raises(quant.ProgramStateError, match="onnx_format"):
        quant.convert(test, PLACE, {"onnx_format": False}, scope=net.scope)


def test_qdq_convert_refuses_weights_wider_than_int8(rng):
    net, test = _trained(rng, {"weight_bits": 12}, steps=1)
    with pytest.raises(quant.ProgramStateError, match="12 bits.*int16 dequantize_linear"):
        quant.convert(test, PLACE, {"weight_bits": 12}, scope=net.scope)
    frozen = quant.convert(quant.quant_aware(net.test, PLACE, {"weight_bits": 12, "onnx_format": False},
                                             scope=net.scope, for_test=True),
                           PLACE, {"weight_bits": 12, "onnx_format": False}, scope=net.scope)
    assert any(op.type == "fake_channel_wise_dequantize_max_abs" for op in frozen.global_block().ops)
