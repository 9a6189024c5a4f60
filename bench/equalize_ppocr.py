"""int8 accuracy of PP-OCR models with and without cross-layer equalization and smoothing.

Each configuration runs ``quant_post`` as ``make demo`` does (10 calibration batches of 8 rendered
lines, ``deploy_backend='onednn'``, the demo's op types, algorithm and output scales) plus the options
under test, and evaluates the saved int8 model in the Paddle Executor (the fake-quant simulation; on
a CPU with VNNI oneDNN computes the same, on one without it does not: docs/deploy.md).

    python bench/equalize_ppocr.py [--models cls,rec] [--eval-lines 400] [--batches 10] [--seed 0]

Prints one row per model and configuration: simulated int8 accuracy (cls: orientation accuracy;
rec: exact / char), what the passes did, and the calibration time.
"""

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "demos")]

from paddle_quant.common.native_output import ignore_paddle_import_notes  # noqa: E402

ignore_paddle_import_notes()

import paddle  # noqa: E402

import paddle_quant as quant  # noqa: E402
from paddle_quant.deploy.runtimes import make_runner  # noqa: E402
import ppocr  # noqa: E402
from _table import print_table  # noqa: E402

BATCH_SIZE = 8
SETTINGS = {"cls": {"algo": "hist", "quantizable_op_type": ["conv2d", "depthwise_conv2d", "mul"],
                    "output_scales": "all"},
            "rec": {"algo": "avg", "quantizable_op_type": ["conv2d"], "output_scales": "none"}}
"""The demo's settings per model (demos/ptq_ppocr.py defaults)."""
for _settings in SETTINGS.values():  # onednn's defaults since 2026-12-06, off as in the demo
    _settings.update(smooth_depthwise=False, fold_input_affine=False)
CONFIGS = {
    "baseline": {},
    "equalize": {"equalize_layers": True},
    "smooth (searched)": {"smooth_activations": True},
    "smooth 0.5": {"smooth_activations": True, "smooth_alpha": 0.5},
    "equalize + smooth (searched)": {"equalize_layers": True, "smooth_activations": True},
}


class _PassLog(logging.Handler):
    """Keeps the equalize/smooth summary lines of the last run."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith(("equalize_layers:", "smooth_activations:")):
            self.lines.append(message)


def _accuracy(kind, predictor, data):
    images, labels = data
    if kind == "rec":
        m = ppocr.evaluate_rec(predictor, images, labels, int8=False, batch_size=BATCH_SIZE, timed=False)
        return f"{m['exact']:.1f} / {m['char']:.1f}"
    return f"{ppocr.evaluate_cls(predictor, images, labels, int8=False, batch_size=BATCH_SIZE, timed=False)['accuracy']:.1f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cls", help="comma-separated: cls, rec")
    parser.add_argument("--eval-lines", type=int, default=400, help="rendered lines per evaluation set")
    parser.add_argument("--batches", type=int, default=10, help=f"calibration batches of {BATCH_SIZE}")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names of CONFIGS")
    parser.add_argument("--seed", type=int, default=0, help="calibration stream seed (ppocr.calibration_feeds)")
    args = parser.parse_args(argv)
    paddle.enable_static()
    models = ppocr.fetch_models()
    handler = _PassLog()
    logger = logging.getLogger("paddle_quant")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    rows = []
    exe = paddle.static.Executor(paddle.CPUPlace())
    for kind in args.models.split(","):
        if kind == "rec":
            images, labels = zip(*ppocr.render_lines(args.eval_lines, seed=0))
            data = (list(images), list(labels))
        else:
            data = ppocr.cls_dataset(args.eval_lines, 0)
        rows.append((kind, "fp32", _accuracy(kind, ppocr.make_predictor(models[kind], int8=False), data), "-", "-"))
        for name in args.configs.split(","):
            handler.lines = []
            with tempfile.TemporaryDirectory() as out:
                started = time.perf_counter()
                result = quant.quant_post(
                    exe, str(models[kind]), str(Path(out) / "int8"), batch_nums=args.batches,
                    data_loader=lambda: ppocr.calibration_feeds(kind, args.batches, BATCH_SIZE, args.seed),
                    deploy_backend="onednn", **SETTINGS[kind], **CONFIGS[name])
                seconds = time.perf_counter() - started
                simulated = ppocr.RunnerPredictor(make_runner("executor", result.model_file, result.params_file))
                rows.append((kind, f"int8 {name}", _accuracy(kind, simulated, data), "; ".join(handler.lines) or "-",
                             f"{seconds:.1f}"))
            print(*rows[-1], sep=" | ", flush=True)
    print()
    print_table(("model", "configuration", "simulated accuracy (%)", "passes", "quant_post (s)"), rows)


if __name__ == "__main__":
    sys.exit(main())
