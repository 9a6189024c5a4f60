"""Which int8-op outputs the ONNX export requantizes, chosen by the user's metric in onnxruntime.

onnxruntime runs a convolution or matmul as one int8 kernel (QLinearConv, QLinearMatMul) only when
a QuantizeLinear follows it; otherwise it dequantizes and runs the float kernel. Requantizing an
output rounds it to its observer's per-tensor scale, which some outputs do not tolerate: PP-OCRv4
rec (conv2d quantized, avg) with all 24 outputs ``observers='int8_ops'`` picks requantized reads
71.3 % exact match in onnxruntime against 89.3 % fp32, and with the 17 this function keeps, 89.3 %
at 0.93 of fp32's latency (bench/onnx_vs_ort.py, docs/deploy_onnx.md). Which outputs tolerate it
is measured: :func:`select_requantized_outputs` exports the model with each candidate alone, scores
it with the user's metric in onnxruntime, then adds the candidates best first while the metric
stays within ``max_drop`` of the export that requantizes nothing.

The export it measures is the one the user ships (same storage types), so on a CPU with VNNI the
u8s8 kernels, and without it the exact u8u8 kernels (``weight_type='uint8'``,
:func:`~paddle_quant.export.onnx.export_onnx`), are what the metric sees. The Paddle Executor
computes the same model when the chosen observer pairs are made real quantizers.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ..analysis.metrics import score_metric
from ..common.errors import ConfigError, ConfigTypeError
from ..deploy.cpu import int8_dot_product
from ..deploy.runtimes import make_runner
from .onnx import export_onnx

__all__ = ["RequantizeSelection", "select_requantized_outputs", "default_weight_type"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequantizeSelection:
    """What :func:`select_requantized_outputs` measured and chose.

    Attributes:
        observers: the chosen tensors, to pass as ``export_onnx(observers=...)``.
        baseline: the metric of the export that requantizes nothing.
        metric: the metric with the chosen tensors requantized (>= baseline - max_drop).
        alone: tensor -> the metric with that tensor alone requantized (every candidate).
        activation_type / weight_type: the storage the measured exports used.
        round_float_readers: whether the measured exports made float readers read rounded copies.
        float_conv_weights / fold_input_scales: whether the measured exports wrote float weights for the
            convs onnxruntime runs in float / folded the input scales of float convs.
        seconds: time spent.
    """

    observers: tuple[str, ...]
    baseline: float
    metric: float
    alone: dict[str, float]
    activation_type: str
    weight_type: str
    seconds: float
    round_float_readers: bool = False
    float_conv_weights: bool = False
    fold_input_scales: bool = False


def default_weight_type() -> str:
    """'int8' (u8s8 kernels, fastest) on a CPU with an int8 dot-product instruction, else 'uint8' (u8u8: exact
    where u8s8's 16-bit pair sums saturate)."""
    return "int8" if int8_dot_product() else "uint8"


def _check(metric, eval_batches, max_drop) -> None:
    """Typed errors for the arguments the export does not check itself (it checks the storage types)."""
    if not callable(metric):
        raise ConfigTypeError(f"metric must be a callable(outputs_per_batch) -> float, got {metric!r}")
    if not isinstance(eval_batches, (list, tuple)) or not eval_batches:
        raise ConfigError(f"eval_batches must be a non-empty list of feed dicts, got {type(eval_batches).__name__}"
                          f"{' (empty)' if isinstance(eval_batches, (list, tuple)) else ''}")
    if not all(isinstance(batch, Mapping) for batch in eval_batches):
        raise ConfigTypeError("eval_batches must hold feed dicts {feed name: ndarray}")
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not np.isfinite(max_drop) \
            or max_drop < 0:
        raise ConfigError(f"max_drop must be a finite number >= 0 (in the metric's units), got {max_drop!r}")


class _Scorer:
    """Exports the model with a set of requantized outputs and scores it in onnxruntime."""

    def __init__(self, model_dir, metric, eval_batches, folder: Path, storage: dict, threads: int):
        self.model_dir, self.metric, self.batches = model_dir, metric, eval_batches
        self.folder, self.storage, self.threads = folder, storage, threads
        self.count = 0

    def __call__(self, observers: Sequence[str]) -> float:
        self.count += 1
        path = self.folder / f"candidate_{self.count}.onnx"
        export_onnx(self.model_dir, path, observers=list(observers), **self.storage)
        runner = make_runner("onnxruntime", path, threads=self.threads)
        try:
            outputs = [runner.run({name: batch[name] for name in runner.input_names}) for batch in self.batches]
        except KeyError as exc:
            raise ConfigError(f"eval_batches lack the model's feed {exc.args[0]!r}; its feeds are "
                              f"{list(runner.input_names)}") from None
        finally:
            path.unlink(missing_ok=True)
        return score_metric(self.metric, outputs)


def _candidates(model_dir, folder: Path, storage: dict) -> tuple[str, ...]:
    """The outputs ``observers='int8_ops'`` requantizes (the ends of the folded int8 op chains)."""
    probe = export_onnx(model_dir, folder / "int8_ops.onnx", observers="int8_ops", **storage)
    probe.path.unlink(missing_ok=True)
    if not probe.observers:
        raise ConfigError(f"model {str(model_dir)!r} has no output-scale observer on an int8 op's output; "
                          "quantize it with output_scales='int8_ops' (or 'all') so outputs can be requantized")
    return probe.observers


def select_requantized_outputs(quantized_model_dir, metric: Callable[[list], float], eval_batches: Sequence[dict],
                               *, max_drop: float = 0.5, activation_type: str = "uint8",
                               weight_type: str | None = None, round_float_readers: bool = False,
                               float_conv_weights: bool = False, fold_input_scales: bool = False,
                               threads: int = 2) -> RequantizeSelection:
    """Choose the outputs of int8 ops to requantize in the ONNX export (so onnxruntime fuses those ops into
    QLinearConv / QLinearMatMul) while the metric stays within ``max_drop`` of the export that requantizes none.

    Args:
        quantized_model_dir: a model saved by ``quant_post`` with ``output_scales='int8_ops'`` (or ``'all'``;
            the candidates are its observers on the outputs of ops that read an int8 weight, after conv folding).
        metric: ``metric(outputs_per_batch) -> float``, higher is better; outputs in fetch order per batch
            (the contract of ``analyze`` and ``AccuracyControl``).
        eval_batches: feed dicts the metric is measured on (not the calibration data).
        max_drop: allowed drop from the baseline, in the metric's units.
        activation_type / weight_type: the storage the export will use (``weight_type`` None:
            :func:`default_weight_type`); measured as shipped.
        round_float_readers: ``export_onnx(round_float_readers=True)`` for every export measured (the baseline
            too): the float readers of runtime-quantized tensors read the rounded copy, so onnxruntime fuses
            the convs and residual adds they kept in float.
        float_conv_weights / fold_input_scales: the ``export_onnx`` options of the same names for every export
            measured, so the selection scores the arithmetic of the file that ships (they change only float
            rounding in the convs onnxruntime runs in float).
        threads: onnxruntime intra-op threads.

    Returns:
        RequantizeSelection; pass ``selection.observers`` with the same storage types, ``round_float_readers``,
        ``float_conv_weights`` and ``fold_input_scales`` to ``export_onnx``.

    Raises:
        ConfigError / ConfigTypeError: a bad argument (named), a model without output observers, batches that
            do not feed the model, or a metric that does not return a finite float.
    """
    weight_type = default_weight_type() if weight_type is None else weight_type
    _check(metric, eval_batches, max_drop)
    if not isinstance(round_float_readers, bool):
        raise ConfigTypeError(f"round_float_readers must be True or False, got {round_float_readers!r}")
    started = time.perf_counter()
    storage = {"activation_type": activation_type, "weight_type": weight_type,
               "round_float_readers": round_float_readers, "float_conv_weights": float_conv_weights,
               "fold_input_scales": fold_input_scales}
    with tempfile.TemporaryDirectory(prefix="paddle_quant_requantize_") as scratch:
        folder = Path(scratch)
        candidates = _candidates(quantized_model_dir, folder, storage)
        score = _Scorer(quantized_model_dir, metric, list(eval_batches), folder, storage, threads)
        baseline = score([])
        alone = {name: score([name]) for name in candidates}
        chosen, current = _greedy(candidates, alone, baseline, max_drop, score)
    seconds = time.perf_counter() - started
    _logger.info("requantized outputs: %d of %d chosen, metric %.4g (nothing requantized: %.4g), %d exports "
                 "scored in %.0f s", len(chosen), len(candidates), current, baseline, score.count, seconds)
    return RequantizeSelection(tuple(chosen), baseline, current, alone, activation_type, weight_type, seconds,
                               round_float_readers, float_conv_weights, fold_input_scales)


def _greedy(candidates, alone, baseline: float, max_drop: float, score) -> tuple[list[str], float]:
    """(chosen, their metric): the candidates added best-alone first, each kept only if the metric stays
    >= ``baseline - max_drop``; a candidate below that alone is not tried. All the tolerated ones are tried
    together first (one export when they add up)."""
    floor = baseline - max_drop
    tolerated = sorted((name for name in candidates if alone[name] >= floor), key=lambda n: -alone[n])
    if not tolerated:
        return [], baseline
    together = score(tolerated)
    if together >= floor:
        return tolerated, together
    chosen, current = [], baseline
    for name in tolerated:
        value = score(chosen + [name])
        if value >= floor:
            chosen, current = chosen + [name], value
    return chosen, current
