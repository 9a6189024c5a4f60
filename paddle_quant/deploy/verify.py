"""verify: run an emitted model on its runtime and compare it with the fake-quant simulation.

For each output ``y`` of the model, with ``s`` the simulation's output (the same
model in the Paddle Executor, where quantize/dequantize ops run as float math)
and ``r`` the runtime's output over the same inputs:

* ``step`` = the output's quantization step ``scale / qmax`` from the model's
  ``scale_table.json`` when it lists the output, else ``max|s| / 127``;
* ``max_steps`` = ``max|r - s| / step`` and ``mean_steps`` = ``mean|r - s| / step``;
* ``cosine`` = ``<r, s> / (|r| |s|)`` over all elements.

With ``locate=True``, when an output is beyond ``locate_steps`` steps, :mod:`.locate` bisects
over the quantized tensors for the first one the runtime computes differently.

Latency is the median time of one run of the first input batch on the runtime,
and, when an fp32 model is given, of that model on the runtime's fp32 counterpart
(oneDNN fp32 for ``onednn``; onnxruntime for ``onnxruntime``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..common.model_files import model_files
from ..common.errors import ConfigError, ConfigTypeError
from ..export.scale_table import SCALE_TABLE_FILENAME, read_scale_table
from ..common.numerics import qmax
from ..ptq.feeds import as_feed
from .cpu import NO_VNNI_NOTE, int8_dot_product
from .locate import Divergence, check_locatable, locate_divergence
from .runtimes import make_runner, median_latency_ms, simulation_runner

__all__ = ["OutputDeviation", "VerifyReport", "verify"]

_FP32_COUNTERPART = {"onednn": "paddle_fp32", "onnxruntime": "onnxruntime", "paddle_fp32": "paddle_fp32"}
_CPU_INT8_RUNTIMES = ("onednn", "onnxruntime")


@dataclass(frozen=True)
class OutputDeviation:
    """How far one runtime output is from the simulation."""

    name: str
    step: float
    step_source: str
    max_abs: float
    max_steps: float
    mean_steps: float
    cosine: float


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify` measured."""

    runtime: str
    batches: int
    outputs: tuple[OutputDeviation, ...]
    latency_ms: float
    fp32_latency_ms: float | None
    cpu_int8_dot_product: bool | None = None
    """For CPU int8 runtimes (onednn, onnxruntime): whether this CPU has VNNI/AMX, without which int8
    kernels compute differently from the simulation (:mod:`paddle_quant.deploy.cpu`); None otherwise."""
    divergence: Divergence | None = None
    """With ``locate=True`` and an output beyond ``locate_steps``: where the runtime left the simulation."""

    @property
    def latency_ratio(self) -> float | None:
        """int8 latency / fp32 latency on the runtime (below 1: the int8 model is faster)."""
        return None if not self.fp32_latency_ms else self.latency_ms / self.fp32_latency_ms

    @property
    def max_steps(self) -> float:
        """Largest deviation of any output, in quantization steps."""
        return max(o.max_steps for o in self.outputs)

    def within(self, steps: float) -> bool:
        """True when every output stays within ``steps`` quantization steps of the simulation."""
        return self.max_steps <= steps

    def table(self) -> str:
        """A plain-text summary, one line per output."""
        lines = [f"runtime {self.runtime}, {self.batches} batch(es)"]
        for o in self.outputs:
            lines.append(f"  {o.name}: max {o.max_steps:.2f} steps, mean {o.mean_steps:.3f} steps, "
                         f"cosine {o.cosine:.6f} (step {o.step:.4g} from {o.step_source})")
        ratio = "" if self.latency_ratio is None else f", fp32 {self.fp32_latency_ms:.2f} ms, " \
                                                      f"int8/fp32 {self.latency_ratio:.2f}"
        lines.append(f"  latency {self.latency_ms:.2f} ms{ratio}")
        if self.cpu_int8_dot_product is False:
            lines.append("  note: this CPU has no VNNI/AMX; int8 kernels here compute differently from the simulation "
                         "(docs/deploy.md, 'CPUs without VNNI')")
        if self.divergence is not None:
            lines.append("  " + self.divergence.describe().replace("\n", "\n  "))
        return "\n".join(lines)


def _batch_items(inputs) -> list:
    """``inputs`` as a list of batches: one batch (a dict or an array) or a non-empty list/tuple of them."""
    if isinstance(inputs, Mapping) or isinstance(inputs, np.ndarray) or hasattr(inputs, "numpy"):
        return [inputs]
    if not isinstance(inputs, Sequence) or isinstance(inputs, (str, bytes)) or not inputs:
        raise ConfigTypeError("inputs must be a batch (a feed dict, or an array for a single-input model) or a "
                              f"non-empty list of batches, got {type(inputs).__name__}")
    return list(inputs)


def _batches(items: list, feed_names: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """Each batch as a feed dict (the forms quant_post accepts: a dict, an array, a tuple in feed order)."""
    batches = []
    for index, item in enumerate(items):
        if isinstance(item, (str, bytes)) or not (isinstance(item, (Mapping, Sequence, np.ndarray))
                                                  or hasattr(item, "numpy")):
            raise ConfigTypeError(f"inputs[{index}] must be a feed dict, an array or a tuple of arrays in feed "
                                  f"order {list(feed_names)}, got {type(item).__name__}")
        batches.append({str(k): v for k, v in as_feed(item, feed_names, f"inputs[{index}]").items()})
    return batches


def _output_steps(model_dir: Path, names, simulated) -> list[tuple[float, str]]:
    table = model_dir / SCALE_TABLE_FILENAME
    entries = read_scale_table(table).tensors if table.is_file() else {}
    steps = []
    for name, values in zip(names, simulated):
        entry = entries.get(name)
        if entry and len(entry.scale) == 1 and entry.scale[0] > 0:
            steps.append((entry.scale[0] / qmax(entry.bits), "scale table"))
        else:
            peak = max(float(np.abs(v).max()) for v in values)
            steps.append((peak / 127 if peak > 0 else 1.0, "abs max of the simulation / 127"))
    return steps


def _deviation(name, step, source, got, want) -> OutputDeviation:
    r = np.concatenate([g.astype(np.float64).ravel() for g in got])
    s = np.concatenate([w.astype(np.float64).ravel() for w in want])
    if r.shape != s.shape:
        raise ConfigError(f"output {name!r}: the runtime gave {r.size} values, the simulation {s.size}")
    diff = np.abs(r - s)
    norm = np.linalg.norm(r) * np.linalg.norm(s)
    cosine = float(r @ s / norm) if norm > 0 else float(np.array_equal(r, s))
    return OutputDeviation(name, step, source, float(diff.max()), float(diff.max() / step),
                           float(diff.mean() / step), cosine)


def _collect(runner, batches):
    per_output = [[] for _ in runner.output_names]
    for feed in batches:
        for slot, value in zip(per_output, runner.run(feed)):
            slot.append(np.asarray(value))
    return per_output


def verify(model_dir, runtime: str = "onednn", inputs=None, *, fp32_model=None, runtime_model=None,
           model_filename=None, params_filename=None, threads: int = 2, repeats: int = 10, locate: bool = False,
           locate_steps: float = 1.0) -> VerifyReport:
    """Run a quantized model on ``runtime`` and on the simulation; report deviation and latency.

    Args:
        model_dir: folder of the quantized Paddle model (what quant_post / convert saved).
        runtime: ``onednn`` (default), ``tensorrt`` (GPU), ``onnxruntime``, ``paddle_fp32``
            (see :mod:`paddle_quant.deploy.runtimes`).
        inputs: one batch or a list of batches; a batch is a feed dict ``{input name: array}``, an
            array (a single-input model) or a tuple/list of arrays in feed order, as quant_post takes.
        fp32_model: the fp32 model for the latency ratio: a Paddle model folder, or an fp32
            ``.onnx`` file for ``onnxruntime``. None: no ratio.
        runtime_model: the file the runtime loads when it is not ``model_dir``'s Paddle model
            (the exported ``.onnx`` for ``onnxruntime``). The observers the ``.onnx`` requantizes
            (``export_onnx(observers=...)``) are real quantizers in the simulation too.
        model_filename / params_filename: file names inside ``model_dir`` (found when it holds one model).
        threads: CPU threads of the runtime.
        repeats: timed runs for each latency (median).
        locate: when an output deviates more than ``locate_steps`` quantization steps, find the first
            quantized tensor where the runtime leaves the simulation (:mod:`paddle_quant.deploy.locate`;
            Paddle runtimes only).
        locate_steps: the tolerance, in steps, for the outputs and for each quantized tensor.

    Returns:
        A :class:`VerifyReport`.
    """
    if locate:
        check_locatable(runtime)  # before any run
    if inputs is None:
        raise ConfigError("inputs is required: a feed dict or a list of feed dicts for the model's inputs")
    items = _batch_items(inputs)
    folder = Path(model_dir)
    model, params = model_files(folder, model_filename, params_filename)
    if runtime == "onnxruntime" and runtime_model is None:
        raise ConfigError("runtime 'onnxruntime' needs runtime_model= (the .onnx file exported from model_dir)")
    requantized, rounded_readers = _roundings_in(runtime, runtime_model)
    simulation = simulation_runner(model, params, requantized=requantized, rounded_readers=rounded_readers)
    batches = _batches(items, simulation.input_names)
    target = make_runner(runtime, runtime_model or model, None if runtime_model else params, threads=threads)
    want, got = _collect(simulation, batches), _collect(target, batches)
    steps = _output_steps(folder, simulation.output_names, want)
    outputs = tuple(_deviation(name, step, source, g, w)
                    for name, (step, source), g, w in zip(simulation.output_names, steps, got, want))
    latency = median_latency_ms(target, batches[0], repeats=repeats)
    fp32_latency = _fp32_latency(runtime, fp32_model, batches[0], threads, repeats)
    dot_product = int8_dot_product() if runtime in _CPU_INT8_RUNTIMES else None
    divergence = None
    if locate and max(o.max_steps for o in outputs) > locate_steps:
        divergence = locate_divergence(model, params, runtime, batches, tolerance_steps=locate_steps,
                                       threads=threads, cpu_note=NO_VNNI_NOTE if dot_product is False else None)
    return VerifyReport(runtime, len(batches), outputs, latency, fp32_latency, dot_product, divergence)


def _roundings_in(runtime, runtime_model) -> tuple[frozenset, frozenset]:
    """(tensors the ONNX file quantizes at run time, those of them it reads only through their QuantizeLinear).
    onnxruntime requantizes the observers among the first, and the export's ``round_float_readers`` made the
    float readers of the second read the rounded copy: the simulation must round both."""
    if runtime != "onnxruntime":
        return frozenset(), frozenset()
    from ..export.onnx import require_onnx

    graph = require_onnx().load(str(runtime_model), load_external_data=False).graph
    quantized = {node.input[0] for node in graph.node if node.op_type == "QuantizeLinear"}
    read_otherwise = {name for node in graph.node if node.op_type != "QuantizeLinear" for name in node.input}
    outputs = {output.name for output in graph.output}
    return frozenset(quantized), frozenset(quantized - read_otherwise - outputs)


def _fp32_latency(runtime, fp32_model, feed, threads, repeats) -> float | None:
    if fp32_model is None:
        return None
    counterpart = _FP32_COUNTERPART.get(runtime)
    if counterpart is None:
        raise ConfigError(f"no fp32 counterpart is known for runtime {runtime!r}; pass fp32_model=None")
    if counterpart == "onnxruntime":
        runner = make_runner(counterpart, fp32_model, threads=threads)
    else:
        runner = make_runner(counterpart, *model_files(Path(fp32_model)), threads=threads)
    return median_latency_ms(runner, feed, repeats=repeats)
