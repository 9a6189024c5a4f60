"""Saving a dygraph QAT model as the int8 QDQ ``.pdmodel`` Paddle Inference runs on oneDNN.

Paddle Inference 3.3.1 runs QDQ models in int8 only as legacy ``.pdmodel`` files, and the
static path already knows how to freeze a quantized program for each ``deploy_backend``. So
saving goes through it:

1. the wrappers are swapped back for their float layers (same parameters) and the model is
   traced to a legacy inference program (``paddle.jit.save`` under ``OldIrGuard``) in a temporary
   folder; the model is restored afterwards, whatever happens;
2. the program is planned as ``quant_aware`` plans it, keeping only the ops whose weight belongs
   to a wrapped layer (ops of the same types that QAT did not wrap stay float, as in training);
3. the QDQ eval ops are inserted (:func:`~paddle_quant.passes.rewrite.apply_plan`) and the
   trained scales are written into their scale variables: each wrapper's input scale on the
   op's activation input, its weight scale where the weight quanter has state (abs-max weight
   scales are recomputed from the saved weight, as in training);
4. :func:`~paddle_quant.passes.freeze.freeze_program` freezes it (int8 weights) and the model is
   written to ``{path}.pdmodel`` / ``{path}.pdiparams`` through a staging folder.

No output scales are written (the profile ``output_scales='none'``): every int8 op hands a float
result to its readers, which is what the training forward computed. For ``deploy_backend='onednn'``
every relu/relu6 is saved as leaky_relu(0)/clip (:func:`~paddle_quant.passes.residual_relu.sign_all_activations`):
oneDNN would store their outputs u8 at ``255 / scale``, a grid the model was not trained on.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import paddle

from ..common import naming
from ..common.errors import ConfigError, ConfigTypeError
from ..common.model_files import load_inference_program, save_inference_atomically
from ..common.program import legacy_ir, write_tensor
from ..passes.freeze import freeze_program
from ..passes.plan import QuantPlan, SkippedOp, plan_quantization
from ..passes.residual_relu import sign_all_activations
from ..passes.rewrite import apply_plan
from .layers import QuantizedLayer, parent_and_name
from .quanters import Quanter

__all__ = ["save_quantized", "plan_for_wrappers"]

_logger = logging.getLogger(__name__)


def _split_path(path) -> tuple[Path, str]:
    if not isinstance(path, (str, os.PathLike)) or not str(path) or str(path).endswith(("/", os.sep)):
        raise ConfigError(f"path got {path!r}; allowed: 'dirname/file_prefix' (the model is written to "
                          "file_prefix.pdmodel and file_prefix.pdiparams in dirname)")
    target = Path(path)
    return target.parent, target.name


def _check_quanters(wrappers: dict[str, QuantizedLayer]) -> None:
    for name, wrapper in wrappers.items():
        for role, quanter in (("weight", wrapper._fake_quant_weight), ("input", wrapper._fake_quant_input)):
            if not isinstance(quanter, Quanter):
                raise ConfigError(
                    f"layer {name!r} has a custom {role} quanter {type(quanter).__name__}, whose scale the QDQ model "
                    "cannot hold; save_quantized_model needs the config's quantize types")


def _check_input_spec(model, input_spec) -> None:
    if input_spec is None:
        return
    if not isinstance(input_spec, (list, tuple)):
        raise ConfigTypeError(f"input_spec must be a list of paddle.static.InputSpec or tensors, got "
                              f"{type(input_spec).__name__}")
    parameters = list(inspect.signature(model.forward).parameters.values())
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        return
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    if not len(required) <= len(input_spec) <= len(positional):
        raise ConfigError(
            f"input_spec got {len(input_spec)} inputs but {type(model).__name__}.forward takes "
            f"{[p.name for p in positional]} ({len(required)} required); allowed: one InputSpec per input")
    _dry_run(model, input_spec)


def _example(spec):
    """Zeros shaped like ``spec`` (batch dimension 1), or None where another dimension is unknown."""
    if isinstance(spec, paddle.Tensor):
        return spec
    shape = list(spec.shape)
    if any(d is None or d < 0 for d in shape[1:]):
        return None
    return paddle.zeros([1] + shape[1:] if shape else [], dtype=spec.dtype)


def _dry_run(model, input_spec) -> None:
    """Run the forward (eval mode, no state update) on zeros shaped like ``input_spec`` to catch mismatches."""
    examples = [_example(spec) for spec in input_spec]
    if any(example is None for example in examples):
        return
    training = model.training
    model.eval()
    try:
        with paddle.no_grad():
            model(*examples)
    except Exception as exc:  # a shape or dtype mismatch surfaces as ValueError/RuntimeError from the kernels
        raise ConfigError(f"input_spec {input_spec!r} does not match {type(model).__name__}.forward: running it on "
                          f"zeros of that shape failed with {type(exc).__name__}: {str(exc).splitlines()[0]}; allowed: "
                          "one InputSpec per forward input with its shape and dtype") from exc
    finally:
        model.train() if training else model.eval()


@contextlib.contextmanager
def _float_layers_in_place(model, wrappers: dict[str, QuantizedLayer]):
    """Swap each wrapper for its float layer (and the model to eval mode); restore both on exit."""
    training = model.training
    parents = [(*parent_and_name(model, path), wrapper) for path, wrapper in wrappers.items()]
    try:
        for parent, name, wrapper in parents:
            setattr(parent, name, wrapper.float_layer)
        model.eval()
        yield
    finally:
        for parent, name, wrapper in parents:
            setattr(parent, name, wrapper)
        model.train() if training else model.eval()


def _trace_float_model(model, wrappers, prefix: Path, input_spec) -> None:
    _check_input_spec(model, input_spec)
    with _float_layers_in_place(model, wrappers), paddle.pir_utils.OldIrGuard():
        try:
            paddle.jit.save(model, str(prefix), input_spec=input_spec)
        except Exception as exc:  # dy2static raises ValueError/TypeError/RuntimeError from deep inside
            raise ConfigError(f"input_spec {input_spec!r} could not trace {type(model).__name__}.forward: "
                              f"{type(exc).__name__}: {exc}") from exc


def plan_for_wrappers(block, config, weight_names: set[str]) -> QuantPlan:
    """``quant_aware``'s plan of ``block`` restricted to ops whose weight is in ``weight_names``; no observers."""
    plan = plan_quantization(block, config)
    kept, skipped = [], list(plan.skipped)
    for op in plan.ops:
        if any(name in weight_names for _slot, name in op.inputs):
            kept.append(op)
        else:
            skipped.append(SkippedOp(op.index, op.op_type, "its layer was not wrapped by QAT.quantize"))
    needed = {name for op in kept for _slot, name in op.inputs}
    return QuantPlan(tuple(t for t in plan.tensors if t.var in needed), tuple(kept), (), tuple(skipped))


def _scales_by_tensor(plan: QuantPlan, by_weight: dict[str, tuple[str, QuantizedLayer]]):
    """Scale variable -> (scale, layer paths) for every planned tensor with a trained scale."""
    scales: dict[str, list] = {}
    for op_quant in plan.ops:
        weight = next(name for _slot, name in op_quant.inputs if name in by_weight)
        path, wrapper = by_weight[weight]
        weight_scale = wrapper._fake_quant_weight.saved_scale()
        if weight_scale is not None:
            scales.setdefault(naming.scale(weight), []).append((weight_scale, path))
        for _slot, name in op_quant.inputs:
            if name != weight:
                scales.setdefault(naming.scale(name), []).append((wrapper._fake_quant_input.saved_scale(), path))
    return scales


def _write_scales(scope, place, scales) -> None:
    for var, candidates in scales.items():
        values = [value for value, _path in candidates]
        chosen = np.max(np.stack(values), axis=0)
        if any(not np.array_equal(value, chosen) for value in values):
            _logger.warning("tensor %s is read by layers %s with different input scales %s; the saved model "
                            "quantizes it once, at the largest", var, [p for _v, p in candidates],
                            [float(np.max(v)) for v in values])
        write_tensor(scope, place, var, chosen.astype(np.float32))


def _preprocessed_weights(wrappers: dict[str, QuantizedLayer]) -> dict[str, np.ndarray]:
    """Weight name -> the weight after its preprocess (PACT), for wrappers that have one (dygraph mode)."""
    with paddle.no_grad():
        return {wrapper.weight.name: wrapper.preprocessed_weight().numpy().astype(np.float32)
                for wrapper in wrappers.values() if wrapper._weight_preprocess is not None}


def _report_unmatched(plan: QuantPlan, by_weight) -> None:
    used = {name for op in plan.ops for _slot, name in op.inputs}
    unused = sorted(path for weight, (path, _w) in by_weight.items() if weight not in used)
    if unused:
        _logger.warning("wrapped layers %s do not appear in the traced forward (or their op type is not "
                        "quantized); they are not in the saved model's int8 ops", unused)


def _log_signed(rewritten) -> None:
    if rewritten:
        _logger.info("deploy_backend='onednn': %d relu/relu6 saved as leaky_relu(0)/clip, so oneDNN keeps their outputs "
                     "on the 127-level grid the model was trained on instead of its u8 grid (passes/residual_relu.py)",
                     len(rewritten))


def _quantize_traced(folder: Path, wrappers, config, staging: Path, prefix: str) -> None:
    by_weight = {wrapper.weight.name: (path, wrapper) for path, wrapper in wrappers.items()}
    place = paddle.CPUPlace()
    preprocessed = _preprocessed_weights(wrappers)
    with legacy_ir():
        scope, exe = paddle.static.Scope(), paddle.static.Executor(place)
        program, feeds, fetches = load_inference_program(exe, scope, folder / "model.pdmodel",
                                                         folder / "model.pdiparams")
        for name, value in preprocessed.items():
            write_tensor(scope, place, name, value)
        if config.quant.deploy_backend == "onednn":
            _log_signed(sign_all_activations(program))
        block = program.global_block()
        plan = plan_for_wrappers(block, config.quant, set(by_weight))
        _report_unmatched(plan, by_weight)
        apply_plan(program, plan, config.quant, scope, place, mode="test", rewire_backward=False)
        _write_scales(scope, place, _scales_by_tensor(plan, by_weight))
        frozen, _ = freeze_program(program, config.quant, scope, place)
        save_inference_atomically(exe, scope, frozen, feeds, fetches, staging, model_filename=f"{prefix}.pdmodel",
                                  params_filename=f"{prefix}.pdiparams")


def save_quantized(model, wrappers: dict[str, QuantizedLayer], config, path, input_spec) -> tuple[Path, Path]:
    """Write ``model`` (QAT-wrapped by ``wrappers``) as ``{path}.pdmodel`` / ``{path}.pdiparams``; returns both."""
    target_dir, prefix = _split_path(path)
    _check_quanters(wrappers)
    target_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{prefix}.", dir=target_dir))
    try:
        _trace_float_model(model, wrappers, work / "float" / "model", input_spec)
        _quantize_traced(work / "float", wrappers, config, work / "int8", prefix)
        files = [target_dir / f"{prefix}.pdiparams", target_dir / f"{prefix}.pdmodel"]
        for file in files:
            os.replace(work / "int8" / file.name, file)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _logger.info("saved the int8 model %s (%d quantized layers)", files[1], len(wrappers))
    return files[1], files[0]
