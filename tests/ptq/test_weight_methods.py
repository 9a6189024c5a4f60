"""paddle_quant.ptq.weight_methods: abs max, per-channel abs max, ADMM, power of two.

Oracles: ``numerics`` (abs-max scales, kernel quantization), hypothesis
properties (ADMM never worse than abs max; per channel equals per tensor per
slice; power of two never clips), and a fixed-point check of ADMM.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from paddle_quant.common import numerics as nm
from paddle_quant.ptq import weight_methods as wm
from paddle_quant.common.errors import ConfigError, ConfigTypeError

F32 = np.float32
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PER_CHANNEL_METHODS = ["abs_max", "channel_wise_abs_max", "admm", "power_of_two"]


def _rng(*key) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _sq_error(w: np.ndarray, scale: np.ndarray, bits: int, axis) -> np.ndarray:
    """Squared QDQ error per channel (or one value), with the kernel's numerics, each sum exactly rounded."""
    err = (w.astype(np.float64) - nm.fake_quant_dequant(w, scale, bits, axis)) ** 2
    if axis is None or axis < 0:
        return np.array([math.fsum(err.ravel())])
    return np.array([math.fsum(row) for row in np.moveaxis(err, axis, 0).reshape(w.shape[axis], -1)])


# weights with magnitudes well inside the kernel's normal range (its s <= 1e-30 branch aside)
_weights = hnp.arrays(
    F32,
    hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=6),
    elements=st.one_of(st.just(0.0), st.floats(-100, 100, width=32).filter(lambda v: v == 0 or abs(v) > 1e-3)),
)


# --------------------------------------------------------------------- abs max


@pytest.mark.parametrize("axis", [0, 1])
def test_abs_max_matches_numerics(axis):
    w = _rng("absmax", axis).standard_normal((4, 5, 3, 3)).astype(F32)
    np.testing.assert_array_equal(wm.weight_scale(w, "abs_max"), nm.abs_max_scale(w))
    np.testing.assert_array_equal(wm.weight_scale(w, "abs_max", axis=-1), nm.abs_max_scale(w))
    for method in ("abs_max", "channel_wise_abs_max"):
        got = wm.weight_scale(w, method, axis=axis)
        assert got.dtype == F32 and got.shape == (w.shape[axis],)
        np.testing.assert_array_equal(got, nm.channel_scales(w, axis))


# ------------------------------------------------------------------------ ADMM


# every float32 a weight can hold: zeros, subnormals, tiny and large magnitudes
_any_weights = hnp.arrays(
    F32, hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=6),
    elements=st.one_of(st.just(0.0), st.floats(-2.0 ** -126, 2.0 ** -126, width=32), st.floats(-1e6, 1e6, width=32)),
)


def _assert_admm_never_worse(w, bits, axis):
    admm = wm.weight_scale(w, "admm", bits=bits, axis=axis)
    absmax = wm.weight_scale(w, "abs_max", bits=bits, axis=axis)
    assert np.isfinite(admm).all() and (admm > 0).all()
    e_admm, e_absmax = _sq_error(w, admm, bits, axis), _sq_error(w, absmax, bits, axis)
    assert (e_admm <= e_absmax).all(), (e_admm, e_absmax)  # exactly: ADMM keeps its best iterate


@SETTINGS
@given(w=st.one_of(_weights, _any_weights), bits=st.sampled_from([2, 4, 8]), per_channel=st.booleans())
@example(w=np.array([[0.0] * 6 + [98.0, -3.5, 0.25, 41.0, 0.0, 7.75]], F32), bits=8, per_channel=False)
def test_admm_never_worse_than_abs_max(w, bits, per_channel):
    _assert_admm_never_worse(w, bits, 0 if per_channel else None)


def _weight_zoo(rng, index):
    """One of six kinds of weight, cycling: normal, laplace (heavy tails), cauchy (heavier), mostly zeros,
    a constant, subnormals."""
    shape = tuple(rng.integers(1, 9, size=rng.integers(2, 4)))
    kind = index % 6
    if kind == 0:
        w = rng.normal(0, 10 ** rng.uniform(-3, 2), shape)
    elif kind == 1:
        w = rng.laplace(0, 10 ** rng.uniform(-3, 2), shape)
    elif kind == 2:
        w = np.clip(rng.standard_cauchy(shape), -1e6, 1e6)
    elif kind == 3:
        w = rng.normal(0, 30, shape) * (rng.random(shape) < 0.2)
    elif kind == 4:
        w = np.full(shape, rng.uniform(-5, 5))
    else:
        w = rng.normal(0, 1, shape) * 1e-40
    return w.astype(F32)


def test_admm_never_worse_than_abs_max_on_ten_thousand_weights():
    rng = _rng("admm", "zoo")
    for index in range(10_000):
        w = _weight_zoo(rng, index)
        _assert_admm_never_worse(w, (2, 4, 8)[index % 3], 0 if index % 2 else None)


def test_admm_beats_abs_max_on_heavy_tails_and_is_a_fixed_point():
    w = _rng("admm", "laplace").laplace(size=(8, 3, 5, 5)).astype(F32)
    scale = wm.weight_scale(w, "admm", bits=4, axis=0, iterations=100)
    absmax = wm.weight_scale(w, "abs_max", axis=0)
    assert (scale < absmax).all()  # clips the tails
    e_admm, e_absmax = _sq_error(w, scale, 4, 0), _sq_error(w, absmax, 4, 0)
    assert (e_admm <= e_absmax).all() and e_admm.sum() < 0.97 * e_absmax.sum()  # 0.955: a local optimum near abs max
    # converged: the least-squares scale of its own grid is itself
    rows = w.reshape(8, -1).astype(np.float64)
    q = nm.quantize_linear(w, scale, 4, axis=0).reshape(8, -1).astype(np.float64)
    refit = 7 * np.einsum("ij,ij->i", rows, q) / np.einsum("ij,ij->i", q, q)
    np.testing.assert_allclose(refit, scale, rtol=1e-6)


def test_admm_iterations_bound_the_work():
    w = _rng("admm", "iters").laplace(size=(4, 64)).astype(F32)
    one = wm.weight_scale(w, "admm", bits=4, axis=0, iterations=1)
    ten = wm.weight_scale(w, "admm", bits=4, axis=0, iterations=10)
    assert (_sq_error(w, ten, 4, 0) <= _sq_error(w, one, 4, 0) * (1 + 1e-6)).all()
    assert not np.array_equal(one, ten)


# ---------------------------------------------------------------- power of two


@SETTINGS
@given(w=_weights, per_channel=st.booleans())
def test_power_of_two_is_the_smallest_power_not_clipping(w, per_channel):
    axis = 0 if per_channel else None
    scale = wm.weight_scale(w, "power_of_two", axis=axis).astype(np.float64)
    absmax = np.abs(w).max() if axis is None else nm.channel_scales(w, 0).astype(np.float64)
    mantissa, _ = np.frexp(scale)
    assert (mantissa == 0.5).all()  # exact powers of two
    zero = absmax == 0
    assert (scale[zero] == 1.0).all()
    assert ((scale >= absmax) & (scale < 2 * absmax))[~zero].all()


def test_power_of_two_keeps_exact_powers():
    w = np.array([[0.25, -0.125], [3.0, 1.0], [-4.0, 0.0]], F32)
    np.testing.assert_array_equal(wm.weight_scale(w, "power_of_two", axis=0), [0.25, 4.0, 4.0])
    np.testing.assert_array_equal(wm.weight_scale(w, "power_of_two"), [4.0])


# --------------------------------------------------------------- granularity


@SETTINGS
@given(w=_weights, method=st.sampled_from(["admm", "power_of_two", "abs_max"]), data=st.data())
def test_per_channel_equals_per_tensor_per_slice(w, method, data):
    axis = data.draw(st.integers(0, w.ndim - 1))
    got = wm.weight_scale(w, method, bits=4, axis=axis)
    assert got.shape == (w.shape[axis],)
    for c in range(w.shape[axis]):
        want = wm.weight_scale(np.take(w, c, axis=axis), method, bits=4)
        np.testing.assert_array_equal(got[c : c + 1], want)


@pytest.mark.parametrize("method", PER_CHANNEL_METHODS)
def test_zero_weights_get_scale_one(method):
    w = np.zeros((3, 4), F32)
    w[1] = [0.5, -2.0, 1.0, 0.0]
    got = wm.weight_scale(w, method, axis=0)
    assert np.isfinite(got).all()
    assert got[0] == 1.0 and got[2] == 1.0 and got[1] > 0
    if method != "channel_wise_abs_max":
        np.testing.assert_array_equal(wm.weight_scale(np.zeros((2, 2)), method), [1.0])
    np.testing.assert_array_equal(nm.fake_quant_dequant(w, got, 8, 0)[[0, 2]], 0.0)  # still exact zeros


# -------------------------------------------------------------------- errors


def test_unknown_method_names_field_value_and_allowed():
    with pytest.raises(ConfigError) as err:
        wm.weight_scale(np.ones(3), "admn")
    msg = str(err.value)
    assert "method" in msg and "'admn'" in msg and "'power_of_two'" in msg and "did you mean 'admm'" in msg
    with pytest.raises(ConfigError, match="method"):
        wm.weight_scale(np.ones(3), None)


def test_bad_arguments():
    w = np.ones((2, 3), F32)
    with pytest.raises(ConfigError, match="channel_wise_abs_max.*axis"):
        wm.weight_scale(w, "channel_wise_abs_max")
    with pytest.raises(ConfigError, match="axis"):
        wm.weight_scale(w, "admm", axis=2)
    with pytest.raises(ConfigTypeError, match="axis"):
        wm.weight_scale(w, "abs_max", axis=1.0)
    with pytest.raises(ConfigError, match="bits"):
        wm.weight_scale(w, "admm", bits=1)
    with pytest.raises(ConfigError, match="bits"):
        wm.weight_scale(w, "abs_max", bits=17)
    with pytest.raises(ConfigError, match="iterations"):
        wm.weight_scale(w, "admm", iterations=0)
    with pytest.raises(ConfigError, match="empty"):
        wm.weight_scale(np.zeros((0, 3)), "abs_max")
    with pytest.raises(ConfigError, match="NaN or inf"):
        wm.weight_scale(np.array([1.0, np.nan]), "power_of_two")
