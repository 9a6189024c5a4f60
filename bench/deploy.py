"""Deployment check: int8 models on Paddle Inference oneDNN vs their fp32 models, with paddle_quant.verify.

For each model this quantizes (QAT for the digits CNN, quant_post for the PP-OCR models), then runs
``paddle_quant.verify(int8_dir, 'onednn', inputs, fp32_model=fp32_dir)`` at each batch size:
deviation of the oneDNN int8 outputs from the fake-quant simulation (the same model in the Paddle
Executor) in quantization steps of the output scale and as cosine similarity, and the median latency
of one batch int8 vs fp32 (ratio < 1: int8 is faster). For cls and rec it also prints deployed
accuracy fp32 vs int8 on rendered evaluation lines (the acceptance: max deviation <= 2 steps, or an
accuracy drop below 0.5 point).

* digits: demos/qat_digits.py (QAT, convert), sklearn digits test images.
* cls / rec: PP-OCR mobile v2 cls and PP-OCRv4 rec (demos/ppocr.py), calibrated on rendered lines with
  the settings of demos/ptq_ppocr.py (cls: hist, conv2d+depthwise_conv2d, output scales all; rec: avg,
  conv2d, output scales none).
* det: PP-OCRv4 det on rendered pages (text lines pasted on a light canvas), avg, conv2d+depthwise_conv2d,
  output scales all (with none, oneDNN int8 outputs an all-zero map). No det accuracy metric: verify's
  cosine to the simulation is the check.

Run from the repository root:

    .venv/bin/python bench/deploy.py [--models digits,cls,rec,det] [--batch-sizes 1,8] [--batches 10]
                                     [--eval-lines 200] [--repeats 20] [--workdir DIR]

Latencies of a pair are measured one after the other in the same process; on a shared machine
rerun to see the spread.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for _path in (str(REPO / "demos"), str(REPO)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import paddle  # noqa: E402

import paddle_quant as quant  # noqa: E402
import ppocr  # noqa: E402
from _table import print_table  # noqa: E402

_AS_MEASURED = {"smooth_depthwise": False, "fold_input_affine": False}
"""onednn's defaults since 2026-12-06, off as in the runs docs/deploy.md reports (and the demo)."""
SETTINGS = {
    "cls": {"algo": "hist", "quantizable_op_type": ["conv2d", "depthwise_conv2d"], "output_scales": "all",
            "deploy_backend": "onednn", **_AS_MEASURED},
    "rec": {"algo": "avg", "quantizable_op_type": ["conv2d"], "output_scales": "none", "deploy_backend": "onednn",
            **_AS_MEASURED},
    # det needs output scales: with 'none' oneDNN int8 returns an all-zero probability map (cosine 0.07 to fp32)
    "det": {"algo": "avg", "quantizable_op_type": ["conv2d", "depthwise_conv2d"], "output_scales": "all",
            "deploy_backend": "onednn", **_AS_MEASURED},
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,cls,rec,det", help="comma-separated: digits, cls, rec, det")
    parser.add_argument("--batch-sizes", default="1,8", help="comma-separated batch sizes for verify/latency")
    parser.add_argument("--batches", type=int, default=10, help="calibration batches of 8 (PP-OCR models)")
    parser.add_argument("--eval-lines", type=int, default=200, help="rendered lines for cls/rec accuracy")
    parser.add_argument("--det-size", type=int, default=640, help="det page height and width (multiple of 32)")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per latency (median)")
    parser.add_argument("--workdir", default=None, help="where models are written (default: a temp dir)")
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    unknown = set(args.models) - {"digits", "cls", "rec", "det"}
    if unknown or not args.models:
        parser.error(f"--models: unknown {sorted(unknown)}; allowed digits, cls, rec, det")
    if args.det_size % 32 or args.det_size < 64:
        parser.error("--det-size must be a multiple of 32, >= 64")
    return args


# ---------------------------------------------------------------- inputs
def ppocr_inputs(kind, count, seed, det_size):
    """count input images of a PP-OCR model as one array."""
    if kind == "det":
        return ppocr.det_pages(count, det_size, seed)
    if kind == "rec":
        images = [image for image, _ in ppocr.render_lines(count, seed=seed)]
        return ppocr.rec_batch(images)
    images, _ = ppocr.cls_dataset(count, seed)
    return ppocr.cls_batch(images)


# ---------------------------------------------------------------- models
def qat_digits(workdir):
    """Train + QAT + convert the digits CNN with demos/qat_digits.py; (fp32 dir, int8 dir, feed name, test images)."""
    import qat_digits as demo

    out = workdir / "digits"
    demo.main(["--out", str(out), "--repeats", "5"])
    _, x_test, _, y_test = demo.load_data(0)
    cells = []
    for folder, int8 in ((out / "fp32", False), (out / "int8", True)):
        predictor = demo.create_predictor(str(folder / "model.pdmodel"), str(folder / "model.pdiparams"), int8)
        cells.append(100.0 * float((demo.predict(predictor, x_test).argmax(1) == y_test.ravel()).mean()))
    acc = (f"{cells[0]:.1f}", f"{cells[1]:.1f}", cells[0] - cells[1])
    return out / "fp32", out / "int8", "image", x_test.astype(np.float32), acc


def ptq_ppocr(kind, models, workdir, args):
    """quant_post of a PP-OCR model with SETTINGS[kind]; returns the int8 folder and the feed name."""
    out = workdir / f"{kind}_int8"
    fp32 = models[kind]
    exe = paddle.static.Executor(paddle.CPUPlace())
    if kind == "det":
        name = _input_name(fp32)
        seeds = [ppocr.CALIBRATION_SEED_BASE + b for b in range(args.batches)]
        data = lambda: ({name: ppocr.det_pages(8, args.det_size, seed)} for seed in seeds)  # noqa: E731
    else:
        name = None
        data = lambda: ppocr.calibration_feeds(kind, args.batches, 8, 0)  # noqa: E731
    start = time.perf_counter()
    quant.quant_post(exe, str(fp32), str(out), data_loader=data, batch_nums=args.batches, **SETTINGS[kind])
    print(f"  [{kind}] quant_post {SETTINGS[kind]} in {time.perf_counter() - start:.1f} s -> {out}")
    return out, name or _input_name(fp32)


def _input_name(model_dir):
    from paddle_quant.deploy.runtimes import make_runner

    from paddle_quant.common.model_files import model_files

    model, params = model_files(model_dir)
    return make_runner("paddle_fp32", model, params).input_names[0]


def fold_fp32(model_dir, out):
    """The fp32 model with passes/fold_affine applied (what quant_post does to the int8 model): a fairer baseline."""
    from paddle_quant.common.model_files import load_inference_program, model_files, save_inference_atomically
    from paddle_quant.passes.fold_affine import fold_conv_affine

    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    program, feeds, fetches = load_inference_program(exe, scope, *model_files(model_dir))
    folded = fold_conv_affine(program, scope, paddle.CPUPlace())
    save_inference_atomically(exe, scope, program, feeds, fetches, out)
    print(f"  fp32 with the same fold: {len(folded)} conv chains folded -> {out}")
    return out


def folded_latency_ms(folded_dir, name, images, batch, repeats):
    """Median fp32 oneDNN latency of the folded fp32 model on one batch."""
    from paddle_quant.common.model_files import model_files
    from paddle_quant.deploy.runtimes import make_runner, median_latency_ms

    return median_latency_ms(make_runner("paddle_fp32", *model_files(folded_dir)), {name: images[:batch]},
                             repeats=repeats)


def accuracy(kind, fp32_dir, int8_dir, eval_lines):
    """Deployed (oneDNN) accuracy cells fp32 / int8 for cls and rec."""
    if kind == "rec":
        images, labels = map(list, zip(*ppocr.render_lines(eval_lines, seed=0)))
        f = ppocr.evaluate_rec(fp32_dir, images, labels, int8=False)
        i = ppocr.evaluate_rec(int8_dir, images, labels, int8=True)
        return f"{f['exact']:.1f}", f"{i['exact']:.1f}", f["exact"] - i["exact"]
    images, labels = ppocr.cls_dataset(eval_lines, 0)
    f = ppocr.evaluate_cls(fp32_dir, images, labels, int8=False)
    i = ppocr.evaluate_cls(int8_dir, images, labels, int8=True)
    return f"{f['accuracy']:.1f}", f"{i['accuracy']:.1f}", f["accuracy"] - i["accuracy"]


def verify_rows(kind, fp32_dir, int8_dir, name, images, args, acc, folded_dir=None):
    rows = []
    for batch in args.batch_sizes:
        inputs = [{name: images[i:i + batch]} for i in range(0, min(len(images), 4 * batch), batch)]
        report = quant.verify(int8_dir, "onednn", inputs, fp32_model=fp32_dir, repeats=args.repeats)
        worst = max(report.outputs, key=lambda o: o.max_steps)
        ok = worst.max_steps <= 2 or (acc is not None and acc[2] < 0.5)  # acc[2]: fp32 - int8 points
        check = "ok" if ok else ("FAIL" if acc is not None else "no accuracy metric")
        folded = folded_latency_ms(folded_dir, name, images, batch, args.repeats) if folded_dir else None
        rows.append((kind, str(batch), f"{worst.max_steps:.2f}", f"{worst.mean_steps:.3f}", f"{worst.cosine:.5f}",
                     f"{report.fp32_latency_ms:.2f}", f"{report.latency_ms:.2f}", f"{report.latency_ratio:.2f}",
                     f"{folded:.2f}" if folded else "-", f"{report.latency_ms / folded:.2f}" if folded else "-",
                     acc[0] if acc else "-", acc[1] if acc else "-", check))
    return rows


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    paddle.enable_static()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="paddle_quant_deploy_"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    with paddle.pir_utils.OldIrGuard():
        if "digits" in args.models:
            fp32_dir, int8_dir, name, images, acc = qat_digits(workdir)
            rows += verify_rows("digits (QAT)", fp32_dir, int8_dir, name, images, args, acc)
        kinds = [k for k in ("cls", "rec", "det") if k in args.models]
        models = ppocr.fetch_models() if kinds else {}
        for kind in kinds:
            int8_dir, name = ptq_ppocr(kind, models, workdir, args)
            acc = accuracy(kind, models[kind], int8_dir, args.eval_lines) if kind != "det" else None
            images = ppocr_inputs(kind, 4 * max(args.batch_sizes), 7, args.det_size)
            folded_dir = fold_fp32(models[kind], workdir / f"{kind}_fp32_folded")
            rows += verify_rows(f"{kind} (PTQ)", models[kind], int8_dir, name, images, args, acc, folded_dir)
    print()
    print_table(("model", "batch", "max steps", "mean steps", "cosine", "fp32 ms", "int8 ms", "int8/fp32",
                 "fp32 folded ms", "int8/fp32 folded", "fp32 acc", "int8 acc", "check"), rows)
    print("fp32 folded: the fp32 model with the same conv/affine fold quant_post applies to the int8 model "
          "(passes/fold_affine.py), timed right after; the int8/fp32 column compares with the model as shipped")
    print("check: max deviation <= 2 output quantization steps, or accuracy drop fp32 - int8 < 0.5 point "
          "(digits: top-1 %, cls: orientation %, rec: exact match %)")
    print(f"models in {workdir}; total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
