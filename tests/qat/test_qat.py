"""quant_aware: training through fake quantization, eval programs, state handling, bad input."""

import logging

import numpy as np
import paddle
import pytest

import paddle_quant as quant
from paddle_quant.common import naming

from support.nets import conv_net, param_values, run

PLACE = paddle.CPUPlace()
WEIGHT_TYPES = ["abs_max", "channel_wise_abs_max", "range_abs_max", "moving_average_abs_max"]
ACT_TYPES = ["abs_max", "range_abs_max", "moving_average_abs_max"]


def _train(net, program, rng, steps=5):
    feed = net.feed(rng, 16)
    return [float(run(net, program, feed, [net.loss])[0]) for _ in range(steps)]


def _minimize_on(net, program):
    startup = paddle.static.Program()
    with paddle.static.program_guard(program, startup):
        paddle.optimizer.SGD(0.1).minimize(program.global_block().var(net.loss))
    with paddle.static.scope_guard(net.scope):
        net.exe.run(startup)


def _assert_every_parameter_moved(before, after):
    unchanged = [name for name in before if np.array_equal(before[name], after[name])]
    assert not unchanged, f"parameters received no gradient: {unchanged}"


@pytest.mark.parametrize("onnx_format", [True, False])
@pytest.mark.parametrize("weight_type,act_type", [(w, "moving_average_abs_max") for w in WEIGHT_TYPES]
                         + [("channel_wise_abs_max", a) for a in ACT_TYPES[:2]])
def test_quant_aware_after_minimize_trains_every_parameter(rng, onnx_format, weight_type, act_type):
    net = conv_net(minimize=True, matmul_trans_y=True)
    config = {"weight_quantize_type": weight_type, "activation_quantize_type": act_type,
              "onnx_format": onnx_format, "quantize_op_types": ["conv2d", "matmul_v2", "pool2d"]}
    train = quant.quant_aware(net.main, PLACE, config, scope=net.scope)
    assert isinstance(train, paddle.static.CompiledProgram)
    before = param_values(net)
    losses = _train(net, train, rng, steps=8)
    _assert_every_parameter_moved(before, param_values(net))
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("act_type", ACT_TYPES)
def test_minimize_called_on_the_quantized_program_trains_every_parameter(rng, act_type):
    net = conv_net(minimize=False, matmul_trans_y=True)
    config = {"activation_quantize_type": act_type, "quantize_op_types": ["conv2d", "matmul_v2", "relu"]}
    train = quant.quant_aware(net.main, PLACE, config, scope=net.scope, return_program=True)
    _minimize_on(net, train)
    before = param_values(net)
    losses = _train(net, train, rng, steps=8)
    _assert_every_parameter_moved(before, param_values(net))
    assert losses[-1] < losses[0]


def test_gradient_ops_read_dequantized_inputs_after_rewiring():
    net = conv_net(minimize=True)
    train = quant.quant_aware(net.main, PLACE, None, scope=net.scope, return_program=True)
    grads = [op for op in train.global_block().ops if op.type in ("conv2d_grad", "mul_grad")]
    assert len(grads) == 3
    for op in grads:
        weight_slot = "Filter" if op.type == "conv2d_grad" else "Y"
        assert op.input(weight_slot)[0] == naming.dequantized(op.output(f"{weight_slot}@GRAD")[0][:-len("@GRAD")])


def test_input_program_is_not_modified():
    net = conv_net(minimize=True)
    before = [op.type for op in net.main.global_block().ops]
    quant.quant_aware(net.main, PLACE, None, scope=net.scope)
    quant.quant_aware(net.test, PLACE, None, scope=net.scope, for_test=True)
    assert [op.type for op in net.main.global_block().ops] == before


def test_building_eval_program_keeps_trained_scales(rng):
    net = conv_net(minimize=True)
    train = quant.quant_aware(net.main, PLACE, None, scope=net.scope)
    _train(net, train, rng, steps=3)
    trained = np.array(net.scope.find_var("x@scale").get_tensor())
    quant.quant_aware(net.test, PLACE, None, scope=net.scope, for_test=True)
    np.testing.assert_array_equal(np.array(net.scope.find_var("x@scale").get_tensor()), trained)
    assert trained[0] != 1.0


@pytest.mark.parametrize("rate", [0.5, 0.9])
def test_moving_rate_is_honoured_in_training(rng, rate):
    net = conv_net(minimize=True)
    train = quant.quant_aware(net.main, PLACE, {"moving_rate": rate}, scope=net.scope)
    feeds = [net.feed(rng, 16) for _ in range(3)]
    state = accum = np.float32(0)
    for feed in feeds:
        run(net, train, feed, [net.loss])
        state = np.float32(rate) * state + np.float32(1)
        accum = np.float32(rate) * accum + np.abs(feed["x"]).max()
    got = np.array(net.scope.find_var("x@scale").get_tensor())[0]
    np.testing.assert_allclose(got, accum / state, rtol=1e-6)


def test_weight_scales_start_at_the_weights_abs_max():
    net = conv_net(minimize=False)
    quant.quant_aware(net.test, PLACE, None, scope=net.scope, for_test=True)
    weight = np.array(net.scope.find_var("conv2d_0.w_0").get_tensor())
    scale = np.array(net.scope.find_var("conv2d_0.w_0@scale").get_tensor())
    np.testing.assert_array_equal(scale, np.abs(weight).reshape(4, -1).max(axis=1))


# ------------------------------------------------------------------ bad input
def test_pir_program_is_refused_with_the_fix():
    with paddle.pir_utils.IrGuard():
        program = paddle.static.Program()
        with pytest.raises(quant.UnsupportedProgramError, match="OldIrGuard"):
            quant.quant_aware(program, PLACE)


@pytest.mark.parametrize("thing", [None, "program", 3])
def test_non_program_is_refused(thing):
    with pytest.raises(quant.UnsupportedProgramError, match="paddle.static.Program"):
        quant.quant_aware(thing, PLACE)
    with pytest.raises(TypeError):
        quant.convert(thing, PLACE)


def test_compiled_program_is_refused():
    net = conv_net(minimize=False)
    with pytest.raises(quant.UnsupportedProgramError, match="CompiledProgram"):
        quant.quant_aware(paddle.static.CompiledProgram(net.main), PLACE)


def test_program_without_quantizable_op_is_returned_unchanged_with_a_warning(caplog):
    net = conv_net(minimize=False)
    with caplog.at_level(logging.WARNING, logger="paddle_quant"):
        out = quant.quant_aware(net.test, PLACE, {"quantize_op_types": ["lstm"]}, scope=net.scope, for_test=True)
    assert [op.type for op in out.global_block().ops] == [op.type for op in net.test.global_block().ops]
    assert "no op of the configured types ['lstm']" in caplog.text


def test_skipped_ops_are_reported_when_nothing_is_quantized(caplog):
    net = conv_net(minimize=False, skip_second_conv=True)
    with caplog.at_level(logging.WARNING, logger="paddle_quant"):
        quant.quant_aware(net.test, PLACE, {"not_quant_pattern": ["/"], "quantize_op_types": ["conv2d"]},
                          scope=net.scope, for_test=True)
    assert "conv2d#0 (op_namescope matches not_quant_pattern)" in caplog.text


def test_empty_scope_is_refused_naming_the_parameter():
    net = conv_net(minimize=False)
    with pytest.raises(quant.ScopeError, match="conv2d_0.w_0.*startup"):
        quant.quant_aware(net.test, PLACE, None, scope=paddle.static.Scope(), for_test=True)


def test_quantizing_twice_is_refused():
    net = conv_net(minimize=False)
    test = quant.quant_aware(net.test, PLACE, None, scope=net.scope, for_test=True)
    with pytest.raises(quant.ProgramStateError, match="already went through quant_aware"):
        quant.quant_aware(test, PLACE, None, scope=net.scope, for_test=True)


def test_bad_config_is_refused_before_touching_anything():
    net = conv_net(minimize=False)
    with pytest.raises(quant.ConfigError, match="weight_bits"):
        quant.quant_aware(net.test, PLACE, {"weight_bits": 17}, scope=net.scope, for_test=True)
    assert not net.scope.find_var("x@scale")


def test_scale_trainable_false_keeps_activation_scales_fixed(rng):
    net = conv_net(minimize=True)
    train = quant.quant_aware(net.main, PLACE, {"scale_trainable": False}, scope=net.scope)
    before = np.array(net.scope.find_var("x@scale").get_tensor())
    weights_before = param_values(net)
    _train(net, train, rng, steps=3)
    np.testing.assert_array_equal(np.array(net.scope.find_var("x@scale").get_tensor()), before)
    _assert_every_parameter_moved(weights_before, param_values(net))


def test_quant_post_first_is_refused_until_ptq_exists():
    net = conv_net(minimize=False)
    with pytest.raises(quant.ConfigError, match="quant_post_first"):
        quant.quant_aware(net.test, PLACE, {"quant_post_first": True}, scope=net.scope, for_test=True)


def test_deploy_backend_is_kept_and_enforced_not_silently_dropped():
    net = conv_net(minimize=False)
    assert quant.QuantConfig.from_dict({"deploy_backend": "mkldnn"}).deploy_backend == "onednn"
    with pytest.raises(quant.ConfigError, match="deploy_backend='onednn'.*activation_bits=4"):
        quant.quant_aware(net.test, PLACE, {"deploy_backend": "mkldnn", "activation_bits": 4}, scope=net.scope,
                          for_test=True)
