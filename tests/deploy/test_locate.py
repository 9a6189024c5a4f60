"""verify(locate=True): the first quantized tensor where a runtime leaves the simulation.

A real runtime's divergence depends on the CPU, so the runtime here is the Executor with a fault
written in at a chosen tensor (an in-place ``scale`` op adding 40 quantization steps after the op
that writes it): locate must name that tensor, on every machine.
"""

import numpy as np
import paddle
import pytest

from paddle_quant import verify
from paddle_quant.common.errors import ConfigError
from paddle_quant.common.model_files import load_inference_program
from paddle_quant.common.program import legacy_ir
from paddle_quant.deploy import locate as locate_module
from paddle_quant.deploy import runtimes
from paddle_quant.deploy.locate import CutDeviation, _bisect, quantized_tensors

FAULT_STEPS = 40.0


@pytest.fixture(scope="module")
def candidates(digits_int8_model):
    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    with legacy_ir():
        program, _, _ = load_inference_program(exe, scope, digits_int8_model / "model.pdmodel",
                                               digits_int8_model / "model.pdiparams")
        return quantized_tensors(program, scope)


def _feeds(digits_model, count=2, size=16):
    return [{"image": digits_model.test_images[i * size:(i + 1) * size]} for i in range(count)]


def _faulty_runtime(tensor: str, step: float):
    """A runner factory: the Executor, with ``tensor`` shifted by FAULT_STEPS steps where the model computes it."""
    def factory(model_file, params_file, *, threads):
        exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
        with legacy_ir():
            program, feeds, fetches = load_inference_program(exe, scope, model_file, params_file)
            block = program.global_block()
            for index, op in enumerate(block.ops):
                if tensor in op.output_arg_names:
                    block._insert_op(index + 1, type="scale", inputs={"X": [tensor]}, outputs={"Out": [tensor]},
                                     attrs={"scale": 1.0, "bias": FAULT_STEPS * step, "bias_after_scale": True})
                    break

        def run(feed):
            with legacy_ir():
                return exe.run(program, feed=dict(feed), fetch_list=fetches, scope=scope)

        return runtimes.Runner("faulty", tuple(feeds), tuple(fetches), run)
    return factory


def test_the_candidates_are_the_quantized_activations_in_program_order(candidates):
    assert len(candidates) >= 3
    assert all(c.step > 0 for c in candidates)
    assert all(c.producer != "feed" for c in candidates)  # a model input cannot diverge
    assert candidates[0].readers and candidates[0].producer in ("conv2d", "pool2d", "relu", "batch_norm", "elementwise_add")
    assert len({c.tensor for c in candidates}) == len(candidates)


@pytest.mark.parametrize("which", ["first", "middle", "last"])
def test_locate_names_the_tensor_the_runtime_computes_differently(digits_model, digits_int8_model, candidates, which,
                                                                  monkeypatch):
    index = {"first": 0, "middle": len(candidates) // 2, "last": len(candidates) - 1}[which]
    target = candidates[index]
    monkeypatch.setitem(runtimes.RUNTIMES, "onednn", _faulty_runtime(target.tensor, target.step))
    report = verify(digits_int8_model, "onednn", _feeds(digits_model), repeats=1, locate=True)
    found = report.divergence
    assert found is not None and found.first is not None, report.table()
    assert found.first.candidate.tensor == target.tensor
    assert found.first.max_steps == pytest.approx(FAULT_STEPS, rel=1e-3)
    if index:
        assert found.last_within.candidate.tensor == candidates[index - 1].tensor
        assert found.last_within.max_steps <= 1.0
    else:
        assert found.last_within is None
    assert found.cuts_run <= int(np.ceil(np.log2(len(candidates) + 1))) + 1
    assert target.tensor in report.table() and "rule:" in report.table()
    # runtime "onednn": what oneDNN's optimized program runs on the way, from its dump of the cut
    assert found.runtime_ops and "oneDNN ran between them" in report.table()


def test_a_faithful_runtime_is_not_bisected(digits_model, digits_int8_model, monkeypatch):
    monkeypatch.setitem(runtimes.RUNTIMES, "onednn", runtimes.RUNTIMES["executor"])
    report = verify(digits_int8_model, "onednn", _feeds(digits_model, 1), repeats=1, locate=True)
    assert report.max_steps == 0.0 and report.divergence is None


def test_a_divergence_after_the_last_quantized_tensor_is_reported_as_such(digits_model, digits_int8_model, monkeypatch):
    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    with legacy_ir():
        _, _, fetch_names = load_inference_program(exe, scope, digits_int8_model / "model.pdmodel",
                                                   digits_int8_model / "model.pdiparams")
    monkeypatch.setitem(runtimes.RUNTIMES, "onednn", _faulty_runtime(fetch_names[0], 1.0))
    report = verify(digits_int8_model, "onednn", _feeds(digits_model, 1), repeats=1, locate=True)
    assert report.divergence.first is None
    assert "after the last one, in float ops" in report.table()


def test_bisection_finds_the_first_index_beyond_the_tolerance():
    candidates = list(range(37))

    def measure(index):
        return CutDeviation(index, 5.0 if index >= 23 else 0.5, 0.1)

    measured = {}
    first, last = _bisect(candidates, measure, 1.0, measured)
    assert (first.candidate, last.candidate) == (23, 22)
    assert len(measured) <= 6


@pytest.mark.parametrize("runtime", ["onnxruntime", "executor"])
def test_locate_needs_a_runtime_that_loads_cut_paddle_models(digits_model, digits_int8_model, runtime):
    with pytest.raises(ConfigError, match="runtime must be one of"):
        verify(digits_int8_model, runtime, _feeds(digits_model, 1), locate=True, runtime_model="x.onnx")


def test_an_fp32_model_has_nothing_to_cut_at(digits_model, monkeypatch):
    with pytest.raises(ConfigError, match="quantizes no activation"):
        locate_module.locate_divergence(digits_model.folder / "model.pdmodel", digits_model.folder / "model.pdiparams",
                                        "onednn", _feeds(digits_model, 1))


def test_the_tolerance_must_be_positive(digits_model, digits_int8_model):
    with pytest.raises(ConfigError, match="tolerance_steps must be > 0"):
        locate_module.locate_divergence(digits_int8_model / "model.pdmodel", digits_int8_model / "model.pdiparams", "onednn",
                                        _feeds(digits_model, 1), tolerance_steps=0)


def test_cuts_are_compared_on_the_tensors_grid():
    """oneDNN may hand a cut tensor over already quantized (its int8 pool) where the simulation holds the value its
    quantizer rounds next: equal on the grid, 0 steps (unrounded that read up to 0.5); a flip is one step."""
    candidate = locate_module.Candidate("t", 0.5, "pool2d", ("conv2d",))
    simulated = np.linspace(-3, 3, 101, dtype=np.float32)
    quantized = (np.round(simulated / 0.5) * 0.5).astype(np.float32)
    assert locate_module._cut_deviation(candidate, [quantized], [simulated]).max_steps == 0.0
    flipped = quantized.copy()
    flipped[7] += 0.5
    deviation = locate_module._cut_deviation(candidate, [flipped], [simulated])
    assert deviation.max_steps == 1.0 and deviation.mean_steps == pytest.approx(1 / 101)
