"""How often do oneDNN int8 and the Executor's simulation of one saved PP-OCR model decide alike?

The exact-match gap between two runtimes (issue 14's measure) is the difference of two accuracies: on a
model whose own exact match moves 1-2 points under float32-ulp changes of its parameters (PP-OCRv4 rec
quantized with avg: 72.0-74.3 %, docs/deploy.md) it is mostly noise. This bench measures fidelity
directly on quantized models already saved (``quant_post(..., deploy_backend="onednn")``): the share of
lines (rec: decoded strings) or images (cls: argmax) on which the two runtimes agree, and the mean
|output difference|, beside both accuracies. To compare two versions of the library, build the models
with each (a ``git worktree`` of the older commit on ``PYTHONPATH``) and pass both folders.

``--noise-floor`` adds, per model, how often the simulation agrees with itself when every float
parameter that is not a quantization scale (biases, folded affine terms) is multiplied by ``1 + u``,
``|u| <= 3e-7`` (a few float32 ulps, the size of the float differences between two runtimes' fused
kernels): where oneDNN's agreement is at that floor, what remains is float rounding amplified by the
network's own rounding thresholds, not an arithmetic rule oneDNN applies and the program does not.

    python bench/onednn_agreement.py --kind rec DIR [DIR ...] [--eval-lines 300] [--threads 2]
                                     [--noise-floor]
"""

import argparse
import functools
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "demos"))

from paddle_quant.common.native_output import ignore_paddle_import_notes  # noqa: E402

ignore_paddle_import_notes()

import paddle  # noqa: E402

import ppocr  # noqa: E402 (demos/ppocr.py)
from paddle_quant.common.model_files import load_inference_program, model_files, save_inference_atomically  # noqa: E402
from paddle_quant.common.program import legacy_ir  # noqa: E402
from paddle_quant.deploy.runtimes import make_runner  # noqa: E402

BATCH_SIZE = 8
NOISE = 3e-7
"""Relative size of the float parameter noise of ``--noise-floor``."""
_QUANT_SUFFIXES = ("@int8", "@scale", "@zero_point")


def evaluation(kind, n):
    """(batch array, labels) of the kit's evaluation data: rendered lines (seed 0) or rotated ones."""
    if kind == "rec":
        lines = ppocr.render_lines(n, seed=0)
        return ppocr.rec_batch([image for image, _ in lines]), [text for _, text in lines]
    images, labels = ppocr.cls_dataset(n, 0)
    return ppocr.cls_batch(images), list(labels)


@functools.lru_cache(maxsize=None)
def rec_charset():
    """The rec dictionary, read once (decisions are made batch by batch)."""
    return ppocr.load_charset(ppocr.fetch_models()["rec_dict"])


def decisions(kind, probs):
    return ppocr.ctc_decode(probs, rec_charset()) if kind == "rec" else list(probs.argmax(-1))


def compare(kind, first_files, second_files, batch, threads, first="onednn", second="executor"):
    """Run two (runtime, model) pairs batch by batch (rec outputs are ~1 MB a line, so nothing is kept but
    the decisions): (first's decisions, second's decisions, mean |output difference|)."""
    runners = [make_runner(first, *first_files, threads=threads), make_runner(second, *second_files, threads=threads)]
    decided, diff_sum, count = ([], []), 0.0, 0
    for i in range(0, len(batch), BATCH_SIZE):
        out = [runner.run({runner.input_names[0]: batch[i:i + BATCH_SIZE]})[0] for runner in runners]
        for mine, probs in zip(decided, out):
            mine.extend(decisions(kind, probs))
        diff_sum += float(np.abs(out[0] - out[1]).sum())
        count += out[0].size
    return decided[0], decided[1], diff_sum / count


def share(pairs):
    return 100.0 * float(np.mean([a == b for a, b in pairs]))


def measure(kind, folder, batch, labels, threads):
    files = model_files(Path(folder))
    dep, sim, diff = compare(kind, files, files, batch, threads)
    return {"deployed": share(zip(dep, labels)), "simulated": share(zip(sim, labels)),
            "agreement": share(zip(dep, sim)), "mean_abs_diff": diff, **net_lines(dep, sim, labels)}


def net_lines(first, second, labels):
    """Lines only the first / only the second decides right: their difference is the accuracy gap, and
    when the two disagree at random it is a draw with standard deviation sqrt(their sum)."""
    only_first = sum(a == t != b for a, b, t in zip(first, second, labels))
    only_second = sum(b == t != a for a, b, t in zip(first, second, labels))
    return {"only_first": only_first, "only_second": only_second}


def perturbed_copy(files, target: Path, seed=0):
    """``files`` saved to ``target`` with each float parameter but the quantization ones times ``1 + u``,
    ``u`` uniform in ``[-NOISE, NOISE]``; returns the new (model, params)."""
    rng = np.random.default_rng(seed)
    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    with legacy_ir():
        program, feed_names, fetch_names = load_inference_program(exe, scope, *files)
        for var in program.list_vars():
            if not var.persistable or var.name in ("feed", "fetch") or var.name.endswith(_QUANT_SUFFIXES):
                continue
            tensor = scope.find_var(var.name).get_tensor()
            values = np.array(tensor)
            if values.dtype == np.float32:
                noise = rng.uniform(-NOISE, NOISE, values.shape).astype(np.float32)
                tensor.set(values * (1 + noise), paddle.CPUPlace())
        return save_inference_atomically(exe, scope, program, feed_names, fetch_names, target)


def noise_floor(kind, folder, batch, labels, threads):
    """The simulation against itself with its float parameters moved by a few ulps: the share of decisions
    it keeps, the perturbed copy's accuracy, and the lines only one of the two decides right."""
    files = model_files(Path(folder))
    with tempfile.TemporaryDirectory(prefix="agreement_noise_") as work:
        noisy = perturbed_copy(files, Path(work) / "noisy")
        base, moved, _ = compare(kind, files, noisy, batch, threads, first="executor", second="executor")
    return {"agreement": share(zip(base, moved)), "perturbed": share(zip(moved, labels)),
            **net_lines(base, moved, labels)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="quantized model folders")
    parser.add_argument("--kind", choices=("rec", "cls"), required=True)
    parser.add_argument("--eval-lines", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--noise-floor", action="store_true",
                        help="also: the simulation against itself with float parameters moved by a few ulps")
    args = parser.parse_args(argv)
    logging.getLogger("paddle_quant").setLevel(logging.ERROR)
    paddle.enable_static()
    batch, labels = evaluation(args.kind, args.eval_lines)
    print(f"{args.kind}, {len(labels)} {'lines' if args.kind == 'rec' else 'images'}: deployed / simulated "
          "(% correct), agreement (% decided alike), mean |output difference|")
    for folder in args.folders:
        row = measure(args.kind, folder, batch, labels, args.threads)
        print(f"{folder}: {row['deployed']:.2f} / {row['simulated']:.2f}, agreement {row['agreement']:.2f}, "
              f"mean |diff| {row['mean_abs_diff']:.3g}; right only deployed {row['only_first']}, only simulated "
              f"{row['only_second']} (net {row['only_first'] - row['only_second']:+d}, chance sd "
              f"{np.sqrt(row['only_first'] + row['only_second']):.1f})", flush=True)
        if args.noise_floor:
            floor = noise_floor(args.kind, folder, batch, labels, args.threads)
            print(f"  noise floor: simulated vs perturbed simulated agreement {floor['agreement']:.2f}, perturbed "
                  f"{floor['perturbed']:.2f}; right only simulated {floor['only_first']}, only perturbed "
                  f"{floor['only_second']} (net {floor['only_first'] - floor['only_second']:+d})", flush=True)


if __name__ == "__main__":
    main()
