"""Export a QDQ-quantized Paddle inference model to an int8 QDQ ONNX model for onnxruntime.

Why our own conversion rather than paddle2onnx: paddle2onnx 2.1.0 aborts on Paddle QDQ
models ("Only support e4m3 or e5m2"); exporting the fp32 graph with it and placing
QuantizeLinear/DequantizeLinear afterwards would need a map from Paddle variable names to
its ONNX tensor names, which it does not keep (activations become ``p2o.pd_op.conv2d.0.0``
after a PIR translation) and cannot give per consumer; and it pip-installs packages at run
time (polygraphy's auto-install) when asked to save. The quantized Paddle program already
holds the whole graph with int8 weights and every scale, so this module translates it op by
op, keeping Paddle's variable names as ONNX tensor names:

* ``dequantize_linear`` of a stored weight ``{W}@int8`` -> int8 initializer +
  ``DequantizeLinear(axis=quant_axis)`` (per channel) or per tensor;
* an activation ``quantize_linear``/``dequantize_linear`` pair -> ``QuantizeLinear`` /
  ``DequantizeLinear`` with the same scale;
* observer pairs (``only_observer=True``, an identity in the Paddle Executor) -> nothing
  (``observers='none'``, the default: the graph computes what the Paddle Executor computes), or
  a real QDQ pair on the outputs of ops with int8 weights (``'int8_ops'``: what lets onnxruntime
  run them as QLinearConv/QLinearMatMul) or everywhere (``'all'``);
* every other op by the table :data:`OP_CONVERTERS`.

Scale convention: Paddle's ``real = q * scale / qmax`` is ONNX's ``real = (q - zero_point) * s``
with ``s = scale / qmax`` (float32) and an int8 zero point of 0. Both round half to even and
saturate to [-128, 127], so one quantize step is computed identically up to float rounding.

onnx and onnxruntime are optional dependencies: ``pip install paddle_quant[onnx]``.
"""

from __future__ import annotations

import importlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Literal

import numpy as np
from paddle.base.data_feeder import convert_dtype

from ..common.program import is_observer, legacy_ir
from ..common.errors import ConfigError, MissingDependencyError, ProgramStateError
from ..passes.rounded_readers import float_read_quantized_tensors, round_float_readers as _round_float_readers
from ..passes.unsigned_grid import is_unsigned_grid
from ._onnx_float_convs import store_float_conv_weights
from ._onnx_fold import _emit_folded_conv, _index_maps, _plan_conv_folds, _through_observer
from ._onnx_input_scale import fold_input_scales
from ._onnx_ops import OP_CONVERTERS, _Graph
from .qdq_scales import load_quantized_model, read_qdq_scales

_logger = logging.getLogger(__name__)

__all__ = [
    "export_onnx",
    "export_float_onnx",
    "ONNXExportResult",
    "MissingDependencyError",
    "OP_CONVERTERS",
    "DEFAULT_OPSET",
    "OBSERVER_MODES",
    "STORAGE_TYPES",
    "WEIGHT_OP_TYPES",
    "require_onnx",
]

DEFAULT_OPSET = 17
"""ONNX opset written by default (17: the first with LayerNormalization)."""

STORAGE_TYPES = ("int8", "uint8")
"""Values of ``activation_type=`` / ``weight_type=``: int8 with zero point 0, or uint8 with zero point 128 (the
same grid shifted by 128)."""

OBSERVER_MODES = ("none", "int8_ops", "all")
"""Values of ``observers=``: where output-scale observers become QuantizeLinear/DequantizeLinear pairs."""

WEIGHT_OP_TYPES = ("conv2d", "depthwise_conv2d", "conv2d_transpose", "mul", "matmul", "matmul_v2")
"""Op types whose outputs ``observers='int8_ops'`` quantizes when one of their inputs is an int8 weight."""

_EXTRA_HINT = "pip install 'paddle_quant[onnx]' (or: pip install onnx onnxruntime)"
_IGNORED_OPS = ("feed", "fetch")


@dataclass(frozen=True)
class ONNXExportResult:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: the ONNX file.
        opset: its default-domain opset.
        weights: names of the weights stored int8 (with a DequantizeLinear each).
        activations: names of the activations quantized at run time (QuantizeLinear + DequantizeLinear).
        observers: names of the observer tensors written as QDQ pairs.
        rounded_readers: names of the quantized tensors whose float readers read the rounded copy
            (``round_float_readers``).
        float_conv_weights: output names of the convs whose weight is stored as float32 values of its int8
            grid (``float_conv_weights``: the convs onnxruntime runs in float).
        folded_input_scales: output names of the float convs whose input's one-value multiply was folded into
            their weights (``fold_input_scales``).
        inputs: graph input names (the model's feeds); outputs: graph output names (its fetches).
    """

    path: Path
    opset: int
    weights: tuple[str, ...]
    activations: tuple[str, ...]
    observers: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    rounded_readers: tuple[str, ...] = ()
    float_conv_weights: tuple[str, ...] = ()
    folded_input_scales: tuple[str, ...] = ()


def require_onnx():
    """Import and return the ``onnx`` module, or raise MissingDependencyError naming the extra."""
    try:
        return importlib.import_module("onnx")
    except ImportError as exc:
        raise MissingDependencyError(
            f"ONNX export needs the 'onnx' package, which is not installed: {_EXTRA_HINT}") from exc


# ---------------------------------------------------------------- checks
def _check_supported(block) -> None:
    missing = sorted({op.type for op in block.ops if op.type not in OP_CONVERTERS and op.type not in _IGNORED_OPS})
    if missing:
        raise ProgramStateError(f"the ONNX export has no converter for op types {missing}; supported: "
                                f"{sorted(OP_CONVERTERS)}")


def _check_scales(scales, kept_observers) -> None:
    """Every quantized tensor must fit ONNX int8 QDQ: 8 bits, zero point 0, positive finite scales, frozen weights."""
    bad = []
    for scale in scales.values():
        if scale.kind == "observer" and scale.name not in kept_observers:
            continue
        if scale.bits != 8:
            bad.append(f"'{scale.name}' ({scale.kind}): bits={scale.bits}, ONNX int8 QDQ needs 8")
        elif np.any(scale.zero_point != 0):
            bad.append(f"'{scale.name}' ({scale.kind}): non-zero zero point {scale.zero_point.tolist()[:4]}")
        elif not np.all(np.isfinite(scale.scale) & ((scale.scale > 0) | (scale.kind == "weight"))):
            bad.append(f"'{scale.name}' ({scale.kind}): scale must be finite and, for activations, positive; "
                       f"got {scale.scale.tolist()[:4]}")
        elif scale.kind == "weight" and scale.int_values is None:
            bad.append(f"'{scale.name}' (weight): not frozen (still a quantize_linear); export the model saved by "
                       "quant_post or convert")
    if bad:
        raise ProgramStateError("these quantized tensors cannot be written as ONNX int8 QDQ: " + "; ".join(bad))


def _check_observers(observers) -> None:
    if isinstance(observers, str):
        if observers not in OBSERVER_MODES:
            raise ConfigError(f"observers must be one of {list(OBSERVER_MODES)} or a collection of observed tensor "
                              f"names, got {observers!r}")
        return
    if not isinstance(observers, (list, tuple, set, frozenset)) or not all(isinstance(n, str) for n in observers):
        raise ConfigError(f"observers must be one of {list(OBSERVER_MODES)} or a list/tuple/set of tensor names "
                          f"(str), got {observers!r}")


def _check_observer_names(names, observed) -> None:
    unknown = sorted(set(names) - observed)
    if unknown:
        raise ConfigError(f"observers names tensors without an output-scale observer in the model: {unknown[:8]}"
                          f"{' ...' if len(unknown) > 8 else ''}; observed tensors: {sorted(observed)[:8]}"
                          f"{' ...' if len(observed) > 8 else ''} (quantize with output_scales='int8_ops' or 'all')")


def _check_round_float_readers(value) -> None:
    if isinstance(value, bool):
        return
    if not isinstance(value, (list, tuple, set, frozenset)) or not all(isinstance(n, str) for n in value):
        raise ConfigError(f"round_float_readers must be True, False or a list/tuple/set of tensor names (str), "
                          f"got {value!r}")


def _apply_rounded_readers(program, round_float_readers) -> tuple[str, ...]:
    """Point the float readers of the tensors ``round_float_readers`` names (True: every candidate) at their
    rounded copies in the loaded program (never the files); ConfigError for a name that is no candidate."""
    if round_float_readers is False:
        return ()
    if round_float_readers is True:
        return tuple(_round_float_readers(program))
    candidates = float_read_quantized_tensors(program.global_block())
    unknown = sorted(set(round_float_readers) - set(candidates))
    if unknown:
        raise ConfigError(f"round_float_readers names tensors that are not both quantized at run time and read in "
                          f"float: {unknown[:8]}{' ...' if len(unknown) > 8 else ''}; such tensors in this model: "
                          f"{list(candidates)[:8]}{' ...' if len(candidates) > 8 else ''}")
    return tuple(_round_float_readers(program, round_float_readers))


def _check_storage(field: str, value) -> None:
    if value not in STORAGE_TYPES:
        raise ConfigError(f"{field} must be one of {list(STORAGE_TYPES)}, got {value!r}")


def _check_opset(opset) -> int:
    if not isinstance(opset, int) or isinstance(opset, bool) or opset < DEFAULT_OPSET:
        raise ConfigError(f"opset must be an int >= {DEFAULT_OPSET} (LayerNormalization, per-axis QDQ), got {opset!r}")
    return opset


def _check_output(output_path, model) -> Path:
    target = Path(output_path).resolve()
    inputs = {Path(model.model_file).resolve()} | ({Path(model.params_file).resolve()} if model.params_file else set())
    if target in inputs:
        raise ConfigError(f"output_path {str(output_path)!r} is an input model file; choose another path")
    if target.exists() and target.is_dir():
        raise ConfigError(f"output_path {str(output_path)!r} is a directory; give a file path such as model.onnx")
    if not target.parent.is_dir():
        raise ConfigError(f"output_path {str(output_path)!r}: folder {str(target.parent)!r} does not exist")
    return target


# ---------------------------------------------------------------- graph assembly
def _value_info(g: _Graph, name: str, batch_dim: str):
    var = g.block.var(name)
    dims = [batch_dim if i == 0 and d < 0 else (f"{name}_dim{i}" if d < 0 else int(d)) for i, d in enumerate(var.shape)]
    elem = g.onnx.helper.np_dtype_to_tensor_dtype(np.dtype(convert_dtype(var.dtype)))
    return g.onnx.helper.make_tensor_value_info(name, elem, dims)


def _int8_op_outputs(g: _Graph, plans) -> set[str]:
    """Outputs of ops reading an int8 weight (the end of the folded chain for a folded conv), except those
    :func:`_fused_through_relu` names."""
    outputs = set()
    consumers, _ = _index_maps(g.block)
    for index, op in enumerate(g.block.ops):
        weighted = any(g.by_dequantized.get(name) is not None and g.by_dequantized[name].kind == "weight"
                       for name in op.input_arg_names)
        output = plans[index].output if index in plans else op.output_arg_names[0]
        if op.type in WEIGHT_OP_TYPES and weighted and not _fused_through_relu(g.block, consumers, output):
            outputs.add(output)
    return outputs


def _fused_through_relu(block, consumers, name: str) -> bool:
    """True when ``name``, past its observer pair, is read only by relu ops whose outputs only activation
    quantizers on the u8 grid read (zero point 0: ``deploy_backend='onednn'`` states relu outputs so,
    :mod:`paddle_quant.passes.unsigned_grid`). onnxruntime then drops the relu (a QuantizeLinear at its
    lowest zero point clamps at 0 the same way) and fuses the conv and the QuantizeLinear into one QLinearConv
    at the relu output's scale, and a QDQ pair on ``name`` would add a rounding and a requantize it cannot
    remove (PP-OCR cls: 13 of the 42 outputs the selection kept, 3.7 % of its latency)."""
    relus = [block.ops[i] for i in consumers.get(_through_observer(block, consumers, name)[0], [])]
    return bool(relus) and all(op.type == "relu" and _read_by_unsigned_quantizers(block, consumers, op.output("Out")[0])
                               for op in relus)


def _read_by_unsigned_quantizers(block, consumers, name: str) -> bool:
    readers = [block.ops[i] for i in consumers.get(name, [])]
    return bool(readers) and all(op.type == "quantize_linear" and not is_observer(op) and is_unsigned_grid(op)
                                 for op in readers)


def _kept_observers(g: _Graph, plans, observers) -> set[str]:
    names = {s.name for s in g.scales.values() if s.kind == "observer"}
    if not isinstance(observers, str):
        _check_observer_names(observers, names)
        return set(observers)
    if observers == "all":
        return names
    return names & _int8_op_outputs(g, plans) if observers == "int8_ops" else set()


def _check_named_observers_written(observers, written) -> None:
    missing = [] if isinstance(observers, str) else sorted(set(observers) - set(written))
    if missing:
        raise ConfigError(f"observers {missing[:8]} sit inside a folded conv chain (fold_conv=True) and are not "
                          "in the exported graph; name the chain's last tensor (the output observers='int8_ops' "
                          "picks) or export with fold_conv=False")


def _emit_ops(g: _Graph, plans) -> None:
    absorbed = set().union(*(plan.absorbed for plan in plans.values()))
    for index, op in enumerate(g.block.ops):
        if op.type in _IGNORED_OPS or index in absorbed:
            continue
        if index in plans:
            _emit_folded_conv(g, op, plans[index])
        else:
            OP_CONVERTERS[op.type](g, op)


def _prune(nodes, initializers, outputs):
    """Drop nodes whose outputs nothing reads (repeatedly), then initializers nothing reads."""
    nodes = list(nodes)
    while True:
        used = {name for node in nodes for name in node.input} | set(outputs)
        kept = [node for node in nodes if any(name in used for name in node.output)]
        if len(kept) == len(nodes):
            break
        nodes = kept
    used = {name for node in nodes for name in node.input}
    return nodes, [tensor for tensor in initializers if tensor.name in used]


def _build_graph(onnx, model, scales, *, observers, fold, name, opset, activation_type="int8", weight_type="int8",
                 float_conv_weights=False, input_scales=False):
    """(ONNX graph, names of the observers written as QDQ pairs, output names of the convs given float weights,
    output names of the convs whose input scale was folded)."""
    g = _Graph(onnx, model.program.global_block(), model.scope, scales, activation_type=activation_type,
               weight_type=weight_type, opset=opset)
    plans = _plan_conv_folds(g) if fold else {}
    g.kept_observers = _kept_observers(g, plans, observers)
    _check_scales(scales, g.kept_observers)
    _emit_ops(g, plans)
    _check_named_observers_written(observers, g.written_observers)
    float_convs = store_float_conv_weights(g, model.fetch_names) if float_conv_weights else ()
    scaled_convs = fold_input_scales(g) if input_scales else ()
    nodes, initializers = _prune(g.nodes, g.initializers, model.fetch_names)
    inputs = [_value_info(g, n, "batch") for n in model.feed_names]
    outputs = [_value_info(g, n, "batch") for n in model.fetch_names]
    graph = onnx.helper.make_graph(nodes, name, inputs, outputs, initializer=initializers)
    return graph, tuple(g.written_observers), float_convs, scaled_convs


def _write_atomic(data: bytes, target: Path) -> None:
    handle, staging = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(staging, target)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def _export(model_dir, output_path, *, require_quantized, opset, observers, fold, model_filename, params_filename,
            activation_type="int8", weight_type="int8", round_float_readers=False, fold_input_affine=False,
            float_conv_weights=False, input_scales=False):
    onnx = require_onnx()
    _check_observers(observers)
    _check_round_float_readers(round_float_readers)
    for field, value in (("float_conv_weights", float_conv_weights), ("fold_input_scales", input_scales)):
        if not isinstance(value, bool):
            raise ConfigError(f"{field} must be True or False, got {value!r}")
    _check_storage("activation_type", activation_type)
    _check_storage("weight_type", weight_type)
    opset = _check_opset(opset)
    model = load_quantized_model(model_dir, model_filename=model_filename, params_filename=params_filename)
    target = _check_output(output_path, model)
    with legacy_ir():
        block = model.program.global_block()
        scales = read_qdq_scales(model.program, model.scope)
        if require_quantized and not scales:
            found = sorted({op.type for op in block.ops if op.type.startswith("fake_")})
            hint = f" (it has old-format ops {found}: quantize with onnx_format=True)" if found else ""
            raise ProgramStateError(f"model {str(model.model_file)!r} has no quantize_linear/dequantize_linear op"
                                    f"{hint}; export_onnx needs a model saved by quant_post or convert")
        _check_supported(block)
        _warn_saturating_pairs(scales, activation_type, weight_type)
        rounded = _apply_rounded_readers(model.program, round_float_readers)
        if fold_input_affine:
            import paddle

            from ..passes.input_affine import fold_input_affine as fold_affine_inputs

            fold_affine_inputs(model.program, model.scope, paddle.CPUPlace())  # the loaded copy, never the files
        graph, written, float_convs, scaled_convs = _build_graph(
            onnx, model, scales, observers=observers, fold=fold, name=Path(model.model_file).stem,
            activation_type=activation_type, weight_type=weight_type, opset=opset,
            float_conv_weights=float_conv_weights, input_scales=input_scales)
    opsets = [onnx.helper.make_opsetid("", opset)]
    # the oldest IR that carries the opset, so older onnxruntime releases load the file too
    proto = onnx.helper.make_model(graph, opset_imports=opsets, producer_name="paddle_quant",
                                   ir_version=onnx.helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(proto)
    _write_atomic(proto.SerializeToString(), target)
    return _result(target, opset, scales, written, model, rounded, float_convs, scaled_convs)


U8S8_WITHOUT_VNNI_WARNING = (
    "export_onnx: %s stored uint8 beside int8 weights take onnxruntime's u8s8 kernels, whose 16-bit pair sums "
    "saturate on a CPU without VNNI/AMX like this one (a relu -> conv net: 5.8 output steps from the simulation); "
    "to run the model here as simulated pass weight_type='uint8' (default_weight_type() picks it), for a VNNI/AMX "
    "server keep 'int8' (docs/deploy_onnx.md)")
"""Logged when an export writes u8 activations beside int8 weights on a CPU without an int8 dot product."""


def _warn_saturating_pairs(scales, activation_type: str, weight_type: str) -> None:
    """Warn when the export pairs u8 activations with int8 weights and this CPU runs u8s8 with saturation."""
    if weight_type != "int8":
        return
    unsigned = [s.name for s in scales.values() if s.unsigned]
    if activation_type != "uint8" and not unsigned:
        return
    from ..deploy.cpu import int8_dot_product

    if not int8_dot_product():
        what = "activations" if activation_type == "uint8" else f"the relu outputs on oneDNN's u8 grid {unsigned[:5]}"
        _logger.warning(U8S8_WITHOUT_VNNI_WARNING, what)


def _result(target, opset, scales, observers, model, rounded=(), float_convs=(), scaled_convs=()) -> ONNXExportResult:
    """The ExportResult; ``observers`` are the observer tensors actually written as QDQ pairs, ``rounded`` the
    tensors whose float readers read their rounded copy, ``float_convs`` the convs given float weights,
    ``scaled_convs`` those whose input scale was folded."""
    def names(kind):
        return tuple(s.name for s in scales.values() if s.kind == kind)
    return ONNXExportResult(path=target, opset=opset, weights=names("weight"), activations=names("activation"),
                            observers=tuple(observers),
                            inputs=model.feed_names, outputs=model.fetch_names, rounded_readers=tuple(rounded),
                            float_conv_weights=tuple(float_convs), folded_input_scales=tuple(scaled_convs))


def export_onnx(quantized_model_dir, output_path, *, opset: int = DEFAULT_OPSET,
                observers: Literal["none", "int8_ops", "all"] | Collection[str] = "none", fold_conv: bool = True,
                activation_type: Literal["int8", "uint8"] = "int8", weight_type: Literal["int8", "uint8"] = "int8",
                round_float_readers: bool | Collection[str] = False, float_conv_weights: bool = False,
                fold_input_scales: bool = False,
                model_filename: str | None = None, params_filename: str | None = None) -> ONNXExportResult:
    """Write a quantized Paddle inference model as an int8 QDQ ONNX model.

    The quantized model alone is enough: it holds the whole graph, the int8 weights and every
    scale, so no fp32 model is needed (a separate fp32 export would have to be matched to it
    tensor by tensor). Weights become int8 initializers read by ``DequantizeLinear`` (per channel
    with ``axis`` = Paddle's ``quant_axis``); quantized activations become
    ``QuantizeLinear``/``DequantizeLinear`` pairs with ``s = scale / 127``.

    Args:
        quantized_model_dir: folder written by ``quant_post`` or saved after ``convert`` (QDQ format).
        output_path: the ``.onnx`` file to write (atomically: a temporary file renamed into place).
            It may not be one of the input files.
        opset: ONNX opset, at least :data:`DEFAULT_OPSET`.
        observers: where the output-scale observers (identities in the Paddle Executor) become
            real QDQ pairs. ``'none'`` (default): nowhere, so the graph computes what the Paddle
            Executor computes. ``'int8_ops'``: on the outputs of ops that read an int8 weight (after
            folding, the end of the conv-bias-batch_norm chain; not where a relu whose output is
            quantized on the u8 grid alone reads it: onnxruntime fuses that conv without, see
            ``_fused_through_relu``), which onnxruntime needs to run them
            as QLinearConv/QLinearMatMul (faster) but which rounds those outputs to the observer
            scale (measured: PP-OCR cls 92.5 % against 95.7 % with ``'none'``, see
            docs/deploy_onnx.md). ``'all'``: everywhere. A list/tuple/set of tensor names: those
            observers only (each must have an observer in the model and be in the exported graph),
            for requantizing only the outputs whose rounding the model tolerates (chosen by
            :func:`paddle_quant.export.onnx_requantize.select_requantized_outputs`); ``verify`` makes
            the same observers real quantizers in its simulation.
        fold_conv: fold the bias ``elementwise_add``, ``batch_norm`` and the ``elementwise_mul`` /
            ``elementwise_add`` by a parameter (one value or one per channel) that follow a conv2d into
            its weight and bias, as Paddle Inference does before running int8: the int8 weight
            values stay (a negative factor flips their sign), the channel scales are
            multiplied by ``|gamma / sqrt(var + eps)|`` and the affine factors, the bias is stored int32 at scale
            ``x_scale * w_scale`` where a QuantizeLinear follows the conv (float32 elsewhere) and
            observer pairs between the folded ops are dropped. This is what
            lets onnxruntime run the conv as one QLinearConv. ``False`` keeps every Paddle op.
        activation_type: how quantized activations are stored. ``'int8'`` (zero point 0, Paddle's grid as
            it is) or ``'uint8'`` (zero point 128: the same 256 levels shifted by 128, so every value and
            every rounding is the same). onnxruntime on x86 fuses int8-weight ops into QLinearConv /
            QLinearMatMul more often with uint8 activations (PP-OCRv4 rec with conv outputs quantized:
            24 QLinearConv against 19), its fastest x86 path (u8s8). Tensors a ``deploy_backend='onednn'``
            program rounds on oneDNN's u8 grid (relu outputs, :mod:`paddle_quant.passes.unsigned_grid`) are
            stored uint8 with zero point 0 at ``scale / 255`` either way: the grid the program states.
        weight_type: how int8 weights are stored: ``'int8'`` (zero point 0) or ``'uint8'`` (zero point
            128, the same grid). With uint8 activations and int8 weights onnxruntime's x86 kernels
            multiply u8 by s8 and add pairs of products in 16 bits (``vpmaddubsw``) on CPUs without
            VNNI, which saturates: the fused int8 ops then compute something else than the QDQ graph
            (and the Paddle Executor) says. ``'uint8'`` weights take onnxruntime's u8u8 kernels, which
            widen to 16 bits before multiplying and are exact on every x86 CPU, at some speed cost
            on VNNI CPUs (docs/deploy_onnx.md).
        round_float_readers: whether the ops that read a runtime-quantized tensor in float (a residual add,
            a squeeze-and-excite multiply, an op left in float) read its rounded copy instead, as onnxruntime's
            own quantizer writes (:mod:`paddle_quant.passes.rounded_readers`): ``False`` (default: the graph
            computes what the Paddle Executor computes), ``True`` (every such tensor) or a list/tuple/set of
            tensor names. onnxruntime then fuses a conv whose output a quantizer and a float op both read into
            QLinearConv, and a residual add into QLinearAdd, and drops the layout transposes around them (PP-OCR
            cls: 24 -> 2 transposes, 7 QLinearAdd). The rounded readers change what is computed; ``verify``
            rounds them in its simulation too (it reads which tensors the file reads only through their
            QuantizeLinear).
        float_conv_weights: store the weight of every conv onnxruntime runs in float (no QuantizeLinear after
            it, alone or behind a relu, so no QLinearConv: the outputs ``observers`` leaves unrequantized, most
            convs with ``'none'``) as the float32 values of its int8 grid, computed as onnxruntime's DequantizeLinear
            computes them, instead of int8 + DequantizeLinear (:mod:`paddle_quant.export._onnx_float_convs`).
            The graph computes the same values (bit for bit before onnxruntime optimizes it), but onnxruntime
            pre-packs the weight and runs such a conv on its NCHWc kernels with the activation fused instead of
            dequantizing the weight every run (PP-OCRv4 rec, selected outputs: docs/deploy_onnx.md); those
            weights take 4 bytes per value in the file instead of 1. Default ``False``.
        fold_input_scales: fold the one-value multiply of an affine ``a * h + b`` that a float conv (float32
            weights: not quantized, or given them by ``float_conv_weights``) reads into that conv's weights:
            ``conv(h + b / a, a W)``, exact in real arithmetic even where the conv pads
            (:mod:`paddle_quant.export._onnx_input_scale`); onnxruntime folds neither operand itself. PP-LCNetV3's
            learnable affine before each depthwise conv of PP-OCRv4 rec (docs/deploy_onnx.md). Default ``False``.
        model_filename / params_filename: file names inside the folder when it holds several models.

    Returns:
        ONNXExportResult naming the quantized tensors.

    Raises:
        MissingDependencyError: onnx is not installed.
        ConfigError: a file is missing, an argument is out of range, or output_path is an input.
        ProgramStateError: the model has no QDQ op, has an op type without converter, or a
            quantized tensor ONNX int8 QDQ cannot express (the message names each).
    """
    return _export(quantized_model_dir, output_path, require_quantized=True, opset=opset, observers=observers,
                   fold=fold_conv, model_filename=model_filename, params_filename=params_filename,
                   activation_type=activation_type, weight_type=weight_type, round_float_readers=round_float_readers,
                   float_conv_weights=float_conv_weights, input_scales=fold_input_scales)


def export_float_onnx(model_dir, output_path, *, opset: int = DEFAULT_OPSET, fold_conv: bool = True,
                      fold_input_affine: bool = False, model_filename: str | None = None,
                      params_filename: str | None = None) -> ONNXExportResult:
    """Write an fp32 Paddle inference model as ONNX with the same converter (the baseline for int8).

    Arguments and errors as :func:`export_onnx`, except that a model without quant ops is accepted, and:

    Args:
        fold_input_affine: fold the parameter multiply/add chains an unpadded one-group conv2d reads into that
            conv (:func:`paddle_quant.passes.input_affine.fold_input_affine`, exact in fp32), as
            ``quant_post(fold_input_affine=True)`` does before calibrating: PP-LCNetV3's learnable affine after
            each ``hard_swish`` that feeds a 1x1 conv (12 in PP-OCRv4 rec); and, as ``export_onnx``'s
            ``fold_input_scales``, the one-value multiply of the affine any other conv reads (PP-OCRv4 rec: before
            each depthwise conv). The fp32 baseline of an int8 model quantized so and exported with
            ``fold_input_scales=True``, and the graph to hand another quantizer.
    """
    if not isinstance(fold_input_affine, bool):
        raise ConfigError(f"fold_input_affine must be True or False, got {fold_input_affine!r}")
    return _export(model_dir, output_path, require_quantized=False, opset=opset, observers="none",
                   fold=fold_conv, model_filename=model_filename, params_filename=params_filename,
                   fold_input_affine=fold_input_affine, input_scales=fold_input_affine)
