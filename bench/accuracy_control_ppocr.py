"""quant_post with accuracy_control on the PP-OCR models: what the search chooses, its metric and its cost (issue 15).

PP-OCRv4 rec quantized as PaddleSlim's docs show (``quantizable_op_type=["conv2d", "depthwise_conv2d",
"mul", "matmul_v2"]``, 10 calibration batches of 8 rendered lines, ``deploy_backend="onednn"``), with
``AccuracyControl(metric=exact match, eval_batches=<--eval-lines> other rendered lines, max_drop=<--max-drop>,
runtime=<--runtime>)``; cls with the default op types and accuracy. Prints every candidate the search measured,
the chosen settings and skip list, fp32 vs int8 metric on the runtime and beside it the simulated (Executor)
metric of the written model, ``target_met``, the search time and the int8 / fp32 latency at batch 8 on oneDNN.

    python bench/accuracy_control_ppocr.py [--models rec,cls] [--max-drop 0.5] [--eval-lines 300]
                                           [--runtime onednn|executor] [--algos hist,avg,emd,mse] [--workdir DIR]
                                           [--skip-search-batches 8] [--onednn-cpu auto|vnni|avx2]
                                           [--[no-]fold-input-affine] [--float-pools] [--ops conv2d,...]

On a CPU without VNNI/AMX oneDNN's int8 differs from the simulation (docs/deploy.md), so ``--runtime onednn``
searches on numbers that do not transfer to other CPUs; the bench says which CPU it ran on.
"""

import argparse
import logging
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "demos"))

from paddle_quant.common.native_output import ignore_paddle_import_notes  # noqa: E402

ignore_paddle_import_notes()

import numpy as np  # noqa: E402
import paddle  # noqa: E402

import paddle_quant as quant  # noqa: E402
import ppocr  # noqa: E402 (demos/ppocr.py)
from paddle_quant.deploy.cpu import int8_dot_product  # noqa: E402
from paddle_quant.deploy.runtimes import make_runner  # noqa: E402

REC_OPS = ["conv2d", "depthwise_conv2d", "mul", "matmul_v2"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="rec,cls")
    parser.add_argument("--max-drop", type=float, default=0.5, help="points of exact match / accuracy")
    parser.add_argument("--eval-lines", type=int, default=300)
    parser.add_argument("--runtime", choices=("onednn", "executor"), default="onednn")
    parser.add_argument("--algos", default="hist,avg,emd,mse")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-search-batches", type=int, default=8,
                        help="eval batches of 8 the skip-list search ranks layers on (each count of layers in float: all)")
    parser.add_argument("--onednn-cpu", default=None, choices=("auto", "vnni", "avx2"),
                        help="quant_post onednn_cpu (default unset: built for VNNI/AMX); avx2 on a CPU without VNNI")
    parser.add_argument("--fold-input-affine", action=argparse.BooleanOptionalAction, default=None,
                        help="quant_post fold_input_affine=True / False for every candidate (rec: faster int8); "
                             "unset: the onednn backend's default (on)")
    parser.add_argument("--ops", default=None,
                        help="comma-separated quantizable_op_type for every model (default: rec PaddleSlim's four, "
                             "cls quant_post's default)")
    parser.add_argument("--float-pools", action="store_true",
                        help="quant_post float_pools=True for every candidate (average pools reading a float tensor "
                             "run in float; docs/ptq.md)")
    parser.add_argument("--workdir", default=None, help="where the int8 models go (default: a temporary folder)")
    return parser.parse_args(argv)


def _eval_set(kind, lines):
    if kind == "rec":
        rendered = ppocr.render_lines(lines, seed=1000)
        images, labels = [image for image, _ in rendered], [label for _, label in rendered]
        batch = ppocr.rec_batch(images)
    else:
        images, labels = ppocr.cls_dataset(lines, 1000)
        batch = ppocr.cls_batch(images)
    name = ppocr.input_name(kind)
    return [{name: batch[i:i + 8]} for i in range(0, len(batch), 8)], labels


def _metric(kind, labels):
    charset = ppocr.load_charset(ppocr.fetch_models()["rec_dict"]) if kind == "rec" else None

    # Both score any first batches of the eval set (the skip-list search ranks on --skip-search-batches).
    def exact_match(outputs):
        probs = np.concatenate([out[0] for out in outputs])
        return ppocr.rec_metrics(ppocr.ctc_decode(probs, charset), labels[:len(probs)])["exact"]

    def accuracy(outputs):
        probs = np.concatenate([out[0] for out in outputs])
        return ppocr.cls_accuracy(probs, labels[:len(probs)])

    return exact_match if kind == "rec" else accuracy


def run_model(kind, args, workdir):
    models = ppocr.fetch_models()
    eval_batches, labels = _eval_set(kind, args.eval_lines)
    metric = _metric(kind, labels)
    control = quant.AccuracyControl(metric=metric, eval_batches=eval_batches, max_drop=args.max_drop,
                                    runtime=args.runtime, algos=tuple(args.algos.split(",")), threads=args.threads,
                                    skip_search_batches=args.skip_search_batches)
    feeds = list(ppocr.calibration_feeds(kind, 10, 8, 0))
    options = {"quantizable_op_type": REC_OPS} if kind == "rec" else {}
    if args.ops:
        options["quantizable_op_type"] = args.ops.split(",")
    if args.fold_input_affine is not None:
        options["fold_input_affine"] = args.fold_input_affine
    if args.float_pools:
        options["float_pools"] = True
    started = time.perf_counter()
    result = quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(models[kind]), os.path.join(workdir, kind),
                              data_loader=lambda: iter(feeds), batch_nums=10, deploy_backend="onednn",
                              onednn_cpu=args.onednn_cpu, accuracy_control=control, **options)
    seconds = time.perf_counter() - started
    found = result.accuracy_control
    print(f"\n{kind}: fp32 {found.fp32_metric:.2f} on {found.runtime}; target drop <= {found.max_drop}")
    for index, candidate in enumerate(found.candidates, 1):
        skipped = f", {len(candidate.skipped_tensors)} tensors in float" if candidate.skipped_tensors else ""
        print(f"  [{index}] {candidate.options}{skipped}: {candidate.metric:.2f} ({candidate.seconds:.0f} s)")
    simulation = make_runner("executor", result.model_file, result.params_file)
    simulated = metric([simulation.run(feed) for feed in eval_batches])
    print(f"  chosen: {found.options}, {len(found.skipped_tensors)} tensors in float; int8 {found.int8_metric:.2f} "
          f"on {found.runtime} (simulated {simulated:.2f}); target met: {found.target_met}; search {seconds:.0f} s")
    fp32 = ppocr.make_predictor(models[kind], int8=False, threads=args.threads)
    int8 = ppocr.make_predictor(result.model_file.parent, int8=True, threads=args.threads)
    latencies = ppocr.paired_latency([fp32, int8], next(iter(eval_batches[0].values())), 10)
    print(f"  latency at batch 8 on oneDNN: fp32 {latencies[0]:.1f} ms, int8 {latencies[1]:.1f} ms "
          f"(int8 / fp32 {latencies[1] / latencies[0]:.2f})")


def main(argv=None):
    args = parse_args(argv)
    logging.getLogger("paddle_quant").setLevel(logging.WARNING)  # the bench prints its own lines
    logging.getLogger("paddle_quant.ptq.accuracy_control").setLevel(logging.INFO)  # one line per candidate
    paddle.enable_static()
    print(f"int8 dot-product instruction (VNNI/AMX): {int8_dot_product()}")
    workdir = args.workdir or tempfile.mkdtemp(prefix="accuracy_control_")
    for kind in args.models.split(","):
        run_model(kind, args, workdir)


if __name__ == "__main__":
    sys.exit(main())
