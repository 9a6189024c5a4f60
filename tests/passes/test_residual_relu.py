"""passes/residual_relu.py: a relu after conv + signed residual is written so oneDNN keeps the output signed.

Oracles: the rewritten op types (relu -> leaky_relu(0), relu6 -> clip(0, 6), the same functions: the fp32
outputs are unchanged) and Paddle Inference oneDNN int8 against the Executor (30 output steps when oneDNN
reads the s8 residual into a u8 output).
"""

from __future__ import annotations

import numpy as np
import paddle

import paddle_quant as quant
from paddle_quant.common.model_files import load_inference_program
from paddle_quant.common.program import legacy_ir
from paddle_quant.passes.residual_relu import sign_residual_activations

from support.inference import predict, predictor, save_built_model

F = paddle.nn.functional


def _conv(x, channels, **options):
    return paddle.static.nn.conv2d(x, channels, 3, padding=1, **options)


def _residual_net():
    x = paddle.static.data("x", [-1, 16, 8, 8], "float32")
    signed = F.relu(_conv(F.hardswish(_conv(x, 16)), 16) + x)          # residual x: signed
    relu6 = F.relu6(_conv(signed, 16) + _conv(x, 16))                  # residual a conv output: signed
    unsigned = F.relu(_conv(relu6, 16) + F.relu(_conv(x, 16)))         # residual a relu output: u8 already
    return [x], [_conv(unsigned, 16) + F.relu(x + 1.0)]                # no conv in the add: nothing fused


def _load(model_dir):
    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    with legacy_ir():
        program, feeds, fetches = load_inference_program(exe, scope, model_dir / "model.pdmodel",
                                                         model_dir / "model.pdiparams")
    return exe, scope, program, fetches


def test_relus_after_conv_plus_signed_residual_become_the_same_functions_oneDNN_keeps_signed(tmp_path):
    paddle.seed(0)
    model = save_built_model(tmp_path / "fp32", _residual_net)
    exe, scope, program, fetches = _load(model)
    feed = {"x": np.random.default_rng(0).standard_normal((2, 16, 8, 8)).astype("float32")}
    with legacy_ir():
        before = exe.run(program, feed=feed, fetch_list=fetches, scope=scope)[0]
        rewritten = sign_residual_activations(program)
        after = exe.run(program, feed=feed, fetch_list=fetches, scope=scope)[0]
    assert [(r.was, r.now) for r in rewritten] == [("relu", "leaky_relu"), ("relu6", "clip")]
    types = [op.type for op in program.global_block().ops]
    assert types.count("relu") == 3 and types.count("relu6") == 0   # the u8 residual and the conv-less add kept
    np.testing.assert_array_equal(before, after)


def test_oneDNN_runs_a_conv_with_a_signed_residual_and_relu_as_simulated(tmp_path):
    def build():
        x = paddle.static.data("x", [-1, 16, 8, 8], "float32")
        return [x], [_conv(F.relu(_conv(F.hardswish(_conv(x, 16)), 16) + x), 16)]
    paddle.seed(0)
    model = save_built_model(tmp_path / "fp32", build)
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((4, 16, 8, 8)).astype("float32")} for _ in range(4)]
    result = quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(model), str(tmp_path / "int8"),
                              data_loader=lambda: feeds, algo="abs_max", quantizable_op_type=["conv2d"],
                              deploy_backend="onednn", onednn_cpu="vnni")
    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    with legacy_ir():
        program, _, fetches = load_inference_program(exe, scope, result.model_file, result.params_file)
        simulated = exe.run(program, feed=feeds[0], fetch_list=fetches, scope=scope)[0]
    deployed = predict(predictor(str(result.model_file), str(result.params_file), int8=True), feeds[0])[0]
    steps = float(np.abs(deployed - simulated).max() / (np.abs(simulated).max() / 127))
    # 30-35 output steps with the relu (oneDNN reads the s8 residual into its u8 output, every CPU); 2-6 left on
    # this AVX2 CPU (odd weights halved there, and the residual rounded to s8 where the program adds it in float)
    assert steps <= 8.0
