"""passes/residual_inputs.py: a residual add oneDNN fuses into an int8 conv reads its residual rounded.

Oracles: Paddle Inference oneDNN int8 running the saved model (on a CPU with VNNI/AMX), and the ops read
back from the saved program.
"""

from __future__ import annotations

import paddle

import paddle_quant as quant
from paddle_quant.common.model_files import load_inference_program
from paddle_quant.common.program import legacy_ir
from paddle_quant.passes.residual_inputs import quantize_residual_inputs

from support.inference import save_built_model
from test_unsigned_grid import _conv, _quantize, _x


def _residual_net():
    """r = conv(x); conv(conv(r) + r): the residual is also read by a quantized conv."""
    x = _x()
    r = _conv(x, 8)
    return [x], [_conv(_conv(r, 8) + r, 8)]


def _two_branches():
    """conv(x) + conv(x): which branch oneDNN fuses is its choice; left alone."""
    x = _x()
    return [x], [_conv(_conv(x, 8) + _conv(x, 8), 8)]


def _program(result):
    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    with legacy_ir():
        program, _, _ = load_inference_program(exe, scope, result.model_file, result.params_file)
    return program


def _residual_add(program):
    return next(op for op in program.global_block().ops if op.type == "elementwise_add"
                and not any(name.endswith(".b_0") or "@folded" in name for name in op.input_arg_names))


def _reads_rounded(program) -> bool:
    """Whether the residual add reads an operand through a rounding (not observer) dequantize_linear."""
    writers = {name: op for op in program.global_block().ops for name in op.output_arg_names}
    return any(writers[name].type == "dequantize_linear" and not writers[name].attr("only_observer")
               for name in _residual_add(program).input_arg_names if name in writers)


def test_the_fused_add_reads_the_residual_through_its_quantizer_and_runs_as_onednn_does(tmp_path):
    result, feeds = _quantize(tmp_path, _residual_net)
    assert _reads_rounded(_program(result))
    report = quant.verify(str(result.model_file.parent), runtime="onednn", inputs=feeds)
    if report.cpu_int8_dot_product:
        assert report.outputs[0].max_steps <= 0.01, report  # 1.1 steps with the float residual added (checked)


def test_the_pass_is_idempotent_and_leaves_two_conv_branches_alone(tmp_path):
    result, _ = _quantize(tmp_path / "residual", _residual_net)
    program = _program(result)
    assert quantize_residual_inputs(program) == []
    branches, _ = _quantize(tmp_path / "branches", _two_branches)
    assert not _reads_rounded(_program(branches))


def test_without_the_onednn_backend_the_add_reads_the_float_residual(tmp_path):
    result, _ = _quantize(tmp_path, _residual_net, backend=None)
    assert not _reads_rounded(_program(result))
