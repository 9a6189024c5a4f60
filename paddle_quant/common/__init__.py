"""The ground floor every stage imports and that imports no stage.

* ``config``: :class:`QuantConfig`, the validated PaddleSlim dict config, and the op-type constants.
* ``errors``: the exception hierarchy (``ValueError``/``TypeError``/``RuntimeError`` subclasses).
* ``registry``: per op type, its input/output slots, which input is the weight and its channel axis.
* ``backends``: per ``deploy_backend``, what that runtime can run (profiles, as data).
* ``naming``: every derived variable name (``x.quantized``, ``x@scale``, ...).
* ``numerics``: numpy-only scale math and bit-exact references of Paddle's quantization kernels.
* ``validation``: field checks shared by the pydantic configs.
* ``program``: helpers over legacy ``Program``/``Block``/``Operator`` and scopes (legacy IR entry).
* ``model_files``: locating, loading and atomically saving inference models.
* ``native_output``: Paddle's native stdout/stderr during a call, captured and logged at DEBUG.

Nothing here is imported eagerly: ``config``, ``errors``, ``registry``, ``backends``, ``naming``,
``numerics`` and ``validation`` import no Paddle, so config checks stay cheap.
"""

__all__ = []
