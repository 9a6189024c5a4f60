"""How much PP-OCRv4 rec's exact match hangs on one bias channel, fp32 and int8 (bias correction's swing).

``quant_post(..., bias_correction=True)`` moves rec's oneDNN int8 exact match by up to 20 points
depending on the algorithm (docs/ptq.md). This bench shows where that comes from:

1. fp32: the shipped model with ``--bias`` channel ``--channel`` shifted by each of ``--deltas``
   (Paddle Inference fp32, exact match and character accuracy on ``ppocr.render_lines(--eval-lines, seed=0)``);
2. int8: ``quant_post`` as bench/onednn_fidelity.py calls it (PaddleSlim's four op types,
   ``deploy_backend="onednn"``, ``--algo``, ``--smooth-depthwise`` when given, 10 batches of 8), once without
   and once with ``bias_correction=True``, deployed on oneDNN int8; then the model without correction
   with the corrected value of ``--bias`` put in, for the whole vector and for ``--channel`` alone;
3. with ``--input-scales``: the int8 model without correction re-made from its own scale table
   (``quant_post(scale_table=...)``, no data) with the activation scale of ``--input`` (the input of the
   conv whose bias it is) set to each value in turn.

    python bench/rec_bias_sensitivity.py [--bias conv2d_158.b_0] [--channel 16]
                                         [--deltas -0.1,-0.03,0.03,0.1] [--algo avg] [--smooth-depthwise]
                                         [--input tmp_40] [--input-scales 2.3,2.42,2.57]
                                         [--eval-lines 300] [--workdir DIR]

The int8 bias is the one the saved model's bias add reads: ``{bias}@folded`` once ``deploy_backend="onednn"``
has folded the affine after it, ``{bias}@corrected@folded`` with the correction.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for _path in (str(REPO / "bench"), str(REPO / "demos"), str(REPO)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import onednn_fidelity as fidelity  # noqa: E402  (Paddle imported there, import notes silenced)
import paddle  # noqa: E402

import paddle_quant as quant  # noqa: E402
import ppocr  # noqa: E402
from _table import print_table  # noqa: E402
from paddle_quant.common.model_files import model_files  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bias", default="conv2d_158.b_0", help="fp32 bias parameter (1-D)")
    parser.add_argument("--channel", type=int, default=16)
    parser.add_argument("--deltas", default="-0.1,-0.03,0.03,0.1", help="comma-separated shifts of the channel")
    parser.add_argument("--algo", default="avg")
    parser.add_argument("--smooth-depthwise", action=argparse.BooleanOptionalAction, default=None,
                        help="quant_post smooth_depthwise=True / False; unset: the onednn backend's default (on)")
    parser.add_argument("--input", default="tmp_40", help="activation tensor whose scale --input-scales sets")
    parser.add_argument("--input-scales", default="", help="comma-separated scales of --input to try (int8)")
    parser.add_argument("--eval-lines", type=int, default=300)
    parser.add_argument("--workdir", default=None, help="where the models are written (default: a temp dir)")
    args = parser.parse_args(argv)
    args.deltas = [float(d) for d in args.deltas.split(",") if d.strip()]
    args.input_scales = [float(v) for v in args.input_scales.split(",") if v.strip()]
    return args


def load(model_dir):
    """(executor, scope, program, feed names, fetch vars) of a saved model (model.pdmodel or inference.pdmodel)."""
    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    prefix = model_files(model_dir)[0].with_suffix("")
    with paddle.static.scope_guard(scope):
        program, feeds, fetches = paddle.static.load_inference_model(str(prefix), exe)
    return exe, scope, program, feeds, fetches


def bias_read_by_model(program, bias):
    """The parameter of ``program`` that stands for ``bias``: itself, or a ``{bias}@...`` copy."""
    names = [v.name for v in program.list_vars() if v.persistable and (v.name == bias or v.name.startswith(bias + "@"))]
    if len(names) != 1:
        raise SystemExit(f"expected one parameter for {bias!r} in the model, found {names}")
    return names[0]


def with_bias(model_dir, bias, values, out_dir):
    """A copy of the model at ``model_dir`` in ``out_dir`` whose ``bias`` (or its copy) holds ``values``."""
    exe, scope, program, feeds, fetches = load(model_dir)
    name = bias_read_by_model(program, bias)
    scope.find_var(name).get_tensor().set(np.asarray(values, np.float32), paddle.CPUPlace())
    with paddle.static.scope_guard(scope):
        paddle.static.save_inference_model(str(Path(out_dir) / "model"), [program.global_block().var(f) for f in feeds],
                                           fetches, exe, program=program)
    return out_dir


def bias_values(model_dir, bias):
    _, scope, program, _, _ = load(model_dir)
    return np.array(scope.find_var(bias_read_by_model(program, bias)).get_tensor())


def with_input_scale(fp32_dir, int8_dir, tensor, scale, out_dir, smooth_depthwise):
    """The int8 model re-made from its scale table with ``tensor``'s scale replaced by ``scale``."""
    table = json.loads((Path(int8_dir) / "scale_table.json").read_text())
    if tensor not in table["tensors"] or table["tensors"][tensor]["kind"] == "weight":
        raise SystemExit(f"--input {tensor!r} is not an activation of the scale table")
    table["tensors"][tensor]["scale"] = [scale]
    path = Path(out_dir).with_suffix(".json")
    path.write_text(json.dumps(table))
    quant.quant_post(executor=paddle.static.Executor(paddle.CPUPlace()), model_dir=str(fp32_dir),
                     quantize_model_path=str(out_dir), model_filename="inference.pdmodel",
                     params_filename="inference.pdiparams", deploy_backend="onednn",
                     quantizable_op_type=fidelity.OP_TYPES["rec"], smooth_depthwise=smooth_depthwise,
                     scale_table=str(path))
    return out_dir


def exact(model_dir, runtime, data):
    metrics = fidelity.score("rec", fidelity.runner(runtime, Path(model_dir), 2), data)
    return f"{metrics['exact']:.2f}", f"{metrics['char']:.2f}"


def main(argv=None):
    args = parse_args(argv)
    paddle.enable_static()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="paddle_quant_bias_"))
    fp32_dir = ppocr.fetch_models()["rec"]
    quant_args = fidelity.parse_args(["--models", "rec", "--algos", args.algo, "--eval-lines", str(args.eval_lines)]
                                     + ([] if args.smooth_depthwise is None else
                                        ["--smooth-depthwise" if args.smooth_depthwise else "--no-smooth-depthwise"]))
    data = fidelity.evaluation_data("rec", quant_args)
    rows = []
    with paddle.pir_utils.OldIrGuard():
        fp32_bias = bias_values(fp32_dir, args.bias)
        rows.append(("fp32", "shipped", "-", *exact(fp32_dir, "paddle_fp32", data)))
        for delta in args.deltas:
            shifted = fp32_bias.copy()
            shifted[args.channel] += delta
            model = with_bias(fp32_dir, args.bias, shifted, work / f"fp32_{delta:+g}")
            rows.append(("fp32", f"{args.bias}[{args.channel}] {delta:+g}", "-", *exact(model, "paddle_fp32", data)))
        plain, corrected = work / "int8", work / "int8_bias_correction"
        fidelity.quantize("rec", fp32_dir, plain, args.algo, quant_args)
        quant_args.bias_correction = True
        fidelity.quantize("rec", fp32_dir, corrected, args.algo, quant_args)
        before, after = bias_values(plain, args.bias), bias_values(corrected, args.bias)
        rows.append(("int8", "no bias correction", "-", *exact(plain, "onednn", data)))
        rows.append(("int8", "bias_correction=True", f"{np.abs(after - before).max():.4f}",
                     *exact(corrected, "onednn", data)))
        whole = with_bias(plain, args.bias, after, work / "int8_corrected_bias_only")
        rows.append(("int8", f"none, but {args.bias} corrected", f"{np.abs(after - before).max():.4f}",
                     *exact(whole, "onednn", data)))
        one = before.copy()
        one[args.channel] = after[args.channel]
        single = with_bias(plain, args.bias, one, work / "int8_corrected_channel_only")
        rows.append(("int8", f"none, but {args.bias}[{args.channel}] corrected",
                     f"{abs(after[args.channel] - before[args.channel]):.4f}", *exact(single, "onednn", data)))
        own = json.loads((plain / "scale_table.json").read_text())["tensors"].get(args.input, {}).get("scale")
        for scale in args.input_scales:
            model = with_input_scale(fp32_dir, plain, args.input, scale, work / f"int8_{args.input}_{scale:g}",
                                     args.smooth_depthwise)
            rows.append(("int8", f"none, {args.input} scale {scale:g} (own {own[0]:.4g})", "-",
                         *exact(model, "onednn", data)))
    print(f"\nPP-OCRv4 rec, {args.eval_lines} lines; int8: algo {args.algo}"
          f"{'' if args.smooth_depthwise is None else f', smooth_depthwise={args.smooth_depthwise}'}, oneDNN int8 "
          f"(|{args.bias}[{args.channel}]| = {abs(fp32_bias[args.channel]):.4f} in fp32)")
    print_table(("model", "bias", "bias change (max)", "exact %", "char %"), rows)
    print(f"models in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
