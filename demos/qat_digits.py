"""Quantization-aware training of a small CNN on scikit-learn's digits, end to end.

fp32 training -> quant_aware (after minimize, as PaddleSlim does) -> QAT fine-tuning
-> convert -> save_inference_model -> Paddle Inference on CPU with oneDNN, fp32 vs int8.

    python demos/qat_digits.py [--epochs 10] [--qat-epochs 2] [--seed 0] [--out out/qat_digits]

Exits with status 1 when the int8 model's accuracy is more than --max-drop points under fp32.
"""

import argparse
import logging
import os
import sys
import time

import numpy as np
from paddle_quant.common.native_output import ignore_paddle_import_notes

ignore_paddle_import_notes()  # before Paddle is imported: its ccache warning means nothing here

import paddle  # noqa: E402 (after the warning filter)
import paddle.inference as paddle_infer
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import paddle_quant as quant
from paddle_quant.common.program import legacy_ir
from paddle_quant.deploy.runtimes import create_predictor as quiet_predictor
from _table import print_table  # demos/_table.py, next to this file

QUANT_CONFIG = {
    "weight_quantize_type": "channel_wise_abs_max",
    "activation_quantize_type": "moving_average_abs_max",
    "weight_bits": 8,
    "activation_bits": 8,
    "quantize_op_types": ["conv2d", "depthwise_conv2d", "mul"],
    "onnx_format": True,
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="fp32 training epochs")
    parser.add_argument("--qat-epochs", type=int, default=2, help="QAT fine-tuning epochs")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split, init and shuffling")
    parser.add_argument("--out", default=os.path.join("out", "qat_digits"), help="output folder")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch size")
    parser.add_argument("--infer-batch", type=int, default=64, help="inference batch size")
    parser.add_argument("--repeats", type=int, default=200, help="timed inference runs")
    parser.add_argument("--max-drop", type=float, default=1.0, help="allowed accuracy drop (points)")
    return parser.parse_args(argv)


def load_data(seed):
    """Digits as float32 NCHW in [0, 1], split 70/30 with a seeded, stratified split."""
    digits = load_digits()
    images = (digits.images / 16.0).astype("float32")[:, None, :, :]
    labels = digits.target.astype("int64")[:, None]
    return train_test_split(images, labels, test_size=0.3, random_state=seed, stratify=labels)


def build_programs(seed, lr=1e-3):
    """Two 3x3 convs with max-pooling, then one fc; Adam on cross-entropy.

    Returns (train_program, test_program, startup_program, image, label, logits, loss, acc).
    test_program is cloned before minimize(), so it holds the forward pass only.
    """
    paddle.seed(seed)  # nn.Conv2D initialises from the global generator, not the program's seed
    train_program, startup_program = paddle.static.Program(), paddle.static.Program()
    train_program.random_seed = startup_program.random_seed = seed
    with paddle.static.program_guard(train_program, startup_program):
        image = paddle.static.data("image", [None, 1, 8, 8], "float32")
        label = paddle.static.data("label", [None, 1], "int64")
        x = paddle.nn.functional.relu(paddle.nn.Conv2D(1, 16, 3, padding=1)(image))
        x = paddle.nn.functional.relu(paddle.nn.Conv2D(16, 32, 3, padding=1)(x))
        x = paddle.nn.functional.max_pool2d(x, 2)  # 32 x 4 x 4
        logits = paddle.static.nn.fc(paddle.flatten(x, 1), 10)  # a `mul` op
        loss = paddle.mean(paddle.nn.functional.cross_entropy(logits, label))
        acc = paddle.static.accuracy(paddle.nn.functional.softmax(logits), label)
        test_program = train_program.clone(for_test=True)
        paddle.optimizer.Adam(learning_rate=lr).minimize(loss)
    return train_program, test_program, startup_program, image, label, logits, loss, acc


def batches(images, labels, batch_size, rng=None):
    order = rng.permutation(len(images)) if rng is not None else np.arange(len(images))
    for start in range(0, len(images), batch_size):
        idx = order[start:start + batch_size]
        yield {"image": images[idx], "label": labels[idx]}


def train(exe, program, data, fetch, epochs, batch_size, rng, tag):
    images, labels = data
    for epoch in range(epochs):
        losses = [exe.run(program, feed=feed, fetch_list=fetch)[0]
                  for feed in batches(images, labels, batch_size, rng)]
        print(f"  [{tag}] epoch {epoch + 1}/{epochs}  loss {float(np.mean(losses)):.4f}")


def evaluate(exe, program, data, acc, batch_size=256):
    images, labels = data
    hits = sum(float(exe.run(program, feed=feed, fetch_list=[acc])[0]) * len(feed["label"])
               for feed in batches(images, labels, batch_size))
    return 100.0 * hits / len(images)


def save_model(folder, image, logits, exe, program):
    """Save with save_inference_model; returns (model_file, params_file)."""
    prefix = os.path.join(folder, "model")
    paddle.static.save_inference_model(prefix, [image], [logits], exe, program=program)
    return prefix + ".pdmodel", prefix + ".pdiparams"


def create_predictor(model_file, params_file, int8):
    config = paddle_infer.Config(model_file, params_file)
    config.disable_gpu()
    config.enable_onednn()
    if int8:
        config.enable_onednn_int8()
    config.set_cpu_math_library_num_threads(os.cpu_count() or 1)
    config.disable_glog_info()
    return quiet_predictor(config)  # paddle_quant's: the passes' native statistics go to the DEBUG log


def predict(predictor, images):
    input_handle = predictor.get_input_handle(predictor.get_input_names()[0])
    input_handle.reshape(list(images.shape))
    input_handle.copy_from_cpu(np.ascontiguousarray(images))
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


def benchmark(model_file, params_file, int8, data, batch_size, repeats):
    """Accuracy (%) over data and median latency (ms) of one full batch."""
    predictor = create_predictor(model_file, params_file, int8)
    images, labels = data
    logits = np.concatenate([predict(predictor, images[i:i + batch_size])
                             for i in range(0, len(images), batch_size)])
    accuracy = 100.0 * float(np.mean(logits.argmax(axis=1) == labels[:, 0]))
    batch = images[:batch_size]
    for _ in range(10):
        predict(predictor, batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict(predictor, batch)
        times.append(time.perf_counter() - start)
    size_kb = (os.path.getsize(model_file) + os.path.getsize(params_file)) / 1024.0
    return accuracy, size_kb, 1000.0 * float(np.median(times))


def print_results(rows, batch_size):
    header = ("model", "accuracy (%)", "size on disk (KB)", f"latency / batch of {batch_size} (ms)")
    print_table(header, rows)


def main(argv=None):
    args = parse_args(argv)
    logging.getLogger("paddle_quant").setLevel(logging.WARNING)  # the demo prints its own lines
    paddle.enable_static()
    paddle.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x_train, x_test, y_train, y_test = load_data(args.seed)
    print(f"digits: {len(x_train)} train / {len(x_test)} test images (8x8)")
    place = paddle.CPUPlace()
    with legacy_ir():  # OldIrGuard, and Paddle's Executor banner sent to the DEBUG log
        train_program, test_program, startup, image, label, logits, loss, acc = build_programs(args.seed)
        exe = paddle.static.Executor(place)
        exe.run(startup)

        print(f"fp32 training, {args.epochs} epochs")
        train(exe, train_program, (x_train, y_train), [loss], args.epochs, args.batch_size, rng, "fp32")
        print(f"  fp32 accuracy (executor): {evaluate(exe, test_program, (x_test, y_test), acc):.2f}%")
        fp32_files = save_model(os.path.join(args.out, "fp32"), image, logits, exe, test_program)

        # PaddleSlim's order: quant_aware after minimize(); both programs before fine-tuning.
        test_quant_program = quant.quant_aware(test_program, place, QUANT_CONFIG, for_test=True)
        train_quant_program = quant.quant_aware(train_program, place, QUANT_CONFIG, for_test=False)
        print(f"QAT fine-tuning, {args.qat_epochs} epochs")
        train(exe, train_quant_program, (x_train, y_train), [loss], args.qat_epochs,
              args.batch_size, rng, "qat")
        qat_acc = evaluate(exe, test_quant_program, (x_test, y_test), acc)
        print(f"  QAT accuracy (executor, fake-quant): {qat_acc:.2f}%")

        int8_program = quant.convert(test_quant_program, place, QUANT_CONFIG)
        int8_files = save_model(os.path.join(args.out, "int8"), image, logits, exe, int8_program)
    print(f"saved: {os.path.dirname(fp32_files[0])}  {os.path.dirname(int8_files[0])}")

    test_data = (x_test, y_test)
    fp32 = benchmark(*fp32_files, False, test_data, args.infer_batch, args.repeats)
    int8 = benchmark(*int8_files, True, test_data, args.infer_batch, args.repeats)
    print()
    print_results([("fp32 (oneDNN)", f"{fp32[0]:.2f}", f"{fp32[1]:.1f}", f"{fp32[2]:.3f}"),
                 ("QAT int8 (oneDNN int8)", f"{int8[0]:.2f}", f"{int8[1]:.1f}", f"{int8[2]:.3f}")],
                args.infer_batch)
    drop = fp32[0] - int8[0]
    if drop > args.max_drop:
        print(f"FAIL: int8 accuracy is {drop:.2f} points under fp32 (allowed {args.max_drop})")
        return 1
    print(f"OK: int8 accuracy within {args.max_drop} point(s) of fp32 (difference {drop:+.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
