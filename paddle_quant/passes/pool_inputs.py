"""Run a pool at one scale on both sides, as oneDNN's int8 pool does, in the program itself.

Paddle Inference's oneDNN int8 passes run ``pool2d`` in int8 whenever its output has a scale (a
quantizer or an observer reads it). ``compute_propagate_scales_onednn_pass`` treats the pool as
scale-preserving: the pool's input keeps its own scale if it has one and the output is given that
scale (the output's calibrated scale is dropped); an input without a scale takes the output's.
``cpu_quantize_pass`` then quantizes the input at that scale before pooling. For a max pool
rounding and clipping commute with the max, so only the output's scale matters: where the input
has a scale of its own, oneDNN's output carries it, not the output's calibrated one (2 output steps
on conv -> max pool -> conv, whose pooled maxima calibrate a smaller scale than the signed conv
output). For an average pool every input value is clipped and rounded where the QDQ program
rounds only the average. PP-OCRv4
rec has such a pool at the squeeze of every squeeze-and-excite block: without this pass the
Executor's simulation and an ONNX export of the program read 0.8-6 points of exact match below
the deployed oneDNN model on 1000 lines over five calibration algorithms; with it, within 1 point
(docs/deploy_onnx.md).

This pass writes oneDNN's arithmetic into the program, for every pool whose output is quantized
or observed:

* an average pool reads its input through a new quantize/dequantize pair (``{input}@pool_input``)
  at the input's own scale variable (of its quantizer, or its observer) or, without one, the
  output's;
* when that is the input's scale, the output's quantize/dequantize (or observer) pair reads the
  same scale variable instead of its calibrated one.

The Executor, onnxruntime and oneDNN then run the same arithmetic; the graph oneDNN builds is
unchanged. ``quant_post`` runs it for ``deploy_backend='onednn'``
(:attr:`~paddle_quant.common.backends.BackendProfile.quantize_pool_inputs`). The scale table keeps the
calibrated scales, so re-applying it runs this pass again and gives the same model.

One more oneDNN rule turns the pooled scale into damage: when the pool input is produced by an int8
convolution (through ops oneDNN fuses into it: bias add, batch norm, an activation), oneDNN
requantizes the convolution's output at the pool input's scale, so every reader of that tensor,
not only the pool, sees it clipped at the pooled average's range. On PP-OCR cls with
``output_scales='none'`` the squeeze-and-excite multiply then read clipped features and the
deployed model fell to 54.6 % (fp32 95.3 %; the Executor read 95.4 %). :func:`pool_inputs_to_observe` gives such a tensor an observer
of its own when ``quant_post`` plans (``deploy_backend='onednn'``), so oneDNN requantizes it at its
own calibrated scale instead. It still rounds it there for every reader: the pass makes that
observer pair a rounding quantize/dequantize pair, which then also serves as the pool's input pair
(the squeeze-and-excite multiply of ``tests/passes/test_pool_inputs.py`` read 2.3 % of the output's
range apart from oneDNN with the pair an identity; 3e-7 now).

``float_pools=True`` (``quantize_pool_inputs(..., float_pools=True)``) takes the other way out for an average
pool whose input has no scale of its own: the pool writes a new float variable and an ``assign`` copies it into
the quantized output. ``compute_propagate_scales_onednn_pass`` passes no scale through ``assign``, so the pool's
output, and hence its input, get none, and oneDNN runs the pool in float on the float tensor it reads; only the
pooled values are quantized, by the output's quantizer. Nothing is clipped then, and the program needs no pair
to say so. Which is better is the model's: on PP-OCR cls with conv2d alone quantized it is fp32's accuracy
against 4.75 points under it, on PP-OCRv4 rec with conv2d alone 1.3-4.8 points of exact match below the clipped
pools (``bench/float_pools.py``, docs/ptq.md), so it is an option, off by default.

Not reproduced: oneDNN also rounds a pool's output when only an observer carries its scale (the
observer pair stays an identity here), runs a pool whose output has no scale but whose input has
one in int8, and, with ``output_scales='all'``, rounds other observed tensors its int8 producers
requantize for an int8 reader (docs/deploy.md, "Output scales on oneDNN").
"""

from __future__ import annotations

from dataclasses import dataclass

from ..common import naming
from ..common.program import is_observer, is_persistable, readers_by_var, writer_by_var
from .fold_affine import CONV_TYPES
from .plan import ObservedOutput, QuantPlan
from .quantizers import insert_qdq_pair, qdq_attrs

__all__ = ["ACTIVATIONS", "QuantizedPoolInput", "made_by_quantized_conv", "quantize_pool_inputs",
           "quantized_conv_outputs", "pool_inputs_to_observe", "run_in_float", "tensor_operand"]

ACTIVATIONS = ("relu", "relu6", "hard_swish", "swish", "hard_sigmoid", "sigmoid", "leaky_relu", "gelu", "mish",
                "abs", "clip", "sqrt", "tanh")
"""Activations oneDNN fuses into the convolution before them (``conv_activation_onednn_fuse_pass``)."""


@dataclass(frozen=True)
class QuantizedPoolInput:
    """One pool changed: its output, its input, the scale variable both sides now use (None: the pool runs in
    float, ``float_pools``), and whether the output's own scale was replaced by it."""

    pool_output: str
    pool_input: str
    scale: str | None
    output_rescaled: bool


def _quantizer_of(readers, name: str):
    """The ``quantize_linear`` (quantizer or observer) reading ``name``, or None."""
    quantizers = [op for op in readers.get(name, []) if op.type == "quantize_linear"]
    return quantizers[0] if quantizers else None


def _input_scale(readers, writers, pool):
    """The scale variable of the pool input's own quantizer or observer, and whether the pool already
    reads it through a quantizer; (None, False) when the input has no scale."""
    producer = writers.get(pool.input("X")[0])
    if producer is not None and producer.type == "dequantize_linear":
        return producer.input("Scale")[0], not is_observer(producer)
    quantizer = _quantizer_of(readers, pool.input("X")[0])
    return (quantizer.input("Scale")[0] if quantizer is not None else None), False


def _rescale_pair(readers, quantizer, scale: str) -> None:
    """Point a quantize_linear and the dequantize_linear after it at the scale variable ``scale``."""
    pair = [quantizer] + [op for op in readers.get(quantizer.output("Y")[0], []) if op.type == "dequantize_linear"]
    for op in pair:
        op._rename_input(op.input("Scale")[0], scale)


def _is_average_pool(op) -> bool:
    return op.type == "pool2d" and op.attr("pooling_type") == "avg"


def _insert_pair(block, scope, place, pool, scale: str, bits: int) -> None:
    source = pool.input("X")[0]
    dequantized = insert_qdq_pair(block, scope, place, list(block.ops).index(pool), source,
                                  naming.pool_input(source), scale, qdq_attrs(bits, -1))
    pool._rename_input(source, dequantized)


def quantize_pool_inputs(program, scope, place, *, float_pools: bool = False) -> list[QuantizedPoolInput]:
    """Make every ``pool2d`` whose output is quantized or observed run at one scale, an average pool reading
    its input through a quantizer (see the module docstring).

    Args:
        program: legacy-IR QDQ inference program (as ``quant_post`` saves it); changed in place.
        scope: the scope holding its scales; the new zero points are written to it.
        place: where to write them.
        float_pools: an average pool whose input has no scale of its own writes its output through an
            ``assign`` instead, so that oneDNN runs it in float (:func:`run_in_float`); its
            :class:`QuantizedPoolInput` then has ``scale`` None.

    Returns:
        One :class:`QuantizedPoolInput` per pool changed, in program order.
    """
    block = program.global_block()
    readers, writers = readers_by_var(block), writer_by_var(block)
    changed = []
    int8_convs = quantized_conv_outputs(block, writers)
    for pool in [op for op in block.ops if op.type == "pool2d"]:
        output, source = pool.output("Out")[0], pool.input("X")[0]
        output_quantizer = _quantizer_of(readers, output)
        if output_quantizer is None:
            continue
        own_scale, quantized = _input_scale(readers, writers, pool)
        if not quantized and _is_average_pool(pool) and _requantized_observer(block, writers, pool, int8_convs):
            quantized = True
        if float_pools and own_scale is None and _is_average_pool(pool):
            run_in_float(block, pool)
            changed.append(QuantizedPoolInput(output, source, None, False))
            continue
        scale = own_scale or output_quantizer.input("Scale")[0]
        rescale = scale != output_quantizer.input("Scale")[0]
        needs_pair = _is_average_pool(pool) and not quantized  # rounding and clipping commute with max
        if not needs_pair and not rescale:
            continue
        if needs_pair:
            _insert_pair(block, scope, place, pool, scale, output_quantizer.attr("bit_length"))
        if rescale:
            _rescale_pair(readers, output_quantizer, scale)
        changed.append(QuantizedPoolInput(output, source, scale, rescale))
    program._sync_with_cpp()
    return changed


def run_in_float(block, pool) -> None:
    """Have ``pool`` write a new float variable that an ``assign`` copies into its output: oneDNN's int8 passes
    give a scale to no input of a pool whose output has none (``assign`` passes no scale on), so the pool runs in
    float on the float tensor it reads, and only the pooled values are quantized, where the output's quantizer
    reads them."""
    output = block.var(pool.output("Out")[0])
    pooled = block.create_var(name=naming.float_pool(output.name), dtype=output.dtype, shape=output.shape)
    pool._rename_output(output.name, pooled.name)
    block._insert_op(list(block.ops).index(pool) + 1, type="assign", inputs={"X": [pooled]},
                     outputs={"Out": [output]})


def quantized_conv_outputs(block, writers: dict) -> set[str]:
    """Outputs of the convolutions of a QDQ ``block`` whose input is quantized (int8 in oneDNN)."""
    outputs = set()
    for op in block.ops:
        if op.type in CONV_TYPES:
            producer = writers.get(op.input("Input")[0])
            if producer is not None and producer.type == "dequantize_linear" and not is_observer(producer):
                outputs.add(op.output("Output")[0])
    return outputs


def _requantized_observer(block, writers: dict, pool, int8_convs: set[str]) -> bool:
    """When ``pool`` reads an observer pair of a tensor an int8 convolution writes (the observer
    :func:`pool_inputs_to_observe` planned), make that pair round: oneDNN requantizes the convolution's output
    at the observer's scale for every reader, not only for the pool. True when done."""
    dequantizer = writers.get(pool.input("X")[0])
    if dequantizer is None or dequantizer.type != "dequantize_linear" or not is_observer(dequantizer):
        return False
    quantizer = writers.get(dequantizer.input("X")[0])
    if quantizer is None or quantizer.type != "quantize_linear":
        return False
    readers = readers_by_var(block)  # afresh: the pairs inserted for earlier pools moved the op indices
    indices = {name: index for index, op in enumerate(block.ops) for name in op.output_arg_names}
    if not made_by_quantized_conv(block, quantizer.input("X")[0], indices, readers, int8_convs):
        return False
    for op in (quantizer, dequantizer):
        op._set_attr("only_observer", False)
    return True


def made_by_quantized_conv(block, name: str, writers: dict, readers: dict, int8_convs: set[str]) -> bool:
    """True when ``name`` is the output of a quantized convolution as oneDNN fuses it: conv, then ops on one
    input with a parameter (bias add, batch norm, a folded multiply/add), then at most one activation, each
    intermediate read by the next op alone (``writers``: var name -> index of the op writing it;
    ``int8_convs``: the quantized convolutions' outputs)."""
    op = block.ops[writers[name]] if name in writers else None
    if op is not None and op.type in ACTIVATIONS:
        op = _single_reader_producer(block, op.input("X")[0], writers, readers)
    while op is not None and op.type not in CONV_TYPES:
        source = tensor_operand(block, op)
        op = _single_reader_producer(block, source, writers, readers) if source is not None else None
    return op is not None and op.output("Output")[0] in int8_convs


def _single_reader_producer(block, name: str, writers: dict, readers: dict):
    """The op writing ``name`` when ``name`` has exactly one reader, else None; past observer pairs
    (``output_scales='all'``), which oneDNN drops before it fuses the chain."""
    while name in writers and len(readers.get(name, [])) == 1:
        op = block.ops[writers[name]]
        if not is_observer(op):  # only QDQ ops carry only_observer
            return op
        name = op.input("X")[0]
    return None


def tensor_operand(block, op):
    """The tensor a batch norm or a parameter multiply/add applies to, or None for any other op."""
    if op.type == "batch_norm":
        return op.input("X")[0]
    if op.type not in ("elementwise_add", "elementwise_mul"):
        return None
    operands = [op.input("X")[0], op.input("Y")[0]]
    tensors = [n for n in operands if not is_persistable(block, n)]
    return tensors[0] if len(tensors) == 1 else None


def pool_inputs_to_observe(block, plan: QuantPlan) -> tuple[ObservedOutput, ...]:
    """Observers to add to ``plan`` (of the float program ``block``) for oneDNN: the input of every average
    pool whose output is quantized or observed, when that input has no scale of its own and is produced by a
    quantized convolution (see the module docstring)."""
    scaled = {t.var for t in plan.tensors} | {o.var for o in plan.observers}
    int8_convs = {block.ops[op.index].output("Output")[0] for op in plan.ops  # int8 in oneDNN: the input is
                  if op.op_type in CONV_TYPES and op.reads_quantized("Input")}  # quantized
    readers = readers_by_var(block)
    writers = {name: index for index, op in enumerate(block.ops) for name in op.output_arg_names}
    wanted = []
    for op in block.ops:
        if not _is_average_pool(op) or op.output("Out")[0] not in scaled or op.input("X")[0] in scaled:
            continue
        source = op.input("X")[0]
        if made_by_quantized_conv(block, source, writers, readers, int8_convs):
            wanted.append(ObservedOutput(source, writers[source], runtime_input=True))
    return tuple(dict.fromkeys(wanted))
