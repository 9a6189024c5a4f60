"""Acceptance bench: does ``analyze``'s automatic skip list improve PP-OCRv4 rec's deployed int8 accuracy?

1. ``paddle_quant.analysis.analyze.analyze`` on PP-OCRv4 rec with a few calibration batches of rendered
   lines (the calibration stream of ``ppocr.calibration_feeds``, with their labels), the metric
   being the character accuracy (%) of those lines, and ``--max-drop`` points as the target.
2. ``quant_post`` twice with the same calibration data and options: every layer of the baseline
   op types quantized, and the same with ``skip_tensor_list`` = the automatic skip list.
3. Exact-match accuracy of fp32 and both int8 models, deployed on Paddle Inference with oneDNN
   int8 (``ppocr.evaluate_rec``), on ``ppocr.render_lines(--eval-lines, seed=0)``.

    python bench/analyze_rec.py [--mode deployed|simulation] [--granularity op_type|layer]
                                [--batches 4] [--eval-lines 200] [--max-drop 1.0] [--algo avg]
                                [--ops conv2d,depthwise_conv2d,matmul_v2] [--out out/analyze_rec]

``--mode deployed`` measures sensitivity on the oneDNN int8 predictions of the analysis lines
(each configuration frozen, saved and run on Paddle Inference); ``--mode simulation`` measures it
in the Executor's fake-quant simulation.
"""

import argparse
import json
import os
import sys
import time

import paddle

import paddle_quant as quant
from paddle_quant.analysis.analyze import analyze
from paddle_quant.ptq.config import PTQConfig
from paddle_quant.analysis.sensitivity import onednn_runner

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "demos"))
import ppocr  # noqa: E402  demos/ppocr.py

BATCH_SIZE = 8


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("deployed", "simulation"), default="deployed")
    parser.add_argument("--granularity", choices=("op_type", "layer"), default="op_type")
    parser.add_argument("--sensitivity", choices=("both", "drop_alone", "gain_float"), default="both")
    parser.add_argument("--batches", type=int, default=4, help=f"calibration/analysis batches of {BATCH_SIZE}")
    parser.add_argument("--eval-lines", type=int, default=200)
    parser.add_argument("--max-drop", type=float, default=1.0, help="points of char accuracy on the analysis lines")
    parser.add_argument("--algo", default="avg")
    parser.add_argument("--ops", default="conv2d,depthwise_conv2d,matmul_v2",
                        help="baseline quantizable_op_type (every layer of these types)")
    parser.add_argument("--output-scales", default="none", choices=("none", "all"))
    parser.add_argument("--out", default=os.path.join("out", "analyze_rec"))
    return parser.parse_args(argv)


def analysis_data(batches):
    """Feed dicts and labels of the first ``batches * 8`` lines of the calibration stream (seed 0)."""
    lines = ppocr.render_lines(batches * BATCH_SIZE, seed=ppocr.CALIBRATION_SEED_BASE)
    images, labels = [im for im, _ in lines], [t for _, t in lines]
    name = ppocr.input_name("rec")
    feeds = [{name: ppocr.rec_batch(images[i:i + BATCH_SIZE])} for i in range(0, len(images), BATCH_SIZE)]
    return feeds, labels


def char_accuracy(labels, charset):
    """metric(outputs_per_batch) -> char accuracy (%) of the decoded lines."""
    def metric(outputs):
        preds = [text for batch in outputs for text in ppocr.ctc_decode(batch[0], charset)]
        return ppocr.rec_metrics(preds, labels)["char"]

    metric.__name__ = "char_accuracy"
    return metric


def quantize(exe, model_dir, out_dir, feeds, ptq: PTQConfig, skip):
    start = time.perf_counter()
    quant.quant_post(exe, str(model_dir), str(out_dir), data_loader=lambda: iter(feeds), algo=ptq.algo,
                     batch_nums=len(feeds), quantizable_op_type=list(ptq.quantizable_op_type),
                     output_scales=ptq.output_scales, skip_tensor_list=list(skip))
    return time.perf_counter() - start


def main(argv=None):
    args = parse_args(argv)
    paddle.enable_static()
    models = ppocr.fetch_models()
    charset = ppocr.load_charset(models["rec_dict"])
    feeds, labels = analysis_data(args.batches)
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    ptq = PTQConfig(algo=args.algo, quantizable_op_type=ops, output_scales=args.output_scales,
                    batch_nums=args.batches)
    runner = onednn_runner() if args.mode == "deployed" else None
    started = time.perf_counter()
    with paddle.pir_utils.OldIrGuard():
        result = analyze(models["rec"], feeds, ptq, report_dir=os.path.join(args.out, "report"),
                         max_drop=args.max_drop, metric=char_accuracy(labels, charset), runner=runner,
                         granularity=args.granularity, sensitivity=args.sensitivity)
        analyze_s = time.perf_counter() - started
        exe = paddle.static.Executor(paddle.CPUPlace())
        all_dir, skip_dir = os.path.join(args.out, "rec_int8_all"), os.path.join(args.out, "rec_int8_skip")
        quantize(exe, models["rec"], all_dir, feeds, ptq, ())
        quantize(exe, models["rec"], skip_dir, feeds, ptq, result.skip_list)
    images, eval_labels = zip(*ppocr.render_lines(args.eval_lines, seed=0))
    fp32 = ppocr.evaluate_rec(models["rec"], images, eval_labels, int8=False)["exact"]
    every = ppocr.evaluate_rec(all_dir, images, eval_labels, int8=True)["exact"]
    skipped = ppocr.evaluate_rec(skip_dir, images, eval_labels, int8=True)["exact"]
    summary = {
        "command": " ".join(["python", "bench/analyze_rec.py"] + (argv if argv is not None else sys.argv[1:])),
        "mode": args.mode, "granularity": args.granularity, "algo": args.algo, "ops": ops,
        "output_scales": args.output_scales, "batches": args.batches, "max_drop": args.max_drop,
        "analysis": {"fp32": result.fp32_metric, "all_quantized": result.quantized_metric,
                     "with_skip_list": result.skip_metric, "target_met": result.target_met,
                     "units_skipped": [u.name for u in result.units if u.skipped],
                     "skip_list_tensors": len(result.skip_list), "evaluations": result.evaluations,
                     "seconds": round(analyze_s, 1)},
        "deployed_exact_match": {"fp32": fp32, "int8_every_layer": every, "int8_skip_list": skipped,
                                 "eval_lines": args.eval_lines},
        "report": str(result.report_path),
    }
    print(json.dumps(summary, indent=1))
    with open(os.path.join(args.out, "summary.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=1)
    return 0 if skipped > every else 1


if __name__ == "__main__":
    sys.exit(main())
