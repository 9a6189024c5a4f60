"""passes/fold_affine.py: conv -> bias add -> (mul | add by a parameter)+ folded into the conv.

Oracles: the unfolded program run by the Paddle Executor (fp32: equal to float rounding;
int8: the fold keeps the integers and rescales, so outputs agree to float rounding of the
scales); op and variable bookkeeping read back from the program; Paddle Inference oneDNN int8
running the folded model.
"""

from __future__ import annotations

import numpy as np
import paddle
import pytest

import paddle_quant as quant
from paddle_quant.common.program import read_tensor
from paddle_quant.passes.fold_affine import fold_conv_affine

CHANNELS = 6


def _op(block, op_type, inputs, attrs=None, name=None):
    """Append one op writing a new float var (the functional API builds PIR values here)."""
    first = next(iter(inputs.values()))[0]
    out = block.create_var(name=name or paddle.utils.unique_name.generate(op_type), dtype="float32",
                           shape=first.shape)
    block.append_op(type=op_type, inputs=inputs, outputs={"Out": [out]}, attrs=attrs or {})
    return out


def _param(shape, name, init):
    return paddle.static.create_parameter(shape, "float32", name=name, default_initializer=init)


def _affine_net(folder, *, fetch_intermediate=False, shared_intermediate=False, width_param=False):
    """conv(+bias) -> * a -> + b -> hard_swish -> conv(+bias) -> * c[1,C,1,1] -> + d -> pool -> fc, saved."""
    paddle.seed(3)
    main, startup = paddle.static.Program(), paddle.static.Program()
    block = main.global_block()
    with paddle.static.program_guard(main, startup):
        x = paddle.static.data("x", [None, 3, 10, 10], "float32")
        h = paddle.static.nn.conv2d(x, CHANNELS, 3, padding=1)  # conv2d + elementwise_add(bias, axis=1)
        a = _param([1], "lab_a", paddle.nn.initializer.Constant(-1.7))
        b = _param([1], "lab_b", paddle.nn.initializer.Constant(0.3))
        scaled = _op(block, "elementwise_mul", {"X": [a], "Y": [h]}, {"axis": -1}, name="scaled")
        shifted = _op(block, "elementwise_add", {"X": [scaled], "Y": [b]}, {"axis": -1}, name="shifted")
        h = _op(block, "hard_swish", {"X": [shifted]})
        if shared_intermediate:
            h = _op(block, "elementwise_add", {"X": [h], "Y": [_op(block, "relu", {"X": [scaled]})]}, {"axis": -1})
        h = paddle.static.nn.conv2d(h, CHANNELS, 1)
        shape = [1, 1, 1, 10] if width_param else [1, CHANNELS, 1, 1]
        c = _param(shape, "lab_c", paddle.nn.initializer.Uniform(-2.0, 2.0))
        d = _param([1], "lab_d", paddle.nn.initializer.Constant(-0.2))
        h = _op(block, "elementwise_mul", {"X": [h], "Y": [c]}, {"axis": -1})
        h = _op(block, "elementwise_add", {"X": [h], "Y": [d]}, {"axis": -1})
        pooled = block.create_var(name="pooled", dtype="float32", shape=[-1, CHANNELS, 1, 1])
        block.append_op(type="pool2d", inputs={"X": [h]}, outputs={"Out": [pooled]},
                        attrs={"pooling_type": "avg", "global_pooling": True, "ksize": [1, 1]})
        out = paddle.static.nn.fc(pooled, 4)
    exe = paddle.static.Executor(paddle.CPUPlace())
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        exe.run(startup)
        fetch = [out, scaled] if fetch_intermediate else [out]
        paddle.static.save_inference_model(str(folder / "model"), [x], fetch, exe, program=main)
    return folder


def _load(folder):
    exe = paddle.static.Executor(paddle.CPUPlace())
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        program, feeds, fetches = paddle.static.load_inference_model(str(folder / "model"), exe)
    return program, feeds, fetches, scope, exe


def _run(program, fetches, scope, exe, batch):
    with paddle.static.scope_guard(scope):
        return exe.run(program, feed={"x": batch}, fetch_list=fetches)


def _batch(seed=0, n=4):
    return np.random.default_rng(seed).standard_normal((n, 3, 10, 10)).astype(np.float32)


def _types(program):
    return [op.type for op in program.global_block().ops]


def test_fp32_fold_removes_the_affine_ops_and_keeps_the_outputs(tmp_path):
    program, _, fetches, scope, exe = _load(_affine_net(tmp_path))
    expected = _run(program, fetches, scope, exe, _batch())[0]
    weights_before = {n: read_tensor(scope, n).copy() for n in ("conv2d_0.w_0", "conv2d_0.b_0")}
    muls, adds = _types(program).count("elementwise_mul"), _types(program).count("elementwise_add")

    folded = fold_conv_affine(program, scope, paddle.CPUPlace())

    assert [f.filter for f in folded] == ["conv2d_0.w_0", "conv2d_1.w_0"]
    assert all(f.removed == ("elementwise_mul", "elementwise_add") for f in folded)
    assert _types(program).count("elementwise_mul") == muls - 2
    assert _types(program).count("elementwise_add") == adds - 2
    got = _run(program, fetches, scope, exe, _batch())[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    for name, before in weights_before.items():  # the caller's parameters are copied, not rewritten
        np.testing.assert_array_equal(read_tensor(scope, name), before)
    np.testing.assert_allclose(read_tensor(scope, "conv2d_0.w_0@folded"), -1.7 * weights_before["conv2d_0.w_0"],
                               rtol=1e-6)
    np.testing.assert_allclose(read_tensor(scope, "conv2d_0.b_0@folded"),
                               -1.7 * weights_before["conv2d_0.b_0"] + 0.3, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", ["fetch_intermediate", "shared_intermediate", "width_param"])
def test_a_chain_stops_where_its_tensor_is_needed_or_the_parameter_is_not_per_channel(tmp_path, case):
    program, _, fetches, scope, exe = _load(_affine_net(tmp_path, **{case: True}))
    expected = _run(program, fetches, scope, exe, _batch())
    folded = {f.filter: f for f in fold_conv_affine(program, scope, paddle.CPUPlace())}
    if case == "width_param":  # the second conv's multiplier runs along the width: nothing to fold there
        assert list(folded) == ["conv2d_0.w_0"]
    else:  # 'scaled' is fetched / also read by a relu: the first chain ends there, keeping its value
        assert folded["conv2d_0.w_0"].output == "scaled"
        assert folded["conv2d_0.w_0"].removed == ("elementwise_mul",)
        assert "scaled" in {n for op in program.global_block().ops for n in op.output_arg_names}
    for got, want in zip(_run(program, fetches, scope, exe, _batch()), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def _quantize(tmp_path, name, **options):
    model = tmp_path / "fp32"
    if not model.exists():
        _affine_net(model)
    batches = [{"x": _batch(seed)} for seed in range(4)]
    quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(model), str(tmp_path / name),
                     data_loader=lambda: iter(batches), algo="abs_max", quantizable_op_type=["conv2d"],
                     show_progress=False, **options)
    return tmp_path / name


@pytest.mark.parametrize("output_scales", ["none", "all"])
def test_quant_post_folds_int8_convs_without_requantizing(tmp_path, output_scales):
    plain = _quantize(tmp_path, "plain", output_scales=output_scales)  # no backend: PaddleSlim's graph
    folded = _quantize(tmp_path, "folded", output_scales=output_scales, fold_affine=True)  # the fold alone
    p_prog, _, p_fetch, p_scope, exe = _load(plain)
    f_prog, _, f_fetch, f_scope, _ = _load(folded)
    assert _types(f_prog).count("elementwise_mul") == _types(p_prog).count("elementwise_mul") - 2
    if output_scales == "all":  # the observers on the folded tensors went with them
        assert _types(f_prog).count("quantize_linear") < _types(p_prog).count("quantize_linear")
    # integers kept, sign flipped by the negative factor, scale times |factor|
    w_plain, w_folded = read_tensor(p_scope, "conv2d_0.w_0@int8"), read_tensor(f_scope, "conv2d_0.w_0@int8")
    np.testing.assert_array_equal(w_folded, -w_plain)
    np.testing.assert_allclose(read_tensor(f_scope, "conv2d_0.w_0@scale"),
                               1.7 * read_tensor(p_scope, "conv2d_0.w_0@scale"), rtol=1e-6)
    want = _run(p_prog, p_fetch, p_scope, exe, _batch(9))[0]
    got = _run(f_prog, f_fetch, f_scope, exe, _batch(9))[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_scale_table_reapplied_gives_the_same_folded_model(tmp_path):
    first = _quantize(tmp_path, "first", fold_affine=True)
    again = tmp_path / "again"
    quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(tmp_path / "fp32"), str(again), algo="abs_max",
                     quantizable_op_type=["conv2d"], scale_table=str(first / "scale_table.json"), fold_affine=True)
    for name in ("model.pdmodel", "model.pdiparams"):
        assert (first / name).read_bytes() == (again / name).read_bytes()


def test_folded_int8_model_runs_in_onednn_int8(tmp_path):
    folded = _quantize(tmp_path, "folded", fold_affine=True)
    plain = _quantize(tmp_path, "plain", fold_affine=False)
    import paddle.inference as paddle_infer

    def predict(folder):
        config = paddle_infer.Config(str(folder / "model.pdmodel"), str(folder / "model.pdiparams"))
        config.disable_gpu()
        config.enable_onednn()
        config.enable_onednn_int8()
        config.disable_glog_info()
        predictor = paddle_infer.create_predictor(config)
        handle = predictor.get_input_handle("x")
        handle.reshape([4, 3, 10, 10])
        handle.copy_from_cpu(_batch(5))
        predictor.run()
        return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()

    want, got = predict(plain), predict(folded)
    assert np.all(np.isfinite(got))
    cosine = float(np.sum(got * want) / (np.linalg.norm(got) * np.linalg.norm(want)))
    assert cosine > 0.99
