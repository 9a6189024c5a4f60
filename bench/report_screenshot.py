"""The analysis report as a person first sees it: a headless-Chromium screenshot of ``report.html``.

1. ``analyze`` on the PP-OCR direction classifier (mobile v2, the default op types, hist,
   ``--batches`` calibration batches of 8 rendered lines, gain_float sensitivity per layer in the
   Executor simulation, ``--max-drop`` percent of output cosine as the target);
2. Debian's Chromium (``apt-get install chromium``) renders ``report.html`` at ``--window`` pixels
   (default 1400x900) into ``--png``.

    python bench/report_screenshot.py [--out out/report_screenshot] [--png docs/report_screenshot.png]
                                      [--batches 2] [--max-drop 0.5] [--window 1400,900]

What the first screen must show (issue 18): the summary and the per-layer chart.
"""

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import time

from paddle_quant.common.native_output import ignore_paddle_import_notes

ignore_paddle_import_notes()

from paddle_quant.analysis.analyze import analyze  # noqa: E402
from paddle_quant.ptq.config import PTQConfig  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "demos"))
import ppocr  # noqa: E402  demos/ppocr.py

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "out" / "report_screenshot"), help="report folder")
    parser.add_argument("--png", default=str(REPO / "docs" / "report_screenshot.png"), help="screenshot file")
    parser.add_argument("--batches", type=int, default=2, help="calibration batches of 8 lines")
    parser.add_argument("--max-drop", type=float, default=0.5, help="target, percent of output cosine")
    parser.add_argument("--window", default="1400,900", help="browser window, width,height")
    return parser.parse_args(argv)


def browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit(f"no headless browser found ({', '.join(BROWSERS)}); on Debian: apt-get install chromium")


def screenshot(html_file: pathlib.Path, png: pathlib.Path, window: str) -> None:
    png.parent.mkdir(parents=True, exist_ok=True)
    command = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--window-size={window}", f"--screenshot={png}", html_file.resolve().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or not png.is_file():
        raise SystemExit(f"{command[0]} failed ({done.returncode}): {done.stderr[-2000:]}")


def main(argv=None):
    args = parse_args(argv)
    models = ppocr.fetch_models()
    batches = list(ppocr.calibration_feeds("cls", args.batches, 8, 0, model=models["cls"]))
    started = time.perf_counter()
    result = analyze(models["cls"], batches, PTQConfig(algo="hist", batch_nums=args.batches),
                     report_dir=args.out, max_drop=args.max_drop, sensitivity="gain_float")
    print(f"analyze: {len(result.layers)} layers, skip list {len(result.skip_list)} tensor(s), "
          f"{time.perf_counter() - started:.1f} s -> {result.report_path}")
    screenshot(result.report_path, pathlib.Path(args.png), args.window)
    print(f"screenshot ({args.window}): {args.png} ({os.path.getsize(args.png)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
