"""ptq/onednn_cpu.py: models for oneDNN int8 on a CPU without VNNI/AMX (``onednn_cpu="avx2"``).

Oracles: Paddle Inference oneDNN int8 running the saved model against the Executor's simulation of
the same model (on this machine; an AVX2-only CPU is where the rule matters, a VNNI CPU runs the
even grid exactly too), and the integers read back from the saved program.
"""

from __future__ import annotations

import logging

import numpy as np
import paddle
import pytest

import paddle_quant as quant
from paddle_quant.common.errors import ConfigError
from paddle_quant.common.model_files import load_inference_program
from paddle_quant.common.program import legacy_ir, read_tensor
from paddle_quant.ptq.config import PTQConfig
from paddle_quant.ptq import onednn_cpu
from paddle_quant.common.numerics import scaled_weight, weight_to_int
from paddle_quant.common.program import write_tensor
from paddle_quant.export.scale_table import read_scale_table
from paddle_quant.ptq.adaround import nearest_rounding, rounded_weight
from paddle_quant.ptq.onednn_cpu import from_half_grid, half_grid_scale, half_scale_integers, resolve_onednn_cpu

from support.inference import predict, predictor, save_built_model


# ---------------------------------------------------------------- the grid
def test_half_scale_integers_are_even_except_each_channels_127():
    rng = np.random.default_rng(0)
    scaled = rng.uniform(-127, 127, size=(6, 4, 3, 3))
    scaled[:, 0, 0, 0] = 127.0 * np.sign(rng.standard_normal(6))  # each channel reaches +-127
    integers = np.rint(scaled).astype(np.int64)
    out = half_scale_integers(integers, scaled)
    kept = np.abs(integers) == 127
    assert np.all(out[kept] == integers[kept])
    assert np.all(out[~kept] % 2 == 0)
    assert np.abs(out[~kept]).max() <= 126
    # each odd integer moved by one, toward its float value
    odd = (integers % 2 != 0) & ~kept
    assert np.all(np.abs(out[odd] - integers[odd]) == 1)
    assert np.all(np.sign(out[odd] - integers[odd]) == np.sign(scaled[odd] - integers[odd]))
    assert np.all(out[~odd] == integers[~odd])


def test_half_scale_integers_keep_channels_oneDNN_rescales_and_break_ties_toward_zero():
    integers = np.array([[127, 3, -3, 5], [63, 3, 1, -1]])  # channel 1 never reaches 127
    scaled = np.array([[127.0, 3.0, -3.0, 4.9], [63.0, 3.2, 1.0, -1.0]])
    out = half_scale_integers(integers, scaled)
    assert out.tolist() == [[127, 2, -2, 4], [63, 3, 1, -1]]


def test_half_scale_integers_refuse_shapes_that_differ():
    with pytest.raises(ValueError, match="differ in shape"):
        half_scale_integers(np.zeros((2, 3)), np.zeros((3, 2)))


def test_the_half_grid_at_half_grid_scale_is_the_even_integers():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    scale = np.abs(w).reshape(8, -1).max(axis=1)
    v = scaled_weight(w, scale, 8, 0)
    half_scale = half_grid_scale(scale)
    for up in (nearest_rounding(w, half_scale, 7, 0), rng.random(w.shape) < 0.5):
        half = rounded_weight(w, half_scale, 7, 0, up)
        q = from_half_grid(half, weight_to_int(w, scale, 8, 0)).astype(np.int64)
        kept = np.abs(q) == 127
        assert kept.reshape(8, -1).sum(axis=1).min() >= 1                  # each channel's max stays 127
        assert np.all(q[~kept] % 2 == 0) and np.abs(q[~kept]).max() <= 126
        assert np.all(np.abs(q[~kept] - v[~kept]) <= 2 + 1e-4)              # an even neighbour of the value
    nearest = from_half_grid(rounded_weight(w, half_scale, 7, 0, nearest_rounding(w, half_scale, 7, 0)),
                             weight_to_int(w, scale, 8, 0)).astype(np.int64)
    assert np.all(np.abs(nearest - v)[np.abs(nearest) != 127] <= 1 + 1e-4)   # the nearer even neighbour


def test_from_half_grid_keeps_each_channels_127_and_channels_oneDNN_rescales():
    half = np.array([[63, 1, -1, -64], [10, 1, 0, -1]])
    nearest = np.array([[127, 3, -1, -126], [21, 3, 1, -1]])  # channel 1 never reaches 127: oneDNN rescales it
    assert from_half_grid(half, nearest).tolist() == [[127, 2, -2, -126], [21, 3, 1, -1]]
    with pytest.raises(ValueError, match="differ in shape"):
        from_half_grid(np.zeros((2, 3)), np.zeros((3, 2)))


# ---------------------------------------------------------------- the config
def test_onednn_cpu_needs_the_onednn_backend_and_a_known_value():
    with pytest.raises(ConfigError, match="onednn_cpu.*deploy_backend"):
        PTQConfig(onednn_cpu="avx2")
    with pytest.raises(ConfigError, match="onednn_cpu.*'auto'.*'vnni'.*'avx2'"):
        PTQConfig(deploy_backend="onednn", onednn_cpu="sse4")
    assert PTQConfig(deploy_backend="onednn").onednn_cpu is None
    assert PTQConfig(deploy_backend="onednn", onednn_cpu="avx2").onednn_without_vnni
    assert not PTQConfig(deploy_backend="onednn", onednn_cpu="vnni").onednn_without_vnni
    assert not PTQConfig().onednn_without_vnni
    # output scales would let oneDNN round where the program does not (and run float matmuls in int8 without
    # VNNI): off on every oneDNN CPU unless asked for
    assert PTQConfig(deploy_backend="onednn", onednn_cpu="avx2").effective_output_scales == "none"
    assert PTQConfig(deploy_backend="onednn", onednn_cpu="avx2", output_scales="all").effective_output_scales == "all"
    assert PTQConfig(deploy_backend="onednn", onednn_cpu="vnni").effective_output_scales == "none"
    assert resolve_onednn_cpu("auto") in ("vnni", "avx2")


# ---------------------------------------------------------------- on oneDNN
def _conv_model(folder):
    def build():
        x = paddle.static.data("x", [-1, 16, 8, 8], "float32")
        return [x], [paddle.static.nn.conv2d(x, 32, 3, bias_attr=False)]
    paddle.seed(0)
    return save_built_model(folder, build)


def _quantize(tmp_path, onednn_cpu, feeds, **options):
    model = _conv_model(tmp_path / "fp32")
    return quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(model), str(tmp_path / onednn_cpu),
                            data_loader=lambda: feeds, algo="abs_max", quantizable_op_type=["conv2d"],
                            output_scales="none", deploy_backend="onednn", onednn_cpu=onednn_cpu, **options)


def _integer_weights(result) -> dict[str, np.ndarray]:
    """``{name: integers (int64)}`` of the weights the saved program dequantizes."""
    with legacy_ir():
        exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
        program, _, _ = load_inference_program(exe, scope, result.model_file, result.params_file)
        block = program.global_block()
        return {op.input("X")[0]: read_tensor(scope, op.input("X")[0]).astype(np.int64) for op in block.ops
                if op.type == "dequantize_linear" and block.var(op.input("X")[0]).persistable}


def _deviation_in_steps(result, feed):
    """max |oneDNN int8 - Executor| of the model's output, in steps of its largest value / 127."""
    with legacy_ir():
        exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
        program, _, fetches = load_inference_program(exe, scope, result.model_file, result.params_file)
        with paddle.static.scope_guard(scope):
            simulated = exe.run(program, feed=feed, fetch_list=fetches)[0]
    deployed = predict(predictor(str(result.model_file), str(result.params_file), int8=True), feed)[0]
    return float(np.abs(deployed - simulated).max() / (np.abs(simulated).max() / 127))


def test_oneDNN_int8_runs_what_the_avx2_program_states(tmp_path):
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((4, 16, 8, 8)).astype("float32")} for _ in range(4)]
    result = _quantize(tmp_path, "avx2", feeds)
    # even weights halve exactly and each channel's 127 is the anchor's (passes/anchor_channel.py): 4e-5 steps
    # measured on AVX2 (float rounding); 0.27 with the 127 on a real weight; odd weights round either way
    # there: 2.2 steps with onednn_cpu="vnni" on an AVX2-only CPU
    assert _deviation_in_steps(result, feeds[0]) <= 0.01


def test_avx2_program_holds_even_conv_weights(tmp_path):
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((4, 16, 8, 8)).astype("float32")} for _ in range(2)]
    [q] = _integer_weights(_quantize(tmp_path, "avx2", feeds)).values()
    assert q.shape == (32, 17, 3, 3)                       # one more input channel: the anchor
    real, anchor = q[:, :16], q[:, 16]
    assert np.all(real % 2 == 0) and np.abs(real).max() <= 126
    assert np.all(np.abs(real).reshape(32, -1).max(axis=1) == 126)   # scale widened by 127/126: nothing clipped
    assert np.all(anchor[:, 0, 0] == 127) and np.count_nonzero(anchor) == 32


def test_avx2_leaves_the_weight_of_a_conv_whose_input_stays_float_on_the_ordinary_grid(tmp_path):
    """A skipped input keeps the conv in float on oneDNN: no half-scale grid, no anchor (quant_post crashed
    anchoring it before)."""
    rng = np.random.default_rng(2)
    feeds = [{"x": rng.standard_normal((4, 16, 8, 8)).astype("float32")} for _ in range(2)]
    [q] = _integer_weights(_quantize(tmp_path, "avx2", feeds, skip_tensor_list=["x"])).values()
    assert q.shape == (32, 16, 3, 3)  # no anchor channel
    assert np.count_nonzero(q % 2) > 0 and np.all(np.abs(q).reshape(32, -1).max(axis=1) == 127)


def _linear_conv_model(folder):
    def build():
        x = paddle.static.data("x", [-1, 16, 8, 8], "float32")
        y = paddle.static.nn.conv2d(x, 8, 3, padding=1)
        y = paddle.static.nn.conv2d(y, 8, 3, padding=1, groups=8, use_cudnn=False)
        z = paddle.nn.Linear(8, 4)(paddle.transpose(y, [0, 2, 3, 1]))
        return [x], [z]
    paddle.seed(0)
    return save_built_model(folder, build)


def test_avx2_leaves_matmuls_and_depthwise_convs_in_float_with_a_warning(tmp_path, caplog):
    model = _linear_conv_model(tmp_path / "fp32")
    rng = np.random.default_rng(2)
    feeds = [{"x": rng.standard_normal((4, 16, 8, 8)).astype("float32")} for _ in range(2)]
    exe = paddle.static.Executor(paddle.CPUPlace())
    options = dict(data_loader=lambda: feeds, algo="abs_max",
                   quantizable_op_type=["conv2d", "depthwise_conv2d", "matmul_v2"], deploy_backend="onednn")
    with caplog.at_level(logging.WARNING, logger="paddle_quant"):
        avx2 = quant.quant_post(exe, str(model), str(tmp_path / "avx2"), onednn_cpu="avx2", **options)
    assert any(s.startswith("depthwise_conv2d") and "left in float for onednn_cpu='avx2'" in s
               for s in avx2.skipped_ops)
    assert "depthwise_conv2d ops left in float for onednn_cpu='avx2'" in caplog.text
    assert onednn_cpu.OUTPUT_SCALES_WARNING not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="paddle_quant"):
        quant.quant_post(exe, str(model), str(tmp_path / "avx2_all"), onednn_cpu="avx2", output_scales="all", **options)
    assert onednn_cpu.OUTPUT_SCALES_WARNING in caplog.text
    vnni = quant.quant_post(exe, str(model), str(tmp_path / "vnni"), onednn_cpu="vnni", **options)
    assert not any(s.startswith("depthwise_conv2d") for s in vnni.skipped_ops)
    assert len(vnni.quantized_tensors) > len(avx2.quantized_tensors)
    for result in (avx2, vnni):  # weight matmuls: float for every oneDNN CPU (tests/deploy/test_onednn_fc.py)
        assert any(s.startswith("matmul_v2") and "left in float for deploy_backend='onednn'" in s
                   for s in result.skipped_ops)


def test_unset_onednn_cpu_warns_once_on_a_cpu_without_vnni(monkeypatch, caplog):
    onednn_cpu.warn_unset_without_vnni.cache_clear()
    monkeypatch.setattr(onednn_cpu, "int8_dot_product", lambda: False)
    with caplog.at_level(logging.WARNING, logger="paddle_quant"):
        onednn_cpu.warn_unset_without_vnni()
        onednn_cpu.warn_unset_without_vnni()
    assert [r.getMessage() for r in caplog.records] == [onednn_cpu.UNSET_WITHOUT_VNNI_WARNING]
    assert "onednn_cpu='avx2'" in caplog.text
    onednn_cpu.warn_unset_without_vnni.cache_clear()
    caplog.clear()
    monkeypatch.setattr(onednn_cpu, "int8_dot_product", lambda: True)
    with caplog.at_level(logging.WARNING, logger="paddle_quant"):
        onednn_cpu.warn_unset_without_vnni()
    assert not caplog.records
    onednn_cpu.warn_unset_without_vnni.cache_clear()


def test_avx2_keeps_8_bit_weights_for_convs_reading_relu_outputs(tmp_path):
    """oneDNN feeds those unsigned inputs and does not halve their weights; a depthwise conv there stays int8."""
    def build():
        x = paddle.static.data("x", [-1, 16, 8, 8], "float32")
        y = paddle.nn.functional.relu(paddle.static.nn.conv2d(x, 16, 3, padding=1))
        z = paddle.static.nn.conv2d(y, 16, 3, padding=1, groups=16, use_cudnn=False)  # depthwise on relu: int8
        return [x], [paddle.static.nn.conv2d(y, 16, 3, padding=1) + z]
    paddle.seed(0)
    model = save_built_model(tmp_path / "fp32", build)
    rng = np.random.default_rng(3)
    feeds = [{"x": rng.standard_normal((4, 16, 8, 8)).astype("float32")} for _ in range(2)]
    result = quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(model), str(tmp_path / "int8"),
                              data_loader=lambda: feeds, algo="abs_max",
                              quantizable_op_type=["conv2d", "depthwise_conv2d"], deploy_backend="onednn",
                              onednn_cpu="avx2")
    assert not any(s.startswith("depthwise_conv2d") for s in result.skipped_ops)
    weights = _integer_weights(result)
    depthwise = next(w for w in weights.values() if w.shape[1] == 1)
    first, second = (weights[n] for n in sorted(weights) if weights[n].shape[1] != 1)
    assert np.all((first % 2 == 0) | (np.abs(first) == 127))  # signed input: half-scale grid
    assert np.any((second % 2 != 0) & (np.abs(second) != 127))  # relu input: 8-bit weights


def _adaround(tmp_path, onednn_cpu, feeds, name, **options):
    model = _conv_model(tmp_path / "fp32")
    return quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(model), str(tmp_path / name),
                            data_loader=lambda: feeds, algo="abs_max", quantizable_op_type=["conv2d"],
                            output_scales="none", deploy_backend="onednn", onednn_cpu=onednn_cpu,
                            round_type="adaround", adaround_iterations=200, **options)


def _output_error(result, feeds, weights=None):
    """Mean squared difference of the saved model's simulated output from the fp32 conv's on ``feeds``, with the
    conv weight's integers replaced by ``weights`` when given."""
    with legacy_ir():
        exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
        program, _, fetches = load_inference_program(exe, scope, result.model_file, result.params_file)
        fp32 = paddle.static.Scope()
        fp32_program, _, fp32_fetches = load_inference_program(exe, fp32, *(result.model_file.parent.parent / "fp32" / f
                                                                            for f in ("model.pdmodel", "model.pdiparams")))
        name = next(op.input("X")[0] for op in program.global_block().ops
                    if op.type == "dequantize_linear" and program.global_block().var(op.input("X")[0]).persistable)
        if weights is not None:
            write_tensor(scope, paddle.CPUPlace(), name, weights)
        errors = [np.mean((exe.run(program, feed=f, fetch_list=fetches, scope=scope)[0]
                           - exe.run(fp32_program, feed=f, fetch_list=fp32_fetches, scope=fp32)[0]) ** 2)
                  for f in feeds]
        return float(np.mean(errors)), read_tensor(scope, name), read_tensor(fp32, name.split("@")[0])


def test_avx2_adaround_learns_on_the_even_grid_and_reapplies_it(tmp_path):
    """AdaRound for onednn_cpu="avx2" chooses between the two even neighbours (oneDNN's half-scale grid), not
    between 8-bit integers later moved to even; the table records the grid and re-applies it byte for byte."""
    rng = np.random.default_rng(5)
    feeds = [{"x": rng.standard_normal((4, 16, 8, 8)).astype("float32")} for _ in range(3)]
    learned = _adaround(tmp_path, "avx2", feeds, "avx2")
    error, q, w = _output_error(learned, feeds)
    q = q.astype(np.int64)
    assert np.all(q[:, :16] % 2 == 0) and np.abs(q[:, :16]).max() <= 126   # the 127s are the anchor's
    assert _deviation_in_steps(learned, feeds[0]) <= 0.01           # oneDNN runs what the program states
    entry = next(e for e in read_scale_table(learned.scale_table).tensors.values() if e.kind == "weight")
    assert entry.rounding_grid == "onednn_half"
    # the alternative: AdaRound's 8-bit integers moved to the even grid afterwards
    eight_bit = _adaround(tmp_path, "vnni", feeds, "vnni")
    scale = entry.scale_array()
    _, q8, _ = _output_error(eight_bit, feeds)
    moved = half_scale_integers(q8, scaled_weight(w, scale, 8, 0)).astype(np.int8)
    nearest_even = half_scale_integers(weight_to_int(w, scale, 8, 0), scaled_weight(w, scale, 8, 0)).astype(np.int8)
    assert error < _output_error(eight_bit, feeds, moved)[0]
    assert error < _output_error(eight_bit, feeds, nearest_even)[0]
    again = quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(tmp_path / "fp32"), str(tmp_path / "again"),
                             algo="abs_max", quantizable_op_type=["conv2d"], output_scales="none",
                             deploy_backend="onednn", onednn_cpu="avx2", round_type="adaround",
                             scale_table=learned.scale_table)
    assert again.model_file.read_bytes() == learned.model_file.read_bytes()
    assert again.params_file.read_bytes() == learned.params_file.read_bytes()
    with pytest.raises(ConfigError, match="grid 'onednn_half' but this run puts .* on grid '8-bit'"):
        quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(tmp_path / "fp32"), str(tmp_path / "vnni2"),
                         algo="abs_max", quantizable_op_type=["conv2d"], output_scales="none",
                         deploy_backend="onednn", onednn_cpu="vnni", round_type="adaround",
                         scale_table=learned.scale_table)
    assert not (tmp_path / "vnni2").exists()


# ---------------------------------------------------------------- u8 inputs: oneDNN's grid
def _relu_conv_model(folder):
    """conv -> relu -> conv and -> grouped conv: both read oneDNN's u8 storage of the relu output."""
    def build():
        x = paddle.static.data("x", [-1, 16, 8, 8], "float32")
        y = paddle.nn.functional.relu(paddle.static.nn.conv2d(x, 32, 3, padding=1))
        return [x], [paddle.static.nn.conv2d(y, 32, 3, padding=1) + paddle.static.nn.conv2d(y, 32, 1, groups=4)]
    paddle.seed(0)
    return save_built_model(folder, build)


def test_oneDNN_int8_runs_what_the_program_states_on_relu_outputs(tmp_path):
    """The relu output is u8 at 255 / scale on every CPU (passes/unsigned_grid.py). (On a CPU without VNNI a
    pair of large products of one sign may saturate in 16 bits, docs/deploy.md; this net's do not.)"""
    rng = np.random.default_rng(4)
    feeds = [{"x": (3 * rng.standard_normal((4, 16, 8, 8))).astype("float32")} for _ in range(4)]
    model = _relu_conv_model(tmp_path / "fp32")
    result = quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(model), str(tmp_path / "int8"),
                              data_loader=lambda: feeds, algo="abs_max", quantizable_op_type=["conv2d"],
                              deploy_backend="onednn", onednn_cpu="avx2")
    # <= 1e-4 steps measured on AVX2; 1.75 with the relu output on the 127-level grid
    assert _deviation_in_steps(result, feeds[0]) <= 0.01


def test_avx2_anchors_a_conv_whose_weight_smoothing_renamed(tmp_path):
    # smooth_depthwise scales the producer conv's weight into "<name>@smoothed"; anchoring must still find it
    model = _linear_conv_model(tmp_path / "fp32")
    rng = np.random.default_rng(2)
    feeds = [{"x": rng.standard_normal((4, 16, 8, 8)).astype("float32")} for _ in range(2)]
    exe = paddle.static.Executor(paddle.CPUPlace())
    result = quant.quant_post(exe, str(model), str(tmp_path / "avx2"), data_loader=lambda: feeds, algo="abs_max",
                              quantizable_op_type=["conv2d", "depthwise_conv2d"], deploy_backend="onednn",
                              onednn_cpu="avx2", smooth_depthwise=True)
    assert any(name.endswith("@smoothed") for name in result.quantized_tensors)
