"""Training-step overhead of quantization-aware training: fp32 vs paddle_quant vs PaddleSlim.

Same network as demos/qat_digits.py (two 3x3 convs, max-pool, fc), batch of seeded random
images. Each variant gets fresh Programs and a fresh Scope; the reported time is the median
of --steps training steps after --warmup steps, the variants' steps interleaved.

    python bench/qat_overhead.py [--steps 50] [--warmup 10] [--batch-size 64] [--image-size 28]
"""

import argparse
import sys
import time

import numpy as np
import paddle

import paddle_quant as quant

QUANT_CONFIG = quant.QuantConfig().to_dict()  # PaddleSlim 2.6's defaults, given to both libraries


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="timed training steps per variant")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps before timing")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=28, help="square input side (8 or 28)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def build_programs(image_size, seed):
    """fp32 training Program (forward + backward + Adam) and its startup Program."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    main.random_seed = startup.random_seed = seed
    with paddle.static.program_guard(main, startup):
        image = paddle.static.data("image", [None, 1, image_size, image_size], "float32")
        label = paddle.static.data("label", [None, 1], "int64")
        x = paddle.nn.functional.relu(paddle.nn.Conv2D(1, 16, 3, padding=1)(image))
        x = paddle.nn.functional.relu(paddle.nn.Conv2D(16, 32, 3, padding=1)(x))
        x = paddle.nn.functional.max_pool2d(x, 2)
        logits = paddle.static.nn.fc(paddle.flatten(x, 1), 10)  # a `mul` op
        loss = paddle.mean(paddle.nn.functional.cross_entropy(logits, label))
        paddle.optimizer.Adam(learning_rate=1e-3).minimize(loss)
    return main, startup, loss


def paddleslim_quant_aware(program, place, config, scope):
    import paddleslim.quant  # optional test dependency, only needed for this column

    return paddleslim.quant.quant_aware(program, place, config, scope=scope, for_test=False)


def paddle_quant_quant_aware(program, place, config, scope):
    return quant.quant_aware(program, place, config, scope=scope, for_test=False)


def prepare_variant(quant_aware, args):
    """(executor, program, loss, scope) for one variant; quant_aware=None means plain fp32."""
    place = paddle.CPUPlace()
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        main, startup, loss = build_programs(args.image_size, args.seed)
        exe = paddle.static.Executor(place)
        exe.run(startup)
        program = main if quant_aware is None else quant_aware(main, place, QUANT_CONFIG, scope)
    return exe, program, loss, scope


def time_variants(runners, args, feeds):
    """Median seconds per training step for each runner, steps interleaved round-robin.

    Interleaving spreads machine noise (frequency changes, other processes) over all
    variants alike instead of biasing whichever ran during a slow stretch.
    """
    times = [[] for _ in runners]
    for step in range(args.warmup + args.steps):
        feed = feeds[step % len(feeds)]
        for (exe, program, loss, scope), samples in zip(runners, times):
            start = time.perf_counter()
            exe.run(program, feed=feed, fetch_list=[loss], scope=scope)
            samples.append(time.perf_counter() - start)
    return [float(np.median(samples[args.warmup:])) for samples in times]


def main(argv=None):
    args = parse_args(argv)
    paddle.enable_static()
    paddle.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    shape = (args.batch_size, 1, args.image_size, args.image_size)
    feeds = [{"image": rng.standard_normal(shape, dtype=np.float32),
              "label": rng.integers(0, 10, (args.batch_size, 1), dtype=np.int64)}
             for _ in range(4)]
    variants = [("fp32", None),
                ("paddle_quant QAT", paddle_quant_quant_aware),
                ("PaddleSlim QAT", paddleslim_quant_aware)]
    with paddle.pir_utils.OldIrGuard():
        runners = [prepare_variant(fn, args) for _, fn in variants]
        medians = dict(zip([name for name, _ in variants], time_variants(runners, args, feeds)))

    base = medians["fp32"]
    print()
    print(f"training step, batch {args.batch_size} x 1 x {args.image_size} x {args.image_size}, "
          f"median of {args.steps} steps after {args.warmup} warm-up")
    print(f"{'variant':<18} | {'ms / step':>10} | {'vs fp32':>8}")
    print(f"{'-' * 18}-+-{'-' * 10}-+-{'-' * 8}")
    for name, seconds in medians.items():
        print(f"{name:<18} | {1000 * seconds:>10.3f} | {seconds / base:>7.2f}x")
    ours, slim = medians["paddle_quant QAT"], medians["PaddleSlim QAT"]
    print(f"paddle_quant QAT / PaddleSlim QAT: {ours / slim:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
