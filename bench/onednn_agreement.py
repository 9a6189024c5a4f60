"""How often do oneDNN int8 and the Executor's simulation of one saved PP-OCR model decide alike?

The exact-match gap between two runtimes (issue 14's measure) is the difference of two accuracies: on a
model whose own exact match moves 1-2 points under float32-ulp changes of its parameters (PP-OCRv4 rec
quantized with avg: 72.0-74.3 %, docs/deploy.md) it is mostly noise. This bench measures fidelity
directly on quantized models already saved (``quant_post(..., deploy_backend="onednn")``): the share of
lines (rec: decoded strings) or images (cls: argmax) on which the two runtimes agree, and the mean
|output difference|, beside both accuracies. To compare two versions of the library, build the models
with each (a ``git worktree`` of the older commit on ``PYTHONPATH``) and pass both folders.

    python bench/onednn_agreement.py --kind rec DIR [DIR ...] [--eval-lines 300] [--threads 2]
"""

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "demos"))

from paddle_quant.common.native_output import ignore_paddle_import_notes  # noqa: E402

ignore_paddle_import_notes()

import paddle  # noqa: E402

import ppocr  # noqa: E402 (demos/ppocr.py)
from paddle_quant.common.model_files import model_files  # noqa: E402
from paddle_quant.deploy.runtimes import make_runner  # noqa: E402

BATCH_SIZE = 8


def evaluation(kind, n):
    """(batch array, labels) of the kit's evaluation data: rendered lines (seed 0) or rotated ones."""
    if kind == "rec":
        lines = ppocr.render_lines(n, seed=0)
        return ppocr.rec_batch([image for image, _ in lines]), [text for _, text in lines]
    images, labels = ppocr.cls_dataset(n, 0)
    return ppocr.cls_batch(images), list(labels)


def outputs(runtime, files, batch, threads):
    runner = make_runner(runtime, *files, threads=threads)
    return np.concatenate([runner.run({runner.input_names[0]: batch[i:i + BATCH_SIZE]})[0]
                           for i in range(0, len(batch), BATCH_SIZE)])


def decisions(kind, probs):
    return ppocr.ctc_decode(probs, ppocr.load_charset(ppocr.fetch_models()["rec_dict"])) if kind == "rec" \
        else list(probs.argmax(-1))


def measure(kind, folder, batch, labels, threads):
    files = model_files(Path(folder))
    deployed, simulated = (outputs(runtime, files, batch, threads) for runtime in ("onednn", "executor"))
    dep, sim = decisions(kind, deployed), decisions(kind, simulated)
    share = lambda pairs: 100.0 * float(np.mean([a == b for a, b in pairs]))  # noqa: E731
    return {"deployed": share(zip(dep, labels)), "simulated": share(zip(sim, labels)),
            "agreement": share(zip(dep, sim)), "mean_abs_diff": float(np.abs(deployed - simulated).mean())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="quantized model folders")
    parser.add_argument("--kind", choices=("rec", "cls"), required=True)
    parser.add_argument("--eval-lines", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.getLogger("paddle_quant").setLevel(logging.ERROR)
    paddle.enable_static()
    batch, labels = evaluation(args.kind, args.eval_lines)
    print(f"{args.kind}, {len(labels)} {'lines' if args.kind == 'rec' else 'images'}: deployed / simulated "
          "(% correct), agreement (% decided alike), mean |output difference|")
    for folder in args.folders:
        row = measure(args.kind, folder, batch, labels, args.threads)
        print(f"{folder}: {row['deployed']:.2f} / {row['simulated']:.2f}, agreement {row['agreement']:.2f}, "
              f"mean |diff| {row['mean_abs_diff']:.3g}", flush=True)


if __name__ == "__main__":
    main()
