"""AdaRound: never worse than nearest on the calibration inputs, on the grid, recorded and re-applied exactly."""

import hashlib
import logging

import numpy as np
import paddle
import pytest

import paddle_quant as quant
from paddle_quant.common.errors import ConfigError, ProgramStateError
from paddle_quant.common.numerics import abs_max_scale, dequantize_linear, fake_quant_dequant, qmax, weight_to_int
from paddle_quant.export.scale_table import read_scale_table
from paddle_quant.ptq.adaround import (AdaRoundOptions, learn_rounding, nearest_rounding, pack_rounding,
                                       rounded_weight, unpack_rounding)
from paddle_quant.ptq.adaround_rows import ConvGeometry, GramObserver, WeightLayout, conv_rows, matmul_rows, to_columns
from paddle_quant.passes.freeze import _given_integers

from support.inference import save_built_model

BITS = range(2, 9)


def _exe():
    return paddle.static.Executor(paddle.CPUPlace())


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# ---------------------------------------------------------------- one layer
def _toy_layer(kind: str, seed: int = 0):
    """(weight, layout, axis, float rows, quantize-dequantized rows) of a toy conv, depthwise conv or matmul."""
    rng = np.random.default_rng(seed)
    if kind == "matmul":
        w = rng.normal(scale=0.05, size=(24, 10)).astype(np.float32)  # [K, O], channel axis 1
        rows = matmul_rows(np.maximum(rng.normal(size=(6, 20, 24)), 0), 2, max_rows=10**9, rng=rng)
        layout, axis = WeightLayout(1, False), 1
    else:
        groups = 4 if kind == "depthwise" else 1
        w = rng.normal(size=(8 if groups == 1 else 4, 4 // groups, 3, 3)).astype(np.float32)
        x = np.maximum(rng.normal(size=(3, 4, 8, 8)), 0).astype(np.float32)
        rows = conv_rows(x, ConvGeometry((3, 3), paddings=(1, 1, 1, 1)), groups, max_rows=10**9, rng=rng)
        layout, axis = WeightLayout(groups, True), 0
    hat = fake_quant_dequant(rows, abs_max_scale(rows), 8).astype(np.float64)
    return w, layout, axis, rows.astype(np.float64), hat


def _gram(w, layout, rows, hat):
    gram = GramObserver(to_columns(w, layout))
    gram.update(hat, rows)
    return gram


def _output_mse(q, w, scale, bits, axis, layout, rows, hat):
    """Mean squared output error on the rows themselves (not through the Gram matrices)."""
    deployed = np.matmul(hat, to_columns(dequantize_linear(q, scale, bits, axis), layout))
    return float(np.mean((deployed - np.matmul(rows, to_columns(w, layout))) ** 2))


@pytest.mark.parametrize("kind", ["conv", "depthwise", "matmul"])
@pytest.mark.parametrize("bits", BITS)
def test_never_worse_than_nearest_on_the_calibration_inputs_and_on_the_grid(kind, bits):
    w, layout, axis, rows, hat = _toy_layer(kind)
    scale = abs_max_scale(w, axis)
    result = learn_rounding(w, scale, bits=bits, axis=axis, layout=layout, gram=_gram(w, layout, rows, hat))
    learned, nearest = rounded_weight(w, scale, bits, axis, result.up), weight_to_int(w, scale, bits, axis)
    assert learned.dtype == np.int8 and -qmax(bits) - 1 <= learned.min() and learned.max() <= qmax(bits)
    mse = [_output_mse(q, w, scale, bits, axis, layout, rows, hat) for q in (learned, nearest)]
    assert mse[0] <= mse[1], mse
    assert np.abs(learned.astype(int) - np.rint(w * qmax(bits) / np.expand_dims(scale, tuple(
        d for d in range(w.ndim) if d != axis)))).max() <= 1  # floor or ceil of the scaled weight
    if result.learned:
        assert mse[0] < mse[1]


@pytest.mark.parametrize("kind", ["conv", "matmul"])
@pytest.mark.parametrize("bits", [4, 8])
def test_adaround_lowers_the_output_error(kind, bits):
    w, layout, axis, rows, hat = _toy_layer(kind, seed=1)
    scale = abs_max_scale(w, axis)
    result = learn_rounding(w, scale, bits=bits, axis=axis, layout=layout, gram=_gram(w, layout, rows, hat))
    mse = [_output_mse(rounded_weight(w, scale, bits, axis, up), w, scale, bits, axis, layout, rows, hat)
           for up in (result.up, nearest_rounding(w, scale, bits, axis))]
    assert result.learned and mse[0] < 0.9 * mse[1], mse


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_a_diverging_optimiser_falls_back_to_nearest(bits):
    """Adam with a learning rate of 10 scatters the rounding; keeping the better of the two is the code's rule."""
    w, layout, axis, rows, hat = _toy_layer("conv", seed=2)
    scale = abs_max_scale(w, axis)
    result = learn_rounding(w, scale, bits=bits, axis=axis, layout=layout, gram=_gram(w, layout, rows, hat),
                            options=AdaRoundOptions(learning_rate=10.0, iterations=20, warmup=0.0))
    mse = [_output_mse(rounded_weight(w, scale, bits, axis, up), w, scale, bits, axis, layout, rows, hat)
           for up in (result.up, nearest_rounding(w, scale, bits, axis))]
    assert mse[0] <= mse[1], mse


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("axis", [0, -1])
def test_nearest_bits_reproduce_weight_to_int_including_clipped_values(rng, bits, axis):
    w = rng.normal(size=(6, 5, 3)).astype(np.float32)
    w[0, 0, 0] = 0.0
    scale = abs_max_scale(w, axis) * np.float32(0.7)  # smaller than max|w|: the kernel clips some values
    np.testing.assert_array_equal(rounded_weight(w, scale, bits, axis, nearest_rounding(w, scale, bits, axis)),
                                  weight_to_int(w, scale, bits, axis))


def test_rounding_packs_one_bit_per_weight_and_refuses_another_size(rng):
    up = rng.random(size=(5, 3, 3)) > 0.5
    text = pack_rounding(up)
    np.testing.assert_array_equal(unpack_rounding(text, up.shape), up)
    with pytest.raises(ConfigError, match="holds 48 bits; the weight has 100 values"):
        unpack_rounding(text, (10, 10), name="w")
    with pytest.raises(ConfigError, match="not base64"):
        unpack_rounding("%%", up.shape)


def test_a_layer_without_calibration_rows_is_refused():
    with pytest.raises(ConfigError, match="calibration rows"):
        learn_rounding(np.ones((2, 2), np.float32), np.ones(1, np.float32), bits=8, axis=-1,
                       layout=WeightLayout(1, False), gram=GramObserver(np.ones((1, 2, 2))))


# ---------------------------------------------------------------- quant_post
def _build_net():
    x = paddle.static.data("x", [-1, 4, 8, 8], "float32")
    h = paddle.nn.functional.relu(paddle.nn.Conv2D(4, 8, 3, padding=1)(x))
    h = paddle.nn.functional.relu(paddle.nn.Conv2D(8, 8, 3, padding=1, stride=2, groups=8)(h))
    h = paddle.nn.Conv2DTranspose(8, 4, 2, stride=2)(h)
    out = paddle.nn.Linear(4 * 8 * 8, 10)(paddle.flatten(h, 1))
    return [x], [out]


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory):
    """conv2d, depthwise_conv2d, conv2d_transpose (AdaRound keeps nearest) and matmul_v2, saved once."""
    with paddle.pir_utils.OldIrGuard():
        paddle.enable_static()
        with paddle.utils.unique_name.guard():
            folder = save_built_model(tmp_path_factory.mktemp("adaround_fp32"), _build_net)
        paddle.disable_static()
    return folder


def _batches():
    rng = np.random.default_rng(0)
    return [{"x": rng.normal(size=(4, 4, 8, 8)).astype(np.float32)} for _ in range(3)]


def _quant(model, out, **options):
    options.setdefault("data_loader", _batches)
    return quant.quant_post(_exe(), str(model), str(out), algo="abs_max", round_type="adaround", weight_bits=4,
                            quantizable_op_type=["conv2d", "depthwise_conv2d", "conv2d_transpose", "matmul_v2"],
                            adaround_iterations=100, **options)


def _saved_weights(model_dir):
    """``{weight: int8 values}`` of a saved quantized model."""
    exe, scope = _exe(), paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        program, _, _ = paddle.static.load_inference_model(str(model_dir / "model"), exe)
    return {v.name.removesuffix("@int8"): np.array(scope.find_var(v.name).get_tensor())
            for v in program.list_vars() if v.name.endswith("@int8")}


def _float_weights(model):
    """``{parameter: values}`` of the fp32 model."""
    exe, scope = _exe(), paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        program, _, _ = paddle.static.load_inference_model(str(model / "model"), exe)
    return {v.name: np.array(scope.find_var(v.name).get_tensor()) for v in program.list_vars() if v.persistable
            and v.name not in ("feed", "fetch")}


@pytest.mark.parametrize("weight_method,weight_type", [("abs_max", "channel_wise_abs_max"),
                                                       ("power_of_two", "abs_max")])
def test_the_saved_model_holds_the_recorded_integers_and_reapplying_is_byte_identical(
        toy_model, tmp_path, caplog, weight_method, weight_type):
    with caplog.at_level(logging.WARNING, logger="paddle_quant"):
        result = _quant(toy_model, tmp_path / "q", weight_method=weight_method, weight_quantize_type=weight_type)
    transposed = [r.getMessage() for r in caplog.records if "keeps rounding to nearest" in r.getMessage()]
    assert len(transposed) == 1 and "conv2d_transpose" in transposed[0]
    table = read_scale_table(result.scale_table)
    saved, floats = _saved_weights(result.model_file.parent), _float_weights(toy_model)
    assert set(saved) == {n for n, e in table.tensors.items() if e.kind == "weight"} and len(saved) == 4
    changed = 0
    for name, ints in saved.items():
        entry = table.tensors[name]
        axis = -1 if entry.axis is None else entry.axis
        up = unpack_rounding(entry.rounding, ints.shape)
        np.testing.assert_array_equal(ints, rounded_weight(floats[name], entry.scale_array(), 4, axis, up), name)
        assert ints.min() >= -8 and ints.max() <= 7
        changed += int((ints != weight_to_int(floats[name], entry.scale_array(), 4, axis)).sum())
    assert changed > 0  # AdaRound moved some weights off nearest
    again = quant.quant_post(_exe(), str(toy_model), str(tmp_path / "again"), algo="abs_max", round_type="adaround",
                             weight_bits=4, weight_method=weight_method, weight_quantize_type=weight_type,
                             quantizable_op_type=["conv2d", "depthwise_conv2d", "conv2d_transpose", "matmul_v2"],
                             scale_table=result.scale_table)
    assert again.batches == 0
    assert _digests(again.model_file.parent) == _digests(result.model_file.parent)


def test_a_table_without_roundings_is_refused_for_adaround(toy_model, tmp_path):
    plain = quant.quant_post(_exe(), str(toy_model), str(tmp_path / "plain"), algo="abs_max", weight_bits=4,
                             data_loader=_batches, quantizable_op_type=["conv2d", "depthwise_conv2d",
                                                                        "conv2d_transpose", "matmul_v2"])
    with pytest.raises(ConfigError, match="round_type='adaround'.*allowed: a table written with "
                                          "round_type='adaround', or round_type='round'"):
        _quant(toy_model, tmp_path / "x", scale_table=plain.scale_table, data_loader=None)
    assert not (tmp_path / "x").exists()


def test_data_that_can_be_read_only_once_is_refused(toy_model, tmp_path):
    once = iter(_batches())
    with pytest.raises(ConfigError, match="round_type='adaround' reads the calibration data twice"):
        _quant(toy_model, tmp_path / "x", data_loader=once)
    used_up = iter(_batches())
    with pytest.raises(ConfigError, match="AdaRound's pass over the calibration data yielded no batch"):
        _quant(toy_model, tmp_path / "x", data_loader=lambda: used_up)  # a callable giving the same iterator
    assert not (tmp_path / "x").exists()


def test_freeze_refuses_integers_off_the_grid():
    with pytest.raises(ProgramStateError, match="leave the 4-bit grid \\[-8, 7\\]"):
        _given_integers("w", np.array([[8, 0]], np.int8), (1, 2), 4)
    with pytest.raises(ProgramStateError, match="shape"):
        _given_integers("w", np.zeros((2, 1), np.int8), (1, 2), 4)
