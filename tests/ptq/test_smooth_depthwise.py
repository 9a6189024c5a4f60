"""quant_post(smooth_depthwise=True): every input channel of a quantized depthwise conv brought to one range.

Oracles: the Paddle Executor on the program before and after the rewrite (exact algebra: equal within
float rounding), the per-channel maxima of the rewritten depthwise input read back (all 1 on the
calibration data), the planned targets on small programs, and quant_post's int8 error against fp32
with and without the option.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

import paddle_quant as quant
from paddle_quant.common.errors import ConfigError
from paddle_quant.ptq.config import PTQConfig
from paddle_quant.ptq.steps import depthwise_targets, prepare_fp32

from support.inference import save_built_model

SPREAD = np.array([0.05, 1.0, 0.1, 6.0, 0.02, 0.5, 3.0, 0.2], np.float32)
"""Per-channel gain before hard_swish: the depthwise input's channel ranges differ up to ~100x."""
CHANNELS = len(SPREAD)


def _elementwise(op_type, x, y, name, axis=-1):
    block = paddle.static.default_main_program().global_block()
    out = block.create_var(name=name, dtype="float32", shape=max(x.shape, y.shape, key=len))
    block.append_op(type=op_type, inputs={"X": [x], "Y": [y]}, outputs={"Out": [out]}, attrs={"axis": axis})
    return out


def _net(second_reader=False):
    """conv -> * gain[C] -> hard_swish -> a * h + b (a, b of shape [1], PP-LCNetV3's learnable affine) ->
    3x3 depthwise conv (padded) -> 1x1 conv; with ``second_reader`` a 1x1 conv reads the affine output too."""
    x = paddle.static.data("x", [None, 3, 9, 9], "float32")
    constant = paddle.nn.initializer.Constant
    gain = paddle.static.create_parameter([CHANNELS], "float32", name="gain",
                                          default_initializer=paddle.nn.initializer.Assign(SPREAD))
    h = F.hardswish(_elementwise("elementwise_mul", paddle.static.nn.conv2d(x, CHANNELS, 3, padding=1), gain,
                                 "gained", axis=1))
    a = paddle.static.create_parameter([1], "float32", name="lab_a", default_initializer=constant(1.5))
    b = paddle.static.create_parameter([1], "float32", name="lab_b", default_initializer=constant(0.1))
    shifted = _elementwise("elementwise_add", _elementwise("elementwise_mul", a, h, "scaled"), b, "shifted")
    depthwise = paddle.nn.Conv2D(CHANNELS, CHANNELS, 3, padding=1, groups=CHANNELS, bias_attr=False)(shifted)
    out = paddle.static.nn.conv2d(depthwise, 4, 1)
    if second_reader:
        out = out + paddle.static.nn.conv2d(shifted, 4, 1)
    return [x], [paddle.flatten(out, 1)]


def _load(folder):
    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        program, _, fetches = paddle.static.load_inference_model(str(folder / "model"), exe)
    return program, scope, fetches, exe


def _run(program, scope, fetches, exe, batch):
    with paddle.static.scope_guard(scope):
        return exe.run(program, feed={"x": batch}, fetch_list=fetches)


def _batches(rng, count=3):
    return [rng.normal(0, 1, (4, 3, 9, 9)).astype("float32") for _ in range(count)]


def _depthwise_input(program):
    return next(op for op in program.global_block().ops if op.type == "depthwise_conv2d").input("Input")[0]


def test_the_depthwise_input_is_planned_and_a_shared_one_is_not(tmp_path):
    program, *_ = _load(save_built_model(tmp_path / "m", _net))
    assert [t.var for t in depthwise_targets(program, ("conv2d", "depthwise_conv2d"))] == ["shifted"]
    assert depthwise_targets(program, ("conv2d",)) == ()  # depthwise convs not quantized: nothing to gain
    shared, *_ = _load(save_built_model(tmp_path / "s", lambda: _net(second_reader=True)))
    assert depthwise_targets(shared, ("conv2d", "depthwise_conv2d")) == ()


def test_every_channel_peaks_at_one_and_the_fp32_outputs_stay(tmp_path, rng):
    program, scope, fetches, exe = _load(save_built_model(tmp_path / "m", _net))
    batches = _batches(rng)
    before = [_run(program, scope, fetches, exe, b)[0] for b in batches]
    ptq = PTQConfig(smooth_depthwise=True, quantizable_op_type=("conv2d", "depthwise_conv2d"))
    prepare_fp32(exe, program, scope, paddle.CPUPlace(), ptq, lambda: iter([{"x": b} for b in batches]), ["x"])
    assert _depthwise_input(program) == "shifted"
    for batch, expected in zip(batches, before):
        np.testing.assert_allclose(_run(program, scope, fetches, exe, batch)[0], expected, rtol=1e-5,
                                   atol=1e-5 * np.abs(expected).max())
    fetched = [_run(program, scope, ["shifted"], exe, b)[0] for b in batches]
    peaks = np.max([np.abs(v).max(axis=(0, 2, 3)) for v in fetched], axis=0)
    np.testing.assert_allclose(peaks, 1.0, rtol=1e-5)
    np.testing.assert_array_equal(np.array(scope.find_var("lab_a").get_tensor()), [1.5])  # copies, not in place


def _depthwise_output(program):
    return next(op for op in program.global_block().ops if op.type == "depthwise_conv2d").output("Output")[0]


def _int8_error(folder, out, batches, **options):
    """The worst channel's error of the depthwise conv's output, relative to that channel's range (the
    depthwise conv alone quantized)."""
    program, scope, _, exe = _load(folder)
    quant.quant_post(exe, str(folder), str(out), algo="abs_max", data_loader=lambda: iter([{"x": b} for b in batches]),
                     quantizable_op_type=["depthwise_conv2d"], show_progress=False, **options)
    q_program, q_scope, _, _ = _load(out)
    errors = []
    for batch in batches:
        expected = _run(program, scope, [_depthwise_output(program)], exe, batch)[0]
        got = _run(q_program, q_scope, [_depthwise_output(q_program)], exe, batch)[0]
        errors.append(np.abs(got - expected).max(axis=(0, 2, 3)) / np.abs(expected).max(axis=(0, 2, 3)))
    return float(np.max(errors)), q_program


def test_quant_post_smooths_the_depthwise_input_and_the_int8_model_runs_closer_to_fp32(tmp_path, rng, caplog):
    folder, batches = save_built_model(tmp_path / "m", _net), _batches(rng)
    plain, _ = _int8_error(folder, tmp_path / "plain", batches)
    with caplog.at_level(logging.INFO, logger="paddle_quant"):
        smoothed, q_program = _int8_error(folder, tmp_path / "smoothed", batches, smooth_depthwise=True)
    assert "smooth_depthwise: 1 depthwise conv input(s) brought to one range per channel (1 conv(s))" in caplog.text
    reads = {n for op in q_program.global_block().ops for n in op.input_arg_names}
    assert {"lab_a@smoothed", "lab_b@smoothed"} <= reads
    assert smoothed < plain / 10, (smoothed, plain)  # 0.017 against 1.36: the small channels no longer round to 0


def test_a_model_without_a_smoothable_depthwise_input_warns(tmp_path, rng, caplog):
    folder, batches = save_built_model(tmp_path / "m", _net), _batches(rng, 1)
    with caplog.at_level(logging.WARNING, logger="paddle_quant"):
        quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(folder), str(tmp_path / "q"), algo="abs_max",
                         data_loader=lambda: iter([{"x": b} for b in batches]), quantizable_op_type=["conv2d"],
                         show_progress=False, smooth_depthwise=True)
    assert "smooth_depthwise: no tensor to smooth" in caplog.text


def test_bad_combinations_are_refused_by_name(tmp_path, rng):
    with pytest.raises(ConfigError, match="'smooth_depthwise' got True but weight_quantize_type is 'abs_max'"):
        PTQConfig(smooth_depthwise=True, weight_quantize_type="abs_max")
    folder, batches = save_built_model(tmp_path / "m", _net), _batches(rng, 1)
    exe = paddle.static.Executor(paddle.CPUPlace())
    with pytest.raises(ConfigError, match="data_loader is an iterator that can be read once.*smooth_depthwise"):
        quant.quant_post(exe, str(folder), str(tmp_path / "q"), data_loader=iter([{"x": b} for b in batches]),
                         smooth_depthwise=True)


def test_the_scale_table_records_the_smoothing_and_reapplies_it_without_data(tmp_path, rng):
    folder, batches = save_built_model(tmp_path / "m", _net), _batches(rng)
    exe, options = paddle.static.Executor(paddle.CPUPlace()), dict(quantizable_op_type=["depthwise_conv2d"],
                                                                   show_progress=False)
    first = quant.quant_post(exe, str(folder), str(tmp_path / "first"), data_loader=lambda: iter(
        [{"x": b} for b in batches]), smooth_depthwise=True, **options)
    table = json.loads(first.scale_table.read_text())
    assert list(table["smoothing"]) == ["shifted"] and len(table["smoothing"]["shifted"]) == CHANNELS
    again = quant.quant_post(exe, str(folder), str(tmp_path / "again"), scale_table=str(first.scale_table),
                             smooth_depthwise=True, **options)
    assert again.params_file.read_bytes() == first.params_file.read_bytes()
    assert again.model_file.read_bytes() == first.model_file.read_bytes()
    with pytest.raises(ConfigError, match=r"records smoothing scales for \['shifted'\].*smooth_depthwise=False"):
        quant.quant_post(exe, str(folder), str(tmp_path / "q"), scale_table=str(first.scale_table), **options)
    plain = quant.quant_post(exe, str(folder), str(tmp_path / "plain"), data_loader=lambda: iter(
        [{"x": b} for b in batches]), **options)
    assert "smoothing" not in json.loads(plain.scale_table.read_text())  # tables without smoothing keep their layout
    with pytest.raises(ConfigError, match=r"records no smoothing scales for \['shifted'\]"):
        quant.quant_post(exe, str(folder), str(tmp_path / "q"), scale_table=str(plain.scale_table),
                         smooth_depthwise=True, **options)


# ---------------------------------------------------------------- deploy_backend="onednn"'s default
def test_onednn_smooths_and_folds_by_default_and_explicit_values_win():
    onednn = PTQConfig(deploy_backend="onednn")
    assert onednn.effective_smooth_depthwise and onednn.effective_fold_input_affine
    assert not PTQConfig().effective_smooth_depthwise and not PTQConfig().effective_fold_input_affine
    assert not PTQConfig(deploy_backend="onnx").effective_smooth_depthwise
    assert not PTQConfig(deploy_backend="onednn", smooth_depthwise=False).effective_smooth_depthwise
    assert not PTQConfig(deploy_backend="onednn", fold_input_affine=False).effective_fold_input_affine
    # a per-tensor weight scale cannot take a channel's range; oneDNN without VNNI runs depthwise convs in float
    assert not PTQConfig(deploy_backend="onednn", weight_quantize_type="abs_max").effective_smooth_depthwise
    assert not PTQConfig(deploy_backend="onednn", onednn_cpu="avx2").effective_smooth_depthwise


def _onednn_post(folder, out, data_loader, **options):
    return quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(folder), str(out), algo="abs_max",
                            data_loader=data_loader, quantizable_op_type=["conv2d", "depthwise_conv2d"],
                            deploy_backend="onednn", show_progress=False, **options)


def _net_with_a_foldable_affine():
    """:func:`_net` with a second learnable affine between the depthwise conv and the 1x1 conv (foldable into it)."""
    (x,), _ = _net()
    block = paddle.static.default_main_program().global_block()
    depthwise = _depthwise_output(paddle.static.default_main_program())
    constant = paddle.nn.initializer.Constant
    a = paddle.static.create_parameter([1], "float32", name="lab2_a", default_initializer=constant(0.7))
    b = paddle.static.create_parameter([1], "float32", name="lab2_b", default_initializer=constant(-0.2))
    lab = _elementwise("elementwise_add", _elementwise("elementwise_mul", a, block.var(depthwise), "scaled2"), b,
                       "shifted2")
    return [x], [paddle.flatten(paddle.static.nn.conv2d(lab, 4, 1), 1)]


def test_onednn_by_default_smooths_the_depthwise_input_and_folds_the_affine_into_the_1x1_conv(tmp_path, rng):
    folder, batches = save_built_model(tmp_path / "m", _net_with_a_foldable_affine), _batches(rng)
    feeds = [{"x": b} for b in batches]
    default = _onednn_post(folder, tmp_path / "default", lambda: iter(feeds))
    assert list(json.loads(default.scale_table.read_text())["smoothing"]) == ["shifted"]
    reads = {n for op in _load(tmp_path / "default")[0].global_block().ops for n in op.input_arg_names}
    assert "lab_a@smoothed" in reads and not {"lab2_a", "shifted2"} & reads  # smoothed; the 1x1 conv's chain folded
    off = _onednn_post(folder, tmp_path / "off", lambda: iter(feeds), smooth_depthwise=False, fold_input_affine=False)
    assert "smoothing" not in json.loads(off.scale_table.read_text())
    reads = {n for op in _load(tmp_path / "off")[0].global_block().ops for n in op.input_arg_names}
    assert {"lab_a", "lab2_a", "shifted2"} <= reads


def test_onednn_default_smoothing_stays_off_where_it_cannot_run_and_says_why(tmp_path, rng, caplog):
    folder, batches = save_built_model(tmp_path / "m", _net), _batches(rng)
    feeds = [{"x": b} for b in batches]
    with caplog.at_level(logging.WARNING, logger="paddle_quant"):
        once = _onednn_post(folder, tmp_path / "once", iter(feeds))  # an explicit True refuses this data
    assert "smooth_depthwise (the default of deploy_backend='onednn') is off for this run: data_loader can be read " \
           "only once" in caplog.text
    assert "smoothing" not in json.loads(once.scale_table.read_text())
    caplog.clear()
    off = _onednn_post(folder, tmp_path / "off", lambda: iter(feeds), smooth_depthwise=False)
    with caplog.at_level(logging.WARNING, logger="paddle_quant"):
        again = _onednn_post(folder, tmp_path / "again", None, scale_table=str(off.scale_table))
    assert "the scale table re-applied records no smoothing scales" in caplog.text
    assert again.params_file.read_bytes() == off.params_file.read_bytes()
