"""PP-OCRv4 rec with weight matmuls int8 (before) or float (now) for oneDNN: what an int8 fc costs there.

Paddle Inference's oneDNN int8 fc takes each output column's weight scale from a contiguous run of the
(in, out) weight, not from the column (``common.backends.ONEDNN_FC_REASON``; reproduced exactly by
tests/deploy/test_onednn_fc.py). Since this change ``quant_post(deploy_backend="onednn")`` leaves
mul/matmul/matmul_v2 with weights in float, and drops the output scales oneDNN would pass on to their
inputs. This bench measures, per calibration algorithm, with PaddleSlim's four op types
(``["conv2d", "depthwise_conv2d", "mul", "matmul_v2"]``, issue 14's call), 10 batches of 8, exact match
on ``--eval-lines`` rendered lines (seed 0):

* before: the model quant_post wrote until now (the oneDNN profile without ``float_op_types``, set
  here for the bench only): how many ``fc`` oneDNN runs in int8 (its optimized program), the
  simulated exact match (Executor), and the exact match with every int8 fc weight replaced by what
  oneDNN multiplies (Paddle's rule: integers ``clip(round(W * 127 / M))`` at scale ``M``, the run
  maximum; a model of the int8 fc on a CPU with VNNI/AMX, where its kernels are otherwise exact);
* now: int8 ``fc`` count and simulated exact match of the model quant_post writes now;
* on a CPU with VNNI/AMX, also each model deployed on oneDNN int8.

    python bench/onednn_fc_rule.py [--algos avg,hist] [--eval-lines 300] [--batches 10]
"""

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np

import onednn_fidelity as fidelity  # bench/ (puts demos/ and the repository on sys.path)

import paddle  # noqa: E402

from paddle_quant.common import backends  # noqa: E402
from paddle_quant.common.model_files import load_inference_program, model_files, save_inference_atomically  # noqa: E402
from paddle_quant.common.program import legacy_ir, read_tensor, readers_by_var, write_tensor  # noqa: E402
from paddle_quant.deploy.cpu import int8_dot_product  # noqa: E402

WEIGHT_MATMULS = ("mul", "matmul", "matmul_v2")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", default="avg,hist", help="comma-separated quant_post algos")
    parser.add_argument("--eval-lines", type=int, default=300)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    args.algos = [a for a in args.algos.split(",") if a]
    args.onednn_cpu, args.det_size = "vnni", 640
    return args


def paddles_fc_weights(weight):
    """(integers, per-column scale) oneDNN's int8 fc multiplies for the float ``weight`` (in, out).

    A run of zeros gives its column the weight scale 127 / FLT_MIN, which overflows to inf in float32;
    oneDNN then multiplies the column's sums by 1 / inf = 0: the column reads its bias alone (integers
    0 at scale 0 here)."""
    rows, columns = weight.shape
    run_max = np.abs(weight.reshape(-1)).reshape(columns, rows).max(axis=1).astype(np.float32)
    live = run_max > 0
    ratio = np.float32(127) / np.where(live, run_max, np.float32(1))
    integers = np.where(live[None, :], np.clip(np.round(weight * ratio[None, :]), -128, 127), 0)
    return integers.astype(np.int8), np.where(live, run_max, np.float32(0)).astype(np.float32)


def with_paddles_fc_weights(model_dir, out_dir):
    """A copy of ``model_dir`` whose matmul weights hold the integers and scales oneDNN's fc uses;
    returns how many weights were replaced."""
    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    with legacy_ir():
        program, feeds, fetches = load_inference_program(exe, scope, *model_files(model_dir))
        block, replaced = program.global_block(), 0
        readers = readers_by_var(block)
        for op in block.ops:
            if op.type != "dequantize_linear" or not block.var(op.input("X")[0]).persistable:
                continue
            if not any(r.type in WEIGHT_MATMULS for r in readers.get(op.output("Y")[0], [])):
                continue
            q, scale = read_tensor(scope, op.input("X")[0]), read_tensor(scope, op.input("Scale")[0])
            weight = (q.astype(np.float32) * (scale.astype(np.float32) / np.float32(127))[None, :])
            integers, run_max = paddles_fc_weights(weight)
            write_tensor(scope, paddle.CPUPlace(), op.input("X")[0], integers)
            write_tensor(scope, paddle.CPUPlace(), op.input("Scale")[0], run_max)
            replaced += 1
        save_inference_atomically(exe, scope, program, feeds, fetches, Path(out_dir))
    return replaced


def int8_fc_count(model_dir, threads):
    census = fidelity.int8_ops(model_dir, threads)
    return sum(census.get(t, {}).get("int8", 0) for t in ("fc", "fused_matmul", "matmul", "matmul_v2", "mul"))


def measure(algo, fp32_dir, data, args, workdir, *, before):
    int8_dir = workdir / f"{algo}_{'before' if before else 'now'}"
    original = backends.BACKENDS["onednn"]
    if before:
        backends.BACKENDS["onednn"] = dataclasses.replace(original, float_op_types=())
    try:
        fidelity.quantize("rec", fp32_dir, int8_dir, algo, args)
    finally:
        backends.BACKENDS["onednn"] = original
    row = {"int8 fc": int8_fc_count(int8_dir, args.threads),
           "simulated": fidelity.score("rec", fidelity.runner("executor", int8_dir, args.threads), data)["exact"]}
    if before:
        modelled = workdir / f"{algo}_before_paddles_fc"
        row["replaced"] = with_paddles_fc_weights(int8_dir, modelled)
        row["int8 fc modelled"] = fidelity.score("rec", fidelity.runner("executor", modelled, args.threads),
                                                 data)["exact"]
    if int8_dot_product():
        row["deployed"] = fidelity.score("rec", fidelity.runner("onednn", int8_dir, args.threads), data)["exact"]
    return row


def main(argv=None):
    args = parse_args(argv)
    paddle.enable_static()
    fp32_dir = fidelity.ppocr.fetch_models()["rec"]
    data = fidelity.evaluation_data("rec", args)
    fp32 = fidelity.score("rec", fidelity.runner("paddle_fp32", fp32_dir, args.threads), data)["exact"]
    print(f"rec fp32 (oneDNN) exact match {fp32:.2f} % on {args.eval_lines} lines; int8 dot product on this CPU: "
          f"{int8_dot_product()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="onednn_fc_rule_") as tmp, paddle.pir_utils.OldIrGuard():
        for algo in args.algos:
            for before in (True, False):
                row = measure(algo, fp32_dir, data, args, Path(tmp), before=before)
                print(f"{algo:8s} {'before' if before else 'now':6s} " +
                      "  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
                      flush=True)


if __name__ == "__main__":
    sys.exit(main())
