"""What Paddle Inference's oneDNN int8 fc computes, and why a oneDNN model keeps weight matmuls in float.

Oracle: Paddle Inference (oneDNN int8) running a saved QDQ model with one Linear layer, against a numpy
model of the arithmetic read from Paddle's sources: ``compute_propagate_scales_onednn_pass`` takes
the weight scale of output column ``o`` from the maximum of the contiguous run
``W.flat[o * IC:(o + 1) * IC]`` of the (IC, OC) weight (``GetScales``, axis 0), and oneDNN rounds
``W * 127 / that maximum`` to int8 with saturation. On a CPU without VNNI/AMX oneDNN also adds each
pair of products ``(x + 128) * w`` in 16 bits with saturation (its s8s8 gemm shifts the input to u8).
"""

from __future__ import annotations

import logging

import numpy as np
import paddle

import paddle_quant as quant
from paddle_quant.common.backends import ONEDNN_FC_REASON
from paddle_quant.common.model_files import load_inference_program
from paddle_quant.common.program import legacy_ir, read_tensor
from paddle_quant.deploy.cpu import int8_dot_product
from paddle_quant.deploy.optimized import onednn_int8_program

from support.inference import predict, predictor, save_built_model

IC, OC = 48, 64


def _linear_model(folder):
    def build():
        x = paddle.static.data("x", [-1, IC], "float32")
        return [x], [paddle.nn.Linear(IC, OC)(x)]
    paddle.seed(0)
    return save_built_model(folder, build)


def _int8_linear(tmp_path, rng):
    """The Linear quantized as PaddleSlim does it (no deploy backend): per-column int8 weights."""
    feeds = [{"x": rng.standard_normal((8, IC)).astype("float32")} for _ in range(2)]
    return quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(_linear_model(tmp_path / "fp32")),
                            str(tmp_path / "int8"), data_loader=lambda: feeds, algo="abs_max",
                            quantizable_op_type=["matmul_v2"], output_scales="none")


def _program_values(result):
    """(input scale, float weight as Paddle restores it, bias) of the saved int8 Linear."""
    with legacy_ir():
        exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
        program, _, _ = load_inference_program(exe, scope, result.model_file, result.params_file)
        ops = program.global_block().ops
        x_scale = float(read_tensor(scope, next(op for op in ops if op.type == "quantize_linear").input("Scale")[0])[0])
        weight_dq = next(op for op in ops if op.type == "dequantize_linear"
                         and program.global_block().var(op.input("X")[0]).persistable)
        q, s = read_tensor(scope, weight_dq.input("X")[0]), read_tensor(scope, weight_dq.input("Scale")[0])
        bias = read_tensor(scope, next(op for op in ops if op.type == "elementwise_add").input("Y")[0])
    weight = (q.astype(np.float32) * (s.astype(np.float32) / np.float32(127))[None, :]).astype(np.float64)
    return x_scale, weight, bias.astype(np.float64)


def _onednn_fc(x, x_scale, weight, bias, column_max, pair_sums_saturate):
    """oneDNN's int8 fc: input and weights rounded at their scales, int32 sums (16-bit pair sums when
    ``pair_sums_saturate``), rescaled, plus the float bias."""
    xq = np.clip(np.round(x.astype(np.float64) / x_scale * 127), -128, 127)
    wq = np.clip(np.round(weight * 127 / column_max[None, :]), -128, 127)
    if pair_sums_saturate:
        shifted = xq + 128
        pairs = shifted[:, 0::2, None] * wq[None, 0::2, :] + shifted[:, 1::2, None] * wq[None, 1::2, :]
        sums = np.clip(pairs, -32768, 32767).sum(axis=1) - 128 * wq.sum(axis=0)[None, :]
    else:
        sums = xq @ wq
    return sums * (x_scale / 127) * (column_max / 127)[None, :] + bias


def test_onednn_fc_takes_weight_scales_from_contiguous_runs_of_the_weight(tmp_path):
    rng = np.random.default_rng(0)
    result = _int8_linear(tmp_path, rng)
    x_scale, weight, bias = _program_values(result)
    x = rng.standard_normal((8, IC)).astype("float32")
    deployed = predict(predictor(str(result.model_file), str(result.params_file), int8=True), {"x": x})[0]
    step = np.abs(deployed).max() / 127
    saturate = not int8_dot_product()
    runs = np.abs(weight.reshape(-1)).reshape(OC, IC).max(axis=1)     # Paddle's rule
    columns = np.abs(weight).max(axis=0)                               # what the program states
    paddles_rule = _onednn_fc(x, x_scale, weight, bias, runs, saturate)
    programs_rule = _onednn_fc(x, x_scale, weight, bias, columns, saturate)
    assert not np.allclose(runs, columns)
    assert np.abs(deployed - paddles_rule).max() / step < 1e-3          # measured 1.5e-5 (float rounding) on AVX2
    assert np.abs(deployed - programs_rule).mean() / step > 0.05         # measured 0.43 mean on AVX2


def _conv_transpose_linear_model(folder):
    def build():
        x = paddle.static.data("x", [-1, 8, 4, 4], "float32")
        y = paddle.static.nn.conv2d(x, 16, 3, padding=1)
        tokens = paddle.reshape(paddle.transpose(y, [0, 2, 3, 1]), [-1, 16, 16])
        return [x], [paddle.nn.Linear(16, 12)(tokens)]
    paddle.seed(0)
    return save_built_model(folder, build)


def test_onednn_models_keep_weight_matmuls_in_float_and_their_inputs_unscaled(tmp_path, caplog):
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((4, 8, 4, 4)).astype("float32")} for _ in range(2)]
    model = _conv_transpose_linear_model(tmp_path / "fp32")
    with caplog.at_level(logging.WARNING, logger="paddle_quant"):
        result = quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(model), str(tmp_path / "int8"),
                                  data_loader=lambda: feeds, algo="abs_max", deploy_backend="onednn",
                                  onednn_cpu="vnni", quantizable_op_type=["conv2d", "matmul_v2"])
    assert any(s.startswith("matmul_v2") and ONEDNN_FC_REASON in s for s in result.skipped_ops)
    assert ONEDNN_FC_REASON in caplog.text
    assert any(name.endswith(".w_0") and name.startswith("conv2d") for name in result.quantized_tensors)
    # the conv's output scale would reach the Linear through transpose/reshape (oneDNN would run it in int8)
    int8_ops = [op.type for op in onednn_int8_program(result.model_file, result.params_file)
                if op.int8_input or op.int8_output]
    assert "fused_conv2d" in int8_ops
    assert "fc" not in int8_ops and "fused_matmul" not in int8_ops, int8_ops


def _two_linear_model(folder):
    """Linear -> relu -> Linear whose first weight has one contiguous run of tiny values (row 0): Paddle's rule
    gives that run's column a tiny weight scale, so oneDNN clips the column's other weights."""
    first = np.random.default_rng(2).standard_normal((IC, OC)).astype("float32") * 0.2
    first[0, :IC] = 1e-3

    def build():
        x = paddle.static.data("x", [-1, IC], "float32")
        hidden = paddle.nn.functional.relu(paddle.nn.Linear(
            IC, OC, weight_attr=paddle.ParamAttr(initializer=paddle.nn.initializer.Assign(first)))(x))
        return [x], [paddle.nn.Linear(OC, 8)(hidden)]
    paddle.seed(0)
    return save_built_model(folder, build)


def test_locate_names_the_int8_fc_and_its_weight_scale_rule(tmp_path):
    rng = np.random.default_rng(3)
    feeds = [{"x": rng.standard_normal((8, IC)).astype("float32")} for _ in range(2)]
    result = quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(_two_linear_model(tmp_path / "fp32")),
                              str(tmp_path / "int8"), data_loader=lambda: feeds, algo="abs_max",
                              quantizable_op_type=["matmul_v2"], output_scales="all")
    report = quant.verify(result.model_file.parent, "onednn", feeds[:1], repeats=1, locate=True)
    found = report.divergence
    assert found is not None and found.first is not None, report.table()
    assert found.first.candidate.producer in ("elementwise_add", "relu")   # the first Linear's output
    assert found.first.max_steps > 5, report.table()
    assert "runs of the (in, out) weight" in found.rule, found.rule
