"""Paddle-Lite export: the ``paddle_lite_opt`` step to a ``.nb`` model, and a structural check.

Paddle-Lite is not installable next to Paddle 3.x (``paddlelite==2.13rc0`` has wheels up to
Python 3.9 only), so the opt step runs ``paddle_lite_opt`` as a subprocess from any environment
that has it::

    python3.9 -m venv lite39 && lite39/bin/pip install paddlelite==2.13rc0 "numpy<2"
    export_paddle_lite("out/int8", "out/model_arm", opt="lite39/bin/paddle_lite_opt")

(``numpy<2`` matters for running the ``.nb`` from Python: the wheel's ``Tensor.from_numpy`` is
built against numpy 1 and silently writes garbage inputs under numpy 2; see
docs/deploy_paddle_lite.md.)

:func:`check_paddle_lite_structure` reads a saved quantized model and reports what Paddle-Lite's
``lite_quant_dequant_fuse_pass`` (``lite/core/optimizer/mir/fusion/quant_dequant_fuse_pass.cc`` and
``quant_dequant_op_fuser.cc``) needs in order to turn the fake-quant ops into int8 kernels:

* QDQ format (``quantize_linear``/``dequantize_linear``): an activation ``quantize_linear`` feeds
  exactly one ``dequantize_linear`` that reads the *same* ``Scale`` variable (the fuser's pattern
  links both ops to one scale node); both ops carry ``ZeroPoint`` inputs and the ``bit_length``
  and ``quant_axis`` attributes; a weight ``dequantize_linear`` reads an int8 persistable tensor
  whose per-channel scale has one value per output channel on the axis Paddle-Lite uses
  (0 for conv2d/depthwise_conv2d, 1 for conv2d_transpose/mul/matmul/matmul_v2).
* Old format: activations through ``fake_quantize_moving_average_abs_max`` /
  ``fake_quantize_range_abs_max`` (``InScale``/``OutScale``, ``bit_length``) or
  ``fake_quantize_dequantize_moving_average_abs_max``; a quantized op whose output goes through
  ``fake_dequantize_max_abs`` (``max_range``) or ``fake_channel_wise_dequantize_max_abs``
  (``quant_bits``, ``Scales``), with integer-valued weights. Training-time weight quantizers
  (``fake_quantize_abs_max``, ``fake_channel_wise_quantize_abs_max``) have no fuser: run
  ``convert`` first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Literal, Optional, Sequence

import numpy as np
import paddle
from pydantic import BaseModel, ConfigDict, Field

from ..common.model_files import load_inference_program, model_files
from ..common.program import legacy_ir
from ..common.errors import ConfigError, ExportError

__all__ = [
    "PADDLE_LITE_TARGETS",
    "PADDLE_LITE_INT8_OP_TYPES",
    "PADDLE_LITE_WEIGHT_AXIS",
    "INSTALL_HINT",
    "StructureFinding",
    "find_paddle_lite_opt",
    "export_paddle_lite",
    "check_paddle_lite_structure",
]

PADDLE_LITE_TARGETS = ("arm", "opencl", "x86", "metal", "xpu")
"""``--valid_targets`` values accepted here (joined with commas for ``paddle_lite_opt``)."""

PADDLE_LITE_INT8_OP_TYPES = ("conv2d", "depthwise_conv2d", "conv2d_transpose", "mul", "matmul", "matmul_v2")
"""Op types whose weight + dequant Paddle-Lite's quant_dequant_fuse_pass turns into int8 kernels."""

PADDLE_LITE_WEIGHT_AXIS = {"conv2d": 0, "depthwise_conv2d": 0, "conv2d_transpose": 1, "mul": 1, "matmul": 1,
                           "matmul_v2": 1}
"""Output-channel axis of each op's weight, as Paddle-Lite expects the per-channel scales."""

INSTALL_HINT = ("paddle_lite_opt comes with the paddlelite wheel, built for Python <= 3.9 only: "
                "`python3.9 -m venv lite39 && lite39/bin/pip install paddlelite==2.13rc0 \"numpy<2\"`, then "
                "pass opt='lite39/bin/paddle_lite_opt' or put lite39/bin on PATH")

_ACT_QUANT_OLD = ("fake_quantize_moving_average_abs_max", "fake_quantize_range_abs_max")
_QDQ_OLD = ("fake_quantize_dequantize_moving_average_abs_max", "fake_quantize_dequantize_abs_max",
            "fake_channel_wise_quantize_dequantize_abs_max")
_DEQUANT_OLD = ("fake_dequantize_max_abs", "fake_channel_wise_dequantize_max_abs")
_TRAINING_ONLY = ("fake_quantize_abs_max", "fake_channel_wise_quantize_abs_max")
_STDERR_TAIL = 2000


class StructureFinding(BaseModel):
    """One thing in a quantized model that Paddle-Lite's quantization passes will not handle as meant."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    severity: Literal["error", "warning"] = Field(
        description="error: paddle_lite_opt fails or the model computes something else; warning: it converts "
                    "and runs, but not as the int8 model meant (e.g. in float)")
    op_index: Optional[int] = Field(default=None, description="index of the op in block 0, None for model-level")
    op_type: Optional[str] = Field(default=None, description="type of that op")
    message: str = Field(description="what is wrong and what Paddle-Lite expects instead")

    def __str__(self) -> str:
        where = f"op {self.op_index} ({self.op_type})" if self.op_index is not None else "model"
        return f"{self.severity}: {where}: {self.message}"


# ---------------------------------------------------------------- model files
def _model_files(model_dir, model_filename, params_filename) -> tuple[Path, Path | None]:
    """The model and params files inside ``model_dir`` (the library's one lookup rule)."""
    return model_files(model_dir, model_filename, params_filename)


# ---------------------------------------------------------------- opt step
def find_paddle_lite_opt(opt: str | os.PathLike | None = None) -> Path:
    """The ``paddle_lite_opt`` executable: ``opt`` when given, else the one on PATH.

    Raises:
        ConfigError: not found or not executable; the message says how to install it.
    """
    if opt is None:
        found = shutil.which("paddle_lite_opt")
        if found is None:
            raise ConfigError(f"opt=None and no paddle_lite_opt on PATH; {INSTALL_HINT}")
        return Path(found)
    path = Path(opt)
    if not path.is_file() or not os.access(path, os.X_OK):
        raise ConfigError(f"opt {str(opt)!r} is not an executable file; {INSTALL_HINT}")
    return path


def _check_targets(valid_targets: Sequence[str]) -> str:
    targets = (valid_targets,) if isinstance(valid_targets, str) else tuple(valid_targets)
    bad = [t for t in targets if t not in PADDLE_LITE_TARGETS]
    if not targets or bad:
        raise ConfigError(f"valid_targets {list(targets)!r}: {bad or 'empty'} not allowed; "
                          f"allowed: a non-empty subset of {list(PADDLE_LITE_TARGETS)}")
    return ",".join(targets)


def _tail(text: str) -> str:
    return text[-_STDERR_TAIL:].strip() or "(empty)"


def _run_opt(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ExportError(f"paddle_lite_opt ran past timeout={timeout} s: {' '.join(command)}") from exc
    except OSError as exc:
        raise ConfigError(f"opt {command[0]!r} could not be started ({exc}); {INSTALL_HINT}") from exc


def _check_opt_result(done: subprocess.CompletedProcess, produced: Path, model: Path) -> None:
    """Raise ExportError unless the tool exited 0 and wrote a non-empty ``.nb``."""
    if done.returncode == 0 and produced.is_file() and produced.stat().st_size > 0:
        return
    wrote = "an empty .nb" if produced.is_file() else "no .nb"
    raise ExportError(f"paddle_lite_opt failed on {str(model)!r}: exit status {done.returncode}, {wrote} "
                      f"written; its output ends with:\n{_tail(done.stderr + done.stdout)}")


def export_paddle_lite(model_dir, output_prefix, *, valid_targets: Sequence[str] = ("arm",), opt=None,
                       model_filename: str | None = None, params_filename: str | None = None,
                       timeout: float = 600.0) -> Path:
    """Run Paddle-Lite's opt step on a saved model and write ``<output_prefix>.nb`` atomically.

    The tool writes into a temporary folder next to the output; the ``.nb`` is renamed into place
    only when the tool exited with status 0 and produced a non-empty file, so a failed run leaves
    any earlier ``<output_prefix>.nb`` untouched. ``model_dir`` is never written to.

    Args:
        model_dir: folder of the inference model (``*.pdmodel`` + ``*.pdiparams``).
        output_prefix: path of the output without ``.nb`` (a path ending in ``.nb`` is taken as the
            file itself); its folder is created if missing.
        valid_targets: Paddle-Lite targets to optimise for, from :data:`PADDLE_LITE_TARGETS`.
            A model optimised for ``arm`` loads in the x86 wheel but its outputs are all zeros there.
        opt: path of ``paddle_lite_opt``; None looks it up on PATH.
        model_filename / params_filename: file names inside ``model_dir`` when it holds several.
        timeout: seconds before the opt run is abandoned.

    Returns:
        Path of the written ``.nb`` file.

    Raises:
        ConfigError: tool missing (with install instructions), model files missing, bad targets.
        ExportError: paddle_lite_opt failed, timed out or wrote nothing; the message holds its output tail.
    """
    targets = _check_targets(valid_targets)
    model, params = _model_files(model_dir, model_filename, params_filename)
    tool = find_paddle_lite_opt(opt)
    prefix = os.fspath(output_prefix)
    target = Path(prefix if prefix.endswith(".nb") else f"{prefix}.nb")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".paddle_lite-", dir=target.parent) as staging:
        command = [str(tool), f"--model_file={model}", f"--optimize_out={Path(staging) / 'model'}",
                   f"--valid_targets={targets}", "--optimize_out_type=naive_buffer"]
        if params is None:  # the tool insists on a params file; a model without weights gets an empty one
            params = Path(staging) / "empty.pdiparams"
            params.touch()
        command.append(f"--param_file={params}")
        done = _run_opt(command, timeout)
        produced = Path(staging) / "model.nb"
        _check_opt_result(done, produced, model)
        os.replace(produced, target)
    return target


# ---------------------------------------------------------------- structural check
def _load_program(model: Path, params: Path | None):
    """(program, scope) of a saved inference model, in a private scope."""
    scope, exe = paddle.static.Scope(), paddle.static.Executor(paddle.CPUPlace())
    program, _, _ = load_inference_program(exe, scope, model, params)
    return program, scope


class _Model:
    """The ops of block 0 with producer/consumer maps and tensor access (for the checks)."""

    def __init__(self, program, scope):
        self.block = program.global_block()
        self.ops = list(self.block.ops)
        self.scope = scope
        self.consumers: dict[str, list[int]] = {}
        self.producer: dict[str, int] = {}
        for i, op in enumerate(self.ops):
            for name in op.input_arg_names:
                self.consumers.setdefault(name, []).append(i)
            for name in op.output_arg_names:
                self.producer.setdefault(name, i)

    def producer_of(self, name: str | None):
        """The op writing ``name`` (first writer), or None."""
        index = self.producer.get(name) if name is not None else None
        return (index, self.ops[index]) if index is not None else (None, None)

    def one_input(self, op, slot: str) -> str | None:
        names = op.input(slot) if slot in op.input_names else []
        return names[0] if names else None

    def persistable(self, name: str | None) -> bool:
        return name is not None and self.block.has_var(name) and self.block.var(name).persistable

    def tensor(self, name: str) -> np.ndarray | None:
        var = self.scope.find_var(name)
        if var is None:
            return None
        try:
            return np.array(var.get_tensor())
        except (RuntimeError, ValueError):
            return None


def _finding(severity, index, op, message) -> StructureFinding:
    return StructureFinding(severity=severity, op_index=index, op_type=op.type if op is not None else None,
                            message=message)


def _check_attrs(i, op, names, *, old_format=False) -> list[StructureFinding]:
    """Missing attributes are errors; bit_length != 8 is an error in the old format, else a warning."""
    missing = [n for n in names if not op.has_attr(n)]
    out = [_finding("error", i, op, f"attribute {n!r} missing; Paddle-Lite reads it with GetAttr")
           for n in missing]
    bits = op.attr("bit_length") if op.has_attr("bit_length") else 8
    if bits != 8 and old_format:
        out.append(_finding("error", i, op, f"bit_length={bits}: paddle_lite_opt aborts on old-format models "
                                           f"with other than 8 bits ('Not support, bit_length= {bits}')"))
    elif bits != 8:
        out.append(_finding("warning", i, op, f"bit_length={bits}; Paddle-Lite runs it with its 8-bit kernels "
                                             "(on x86, 7 bits avoid their int16 saturation)"))
    return out


def _check_quantize_linear(m: _Model, i, op) -> list[StructureFinding]:
    out = _check_attrs(i, op, ("bit_length", "quant_axis"))
    scale, zero = m.one_input(op, "Scale"), m.one_input(op, "ZeroPoint")
    if zero is None:
        out.append(_finding("error", i, op, "no ZeroPoint input; the fuser's pattern needs one"))
    if scale is None or not m.persistable(scale):
        out.append(_finding("error", i, op, f"Scale {scale!r} is not a persistable variable"))
    readers = m.consumers.get(op.output("Y")[0], [])
    dequant = [j for j in readers if m.ops[j].type == "dequantize_linear"]
    if len(readers) != 1 or len(dequant) != 1:
        out.append(_finding("error", i, op, f"output {op.output('Y')[0]!r} feeds "
                                            f"{[m.ops[j].type for j in readers]}; Paddle-Lite fuses only a "
                                            "quantize_linear read by one dequantize_linear"))
    elif m.one_input(m.ops[dequant[0]], "Scale") != scale:
        out.append(_finding("error", i, op, f"its dequantize_linear (op {dequant[0]}) reads Scale "
                                            f"{m.one_input(m.ops[dequant[0]], 'Scale')!r}, not {scale!r}; the "
                                            "fuser's pattern needs both ops on one scale variable"))
    if m.persistable(m.one_input(op, "X")):
        out.append(_finding("error", i, op, f"quantizes the weight {m.one_input(op, 'X')!r} in the graph; "
                                            "paddle_lite_opt 2.13rc0 aborts on that ('Check failed: "
                                            "!input_var_node->arg()->is_weight'): save the program returned by "
                                            "convert(), whose weights are stored as int8"))
    return out


def _weight_users(m: _Model, op) -> list[int]:
    return m.consumers.get(op.output("Y")[0], [])


def _check_weight_axis(m: _Model, i, op, weight: str, users: list[int]) -> list[StructureFinding]:
    """Per-channel scales of ``weight`` must lie on the output-channel axis Paddle-Lite uses for each user."""
    values, scale = m.tensor(weight), m.tensor(m.one_input(op, "Scale") or "")
    if values is None or scale is None or scale.size <= 1:
        return []
    axis = op.attr("quant_axis") if op.has_attr("quant_axis") else None
    out = []
    for j in users:
        expected = PADDLE_LITE_WEIGHT_AXIS.get(m.ops[j].type)
        if expected is None:
            out.append(_finding("warning", j, m.ops[j], f"reads the dequantized weight {weight!r} but Paddle-Lite "
                                                       f"has int8 kernels only for {list(PADDLE_LITE_INT8_OP_TYPES)}"))
        elif axis != expected:
            out.append(_finding("error", i, op, f"per-channel weight {weight!r} has quant_axis={axis}; "
                                                f"Paddle-Lite takes {m.ops[j].type} scales on axis {expected}"))
        elif values.ndim <= expected or values.shape[expected] != scale.size:
            out.append(_finding("error", i, op, f"weight {weight!r} of shape {list(values.shape)} has "
                                                f"{scale.size} scales; expected one per entry of axis {expected}"))
    return out


def _check_weight_dequant(m: _Model, i, op) -> list[StructureFinding]:
    weight = m.one_input(op, "X")
    out = _check_attrs(i, op, ("bit_length", "quant_axis"))
    if m.one_input(op, "ZeroPoint") is None:
        out.append(_finding("error", i, op, "no ZeroPoint input; the fuser's pattern needs one"))
    values = m.tensor(weight)
    if values is None:
        return out + [_finding("error", i, op, f"weight {weight!r} has no tensor in the params file")]
    if values.dtype != np.int8:
        out.append(_finding("error", i, op, f"weight {weight!r} is stored as {values.dtype}; Paddle-Lite's "
                                            "DequantLinearOpFuser keeps the tensor as is, so it must be int8 "
                                            "(quantize it with convert / quant_post)"))
    return out + _check_weight_axis(m, i, op, weight, _weight_users(m, op))


def _check_dequantize_linear(m: _Model, i, op) -> list[StructureFinding]:
    source = m.one_input(op, "X")
    if m.persistable(source):
        return _check_weight_dequant(m, i, op)
    _, producer = m.producer_of(source)
    if producer is None or producer.type != "quantize_linear":
        return [_finding("error", i, op, f"activation dequantize_linear reads {source!r}, which no "
                                         "quantize_linear writes; Paddle-Lite cannot fuse it")]
    return _check_attrs(i, op, ("bit_length", "quant_axis"))


def _check_old_act_quant(m: _Model, i, op) -> list[StructureFinding]:
    out = _check_attrs(i, op, ("bit_length",), old_format=True)
    in_scale = m.one_input(op, "InScale")
    if in_scale is None or not m.persistable(in_scale):
        out.append(_finding("error", i, op, f"InScale {in_scale!r} is not a persistable variable"))
    if "OutScale" not in op.output_names or not op.output("OutScale"):
        out.append(_finding("error", i, op, "no OutScale output; Paddle-Lite reads the threshold from it"))
    return out


def _integer_valued(values: np.ndarray, bits: int) -> bool:
    qmax = 2 ** (bits - 1) - 1
    return bool(np.all(values == np.round(values)) and np.abs(values).max(initial=0) <= qmax)


def _check_old_dequant(m: _Model, i, op) -> list[StructureFinding]:
    names = ("max_range",) if op.type == "fake_dequantize_max_abs" else ("quant_bits",)
    out = [_finding("error", i, op, f"attribute {n!r} missing") for n in names if not op.has_attr(n)]
    index, quantized = m.producer_of(m.one_input(op, "X"))
    if quantized is None or quantized.type not in PADDLE_LITE_WEIGHT_AXIS:
        return out + [_finding("error", i, op, f"dequantizes {m.one_input(op, 'X')!r}, which no quantized op "
                                               f"({list(PADDLE_LITE_INT8_OP_TYPES)}) writes; Paddle-Lite fuses "
                                               "only dequant-after-op, as convert() saves it")]
    slot = "Filter" if "conv" in quantized.type else "Y"
    values = m.tensor(m.one_input(quantized, slot) or "")
    bits = op.attr("quant_bits")[0] if op.has_attr("quant_bits") else 8
    if bits != 8:
        out.append(_finding("error", i, op, f"quant_bits[0]={bits}: paddle_lite_opt casts the weight to int8 only "
                                            "for 8 bits and aborts otherwise"))
    if values is not None and not _integer_valued(values.astype(np.float64), bits):
        out.append(_finding("error", index, quantized, f"weight {m.one_input(quantized, slot)!r} is not on "
                                                       f"the {bits}-bit integer grid; run convert first"))
    return out


def _check_op(m: _Model, i, op) -> list[StructureFinding]:
    if op.type == "quantize_linear":
        return _check_quantize_linear(m, i, op)
    if op.type == "dequantize_linear":
        return _check_dequantize_linear(m, i, op)
    if op.type in _ACT_QUANT_OLD:
        return _check_old_act_quant(m, i, op)
    if op.type in _QDQ_OLD:
        return _check_attrs(i, op, ("bit_length",), old_format=True)
    if op.type in _DEQUANT_OLD:
        return _check_old_dequant(m, i, op)
    if op.type in _TRAINING_ONLY:
        return [_finding("error", i, op, "training-time weight quantizer: Paddle-Lite has no fuser for it; "
                                         "save the program returned by convert()")]
    return []


_QUANT_OP_TYPES = ("quantize_linear", "dequantize_linear") + _ACT_QUANT_OLD + _QDQ_OLD + _DEQUANT_OLD + _TRAINING_ONLY


def _is_quant_op(op) -> bool:
    return op.type in _QUANT_OP_TYPES


def check_paddle_lite_structure(model_dir, *, model_filename: str | None = None,
                                params_filename: str | None = None) -> list[StructureFinding]:
    """Check that a saved quantized model has the structure Paddle-Lite's quantization passes need.

    Args:
        model_dir: folder of the quantized inference model.
        model_filename / params_filename: file names inside ``model_dir`` when it holds several.

    Returns:
        The findings in op order (empty when the model is fine). A model with no quantization ops
        at all gives one warning: Paddle-Lite would run it in float.

    Raises:
        ConfigError: the model files are missing or do not load.
    """
    model, params = _model_files(model_dir, model_filename, params_filename)
    with legacy_ir():
        program, scope = _load_program(model, params)
        m = _Model(program, scope)
        findings = [f for i, op in enumerate(m.ops) for f in _check_op(m, i, op)]
    if not any(_is_quant_op(op) for op in m.ops):
        findings.append(StructureFinding(severity="warning", message="no quantization ops: Paddle-Lite runs "
                                                                     "this model in float"))
    return findings
