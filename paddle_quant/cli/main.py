"""``paddle-quant``: post-training quantization from the command line.

Subcommands: ``post`` (PTQ from a config file and/or flags), ``inspect`` (which ops a config
quantizes and why the others are not), ``embedding`` (quantize embedding tables), ``analyze``
(per-layer error and sensitivity report, automatic skip list), ``verify`` (run an emitted model on
a runtime) and ``demo``. Exit codes: 0 ok, 2 usage or config error, 1 run failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from ..common.errors import ConfigError, ConfigTypeError, MissingDependencyError, PaddleQuantError
from .config_file import GRANULARITIES, WEIGHT_METHODS_CLI, RunConfig, build_configs, load_config_file

__all__ = ["EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "build_parser", "main", "exit_code_for"]

EXIT_OK = 0
"""The command did what it was asked."""
EXIT_FAILURE = 1
"""The run failed (a model that cannot be quantized, a runtime error, a missing optional module)."""
EXIT_USAGE = 2
"""Bad command line or config file: nothing was run (or the data did not match the config)."""

_logger = logging.getLogger("paddle_quant.cli")
_ALGORITHMS = ("KL", "hist", "mse", "emd", "avg", "abs_max", "min_max", "direct")
_EPILOG = "exit codes: 0 ok, 2 usage or config error, 1 run failure. Docs: docs/cli.md"


# ---------------------------------------------------------------- flags that override config elements
# (flag, block, element, argparse kwargs); values stay text and are parsed by the config model,
# so a flag accepts exactly what the element accepts.
_PATH = {"metavar": "PATH"}
_MODEL_FLAGS = (
    ("--model-dir", "Model", "ModelDir",
     {"metavar": "DIR", "help": "folder of the fp32 inference model (Model/ModelDir)"}),
    ("--model-filename", "Model", "ModelFileName",
     {"metavar": "NAME", "help": "model file in --model-dir (Model/ModelFileName; default: its only *.pdmodel)"}),
    ("--params-filename", "Model", "ParamsFileName",
     {"metavar": "NAME", "help": "params file in --model-dir (Model/ParamsFileName)"}),
    ("--path-prefix", "Model", "PathPrefix",
     {**_PATH, "help": "model files without .pdmodel/.pdiparams (Model/PathPrefix)"}),
)
_DATA_FLAGS = (
    ("--data", "Dataset", "Path",
     {"metavar": "DIR", "help": "calibration folder: images (jpg/jpeg/png/bmp) or raw tensors (.txt/.npy/.npz) "
                                "(Dataset/Path)"}),
    ("--data-format", "Dataset", "DataFormat",
     {"choices": ("auto", "images", "raw"), "help": "what --data holds (default auto)"}),
    ("--resize", "Dataset", "ResizeResolution",
     {"metavar": "H,W", "help": "step 1: resize to height,width (Dataset/ResizeResolution; default ImageResolution, "
                                "else InputShape)"}),
    ("--crop", "Dataset", "ImageResolution",
     {"metavar": "H,W", "help": "step 1: final height,width; a centre crop after --resize (Dataset/ImageResolution)"}),
    ("--resize-mode", "Dataset", "ResizeMode",
     {"choices": ("stretch", "short_side", "pad"), "help": "stretch to H,W; shorter side to min(H,W); or fit height "
                                                           "and right-pad the width (PP-OCR) (default stretch)"}),
    ("--color", "Dataset", "Color",
     {"choices": ("RGB", "L"), "help": "decode images to RGB (3 channels) or grey (default RGB)"}),
    ("--layout", "Dataset", "Layout",
     {"choices": ("NCHW", "NHWC"), "help": "step 3: model input layout (default NCHW)"}),
    ("--channel-swap", "Dataset", "ChannelSwap",
     {"metavar": "2,1,0", "help": "step 4: channel order, e.g. 2,1,0 for RGB->BGR (Dataset/ChannelSwap)"}),
    ("--raw-scale", "Dataset", "RawScale",
     {"metavar": "F", "help": "step 5: multiply the 0-1 pixels, e.g. 255 (Dataset/RawScale; default 1)"}),
    ("--mean", "Dataset", "Mean",
     {"metavar": "M,M,M", "help": "step 6: subtract per channel, on the scale after --raw-scale (Dataset/Mean)"}),
    ("--std", "Dataset", "Std", {"metavar": "S,S,S", "help": "step 7: divide per channel (Dataset/Std)"}),
    ("--input-scale", "Dataset", "InputScale",
     {"metavar": "S[,S,S]", "help": "step 7: multiply per channel instead of --std (Dataset/InputScale)"}),
    ("--batch-size", "Dataset", "BatchSize",
     {"metavar": "N", "help": "samples per calibration batch (Dataset/BatchSize; default 16)"}),
    ("--batch-num", "Dataset", "BatchNum",
     {"metavar": "N", "help": "calibration batches, or 'all' (Dataset/BatchNum; default all)"}),
    ("--calibration-size", "Dataset", "CalibrationSize",
     {"metavar": "N", "help": "use N files (first N, or a random N with --calibration-seed)"}),
    ("--calibration-seed", "Dataset", "CalibrationSeed",
     {"metavar": "SEED", "help": "seed of a reproducible random subset (not with --calibration-indices)"}),
    ("--calibration-indices", "Dataset", "CalibrationIndices",
     {"metavar": "I,J,...", "help": "explicit positions in the sorted file list (not with size/seed)"}),
)
_QUANT_FLAGS = (
    ("--input-shape", "QuantizationParameters", "InputShape",
     {"metavar": "C,H,W", "help": "model input shape without batch, checked against the model (InputShape)"}),
    ("--input-name", "QuantizationParameters", "InputName",
     {"metavar": "NAME", "help": "feed name of the model input (InputName)"}),
    ("--save-dir", "QuantizationParameters", "SaveDir",
     {"metavar": "DIR", "help": "output folder; never the model folder (SaveDir)"}),
    ("--algo", "QuantizationParameters", "Algorithm",
     {"choices": _ALGORITHMS, "help": "activation calibration algorithm (Algorithm; default hist)"}),
    ("--hist-percent", "QuantizationParameters", "HistPercent",
     {"metavar": "P", "help": "quantile kept by hist (HistPercent; default 0.9999)"}),
    ("--weight-method", "QuantizationParameters", "WeightMethod",
     {"choices": WEIGHT_METHODS_CLI, "help": "weight scales: abs max, channel-wise abs max, ADMM (TNN), power of two "
                                             "(TVM) (default abs_max)"}),
    ("--granularity", "QuantizationParameters", "Granularity",
     {"choices": GRANULARITIES, "help": "weight scales per channel or per tensor; mixed = per-channel weights, per-"
                                        "tensor activations (default per_channel)"}),
    ("--weight-bits", "QuantizationParameters", "WeightBits",
     {"metavar": "N", "help": "weight bits, 2..8 (default 8)"}),
    ("--activation-bits", "QuantizationParameters", "ActivationBits",
     {"metavar": "N", "help": "activation bits, 2..16 (default 8; oneDNN int8 needs 8)"}),
    ("--op-types", "QuantizationParameters", "QuantizableOpType",
     {"metavar": "T,T", "help": "op types to quantize (default conv2d,depthwise_conv2d,mul)"}),
    ("--output-scales", "QuantizationParameters", "OutputScales",
     {"choices": ("all", "none"), "help": "calibrate every supported op's output (all, default) or none"}),
    ("--deploy-backend", "QuantizationParameters", "DeployBackend",
     {"choices": ("onednn", "tensorrt", "paddle_lite", "onnx"),
      "help": "target runtime (DeployBackend); tensorrt also writes a TensorRT calibration cache"}),
    ("--scale-table", "QuantizationParameters", "ScaleTable",
     {**_PATH, "help": "re-apply the scales of a scale_table.json (written next to every model post makes) "
                       "instead of calibrating: no data needed (ScaleTable)"}),
    ("--skip-tensors", "QuantizationParameters", "SkipTensors",
     {**_PATH, "help": "tensors left in float: a text file (one per line) or JSON with a \"skip_list\" array (as "
                       "analyze writes)"}),
)
_BOOL_FLAGS = (
    ("--full-quantize", "QuantizationParameters", "IsFullQuantize",
     "quantize every supported op type (IsFullQuantize)"),
    ("--bias-correction", "QuantizationParameters", "BiasCorrection",
     "correct biases for the weight-quantization error (BiasCorrection)"),
)
_PATH_ELEMENTS = {"ModelDir", "PathPrefix", "Path", "SaveDir", "SkipTensors", "ScaleTable"}


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _add_flags(parser: argparse.ArgumentParser, title: str, flags) -> None:
    group = parser.add_argument_group(title)
    for flag, _block, _element, kwargs in flags:
        group.add_argument(flag, dest=_dest(flag), default=None, **kwargs)


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="config file: .xml (the seed template), .yaml/.yml or .json; flags override its values")
    parser.add_argument("--config-index", type=int, metavar="I",
                        help="run only the I-th Config of the file (1-based; default: every Config)")


def _add_quant_options(parser: argparse.ArgumentParser) -> None:
    _add_config(parser)
    _add_flags(parser, "model", _MODEL_FLAGS)
    _add_flags(parser, "calibration data (preprocessing steps in this order)", _DATA_FLAGS)
    _add_flags(parser, "quantization", _QUANT_FLAGS)
    group = parser.add_argument_group("switches")
    for flag, _block, _element, text in _BOOL_FLAGS:
        group.add_argument(flag, dest=_dest(flag), action="store_true", default=None, help=text)


def _overrides(args: argparse.Namespace) -> tuple[dict, dict]:
    """(block, element) -> value for every flag given, and 'Block/Element' -> flag for error messages."""
    values, origins = {}, {}
    for flag, block, element, _ in (*_MODEL_FLAGS, *_DATA_FLAGS, *_QUANT_FLAGS, *_BOOL_FLAGS):
        value = getattr(args, _dest(flag), None)
        if value is None:
            continue
        if element in _PATH_ELEMENTS:
            value = str(Path(value).expanduser().resolve())
        values[(block, element)] = "true" if value is True else value
        origins[f"{block}/{element}"] = flag
        if block == "QuantizationParameters":
            origins[f"Parameters/{element}"] = flag
    return values, origins


# ---------------------------------------------------------------- parser
def _subparser(subparsers, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    return subparsers.add_parser(name, help=summary, description=description, epilog=_EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)


def _add_post(subparsers) -> None:
    parser = _subparser(subparsers, "post", "post-training quantization (PTQ) of an inference model", (
        "Quantize an fp32 inference model with calibration data, as the seed's XML-configured script did.\n"
        "Every Config of the file is run; flags override the file's values (without -c, the flags are the\n"
        "whole config). Image preprocessing order: resize [crop] -> x/255 -> layout -> channel swap ->\n"
        "raw scale -> mean -> std or input scale. Relative paths in a file are relative to the file."))
    _add_quant_options(parser)
    parser.add_argument("--check", action="store_true",
                        help="validate the config, the model, its input and the data folder; quantize nothing")
    parser.set_defaults(handler=_run_post)


def _add_inspect(subparsers) -> None:
    parser = _subparser(subparsers, "inspect", "list the model's ops and which a config would quantize", (
        "List every op of the model: quantized (with the tensors and their quantizers), skipped (with the\n"
        "reason), or not a type the config quantizes. Reads only the model file (no data, no params)."))
    _add_config(parser)
    _add_flags(parser, "model", _MODEL_FLAGS)
    _add_flags(parser, "quantization", [f for f in _QUANT_FLAGS if f[2] in (
        "QuantizableOpType", "Granularity", "WeightBits", "ActivationBits", "SkipTensors", "OutputScales")])
    parser.add_argument("--full-quantize", dest="full_quantize", action="store_true", default=None,
                        help="quantize every supported op type (IsFullQuantize)")
    parser.add_argument("--show", choices=("all", "quantized", "skipped"), default="all",
                        help="which ops to list (default all; a summary by op type always follows)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON instead of a table")
    parser.set_defaults(handler=_run_inspect)


def _add_embedding(subparsers) -> None:
    parser = _subparser(subparsers, "embedding", "quantize the embedding tables of a model", (
        "Quantize lookup_table/lookup_table_v2 weights of an inference model (paddle_quant.quant_embedding)\n"
        "and save the result; the model folder is never written."))
    _add_flags(parser, "model", _MODEL_FLAGS)
    parser.add_argument("--save-dir", required=True, metavar="DIR", help="output folder (not the model folder)")
    parser.add_argument("--op-types", default="lookup_table,lookup_table_v2", metavar="T,T",
                        help="lookup op types whose tables are quantized (default lookup_table,lookup_table_v2)")
    parser.add_argument("--params-name", default=None, metavar="NAME[,NAME]",
                        help="quantize only these tables (the W inputs of lookup ops; default every table)")
    parser.add_argument("--quantize-type", choices=("abs_max", "log", "product_quantization"), default="abs_max",
                        help="abs_max (integer grid), log (sign + log2 codebook) or product_quantization "
                             "(default abs_max)")
    parser.add_argument("--bits", type=int, default=8, metavar="N",
                        help="quantize_bits: abs_max 2..8 or 16, log 2..8, product_quantization 1..8 bits per "
                             "code (default 8)")
    parser.add_argument("--dtype", choices=("int8", "int16"), default=None,
                        help="stored dtype (default: derived from --bits)")
    parser.add_argument("--threshold", type=float, default=None, metavar="T",
                        help="abs_max: clip |W| at T (default PaddleSlim's rule: the 99.99th percentile of |W| "
                             "when max|W| >= 1)")
    parser.add_argument("--subspaces", type=int, default=None, metavar="M",
                        help="product_quantization: subspaces, dividing the embedding width")
    parser.add_argument("--codebook-size", type=int, default=None, metavar="K",
                        help="product_quantization: centroids per subspace (default 2**bits)")
    parser.set_defaults(handler=_run_embedding)


def _add_analyze(subparsers) -> None:
    parser = _subparser(subparsers, "analyze", "per-layer quantization error and sensitivity report", (
        "Quantize on the calibration data, then measure each quantized op's output against fp32 (SQNR and\n"
        "cosine), each layer's sensitivity (metric change with only it quantized, or only it left in float),\n"
        "and an automatic skip list meeting --max-drop. Writes an HTML report with per-layer tables and PNG\n"
        "plots (needs matplotlib) and the skip list as JSON ({\"skip_list\": [...]}) for `post --skip-tensors`."))
    _add_quant_options(parser)
    parser.add_argument("--report-dir", required=True, metavar="DIR", help="folder the report is written to")
    parser.add_argument("--max-drop", type=float, default=None, metavar="D",
                        help="build a skip list so the metric drops at most D (points of the metric, or of "
                             "output cosine x 100 without --metric)")
    parser.add_argument("--metric", default=None, metavar="MODULE:FUNCTION",
                        help="user metric: FUNCTION(outputs_per_batch) -> float, higher is better (outputs in "
                             "fetch-target order; MODULE importable from the current folder); default: output "
                             "cosine against fp32")
    parser.add_argument("--sensitivity", choices=("both", "drop_alone", "gain_float", "none"), default="both",
                        help="per-layer sensitivity: metric drop with only that layer quantized, metric gain with "
                             "only that layer left in float, both, or none (default both)")
    parser.add_argument("--unit", choices=("layer", "op_type"), default="layer",
                        help="sensitivity and skip-list unit: one quantized op, or every op of a type (default layer)")
    parser.add_argument("--runtime", choices=("executor", "onednn"), default="executor",
                        help="where configurations are evaluated: the Paddle Executor (fake-quant simulation, "
                             "default) or Paddle Inference oneDNN int8 (the deployed accuracy, slower)")
    parser.add_argument("--no-plots", action="store_true", help="no PNG plots (matplotlib not needed)")
    parser.add_argument("--skip-list-out", default=None, metavar="FILE",
                        help="also write the skip list to FILE (JSON with a \"skip_list\" array); the report "
                             "folder always gets analysis.json with the same array")
    parser.set_defaults(handler=_run_analyze)


def _add_verify(subparsers) -> None:
    parser = _subparser(subparsers, "verify", "run an emitted model on a runtime and compare with the simulation", (
        "Run a quantized model on a deployment runtime and on the fake-quant simulation (the Paddle Executor)\n"
        "over images or raw tensors from the data flags or a config file, and print per-output deviation in\n"
        "quantization steps, cosine similarity and latency (paddle_quant.verify)."))
    parser.add_argument("--model-dir", required=True, metavar="DIR", help="folder of the quantized model")
    parser.add_argument("--fp32-model", "--reference", dest="fp32_model", default=None, metavar="PATH",
                        help="fp32 model (folder, or .onnx for onnxruntime) for the int8/fp32 latency ratio")
    parser.add_argument("--runtime", choices=("onednn", "tensorrt", "onnxruntime", "paddle_fp32", "executor"),
                        default="onednn", help="runtime to run the model on (default onednn: Paddle Inference "
                                               "CPU int8)")
    parser.add_argument("--runtime-model", default=None, metavar="FILE",
                        help="the file the runtime loads when it is not the Paddle model (the .onnx export)")
    parser.add_argument("--verify-batches", type=int, default=2, metavar="N",
                        help="batches of the data to compare on (default 2)")
    parser.add_argument("--max-steps", type=float, default=None, metavar="K",
                        help="fail (exit 1) when an output deviates more than K quantization steps")
    parser.add_argument("--min-cosine", type=float, default=None, metavar="C",
                        help="fail (exit 1) when an output's cosine with the simulation is below C")
    _add_config(parser)
    _add_flags(parser, "calibration data", [f for f in _DATA_FLAGS if f[2] != "DataFormat"])
    _add_flags(parser, "model input", [f for f in _QUANT_FLAGS if f[2] in ("InputShape", "InputName")])
    parser.set_defaults(handler=_run_verify)


def _add_demo(subparsers) -> None:
    parser = _subparser(subparsers, "demo", "run a demo from the source checkout's demos/ folder", (
        "Run demos/<NAME>.py with this Python (default cli_ppocr: renders text-line images, writes XML and\n"
        "YAML configs for PP-OCR cls, runs `paddle-quant inspect` and `post` on them). Arguments after the\n"
        "name go to the demo."))
    parser.add_argument("name", nargs="?", default="cli_ppocr", help="demo name (default cli_ppocr)")
    parser.add_argument("demo_args", nargs=argparse.REMAINDER, help="arguments passed to the demo")
    parser.add_argument("--list", action="store_true", help="list the demos and exit")
    parser.set_defaults(handler=_run_demo)


def build_parser() -> argparse.ArgumentParser:
    """The ``paddle-quant`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="paddle-quant", epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Post-training quantization of PaddlePaddle inference models (paddle_quant).")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug, tracebacks)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_add_post, _add_embedding, _add_inspect, _add_analyze, _add_verify, _add_demo):
        add(subparsers)
    return parser


# ---------------------------------------------------------------- shared steps
def _configs(args: argparse.Namespace) -> list[RunConfig]:
    overrides, origins = _overrides(args)
    if args.config:
        configs = load_config_file(args.config, overrides=overrides, origins=origins)
    else:
        configs = build_configs([{}], base_dir=Path.cwd(), overrides=overrides, origins=origins)
    index = getattr(args, "config_index", None)
    if index is not None:
        if not 1 <= index <= len(configs):
            raise ConfigError(f"--config-index {index}: the file holds {len(configs)} Config(s); "
                              f"allowed: 1..{len(configs)}")
        configs = [configs[index - 1]]
    return configs


def _model_file(run: RunConfig) -> tuple[Path, Optional[Path]]:
    files = run.model_files()
    if files.model_filename is None:
        found = sorted(p for p in files.model_dir.iterdir() if p.name.endswith((".pdmodel", "__model__")))
        if len(found) != 1:
            raise ConfigError(f"Model/ModelDir {str(files.model_dir)!r} holds model files {[p.name for p in found]}; "
                              "set Model/ModelFileName (--model-filename)")
        model = found[0]
    else:
        model = files.model_dir / files.model_filename
    if files.params_filename:
        return model, files.model_dir / files.params_filename
    guess = model.with_suffix(".pdiparams")
    return model, guess if guess.is_file() else None


def _load_program(model: Path):
    """The model's Program, read from the model file only (no parameters)."""
    import paddle

    from ..common.program import legacy_ir

    with legacy_ir():
        try:
            return paddle.static.Program.parse_from_string(model.read_bytes())
        except Exception as exc:  # protobuf raises its own DecodeError types
            raise ConfigError(f"model file {str(model)!r} is not a Paddle inference Program: {exc}") from exc


def _feeds(program) -> dict[str, tuple[int, ...]]:
    """Feed name -> declared shape, in feed order."""
    block = program.global_block()
    feeds = sorted((op.attr("col"), op.output("Out")[0]) for op in block.ops if op.type == "feed")
    return {name: tuple(block.var(name).shape) for _, name in feeds}


def _check_input(run: RunConfig, feeds: Mapping[str, tuple[int, ...]]) -> list[str]:
    """The feed names the data goes to, after checking InputName and InputShape against the model."""
    tag, name = run.params_tag, run.params.input_name
    if name is not None and name not in feeds:
        hint = _closest(name, feeds)
        raise ConfigError(f"{tag}/InputName {name!r} is not an input of the model; its inputs are {list(feeds)}{hint}")
    shape = run.sample_shape()
    if shape is not None:
        target = name or next(iter(feeds))
        declared = feeds[target]
        if len(declared) != len(shape) + 1 or any(d >= 0 and d != s for d, s in zip(declared[1:], shape)):
            raise ConfigError(f"{tag}/InputShape {list(shape)} does not match the model's input {target!r} of shape "
                              f"{list(declared)} (batch first, -1 = any size)")
    return [name] if name is not None else list(feeds)


def _closest(name: str, names) -> str:
    from ..common.errors import closest_match

    hint = closest_match(name, list(names))
    return f"; did you mean {hint!r}?" if hint else ""


def _reader(run: RunConfig, feed_names: Sequence[str]):
    from ..data import ImageFolder, RawFolder, detect_data_format, output_shape, warn_if_few

    folder = run.data_dir()
    fmt = run.dataset.data_format
    fmt = detect_data_format(folder) if fmt == "auto" else fmt
    if fmt == "raw":
        return RawFolder(folder, sample_shape=run.sample_shape(), feed_names=feed_names, sampling=run.sampling_config())
    if len(feed_names) != 1:
        raise ConfigError(f"the model has inputs {list(feed_names)}; an image folder feeds one: set InputName, "
                          "or give .npz files with one array per input")
    preprocess = run.preprocess_config()
    produced, shape = output_shape(preprocess), run.sample_shape()
    if produced is not None and shape is not None and tuple(produced) != tuple(shape):
        raise ConfigError(f"{run.params_tag}/InputShape {list(shape)} differs from the preprocessed image shape "
                          f"{list(produced)} (from ResizeResolution/ImageResolution and Layout)")
    reader = ImageFolder(folder, preprocess, run.sampling_config())
    batches = run.dataset.batch_num
    warn_if_few(len(reader) if batches is None else min(len(reader), batches * run.dataset.batch_size))
    return reader


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def exit_code_for(exc: BaseException) -> int:
    """2 for config and usage errors (ConfigError, ConfigTypeError, a missing optional dependency), 1 otherwise."""
    return EXIT_USAGE if isinstance(exc, (ConfigError, ConfigTypeError, MissingDependencyError)) else EXIT_FAILURE


def _each_config(configs: list[RunConfig], run_one: Callable[[int, RunConfig], None]) -> int:
    """Run every config; report each failure; 2 if any config error, else 1 if any failure, else 0."""
    codes = []
    for index, run in enumerate(configs, 1):
        try:
            run_one(index, run)
            codes.append(EXIT_OK)
        except Exception as exc:  # one Config's failure must not stop the others (as the seed script)
            codes.append(_report(exc, f"Config[{index}]"))
    return EXIT_USAGE if EXIT_USAGE in codes else max(codes, default=EXIT_OK)


def _report(exc: BaseException, where: str) -> int:
    code = exit_code_for(exc)
    kind = "config error" if code == EXIT_USAGE else "failed"
    detail = str(exc) if isinstance(exc, PaddleQuantError) else f"{type(exc).__name__}: {exc}"
    _logger.error("%s: %s: %s", where, kind, detail, exc_info=_logger.isEnabledFor(logging.DEBUG))
    return code


# ---------------------------------------------------------------- post
def _post_one(index: int, run: RunConfig, check_only: bool) -> None:
    import paddle

    from ..data import batch_generator
    from ..ptq.quant_post import run_post_training

    model, params = _model_file(run)
    save_dir, table = run.save_dir(), run.scale_table()
    feed_names = _check_input(run, _feeds(_load_program(model)))
    reader = None if table is not None else _reader(run, feed_names)
    ptq = run.ptq_config()
    label = f"Config[{index}]" + (f" ({run.model.name})" if run.model.name else "")
    source = f"scales from {table}" if reader is None else f"{len(reader)} calibration file(s) in {reader.folder}"
    if check_only:
        _say(f"{label}: ok: model {model}, {source}, algo {ptq.algo}, output {save_dir}")
        return
    sources = {} if reader is None else {"batch_generator": batch_generator(reader, ptq.batch_size)}
    result = run_post_training(
        paddle.static.Executor(paddle.CPUPlace()), str(model.parent), str(save_dir), ptq, sources=sources,
        model_filename=model.name, params_filename=params.name if params else None, scale_table=table)
    how = f"scales from {table.name}" if reader is None else f"{ptq.algo}, {result.batches} batches of {ptq.batch_size}"
    _say(f"{label}: quantized {len(result.quantized_tensors)} tensors ({how}) -> {result.model_file}, "
         f"{result.params_file}{_skipped_note(reader)}")


def _skipped_note(reader) -> str:
    if reader is None or not reader.skipped:
        return ""
    return f"; skipped {len(reader.skipped)} unreadable file(s): " + ", ".join(
        f"{s.path.name} ({s.reason})" for s in reader.skipped)


def _run_post(args: argparse.Namespace) -> int:
    configs = _configs(args)
    return _each_config(configs, lambda i, run: _post_one(i, run, args.check))


# ---------------------------------------------------------------- inspect
def _plan_rows(program, run: RunConfig, ptq) -> list[dict]:
    from ..passes.plan import plan_quantization
    from ..common.registry import SUPPORTED_OP_TYPES

    config = ptq.to_quant_config()
    block = program.global_block()
    plan = plan_quantization(block, config).without_tensors(ptq.skip_tensor_list)
    wanted = set(config.effective_op_types)
    by_index = {op.index: op for op in plan.ops}
    skipped = {s.index: s.reason for s in plan.skipped}
    tensors = {t.var: t for t in plan.tensors}
    rows = []
    for index, op in enumerate(block.ops):
        row = {"index": index, "type": op.type}
        if index in by_index:
            quant = [tensors[name] for _, name in by_index[index].inputs]
            row.update(status="quantized", detail=", ".join(
                f"{t.var} ({t.role}, {t.method}, {t.bits} bits" + (f", axis {t.axis})" if t.axis >= 0 else ")")
                for t in quant))
        elif index in skipped:
            row.update(status="skipped", detail=skipped[index])
        elif op.type in ("feed", "fetch"):
            row.update(status="-", detail="feed/fetch")
        elif op.type in SUPPORTED_OP_TYPES and op.type not in wanted:
            row.update(status="-", detail="supported type not selected (add it to --op-types, or --full-quantize)")
        else:
            row.update(status="-", detail="no quantizer for this op type")
        rows.append(row)
    return rows


def _inspect_one(index: int, run: RunConfig, args: argparse.Namespace) -> None:
    from collections import Counter

    from ..common.program import legacy_ir

    model, _ = _model_file(run)
    program = _load_program(model)
    with legacy_ir():
        rows = _plan_rows(program, run, run.ptq_config())
    if args.json:
        _say(json.dumps({"config": index, "model": str(model), "ops": rows}, indent=1))
        return
    _say(f"Config[{index}]: {model}: {len(rows)} ops, feeds {list(_feeds(program))}")
    for row in rows:
        if args.show == "all" or row["status"] == args.show:
            _say(f"{row['index']:5d}  {row['type']:<22s} {row['status']:<10s} {row['detail']}")
    counts = Counter((row["type"], row["status"]) for row in rows if row["status"] != "-")
    summary = ", ".join(f"{t} {s} {n}" for (t, s), n in sorted(counts.items()))
    _say(f"summary: {summary or 'nothing would be quantized'}")


def _run_inspect(args: argparse.Namespace) -> int:
    configs = _configs(args)
    return _each_config(configs, lambda i, run: _inspect_one(i, run, args))


# ---------------------------------------------------------------- embedding
def _missing_module(feature: str, module: str, exc: ImportError) -> int:
    _logger.error("paddle-quant %s needs %s, which this installation does not have (%s)", feature, module, exc)
    return EXIT_FAILURE


def _embedding_config(args: argparse.Namespace) -> dict:
    op_types = [t.strip() for t in args.op_types.split(",") if t.strip()]
    per_op = {"quantize_type": args.quantize_type, "quantize_bits": args.bits}
    optional = {"dtype": args.dtype, "threshold": args.threshold, "subspaces": args.subspaces,
                "codebook_size": args.codebook_size}
    per_op.update({key: value for key, value in optional.items() if value is not None})
    config = {"quantize_op_types": op_types, **{op_type: dict(per_op) for op_type in op_types}}
    if args.params_name:
        config["params_name"] = [n.strip() for n in args.params_name.split(",") if n.strip()]
    return config


def _save_atomically(exe, scope, program, feed_names, fetch_names, target: Path) -> None:
    """The model into a temporary sibling folder of ``target``, then swapped into place."""
    from ..common.model_files import save_inference_atomically

    if target.exists() and not target.is_dir():
        raise ConfigError(f"--save-dir {str(target)!r} exists and is not a directory")
    save_inference_atomically(exe, scope, program, feed_names, fetch_names, target)


def _run_embedding(args: argparse.Namespace) -> int:
    try:
        from ..embedding.quant_embedding import plan_embedding, quant_embedding
    except ImportError as exc:
        return _missing_module("embedding", "paddle_quant.embedding.quant_embedding", exc)
    import paddle

    from ..common.model_files import load_inference_program
    from ..common.program import legacy_ir
    from ..common.errors import ProgramStateError

    run = build_configs([{}], base_dir=Path.cwd(), overrides=_overrides(args)[0])[0]
    model, params = _model_file(run)
    target, config = run.save_dir(), _embedding_config(args)
    exe, scope, place = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope(), paddle.CPUPlace()
    with legacy_ir(), paddle.static.scope_guard(scope):
        program, feeds, fetches = load_inference_program(exe, scope, model, params)
        tables = [t.table for t in plan_embedding(program, config).tables]
        if not tables:
            raise ProgramStateError(f"the model has no embedding table read by {args.op_types}; op types in the "
                                    f"model: {sorted({op.type for op in program.global_block().ops})}")
        quantized = quant_embedding(program, place, config, scope=scope)
        _save_atomically(exe, scope, quantized, feeds, fetches, target)
    _say(f"embedding: quantized {len(tables)} table(s) {tables} ({args.quantize_type}, {args.bits} bits) -> "
         f"{target / 'model.pdmodel'}, {target / 'model.pdiparams'}")
    return EXIT_OK


# ---------------------------------------------------------------- analyze
def _load_metric(spec: Optional[str]):
    if spec is None:
        return None
    import importlib

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"--metric {spec!r}: allowed: MODULE:FUNCTION, e.g. my_metrics:accuracy")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # the console script does not put the current folder on the path
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"--metric {spec!r} could not be loaded: {exc}") from exc


def _analyze_one(index: int, run: RunConfig, args: argparse.Namespace, analyze: Callable) -> None:
    from ..data import feed_loader

    model, params = _model_file(run)
    feed_names = _check_input(run, _feeds(_load_program(model)))
    reader = _reader(run, feed_names)
    ptq = run.ptq_config()
    report_dir = Path(args.report_dir).resolve()
    report_dir = report_dir / f"config{index}" if index > 1 else report_dir
    runner = None
    if args.runtime == "onednn":
        from ..analysis.sensitivity import onednn_runner

        runner = onednn_runner()
    result = analyze(str(model.parent), feed_loader(reader, ptq.batch_size, feed_names), ptq,
                     report_dir=report_dir, max_drop=args.max_drop, metric=_load_metric(args.metric),
                     model_filename=model.name, params_filename=params.name if params else None,
                     sensitivity=args.sensitivity, granularity=args.unit, runner=runner, plots=not args.no_plots)
    skip_list = list(result.skip_list)
    if args.skip_list_out:
        _write_json(Path(args.skip_list_out), {"skip_list": skip_list})
    _say(f"Config[{index}]: report {result.report_path}; skip list ({len(skip_list)}) in "
         f"{getattr(result, 'json_path', args.skip_list_out)}: {', '.join(skip_list) or '-'}")


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        json.dump(data, stream, indent=1)
    os.replace(temp, path)


def _run_analyze(args: argparse.Namespace) -> int:
    configs = _configs(args)
    try:
        from ..analysis.analyze import analyze
    except ImportError as exc:
        return _missing_module("analyze", "paddle_quant.analysis.analyze", exc)
    return _each_config(configs, lambda i, run: _analyze_one(i, run, args, analyze))


# ---------------------------------------------------------------- verify
def _run_verify(args: argparse.Namespace) -> int:
    import itertools

    from ..data import feed_loader
    from ..deploy.verify import verify

    if args.verify_batches < 1:
        raise ConfigError(f"--verify-batches must be >= 1, got {args.verify_batches}")
    run = _configs(args)[0]
    model_run = build_configs([{"Model": {"ModelDir": args.model_dir}}], base_dir=Path.cwd())[0]
    model, params = _model_file(model_run)
    feed_names = _check_input(run, _feeds(_load_program(model)))
    loader = feed_loader(_reader(run, feed_names), run.dataset.batch_size, feed_names)
    inputs = list(itertools.islice(loader(), args.verify_batches))
    report = verify(model.parent, args.runtime, inputs, fp32_model=args.fp32_model, runtime_model=args.runtime_model,
                    model_filename=model.name, params_filename=params.name if params else None)
    _say(report.table())
    worst_cosine = min(o.cosine for o in report.outputs)
    if args.max_steps is not None and not report.within(args.max_steps):
        _logger.error("verify: an output deviates %.2f steps, more than --max-steps %.2f", report.max_steps,
                      args.max_steps)
        return EXIT_FAILURE
    if args.min_cosine is not None and worst_cosine < args.min_cosine:
        _logger.error("verify: output cosine %.6f is below --min-cosine %.6f", worst_cosine, args.min_cosine)
        return EXIT_FAILURE
    return EXIT_OK


# ---------------------------------------------------------------- demo
def _demo_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "demos"


def _run_demo(args: argparse.Namespace) -> int:
    folder = _demo_dir()
    if not folder.is_dir():
        _logger.error("demos are part of the source checkout (demos/ next to paddle_quant/); none at %s", folder)
        return EXIT_FAILURE
    names = sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_") and p.stem != "ppocr")
    if args.list:
        _say("\n".join(names))
        return EXIT_OK
    if args.name not in names:
        raise ConfigError(f"unknown demo {args.name!r}{_closest(args.name, names)} allowed: {names}")
    path = os.pathsep.join(filter(None, [str(folder.parent), os.environ.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, str(folder / f"{args.name}.py"), *args.demo_args], check=False,
                          env={**os.environ, "PYTHONPATH": path})  # this checkout's paddle_quant
    return EXIT_OK if done.returncode == 0 else EXIT_FAILURE


# ---------------------------------------------------------------- entry point
def _configure_logging(args: argparse.Namespace, as_program: bool) -> None:
    """Set the level of paddle_quant's loggers; as a program, also give them their own stderr handler.

    Importing Paddle installs a root handler with its own format; a program run sends paddle_quant's
    records to a ``paddle-quant: LEVEL: message`` handler instead. In-process calls (tests, notebooks)
    keep the caller's handlers.
    """
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    package = logging.getLogger("paddle_quant")
    package.setLevel(level)
    if as_program and not any(getattr(h, "_paddle_quant_cli", False) for h in package.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("paddle-quant: %(levelname)s: %(message)s"))
        handler._paddle_quant_cli = True  # type: ignore[attr-defined]
        package.addHandler(handler)
        package.propagate = False


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``paddle-quant`` with ``argv`` (default ``sys.argv[1:]``) and return the exit code.

    Usage errors (argparse) return 2 after printing the usage; ``--help`` returns 0.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else [os.fspath(a) for a in argv])
    except SystemExit as exc:  # argparse: 0 for --help, 2 for usage errors
        return int(exc.code or 0)
    _configure_logging(args, as_program=argv is None)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        _logger.error("interrupted")
        return EXIT_FAILURE
    except Exception as exc:  # the CLI boundary: every failure becomes a message and an exit code
        return _report(exc, args.command)
