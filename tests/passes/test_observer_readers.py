"""freeze: with deploy_backend='onednn', a conv/matmul left in float reads an observed tensor itself.

Why: Paddle Inference's quant_dequant_onednn_pass runs a conv2d/depthwise_conv2d/mul/matmul
in int8 when every input it reads comes from a quantize/dequantize op. An output observer (an only_observer
QDQ pair) in front of a conv the program leaves in float would make oneDNN quantize that conv with weights
of its own choosing, which the Executor's simulation does not do. Oracles: the saved program's inputs, and
the ops oneDNN's optimized program runs (paddle_quant.deploy.optimized).
"""

from __future__ import annotations

import warnings

import numpy as np
import paddle

import paddle_quant as quant
from paddle_quant.common.model_files import load_inference_program
from paddle_quant.common.program import legacy_ir
from paddle_quant.deploy.optimized import onednn_int8_program

from support.inference import save_built_model


def _conv_depthwise_conv(folder):
    def build():
        x = paddle.static.data("x", [-1, 8, 12, 12], "float32")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y = paddle.static.nn.conv2d(x, 16, 3, padding=1)
            z = paddle.static.nn.conv2d(y, 16, 3, padding=1, groups=16, use_cudnn=False)
            out = paddle.static.nn.conv2d(z, 8, 1)
        return [x], [out]
    paddle.seed(0)
    return save_built_model(folder, build)


def _quantize(tmp_path, backend):
    model = _conv_depthwise_conv(tmp_path / "fp32")
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((4, 8, 12, 12)).astype("float32")} for _ in range(2)]
    return quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(model), str(tmp_path / str(backend)),
                            data_loader=lambda: feeds, algo="abs_max", quantizable_op_type=["conv2d"],
                            output_scales="all", deploy_backend=backend)


def _depthwise_input(result):
    with legacy_ir():
        exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
        program, _, _ = load_inference_program(exe, scope, result.model_file, result.params_file)
        block = program.global_block()
        depthwise = next(op for op in block.ops if op.type == "depthwise_conv2d")
        name = depthwise.input("Input")[0]
        writer = next(op for op in block.ops if name in op.output_arg_names)
        return name, writer.type


def test_onednn_float_depthwise_reads_the_observed_tensor_itself(tmp_path):
    result = _quantize(tmp_path, "onednn")
    name, writer = _depthwise_input(result)
    assert writer != "dequantize_linear", name
    ops = onednn_int8_program(result.model_file, result.params_file)
    convs = [op for op in ops if op.type in ("fused_conv2d", "depthwise_conv2d", "conv2d")]
    assert len(convs) == 3
    assert [op.int8_input for op in convs] == [True, False, True]  # the depthwise runs in float


def test_without_a_backend_the_observer_pair_is_read_as_paddleslim_writes_it(tmp_path):
    result = _quantize(tmp_path, None)
    _name, writer = _depthwise_input(result)
    assert writer == "dequantize_linear"
