"""Dygraph quantization-aware training of a small CNN on scikit-learn's digits, end to end, on 1 or N processes.

fp32 training of a ``paddle.nn.Layer`` -> ``paddle_quant.QAT().quantize(model)`` -> QAT fine-tuning ->
``save_quantized_model`` (a legacy .pdmodel) -> Paddle Inference on CPU with oneDNN, fp32 vs int8.

    python demos/dygraph_qat_digits.py [--nproc 1] [--epochs 10] [--qat-epochs 3] [--seed 0]
                                       [--out out/dygraph_qat_digits] [--reference RESULTS_JSON]

With ``--nproc 2`` the same script trains data-parallel on two CPU processes
(``python -m paddle.distributed.launch``, gloo; each rank takes half of every batch) and checks
that both ranks hold identical quantization scales. ``--reference`` compares the run with the
results.json of an earlier run (e.g. the single-process one): accuracy and scales.

Exits with status 1 when the int8 model is more than --max-drop points under fp32 (on a CPU without
VNNI: the simulated int8 accuracy, see docs/deploy.md), when the ranks' scales differ, or when the
reference's accuracy differs by more than --max-drop.
"""

import argparse
import json
import logging
import os
import subprocess
import sys

import numpy as np
from paddle_quant.common.native_output import ignore_paddle_import_notes

ignore_paddle_import_notes()  # before Paddle is imported: its ccache warning means nothing here

import paddle  # noqa: E402 (after the warning filter)
import paddle.distributed as dist  # noqa: E402
from paddle import nn  # noqa: E402

import paddle_quant as quant  # noqa: E402
from paddle_quant.deploy.cpu import int8_dot_product  # noqa: E402
from _table import print_table  # noqa: E402 (demos/_table.py, next to this file)
from qat_digits import benchmark, load_data  # noqa: E402 (the static QAT demo, next to this file)

SPEC = [paddle.static.InputSpec([None, 1, 8, 8], "float32", "image")]
QAT_CONFIG = {"weight_quantize_type": "channel_wise_abs_max", "activation_quantize_type": "moving_average_abs_max"}


class DigitsCNN(nn.Layer):
    """conv 1->16 -> relu -> conv 16->32 -> relu -> max pool -> linear 512->64 -> relu -> linear 64->10."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2D(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2D(16, 32, 3, padding=1),
                                      nn.ReLU(), nn.MaxPool2D(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, image):
        return self.classifier(self.features(image))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=1, help="data-parallel CPU processes")
    parser.add_argument("--epochs", type=int, default=10, help="fp32 training epochs")
    parser.add_argument("--qat-epochs", type=int, default=3, help="QAT fine-tuning epochs")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split, init and shuffling")
    parser.add_argument("--out", default=os.path.join("out", "dygraph_qat_digits"), help="output folder")
    parser.add_argument("--batch-size", type=int, default=64, help="global training batch size")
    parser.add_argument("--infer-batch", type=int, default=64, help="inference batch size")
    parser.add_argument("--repeats", type=int, default=200, help="timed inference runs")
    parser.add_argument("--max-drop", type=float, default=1.0, help="allowed accuracy drop (points)")
    parser.add_argument("--reference", default=None, help="results.json of another run to compare with")
    return parser.parse_args(argv)


# ------------------------------------------------------------------ training (every rank)
def _rank_and_ranks():
    if int(os.environ.get("PADDLE_TRAINERS_NUM", "1")) > 1:
        dist.init_parallel_env()
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _train(model, trained, data, epochs, lr, args, rank, ranks, seed):
    """SGD with momentum over shuffled global batches; each rank takes its contiguous slice of every batch.

    ``trained`` is ``model`` or the one ``paddle.DataParallel`` around it (a second DataParallel on the same
    parameters would leave the first one's gradient hooks behind).
    """
    optimizer = paddle.optimizer.Momentum(learning_rate=lr, momentum=0.9, parameters=model.parameters())
    images, labels = data
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(images))
        for start in range(0, len(order) - args.batch_size + 1, args.batch_size):
            share = args.batch_size // ranks
            part = order[start + rank * share:start + (rank + 1) * share]
            loss = nn.functional.cross_entropy(trained(paddle.to_tensor(images[part])), paddle.to_tensor(labels[part]))
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
    model.eval()


def _accuracy(model, data):
    images, labels = data
    with paddle.no_grad():
        logits = model(paddle.to_tensor(images)).numpy()
    return 100.0 * float(np.mean(logits.argmax(axis=1) == labels[:, 0]))


def _input_scales(model):
    return {name: float(value.numpy()[0]) for name, value in model.state_dict().items()
            if name.endswith("_fake_quant_input._scale")}


def train_and_save(args):
    """fp32 training, QAT, saving (rank 0); every rank writes its scales and accuracies to rank{r}.json."""
    paddle.set_device("cpu")
    rank, ranks = _rank_and_ranks()
    paddle.seed(args.seed)
    x_train, x_test, y_train, y_test = load_data(args.seed)
    model = DigitsCNN()
    trained = paddle.DataParallel(model) if ranks > 1 else model
    _train(model, trained, (x_train, y_train), args.epochs, 0.05, args, rank, ranks, args.seed)
    fp32_accuracy = _accuracy(model, (x_test, y_test))
    if rank == 0:
        with paddle.pir_utils.OldIrGuard():  # Paddle Inference runs int8 only from legacy .pdmodel files
            paddle.jit.save(model, os.path.join(args.out, "fp32", "model"), input_spec=SPEC)
    qat = quant.QAT(QAT_CONFIG)
    qat.quantize(model)  # in place: the DataParallel around it now runs the quantized layers
    _train(model, trained, (x_train, y_train), args.qat_epochs, 0.01, args, rank, ranks, args.seed + 1)
    qat_accuracy = _accuracy(model, (x_test, y_test))
    if rank == 0:
        qat.save_quantized_model(model, os.path.join(args.out, "int8", "model"), input_spec=SPEC)
    with open(os.path.join(args.out, f"rank{rank}.json"), "w") as file:
        json.dump({"fp32_accuracy": fp32_accuracy, "qat_accuracy": qat_accuracy, "scales": _input_scales(model)}, file)


# ------------------------------------------------------------------ launching and reporting (one process)
def _launch(args, argv):
    log_dir = os.path.join(args.out, "log")
    command = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(args.nproc), "--log_dir",
               log_dir, os.path.abspath(__file__), *argv]
    print(f"data-parallel training on {args.nproc} CPU processes (logs: {log_dir})")
    os.makedirs(log_dir, exist_ok=True)
    with open(os.path.join(log_dir, "launch.log"), "w") as launcher_log:
        status = subprocess.run(command, stdout=launcher_log, stderr=subprocess.STDOUT).returncode
    if status != 0:
        raise SystemExit(f"FAIL: the data-parallel run failed; see {log_dir}/launch.log and workerlog.*")


def _check_ranks(args):
    runs = [json.load(open(os.path.join(args.out, f"rank{r}.json"))) for r in range(args.nproc)]
    identical = all(run["scales"] == runs[0]["scales"] for run in runs)
    if args.nproc > 1:
        print(f"scales on the {args.nproc} ranks: {'identical' if identical else 'DIFFERENT'} "
              f"({len(runs[0]['scales'])} input scales)")
    return runs[0], identical


def _compare_reference(args, run):
    reference = json.load(open(args.reference))
    drop = abs(reference["qat_accuracy"] - run["qat_accuracy"])
    worst = max(abs(run["scales"][k] - v) / v for k, v in reference["scales"].items())
    print(f"vs {args.reference}: QAT accuracy {run['qat_accuracy']:.2f} vs {reference['qat_accuracy']:.2f}, "
          f"largest relative scale difference {worst:.2e}")
    return drop <= args.max_drop


def report(args, run):
    folder = lambda kind: os.path.join(args.out, kind)  # noqa: E731
    files = {kind: (os.path.join(folder(kind), "model.pdmodel"), os.path.join(folder(kind), "model.pdiparams"))
             for kind in ("fp32", "int8")}
    x_train, x_test, y_train, y_test = load_data(args.seed)
    fp32 = benchmark(*files["fp32"], False, (x_test, y_test), args.infer_batch, args.repeats)
    int8 = benchmark(*files["int8"], True, (x_test, y_test), args.infer_batch, args.repeats)
    print()
    print_table(("model", "accuracy (%)", "size on disk (KB)", f"latency / batch of {args.infer_batch} (ms)"), [
        ("fp32 (dygraph)", f"{run['fp32_accuracy']:.2f}", "", ""),
        ("fp32 (oneDNN)", f"{fp32[0]:.2f}", f"{fp32[1]:.1f}", f"{fp32[2]:.3f}"),
        ("QAT int8 simulated (dygraph eval)", f"{run['qat_accuracy']:.2f}", "", ""),
        ("QAT int8 (oneDNN int8)", f"{int8[0]:.2f}", f"{int8[1]:.1f}", f"{int8[2]:.3f}")])
    deployed = int8[0]
    if not int8_dot_product():
        print("NOTE: this CPU has no VNNI/AMX, so oneDNN's int8 kernels differ from the simulation here "
              "(docs/deploy.md); the check uses the simulated int8 accuracy")
        deployed = run["qat_accuracy"]
    return fp32[0] - deployed


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.getLogger("paddle_quant").setLevel(logging.WARNING)  # the demo prints its own lines
    os.makedirs(args.out, exist_ok=True)
    if int(os.environ.get("PADDLE_TRAINERS_NUM", "1")) > 1:  # a rank started by the launcher
        train_and_save(args)
        return 0
    if args.nproc > 1:
        _launch(args, argv)
    else:
        train_and_save(args)
    run, identical = _check_ranks(args)
    drop = report(args, run)
    ok = identical and drop <= args.max_drop
    if args.reference:
        ok = _compare_reference(args, run) and ok
    with open(os.path.join(args.out, "results.json"), "w") as file:
        json.dump(run, file)
    print(("OK" if ok else "FAIL") + f": int8 accuracy {drop:+.2f} points from fp32 (allowed {args.max_drop})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
