"""passes/smooth.py: SmoothQuant-style smoothing of weight-op inputs, exact in fp32.

Oracles: the unsmoothed program run by the Paddle Executor (outputs equal to 1e-5 relative for any
positive scales), the per-channel maxima of the smoothed tensor and weights read back (alpha = 1:
every activation channel peaks at 1; alpha = 0: every weight input channel does), the plan read
back from small programs, and quant_post's int8 error with and without smoothing.
"""

from __future__ import annotations

import logging

import numpy as np
import paddle
import pytest

import paddle_quant as quant
from paddle_quant.common.errors import ConfigError
from paddle_quant.common.program import read_tensor
from paddle_quant.passes.smooth import apply_smoothing, consumer_weight, plan_smoothing
from paddle_quant.ptq.config import PTQConfig
from paddle_quant.ptq.smoothing import input_channel_peaks
from paddle_quant.ptq.steps import prepare_fp32

WIDTH = 8
OUTLIERS = np.array([1, 1, 30, 1, 1, 1, 80, 1], np.float32)  # per-channel spread of the inputs


def _op(block, op_type, x, attrs=None, **inputs):
    out = block.create_var(name=paddle.utils.unique_name.generate(op_type), dtype="float32", shape=x.shape)
    block.append_op(type=op_type, inputs={"X": [x], **inputs}, outputs={"Out": [out]}, attrs=attrs or {})
    return out


def _save(folder, build, feed_shape):
    paddle.seed(7)
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        x = paddle.static.data("x", [None, *feed_shape], "float32")
        outputs = build(main.global_block(), x)
    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        exe.run(startup)
        for var in main.list_vars():  # layer norm / batch norm affine parameters away from 1 and 0
            if var.persistable and ("layer_norm" in var.name or "batch_norm" in var.name):
                value = np.array(scope.find_var(var.name).get_tensor())
                new = np.random.default_rng(len(var.name)).uniform(0.5, 2.0, value.shape)
                new *= np.resize(OUTLIERS, value.shape)
                scope.var(var.name).get_tensor().set(new.astype(np.float32), paddle.CPUPlace())
        paddle.static.save_inference_model(str(folder / "model"), [x], outputs, exe, program=main)
    return folder


def _matmul_trans_y(block, h, out_features):
    """``matmul_v2(h, W, trans_y=True)`` with W of shape [out, in]."""
    w = paddle.static.create_parameter([out_features, WIDTH], "float32", name="head_w")
    out = block.create_var(name="head.out", shape=[-1, 5, out_features], dtype="float32")
    block.append_op(type="matmul_v2", inputs={"X": [h], "Y": [w]}, outputs={"Out": [out]},
                    attrs={"trans_x": False, "trans_y": True})
    return out


def layer_norm_net(folder, *, between=None, two_consumers=False, begin_norm_axis=2, fetch_norm=False):
    """x [N, 5, 8] -> layer_norm (outlier channels in its scale) -> [between] -> Linear (+ a matmul_v2 with
    trans_y, + fc) -> outputs (+ the layer norm's output)."""
    def build(block, x):
        h = norm = paddle.static.nn.layer_norm(x, begin_norm_axis=begin_norm_axis)
        if between is not None:
            h = _op(block, between, h)
        outputs = [paddle.nn.Linear(WIDTH, 4)(h)]
        if two_consumers:
            outputs += [_matmul_trans_y(block, h, 6), paddle.static.nn.fc(h, 3, num_flatten_dims=2)]
        return outputs + ([norm] if fetch_norm else [])
    return _save(folder, build, [5, WIDTH])


def affine_net(folder):
    """x -> * a[C] -> + b[C] -> Linear: a per-channel affine op makes the input."""
    def build(block, x):
        a = paddle.static.create_parameter([WIDTH], "float32", name="aff_a",
                                           default_initializer=paddle.nn.initializer.Assign(OUTLIERS))
        b = paddle.static.create_parameter([WIDTH], "float32", name="aff_b",
                                           default_initializer=paddle.nn.initializer.Uniform(-1, 1))
        h = _op(block, "elementwise_add", _op(block, "elementwise_mul", x, {"axis": -1}, Y=[a]), {"axis": -1}, Y=[b])
        return [paddle.nn.Linear(WIDTH, 4)(h)]
    return _save(folder, build, [5, WIDTH])


def conv_net(folder, between="bn", convs=2):
    """conv -> (batch_norm | bias add + relu | bias add + relu6) -> 3x3 conv (-> relu -> 1x1 conv ...)."""
    def build(block, x):
        h = paddle.static.nn.conv2d(x, WIDTH, 3, padding=1, bias_attr=between != "bn")
        if between == "bn":
            h = paddle.static.nn.batch_norm(h, is_test=True)
        else:
            h = _op(block, between, h)
        h = paddle.static.nn.conv2d(h, WIDTH, 3, padding=1)
        for _ in range(convs - 2):
            h = paddle.static.nn.conv2d(_op(block, "relu", h), WIDTH, 1)
        return [h]
    return _save(folder, build, [3, 6, 6])


def _load(folder):
    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        program, _, fetches = paddle.static.load_inference_model(str(folder / "model"), exe)
    return program, fetches, scope, exe


def _feed(program, seed=1, batch=4):
    shape = [batch] + list(program.global_block().var("x").shape[1:])
    values = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    if len(shape) == 3:
        values *= OUTLIERS
    return {"x": values}


def _run(program, fetches, scope, exe, feed=None):
    with paddle.static.scope_guard(scope):
        return exe.run(program, feed=feed or _feed(program), fetch_list=fetches)


def _assert_close(got, expected):
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5 * np.abs(e).max())


NETS = {
    "layer_norm": (lambda f: layer_norm_net(f, two_consumers=True), "layer_norm", 3,
                   ["layer_norm", "layer_norm"]),
    "layer_norm_relu": (lambda f: layer_norm_net(f, between="relu"), "layer_norm", 1, ["layer_norm", "layer_norm"]),
    "affine": (affine_net, "elementwise_mul", 1, ["elementwise_add", "elementwise_mul"]),
    "batch_norm": (conv_net, "batch_norm", 1, ["batch_norm", "batch_norm"]),
    "conv_relu": (lambda f: conv_net(f, "relu"), "conv2d", 1, ["elementwise_add", "conv2d"]),
}


OP_TYPES = ["matmul_v2", "mul", "conv2d"]


def _smoothing(alpha, op_types=OP_TYPES):
    return PTQConfig(smooth_activations=True, smooth_alpha=alpha, quantizable_op_type=op_types)


def _batches(program, count=3):
    return [_feed(program, seed=10 + i) for i in range(count)]


@pytest.mark.parametrize("net", list(NETS))
def test_the_producer_that_absorbs_1_over_s_is_planned(tmp_path, net):
    build, producer, consumers, divided_by = NETS[net]
    program, _, _, _ = _load(build(tmp_path))
    (target,) = plan_smoothing(program)
    ops = program.global_block().ops
    assert target.producer == producer and len(target.consumers) == consumers
    assert [ops[p.op].type for p in target.divided] == divided_by
    assert target.channels == WIDTH


@pytest.mark.parametrize("net", [lambda f: layer_norm_net(f, between="relu6"), lambda f: conv_net(f, "relu6"),
                                 lambda f: layer_norm_net(f, between="hard_swish"),
                                 lambda f: layer_norm_net(f, begin_norm_axis=1),  # normalises over 40 values
                                 lambda f: layer_norm_net(f, fetch_norm=True),  # the input is also fetched
                                 lambda f: layer_norm_net(f, between="relu", fetch_norm=True)])  # ... on the way
def test_nothing_is_smoothed_through_ops_that_do_not_commute_with_scaling(tmp_path, net, caplog):
    program, fetches, scope, exe = _load(net(tmp_path))
    assert plan_smoothing(program) == ()
    expected = _run(program, fetches, scope, exe)
    with caplog.at_level(logging.WARNING, logger="paddle_quant"):
        prepare_fp32(exe, program, scope, paddle.CPUPlace(), _smoothing(0.5),
                     lambda: iter(_batches(program)), ["x"])
    assert "smooth_activations: no tensor to smooth" in caplog.text
    _assert_close(_run(program, fetches, scope, exe), expected)


@pytest.mark.parametrize("net", list(NETS))
def test_any_positive_scales_keep_the_fp32_outputs(tmp_path, net):
    program, fetches, scope, exe = _load(NETS[net][0](tmp_path))
    expected = _run(program, fetches, scope, exe)
    params = {v.name: read_tensor(scope, v.name) for v in program.list_vars()
              if v.persistable and v.name not in ("feed", "fetch")}
    targets = plan_smoothing(program)
    scales = [np.random.default_rng(3).uniform(0.1, 10.0, t.channels) for t in targets]

    apply_smoothing(program, scope, paddle.CPUPlace(), targets, scales)

    _assert_close(_run(program, fetches, scope, exe), expected)
    reads = {n for op in program.global_block().ops for n in op.input_arg_names}
    assert all(f"{c.weight}@smoothed" in reads for t in targets for c in t.consumers)
    for name, before in params.items():  # the caller's parameters are copied, never rewritten
        np.testing.assert_array_equal(read_tensor(scope, name), before)


def test_only_inputs_of_quantized_weight_ops_are_smoothed(tmp_path, caplog):
    program, fetches, scope, exe = _load(layer_norm_net(tmp_path, two_consumers=True))
    assert plan_smoothing(program, ("matmul_v2", "mul")) != ()
    assert plan_smoothing(program, ("matmul_v2",)) == ()  # the fc's mul reads the tensor too and stays float
    with caplog.at_level(logging.WARNING, logger="paddle_quant"):
        prepare_fp32(exe, program, scope, paddle.CPUPlace(), _smoothing(0.5, ["conv2d", "matmul_v2"]),
                     lambda: iter(_batches(program)), ["x"])
    assert "smooth_activations: no tensor to smooth" in caplog.text


@pytest.mark.parametrize("alpha", [None, 0.5])
def test_a_weight_both_smoothed_consumer_and_producer_takes_both_scales(tmp_path, alpha):
    program, fetches, scope, exe = _load(conv_net(tmp_path, "relu", convs=4))
    expected = _run(program, fetches, scope, exe)
    targets = plan_smoothing(program)
    assert [t.producer for t in targets] == ["conv2d", "conv2d", "conv2d"]
    prepare_fp32(exe, program, scope, paddle.CPUPlace(), _smoothing(alpha),
                 lambda: iter(_batches(program)), ["x"])
    _assert_close(_run(program, fetches, scope, exe), expected)


def _channel_max(program, fetches, scope, exe, target, batches):
    """max |X_j| of the target tensor over ``batches``, run through the (smoothed) program."""
    axes = tuple(d for d in range(len(program.global_block().var(target.var).shape)) if d != target.channel_axis)
    peaks = [np.abs(_run(program, [target.var], scope, exe, feed)[0]).max(axis=axes) for feed in batches]
    return np.max(peaks, axis=0)


@pytest.mark.parametrize("net", list(NETS))
@pytest.mark.parametrize("alpha", [1.0, 0.0, 0.5, None])
def test_alpha_moves_the_range_and_the_outputs_stay(tmp_path, net, alpha, caplog):
    program, fetches, scope, exe = _load(NETS[net][0](tmp_path))
    batches = _batches(program)
    expected = _run(program, fetches, scope, exe)
    (target,) = plan_smoothing(program)
    before = _channel_max(program, fetches, scope, exe, target, batches)
    with caplog.at_level(logging.INFO, logger="paddle_quant"):
        prepare_fp32(exe, program, scope, paddle.CPUPlace(),
                     _smoothing(alpha), lambda: iter(batches), ["x"])
    assert f"smooth_activations: 1 tensor(s) smoothed into {len(target.consumers)} weight op(s)" in caplog.text
    _assert_close(_run(program, fetches, scope, exe), expected)
    after = _channel_max(program, fetches, scope, exe, target, batches)
    ops = program.global_block().ops
    weights = [consumer_weight(read_tensor(scope, ops[c.op].input(name)[0]), c) for c in target.consumers
               for name in ops[c.op].input_names if ops[c.op].input(name) == [f"{c.weight}@smoothed"]]
    if alpha == 1.0:  # s = max|X|: every channel of the smoothed input peaks at 1
        np.testing.assert_allclose(after, 1.0, rtol=1e-5)
    elif alpha == 0.0:  # s = 1 / max|W|: every input channel of the weights peaks at 1
        np.testing.assert_allclose(input_channel_peaks(weights), 1.0, rtol=1e-5)
    elif alpha == 0.5:  # s = sqrt(max|X| / max|W|): activation and weight ranges meet
        np.testing.assert_allclose(after, input_channel_peaks(weights), rtol=1e-5)
    else:
        assert "alpha searched" in caplog.text
    assert after.max() / after.min() <= before.max() / before.min() * (1 + 1e-6) or alpha == 0.0


def _int8_error(folder, out, **options):
    program, fetches, scope, exe = _load(folder)
    batches = _batches(program, 4)
    quant.quant_post(exe, str(folder), str(out), data_loader=lambda: batches, algo="abs_max",
                     quantizable_op_type=OP_TYPES, **options)
    expected = _run(program, fetches, scope, exe, batches[0])[0]
    q_program, q_fetches, q_scope, _ = _load(out)
    got = _run(q_program, q_fetches, q_scope, exe, batches[0])[0]
    return float(np.abs(got - expected).max() / np.abs(expected).max()), q_program


@pytest.mark.parametrize("alpha", [0.5, None])
def test_quant_post_smooths_and_the_int8_model_runs_closer_to_fp32(tmp_path, alpha, caplog):
    folder = layer_norm_net(tmp_path / "fp32", two_consumers=True)
    plain, _ = _int8_error(folder, tmp_path / "plain")
    with caplog.at_level(logging.INFO, logger="paddle_quant"):
        smoothed, q_program = _int8_error(folder, tmp_path / "smoothed", smooth_activations=True, smooth_alpha=alpha)
    assert "smooth_activations: 1 tensor(s) smoothed into 3 weight op(s)" in caplog.text
    reads = {n for op in q_program.global_block().ops for n in op.input_arg_names}
    assert {"linear_0.w_0@smoothed@int8", "head_w@smoothed@int8", "fc_0.w_0@smoothed@int8",
            "layer_norm_0.w_0@smoothed"} <= reads
    assert smoothed < plain / 2, (smoothed, plain)  # 0.0048 (alpha 0.5) and 0.0047 (searched) against 0.0129


def test_smoothing_needs_data_it_can_read_twice(tmp_path):
    folder = layer_norm_net(tmp_path / "fp32")
    program, _, _, exe = _load(folder)
    with pytest.raises(ConfigError, match="data_loader is an iterator that can be read once.*smooth_activations"):
        quant.quant_post(exe, str(folder), str(tmp_path / "q"), data_loader=iter(_batches(program)),
                         smooth_activations=True, smooth_alpha=0.5)


def test_a_scale_table_reapplies_searched_smoothing_without_data(tmp_path):
    folder = layer_norm_net(tmp_path / "fp32", two_consumers=True)
    program, _, _, exe = _load(folder)
    options = dict(quantizable_op_type=OP_TYPES, smooth_activations=True, show_progress=False)
    first = quant.quant_post(exe, str(folder), str(tmp_path / "first"), data_loader=_batches(program), **options)
    again = quant.quant_post(exe, str(folder), str(tmp_path / "again"), scale_table=str(first.scale_table), **options)
    assert again.params_file.read_bytes() == first.params_file.read_bytes()
