"""Embedding-table quantization: size, reconstruction error and lookup latency, paddle_quant vs PaddleSlim.

One ``lookup_table_v2`` program over a --rows x --dim float32 table, quantized by
paddle_quant (abs_max 8 and 4 bits, log 8 bits, product quantization) and by
PaddleSlim 2.6 (abs_max, log). Reconstruction error is measured through the
Executor: every row id is looked up in the quantized program and compared with
the float table. Latency is the median Executor time of --batch ids.

    python bench/embedding.py [--rows 100000] [--dim 128] [--table embedding_like] [--subspaces 16]
                              [--codebook-size 256] [--iterations 20] [--sample-rows 32768]
                              [--batch 4096] [--repeats 20] [--no-paddleslim]

Tables (--table): ``embedding_like`` (see :func:`embedding_like_table`: clustered,
low-rank, heavy-tailed row norms, outlier dimensions), ``clustered`` (clusters and
heavy-tailed row norms only: the first generator tried, on which PQ does not beat
4-bit abs_max), ``gaussian`` (i.i.d. N(0, 0.1^2)). PQ's k-means is fitted on a
seeded sample of --sample-rows rows, then every row is assigned.
"""

import argparse
import pathlib
import sys
import time

import numpy as np
import paddle

from paddle_quant.embedding.quant_embedding import quant_embedding

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "demos"))
from _table import print_table  # noqa: E402  (demos/_table.py)

TABLE = "emb_w"


def embedding_like_table(rows, dim, seed=0):
    """A table shaped like trained embeddings (fixed recipe, chosen before measuring; see docs/embedding.md).

    100 topic centres in a rank-32 latent space, each row = its topic centre plus
    0.3 x N(0, 1) latent noise, mapped to ``dim`` by a fixed Gaussian matrix
    (low rank, clustered); each row scaled by a lognormal(0, 0.5) factor
    (frequency-dependent, heavy-tailed norms); 2 coordinates scaled by 8
    (outlier dimensions, as in BERT/LLM embeddings); overall scale 0.05.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((100, 32))
    latent = centres[rng.integers(0, 100, rows)] + 0.3 * rng.standard_normal((rows, 32))
    table = latent @ (rng.standard_normal((32, dim)) / np.sqrt(32))
    table *= rng.lognormal(0.0, 0.5, size=(rows, 1))
    table[:, rng.choice(dim, size=2, replace=False)] *= 8.0
    return (0.05 * table).astype(np.float32)


def clustered_table(rows, dim, seed=0):
    """The first generator tried: 100 clusters, 0.3 spread, lognormal(0, 0.5) row norms, scale 0.1 (no low rank)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((100, dim))
    table = centres[rng.integers(0, 100, rows)] + 0.3 * rng.standard_normal((rows, dim))
    table *= rng.lognormal(0.0, 0.5, size=(rows, 1))
    return (0.1 * table).astype(np.float32)


def gaussian_table(rows, dim, seed=0):
    """i.i.d. N(0, 0.1^2): the worst case for product quantization."""
    return (0.1 * np.random.default_rng(seed).standard_normal((rows, dim))).astype(np.float32)


TABLES = {"embedding_like": embedding_like_table, "clustered": clustered_table, "gaussian": gaussian_table}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="table rows (vocabulary size)")
    parser.add_argument("--dim", type=int, default=128, help="embedding width")
    parser.add_argument("--table", choices=sorted(TABLES), default="embedding_like", help="table generator")
    parser.add_argument("--seed", type=int, default=0, help="seed of the table and of k-means")
    parser.add_argument("--subspaces", type=int, default=16, help="PQ sub-vectors per row")
    parser.add_argument("--codebook-size", type=int, default=256, help="PQ centroids per sub-space")
    parser.add_argument("--iterations", type=int, default=20, help="PQ k-means iterations")
    parser.add_argument("--sample-rows", type=int, default=32768, help="rows PQ's k-means is fitted on")
    parser.add_argument("--batch", type=int, default=4096, help="ids per timed lookup")
    parser.add_argument("--repeats", type=int, default=20, help="timed lookups per method (median reported)")
    parser.add_argument("--no-paddleslim", action="store_true", help="skip PaddleSlim's rows")
    return parser.parse_args(argv)


def build_program(rows, dim):
    """``out = lookup_table_v2(emb_w, ids)`` with 1-D int64 ids."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        ids = paddle.static.data("ids", [-1], "int64")
        out = paddle.static.nn.embedding(ids, size=[rows, dim], param_attr=paddle.ParamAttr(name=TABLE))
    return main, out.name


def fresh_scope(table):
    scope = paddle.static.Scope()
    scope.var(TABLE).get_tensor().set(table, paddle.CPUPlace())
    return scope


def persistable_bytes(program, scope):
    """Bytes of the persistable tensors the program reads (the quantized table and its side data)."""
    names = {n for op in program.global_block().ops for n in op.input_arg_names}
    total = 0
    for name in names:
        var = program.global_block().var(name) if program.global_block().has_var(name) else None
        if var is not None and var.persistable:
            total += np.array(scope.find_var(name).get_tensor()).nbytes
    return total


def lookup_all(exe, program, fetch, scope, rows, chunk=25_000):
    with paddle.static.scope_guard(scope):
        parts = [exe.run(program, feed={"ids": np.arange(s, min(s + chunk, rows), dtype=np.int64)},
                         fetch_list=[fetch])[0] for s in range(0, rows, chunk)]
    return np.concatenate(parts)


def lookup_latency_ms(exe, program, fetch, scope, rows, batch, repeats, seed):
    ids = np.random.default_rng(seed).integers(0, rows, batch).astype(np.int64)
    times = []
    with paddle.static.scope_guard(scope):
        for _ in range(repeats + 3):
            start = time.perf_counter()
            exe.run(program, feed={"ids": ids}, fetch_list=[fetch])
            times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times[3:]))


def measure(name, quantize, table, args, exe):
    """Quantize with ``quantize(program, scope) -> (program, fetch)``; return one result row."""
    program, out = build_program(args.rows, args.dim)
    scope = fresh_scope(table)
    start = time.perf_counter()
    quantized, fetch = quantize(program, out, scope)
    seconds = time.perf_counter() - start
    restored = lookup_all(exe, quantized, fetch, scope, args.rows)
    error = np.abs(restored - table)
    size = persistable_bytes(quantized, scope)
    latency = lookup_latency_ms(exe, quantized, fetch, scope, args.rows, args.batch, args.repeats, args.seed)
    return (name, f"{size / 2**20:.2f}", f"{table.nbytes / size:.1f}x", f"{error.max():.4g}", f"{error.mean():.4g}",
            f"{np.mean(error ** 2):.4g}", f"{latency:.2f}", f"{seconds:.1f}")


def ours(config):
    def quantize(program, out, scope):
        return quant_embedding(program, paddle.CPUPlace(), dict(config, params_name=TABLE), scope=scope), out
    return quantize


def paddleslim(quantize_type):
    def quantize(program, out, scope):
        from paddleslim.quant import quant_embedding as slim_quant_embedding

        config = {"quantize_op_types": ["lookup_table_v2"],
                  "lookup_table_v2": {"quantize_type": quantize_type, "quantize_bits": 8, "dtype": "int8"}}
        return slim_quant_embedding(program, paddle.CPUPlace(), config, scope=scope), f"{out}.dequantize"
    return quantize


def fp32(program, out, scope):
    return program, out


def variants(args):
    pq = {"quantize_type": "product_quantization", "subspaces": args.subspaces, "codebook_size": args.codebook_size,
          "iterations": args.iterations, "seed": args.seed, "sample_rows": args.sample_rows}
    rows = [("fp32", fp32), ("paddle_quant abs_max 8", ours({"quantize_type": "abs_max"})),
            ("paddle_quant abs_max 4", ours({"quantize_type": "abs_max", "quantize_bits": 4})),
            ("paddle_quant log 8", ours({"quantize_type": "log"})),
            (f"paddle_quant PQ {args.subspaces}x{args.codebook_size}", ours(pq))]
    if not args.no_paddleslim:
        rows += [("PaddleSlim abs_max 8", paddleslim("abs_max")), ("PaddleSlim log 8", paddleslim("log"))]
    return rows


def main(argv=None):
    args = parse_args(argv)
    with paddle.pir_utils.OldIrGuard():
        paddle.enable_static()
        table = TABLES[args.table](args.rows, args.dim, args.seed)
        exe = paddle.static.Executor(paddle.CPUPlace())
        results = [measure(name, quantize, table, args, exe) for name, quantize in variants(args)]
    print(f"table {args.table} {args.rows}x{args.dim} float32 ({table.nbytes / 2**20:.1f} MiB), "
          f"lookup batch {args.batch}, median of {args.repeats}")
    print_table(("method", "MiB", "compression", "max |err|", "mean |err|", "MSE", "lookup ms", "quantize s"),
                results)


if __name__ == "__main__":
    main()
