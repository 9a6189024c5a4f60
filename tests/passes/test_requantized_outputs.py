"""passes/requantized_outputs.py: every reader of a tensor an int8 conv requantizes reads it rounded.

Oracles: Paddle Inference oneDNN int8 running the saved model (on a CPU with VNNI/AMX), and the ops read
back from the saved program.
"""

from __future__ import annotations

import paddle
import pytest

import paddle_quant as quant
from paddle_quant.common.model_files import load_inference_program
from paddle_quant.common.program import legacy_ir
from paddle_quant.passes.requantized_outputs import round_requantized_outputs

from test_unsigned_grid import _conv, _quantize, _x


def _residual_net():
    """r = conv(x); conv(conv(r) + r): the residual is written by an int8 conv and read by a quantized one."""
    x = _x()
    r = _conv(x, 8)
    return [x], [_conv(_conv(r, 8) + r, 8)]


def _feed_residual_net():
    """conv(x) + x: the residual is the feed, quantized by oneDNN for the conv alone."""
    x = _x()
    return [x], [_conv(x, 8) + x]


def _chained_residual_net(own_input):
    """Two residual blocks ``t + conv(conv(t))`` (oneDNN fuses the add into the second conv, so the first block's
    output, the second's residual, is an int8 conv's output) or, ``own_input``, ``t + conv(t)`` (the residual is
    the conv's own input: oneDNN keeps the add a float op)."""
    x = _x()
    r = _conv(x, 8)
    block = (lambda t: _conv(t, 8) + t) if own_input else (lambda t: _conv(_conv(t, 8), 8) + t)
    return [x], [_conv(block(block(r)), 8)]


def _program(result):
    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    with legacy_ir():
        program, _, _ = load_inference_program(exe, scope, result.model_file, result.params_file)
    return program


def _adds_read_rounded(program) -> list[bool]:
    """Per add of two tensors: whether it reads an operand through a rounding (not observer) dequantize_linear."""
    block = program.global_block()
    writers = {name: op for op in block.ops for name in op.output_arg_names}
    adds = [op for op in block.ops if op.type == "elementwise_add"
            and not any(block.var(name).persistable for name in op.input_arg_names)]
    return [any(writers[name].type == "dequantize_linear" and not writers[name].attr("only_observer")
                for name in add.input_arg_names if name in writers) for add in adds]


def _add_reads_rounded(program) -> bool:
    [rounded] = _adds_read_rounded(program)
    return rounded


def _within(result, feeds, steps):
    report = quant.verify(str(result.model_file.parent), runtime="onednn", inputs=feeds)
    if report.cpu_int8_dot_product:
        assert report.outputs[0].max_steps <= steps, report


def test_the_add_reads_the_residual_an_int8_conv_requantizes_rounded_as_onednn_does(tmp_path):
    result, feeds = _quantize(tmp_path, _residual_net)
    assert _add_reads_rounded(_program(result))
    _within(result, feeds, 0.01)  # 1.1 steps with the float residual added (checked)


@pytest.mark.parametrize("own_input", [False, True], ids=["fused", "own_input"])
def test_a_residual_block_output_is_requantized_for_the_next_block_where_onednn_fuses_the_add(tmp_path, own_input):
    result, feeds = _quantize(tmp_path, lambda: _chained_residual_net(own_input))
    assert _adds_read_rounded(_program(result)) == [True, not own_input]
    _within(result, feeds, 0.5)  # 1.9 (own input) and 1.2 (fused) steps with the other rounding (checked)


def test_a_feed_read_by_an_int8_conv_stays_float_for_its_other_readers(tmp_path):
    result, feeds = _quantize(tmp_path, _feed_residual_net)
    assert not _add_reads_rounded(_program(result))
    _within(result, feeds, 0.01)  # bench/onednn_patterns.py residual_add: 9.0 steps with the feed rounded (checked)


def test_the_pass_is_idempotent_and_only_for_onednn(tmp_path):
    result, _ = _quantize(tmp_path / "onednn", _residual_net)
    assert round_requantized_outputs(_program(result)) == []
    plain, _ = _quantize(tmp_path / "plain", _residual_net, backend=None)
    assert not _add_reads_rounded(_program(plain))
