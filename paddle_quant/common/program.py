"""Guards and small queries over legacy-IR ``paddle.static.Program`` objects."""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import paddle
from paddle.base import core

from .errors import ScopeError, UnsupportedProgramError
from .native_output import native_output_to_log

__all__ = [
    "legacy_ir",
    "ops_in_program_order",
    "SERIAL_RUN_FLAG",
    "check_program",
    "resolve_scope",
    "OP_ROLE_FORWARD",
    "OP_ROLE_BACKWARD",
    "op_role",
    "is_forward_op",
    "has_backward",
    "is_float_var",
    "read_tensor",
    "write_tensor",
    "has_tensor",
    "insert_ops",
    "readers_by_var",
    "writer_by_var",
    "is_observer",
    "is_persistable",
]

_ROLES = core.op_proto_and_checker_maker.OpRole
OP_ROLE_FORWARD = int(_ROLES.Forward)
OP_ROLE_BACKWARD = int(_ROLES.Backward)
_FLOAT_TYPES = (core.VarDesc.VarType.FP32, core.VarDesc.VarType.FP64, core.VarDesc.VarType.FP16)


@contextlib.contextmanager
def legacy_ir() -> Iterator[None]:
    """Run the body in legacy (non-PIR) static mode whatever the caller's flags were."""
    with paddle.pir_utils.OldIrGuard():
        was_dynamic = paddle.in_dynamic_mode()
        if was_dynamic:
            paddle.enable_static()
        try:
            _executor_banner_to_log()
            yield
        finally:
            if was_dynamic:
                paddle.disable_static()


_banner_logged = False


def _executor_banner_to_log() -> None:
    """Once per process: run a tiny program with a gradient op under native capture, so the glog lines
    the legacy Executor logs once per process (``New Executor is Running.`` at its first run,
    ``Standalone Executor is Used.`` at the first program with a ``*_grad`` op) go to the DEBUG log,
    not the terminal (:mod:`.native_output`). Costs one tiny run (~20 ms)."""
    global _banner_logged
    if _banner_logged:
        return
    _banner_logged = True
    program = paddle.static.Program()
    with paddle.static.program_guard(program, paddle.static.Program()), paddle.utils.unique_name.guard():
        one = paddle.full([1], 1.0)
        one.stop_gradient = False
        (grad,) = paddle.static.gradients([one * one], [one])  # elementwise_mul_grad: glog's "Standalone Executor is Used."
    with native_output_to_log("first legacy Executor run"):
        paddle.static.Executor(paddle.CPUPlace()).run(program, fetch_list=[grad], scope=paddle.static.Scope())


SERIAL_RUN_FLAG = "FLAGS_new_executor_serial_run"


@contextlib.contextmanager
def ops_in_program_order() -> Iterator[None]:
    """Programs built in the body run their ops one after another, in program order.

    Paddle's executor otherwise schedules independent ops on worker threads; with a side branch
    after each observed tensor (calibration's statistics ops), it ran the main chain ahead and kept
    the activations alive until their branches ran: PP-OCRv4 rec calibration peaked at 1.27 GB added
    RSS instead of 0.38 GB (bench/ptq_memory.py), and was no faster. The caller's flag is restored
    after the body, also on an exception; an executor caches what it built under the flag.
    """
    previous = paddle.get_flags([SERIAL_RUN_FLAG])[SERIAL_RUN_FLAG]
    paddle.set_flags({SERIAL_RUN_FLAG: True})
    try:
        yield
    finally:
        paddle.set_flags({SERIAL_RUN_FLAG: previous})


def check_program(program: object, *, argument: str = "program") -> paddle.static.Program:
    """Return ``program`` if it is a legacy-IR Program, else raise UnsupportedProgramError."""
    if isinstance(program, paddle.static.Program) and hasattr(program, "global_block") and hasattr(program, "desc"):
        if hasattr(program.global_block(), "ops") and hasattr(program.desc, "block"):
            return program
    if type(program).__module__.startswith("paddle") and "pir" in type(program).__module__:
        raise UnsupportedProgramError(
            f"{argument} is a PIR program ({type(program).__name__}); paddle_quant works on legacy "
            "Programs: build it under `with paddle.pir_utils.OldIrGuard():` or set "
            "FLAGS_enable_pir_api=0 before `import paddle`"
        )
    raise UnsupportedProgramError(
        f"{argument} must be a legacy paddle.static.Program, got {type(program).__name__}; "
        "a CompiledProgram is not accepted either: pass the Program it was built from"
    )


def resolve_scope(scope: object) -> core._Scope:
    """Return ``scope`` or the global scope when it is None."""
    return paddle.static.global_scope() if scope is None else scope


def op_role(op) -> int:
    """The op's role bits (forward 0, backward 1, optimize 2, loss 256 ...)."""
    return int(op.attr("op_role")) if op.has_attr("op_role") else OP_ROLE_FORWARD


def is_forward_op(op) -> bool:
    """True unless the op belongs to backward or optimization."""
    return not (op_role(op) & (OP_ROLE_BACKWARD | int(_ROLES.Optimize)))


def has_backward(block) -> bool:
    """True if ``append_backward``/``minimize`` already ran on the block."""
    return any(op_role(op) & OP_ROLE_BACKWARD for op in block.ops)


def is_float_var(block, name: str) -> bool:
    """True if ``name`` is a dense float tensor variable of ``block``."""
    if not block.has_var(name):
        return False
    var = block.var(name)
    return var.type == core.VarDesc.VarType.DENSE_TENSOR and var.dtype in _FLOAT_TYPES


def has_tensor(scope, name: str) -> bool:
    """True if ``scope`` holds an initialised tensor called ``name``."""
    var = scope.find_var(name)
    return var is not None and var.get_tensor()._is_initialized()


def read_tensor(scope, name: str) -> np.ndarray:
    """Copy of the tensor ``name`` in ``scope``; ScopeError if absent or uninitialised."""
    if not has_tensor(scope, name):
        raise ScopeError(
            f"variable '{name}' is not initialised in the scope; run the startup program "
            "(exe.run(startup_program)) or load the parameters into this scope first"
        )
    return np.array(scope.find_var(name).get_tensor())


def write_tensor(scope, place, name: str, value: np.ndarray) -> None:
    """Create or overwrite tensor ``name`` in ``scope`` with ``value``."""
    scope.var(name).get_tensor().set(np.ascontiguousarray(value), place)


def insert_ops(block, position: int, ops) -> None:
    """Insert ``ops`` (``(type, inputs, outputs, attrs)`` tuples) in order before ``block.ops[position]``.

    No sync with the C++ desc per op (Paddle's ``_insert_op`` re-syncs every time,
    which made a pass over PP-OCR cls take seconds); callers sync once at the end.
    """
    for offset, (op_type, inputs, outputs, attrs) in enumerate(ops):
        block._insert_op_without_sync(position + offset, type=op_type, inputs=inputs, outputs=outputs, attrs=attrs)


def readers_by_var(block) -> dict[str, list]:
    """Variable name -> the ops of ``block`` that read it, in program order."""
    readers: dict[str, list] = {}
    for op in block.ops:
        for name in op.input_arg_names:
            readers.setdefault(name, []).append(op)
    return readers


def writer_by_var(block) -> dict[str, object]:
    """Variable name -> the (last) op of ``block`` that writes it."""
    return {name: op for op in block.ops for name in op.output_arg_names}


def is_persistable(block, name: str) -> bool:
    """True if ``block`` declares ``name`` as a persistable variable (a parameter or a stored scale)."""
    return block.has_var(name) and block.var(name).persistable


def is_observer(op) -> bool:
    """True for a QDQ op with ``only_observer=True``: it carries a scale for the runtime and is an
    identity when the program runs."""
    return op.has_attr("only_observer") and bool(op.attr("only_observer"))
