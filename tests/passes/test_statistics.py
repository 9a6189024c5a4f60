"""In-graph calibration statistics equal the same reductions done in numpy on the whole tensors."""

import numpy as np
import paddle

from paddle_quant.passes.statistics import sample_start, shape_program, statistic_buffers, statistics_program

from support.nets import conv_net, run

NAMES = ["x", "conv2d_0.tmp_2", "flatten_0.tmp_0"]


def test_statistics_match_numpy_on_the_whole_tensor(rng):
    net = conv_net(minimize=False)
    feed = net.feed(rng, 6)
    whole = dict(zip(NAMES, run(net, net.test, feed, NAMES)))
    wanted = {name: {"peak", "low", "high", "total", "sample"} for name in NAMES}
    strides = {"x": 5, "conv2d_0.tmp_2": 7, "flatten_0.tmp_0": 3}
    program, stats = statistics_program(net.test, wanted, strides)
    for name, stride in strides.items():
        net.scope.var(sample_start(name)).get_tensor().set(np.array([2], np.int32), paddle.CPUPlace())
    fetches = [(name, stat, var) for name, s in stats.items() for stat, var in s.fetches.items()]
    values = run(net, program, feed, [var for _, _, var in fetches])
    for (name, stat, _), value in zip(fetches, values):
        rows = whole[name].reshape(6, -1)
        expected = {"peak": np.abs(rows).max(axis=1), "low": rows.min(axis=1), "high": rows.max(axis=1),
                    "total": rows.sum(axis=1), "sample": rows[:, 2::strides[name]]}[stat]
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-5, err_msg=f"{name} {stat}")


def test_shape_probe_reports_runtime_shapes(rng):
    net = conv_net(minimize=False)
    program, shapes = shape_program(net.test, NAMES)
    values = run(net, program, net.feed(rng, 3), [shapes[n] for n in NAMES])
    assert [list(v) for v in values] == [[3, 1, 8, 8], [3, 4, 8, 8], [3, 128]]


def test_statistics_program_leaves_the_original_alone():
    net = conv_net(minimize=False)
    before = [op.type for op in net.test.global_block().ops]
    statistics_program(net.test, {"x": {"peak", "total"}}, {})
    assert [op.type for op in net.test.global_block().ops] == before


def test_fetched_statistics_are_buffers_allocated_once():
    """Persistable, so the executor writes them in place batch after batch instead of allocating them anew in
    between the activations (which fragmented the heap: PP-OCRv4 rec's peak crept up over 100 batches)."""
    net = conv_net(minimize=False)
    program, stats = statistics_program(net.test, {"x": {"peak", "low", "high", "total", "sample"}}, {"x": 3})
    block = program.global_block()
    fetched = list(stats["x"].fetches.values())
    assert all(block.var(name).persistable for name in fetched)
    assert sorted(statistic_buffers(stats)) == sorted(fetched + [sample_start("x")])
    temporaries = {"x@flat", "x@peak_high", "x@peak_low", "x@peak_negated_low"}
    assert not any(block.var(name).persistable for name in temporaries)
