"""Where does oneDNN int8 leave the simulation first in PP-OCRv4 rec? ``verify(..., locate=True)`` on two quantizations.

rec quantized with avg calibration (10 batches of 8 rendered lines) two ways — conv2d only with no output
scales (the demo's setting), and PaddleSlim's four op types with ``deploy_backend="onednn"`` — then
``paddle_quant.verify(runtime="onednn", locate=True)`` on one batch of 8 other lines: the outputs' deviation
and the first quantized tensor beyond ``--steps`` quantization steps, the ops oneDNN ran there and the rule
involved (docs/deploy.md, "When a runtime disagrees"). The next step of issue 14 on a CPU with VNNI/AMX.

    python bench/locate_rec.py [--workdir DIR] [--threads 8] [--steps 1.0]
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

SETTINGS = {
    "conv2d_only": {"quantizable_op_type": ["conv2d"], "output_scales": "none"},
    "four_types": {"quantizable_op_type": ["conv2d", "depthwise_conv2d", "mul", "matmul_v2"],
                   "deploy_backend": "onednn"},
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=float, default=1.0, help="tolerance in quantization steps")
    args = parser.parse_args(argv)
    logging.getLogger("paddle_quant").setLevel(logging.ERROR)
    paddle.enable_static()
    print(f"int8 dot-product instruction (VNNI/AMX): {int8_dot_product()}")
    models, workdir = ppocr.fetch_models(), args.workdir or tempfile.mkdtemp(prefix="locate_rec_")
    lines = ppocr.render_lines(8, seed=5)
    feed = {ppocr.input_name("rec"): ppocr.rec_batch([image for image, _ in lines])}
    feeds = list(ppocr.calibration_feeds("rec", 10, 8, 0))
    for tag, options in SETTINGS.items():
        started = time.perf_counter()
        out = os.path.join(workdir, tag)
        quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(models["rec"]), out, algo="avg",
                         data_loader=lambda: iter(feeds), batch_nums=10, **options)
        report = quant.verify(out, runtime="onednn", inputs=[feed], locate=True, locate_steps=args.steps,
                              threads=args.threads)
        deviation = report.outputs[0]
        print(f"\n{tag} ({time.perf_counter() - started:.0f} s): output max {deviation.max_steps:.2f} steps, "
              f"cosine {deviation.cosine:.5f}")
        print(report.divergence.describe() if report.divergence else "no quantized tensor beyond the tolerance")


if __name__ == "__main__":
    sys.exit(main())
