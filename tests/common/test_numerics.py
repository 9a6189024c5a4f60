"""paddle_quant.common.numerics against Paddle's own kernels (bit for bit) and properties.

Differential tests build one op with ``tests/paddle_ops.run_op`` and compare
with ``np.testing.assert_array_equal``. Inputs contain exact ``.5`` ties on
the grid, ``x = (k + 0.5) * s / qmax``, their float32 neighbours, values
beyond the clip range and random values.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from support.paddle_ops import run_op
from paddle_quant.common import numerics as nm
from paddle_quant.common.errors import ConfigError

F32 = np.float32
BITS = [2, 4, 8, 16]
ROUND_HALVES = ["even", "away"]
SHAPES = [(6, 5), (4, 3, 2, 2)]
OUT = {"Out": "float32"}
FQ_OUTS = {"Out": "float32", "OutScale": "float32"}
MA_OUTS = {"Out": "float32", "OutScale": "float32", "OutState": "float32", "OutAccum": "float32"}


# ------------------------------------------------------------------- data makers


def _rng(*key) -> np.random.Generator:
    """Seeded generator, distinct per test case (crc32 of the case key)."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _scales(rng, n: int) -> np.ndarray:
    return (10.0 ** rng.uniform(-2, 1, n)).astype(F32)


def _per_channel(axis: int | None) -> bool:
    return axis is not None and axis >= 0


def _spread(scale, shape, axis: int | None) -> np.ndarray:
    """``scale`` broadcast to ``shape`` (along ``axis`` when per channel)."""
    s = np.asarray(scale, F32).reshape(-1)
    if not _per_channel(axis):
        return np.broadcast_to(s[0], shape)
    return np.broadcast_to(s.reshape([-1 if d == axis else 1 for d in range(len(shape))]), shape)


def _tie_tensor(rng, shape, scale, bits: int, axis: int | None) -> np.ndarray:
    """Mix of grid ties ``(k+0.5)*s/qmax``, their neighbours, outliers and noise."""
    q = nm.qmax(bits)
    s = _spread(scale, shape, axis)
    k = rng.integers(-q - 2, q + 2, size=shape).astype(F32)
    ties = ((k + F32(0.5)) * s / F32(q)).astype(F32)
    kind = rng.integers(0, 5, size=shape)
    noise = (rng.standard_normal(shape) * s * 0.7).astype(F32)
    up, down = np.nextafter(ties, F32(np.inf)), np.nextafter(ties, F32(-np.inf))
    choices = [ties, up, down, noise * 3]
    return np.select([kind == i for i in range(4)], choices, noise).astype(F32)


def _abs_max_tensor(rng, shape, bits: int, axis: int | None) -> np.ndarray:
    """Tie tensor whose abs max (per tensor or per channel) is a chosen scale."""
    scale = _scales(rng, shape[axis] if _per_channel(axis) else 1)
    bound = _spread(scale, shape, axis)
    x = np.clip(_tie_tensor(rng, shape, scale, bits, axis), -bound, bound).astype(F32)
    for c in range(scale.size):  # every channel reaches its scale
        idx = [0] * len(shape)
        if _per_channel(axis):
            idx[axis] = c
        x[tuple(idx)] = -scale[c] if c % 2 == 0 else scale[c]
    return x


def _moving_average_tensor(rng, shape, peak: float, state, accum, rate: float, bits: int) -> np.ndarray:
    """Tensor with ``max|x| = peak`` and ties on the grid of the scale the step will compute."""
    _, _, scale = nm.update_moving_average(state, accum, F32(peak), rate)
    x = np.clip(_tie_tensor(rng, shape, scale, bits, None), -F32(peak), F32(peak)).astype(F32)
    x[(0,) * len(shape)] = peak
    return x


def _zero_point(scale: np.ndarray) -> np.ndarray:
    return np.zeros(scale.shape, np.int32)


def _qdq_attrs(bits: int, axis: int, round_half: str, **extra) -> dict:
    return {
        "bit_length": bits,
        "qmax": nm.qmax(bits),
        "qmin": nm.qmin(bits),
        "quant_axis": axis,
        "round_type": nm.ROUND_TYPE[round_half],
        **extra,
    }


def _axes_cases():
    """(shape, axis) pairs: per tensor and per channel on axes 0 and 1."""
    return [(shape, axis) for shape in SHAPES for axis in (-1, 0, 1)]


# ----------------------------------------------------------------- small pieces


def test_qmax_qmin_values():
    assert [nm.qmax(b) for b in (1, 2, 4, 8, 16)] == [0, 1, 7, 127, 32767]
    assert nm.qmin(8) == -128
    assert nm.qmin(8, narrow=True) == -127


@pytest.mark.parametrize("bits", [0, 17, 8.0, True])
def test_qmax_rejects_bad_bits(bits):
    with pytest.raises(ConfigError):
        nm.qmax(bits)


def test_abs_max_scale_shapes():
    x = np.arange(24, dtype=F32).reshape(2, 3, 4) - 12
    np.testing.assert_array_equal(nm.abs_max_scale(x), np.array([12], F32))
    np.testing.assert_array_equal(nm.abs_max_scale(x, 0), np.array([12, 11], F32))
    np.testing.assert_array_equal(nm.abs_max_scale(x, 1), np.array([12, 8, 11], F32))
    np.testing.assert_array_equal(nm.channel_scales(x, 2), np.array([12, 11, 10, 11], F32))
    assert nm.abs_max_scale(x).dtype == F32


def test_bad_arguments_raise():
    x = np.ones((2, 3), F32)
    with pytest.raises(ConfigError):
        nm.quantize_linear(x, np.ones(2, F32), axis=1)
    with pytest.raises(ConfigError):
        nm.quantize_linear(x, np.ones(1, F32), round_half="up")
    with pytest.raises(ConfigError):
        nm.channel_scales(x, -1)
    with pytest.raises(ConfigError):
        nm.quantize_linear_train(x)


@pytest.mark.parametrize("bits,dtype", [(4, np.int8), (8, np.int8), (16, np.int16)])
def test_weight_to_int_dtype_and_values(bits, dtype):
    rng = _rng("w2i", bits)
    w = _abs_max_tensor(rng, (6, 5), bits, 0)
    scale = nm.channel_scales(w, 0)
    q = nm.weight_to_int(w, scale, bits, 0)
    assert q.dtype == dtype
    np.testing.assert_array_equal(q, nm.quantize_linear(w, scale, bits, 0).astype(dtype))


# ------------------------------------------------- quantize_linear / dequantize_linear


@pytest.mark.parametrize("round_half", ROUND_HALVES)
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("shape,axis", _axes_cases())
def test_quantize_linear_matches_paddle(shape, axis, bits, round_half):
    rng = _rng("ql", shape, axis, bits, round_half)
    scale = _scales(rng, shape[axis] if axis >= 0 else 1)
    x = _tie_tensor(rng, shape, scale, bits, axis)
    got = run_op(
        "quantize_linear",
        {"X": x, "Scale": scale, "ZeroPoint": _zero_point(scale)},
        {"Y": "float32"},
        _qdq_attrs(bits, axis, round_half, is_test=True),
    )["Y"]
    np.testing.assert_array_equal(got, nm.quantize_linear(x, scale, bits, axis, round_half=round_half))


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("shape,axis", _axes_cases())
def test_dequantize_linear_matches_paddle(shape, axis, bits):
    rng = _rng("dql", shape, axis, bits)
    scale = _scales(rng, shape[axis] if axis >= 0 else 1)
    q = rng.integers(nm.qmin(bits), nm.qmax(bits) + 1, size=shape).astype(F32)
    got = run_op(
        "dequantize_linear",
        {"X": q, "Scale": scale, "ZeroPoint": _zero_point(scale)},
        {"Y": "float32"},
        _qdq_attrs(bits, axis, "even", is_test=True),
    )["Y"]
    np.testing.assert_array_equal(got, nm.dequantize_linear(q, scale, bits, axis))


def test_dequantize_linear_int8_input_matches_paddle():
    rng = _rng("dql-int8")
    scale = _scales(rng, 5)
    q = rng.integers(-128, 128, size=(5, 7)).astype(np.int8)
    got = run_op(
        "dequantize_linear",
        {"X": q, "Scale": scale, "ZeroPoint": _zero_point(scale)},
        {"Y": "float32"},
        _qdq_attrs(8, 0, "even"),
    )["Y"]
    np.testing.assert_array_equal(got, nm.dequantize_linear(q, scale, 8, 0))


def test_quantize_linear_default_round_type_is_even():
    x = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 200.0, -200.0], F32)
    scale = np.array([127.0], F32)
    got = run_op(
        "quantize_linear",
        {"X": x, "Scale": scale, "ZeroPoint": _zero_point(scale)},
        {"Y": "float32"},
        {"quant_axis": -1},
    )["Y"]
    np.testing.assert_array_equal(got, np.array([0, 2, 2, -0, -2, 127, -128], F32))
    np.testing.assert_array_equal(got, nm.quantize_linear(x, scale))


def test_quantize_linear_range_comes_from_qmax_attr_not_bit_length():
    """Regression: Paddle's QDQ kernels ignore bit_length; only the qmax attr counts."""
    rng = _rng("ql-bits")
    scale = np.array([1.0], F32)
    x = (rng.standard_normal(200) * 0.6).astype(F32)
    only_bits = run_op(
        "quantize_linear",
        {"X": x, "Scale": scale, "ZeroPoint": _zero_point(scale)},
        {"Y": "float32"},
        {"bit_length": 4, "quant_axis": -1},
    )["Y"]
    np.testing.assert_array_equal(only_bits, nm.quantize_linear(x, scale, 8))
    assert np.abs(only_bits).max() > nm.qmax(4)
    deq = run_op(
        "dequantize_linear",
        {"X": only_bits, "Scale": scale, "ZeroPoint": _zero_point(scale)},
        {"Y": "float32"},
        {"bit_length": 4, "quant_axis": -1},
    )["Y"]
    np.testing.assert_array_equal(deq, nm.dequantize_linear(only_bits, scale, 8))


@pytest.mark.parametrize("round_half", ROUND_HALVES)
@pytest.mark.parametrize("axis", [-1, 0])
def test_quantize_linear_zero_scale_matches_paddle(round_half, axis):
    x = np.array([[0.0, 1e-9, -1e-9, 3.0], [-2.0, 1e-7, 0.0, -1e-5]], F32)
    scale = np.zeros(2 if axis == 0 else 1, F32)
    got = run_op(
        "quantize_linear",
        {"X": x, "Scale": scale, "ZeroPoint": _zero_point(scale)},
        {"Y": "float32"},
        _qdq_attrs(8, axis, round_half),
    )["Y"]
    want = nm.quantize_linear(x, scale, 8, axis, round_half=round_half)
    np.testing.assert_array_equal(got, want)
    if round_half == "away":
        assert not want.any()  # x clipped to [-0, 0] first
    else:
        assert want[0, 3] == 127 and want[1, 0] == -128  # saturates through 1/(0+1e-6)


@pytest.mark.parametrize("round_half", ROUND_HALVES)
@pytest.mark.parametrize("bits", [4, 8])
def test_quantize_linear_train_per_tensor_matches_paddle(bits, round_half):
    rng = _rng("ql-train", bits, round_half)
    state, accum = np.ones(1, F32), np.ones(1, F32)
    scale = np.ones(1, F32)
    for step, peak in enumerate([3.0, 0.5, 1.25]):
        x = _moving_average_tensor(rng, (4, 6), peak, state, accum, 0.9, bits)
        got = run_op(
            "quantize_linear",
            {"X": x, "Scale": scale, "ZeroPoint": _zero_point(scale), "InAccum": accum, "InState": state},
            {"Y": "float32", "OutScale": "float32", "OutState": "float32", "OutAccum": "float32"},
            _qdq_attrs(bits, -1, round_half, is_test=False, moving_rate=0.5),
        )
        want = nm.quantize_linear_train(x, state=state, accum=accum, bits=bits, round_half=round_half)
        np.testing.assert_array_equal(got["OutState"], want.state)
        np.testing.assert_array_equal(got["OutAccum"], want.accum)
        np.testing.assert_array_equal(got["OutScale"], want.scale)
        np.testing.assert_array_equal(got["Y"], want.out)
        state, accum, scale = want.state, want.accum, want.scale
    assert state[0] == F32(F32(F32(0.9) * F32(1.9) + 1) * F32(0.9) + 1)  # rate 0.9, not 0.5


@pytest.mark.parametrize("shape,axis", [((6, 5), 0), ((4, 3, 2, 2), 1)])
def test_quantize_linear_train_per_channel_matches_paddle(shape, axis):
    rng = _rng("ql-train-ch", shape, axis)
    x = _abs_max_tensor(rng, shape, 8, axis)
    stale = np.full(shape[axis], 100.0, F32)  # the input Scale is not read
    got = run_op(
        "quantize_linear",
        {"X": x, "Scale": stale, "ZeroPoint": _zero_point(stale)},
        {"Y": "float32", "OutScale": "float32"},
        _qdq_attrs(8, axis, "even", is_test=False),
    )
    want = nm.quantize_linear_train(x, axis=axis)
    np.testing.assert_array_equal(got["OutScale"], want.scale)
    np.testing.assert_array_equal(got["Y"], want.out)


# ------------------------------------------------------------ abs-max fake ops


@pytest.mark.parametrize("op,fn", [
    ("fake_quantize_abs_max", nm.fake_quantize_abs_max),
    ("fake_quantize_dequantize_abs_max", nm.fake_quantize_dequantize_abs_max),
])
@pytest.mark.parametrize("round_half", ROUND_HALVES)
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("shape", [(64,), (4, 3, 2, 2)])
def test_abs_max_ops_match_paddle(op, fn, shape, bits, round_half):
    rng = _rng(op, shape, bits, round_half)
    x = _abs_max_tensor(rng, shape, bits, None)
    attrs = {"bit_length": bits, "round_type": nm.ROUND_TYPE[round_half]}
    got = run_op(op, {"X": x}, FQ_OUTS, attrs)
    want = fn(x, bits, round_half=round_half)
    np.testing.assert_array_equal(got["OutScale"], want.scale)
    np.testing.assert_array_equal(got["Out"], want.out)


@pytest.mark.parametrize("op,fn", [
    ("fake_quantize_abs_max", nm.fake_quantize_abs_max),
    ("fake_quantize_dequantize_abs_max", nm.fake_quantize_dequantize_abs_max),
    ("fake_channel_wise_quantize_abs_max", nm.fake_channel_wise_quantize_abs_max),
    ("fake_channel_wise_quantize_dequantize_abs_max", nm.fake_channel_wise_quantize_dequantize_abs_max),
])
def test_fake_ops_default_round_type_is_away(op, fn):
    x = np.array([[127.0, 0.5, 2.5, -2.5], [-127.0, 1.5, -0.5, 3.5]], F32)
    got = run_op(op, {"X": x}, FQ_OUTS, {})  # no round_type: the op's default
    np.testing.assert_array_equal(got["Out"], fn(x).out)
    assert got["Out"][0, 2] == 3 and got["Out"][1, 2] == -1  # scale 127: ties away from zero


@pytest.mark.parametrize("op,fn", [
    ("fake_quantize_abs_max", nm.fake_quantize_abs_max),
    ("fake_quantize_dequantize_abs_max", nm.fake_quantize_dequantize_abs_max),
])
@pytest.mark.parametrize("round_half", ROUND_HALVES)
def test_abs_max_ops_all_zero_input(op, fn, round_half):
    x = np.zeros((3, 4), F32)
    got = run_op(op, {"X": x}, FQ_OUTS, {"round_type": nm.ROUND_TYPE[round_half]})
    want = fn(x, round_half=round_half)
    np.testing.assert_array_equal(got["Out"], want.out)
    np.testing.assert_array_equal(got["OutScale"], want.scale)
    assert not want.out.any() and want.scale[0] == 0


@pytest.mark.parametrize("op,fn", [
    ("fake_channel_wise_quantize_abs_max", nm.fake_channel_wise_quantize_abs_max),
    ("fake_channel_wise_quantize_dequantize_abs_max", nm.fake_channel_wise_quantize_dequantize_abs_max),
])
@pytest.mark.parametrize("round_half", ROUND_HALVES)
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("shape,axis", [(s, a) for s in SHAPES for a in (0, 1)])
def test_channel_wise_ops_match_paddle(op, fn, shape, axis, bits, round_half):
    rng = _rng(op, shape, axis, bits, round_half)
    x = _abs_max_tensor(rng, shape, bits, axis)
    x[(1,) * len(shape)] = 0.0
    attrs = {"bit_length": bits, "round_type": nm.ROUND_TYPE[round_half], "quant_axis": axis}
    got = run_op(op, {"X": x}, FQ_OUTS, attrs)
    want = fn(x, bits, axis, round_half=round_half)
    np.testing.assert_array_equal(got["OutScale"], want.scale)
    np.testing.assert_array_equal(got["Out"], want.out)


@pytest.mark.parametrize("round_half", ROUND_HALVES)
@pytest.mark.parametrize("axis", [0, 1])
def test_channel_wise_quantize_is_test_reads_out_scale(axis, round_half):
    rng = _rng("cw-test", axis, round_half)
    shape = (4, 3, 2, 2)
    scale = _scales(rng, shape[axis])
    x = _tie_tensor(rng, shape, scale, 8, axis)
    attrs = {"round_type": nm.ROUND_TYPE[round_half], "quant_axis": axis, "is_test": True}
    got = run_op("fake_channel_wise_quantize_abs_max", {"X": x}, FQ_OUTS, attrs, preset={"OutScale": scale})
    want = nm.fake_channel_wise_quantize_abs_max(x, 8, axis, round_half=round_half, scale=scale)
    np.testing.assert_array_equal(got["Out"], want.out)
    np.testing.assert_array_equal(got["OutScale"], scale)


# --------------------------------------------------------------- dequant ops


@pytest.mark.parametrize("bits", BITS)
def test_fake_dequantize_max_abs_matches_paddle(bits):
    rng = _rng("fdma", bits)
    q = rng.integers(nm.qmin(bits), nm.qmax(bits) + 1, size=(5, 7)).astype(F32)
    scale = _scales(rng, 1)
    for max_range in (float(nm.qmax(bits)), float(F32(127) / F32(0.37) * F32(127))):
        got = run_op("fake_dequantize_max_abs", {"X": q, "Scale": scale}, OUT, {"max_range": max_range})
        np.testing.assert_array_equal(got["Out"], nm.fake_dequantize_max_abs(q, scale, max_range))


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("shape,axis", [(s, a) for s in SHAPES for a in (0, 1)])
def test_channel_wise_dequantize_one_scale_matches_paddle(shape, axis, bits):
    rng = _rng("cwd1", shape, axis, bits)
    q = rng.integers(nm.qmin(bits), nm.qmax(bits) + 1, size=shape).astype(F32)
    scale = _scales(rng, shape[axis])
    attrs = {"quant_bits": [bits], "quant_axis": axis}
    got = run_op("fake_channel_wise_dequantize_max_abs", {"X": q, "Scales": [scale]}, OUT, attrs)
    want = nm.fake_channel_wise_dequantize_max_abs(q, [scale], [bits], axis)
    np.testing.assert_array_equal(got["Out"], want)


@pytest.mark.parametrize("bits", [(8, 8), (4, 8), (8, 16)])
@pytest.mark.parametrize("shape,x_num_col_dims", [((3, 4, 2, 2), 1), ((6, 5), 1), ((2, 3, 4), 2)])
def test_channel_wise_dequantize_two_scales_matches_paddle(shape, x_num_col_dims, bits):
    rng = _rng("cwd2", shape, x_num_col_dims, bits)
    x = (rng.standard_normal(shape) * 3000).round().astype(F32)
    w_scale = _scales(rng, shape[x_num_col_dims])
    a_scale = _scales(rng, 1)
    attrs = {"quant_bits": list(bits), "quant_axis": 0, "x_num_col_dims": x_num_col_dims}
    got = run_op(
        "fake_channel_wise_dequantize_max_abs", {"X": x, "Scales": [w_scale, a_scale]}, OUT, attrs
    )
    want = nm.fake_channel_wise_dequantize_max_abs(x, [w_scale, a_scale], bits, 0, x_num_col_dims)
    np.testing.assert_array_equal(got["Out"], want)


# ------------------------------------------------------------- moving averages


@pytest.mark.parametrize("op,fn", [
    ("fake_quantize_moving_average_abs_max", nm.fake_quantize_moving_average_abs_max),
    ("fake_quantize_dequantize_moving_average_abs_max", nm.fake_quantize_dequantize_moving_average_abs_max),
])
@pytest.mark.parametrize("round_half", ROUND_HALVES)
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("rate", [0.9, 0.5])
def test_moving_average_ops_train_match_paddle(op, fn, rate, bits, round_half):
    rng = _rng(op, rate, bits, round_half)
    state, accum, in_scale = np.ones(1, F32), np.ones(1, F32), np.full(1, 7.0, F32)
    attrs = {"bit_length": bits, "round_type": nm.ROUND_TYPE[round_half], "moving_rate": rate,
             "is_test": False}
    for step, peak in enumerate([3.0, 0.5, 1.25]):
        x = _moving_average_tensor(rng, (4, 5), peak, state, accum, rate, bits)
        got = run_op(op, {"X": x, "InScale": in_scale, "InAccum": accum, "InState": state}, MA_OUTS, attrs)
        want = fn(x, in_scale, state, accum, bits=bits, rate=rate, round_half=round_half)
        for name, value in zip(("Out", "OutScale", "OutState", "OutAccum"), want):
            np.testing.assert_array_equal(got[name], value, err_msg=f"{name} at step {step}")
        state, accum, in_scale = want.state, want.accum, want.scale


@pytest.mark.parametrize("op,fn", [
    ("fake_quantize_moving_average_abs_max", nm.fake_quantize_moving_average_abs_max),
    ("fake_quantize_dequantize_moving_average_abs_max", nm.fake_quantize_dequantize_moving_average_abs_max),
])
@pytest.mark.parametrize("round_half", ROUND_HALVES)
@pytest.mark.parametrize("bits", BITS)
def test_moving_average_ops_is_test_match_paddle(op, fn, bits, round_half):
    rng = _rng(op, "test", bits, round_half)
    in_scale = _scales(rng, 1)
    x = _tie_tensor(rng, (6, 5), in_scale, bits, None)
    attrs = {"bit_length": bits, "round_type": nm.ROUND_TYPE[round_half], "is_test": True}
    got = run_op(op, {"X": x, "InScale": in_scale}, {"Out": "float32", "OutScale": "float32"}, attrs,
                 inplace={"OutScale": "InScale"})
    want = fn(x, in_scale, bits=bits, round_half=round_half, is_test=True)
    np.testing.assert_array_equal(got["Out"], want.out)
    np.testing.assert_array_equal(got["OutScale"], want.scale)


@pytest.mark.parametrize("rate", [0.9, 0.5, 0.123])
def test_moving_average_abs_max_scale_matches_paddle(rate):
    rng = _rng("maams", rate)
    state, accum = np.ones(1, F32), np.ones(1, F32)
    for step in range(4):
        x = (rng.standard_normal((3, 7)) * 10 ** rng.uniform(-2, 2)).astype(F32)
        got = run_op("moving_average_abs_max_scale", {"X": x, "InAccum": accum, "InState": state}, MA_OUTS,
                     {"moving_rate": rate})
        want = nm.moving_average_abs_max_scale(x, state, accum, rate=rate)
        for name, value in zip(("Out", "OutScale", "OutState", "OutAccum"), want):
            np.testing.assert_array_equal(got[name], value, err_msg=f"{name} at step {step}")
        state, accum = want.state, want.accum


def test_moving_average_abs_max_scale_is_test_only_copies():
    x = np.arange(6, dtype=F32).reshape(2, 3)
    ones = np.ones(1, F32)
    got = run_op("moving_average_abs_max_scale", {"X": x, "InAccum": ones, "InState": ones},
                 FQ_OUTS, {"is_test": True}, preset={"OutScale": np.full(1, 3.5, F32)})
    np.testing.assert_array_equal(got["Out"], x)
    np.testing.assert_array_equal(got["OutScale"], np.full(1, 3.5, F32))


# ----------------------------------------------------------------- range abs max


@pytest.mark.parametrize("round_half", ROUND_HALVES)
@pytest.mark.parametrize("bits", [4, 8])
def test_range_abs_max_train_matches_paddle(bits, round_half):
    """Step maxima chosen so the window rescan branch (removed == last) runs."""
    rng = _rng("range", bits, round_half)
    window_size = 3
    window = np.zeros(window_size, F32)
    in_scale = np.full(1, 1e-3, F32)
    attrs = {"bit_length": bits, "round_type": nm.ROUND_TYPE[round_half], "window_size": window_size,
             "is_test": False}
    for it, peak in enumerate([5.0, 1.0, 2.0, 1.5, 0.5, 0.25, 0.25, 3.0]):
        x = _tie_tensor(rng, (4, 5), np.array([peak], F32), bits, None)
        x = np.clip(x, -peak, peak).astype(F32)
        x[0, 0] = peak
        iters = np.array([it], np.int64)
        got = run_op("fake_quantize_range_abs_max", {"X": x, "InScale": in_scale, "Iter": iters},
                     {"Out": "float32", "OutScale": "float32", "OutScales": "float32"}, attrs,
                     preset={"OutScales": window})
        want = nm.fake_quantize_range_abs_max(x, in_scale, window, it, window_size=window_size, bits=bits,
                                              round_half=round_half)
        np.testing.assert_array_equal(got["OutScales"], want.window, err_msg=f"window at {it}")
        np.testing.assert_array_equal(got["OutScale"], want.scale, err_msg=f"scale at {it}")
        np.testing.assert_array_equal(got["Out"], want.out, err_msg=f"out at {it}")
        window, in_scale = want.window, want.scale
    assert in_scale[0] == 3.0


def test_range_abs_max_rescan_excludes_current_entry_before_window_fills():
    """Quirk: for iter < window_size the rescan covers window[:iter] only."""
    x = np.array([[1.0, -0.75], [0.3, 0.6]], F32)  # cur = 1.0
    in_scale = np.full(1, 2.0, F32)
    attrs = {"window_size": 4, "is_test": False}
    outs = {"Out": "float32", "OutScale": "float32", "OutScales": "float32"}
    for it, expected in ((2, 0.5), (0, 1.0)):
        window = np.array([0.5, 0.25, 2.0, 0.0], F32) if it else np.array([2.0, 0.5, 0.0, 0.0], F32)
        inputs = {"X": x, "InScale": in_scale, "Iter": np.array([it], np.int64)}
        got = run_op("fake_quantize_range_abs_max", inputs, outs, attrs, preset={"OutScales": window})
        want = nm.fake_quantize_range_abs_max(x, in_scale, window, it, window_size=4)
        np.testing.assert_array_equal(got["OutScales"], want.window)
        np.testing.assert_array_equal(got["OutScale"], want.scale)
        np.testing.assert_array_equal(got["Out"], want.out)
        assert want.scale[0] == expected  # it=2: below this step's max|x| = 1.0


@pytest.mark.parametrize("round_half", ROUND_HALVES)
def test_range_abs_max_is_test_matches_paddle(round_half):
    rng = _rng("range-test", round_half)
    in_scale = _scales(rng, 1)
    x = _tie_tensor(rng, (5, 6), in_scale, 8, None)
    attrs = {"round_type": nm.ROUND_TYPE[round_half], "is_test": True}
    got = run_op("fake_quantize_range_abs_max", {"X": x, "InScale": in_scale}, FQ_OUTS, attrs,
                 inplace={"OutScale": "InScale"})
    want = nm.fake_quantize_range_abs_max(x, in_scale, round_half=round_half, is_test=True)
    np.testing.assert_array_equal(got["Out"], want.out)
    np.testing.assert_array_equal(got["OutScale"], want.scale)


# --------------------------------------------------------- hypothesis properties

_EPS32 = float(np.finfo(F32).eps)
_scale_st = st.floats(2.0**-10, 2.0**10, width=32)
_bits_st = st.sampled_from(BITS)
_round_st = st.sampled_from(ROUND_HALVES)


def _unit_tensor(max_side: int = 6):
    return hnp.arrays(F32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=max_side),
                      elements=st.floats(-1, 1, width=32))


@settings(max_examples=100, deadline=None)
@given(u=_unit_tensor(), scale=_scale_st, bits=_bits_st, round_half=_round_st)
def test_fake_quant_error_is_half_a_step_inside_range(u, scale, bits, round_half):
    s = F32(scale)
    x = (u * s).astype(F32)
    x = np.clip(x, -s, s)
    err = np.abs(x.astype(np.float64) - nm.fake_quant_dequant(x, s, bits, round_half=round_half))
    # half a step, plus float32 evaluation error of (qmax*inv(s))*x and (q*s)/qmax (a few ulps of s)
    atol = float(s) / (2 * nm.qmax(bits)) + 8 * _EPS32 * float(s)
    assert err.max() <= atol


@settings(max_examples=100, deadline=None)
@given(data=st.data(), scale=_scale_st, bits=_bits_st, round_half=_round_st)
def test_grid_values_round_trip_exactly(data, scale, bits, round_half):
    q_hi = nm.qmax(bits)
    q_lo = -q_hi if round_half == "away" else nm.qmin(bits)
    q = data.draw(hnp.arrays(F32, st.integers(1, 40), elements=st.integers(q_lo, q_hi).map(float)))
    x = nm.dequantize_linear(q, F32(scale), bits)
    np.testing.assert_array_equal(nm.quantize_linear(x, F32(scale), bits, round_half=round_half), q)
    np.testing.assert_array_equal(nm.fake_quant_dequant(x, F32(scale), bits, round_half=round_half), x)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), bits=_bits_st, round_half=_round_st)
def test_per_channel_equals_per_tensor_per_slice(data, bits, round_half):
    u = data.draw(hnp.arrays(F32, hnp.array_shapes(min_dims=2, max_dims=4, max_side=5),
                             elements=st.floats(-4, 4, width=32)))
    axis = data.draw(st.integers(0, u.ndim - 1))
    scales = data.draw(hnp.arrays(F32, u.shape[axis], elements=_scale_st))
    x = (u * scales.reshape([-1 if d == axis else 1 for d in range(u.ndim)])).astype(F32)
    per_channel = nm.fake_quant_dequant(x, scales, bits, axis, round_half=round_half)
    q_channel = nm.quantize_linear(x, scales, bits, axis, round_half=round_half)
    for c in range(u.shape[axis]):
        sl = np.take(x, c, axis=axis)
        np.testing.assert_array_equal(np.take(per_channel, c, axis=axis),
                                      nm.fake_quant_dequant(sl, scales[c], bits, round_half=round_half))
        np.testing.assert_array_equal(np.take(q_channel, c, axis=axis),
                                      nm.quantize_linear(sl, scales[c], bits, round_half=round_half))


@settings(max_examples=100, deadline=None)
@given(u=_unit_tensor(), scale=st.floats(0, 2.0**10, width=32), spread=st.floats(0, 2.0**14, width=32),
       bits=_bits_st, round_half=_round_st)
def test_quantize_output_is_integer_in_range(u, scale, spread, bits, round_half):
    x = (u * F32(spread)).astype(F32)
    q = nm.quantize_linear(x, F32(scale), bits, round_half=round_half)
    assert q.dtype == F32
    np.testing.assert_array_equal(q, np.round(q))
    lo = nm.qmin(bits, narrow=round_half == "away")
    assert q.min(initial=0) >= lo and q.max(initial=0) <= nm.qmax(bits)
    w = nm.weight_to_int(x, F32(scale), bits, round_half=round_half)
    np.testing.assert_array_equal(w, q.astype(w.dtype))


@settings(max_examples=50, deadline=None)
@given(u=_unit_tensor(8), scale=_scale_st, bits=_bits_st, round_half=_round_st)
def test_fake_quant_dequant_matches_paddle_fused_op(u, scale, bits, round_half):
    """Random shapes through the fused per-tensor op with a fixed scale (is_test)."""
    s = np.array([scale], F32)
    x = (u * s[0] * F32(1.5)).astype(F32)
    attrs = {"bit_length": bits, "round_type": nm.ROUND_TYPE[round_half], "is_test": True}
    got = run_op("fake_quantize_dequantize_moving_average_abs_max", {"X": x, "InScale": s},
                 {"Out": "float32", "OutScale": "float32"}, attrs, inplace={"OutScale": "InScale"})["Out"]
    np.testing.assert_array_equal(got, nm.fake_quant_dequant(x, s, bits, round_half=round_half))
