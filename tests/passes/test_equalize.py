"""passes/equalize.py: cross-layer equalization of conv -> (commuting ops) -> conv pairs.

Oracles: the unequalized program run by the Paddle Executor (outputs equal to 1e-5 relative),
a numpy recomputation of the per-channel ranges (balanced after the pass), the plan read back
from small programs (which pairs, through which ops), and the caller's parameters read back
(unchanged).
"""

from __future__ import annotations

import logging

import numpy as np
import paddle
import pytest

from paddle_quant.common.program import read_tensor
from paddle_quant.passes.equalize import channel_ranges, equalize_layers, plan_equalization

CHANNELS = 6


def _op(block, op_type, x, attrs=None, **inputs):
    out = block.create_var(name=paddle.utils.unique_name.generate(op_type), dtype="float32", shape=x.shape)
    block.append_op(type=op_type, inputs={"X": [x], **inputs}, outputs={"Out": [out]}, attrs=attrs or {})
    return out


def _param(shape, name, low=-2.0, high=2.0):
    return paddle.static.create_parameter(shape, "float32", name=name,
                                          default_initializer=paddle.nn.initializer.Uniform(low, high))


def _between(block, h, kind):
    """What stands between the two convolutions."""
    if kind == "identity":
        return h
    if kind == "affine":  # a batch norm folded into a per-channel mul and add
        h = _op(block, "elementwise_mul", h, {"axis": -1}, Y=[_param([1, CHANNELS, 1, 1], "aff_a", 0.2, 3.0)])
        return _op(block, "elementwise_add", h, {"axis": -1}, Y=[_param([1, CHANNELS, 1, 1], "aff_b")])
    if kind == "bn":
        return paddle.static.nn.batch_norm(h, is_test=True,
                                           moving_mean_name="bn_mean", moving_variance_name="bn_var")
    if kind == "bn_relu":
        return _op(block, "relu", _between(block, h, "bn"))
    if kind == "leaky_relu":
        return _op(block, "leaky_relu", h, {"alpha": 0.1})
    return _op(block, kind, h)  # relu, relu6, hard_swish, sigmoid


def _net(folder, between="relu", second="conv", *, convs=2, fetch_intermediate=False):
    """conv(3->6)+bias -> between -> conv or depthwise (+ between -> conv ...), saved as an inference model;
    the first filter's rows are spread over four decades so the ranges are unbalanced."""
    paddle.seed(5)
    main, startup = paddle.static.Program(), paddle.static.Program()
    block = main.global_block()
    with paddle.static.program_guard(main, startup):
        x = paddle.static.data("x", [None, 3, 8, 8], "float32")
        h = first = paddle.static.nn.conv2d(x, CHANNELS, 3, padding=1)
        for _ in range(convs - 1):
            h = _between(block, h, between)
            if second == "depthwise":
                h = paddle.static.nn.conv2d(h, CHANNELS * 2, 3, padding=1, groups=CHANNELS)
            else:
                h = paddle.static.nn.conv2d(h, CHANNELS, 1)
    exe = paddle.static.Executor(paddle.CPUPlace())
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        exe.run(startup)
        rng = np.random.default_rng(0)
        for name in ("bn_mean", "bn_var"):
            if scope.find_var(name) is not None:
                scope.var(name).get_tensor().set(rng.uniform(0.1, 2.0, CHANNELS).astype(np.float32),
                                                 paddle.CPUPlace())
        w = np.array(scope.find_var("conv2d_0.w_0").get_tensor())
        spread = (10.0 ** np.linspace(-2, 2, CHANNELS)).reshape(-1, 1, 1, 1)
        scope.var("conv2d_0.w_0").get_tensor().set((w * spread).astype(np.float32), paddle.CPUPlace())
        fetch = [h, first] if fetch_intermediate else [h]
        paddle.static.save_inference_model(str(folder / "model"), [x], fetch, exe, program=main)
    return _load(folder)


def _load(folder):
    exe = paddle.static.Executor(paddle.CPUPlace())
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        program, _, fetches = paddle.static.load_inference_model(str(folder / "model"), exe)
    return program, fetches, scope, exe


def _run(program, fetches, scope, exe):
    batch = np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32)
    with paddle.static.scope_guard(scope):
        return exe.run(program, feed={"x": batch}, fetch_list=fetches)


def _filters(program, pair):
    ops = program.global_block().ops
    return ops[pair.first].input("Filter")[0], ops[pair.second].input("Filter")[0]


COMMUTING = [("relu", ("elementwise_add", "relu")), ("identity", ("elementwise_add",)),
             ("affine", ("elementwise_add", "elementwise_mul", "elementwise_add")),
             ("bn_relu", ("elementwise_add", "batch_norm", "relu")),
             ("leaky_relu", ("elementwise_add", "leaky_relu"))]


@pytest.mark.parametrize("second", ["conv", "depthwise"])
@pytest.mark.parametrize("between, expected", COMMUTING)
def test_a_pair_through_commuting_ops_is_planned(tmp_path, between, expected, second):
    program, _, _, _ = _net(tmp_path, between, second)
    (pair,) = plan_equalization(program)
    assert (pair.first_filter, pair.second_filter) == ("conv2d_0.w_0", "conv2d_1.w_0")
    assert pair.between == expected
    assert pair.second_groups == (CHANNELS if second == "depthwise" else 1)
    divided = {"relu": 1, "identity": 1, "affine": 2, "bn_relu": 3, "leaky_relu": 1}[between]
    assert len(pair.divided) == divided  # bias adds, and the batch norm's mean and bias


@pytest.mark.parametrize("between", ["relu6", "hard_swish", "sigmoid"])
def test_no_pair_through_ops_that_do_not_commute_with_scaling(tmp_path, between):
    program, fetches, scope, exe = _net(tmp_path, between)
    expected = _run(program, fetches, scope, exe)[0]
    assert plan_equalization(program) == ()
    assert equalize_layers(program, scope, paddle.CPUPlace()) == ()
    np.testing.assert_array_equal(_run(program, fetches, scope, exe)[0], expected)


@pytest.mark.parametrize("second", ["conv", "depthwise"])
@pytest.mark.parametrize("between", [b for b, _ in COMMUTING])
def test_fp32_outputs_are_kept_and_the_ranges_balanced(tmp_path, between, second):
    program, fetches, scope, exe = _net(tmp_path, between, second)
    expected = _run(program, fetches, scope, exe)[0]
    params = {v.name: read_tensor(scope, v.name) for v in program.list_vars() if v.persistable
              and scope.find_var(v.name) is not None and v.name not in ("feed", "fetch")}
    r1, r2 = channel_ranges(read_tensor(scope, "conv2d_0.w_0"), read_tensor(scope, "conv2d_1.w_0"),
                            CHANNELS if second == "depthwise" else 1)
    assert (r1 / r2).max() / (r1 / r2).min() > 100  # the net starts unbalanced

    (done,) = equalize_layers(program, scope, paddle.CPUPlace())

    got = _run(program, fetches, scope, exe)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    first, second_filter = _filters(program, done.pair)
    assert (first, second_filter) == ("conv2d_0.w_0@equalized", "conv2d_1.w_0@equalized")
    r1, r2 = channel_ranges(read_tensor(scope, first), read_tensor(scope, second_filter), done.pair.second_groups)
    np.testing.assert_allclose(r1, r2, rtol=1e-6)
    for name, before in params.items():  # the caller's parameters are copied, never rewritten
        np.testing.assert_array_equal(read_tensor(scope, name), before)


def test_a_chain_of_pairs_converges_to_balanced_ranges(tmp_path):
    program, fetches, scope, exe = _net(tmp_path, "relu", convs=4)
    expected = _run(program, fetches, scope, exe)[0]
    done = equalize_layers(program, scope, paddle.CPUPlace())
    assert [(d.pair.first_filter, d.pair.second_filter) for d in done] == [
        ("conv2d_0.w_0", "conv2d_1.w_0"), ("conv2d_1.w_0", "conv2d_2.w_0"), ("conv2d_2.w_0", "conv2d_3.w_0")]
    np.testing.assert_allclose(_run(program, fetches, scope, exe)[0], expected, rtol=1e-5,
                               atol=1e-5 * np.abs(expected).max())
    for pair in done:
        first, second = _filters(program, pair.pair)
        r1, r2 = channel_ranges(read_tensor(scope, first), read_tensor(scope, second), 1)
        np.testing.assert_allclose(r1, r2, rtol=1e-5)


def test_a_bias_reshaped_by_nn_conv2d_is_divided_through_its_reshape(tmp_path):
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        x = paddle.static.data("x", [None, 3, 8, 8], "float32")
        h = paddle.nn.Conv2D(CHANNELS, CHANNELS, 1)(paddle.nn.functional.relu(paddle.nn.Conv2D(3, CHANNELS, 3)(x)))
    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        exe.run(startup)
        scope.var("conv2d_0.b_0").get_tensor().set(np.linspace(-1, 1, CHANNELS).astype(np.float32),
                                                   paddle.CPUPlace())
        paddle.static.save_inference_model(str(tmp_path / "model"), [x], [h], exe, program=main)
    program, fetches, scope, exe = _load(tmp_path)
    expected = _run(program, fetches, scope, exe)[0]
    (done,) = equalize_layers(program, scope, paddle.CPUPlace())
    assert done.pair.between == ("elementwise_add", "relu")
    assert program.global_block().ops[done.pair.divided[0].op].type == "reshape2"
    np.testing.assert_allclose(_run(program, fetches, scope, exe)[0], expected, rtol=1e-5,
                               atol=1e-5 * np.abs(expected).max())


def test_no_pair_when_an_intermediate_tensor_is_fetched_or_read_twice(tmp_path):
    program, _, _, _ = _net(tmp_path, "relu", fetch_intermediate=True)
    assert plan_equalization(program) == ()


def test_a_channel_with_a_zero_range_keeps_scale_one(tmp_path):
    program, fetches, scope, exe = _net(tmp_path, "relu")
    first, second = read_tensor(scope, "conv2d_0.w_0"), read_tensor(scope, "conv2d_1.w_0")
    first[2], second[:, 4] = 0.0, 0.0  # r1 = 0 in channel 2, r2 = 0 in channel 4
    scope.var("conv2d_0.w_0").get_tensor().set(first, paddle.CPUPlace())
    scope.var("conv2d_1.w_0").get_tensor().set(second, paddle.CPUPlace())
    expected = _run(program, fetches, scope, exe)[0]
    (done,) = equalize_layers(program, scope, paddle.CPUPlace())
    assert done.scale[2] == done.scale[4] == 1.0
    assert np.all(np.isfinite(done.scale)) and np.all(done.scale > 0)
    np.testing.assert_allclose(_run(program, fetches, scope, exe)[0], expected, rtol=1e-5,
                               atol=1e-5 * np.abs(expected).max())


def _quantized_error(folder, out, caplog, **options):
    """Relative max error of quant_post's int8 model (run in the Executor) against fp32, and the equalize log."""
    import paddle_quant as quant

    batches = [{"x": np.random.default_rng(s).standard_normal((8, 3, 8, 8)).astype(np.float32)} for s in range(4)]
    exe = paddle.static.Executor(paddle.CPUPlace())
    with caplog.at_level(logging.INFO, logger="paddle_quant"):
        quant.quant_post(exe, str(folder), str(out), data_loader=lambda: batches, algo="abs_max", **options)
    program, fetches, scope, exe = _load(folder)
    expected = _run(program, fetches, scope, exe)[0]
    int8 = paddle.static.Scope()
    with paddle.static.scope_guard(int8):
        q_program, _, q_fetches = paddle.static.load_inference_model(str(out / "model"), exe)
    dequantized = {op.input("X")[0] for op in q_program.global_block().ops if op.type == "dequantize_linear"}
    got = _run(q_program, q_fetches, int8, exe)[0]
    return np.abs(got - expected).max() / np.abs(expected).max(), dequantized


def test_quant_post_equalizes_and_the_int8_model_runs_closer_to_fp32(tmp_path, caplog):
    _net(tmp_path / "fp32", "relu")
    plain, plain_names = _quantized_error(tmp_path / "fp32", tmp_path / "plain", caplog,
                                          weight_quantize_type="abs_max")
    assert "equalize_layers" not in caplog.text
    equalized, names = _quantized_error(tmp_path / "fp32", tmp_path / "equalized", caplog,
                                        weight_quantize_type="abs_max", equalize_layers=True)
    assert "equalize_layers: 1 conv pair(s) equalized" in caplog.text
    assert {"conv2d_0.w_0@equalized@int8", "conv2d_1.w_0@equalized@int8"} <= names
    assert not any("@equalized" in n for n in plain_names)
    # per-tensor weight scales: the spread channels lose less (0.0098 against 0.0193 when written)
    assert equalized < plain / 1.5, (equalized, plain)
