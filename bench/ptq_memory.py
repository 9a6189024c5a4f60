"""Peak memory of quant_post on PP-OCRv4 rec, against the plain forward pass, in fresh processes.

Each measurement runs in its own process (``--child``): it renders the calibration batches first,
then resets the kernel's peak-RSS mark (``/proc/self/clear_refs``) and reads ``VmHWM`` after the
call, so "added" is the peak resident memory the call itself added on top of the process as it was
(Paddle imported, model files cached, data rendered). Printed:

* forward: the Executor running the fp32 model over the batches (what calibration must cost at least);
* quant_post per algorithm, 10 and 100 batches (100 cycles the 10 rendered ones: memory, not
  accuracy, is measured), as MB added and as a ratio to the forward;
* repeated calls in one process (a sweep over algorithms): the peak each call adds, and the RSS
  left after each (what a call keeps).

    python bench/ptq_memory.py [--algos hist,KL,avg,emd,mse,abs_max] [--batches 10,100] [--repeat 3] [--trials 3]

Linux only (``/proc``). Goals (issue 13): a call adds <= 0.5 GB on rec; 100 vs 10 batches <= 1.05x;
a second call in the same process adds <= 0.1 GB.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "demos"))

BATCH_SIZE = 8
RENDERED_BATCHES = 10


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", default="hist,KL,avg,emd,mse,abs_max", help="comma-separated algorithms")
    parser.add_argument("--batches", default="10,100", help="comma-separated batch counts")
    parser.add_argument("--repeat", type=int, default=3, help="quant_post calls in one process (sweep)")
    parser.add_argument("--trials", type=int, default=1,
                        help="fresh processes per figure, median reported (native allocation varies by ~±25 MB "
                             "from process to process)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---------------------------------------------------------------- in the measured process
def _status_mb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak():
    Path("/proc/self/clear_refs").write_text("5")


def _measure(call):
    """(MB of peak RSS ``call()`` added, MB of RSS it left) relative to the RSS just before it."""
    import gc

    gc.collect()
    before = _status_mb("VmRSS")
    _reset_peak()
    call()
    peak = _status_mb("VmHWM")
    gc.collect()
    return peak - before, _status_mb("VmRSS") - before


def _batches(n):
    import ppocr

    rendered = list(ppocr.calibration_feeds("rec", RENDERED_BATCHES, BATCH_SIZE, 0))
    return lambda: (rendered[i % len(rendered)] for i in range(n))


def child_forward(n):
    import paddle
    import ppocr

    paddle.enable_static()
    feeds = _batches(n)
    model = ppocr.fetch_models()["rec"]

    def forward():
        with paddle.pir_utils.OldIrGuard():
            exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
            with paddle.static.scope_guard(scope):
                program, _, fetches = paddle.static.load_inference_model(str(model / "inference"), exe)
                for feed in feeds():
                    exe.run(program, feed=feed, fetch_list=fetches)

    return {"added": _measure(forward)}


def child_quant_post(algos, n):
    import paddle
    import ppocr

    import paddle_quant as quant

    paddle.enable_static()
    feeds = _batches(n)
    model = ppocr.fetch_models()["rec"]
    out = Path(tempfile.mkdtemp(prefix="ptq_memory_"))
    calls = []
    for index, algo in enumerate(algos):
        def call():
            quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(model), str(out / f"{index}"),
                             data_loader=feeds, algo=algo, batch_nums=n, quantizable_op_type=["conv2d"],
                             output_scales="none", deploy_backend="onednn")
        calls.append(_measure(call))
    return {"calls": calls}


# ---------------------------------------------------------------- the table
def median(pairs):
    """Element-wise median of (added, kept) pairs from several processes."""
    import statistics

    return tuple(statistics.median(values) for values in zip(*pairs))


def run_child(*args):
    done = subprocess.run([sys.executable, __file__, "--child", *map(str, args)], capture_output=True, text=True,
                          check=False, env={**os.environ, "PYTHONPATH": str(REPO)})
    if done.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        kind, *rest = args.child
        result = child_forward(int(rest[0])) if kind == "forward" else child_quant_post(rest[1].split(","), int(rest[0]))
        print(json.dumps(result))
        return
    from _table import print_table

    algos, counts = args.algos.split(","), [int(c) for c in args.batches.split(",")]
    forward = {n: median([run_child("forward", n)["added"] for _ in range(args.trials)])[0] for n in counts}
    rows = [("forward (Executor, fp32)", str(n), f"{forward[n]:.0f}", "1.00", "-") for n in counts]
    per_algo = {}
    for algo in algos:
        for n in counts:
            added, kept = median([run_child("quant_post", n, algo)["calls"][0] for _ in range(args.trials)])
            per_algo[(algo, n)] = added
            rows.append((f"quant_post {algo}", str(n), f"{added:.0f}", f"{added / forward[n]:.2f}", f"{kept:.0f}"))
            print(" | ".join(rows[-1]), flush=True)
    print_table(("what", "batches", "peak MB added", "x forward", "MB kept after"), rows)
    low, high = min(counts), max(counts)
    if low != high:
        ratios = ", ".join(f"{a} {per_algo[(a, high)] / per_algo[(a, low)]:.3f}" for a in algos)
        print(f"peak added, {high} vs {low} batches: {ratios}")
    sweep = [algos[i % len(algos)] for i in range(args.repeat)]
    calls = run_child("quant_post", low, ",".join(sweep))["calls"]
    print(f"{args.repeat} calls in one process ({', '.join(sweep)}, {low} batches): peak MB added per call "
          f"{', '.join(f'{a:.0f}' for a, _ in calls)}; MB kept after each {', '.join(f'{k:.0f}' for _, k in calls)}")


if __name__ == "__main__":
    main()
