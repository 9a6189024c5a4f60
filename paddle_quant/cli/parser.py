"""The ``paddle-quant`` argument parser: one sub-parser per subcommand, each bound to its handler."""

from __future__ import annotations

import argparse

from .commands import _run_analyze, _run_demo, _run_embedding, _run_export_onnx, _run_inspect, _run_post, _run_verify
from .flags import _DATA_FLAGS, _MODEL_FLAGS, _QUANT_FLAGS, _add_config, _add_flags, _add_quant_options

__all__ = ["build_parser"]

_EPILOG = "exit codes: 0 ok, 2 usage or config error, 1 run failure. Docs: docs/cli.md"


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
    control = parser.add_argument_group("accuracy control (quant_post's accuracy_control=AccuracyControl(...))")
    control.add_argument("--max-drop", type=float, default=None, metavar="D",
                         help="search algorithms, recovery settings and a skip list for the most int8 model whose "
                              "metric is at most D under fp32 (needs --metric and --eval-data)")
    control.add_argument("--metric", default=None, metavar="MODULE:FUNCTION",
                         help="FUNCTION(outputs_per_batch) -> float, higher is better (outputs in fetch order)")
    control.add_argument("--eval-data", default=None, metavar="DIR",
                         help="evaluation folder (not the calibration data), read with the Dataset's preprocessing")
    control.add_argument("--control-runtime", choices=("onednn", "executor"), default="onednn",
                         help="where candidates are measured (default onednn: Paddle Inference int8)")
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
    parser.add_argument("--locate", action="store_true",
                        help="when an output deviates more than --locate-steps, find the first quantized tensor "
                             "where the runtime leaves the simulation (Paddle runtimes: onednn, paddle_fp32, "
                             "tensorrt)")
    parser.add_argument("--locate-steps", type=float, default=1.0, metavar="K",
                        help="tolerance of --locate, in quantization steps (default 1)")
    _add_config(parser)
    _add_flags(parser, "calibration data", [f for f in _DATA_FLAGS if f[2] != "DataFormat"])
    _add_flags(parser, "model input", [f for f in _QUANT_FLAGS if f[2] in ("InputShape", "InputName")])
    parser.set_defaults(handler=_run_verify)


def _add_export_onnx(subparsers) -> None:
    parser = _subparser(subparsers, "export-onnx", "write a quantized (or fp32) model as ONNX for onnxruntime", (
        "Write a model saved by post as an int8 QDQ ONNX model (paddle_quant.export.onnx.export_onnx), or an fp32\n"
        "model with --fp32 (export_float_onnx). Needs the onnx extra. The settings docs/deploy_onnx.md measures\n"
        "fastest in onnxruntime: --observers int8_ops --activation-type uint8 --round-float-readers (the model\n"
        "quantized with OutputScales int8_ops); check the file with `paddle-quant verify --runtime onnxruntime`."))
    parser.add_argument("--model-dir", required=True, metavar="DIR", help="folder of the model to export")
    parser.add_argument("--output", required=True, metavar="FILE", help="the .onnx file to write (atomically)")
    parser.add_argument("--fp32", action="store_true", help="the model is fp32: export it as the float baseline")
    parser.add_argument("--observers", default="none", metavar="MODE|NAMES",
                        help="none (default), int8_ops, all, or comma-separated observed tensor names: which "
                             "output-scale observers become QuantizeLinear/DequantizeLinear pairs")
    parser.add_argument("--activation-type", choices=("int8", "uint8"), default="int8",
                        help="storage of quantized activations (uint8: zero point 128, the same grid)")
    parser.add_argument("--weight-type", choices=("auto", "int8", "uint8"), default="auto",
                        help="storage of int8 weights (auto: int8 on a CPU with VNNI/AMX, uint8 without)")
    parser.add_argument("--round-float-readers", action="store_true",
                        help="ops that read a runtime-quantized tensor in float read its rounded copy, so "
                             "onnxruntime fuses them (changes what is computed; verify simulates it)")
    parser.add_argument("--float-conv-weights", action="store_true",
                        help="the convs onnxruntime runs in float (outputs not requantized) read float32 weights "
                             "(the same values), which it runs on its faster float kernels; a larger file")
    parser.add_argument("--fold-input-scales", action="store_true",
                        help="fold the one-value multiply of the affine a float conv reads into its weights "
                             "(exact, also where the conv pads: PP-LCNetV3's depthwise convs)")
    parser.add_argument("--fold-input-affine", action="store_true",
                        help="with --fp32: fold the affine chains an unpadded conv reads, as post's "
                             "FoldInputAffine does, and the one-value multiply of the affine any other conv reads")
    parser.add_argument("--no-fold", action="store_true", help="keep the conv bias adds and batch norms")
    parser.set_defaults(handler=_run_export_onnx)


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
    for add in (_add_post, _add_embedding, _add_inspect, _add_analyze, _add_verify, _add_export_onnx, _add_demo):
        add(subparsers)
    return parser
