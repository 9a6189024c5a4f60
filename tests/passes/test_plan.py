"""The plan step: which tensors a config quantizes, read off the plan without running anything."""

import paddle_quant as quant
from paddle_quant.passes import plan_quantization

from support.nets import conv_net


def _plan(net, config=None, program=None):
    return plan_quantization((program or net.test).global_block(), quant.as_quant_config(config))


def test_default_config_quantizes_conv_and_mul_weights_and_their_inputs():
    net = conv_net(minimize=False)
    plan = _plan(net)
    weights = {t.var: t for t in plan.tensors if t.role == "weight"}
    assert set(weights) == {"conv2d_0.w_0", "conv2d_1.w_0", "fc_0.w_0"}
    assert weights["conv2d_0.w_0"].axis == 0 and weights["fc_0.w_0"].axis == 1
    acts = {t.var for t in plan.tensors if t.role == "activation"}
    assert acts == {"x", "conv2d_0.tmp_2", "flatten_0.tmp_0"}
    assert [op.op_type for op in plan.ops] == ["conv2d", "conv2d", "mul"]


def test_matmul_v2_trans_y_weight_uses_axis_0():
    net = conv_net(minimize=False, matmul_trans_y=True)
    plan = _plan(net, {"quantize_op_types": ["matmul_v2"]})
    assert plan.tensor("head_w").axis == 0
    assert plan.tensor("head_w").role == "weight"


def test_not_quant_pattern_skips_op_by_namescope():
    net = conv_net(minimize=False, skip_second_conv=True)
    plan = _plan(net)
    assert [op.op_type for op in plan.ops] == ["conv2d", "mul"]
    assert [(s.op_type, s.reason) for s in plan.skipped] == [("conv2d", "op_namescope matches not_quant_pattern")]
    assert "conv2d_1.w_0" not in {t.var for t in plan.tensors}


def test_tensor_read_by_two_quantized_ops_is_quantized_once():
    net = conv_net(minimize=False)
    plan = _plan(net, {"quantize_op_types": ["conv2d", "mul", "relu", "elementwise_add"]})
    names = [t.var for t in plan.tensors]
    assert len(names) == len(set(names))


def test_activation_only_ops_quantize_float_non_persistable_inputs_only():
    net = conv_net(minimize=False)
    plan = _plan(net, {"quantize_op_types": ["elementwise_add"]})
    for op in plan.ops:
        assert [slot for slot, _ in op.inputs] == ["X"]  # Y is the persistable bias
        assert not op.with_weight


def test_observers_cover_float_outputs_of_supported_ops_only():
    net = conv_net(minimize=False)
    observed = {o.var for o in _plan(net).observers}
    assert "conv2d_0.tmp_0" in observed and "fc_0.tmp_0" in observed
    assert not any(name.startswith("softmax_with_cross_entropy") for name in observed)


def test_for_tensorrt_and_full_quantize_change_the_planned_op_types():
    net = conv_net(minimize=False)
    trt = {op.op_type for op in _plan(net, {"for_tensorrt": True}).ops}
    assert trt == {"conv2d", "mul", "pool2d", "elementwise_add"}
    full = {op.op_type for op in _plan(net, {"is_full_quantize": True}).ops}
    assert {"relu", "pool2d", "flatten_contiguous_range", "reduce_mean"} <= full


def test_backward_ops_are_not_planned():
    net = conv_net(minimize=True)
    plan = _plan(net, program=net.main)
    assert all(not op.op_type.endswith("_grad") for op in plan.ops)
    assert [op.op_type for op in plan.ops] == ["conv2d", "conv2d", "mul"]
