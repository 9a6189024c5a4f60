"""AdaRound against rounding to nearest on a PP-OCR model: quant_post time and int8 accuracy.

For each ``--round-types`` value, ``quant_post`` of the cached PP-OCR model (demos/ppocr.py) with
the demo's options for that model (cls: hist, conv2d/depthwise_conv2d/mul, output scales all; rec:
avg, ``--rec-ops``, output scales none; ``deploy_backend="onednn"``), timed, then the exact match
(rec) or orientation accuracy (cls) on ``--eval-lines`` rendered lines in the Executor's
simulation and, on a CPU with VNNI/AMX, in Paddle Inference oneDNN int8.

    python bench/adaround_ppocr.py --model cls [--batches 10] [--round-types round,adaround]
    python bench/adaround_ppocr.py --model rec --rec-ops conv2d,depthwise_conv2d,matmul_v2
                                   [--algo emd] [--smooth-depthwise] [--eval-lines 300]
"""

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "demos")]

import paddle  # noqa: E402

import paddle_quant as quant  # noqa: E402
import ppocr  # noqa: E402
from paddle_quant.deploy.cpu import int8_dot_product  # noqa: E402
from paddle_quant.deploy.runtimes import make_runner  # noqa: E402

BATCH_SIZE = 8


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("cls", "rec"), default="cls")
    parser.add_argument("--round-types", default="round,adaround", help="comma-separated round_type values")
    parser.add_argument("--batches", type=int, default=10, help=f"calibration batches of {BATCH_SIZE}")
    parser.add_argument("--eval-lines", type=int, default=200, help="rendered evaluation lines")
    parser.add_argument("--iterations", type=int, default=500, help="adaround_iterations")
    parser.add_argument("--rec-ops", default="conv2d", help="op types quantized in rec (default conv2d)")
    parser.add_argument("--algo", default=None, help="calibration algorithm (default: the demo's, hist for cls, avg for rec)")
    parser.add_argument("--smooth-depthwise", action=argparse.BooleanOptionalAction, default=None,
                        help="quant_post smooth_depthwise=True / False; unset: the onednn backend's default (on)")
    parser.add_argument("--out", default=None, help="output folder (default: a temporary one)")
    return parser.parse_args(argv)


def _options(kind, args):
    extra = {} if args.smooth_depthwise is None else {"smooth_depthwise": args.smooth_depthwise}
    if kind == "cls":
        return dict(algo=args.algo or "hist", quantizable_op_type=["conv2d", "depthwise_conv2d", "mul"],
                    output_scales="all", **extra)
    return dict(algo=args.algo or "avg", quantizable_op_type=args.rec_ops.split(","), output_scales="none", **extra)


def _accuracy(kind, predictor, data):
    if kind == "rec":
        return ppocr.evaluate_rec(predictor, *data, int8=False, batch_size=BATCH_SIZE, timed=False)["exact"]
    return ppocr.evaluate_cls(predictor, *data, int8=False, batch_size=BATCH_SIZE, timed=False)["accuracy"]


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(format="%(message)s")
    logging.getLogger("paddle_quant.ptq.adaround_layers").setLevel(logging.INFO)  # the timing summary
    paddle.enable_static()
    kind, models = args.model, ppocr.fetch_models()
    if kind == "rec":
        images, labels = zip(*ppocr.render_lines(args.eval_lines, seed=0))
        data = (list(images), list(labels))
    else:
        data = ppocr.cls_dataset(args.eval_lines, 0)
    exe, vnni = paddle.static.Executor(paddle.CPUPlace()), int8_dot_product()
    out = Path(args.out or tempfile.mkdtemp(prefix="adaround_"))
    print(f"{kind}: {args.batches} batches of {BATCH_SIZE}, {args.eval_lines} evaluation lines, "
          f"cpu count {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    for round_type in args.round_types.split(","):
        start = time.perf_counter()
        result = quant.quant_post(
            exe, str(models[kind]), str(out / round_type), batch_nums=args.batches, deploy_backend="onednn",
            data_loader=lambda: ppocr.calibration_feeds(kind, args.batches, BATCH_SIZE, 0), round_type=round_type,
            adaround_iterations=args.iterations, show_progress=False, **_options(kind, args))
        seconds = time.perf_counter() - start
        simulated = _accuracy(kind, ppocr.RunnerPredictor(make_runner("executor", result.model_file,
                                                                       result.params_file)), data)
        deployed = _accuracy(kind, ppocr.make_predictor(out / round_type, int8=True), data) if vnni else None
        print(f"{round_type}: quant_post {seconds:.1f} s, simulated {simulated:.1f} %, deployed (oneDNN) "
              + (f"{deployed:.1f} %" if vnni else "not measured (no VNNI/AMX)"), flush=True)


if __name__ == "__main__":
    main()
