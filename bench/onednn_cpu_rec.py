"""PP-OCRv4 rec on oneDNN int8 with and without ``onednn_cpu="avx2"``: deployed beside simulated.

Each row is one ``quant_post`` call (``deploy_backend="onednn"``, 10 calibration batches of 8 rendered
lines from the kit's calibration stream) whose model then runs on the same rendered lines twice: on
Paddle Inference oneDNN int8 (deployed, this CPU) and in the Paddle Executor (simulated). On a CPU without
VNNI/AMX the rows show what ``onednn_cpu="avx2"`` changes (docs/deploy.md, "CPUs without VNNI"); on a
CPU with VNNI every row should read deployed = simulated.

    python bench/onednn_cpu_rec.py [--eval-lines 300] [--rows conv2d_vnni,conv2d_avx2,...] [--threads 2]
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

import paddle  # noqa: E402

import paddle_quant as quant  # noqa: E402
import ppocr  # noqa: E402 (demos/ppocr.py)
from paddle_quant.deploy.cpu import int8_dot_product  # noqa: E402
from paddle_quant.deploy.runtimes import make_runner  # noqa: E402

FOUR_TYPES = ["conv2d", "depthwise_conv2d", "mul", "matmul_v2"]
ROWS = {
    "conv2d_vnni": {"algo": "avg", "quantizable_op_type": ["conv2d"], "output_scales": "none"},
    "conv2d_avx2": {"algo": "avg", "quantizable_op_type": ["conv2d"], "output_scales": "none", "onednn_cpu": "avx2"},
    "conv2d_avx2_bc": {"algo": "avg", "quantizable_op_type": ["conv2d"], "output_scales": "none",
                       "onednn_cpu": "avx2", "bias_correction": True},
    "conv2d_avx2_adaround": {"algo": "avg", "quantizable_op_type": ["conv2d"], "output_scales": "none",
                             "onednn_cpu": "avx2", "round_type": "adaround"},
    "conv2d_avx2_adaround_bc": {"algo": "avg", "quantizable_op_type": ["conv2d"], "output_scales": "none",
                                "onednn_cpu": "avx2", "round_type": "adaround", "bias_correction": True},
    "four_hist_avx2": {"algo": "hist", "quantizable_op_type": FOUR_TYPES, "onednn_cpu": "avx2"},
    "four_avg_avx2": {"algo": "avg", "quantizable_op_type": FOUR_TYPES, "onednn_cpu": "avx2"},
    "four_hist_avx2_all": {"algo": "hist", "quantizable_op_type": FOUR_TYPES, "onednn_cpu": "avx2",
                           "output_scales": "all"},
}
"""Row name -> quant_post options besides deploy_backend='onednn' (the `_vnni` row leaves onednn_cpu unset)."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval-lines", type=int, default=300, help="rendered lines scored (exact match)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from {list(ROWS)}")
    parser.add_argument("--threads", type=int, default=2, help="oneDNN threads")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.rows.split(",")) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {unknown}; allowed: {list(ROWS)}")
    return args


def exact_match(predictor, images, labels):
    return ppocr.evaluate_rec(predictor, images, labels, int8=True, timed=False)["exact"]


def main(argv=None):
    args = parse_args(argv)
    logging.getLogger("paddle_quant").setLevel(logging.ERROR)
    paddle.enable_static()
    print(f"int8 dot-product instruction (VNNI/AMX): {int8_dot_product()}")
    model = ppocr.fetch_models()["rec"]
    feeds = list(ppocr.calibration_feeds("rec", 10, 8, 0))
    images, labels = zip(*ppocr.render_lines(args.eval_lines, seed=0))
    fp32 = exact_match(ppocr.make_predictor(model, int8=False, threads=args.threads), images, labels)
    print(f"fp32 (oneDNN): {fp32:.1f} % exact match on {args.eval_lines} lines")
    workdir = tempfile.mkdtemp(prefix="onednn_cpu_rec_")
    for name in args.rows.split(","):
        started = time.perf_counter()
        result = quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(model), os.path.join(workdir, name),
                                  data_loader=lambda: iter(feeds), batch_nums=10, deploy_backend="onednn",
                                  **ROWS[name])
        files = (result.model_file, result.params_file)
        deployed = exact_match(ppocr.RunnerPredictor(make_runner("onednn", *files, threads=args.threads)),
                               images, labels)
        simulated = exact_match(ppocr.RunnerPredictor(make_runner("executor", *files)), images, labels)
        print(f"{name:20s} deployed {deployed:5.1f} %  simulated {simulated:5.1f} %  |gap| "
              f"{abs(deployed - simulated):4.1f}  ({time.perf_counter() - started:.0f} s; {ROWS[name]})", flush=True)


if __name__ == "__main__":
    main()
