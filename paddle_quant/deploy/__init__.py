"""Running emitted models: one runner interface over the runtimes, and ``verify``.

* ``runtimes``: runners over the Executor, Paddle Inference (oneDNN, TensorRT) and onnxruntime.
* ``verify``: a runtime's outputs against the Executor's fake-quant simulation, in quantization
  steps, and latency.

What each runtime can run is data in :mod:`paddle_quant.common.backends` (``deploy_backend``);
the files written for a runtime (scale tables, TensorRT cache, ONNX, Paddle-Lite) are in
:mod:`paddle_quant.export`.
"""

__all__ = []
