"""PP-OCR cls: what an unsigned grid on the hard_swish outputs would give, deployed on oneDNN int8, and what it costs.

Issue 15's cls bar (the default ``quant_post`` call within 0.5 point of fp32, deployed) is missed by about
0.9 point on 10000 images (bench/cls_default_call.py). Paddle Inference's oneDNN int8 stores a relu output as
u8 (255 levels over its range) but every other tensor as s8 (127 levels each side); a ``hard_swish`` output lies
in ``[-0.375, max]``, so half of its grid is spent on a sliver. This bench measures the lever, outside the
product: it rewrites the fp32 model exactly so that oneDNN stores those tensors u8, then runs ``quant_post`` on it.

The rewrite, per conv (``conv2d``, ``depthwise_conv2d``) whose input is bounded below by ``-0.375`` (a
``hard_swish`` output, or an average pool or a ``[0, 1]``-gate multiply of one): the conv reads
``relu(x + 0.375)`` instead of ``x`` (the relu changes nothing; it is the op oneDNN marks unsigned), its output
is corrected by ``0.375 * sum(W)`` per output channel in the batch norm or bias add after it, and a padded conv
reads the shifted tensor padded with 0.375 (``unsqueeze2`` / ``pad3d`` / ``squeeze2``, padding then removed from
the conv: Paddle's 4-D ``pad`` op crashes Paddle Inference's IR passes). The rewritten fp32 model computes the
same outputs (printed: the largest difference from the shipped model on oneDNN fp32).

For comparison, ``9bit`` (the Executor only): the shipped model's int8 program with the quantize pairs of those
tensors on a 9-bit grid at the same scale, the resolution a u8 grid gives them; ``dw_float``: the shipped
model's int8 program with the quantize pairs on the hard_swish inputs of its padded depthwise convs removed,
so that oneDNN runs those convs in float (no shift needed for them).

Prints, per variant, deployed (oneDNN int8) and simulated (the Executor) accuracy against the shipped fp32 model,
and the latency per batch of 8 on oneDNN (fp32 and int8, shipped and rewritten, medians of interleaved runs).

    PYTHONPATH=. .venv/bin/python bench/cls_unsigned_shift.py [--variants default,onednn_plain]
                                   [--eval-images 10000] [--batches 10] [--calibration-seed 0]
                                   [--unpadded-only] [--repeats 40]
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "demos"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from paddle_quant.common.native_output import ignore_paddle_import_notes  # noqa: E402

ignore_paddle_import_notes()

import paddle  # noqa: E402

import cls_default_call as default_call  # noqa: E402 (bench/cls_default_call.py)
import ppocr  # noqa: E402 (demos/ppocr.py)
from paddle_quant.common.model_files import model_files  # noqa: E402
from paddle_quant.common.program import (legacy_ir, read_tensor, readers_by_var, write_tensor,  # noqa: E402
                                         writer_by_var)
from paddle_quant.deploy.runtimes import make_runner  # noqa: E402
from paddle_quant.passes.unsigned_grid import through_qdq  # noqa: E402

SHIFT = 0.375
"""``-min hard_swish(x) = 3**2 / (4 * 6)`` (at ``x = -1.5``, Paddle's default threshold 6, scale 6, offset 3)."""
BOUNDED_THROUGH = ("pool2d", "elementwise_mul", "quantize_linear", "dequantize_linear")
"""Ops that keep a tensor above ``-0.375`` when it was (an average or max pool; a multiply by a ``[0, 1]`` gate;
a quantize/dequantize pair of an int8 program, which the ``9bit`` treatment looks through: its rounding may
move the bound by half a step, which matters there only for choosing the tensors)."""
GATES = ("hard_sigmoid", "sigmoid")
CONV_TYPES = ("conv2d", "depthwise_conv2d")


def _bounded_below(writers, name: str) -> bool:
    """Whether tensor ``name`` is at least ``-SHIFT``: a hard_swish output, or such through pools / gate multiplies."""
    op = writers.get(name)
    while op is not None and op.type in BOUNDED_THROUGH:
        if op.type == "elementwise_mul":
            gate = writers.get(through_qdq(writers, op.input("Y")[0]))
            if gate is None or gate.type not in GATES:
                return False
        op = writers.get(op.input("X")[0])
    return op is not None and op.type == "hard_swish" and (op.attr("threshold"), op.attr("scale"),
                                                          op.attr("offset")) == (6.0, 6.0, 3.0)


def _correct_bias(block, scope, place, conv, delta) -> bool:
    """Subtract ``delta`` (one per output channel) from ``conv``'s output in the batch norm or bias add after it."""
    readers = readers_by_var(block).get(conv.output("Output")[0], [])
    if len(readers) != 1:
        return False
    after = readers[0]
    if after.type == "batch_norm":
        name, sign = after.input("Mean")[0], 1.0  # bn(z - d) with mean m == bn(z) with mean m + d
    elif after.type == "elementwise_add" and block.var(after.input("Y")[0]).persistable:
        name, sign = after.input("Y")[0], -1.0
    else:
        return False
    write_tensor(scope, place, name, (read_tensor(scope, name) + sign * delta).astype(np.float32))
    return True


def _insert(block, index, op_type, inputs, output, attrs, like):
    out = block.create_var(name=output, shape=like.shape, dtype=like.dtype)
    extra = {}
    if op_type in ("unsqueeze2", "squeeze2"):
        extra = {"XShape": [block.create_var(name=output + "@xshape", dtype=like.dtype).name]}
    block._insert_op(index, type=op_type, inputs=inputs, outputs={"Out": [out.name], **extra}, attrs=attrs)
    return out.name


def shift_to_unsigned(block, scope, place, unpadded_only: bool) -> int:
    """Rewrite ``block`` in place (see the module docstring); returns the number of convs rewritten."""
    rewritten, index = 0, 0
    while index < len(block.ops):
        conv = block.ops[index]
        index += 1
        if conv.type not in CONV_TYPES or conv.attr("data_format") not in ("NCHW", "AnyLayout"):
            continue
        x = conv.input("Input")[0]
        pads = list(conv.attr("paddings"))
        if not _bounded_below(writer_by_var(block), x) or (unpadded_only and any(pads)) or \
                conv.attr("padding_algorithm") != "EXPLICIT" or len(pads) != 2:
            continue
        weight = read_tensor(scope, conv.input("Filter")[0]).astype(np.float64)
        if not _correct_bias(block, scope, place, conv, SHIFT * weight.sum(axis=(1, 2, 3))):
            continue
        at, like, tag = index - 1, block.var(x), f"{x}@u8_{rewritten}"
        current = _insert(block, at, "scale", {"X": [x]}, tag + "_shift",
                          {"scale": 1.0, "bias": SHIFT, "bias_after_scale": True}, like)
        steps = 1
        if any(pads):
            current = _insert(block, at + 1, "unsqueeze2", {"X": [current]}, tag + "_5d", {"axes": [2]}, like)
            current = _insert(block, at + 2, "pad3d", {"X": [current]}, tag + "_pad5d",
                              {"paddings": [pads[1], pads[1], pads[0], pads[0], 0, 0], "mode": "constant",
                               "value": SHIFT, "data_format": "NCDHW"}, like)
            current = _insert(block, at + 3, "squeeze2", {"X": [current]}, tag + "_pad", {"axes": [2]}, like)
            conv._set_attr("paddings", [0, 0])
            steps = 4
        current = _insert(block, at + steps, "relu", {"X": [current]}, tag, {}, like)
        conv._rename_input(x, current)
        index += steps + 1
        rewritten += 1
    return rewritten


def _edit_model(source: Path, target: Path, edit) -> int:
    """Load the inference model at path prefix ``source``, call ``edit(block, scope)`` on its program (returns a
    count), save the result at path prefix ``target``; returns the count. The files at ``source`` stay as they are."""
    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        program, feeds, fetches = paddle.static.load_inference_model(str(source), exe)
        block = program.global_block()
        count = edit(block, scope)
        paddle.static.save_inference_model(str(target), [block.var(f) for f in feeds], fetches, exe,
                                           program=program)
    return count


def write_shifted_model(cls_dir: Path, out: Path, unpadded_only: bool) -> int:
    return _edit_model(cls_dir / "inference", out / "inference",
                       lambda block, scope: shift_to_unsigned(block, scope, paddle.CPUPlace(), unpadded_only))


def _hard_swish_depthwise_inputs(block) -> set:
    """The hard_swish outputs (before their quantize pairs) that padded depthwise convs read."""
    writers, found = writer_by_var(block), set()
    for op in block.ops:
        if op.type != "depthwise_conv2d" or not any(op.attr("paddings")):
            continue
        name = through_qdq(writers, op.input("Input")[0])
        if writers.get(name) is not None and writers[name].type == "hard_swish":
            found.add(name)
    return found


def _edit_quantized(quantized: Path, out: Path, edit) -> int:
    """:func:`_edit_model` on the int8 model ``quant_post`` wrote to the folder ``quantized``, saved to ``out``;
    ``edit(block)``."""
    model, params = model_files(quantized)
    assert params == model.with_suffix(".pdiparams"), params  # quant_post writes model.pdmodel / .pdiparams
    return _edit_model(model.with_suffix(""), out / "model", lambda block, scope: edit(block))


def _remove_hard_swish_depthwise_quantizers(block) -> int:
    removed = 0
    for name in _hard_swish_depthwise_inputs(block):
        for quantize in [op for op in readers_by_var(block)[name] if op.type == "quantize_linear"]:
            for dequantize in readers_by_var(block).get(quantize.output("Y")[0], []):
                for reader in readers_by_var(block).get(dequantize.output("Y")[0], []):
                    reader._rename_input(dequantize.output("Y")[0], name)
                block._remove_op(list(block.ops).index(dequantize))
            block._remove_op(list(block.ops).index(quantize))
            removed += 1
    return removed


def write_float_depthwise_model(quantized: Path, out: Path) -> int:
    """``quantized`` with the quantize/dequantize pairs on the hard_swish inputs of its padded depthwise convs
    removed (the convs then read the float tensor, and oneDNN runs them in float); returns the pairs removed."""
    return _edit_quantized(quantized, out, _remove_hard_swish_depthwise_quantizers)


def _widen_bounded_grids(block) -> int:
    writers, changed = writer_by_var(block), 0
    for op in block.ops:
        if op.type in ("quantize_linear", "dequantize_linear") and \
                _bounded_below(writers, through_qdq(writers, op.input("X")[0])):
            op._set_attr("qmin", -255)
            op._set_attr("qmax", 255)
            changed += 1
    return changed


def write_wider_grid_model(quantized: Path, out: Path) -> int:
    """``quantized`` with the quantize/dequantize ops of tensors at least ``-SHIFT`` (a hard_swish output, or such
    through pools / gate multiplies) on a 9-bit grid (``qmin=-255, qmax=255`` at the same scale): the resolution
    a u8 grid would give them, for the Executor only (oneDNN reads ``bit_length``); returns the ops changed."""
    return _edit_quantized(quantized, out, _widen_bounded_grids)


def latencies(models: dict, images, repeats: int) -> dict:
    """Median ms per batch of 8 of each ``{name: (runtime, files)}``, run interleaved."""
    runners = {name: make_runner(runtime, *files, threads=1) for name, (runtime, files) in models.items()}
    feed = images[:default_call.BATCH_SIZE]
    times = {name: [] for name in runners}
    for repeat in range(repeats + 5):
        for name, runner in runners.items():
            start = time.perf_counter()
            runner.run({runner.input_names[0]: feed})
            if repeat >= 5:
                times[name].append(1000.0 * (time.perf_counter() - start))
    return {name: float(np.median(values)) for name, values in times.items()}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="default,onednn_plain",
                        help=f"comma-separated quant_post settings of bench/cls_default_call.py, of "
                             f"{sorted(default_call.VARIANTS)}")
    parser.add_argument("--eval-images", type=int, default=10000)
    parser.add_argument("--batches", type=int, default=10, help="calibration batches of 8")
    parser.add_argument("--calibration-seed", type=int, default=0)
    parser.add_argument("--unpadded-only", action="store_true", help="leave the padded (depthwise) convs alone")
    parser.add_argument("--repeats", type=int, default=40, help="timed runs per model")
    args = parser.parse_args(argv)
    args.variants = args.variants.split(",")
    unknown = sorted(set(args.variants) - set(default_call.VARIANTS))
    if unknown or args.eval_images < default_call.BATCH_SIZE or args.batches < 1 or args.repeats < 1:
        parser.error(f"unknown variants {unknown}; need --eval-images >= {default_call.BATCH_SIZE}, --batches >= 1, "
                     "--repeats >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    cls_dir, images, labels = default_call.evaluation_set(args.eval_images)
    shipped = (cls_dir / "inference.pdmodel", cls_dir / "inference.pdiparams")
    shipped_fp32 = default_call.predictions("paddle_fp32", shipped, images, 1)
    fp32_right = shipped_fp32 == labels
    print(f"cls, {len(labels)} images; fp32 (oneDNN fp32) {100.0 * fp32_right.mean():.2f} %", flush=True)
    with tempfile.TemporaryDirectory(prefix="cls_unsigned_shift_") as temp, legacy_ir():
        work = Path(temp)
        count = write_shifted_model(cls_dir, work / "fp32", args.unpadded_only)
        shifted = model_files(work / "fp32", "inference.pdmodel", "inference.pdiparams")
        feed = images[:default_call.BATCH_SIZE]
        runners = [make_runner("paddle_fp32", *files, threads=1) for files in (shipped, shifted)]
        outputs = [runner.run({runner.input_names[0]: feed})[0] for runner in runners]
        print(f"{count} conv inputs shifted; fp32 rewritten vs shipped on oneDNN fp32: largest difference "
              f"{np.abs(outputs[0] - outputs[1]).max():.2e}", flush=True)
        timed = {"fp32 shipped": ("paddle_fp32", shipped), "fp32 rewritten": ("paddle_fp32", shifted)}
        for name in args.variants:
            for model, source in (("shipped", cls_dir), ("rewritten", work / "fp32"), ("dw_float", None),
                                  ("9bit", None)):
                out = work / f"{name}_{model}"
                if model == "9bit":
                    changed = write_wider_grid_model(work / f"{name}_shipped", out)
                    predicted = default_call.predictions("executor", model_files(out), images, 1)
                    print(default_call.row(f"{name} 9bit", "simulated", predicted, fp32_right, labels) +
                          f" ({changed} quantize/dequantize ops on the 9-bit grid)", flush=True)
                    continue
                if source is None:
                    removed = write_float_depthwise_model(work / f"{name}_shipped", out)
                    print(f"{name} dw_float: the shipped model's int8 program with {removed} quantize pairs on "
                          "hard_swish inputs of padded depthwise convs removed", flush=True)
                else:
                    default_call.quantize(source, out, default_call.VARIANTS[name], args.batches,
                                          args.calibration_seed)
                files = model_files(out)
                timed[f"{name} int8 {model}"] = ("onednn", files)
                for runtime in ("onednn", "executor"):
                    predicted = default_call.predictions(runtime, files, images, 1)
                    print(default_call.row(f"{name} {model}", "deployed" if runtime == "onednn" else "simulated",
                                           predicted, fp32_right, labels), flush=True)
        for name, ms in latencies(timed, images, args.repeats).items():
            print(f"latency {name:32s} {ms:7.2f} ms per batch of 8 (oneDNN, 1 thread)", flush=True)


if __name__ == "__main__":
    main()
