"""Runtimes a saved model can run on, behind one small interface: feed dict in, outputs out.

Each runtime is a factory ``(model_file, params_file, *, threads) -> Runner``:

* ``executor``: the Paddle ``Executor`` in legacy IR. It runs quantize_linear /
  dequantize_linear as float arithmetic: the fake-quant *simulation* of a QDQ model.
* ``paddle_fp32``: Paddle Inference on CPU with oneDNN, int8 off (a QDQ model's
  quant ops then also run in float).
* ``onednn``: Paddle Inference on CPU with oneDNN int8 (``enable_onednn_int8``): QDQ
  models run in real int8 (exactly as simulated only on CPUs with VNNI: :mod:`.cpu`).
* ``tensorrt``: Paddle Inference with the TensorRT engine in int8
  (``precision_mode=Int8, use_calib_mode=False``: scales come from the QDQ ops);
  needs a CUDA build of Paddle and a GPU.
* ``onnxruntime``: an ``.onnx`` file in onnxruntime (CPU); ``params_file`` is unused.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from ..common.errors import ConfigError, MissingDependencyError
from ..common.native_output import native_output_to_log
from .cpu import warn_without_vnni

__all__ = ["Runner", "RUNTIMES", "create_predictor", "onednn_config", "make_runner", "median_latency_ms",
           "make_observers_real", "simulation_runner"]


@dataclass
class Runner:
    """A loaded model: ``run(feed) -> [outputs]`` in the model's fetch order."""

    runtime: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    run: Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]


def create_predictor(config):
    """``paddle.inference.create_predictor(config)``, with the statistics its C++ passes print sent
    to the DEBUG log instead of the terminal (:mod:`paddle_quant.common.native_output`)."""
    import paddle.inference as paddle_infer

    with native_output_to_log("Paddle Inference predictor build"):
        return paddle_infer.create_predictor(config)


def onednn_config(model_file, params_file, *, threads: int, int8: bool):
    """A Paddle Inference config on CPU with oneDNN (its int8 passes too when ``int8``; on a CPU without
    VNNI that logs :data:`~paddle_quant.deploy.cpu.NO_VNNI_WARNING` once)."""
    import paddle.inference as paddle_infer

    if params_file is not None:
        config = paddle_infer.Config(str(model_file), str(params_file))
    elif Path(model_file).is_file():  # a program without parameters: Config(path) would read a folder
        config = paddle_infer.Config()
        config.set_prog_file(str(model_file))
    else:
        config = paddle_infer.Config(str(model_file))
    config.disable_gpu()
    config.enable_onednn()
    if int8:
        warn_without_vnni()
        config.enable_onednn_int8()
    config.set_cpu_math_library_num_threads(int(threads))
    config.disable_glog_info()
    return config


def _tensorrt_config(model_file: Path, params_file: Path):
    import paddle.inference as paddle_infer

    _require_gpu()
    config = paddle_infer.Config(str(model_file), str(params_file))
    config.enable_use_gpu(256, 0)
    config.enable_tensorrt_engine(workspace_size=1 << 30, max_batch_size=1, min_subgraph_size=3,
                                  precision_mode=paddle_infer.PrecisionType.Int8, use_static=False,
                                  use_calib_mode=False)
    config.disable_glog_info()
    return config


def _paddle_inference(model_file: Path, params_file: Path, *, threads: int, int8: bool, tensorrt: bool = False):
    config = (_tensorrt_config(model_file, params_file) if tensorrt
              else onednn_config(model_file, params_file, threads=threads, int8=int8))
    predictor = create_predictor(config)
    inputs, outputs = tuple(predictor.get_input_names()), tuple(predictor.get_output_names())

    def run(feed):
        for name in inputs:
            handle = predictor.get_input_handle(name)
            value = np.ascontiguousarray(feed[name])
            handle.reshape(list(value.shape))
            handle.copy_from_cpu(value)
        predictor.run()
        return [predictor.get_output_handle(name).copy_to_cpu() for name in outputs]

    return Runner("tensorrt" if tensorrt else ("onednn" if int8 else "paddle_fp32"), inputs, outputs, run)


def _require_gpu() -> None:
    import paddle

    if not paddle.device.is_compiled_with_cuda() or paddle.device.cuda.device_count() == 0:
        raise ConfigError("runtime 'tensorrt' needs a CUDA build of Paddle and a GPU; this Paddle has none "
                          "(use runtime='onednn' on CPU)")


def _executor(model_file: Path, params_file: Path | None, *, threads: int, requantized: frozenset = frozenset(),
              rounded_readers: frozenset = frozenset()):
    import paddle

    from ..common.program import legacy_ir

    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    prefix = model_file.with_suffix("")
    with legacy_ir(), paddle.static.scope_guard(scope):
        if params_file == prefix.with_suffix(".pdiparams"):
            program, feeds, fetches = paddle.static.load_inference_model(str(prefix), exe)
        else:
            program, feeds, fetches = paddle.static.load_inference_model(
                str(model_file.parent), exe, model_filename=model_file.name,
                params_filename=None if params_file is None else params_file.name)
    make_observers_real(program, requantized)
    if rounded_readers:
        from ..passes.rounded_readers import round_float_readers

        round_float_readers(program, rounded_readers)

    def run(feed):
        with legacy_ir():
            return exe.run(program, feed=dict(feed), fetch_list=fetches, scope=scope, return_numpy=True)

    return Runner("executor", tuple(feeds), tuple(v.name for v in fetches), run)


def _onnxruntime(model_file: Path, params_file: Path | None, *, threads: int):
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError("runtime 'onnxruntime' needs the onnx extra: pip install 'paddle_quant[onnx]'") from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = int(threads)
    session = onnxruntime.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    inputs = tuple(i.name for i in session.get_inputs())
    outputs = tuple(o.name for o in session.get_outputs())
    return Runner("onnxruntime", inputs, outputs, lambda feed: session.run(None, {n: feed[n] for n in inputs}))


def make_observers_real(program, tensors) -> None:
    """Turn the observer pairs (``only_observer=True``: identities) on ``tensors`` into real quantizers, in place:
    the program then rounds those tensors as a runtime that requantizes them does (onnxruntime, where the ONNX
    export wrote a QuantizeLinear for them)."""
    from ..common.program import is_observer

    wanted, quantized = set(tensors), set()
    for op in program.global_block().ops:
        if op.type == "quantize_linear" and is_observer(op) and op.input("X")[0] in wanted:
            op._set_attr("only_observer", False)
            quantized.add(op.output("Y")[0])
    for op in program.global_block().ops:
        if op.type == "dequantize_linear" and is_observer(op) and op.input("X")[0] in quantized:
            op._set_attr("only_observer", False)


def simulation_runner(model_file, params_file, *, requantized=(), rounded_readers=()) -> Runner:
    """The Executor simulation of a saved QDQ model, with the observers on ``requantized`` made real quantizers
    (:func:`make_observers_real`) and the float readers of ``rounded_readers`` reading their rounded copies
    (:func:`paddle_quant.passes.rounded_readers.round_float_readers`); ``make_runner("executor", ...)`` when
    both are empty."""
    return _executor(Path(model_file), None if params_file is None else Path(params_file), threads=1,
                     requantized=frozenset(requantized), rounded_readers=frozenset(rounded_readers))


RUNTIMES: dict[str, Callable[..., Runner]] = {
    "executor": _executor,
    "paddle_fp32": lambda m, p, *, threads: _paddle_inference(m, p, threads=threads, int8=False),
    "onednn": lambda m, p, *, threads: _paddle_inference(m, p, threads=threads, int8=True),
    "tensorrt": lambda m, p, *, threads: _paddle_inference(m, p, threads=threads, int8=True, tensorrt=True),
    "onnxruntime": _onnxruntime,
}
"""Runtime name -> runner factory."""


def make_runner(runtime: str, model_file, params_file=None, *, threads: int = 2) -> Runner:
    """Load ``model_file`` (+ ``params_file``) on ``runtime`` (one of :data:`RUNTIMES`)."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime must be one of {sorted(RUNTIMES)}, got {runtime!r}")
    return RUNTIMES[runtime](Path(model_file), None if params_file is None else Path(params_file), threads=threads)


def median_latency_ms(runner: Runner, feed: Mapping[str, np.ndarray], *, repeats: int = 10,
                      warmup: int = 2) -> float:
    """Median wall time (ms) of ``runner.run(feed)`` after ``warmup`` runs."""
    for _ in range(warmup):
        runner.run(feed)
    times: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner.run(feed)
        times.append(1000.0 * (time.perf_counter() - start))
    return statistics.median(times)
