"""quant_embedding on a bag-of-words text classifier: abs_max, log and product quantization side by side.

The corpus is generated (seeded, no download): --classes topics, each with 40
signal words; a document is --tokens words, each a signal word of its topic with
probability 0.2 and otherwise a Zipf-distributed background word. The model is
``embedding(--vocab x --dim) -> mean over tokens -> fc``, trained with Adam.
The inference program is then quantized three ways and evaluated on held-out
documents with the Executor.

    python demos/quant_embedding_demo.py [--vocab 5000] [--dim 64] [--epochs 4] [--seed 0]

Prints, for fp32 and each method: table bytes, size reduction, reconstruction
MSE / max error of the table, and test accuracy. Exits with status 1 if a
method loses more than --max-drop accuracy points.
"""

import argparse
import logging
import sys

import numpy as np
from paddle_quant.common.native_output import ignore_paddle_import_notes

ignore_paddle_import_notes()  # before Paddle is imported: its ccache warning means nothing here

import paddle  # noqa: E402 (after the warning filter)

from _table import print_table  # demos/_table.py, next to this file
from paddle_quant.embedding.quant_embedding import quant_embedding

TABLE = "word_emb"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=5000, help="vocabulary size (table rows)")
    parser.add_argument("--dim", type=int, default=64, help="embedding width")
    parser.add_argument("--classes", type=int, default=4, help="number of topics")
    parser.add_argument("--tokens", type=int, default=20, help="words per document")
    parser.add_argument("--train-docs", type=int, default=6000)
    parser.add_argument("--test-docs", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=4, help="training epochs")
    parser.add_argument("--subspaces", type=int, default=8, help="PQ sub-vectors per row")
    parser.add_argument("--seed", type=int, default=0, help="seed of corpus, init and shuffling")
    parser.add_argument("--max-drop", type=float, default=5.0, help="allowed accuracy drop, points")
    return parser.parse_args(argv)


def make_corpus(args, docs, rng):
    """(ids [docs, tokens] int64, labels [docs, 1] int64) from the topic/background model."""
    topic_words = np.random.default_rng(args.seed).choice(args.vocab, size=(args.classes, 40), replace=False)
    zipf = 1.0 / np.arange(1, args.vocab + 1)
    background = rng.choice(args.vocab, size=(docs, args.tokens), p=zipf / zipf.sum())
    labels = rng.integers(0, args.classes, docs)
    signal = topic_words[labels[:, None], rng.integers(0, 40, (docs, args.tokens))]
    ids = np.where(rng.random((docs, args.tokens)) < 0.2, signal, background)
    return ids.astype(np.int64), labels.reshape(-1, 1).astype(np.int64)


def build(args):
    """(train program, inference program, startup, logits name, embedding output name, loss)."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    main.random_seed = startup.random_seed = args.seed
    with paddle.static.program_guard(main, startup):
        ids = paddle.static.data("ids", [-1, args.tokens], "int64")
        label = paddle.static.data("label", [-1, 1], "int64")
        emb = paddle.static.nn.embedding(ids, size=[args.vocab, args.dim], param_attr=paddle.ParamAttr(name=TABLE))
        logits = paddle.static.nn.fc(paddle.mean(emb, axis=1), args.classes)
        loss = paddle.mean(paddle.nn.functional.cross_entropy(logits, label))
        infer = main.clone(for_test=True)
        paddle.optimizer.Adam(learning_rate=0.01).minimize(loss)
    return main, infer, startup, logits.name, emb.name, loss


def train(exe, main, loss, data, args, rng):
    ids, labels = data
    for _ in range(args.epochs):
        order = rng.permutation(len(ids))
        for start in range(0, len(ids), 64):
            batch = order[start:start + 64]
            exe.run(main, feed={"ids": ids[batch], "label": labels[batch]}, fetch_list=[loss])


def accuracy(exe, program, logits, data):
    ids, labels = data
    (out,) = exe.run(program, feed={"ids": ids, "label": labels}, fetch_list=[logits])
    return 100.0 * float(np.mean(out.argmax(1) == labels[:, 0]))


def table_bytes(program, scope):
    """Bytes of the persistable tensors derived from the table that the program reads (table, scales, codes...)."""
    block = program.global_block()
    read = {name for op in block.ops for name in op.input_arg_names}
    return sum(np.array(scope.find_var(name).get_tensor()).nbytes for name in read
               if name.startswith(TABLE) and block.var(name).persistable)


def restored_table(exe, program, emb, args):
    """Every row of the (quantized) table, read back through the program's lookup output ``emb``."""
    ids = np.resize(np.arange(args.vocab, dtype=np.int64), (-(-args.vocab // args.tokens), args.tokens))
    (rows,) = exe.run(program, feed={"ids": ids, "label": np.zeros((len(ids), 1), np.int64)}, fetch_list=[emb])
    return rows.reshape(-1, args.dim)[: args.vocab]


METHODS = {
    "abs_max 8": {"quantize_type": "abs_max"},
    "log 8": {"quantize_type": "log"},
    "PQ": {"quantize_type": "product_quantization", "codebook_size": 256, "iterations": 20},
}


def main(argv=None):
    args = parse_args(argv)
    logging.getLogger("paddle_quant").setLevel(logging.WARNING)  # the demo prints its own lines
    rng = np.random.default_rng(args.seed)
    train_data, test_data = make_corpus(args, args.train_docs, rng), make_corpus(args, args.test_docs, rng)
    with paddle.pir_utils.OldIrGuard():
        paddle.enable_static()
        main_program, infer, startup, logits, emb, loss = build(args)
        exe = paddle.static.Executor(paddle.CPUPlace())
        exe.run(startup)
        train(exe, main_program, loss, train_data, args, rng)
        table = restored_table(exe, infer, emb, args)
        fp32_bytes, fp32_acc = table_bytes(infer, paddle.static.global_scope()), accuracy(exe, infer, logits, test_data)
        rows = [("fp32", f"{fp32_bytes / 1024:.0f}", "1.0x", "0", "0", f"{fp32_acc:.1f}")]
        worst = 0.0
        for name, method in METHODS.items():
            config = dict(method, params_name=TABLE, **({"subspaces": args.subspaces} if "PQ" in name else {}))
            quantized = quant_embedding(infer, paddle.CPUPlace(), config)
            error = restored_table(exe, quantized, emb, args) - table
            size, acc = table_bytes(quantized, paddle.static.global_scope()), accuracy(exe, quantized, logits, test_data)
            label = f"PQ {args.subspaces}x256" if name == "PQ" else name
            rows.append((label, f"{size / 1024:.0f}", f"{fp32_bytes / size:.1f}x", f"{np.mean(error ** 2):.3g}",
                         f"{np.abs(error).max():.3g}", f"{acc:.1f}"))
            worst = max(worst, fp32_acc - acc)
    print(f"bag-of-words classifier: vocab {args.vocab} x dim {args.dim}, {args.classes} classes, "
          f"{args.test_docs} test documents")
    print_table(("table", "KiB", "reduction", "recon MSE", "max |err|", "accuracy %"), rows)
    return 1 if worst > args.max_drop else 0


if __name__ == "__main__":
    sys.exit(main())
