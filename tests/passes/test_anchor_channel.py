"""passes/anchor_channel.py: a zero input channel holds each output channel's 127 for oneDNN's half-scale convs.

Oracles: Paddle Inference oneDNN int8 against the Executor's simulation of the same saved model (an
AVX2-only CPU halves the weights; a CPU with VNNI runs the even grid exactly too), and the saved program.
"""

from __future__ import annotations

import numpy as np
import paddle
import pytest

import paddle_quant as quant
from paddle_quant.common.model_files import load_inference_program
from paddle_quant.common.program import legacy_ir, read_tensor
from paddle_quant.passes.anchor_channel import anchor_convs

from support.inference import predict, predictor, save_built_model


def _saved(result):
    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    with legacy_ir():
        program, _, fetches = load_inference_program(exe, scope, result.model_file, result.params_file)
    return exe, scope, program, fetches


def _deviation_in_steps(result, feed):
    exe, scope, program, fetches = _saved(result)
    with legacy_ir():
        simulated = exe.run(program, feed=feed, fetch_list=fetches, scope=scope)[0]
    deployed = predict(predictor(str(result.model_file), str(result.params_file), int8=True), feed)[0]
    return float(np.abs(deployed - simulated).max() / (np.abs(simulated).max() / 127))


def _quantize(tmp_path, build, feeds, **options):
    paddle.seed(0)
    model = save_built_model(tmp_path / "fp32", build)
    return quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(model), str(tmp_path / "int8"),
                            data_loader=lambda: feeds, algo="abs_max", quantizable_op_type=["conv2d"],
                            output_scales="none", deploy_backend="onednn", onednn_cpu="avx2", **options)


def _feeds(seed, count=2):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((4, 16, 8, 8)).astype("float32")} for _ in range(count)]


def test_convs_reading_one_tensor_share_one_anchored_input(tmp_path):
    def build():
        x = paddle.static.data("x", [-1, 16, 8, 8], "float32")
        return [x], [paddle.static.nn.conv2d(x, 16, 3, padding=1) + paddle.static.nn.conv2d(x, 16, 1)]
    feeds = _feeds(0)
    result = _quantize(tmp_path, build, feeds)
    _, scope, program, _ = _saved(result)
    ops = program.global_block().ops
    assert [op.type for op in ops].count("concat") == 1
    convs = [op for op in ops if op.type == "conv2d"]
    assert len({conv.input("Input")[0] for conv in convs}) == 1 and "@anchored" in convs[0].input("Input")[0]
    assert not any(op.type == "quantize_linear" and op.input("X")[0] == "x" for op in ops)  # the old pair is gone
    for conv in convs:
        weight = read_tensor(scope, next(op for op in ops if op.type == "dequantize_linear"
                                         and op.output("Y")[0] == conv.input("Filter")[0]).input("X")[0])
        assert weight.shape[1] == 17 and np.all(weight[:, 16].reshape(16, -1)[:, 0] == 127)
    assert _deviation_in_steps(result, feeds[0]) <= 0.01


def test_per_tensor_weight_scales_run_exactly_once_anchored(tmp_path):
    """oneDNN derives one weight scale per output channel from its largest weight: the anchor's, for every
    channel, so a per-tensor scale is the program's too."""
    def build():
        x = paddle.static.data("x", [-1, 16, 8, 8], "float32")
        return [x], [paddle.static.nn.conv2d(x, 32, 3, padding=1)]
    feeds = _feeds(1)
    result = _quantize(tmp_path, build, feeds, weight_quantize_type="abs_max")
    assert _deviation_in_steps(result, feeds[0]) <= 0.01


def test_grouped_convs_keep_their_own_127(tmp_path):
    def build():
        x = paddle.static.data("x", [-1, 16, 8, 8], "float32")
        return [x], [paddle.static.nn.conv2d(x, 32, 3, padding=1, groups=2)]
    result = _quantize(tmp_path, build, _feeds(2))
    _, scope, program, _ = _saved(result)
    ops = program.global_block().ops
    assert "concat" not in [op.type for op in ops]
    weight = read_tensor(scope, next(op for op in ops if op.type == "dequantize_linear"
                                     and program.global_block().var(op.input("X")[0]).persistable).input("X")[0])
    assert weight.shape == (32, 8, 3, 3) and np.all(np.abs(weight.astype(np.int64)).reshape(32, -1).max(axis=1) == 127)


def test_an_input_oneDNN_writes_in_int8_is_read_through_a_float_op(tmp_path):
    """relu -> max pool -> conv: oneDNN runs the pool in int8 once the anchored concat hands it a scale, and could
    not build that concat from the pool's int8 output and the zero channel ('could not create a primitive
    descriptor for a concat primitive'); the anchor reads ``x + 0`` instead."""
    def build():
        x = paddle.static.data("x", [-1, 16, 8, 8], "float32")
        pooled = paddle.nn.functional.max_pool2d(paddle.static.nn.conv2d(x, 16, 3, padding=1, act="relu"), 2)
        return [x], [paddle.static.nn.conv2d(pooled, 16, 3, padding=1)]
    feeds = _feeds(4)
    result = _quantize(tmp_path, build, feeds)
    _, _, program, _ = _saved(result)
    concats = [op for op in program.global_block().ops if op.type == "concat"]
    assert [op.input("X")[0].endswith("@anchor_bridge") for op in concats] == [False, True]  # feed: no bridge
    assert _deviation_in_steps(result, feeds[0]) <= 1.0  # 0.16 measured on AVX2: one rounding flip


def test_anchor_convs_names_weights_it_cannot_anchor(tmp_path):
    def build():
        x = paddle.static.data("x", [-1, 16, 8, 8], "float32")
        return [x], [paddle.static.nn.conv2d(x, 16, 3, padding=1)]
    paddle.seed(0)
    model = save_built_model(tmp_path / "fp32", build)
    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    with legacy_ir():
        program, _, _ = load_inference_program(exe, scope, model / "model.pdmodel", model / "model.pdiparams")
        with pytest.raises(ValueError, match=r"conv2d_0\.w_0.*dequantize_linear"):
            anchor_convs(program, scope, paddle.CPUPlace(), ["conv2d_0.w_0"])
