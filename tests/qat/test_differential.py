"""Differential tests against Paddle's own quant_aware/convert (PaddleSlim 2.6's code, shipped in Paddle).

Where Paddle is right our programs must insert the same quantizer op types on
the same inputs, and our frozen models must compute the same outputs.
"""

import numpy as np
import paddle
import pytest
from paddle.static.quantization import quanter as reference

import paddle_quant as quant
from paddle_quant.common import naming
from paddle_quant.common.numerics import qmax

from support.nets import conv_net, run

PLACE = paddle.CPUPlace()
QUANT_OPS = {
    "quantize_linear", "dequantize_linear", "fake_quantize_abs_max", "fake_channel_wise_quantize_abs_max",
    "fake_quantize_range_abs_max", "fake_quantize_moving_average_abs_max", "fake_dequantize_max_abs",
    "fake_channel_wise_dequantize_max_abs", "fake_quantize_dequantize_moving_average_abs_max",
}


def _chain(producers, name):
    chain = []
    while name in producers and producers[name].type in QUANT_OPS:
        op = producers[name]
        chain.append(op.type)
        name = op.input("X")[0]
    return tuple(reversed(chain)), name


def _signature(program):
    """{(op type, first output): {slot: (quantizer op chain, source tensor)}} for every non-quant op."""
    ops = program.global_block().ops
    producers = {out: op for op in ops for out in op.output_arg_names}
    signature = {}
    for op in ops:
        if op.type in QUANT_OPS or op.type == "moving_average_abs_max_scale":
            continue
        slots = {slot: _chain(producers, op.input(slot)[0]) for slot in op.input_names if op.input(slot)}
        signature[(op.type, op.output_arg_names[0])] = {k: v for k, v in slots.items() if v[0]}
    return signature


SAME_OPS = [
    {},
    {"weight_quantize_type": "abs_max"},
    {"activation_quantize_type": "range_abs_max", "weight_quantize_type": "abs_max"},
    {"quantize_op_types": ["conv2d", "mul", "relu", "pool2d", "elementwise_add"]},
    {"onnx_format": False},
    {"onnx_format": False, "weight_quantize_type": "abs_max", "activation_quantize_type": "abs_max"},
    {"onnx_format": False, "activation_quantize_type": "range_abs_max"},
]


@pytest.mark.parametrize("config", SAME_OPS, ids=str)
def test_eval_program_has_paddles_quantizers_on_the_same_inputs(config):
    ours_net = conv_net(minimize=False, skip_second_conv=True)
    ours = quant.quant_aware(ours_net.test, PLACE, config, scope=ours_net.scope, for_test=True)
    ref_net = conv_net(minimize=False, skip_second_conv=True)
    with paddle.static.scope_guard(ref_net.scope):
        theirs = reference.quant_aware(ref_net.test, PLACE, dict(config), scope=ref_net.scope, for_test=True)
    assert _signature(ours) == _signature(theirs)


def _calibrate_activation_scales(net, program, feed):
    """Set every activation ``@scale`` of ``program`` to the abs max seen on ``feed`` (fp32 run)."""
    block = program.global_block()
    names = [v.name[: -len("@scale")] for v in block.vars.values() if v.name.endswith("@scale")]
    acts = [n for n in names if block.has_var(n) and not block.var(n).persistable]
    values = run(net, net.test, feed, acts)
    for name, value in zip(acts, values):
        net.scope.find_var(naming.scale(name)).get_tensor().set(
            np.array([np.abs(value).max()], np.float32), PLACE)


def _copy_scales(src_net, dst_net, program):
    for var in program.global_block().vars.values():
        if var.name.endswith("@scale") and dst_net.scope.find_var(var.name):
            value = np.array(src_net.scope.find_var(var.name).get_tensor())
            dst_net.scope.find_var(var.name).get_tensor().set(value, PLACE)


@pytest.mark.parametrize("config", [{}, {"onnx_format": False}, {"weight_quantize_type": "abs_max"}], ids=str)
def test_converted_outputs_match_paddles_within_one_step(rng, config):
    feed = conv_net(minimize=False).feed(rng, 32)
    ours_net = conv_net(minimize=False)
    ours = quant.quant_aware(ours_net.test, PLACE, config, scope=ours_net.scope, for_test=True)
    _calibrate_activation_scales(ours_net, ours, feed)
    ref_net = conv_net(minimize=False)
    with paddle.static.scope_guard(ref_net.scope):
        theirs = reference.quant_aware(ref_net.test, PLACE, dict(config), scope=ref_net.scope, for_test=True)
        _copy_scales(ours_net, ref_net, ours)
        theirs_frozen = reference.convert(theirs, PLACE, dict(config), scope=ref_net.scope)
    ours_frozen = quant.convert(ours, PLACE, config, scope=ours_net.scope)
    expected, = run(ref_net, theirs_frozen, feed, [ref_net.logits])
    got, = run(ours_net, ours_frozen, feed, [ours_net.logits])
    step = np.abs(expected).max() / qmax(8)
    np.testing.assert_allclose(got, expected, atol=step, rtol=0)


def test_regression_paddle_ignores_trans_y_for_matmul_v2_weights():
    """Paddle quantizes a [out, in] trans_y weight per column (axis 1); we use axis 0, one scale per output."""
    ours_net = conv_net(minimize=False, matmul_trans_y=True)
    config = {"quantize_op_types": ["matmul_v2"]}
    ours = quant.quant_aware(ours_net.test, PLACE, config, scope=ours_net.scope, for_test=True)
    axes = {op.attr("quant_axis") for op in ours.global_block().ops
            if op.type == "quantize_linear" and op.input("X")[0] == "head_w"}
    assert axes == {0}
    ref_net = conv_net(minimize=False, matmul_trans_y=True)
    with paddle.static.scope_guard(ref_net.scope):
        theirs = reference.quant_aware(ref_net.test, PLACE, dict(config), scope=ref_net.scope, for_test=True)
    ref_axes = {op.attr("quant_axis") for op in theirs.global_block().ops
                if op.type == "quantize_linear" and op.input("X")[0] == "head_w"}
    assert ref_axes == {1}


def test_regression_paddle_eval_program_resets_trained_scales(rng):
    """Building Paddle's eval program re-initialises scales the training program learned; ours keeps them."""
    net = conv_net(minimize=True)
    train = quant.quant_aware(net.main, PLACE, None, scope=net.scope)
    run(net, train, net.feed(rng, 16), [net.loss])
    trained = np.array(net.scope.find_var("x@scale").get_tensor())
    with paddle.static.scope_guard(net.scope):
        reference.quant_aware(net.test.clone(), PLACE, {}, scope=net.scope, for_test=True)
    assert not np.array_equal(np.array(net.scope.find_var("x@scale").get_tensor()), trained)
