"""AdaRound's input rows: im2col rows times the weight columns are Paddle's conv output; Grams stream."""

import numpy as np
import pytest

from paddle_quant.ptq.adaround_rows import (ConvGeometry, GramObserver, WeightLayout, conv_rows, from_columns,
                                            matmul_rows, to_columns)

from support.paddle_ops import run_op


@pytest.mark.parametrize("op_type,groups,strides,paddings,dilations", [
    ("conv2d", 1, (1, 1), (1, 1, 1, 1), (1, 1)),
    ("conv2d", 2, (2, 1), (0, 2, 1, 0), (1, 2)),
    ("depthwise_conv2d", 4, (2, 2), (1, 1, 1, 1), (1, 1)),
])
def test_rows_times_columns_is_paddles_conv(rng, op_type, groups, strides, paddings, dilations):
    x = rng.normal(size=(2, 4, 7, 9)).astype(np.float32)
    out_channels = 4 if op_type == "depthwise_conv2d" else 6
    w = rng.normal(size=(out_channels, 4 // groups, 3, 2)).astype(np.float32)
    attrs = {"strides": list(strides), "paddings": list(paddings), "dilations": list(dilations), "groups": groups,
             "padding_algorithm": "EXPLICIT", "data_format": "NCHW"}
    expected = run_op(op_type, {"Input": x, "Filter": w}, {"Output": np.float32}, attrs)["Output"]
    rows = conv_rows(x, ConvGeometry((3, 2), strides, paddings, dilations), groups, max_rows=10**9, rng=rng)
    layout = WeightLayout(groups, True)
    got = np.matmul(rows, to_columns(w, layout))  # (groups, N·H'·W', Og)
    got = got.transpose(1, 0, 2).reshape(2, expected.shape[2], expected.shape[3], out_channels).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(from_columns(to_columns(w, layout), w.shape, layout), w)


def test_rows_are_a_seeded_subset_of_at_most_max_rows(rng):
    x = rng.normal(size=(3, 2, 5, 5)).astype(np.float32)
    geometry = ConvGeometry((3, 3), paddings=(1, 1, 1, 1))
    every = conv_rows(x, geometry, 1, max_rows=10**9, rng=np.random.default_rng(0))[0]
    some = conv_rows(x, geometry, 1, max_rows=10, rng=np.random.default_rng(0))[0]
    again = conv_rows(x, geometry, 1, max_rows=10, rng=np.random.default_rng(0))[0]
    assert every.shape == (75, 18) and some.shape == (10, 18)
    np.testing.assert_array_equal(some, again)
    assert all(any(np.array_equal(row, full) for full in every) for row in some)
    flat = matmul_rows(rng.normal(size=(4, 3, 5)), 2, max_rows=5, rng=rng)
    assert flat.shape == (1, 5, 5)


def test_gram_observer_sums_batches_as_one(rng):
    batches = [rng.normal(size=(2, n, 3)) for n in (4, 7)]
    hats = [np.round(b * 4) / 4 for b in batches]
    w = rng.normal(size=(2, 3, 4))
    gram = GramObserver(w)
    for hat, rows in zip(hats, batches):
        gram.update(hat, rows)
    rows, hat = np.concatenate(batches, axis=1), np.concatenate(hats, axis=1)
    np.testing.assert_allclose(gram.a, np.matmul(hat.transpose(0, 2, 1), hat))
    np.testing.assert_allclose(gram.bw, np.matmul(hat.transpose(0, 2, 1), np.matmul(rows, w)))
    assert gram.rows == 11
    gram.reset()
    assert gram.rows == 0 and not gram.a.any()
