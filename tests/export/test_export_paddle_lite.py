"""Paddle-Lite export: the structure check on real quantized models and the opt step's error handling.

Paddle-Lite itself (``paddle_lite_opt``, Python <= 3.9 only) is not installed where these tests run;
the end-to-end conversion and comparison is ``bench/paddle_lite_check.py``. Here the opt tool is a
shell script in ``tmp_path`` that behaves as the real one does (arguments, exit status, output).
The broken models below are the cases that ``bench/paddle_lite_check.py --check-vs-lite`` shows the
real paddle_lite_opt 2.13rc0 aborting on, crashing on, or converting into a different model.
"""

import os
import stat
import textwrap

import numpy as np
import paddle
import pytest

import paddle_quant as quant
from paddle_quant.common.errors import ConfigError, ExportError
from paddle_quant.export.paddle_lite import (PADDLE_LITE_TARGETS, check_paddle_lite_structure,
                                             export_paddle_lite, find_paddle_lite_opt)

from support.inference import save_model
from support.nets import conv_net, run

PLACE = paddle.CPUPlace()


# ---------------------------------------------------------------- models
def _qat_model(rng, folder, onnx_format, *, convert=True, **options):
    """A briefly QAT-trained conv net, converted (or not) and saved as ``folder/model.*``."""
    config = {"onnx_format": onnx_format, **options}
    net = conv_net(minimize=True)
    train = quant.quant_aware(net.main, PLACE, config, scope=net.scope)
    test = quant.quant_aware(net.test, PLACE, config, scope=net.scope, for_test=True)
    for _ in range(3):
        run(net, train, net.feed(rng, 32), [net.loss])
    program = quant.convert(test, PLACE, config, scope=net.scope) if convert else test
    save_model(net, program, folder / "model", ["x"], [net.logits])
    return folder


def _ptq_model(digits_model, folder):
    exe = paddle.static.Executor(PLACE)
    quant.quant_post(exe, str(digits_model.folder), str(folder), data_loader=digits_model.calibration_batches(),
                     algo="abs_max")
    return folder


def _edit_saved_model(folder, edit):
    """Load ``folder/model``, apply ``edit(program, scope)``, save it back in place."""
    scope, exe = paddle.static.Scope(), paddle.static.Executor(PLACE)
    prefix = str(folder / "model")
    with paddle.static.scope_guard(scope):
        program, feeds, fetches = paddle.static.load_inference_model(prefix, exe)
        edit(program, scope)
        block = program.global_block()
        paddle.static.save_inference_model(prefix, [block.var(n) for n in feeds], fetches, exe, program=program)
    return folder


def _ops(folder, op_type):
    scope, exe = paddle.static.Scope(), paddle.static.Executor(PLACE)
    with paddle.static.scope_guard(scope):
        program, _, _ = paddle.static.load_inference_model(str(folder / "model"), exe)
    return [op for op in program.global_block().ops if op.type == op_type]


def _errors(findings):
    return [f for f in findings if f.severity == "error"]


# ---------------------------------------------------------------- structure: good models
@pytest.mark.parametrize("onnx_format", [True, False], ids=["qdq", "old-format"])
def test_qat_converted_models_have_the_structure_paddle_lite_fuses(rng, tmp_path, onnx_format):
    folder = _qat_model(rng, tmp_path / "qat", onnx_format)
    assert check_paddle_lite_structure(folder) == []
    # the check looked at real quantization ops, not an empty model
    quant_ops = _ops(folder, "dequantize_linear" if onnx_format else "fake_channel_wise_dequantize_max_abs")
    assert len(quant_ops) >= 3


def test_ptq_model_has_the_structure_paddle_lite_fuses(digits_model, tmp_path):
    folder = _ptq_model(digits_model, tmp_path / "ptq")
    assert check_paddle_lite_structure(folder) == []


@pytest.mark.parametrize("onnx_format", [True, False], ids=["qdq", "old-format"])
def test_paddles_own_ptq_output_passes_the_check(digits_model, tmp_path, onnx_format):
    """Oracle: Paddle's PostTrainingQuantization output is what Paddle-Lite's fuse pass was written for."""
    from paddle.static.quantization import PostTrainingQuantization

    ptq = PostTrainingQuantization(
        executor=paddle.static.Executor(PLACE), model_dir=str(digits_model.folder), model_filename="model.pdmodel",
        params_filename="model.pdiparams", data_loader=digits_model.calibration_batches(), batch_nums=2,
        algo="abs_max", quantizable_op_type=["conv2d", "mul"], onnx_format=onnx_format)
    ptq.quantize()
    ptq.save_quantized_model(str(tmp_path / "paddle"), model_filename="model.pdmodel",
                             params_filename="model.pdiparams")
    assert _errors(check_paddle_lite_structure(tmp_path / "paddle")) == []


def test_float_model_gets_one_warning_and_no_error(digits_model):
    findings = check_paddle_lite_structure(digits_model.folder)
    assert [f.severity for f in findings] == ["warning"]
    assert "no quantization ops" in findings[0].message


# ---------------------------------------------------------------- structure: broken models
def _first(program, op_type, pred=lambda op: True):
    return next(op for op in program.global_block().ops if op.type == op_type and pred(op))


def _is_weight_dequant(program):
    return lambda op: program.global_block().var(op.input("X")[0]).persistable


def test_dequantize_reading_another_scale_than_its_quantize_is_an_error(rng, tmp_path):
    folder = _qat_model(rng, tmp_path / "m", True)

    def edit(program, scope):
        weight_dequant = _first(program, "dequantize_linear", _is_weight_dequant(program))
        act_dequant = _first(program, "dequantize_linear", lambda op: op is not weight_dequant
                             and not program.global_block().var(op.input("X")[0]).persistable)
        act_dequant.desc.set_input("Scale", weight_dequant.input("Scale"))

    findings = _errors(check_paddle_lite_structure(_edit_saved_model(folder, edit)))
    assert len(findings) == 1 and findings[0].op_type == "quantize_linear"
    assert "one scale variable" in findings[0].message


def test_float_weight_behind_dequantize_linear_is_an_error(rng, tmp_path):
    folder = _qat_model(rng, tmp_path / "m", True)
    names = []

    def edit(program, scope):
        op = _first(program, "dequantize_linear", _is_weight_dequant(program))
        name = op.input("X")[0]
        names.append(name)
        values = np.array(scope.find_var(name).get_tensor()).astype("float32")
        program.global_block().var(name).desc.set_dtype(paddle.base.core.VarDesc.VarType.FP32)
        scope.find_var(name).get_tensor().set(values, PLACE)

    findings = _errors(check_paddle_lite_structure(_edit_saved_model(folder, edit)))
    assert [f.op_type for f in findings] == ["dequantize_linear"]
    assert names[0] in findings[0].message and "float32" in findings[0].message


def test_weight_scales_on_the_wrong_axis_are_an_error(rng, tmp_path):
    folder = _qat_model(rng, tmp_path / "m", True)

    def edit(program, scope):
        _first(program, "dequantize_linear", _is_weight_dequant(program))._set_attr("quant_axis", 1)

    findings = _errors(check_paddle_lite_structure(_edit_saved_model(folder, edit)))
    assert len(findings) == 1 and "quant_axis=1" in findings[0].message and "axis 0" in findings[0].message


def test_missing_zero_point_and_bit_length_are_errors(rng, tmp_path):
    folder = _qat_model(rng, tmp_path / "m", True)

    def edit(program, scope):
        op = _first(program, "quantize_linear")
        op.desc.set_input("ZeroPoint", [])
        op.desc.remove_attr("bit_length")

    messages = [f.message for f in _errors(check_paddle_lite_structure(_edit_saved_model(folder, edit)))]
    assert any("ZeroPoint" in m for m in messages) and any("'bit_length' missing" in m for m in messages)


def test_activation_dequantize_without_its_quantize_is_an_error(rng, tmp_path):
    folder = _qat_model(rng, tmp_path / "m", True)

    def edit(program, scope):
        block = program.global_block()
        index = next(i for i, op in enumerate(block.ops) if op.type == "quantize_linear")
        source, target = block.ops[index].input("X")[0], block.ops[index].output("Y")[0]
        block._remove_op(index)  # the dequantize now reads the float tensor directly
        next(op for op in block.ops if op.type == "dequantize_linear"
             and op.input("X")[0] == target).desc.set_input("X", [source])

    findings = _errors(check_paddle_lite_structure(_edit_saved_model(folder, edit)))
    assert [f.op_type for f in findings] == ["dequantize_linear"] and "no quantize_linear" in findings[0].message


def test_bit_length_other_than_8_is_a_warning_not_an_error(rng, tmp_path):
    folder = _qat_model(rng, tmp_path / "m", True)

    def edit(program, scope):
        _first(program, "quantize_linear")._set_attr("bit_length", 4)

    findings = check_paddle_lite_structure(_edit_saved_model(folder, edit))
    assert [(f.severity, f.op_type) for f in findings] == [("warning", "quantize_linear")]
    assert "bit_length=4" in findings[0].message


@pytest.mark.parametrize("onnx_format", [True, False], ids=["qdq", "old-format"])
def test_seven_bit_models_warn_in_qdq_and_fail_in_the_old_format(rng, tmp_path, onnx_format):
    """paddle_lite_opt aborts with 'Not support, bit_length= 7' on the old format; QDQ 7-bit runs."""
    folder = _qat_model(rng, tmp_path / "m", onnx_format, weight_bits=7, activation_bits=7)
    findings = check_paddle_lite_structure(folder)
    assert findings and all("bit_length=7" in f.message or "quant_bits[0]=7" in f.message for f in findings)
    assert {f.severity for f in findings} == ({"warning"} if onnx_format else {"error"})


@pytest.mark.parametrize("onnx_format", [True, False], ids=["qdq", "old-format"])
def test_unconverted_eval_program_is_an_error(rng, tmp_path, onnx_format):
    """Measured: paddle_lite_opt aborts on the QDQ one ('Check failed: !input_var_node->arg()->is_weight')."""
    folder = _qat_model(rng, tmp_path / "m", onnx_format, convert=False)
    findings = _errors(check_paddle_lite_structure(folder))
    assert findings, "an eval program with training-time weight quantizers must be refused"
    assert all("convert" in f.message for f in findings)


def test_old_format_weight_off_the_integer_grid_is_an_error(rng, tmp_path):
    folder = _qat_model(rng, tmp_path / "m", False)

    def edit(program, scope):
        conv = _first(program, "conv2d")
        name = conv.input("Filter")[0]
        values = np.array(scope.find_var(name).get_tensor())
        scope.find_var(name).get_tensor().set(values + 0.25, PLACE)

    findings = _errors(check_paddle_lite_structure(_edit_saved_model(folder, edit)))
    assert len(findings) == 1 and findings[0].op_type == "conv2d" and "integer grid" in findings[0].message


def test_missing_model_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="model_dir"):
        check_paddle_lite_structure(tmp_path / "absent")


# ---------------------------------------------------------------- export_paddle_lite with fake tools
def _script(tmp_path, body, name="paddle_lite_opt"):
    """An executable shell script standing in for paddle_lite_opt."""
    path = tmp_path / "bin" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# Writes "<--optimize_out>.nb" holding its arguments, as the real tool writes "<optimize_out>.nb".
SUCCEEDS = """\
    for arg in "$@"; do
      case "$arg" in --optimize_out=*) out="${arg#--optimize_out=}";; esac
    done
    printf '%s\\n' "$@" > "$out.nb"
    echo "2. Model is optimized and saved into $out.nb successfully"
    """
FAILS = """\
    echo "Loading topology data from model"
    echo "Error: This model is not supported, because 1 ops are not supported on 'arm'." >&2
    echo "These unsupported ops are: 'foo_op'." >&2
    exit 134
    """


@pytest.fixture
def fp32_dir(digits_model):
    return digits_model.folder


def test_missing_tool_path_is_a_config_error_saying_how_to_install(fp32_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"pip install paddlelite==2\.13rc0"):
        export_paddle_lite(fp32_dir, tmp_path / "out" / "m", opt=tmp_path / "nowhere" / "paddle_lite_opt")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_no_tool_on_path_is_a_config_error(fp32_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="no paddle_lite_opt on PATH"):
        export_paddle_lite(fp32_dir, tmp_path / "m")


def test_tool_found_on_path(tmp_path, monkeypatch):
    tool = _script(tmp_path, SUCCEEDS)
    monkeypatch.setenv("PATH", str(tool.parent))
    assert find_paddle_lite_opt() == tool


def test_missing_model_is_refused_before_the_tool_runs(tmp_path):
    tool = _script(tmp_path, "touch \"$0.ran\"\n")
    with pytest.raises(ConfigError, match="model_dir"):
        export_paddle_lite(tmp_path / "absent", tmp_path / "m", opt=tool)
    assert not (tmp_path / "bin" / "paddle_lite_opt.ran").exists()


@pytest.mark.parametrize("targets", [("riscv",), (), ("x86", "cuda")])
def test_unknown_targets_are_refused(fp32_dir, tmp_path, targets):
    with pytest.raises(ConfigError, match="valid_targets") as info:
        export_paddle_lite(fp32_dir, tmp_path / "m", valid_targets=targets, opt=_script(tmp_path, SUCCEEDS))
    assert all(t in str(info.value) for t in PADDLE_LITE_TARGETS)


def test_failing_tool_raises_with_its_stderr_and_keeps_the_old_output(fp32_dir, tmp_path):
    (tmp_path / "out").mkdir()
    old = tmp_path / "out" / "m.nb"
    old.write_bytes(b"previous model")
    with pytest.raises(ExportError, match="exit status 134") as info:
        export_paddle_lite(fp32_dir, tmp_path / "out" / "m", opt=_script(tmp_path, FAILS))
    assert "These unsupported ops are: 'foo_op'" in str(info.value)
    assert isinstance(info.value, RuntimeError) and info.type is quant.ExportError  # a run failure, not bad input
    assert old.read_bytes() == b"previous model"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m.nb"]  # no staging folder left


def test_tool_that_exits_zero_without_writing_is_an_error(fp32_dir, tmp_path):
    with pytest.raises(ExportError, match="no .nb written"):
        export_paddle_lite(fp32_dir, tmp_path / "m", opt=_script(tmp_path, "echo 'Error: something'\n"))
    assert not (tmp_path / "m.nb").exists()


def test_tool_past_its_timeout_is_an_error(fp32_dir, tmp_path):
    with pytest.raises(ExportError, match="timeout"):
        export_paddle_lite(fp32_dir, tmp_path / "m", opt=_script(tmp_path, "sleep 5\n"), timeout=0.5)


def test_successful_run_writes_the_nb_atomically_with_the_right_arguments(fp32_dir, tmp_path):
    before = {p.name: p.read_bytes() for p in fp32_dir.iterdir()}
    out = export_paddle_lite(fp32_dir, tmp_path / "deploy" / "digits", valid_targets=("x86", "arm"),
                             opt=_script(tmp_path, SUCCEEDS))
    assert out == tmp_path / "deploy" / "digits.nb"
    args = out.read_text().splitlines()
    assert f"--model_file={fp32_dir / 'model.pdmodel'}" in args
    assert f"--param_file={fp32_dir / 'model.pdiparams'}" in args
    assert "--valid_targets=x86,arm" in args and "--optimize_out_type=naive_buffer" in args
    staging = [a for a in args if a.startswith("--optimize_out=")][0]
    assert not os.path.exists(staging.split("=", 1)[1] + ".nb")  # renamed away from the staging folder
    assert sorted(p.name for p in out.parent.iterdir()) == ["digits.nb"]
    assert {p.name: p.read_bytes() for p in fp32_dir.iterdir()} == before  # model_dir untouched


def test_output_prefix_ending_in_nb_is_the_file_itself(fp32_dir, tmp_path):
    out = export_paddle_lite(fp32_dir, tmp_path / "m.nb", opt=_script(tmp_path, SUCCEEDS))
    assert out == tmp_path / "m.nb" and out.is_file() and not (tmp_path / "m.nb.nb").exists()
