"""PP-OCR cls and rec exported to int8 QDQ ONNX: accuracy and latency in onnxruntime vs Paddle Inference.

For each model (mobile v2 direction classifier 'cls', PP-OCRv4 rec; see demos/ppocr.py):

1. quantize the fp32 model with ``paddle_quant.quant_post`` with the settings of
   demos/ptq_ppocr.py (cls: hist, conv2d+depthwise_conv2d+mul, output_scales 'all';
   rec: avg, conv2d only, output_scales 'none'; both deploy_backend='onednn'), calibrating on ``--batches`` rendered batches of 8;
2. export it with ``paddle_quant.export.onnx.export_onnx`` (int8 QDQ) and the fp32 model with
   ``export_float_onnx`` (same converter, no quant ops);
3. evaluate four runs on the same rendered evaluation set (``--eval-lines`` lines, seed 0):
   Paddle Inference fp32 and int8 (oneDNN, ``enable_onednn_int8``; "our Paddle int8 model"),
   onnxruntime fp32 and int8 (CPUExecutionProvider, ``--threads`` intra-op threads, the same
   number Paddle gets). rec: exact match / char accuracy; cls: orientation accuracy;
4. time one batch of 8 on each, runs interleaved (median of ``--repeats``), so load from other
   processes on a shared machine hits all four alike (onnxruntime's pool threads do not spin between runs:
   ``ort_options``).

It prints one table, the int8/fp32 latency ratio on each runtime, the accuracy gap between
onnxruntime int8 and Paddle int8 and how often the two predict the same (string or class) per
image; it exits 1 when the gap is above ``--max-gap`` points (the acceptance line: 0.5) for
any model.

Run from the repository root (needs ``pip install onnx onnxruntime``):

    PYTHONPATH=. .venv/bin/python bench/onnx_ppocr.py [--models cls,rec] [--eval-lines 200]
        [--batches 10] [--repeats 10] [--threads 2] [--observers none|int8_ops|all] [--no-fold]
        [--rec-output-scales none|all] [--rec-algo avg] [--cls-output-scales all] [--no-pool-inputs] [--executor]
        [--out out/onnx_ppocr] [--max-gap 0.5]
"""

import argparse
import os
import sys
import time

import numpy as np

_DEMOS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "demos")
if _DEMOS not in sys.path:
    sys.path.insert(0, _DEMOS)

import ppocr  # noqa: E402  demos/ppocr.py
from _table import print_table  # noqa: E402  demos/_table.py

BATCH_SIZE = 8
PADDLE, ORT, EXECUTOR = "Paddle Inference (oneDNN)", "onnxruntime (CPU)", "Paddle Executor (simulation)"
QUANT_SETTINGS = {
    "cls": {"algo": "hist", "quantizable_op_type": ["conv2d", "depthwise_conv2d", "mul"], "output_scales": "all",
            "deploy_backend": "onednn", "smooth_depthwise": False, "fold_input_affine": False},
    "rec": {"algo": "avg", "quantizable_op_type": ["conv2d"], "output_scales": "none", "deploy_backend": "onednn",
            "smooth_depthwise": False, "fold_input_affine": False},
}
"""quant_post settings per model: those of demos/ptq_ppocr.py (see its docstring for why), so 'our Paddle int8
model' is the demo's. deploy_backend='onednn' folds conv/affine chains and writes oneDNN's int8 average pools
into the program (paddle_quant/passes/pool_inputs.py), so the exported graph computes what oneDNN runs."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cls,rec", help="comma-separated subset of cls,rec (default both)")
    parser.add_argument("--eval-lines", type=int, default=200, help="rendered lines in each evaluation set")
    parser.add_argument("--batches", type=int, default=10, help=f"calibration batches of {BATCH_SIZE} lines")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per model and runtime")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for both runtimes")
    parser.add_argument("--observers", default="none", choices=("none", "int8_ops", "all"),
                        help="export_onnx observers= (default none; int8_ops: QDQ pairs on the outputs of int8 ops)")
    parser.add_argument("--no-fold", action="store_true", help="export with fold_conv=False (keep bias adds and BN)")
    parser.add_argument("--rec-output-scales", default="none", choices=("none", "all"),
                        help="quant_post output_scales for rec (default none, as demos/ptq_ppocr.py; 'all' gives "
                             "the conv outputs the scales onnxruntime needs for QLinearConv)")
    parser.add_argument("--cls-output-scales", default="all", choices=("none", "all"),
                        help="quant_post output_scales for cls (default all, as demos/ptq_ppocr.py)")
    parser.add_argument("--rec-algo", default="avg", choices=("KL", "hist", "mse", "emd", "avg", "abs_max"),
                        help="quant_post algo for rec (default avg, as demos/ptq_ppocr.py)")
    parser.add_argument("--no-pool-inputs", action="store_true",
                        help="quant_post with fold_affine=True instead of deploy_backend='onednn': the program "
                             "leaves oneDNN's int8 average pools implicit (paddle_quant/passes/pool_inputs.py)")
    parser.add_argument("--executor", action="store_true",
                        help="also evaluate the int8 model in the Paddle Executor (the fake-quant simulation "
                             "the export reproduces; accuracy only, slow)")
    parser.add_argument("--out", default=os.path.join("out", "onnx_ppocr"), help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="calibration stream seed")
    parser.add_argument("--max-gap", type=float, default=0.5,
                        help="allowed |onnxruntime int8 - Paddle int8| accuracy gap in points (default 0.5)")
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not args.models or set(args.models) - {"cls", "rec"}:
        parser.error(f"--models must name cls and/or rec, got {args.models}")
    if args.batches < 1 or args.eval_lines < BATCH_SIZE or args.repeats < 1 or args.threads < 1:
        parser.error(f"need --batches >= 1, --eval-lines >= {BATCH_SIZE}, --repeats >= 1, --threads >= 1")
    return args


def ort_options(threads):
    """onnxruntime session options for timing beside other predictors: ``threads`` intra-op threads, one
    inter-op thread, and pool threads that do not spin after a run (interleaved runs would otherwise share the
    cores with the spinning threads of the session run before: PP-OCRv4 rec fp32 on a 2-core machine, 117 ms
    per batch spinning against 99 ms not, and int8/fp32 ratios moved by up to 20 %)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def ort_predictor(path, threads):
    """onnxruntime (CPU) with :func:`ort_options`, as a predictor."""
    import onnxruntime as ort

    from paddle_quant.deploy.runtimes import Runner

    session = ort.InferenceSession(str(path), ort_options(threads), providers=["CPUExecutionProvider"])
    inputs, outputs = tuple(i.name for i in session.get_inputs()), tuple(o.name for o in session.get_outputs())
    return ppocr.RunnerPredictor(Runner("onnxruntime", inputs, outputs, lambda feed: session.run(None, dict(feed))))


def executor_predictor(model_dir):
    """The Paddle Executor running the QDQ model as float arithmetic (the fake-quant simulation)."""
    from paddle_quant.deploy.runtimes import make_runner

    return ppocr.RunnerPredictor(make_runner("executor", os.path.join(model_dir, "model.pdmodel"),
                                       os.path.join(model_dir, "model.pdiparams")))


def settings(kind, args):
    """QUANT_SETTINGS of kind, with --rec-output-scales, --rec-algo, --cls-output-scales and --no-pool-inputs
    applied."""
    chosen = dict(QUANT_SETTINGS[kind])
    if kind == "rec":
        chosen["output_scales"] = args.rec_output_scales
        chosen["algo"] = args.rec_algo
    else:
        chosen["output_scales"] = args.cls_output_scales
    if args.no_pool_inputs:  # the conv/affine fold alone, without the rest of the oneDNN profile
        del chosen["deploy_backend"]
        chosen["fold_affine"] = True
    return chosen


def quantize(kind, model_dir, out_dir, args):
    """quant_post of one PP-OCR model; returns seconds spent."""
    import paddle

    import paddle_quant as quant

    start = time.perf_counter()
    with paddle.pir_utils.OldIrGuard():
        paddle.enable_static()
        quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(model_dir), str(out_dir),
                         data_loader=lambda: ppocr.calibration_feeds(kind, args.batches, BATCH_SIZE, args.seed),
                         batch_nums=args.batches, **settings(kind, args))
    return time.perf_counter() - start


def export(kind, fp32_dir, int8_dir, args):
    """(fp32 onnx path, int8 ExportResult, seconds of the int8 export)."""
    from paddle_quant.export.onnx import export_float_onnx, export_onnx

    fp32 = export_float_onnx(fp32_dir, os.path.join(args.out, f"{kind}_fp32.onnx"), fold_conv=not args.no_fold)
    start = time.perf_counter()
    int8 = export_onnx(int8_dir, os.path.join(args.out, f"{kind}_int8.onnx"), observers=args.observers,
                       fold_conv=not args.no_fold)
    return fp32.path, int8, time.perf_counter() - start


def to_batch(kind, images):
    """Preprocessed float32 batch of images for kind."""
    return ppocr.rec_batch(images) if kind == "rec" else ppocr.cls_batch(images)


def predictions(kind, predictor, images):
    """Per-image predictions: decoded strings (rec) or class indices (cls), run batch by batch."""
    batch = to_batch(kind, images)
    outputs = np.concatenate([ppocr.predict(predictor, batch[i:i + BATCH_SIZE])
                              for i in range(0, len(batch), BATCH_SIZE)])
    if kind == "rec":
        return ppocr.ctc_decode(outputs, ppocr.load_charset(ppocr.fetch_models()["rec_dict"]))
    return [int(i) for i in outputs.argmax(axis=1)]


def accuracy(kind, predicted, labels):
    """(cell text, headline accuracy): rec exact / char %, cls orientation %."""
    if kind == "rec":
        m = ppocr.rec_metrics(predicted, labels)
        return f"{m['exact']:.1f} / {m['char']:.1f}", m["exact"]
    value = 100.0 * float(np.mean(np.asarray(predicted) == np.asarray(labels).reshape(-1)))
    return f"{value:.1f}", value


def agreement(first, second):
    """Percent of images on which two runs predict the same string or class."""
    return 100.0 * float(np.mean([a == b for a, b in zip(first, second)]))


def run_model(kind, models, eval_set, args):
    """Table rows of one model, int8/fp32 latency ratio per runtime, accuracy gap and agreement."""
    int8_dir = os.path.join(args.out, f"{kind}_int8")
    calib_s = quantize(kind, models[kind], int8_dir, args)
    fp32_onnx, int8_export, export_s = export(kind, models[kind], int8_dir, args)
    print(f"  [{kind}] quant_post {calib_s:.1f} s; export_onnx {export_s:.1f} s: {len(int8_export.weights)} int8 "
          f"weights, {len(int8_export.activations)} quantized activations, {len(int8_export.observers)} observer "
          f"QDQ pairs -> {int8_export.path}")
    runs = {
        (PADDLE, "fp32"): ppocr.make_predictor(models[kind], int8=False, threads=args.threads),
        (PADDLE, "int8"): ppocr.make_predictor(int8_dir, int8=True, threads=args.threads),
        (ORT, "fp32"): ort_predictor(fp32_onnx, args.threads),
        (ORT, "int8"): ort_predictor(int8_export.path, args.threads),
    }
    images, labels = eval_set
    predicted = {key: predictions(kind, predictor, images) for key, predictor in runs.items()}
    accs = {key: accuracy(kind, values, labels) for key, values in predicted.items()}
    latencies = dict(zip(runs, ppocr.paired_latency(list(runs.values()), to_batch(kind, images[:BATCH_SIZE]),
                                              args.repeats)))
    label = {"cls": "cls (mobile v2)", "rec": "rec (PP-OCRv4) exact/char"}[kind]
    rows = [(label, runtime, precision, accs[(runtime, precision)][0], f"{latencies[(runtime, precision)]:.1f}")
            for runtime, precision in runs]
    if args.executor:
        simulated = predictions(kind, executor_predictor(int8_dir), images)
        rows.append((label, EXECUTOR, "int8", accuracy(kind, simulated, labels)[0], "-"))
    ratios = {runtime: latencies[(runtime, "int8")] / latencies[(runtime, "fp32")] for runtime in (PADDLE, ORT)}
    gap = accs[(ORT, "int8")][1] - accs[(PADDLE, "int8")][1]
    return rows, ratios, gap, agreement(predicted[(ORT, "int8")], predicted[(PADDLE, "int8")])


def evaluation_sets(lines):
    """{'rec': (images, labels), 'cls': (images, labels)}: ``lines`` rendered lines each, seed 0."""
    rec_images, rec_labels = zip(*ppocr.render_lines(lines, seed=0))
    return {"rec": (list(rec_images), list(rec_labels)), "cls": ppocr.cls_dataset(lines, 0)}


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    models = ppocr.fetch_models()
    eval_sets = evaluation_sets(args.eval_lines)
    print(f"PP-OCR models ({ppocr.WHEEL}); {args.eval_lines} evaluation lines per model; calibration "
          f"{args.batches} x {BATCH_SIZE} lines; {args.threads} threads; observers={args.observers}, "
          f"fold_conv={not args.no_fold}; rec algo={args.rec_algo}, output_scales={args.rec_output_scales}; "
          f"cls output_scales={args.cls_output_scales}; "
          f"{'fold_affine only' if args.no_pool_inputs else 'deploy_backend=onednn'}")
    rows, summary, failures = [], [], []
    for kind in args.models:
        model_rows, ratios, gap, same = run_model(kind, models, eval_sets[kind], args)
        rows += model_rows
        summary.append(f"{kind}: int8/fp32 latency onnxruntime {ratios[ORT]:.2f}, Paddle oneDNN {ratios[PADDLE]:.2f}; "
                       f"accuracy onnxruntime int8 - Paddle int8 = {gap:+.1f} points; same prediction on "
                       f"{same:.1f} % of the images")
        if abs(gap) > args.max_gap:
            failures.append(f"{kind}: onnxruntime int8 accuracy is {gap:+.1f} points from Paddle int8 "
                            f"(allowed {args.max_gap:g})")
    print()
    print_table(("model", "runtime", "precision", "accuracy (%)", f"latency / batch of {BATCH_SIZE} (ms)"), rows)
    for line in summary:
        print(line)
    print(f"total time {time.perf_counter() - started:.0f} s")
    for failure in failures:
        print(f"FAIL: {failure}")
    if not failures:
        print(f"OK: onnxruntime int8 within {args.max_gap:g} points of Paddle int8 for {', '.join(args.models)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
