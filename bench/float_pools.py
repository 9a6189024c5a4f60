"""``float_pools``: average pools that read a float tensor run in float on oneDNN, or at the pooled output's scale.

With ``deploy_backend="onednn"``, an average pool whose output is quantized but whose input has no scale of its
own (a conv left in float writes it: a skip list, or an op type not quantized) is run by oneDNN in int8 at the
pooled output's scale, clipping every input value beyond the range of the averages; the program states that
(passes/pool_inputs.py). ``float_pools=True`` runs those pools in float instead. This bench quantizes each case
both ways and prints accuracy deployed (Paddle Inference oneDNN int8) and simulated (the Executor), and the int8
latency per batch of 8 (``ppocr.paired_latency``: both models' runs interleaved):

* cls, PP-OCR mobile v2 cls, ``deploy_backend="onednn"`` without smoothing or input fold, KL, 10 batches of 8:
  ``dw_float`` its 8 padded depthwise convs that read a hard_swish left in float (``skip_tensor_list``, as analyze
  or accuracy control would), ``conv2d`` only conv2d quantized;
* rec, PP-OCRv4 rec with the demo's settings (conv2d only, output scales 'none', no smoothing or input fold) for
  each of ``--rec-algos``.

    PYTHONPATH=. .venv/bin/python bench/float_pools.py [--models cls,rec] [--cls-images 2000] [--rec-lines 1000]
                                                       [--rec-algos avg,hist,emd] [--workdir DIR]

On a CPU without VNNI/AMX, oneDNN's int8 convolutions compute differently from the simulation (docs/deploy.md);
the bench says which CPU it ran on, and the simulated column is the one that transfers.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "demos"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cls_default_call  # noqa: E402 (bench/cls_default_call.py: cls evaluation set, quantize, predictions)
import paddle  # noqa: E402

import paddle_quant as quant  # noqa: E402
import ppocr  # noqa: E402 (demos/ppocr.py)
from paddle_quant.common.model_files import model_files  # noqa: E402
from paddle_quant.common.program import legacy_ir  # noqa: E402
from paddle_quant.deploy.cpu import int8_dot_product  # noqa: E402
from paddle_quant.deploy.runtimes import make_runner  # noqa: E402

BATCH_SIZE = 8
ONEDNN_PLAIN = {"deploy_backend": "onednn", "smooth_depthwise": False, "fold_input_affine": False}
CLS_CASES = {
    "dw_float": {**ONEDNN_PLAIN, "skip_tensor_list": list(cls_default_call.HARD_SWISH_DEPTHWISE_INPUTS)},
    "conv2d": {**ONEDNN_PLAIN, "quantizable_op_type": ["conv2d", "mul", "matmul_v2"]},
}
REC_OPTIONS = {**ONEDNN_PLAIN, "quantizable_op_type": ["conv2d"], "output_scales": "none", "onednn_cpu": "vnni"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cls,rec")
    parser.add_argument("--cls-images", type=int, default=2000)
    parser.add_argument("--rec-lines", type=int, default=1000)
    parser.add_argument("--rec-algos", default="avg,hist,emd")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of every runtime")
    parser.add_argument("--workdir", default=None, help="where the int8 models are written (default: a temp dir)")
    args = parser.parse_args(argv)
    args.models, args.rec_algos = args.models.split(","), args.rec_algos.split(",")
    return args


def paired_latency_ms(folders, batch, threads):
    """Median int8 latency (ms per batch) of each model folder on oneDNN, their runs interleaved."""
    predictors = [ppocr.make_predictor(folder, int8=True, threads=threads) for folder in folders]
    return ppocr.paired_latency(predictors, batch, repeats=20)


def both_ways(label, quantize, score, batch, threads, workdir):
    """Quantize with float_pools False and True (``quantize(folder, float_pools)``), print each model's
    ``score(folder, runtime)`` deployed and simulated, then their int8 latencies on ``batch`` side by side."""
    folders = []
    for float_pools in (False, True):
        folder = workdir / f"{label.replace(' ', '_')}_{'float' if float_pools else 'clipped'}"
        quantize(folder, float_pools)
        folders.append(folder)
        deployed, simulated = (score(folder, runtime) for runtime in ("onednn", "executor"))
        print(f"  {label:13s} float_pools={float_pools!s:5s}  deployed {deployed:6.2f}  simulated {simulated:6.2f}",
              flush=True)
    clipped_ms, float_ms = paired_latency_ms(folders, batch, threads)
    print(f"  {label:13s} int8 ms per batch of {BATCH_SIZE}: clipped {clipped_ms:.2f}, float pools {float_ms:.2f}",
          flush=True)


def cls_rows(args, workdir):
    cls_dir, images, labels = cls_default_call.evaluation_set(args.cls_images)
    fp32 = cls_default_call.predictions("paddle_fp32", (cls_dir / "inference.pdmodel", cls_dir / "inference.pdiparams"),
                                        images, args.threads) == labels
    print(f"cls, {len(labels)} images, fp32 (oneDNN fp32) {100.0 * fp32.mean():.2f} %", flush=True)

    def score(folder, runtime):
        return 100.0 * (cls_default_call.predictions(runtime, model_files(folder), images, args.threads)
                        == labels).mean()

    for case, options in CLS_CASES.items():
        both_ways(f"cls {case}", lambda folder, float_pools: cls_default_call.quantize(
            cls_dir, folder, {**options, "float_pools": float_pools}, 10), score, images[:BATCH_SIZE], args.threads,
            workdir)


def rec_exact(folder, images, labels, threads, *, runtime="onednn"):
    """Exact match (%) of a rec model folder on Paddle Inference oneDNN (int8 for a QDQ model), or the Executor."""
    if runtime == "executor":
        predictor = ppocr.RunnerPredictor(make_runner("executor", *model_files(folder), threads=threads))
    else:
        predictor = ppocr.make_predictor(folder, int8=True, threads=threads)
    return ppocr.evaluate_rec(predictor, images, labels, int8=True, timed=False)["exact"]


def rec_rows(args, workdir):
    rec_dir = Path(ppocr.fetch_models()["rec"])
    images, labels = (list(column) for column in zip(*ppocr.render_lines(args.rec_lines, seed=0)))
    fp32 = ppocr.evaluate_rec(ppocr.make_predictor(rec_dir, int8=False, threads=args.threads), images, labels,
                              int8=False, timed=False)["exact"]
    print(f"rec, {len(labels)} lines, fp32 (oneDNN fp32) {fp32:.2f} % exact match", flush=True)
    for algo in args.rec_algos:
        def quantize(folder, float_pools, algo=algo):
            quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(rec_dir), str(folder),
                             data_loader=lambda: ppocr.calibration_feeds("rec", 10, BATCH_SIZE, 0), algo=algo,
                             batch_nums=10, model_filename="inference.pdmodel", params_filename="inference.pdiparams",
                             float_pools=float_pools, **REC_OPTIONS)

        both_ways(f"rec {algo}", quantize, lambda folder, runtime: rec_exact(folder, images, labels, args.threads,
                                                                            runtime=runtime),
                  ppocr.rec_batch(images[:BATCH_SIZE]), args.threads, workdir)


def main(argv=None):
    args = parse_args(argv)
    cpu = "VNNI/AMX (oneDNN int8 = the simulation)" if int8_dot_product() else "no VNNI/AMX (AVX2 int8 kernels)"
    print(f"CPU: {cpu}", flush=True)
    paddle.enable_static()
    with tempfile.TemporaryDirectory(prefix="float_pools_") as temp, legacy_ir():
        workdir = Path(args.workdir or temp)
        if "cls" in args.models:
            cls_rows(args, workdir)
        if "rec" in args.models:
            rec_rows(args, workdir)


if __name__ == "__main__":
    main()
