"""paddle_quant.embedding.numerics: hypothesis properties and independent numpy references.

Properties: abs_max error <= step/2 inside the clip range; log codes carry the
sign of the value and stay within 2**bits codes; product-quantization codes
index valid centroids and each row takes its nearest centroid (brute force).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from paddle_quant.embedding import numerics as en
from paddle_quant.common.errors import ConfigError

F32 = np.float32
_finite = st.floats(-50.0, 50.0, allow_nan=False, width=32)
_tables = hnp.arrays(F32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12), elements=_finite)


# ------------------------------------------------------------------ abs_max
@settings(max_examples=150, deadline=None)
@given(table=_tables, bits=st.sampled_from([2, 4, 8, 16]),
       threshold=st.one_of(st.none(), st.floats(0.01, 60.0, allow_nan=False)))
@example(table=np.array([[37.5, 15.851124]], F32), bits=16, threshold=60.0)  # beat a 1e-7 absolute slack
def test_abs_max_error_within_half_step_inside_threshold(table, bits, threshold):
    """Half a step, plus float32 rounding stated in its own units: ``W / scale * qmax`` is rounded twice
    in float32 before ``round`` (at most ``qmax * 2**-23`` of a code, 0.004 at 16 bits), and the
    dequantized value twice (at most one ulp of it)."""
    result = en.quantize_abs_max(table, bits, threshold)
    restored = en.dequantize_abs_max(result.codes, result.scale, bits)
    clipped = np.clip(table, -result.clip, result.clip)
    qmax = 2 ** (bits - 1) - 1
    step = float(result.scale) / qmax
    allowed = step * (0.5 + qmax * 2.0 ** -23) + np.spacing(np.abs(restored))
    assert np.all(np.abs(restored.astype(np.float64) - clipped) <= allowed)
    assert np.abs(result.codes.astype(np.int64)).max(initial=0) <= 2 ** (bits - 1) - 1


def test_abs_max_of_a_hand_computed_table():
    """max|W| = 0.8 < 1: no clipping; 0.4 / 0.8 * 127 = 63.5 rounds to the even 64, 0.2 -> 31.75 -> 32."""
    result = en.quantize_abs_max(np.array([[0.4, -0.8], [0.2, 0.0]], F32), 8, None)
    assert result.codes.tolist() == [[64, -127], [32, 0]] and result.codes.dtype == np.int8
    assert result.scale == F32(0.8)


def test_abs_max_matches_paddleslim_formula():
    """The reference: PaddleSlim's _quant_abs_max/_clip_array, restated in numpy."""
    table = np.random.default_rng(1).normal(0, 0.3, (40, 8)).astype(F32)
    result = en.quantize_abs_max(table, 8, None)
    scale = np.max(np.abs(table)).astype(F32)
    np.testing.assert_array_equal(result.codes, np.round(table / scale * 127).astype(np.int8))
    assert result.scale == scale


def test_abs_max_default_clips_at_percentile_when_max_at_least_one():
    table = np.random.default_rng(2).normal(0, 1, (200, 50)).astype(F32)
    result = en.quantize_abs_max(table, 8, None)
    assert result.clip == pytest.approx(np.percentile(np.abs(table), 99.99))
    assert result.scale < np.abs(table).max()


@pytest.mark.parametrize("quantize", [lambda t: en.quantize_abs_max(t, 8, None),
                                      lambda t: en.quantize_abs_max(t, 8, 1.0)])
def test_abs_max_zero_table_has_no_nan(quantize):
    result = quantize(np.zeros((5, 4), F32))
    restored = en.dequantize_abs_max(result.codes, result.scale, 8)
    assert np.all(result.codes == 0) and np.all(restored == 0) and np.isfinite(restored).all()


# ---------------------------------------------------------------------- log
@settings(max_examples=150, deadline=None)
@given(table=_tables, bits=st.integers(2, 8))
def test_log_codes_round_trip_sign(table, bits):
    result = en.quantize_log(table, bits)
    restored = en.dequantize_log(result.codes, result.dictionary)
    assert np.array_equal(result.codes < 0, table < 0)
    assert np.all(np.sign(restored) * np.sign(table) >= 0)
    assert np.unique(result.codes).size <= 2 ** bits
    assert result.dictionary.shape == (en.LOG_DICT_SIZE,) and np.isfinite(restored).all()


@settings(max_examples=100, deadline=None)
@given(table=_tables)
def test_log_relative_error_bounded_for_kept_levels(table):
    """With fewer distinct levels than the dictionary holds, every nonzero value is within half a step (log2).

    Subnormal float32 magnitudes are left out: their dictionary entry 2**e cannot be stored exactly.
    """
    result = en.quantize_log(table, 8)
    levels = np.unique(np.round(np.log2(np.abs(table[table != 0]).astype(np.float64)) / en.LOG_STEP))
    if levels.size > 127:
        return
    restored = en.dequantize_log(result.codes, result.dictionary)
    nonzero = np.abs(table) >= 1e-30
    ratio = np.abs(restored[nonzero]) / np.abs(table[nonzero])
    assert np.all(np.abs(np.log2(ratio)) <= en.LOG_STEP / 2 + 1e-5)


def test_log_dequantize_matches_paddle_kernel_rule():
    dictionary = np.arange(1, 129, dtype=F32)
    codes = np.array([0, 1, 127, -128, -127, -1], np.int8)
    np.testing.assert_array_equal(en.dequantize_log(codes, dictionary), [1, 2, 128, -1, -2, -128])


def test_log_zero_table_has_no_nan():
    result = en.quantize_log(np.zeros((3, 4), F32), 8)
    assert np.all(en.dequantize_log(result.codes, result.dictionary) == 0)


# ----------------------------------------------------------------------- PQ
@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 60), subspaces=st.sampled_from([1, 2, 4]), k=st.sampled_from([2, 5, 16]),
       seed=st.integers(0, 2 ** 16))
def test_pq_codes_index_valid_centroids_and_are_nearest(rows, subspaces, k, seed):
    table = np.random.default_rng(seed).normal(size=(rows, 8)).astype(F32)
    result = en.product_quantize(table, subspaces, k, iterations=3, seed=seed)
    assert result.codes.shape == (rows, subspaces) and result.codebooks.shape == (subspaces, k, 8 // subspaces)
    assert result.codes.min() >= 0 and result.codes.max() < k
    parts = table.reshape(rows, subspaces, -1)
    distances = ((parts[:, :, None, :] - result.codebooks[None]) ** 2).sum(-1)   # brute force [rows, M, K]
    chosen = np.take_along_axis(distances, result.codes[:, :, None], axis=2)[..., 0]
    assert np.all(chosen <= distances.min(axis=2) + 1e-4)


def test_pq_reconstruct_reference():
    codebooks = np.arange(2 * 3 * 2, dtype=F32).reshape(2, 3, 2)
    codes = np.array([[0, 2], [1, 0]])
    np.testing.assert_array_equal(en.reconstruct_pq(codes, codebooks), [[0, 1, 10, 11], [2, 3, 6, 7]])


def test_pq_is_seeded_and_recovers_clustered_rows():
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(4, 8)).astype(F32)
    table = centers[rng.integers(0, 4, 300)]
    first = en.product_quantize(table, 2, 4, iterations=10, seed=7)
    again = en.product_quantize(table, 2, 4, iterations=10, seed=7)
    np.testing.assert_array_equal(first.codes, again.codes)
    assert np.abs(en.reconstruct_pq(first.codes, first.codebooks) - table).max() < 1e-5


def test_pq_fixed_zero_centroid_and_zero_table():
    table = np.random.default_rng(4).normal(size=(50, 8)).astype(F32)
    result = en.product_quantize(table, 2, 8, iterations=4, seed=0, fixed_zero=3)
    assert np.all(result.codebooks[:, 3] == 0)
    zero = en.product_quantize(np.zeros((20, 8), F32), 4, 16, iterations=3, seed=0)
    restored = en.reconstruct_pq(zero.codes, zero.codebooks)
    assert np.isfinite(restored).all() and np.all(restored == 0)


def test_pq_subsample_fit_assigns_all_rows():
    table = np.random.default_rng(5).normal(size=(500, 8)).astype(F32)
    result = en.product_quantize(table, 4, 8, iterations=3, seed=0, sample_rows=50)
    assert result.codes.shape == (500, 4)


def test_pq_subspaces_must_divide_width():
    with pytest.raises(ConfigError, match=r"'subspaces' got 3.*\[1, 2, 4, 8\]"):
        en.product_quantize(np.ones((4, 8), F32), 3, 4, 2, 0)


def test_pq_code_offset_makes_stored_zero_a_valid_centroid():
    for k in (2, 16, 128, 129, 256):
        offset = en.pq_code_offset(k)
        assert 0 <= offset < k and -128 <= 0 - offset and k - 1 - offset <= 127
