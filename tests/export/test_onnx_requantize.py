"""select_requantized_outputs: which int8-op outputs the ONNX export requantizes, chosen by a metric in onnxruntime.

Oracles: the greedy rule on a scripted scorer (which candidates are kept, which never tried), and the digits
CNN end to end (the chosen export scores what the selection says, within max_drop of the baseline).
"""

from __future__ import annotations

import numpy as np
import paddle
import pytest

import paddle_quant as quant
from paddle_quant.common.errors import ConfigError, ConfigTypeError

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from paddle_quant.deploy.runtimes import make_runner  # noqa: E402
from paddle_quant.export.onnx import export_onnx  # noqa: E402
from paddle_quant.export.onnx_requantize import _greedy, select_requantized_outputs  # noqa: E402


# ---------------------------------------------------------------- the greedy rule
class _ScriptedScore:
    """A scorer whose metric is 1 minus the summed cost of the requantized tensors; records each call."""

    def __init__(self, costs):
        self.costs, self.calls = costs, []

    def __call__(self, observers):
        self.calls.append(tuple(observers))
        return 1.0 - sum(self.costs[name] for name in observers)


def test_all_tolerated_outputs_are_taken_at_once_when_they_add_up():
    score = _ScriptedScore({"a": 0.1, "b": 0.2, "harmful": 5.0})
    alone = {name: score([name]) for name in score.costs}
    chosen, value = _greedy(list(score.costs), alone, 1.0, 0.5, score)
    assert (sorted(chosen), value) == (["a", "b"], pytest.approx(0.7))
    assert score.calls[-1] == ("a", "b")  # best alone first, one export for both


def test_outputs_that_do_not_add_up_are_added_one_by_one_best_first():
    score = _ScriptedScore({"a": 0.3, "b": 0.35, "c": 0.1, "harmful": 2.0})
    alone = {name: score([name]) for name in score.costs}
    chosen, value = _greedy(list(score.costs), alone, 1.0, 0.5, score)
    # c (0.1) then a (0.3): 0.4 <= 0.5; b would make 0.75
    assert (chosen, value) == (["c", "a"], pytest.approx(0.6))
    assert not any("harmful" in call for call in score.calls[len(alone):])  # below the floor alone: never tried


def test_nothing_is_chosen_when_every_output_costs_too_much_alone():
    score = _ScriptedScore({"a": 0.6, "b": 0.9})
    alone = {name: score([name]) for name in score.costs}
    assert _greedy(list(score.costs), alone, 1.0, 0.5, score) == ([], 1.0)


# ---------------------------------------------------------------- end to end on the digits CNN
def _quantize(digits_model, out, output_scales):
    """The digits CNN through quant_post (avg) into ``out``."""
    with paddle.pir_utils.OldIrGuard():
        paddle.enable_static()
        try:
            quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(digits_model.folder), str(out),
                             data_loader=digits_model.calibration_batches(), algo="avg", output_scales=output_scales)
        finally:
            paddle.disable_static()
    return out


@pytest.fixture(scope="module")
def digits_with_output_scales(digits_model, tmp_path_factory):
    return _quantize(digits_model, tmp_path_factory.mktemp("requantize") / "int8", "all")


def _top1(labels):
    def metric(outputs_per_batch):
        logits = np.concatenate([outputs[0] for outputs in outputs_per_batch])
        return 100.0 * float(np.mean(logits.argmax(1) == labels))
    return metric


def _eval_batches(digits_model, size=90):
    images = digits_model.test_images
    return [{"image": images[i:i + size]} for i in range(0, len(images), size)], digits_model.test_labels.ravel()


@pytest.mark.parametrize("options", [{}, {"float_conv_weights": True, "fold_input_scales": True}])
def test_the_chosen_export_scores_what_the_selection_reports(digits_model, digits_with_output_scales, tmp_path,
                                                             options, monkeypatch):
    import paddle_quant.export.onnx_requantize as requantize

    measured = []

    def export_as_measured(*args, **kwargs):
        measured.append({key: kwargs.get(key, False) for key in ("float_conv_weights", "fold_input_scales")})
        return export_onnx(*args, **kwargs)

    monkeypatch.setattr(requantize, "export_onnx", export_as_measured)
    batches, labels = _eval_batches(digits_model)
    selection = select_requantized_outputs(digits_with_output_scales, _top1(labels), batches, max_drop=0.5,
                                           **options)
    expected = {key: bool(options) for key in ("float_conv_weights", "fold_input_scales")}
    assert measured and all(call == expected for call in measured)  # every export scored is the one shipped
    assert selection.weight_type in ("int8", "uint8") and selection.activation_type == "uint8"
    assert (selection.float_conv_weights, selection.fold_input_scales) == (bool(options), bool(options))
    assert set(selection.alone) == set(export_onnx(digits_with_output_scales, tmp_path / "p.onnx",
                                                   observers="int8_ops").observers)
    assert set(selection.observers) <= set(selection.alone)
    assert selection.metric >= selection.baseline - 0.5
    shipped = export_onnx(digits_with_output_scales, tmp_path / "m.onnx", observers=selection.observers,
                          activation_type=selection.activation_type, weight_type=selection.weight_type, **options)
    runner = make_runner("onnxruntime", shipped.path)
    assert _top1(labels)([runner.run(batch) for batch in batches]) == pytest.approx(selection.metric)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"metric": "top1"}, ConfigTypeError, "metric must be a callable"),
    ({"eval_batches": []}, ConfigError, r"eval_batches must be a non-empty list of feed dicts, got list \(empty\)"),
    ({"max_drop": -1.0}, ConfigError, "max_drop must be a finite number >= 0"),
    ({"max_drop": float("nan")}, ConfigError, "max_drop must be a finite number >= 0"),
    ({"weight_type": "int4"}, ConfigError, r"weight_type must be one of \['int8', 'uint8'\], got 'int4'"),
    ({"float_conv_weights": "yes"}, ConfigError, "float_conv_weights must be True or False, got 'yes'"),
    ({"eval_batches": [{"pixels": np.zeros((1, 1, 8, 8), np.float32)}]}, ConfigError,
     "eval_batches lack the model's feed 'image'"),
    ({"metric": lambda outputs: float("nan")}, ConfigError, "must return a finite float"),
])
def test_bad_arguments_are_named(digits_model, digits_with_output_scales, kwargs, error, match):
    batches, labels = _eval_batches(digits_model)
    arguments = {"metric": _top1(labels), "eval_batches": batches, **kwargs}
    with pytest.raises(error, match=match):
        select_requantized_outputs(digits_with_output_scales, **arguments)


def test_a_model_without_output_scales_is_refused_with_the_fix(digits_model, tmp_path):
    out = _quantize(digits_model, tmp_path / "int8", "none")
    batches, labels = _eval_batches(digits_model)
    with pytest.raises(ConfigError, match="output_scales='int8_ops'"):
        select_requantized_outputs(out, _top1(labels), batches)
