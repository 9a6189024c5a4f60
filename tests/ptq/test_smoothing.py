"""ptq/smoothing.py: the smoothing scale, the calibration samples and the search for alpha (numpy only).

Oracles: the formula evaluated by hand, a loop-by-loop numpy convolution for the sampled windows, and
the simulated int8 error of a layer with outlier input channels.
"""

from __future__ import annotations

import numpy as np

from paddle_quant.ptq.smoothing import (ALPHA_CANDIDATES, SCALE_LIMITS, input_channel_peaks, sample_patches,
                                        sample_rows, search_alpha, smoothing_scale)


def test_scale_is_the_smoothquant_formula_and_one_where_a_range_is_zero():
    a, w = np.array([4.0, 9.0, 0.0, 1.0, np.inf]), np.array([1.0, 4.0, 2.0, 0.0, 1.0])
    np.testing.assert_allclose(smoothing_scale(a, w, 0.5), [2.0, 1.5, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(smoothing_scale(a[:2], w[:2], 1.0), a[:2])
    np.testing.assert_allclose(smoothing_scale(a[:2], w[:2], 0.0), 1 / w[:2])
    np.testing.assert_allclose(smoothing_scale(np.array([1e12]), np.array([1e-12]), 0.5), [SCALE_LIMITS[1]])


def test_weight_peaks_per_input_channel_of_grouped_weights():
    dense = np.arange(24, dtype=np.float64).reshape(1, 3, 2, 4) - 12  # [groups, out, in, k]
    np.testing.assert_array_equal(input_channel_peaks([dense]), [12, 11])
    depthwise = np.array([1.0, -5.0, 2.0]).reshape(3, 1, 1, 1)  # channel c is input channel c
    np.testing.assert_array_equal(input_channel_peaks([depthwise, depthwise * 2]), [2, 10, 4])


def _conv_at(x, w, n, top, left, dilations):
    """One output value per output channel of a cross-correlation, by loops."""
    out = np.zeros(w.shape[0])
    for o in range(w.shape[0]):
        for c in range(w.shape[1]):
            for i in range(w.shape[2]):
                for j in range(w.shape[3]):
                    out[o] += x[n, c, top + dilations[0] * i, left + dilations[1] * j] * w[o, c, i, j]
    return out


def test_sampled_windows_times_the_filter_are_convolution_outputs(rng):
    x, w = rng.standard_normal((2, 3, 9, 8)), rng.standard_normal((4, 3, 3, 2))
    windows = sample_patches(x, (3, 2), (2, 1), 10, np.random.default_rng(1))
    assert windows.shape == (10, 3, 6)
    outputs = np.einsum("nck,ock->no", windows, w.reshape(4, 3, 6))
    positions = 2 * (9 - 5 + 1) * (8 - 2 + 1)
    references = {tuple(np.round(_conv_at(x, w, n, t, l, (2, 1)), 9))
                  for n in range(2) for t in range(5) for l in range(7)}
    assert len(references) == positions
    for row in outputs:
        assert tuple(np.round(row, 9)) in references


def test_rows_are_channels_last(rng):
    x = rng.standard_normal((2, 5, 4))
    rows = sample_rows(x, 100, np.random.default_rng(0))
    assert rows.shape == (10, 4, 1)
    assert {tuple(r) for r in rows[:, :, 0]} == {tuple(r) for r in x.reshape(-1, 4)}


def test_search_prefers_smoothing_when_a_few_channels_carry_the_range(rng):
    spread = np.ones(16)
    spread[[3, 11]] = 60.0
    samples = (rng.standard_normal((512, 16)) * spread)[:, :, None]
    weight = rng.standard_normal((8, 16)).reshape(1, 8, 16, 1)
    peak = np.abs(samples).max(axis=(0, 2))
    alpha, errors = search_alpha([(samples, weight)], peak)
    assert set(errors) == set(ALPHA_CANDIDATES)
    assert alpha >= 0.3 and errors[alpha] < errors[0.0] / 3, errors
    # near-exact activations (16 bits) need less range moved into the weights: 0.35 against 0.7 when written
    assert search_alpha([(samples, weight)], peak, activation_bits=16)[0] < alpha


def test_without_outliers_ties_go_to_the_first_candidate():
    samples = np.ones((4, 2, 1))
    weight = np.ones((1, 1, 2, 1))
    alpha, errors = search_alpha([(samples, weight)], np.ones(2), candidates=(0.2, 0.6))
    assert alpha == 0.2 and errors[0.2] == errors[0.6]
