"""Command-line flags that override config-file elements, and how they are added to a parser.

Each flag is ``(flag, block, element, argparse kwargs)``; values stay text and are parsed by the
config model (:mod:`paddle_quant.cli.config_model`), so a flag accepts exactly what the element accepts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .config_model import GRANULARITIES, WEIGHT_METHODS_CLI

__all__ = []

_ALGORITHMS = ("KL", "hist", "mse", "emd", "avg", "abs_max", "min_max", "direct")
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
    ("--round-type", "QuantizationParameters", "RoundType",
     {"choices": ("round", "adaround"), "help": "weight rounding: to nearest (default), or AdaRound, learned layer by "
                                                "layer on the calibration data (RoundType)"}),
    ("--adaround-iterations", "QuantizationParameters", "AdaRoundIterations",
     {"metavar": "N", "help": "AdaRound optimiser iterations per layer (AdaRoundIterations; default 500)"}),
    ("--output-scales", "QuantizationParameters", "OutputScales",
     {"choices": ("all", "int8_ops", "none"),
      "help": "calibrate every supported op's output (all), the outputs of int8 weight ops only (int8_ops: what an "
              "ONNX export requantizes), or none; default: the deploy backend's (none for onednn and onnx, all "
              "otherwise)"}),
    ("--output-algo", "QuantizationParameters", "OutputAlgorithm",
     {"choices": _ALGORITHMS, "help": "calibration algorithm of the outputs --output-scales observes "
                                      "(OutputAlgorithm; default: --algo's); abs_max keeps requantized outputs from "
                                      "clipping"}),
    ("--deploy-backend", "QuantizationParameters", "DeployBackend",
     {"choices": ("onednn", "tensorrt", "paddle_lite", "onnx"),
      "help": "target runtime (DeployBackend); tensorrt also writes a TensorRT calibration cache"}),
    ("--onednn-cpu", "QuantizationParameters", "OnednnCpu",
     {"choices": ("auto", "vnni", "avx2"),
      "help": "with --deploy-backend onednn: the CPU the model runs on; avx2 (no VNNI/AMX) states oneDNN's "
              "half-scale conv weights and leaves matmuls in float; auto: this CPU (OnednnCpu; default vnni, with a "
              "warning on a CPU without VNNI)"}),
    ("--smooth-alpha", "QuantizationParameters", "SmoothAlpha",
     {"metavar": "A", "help": "smoothing strength in [0, 1], with --smooth-activations (SmoothAlpha; default: "
                              "searched per layer)"}),
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
    ("--bias-correction-inputs", "QuantizationParameters", "BiasCorrectionInputs",
     "with --bias-correction: also for the mean error of each corrected op's input quantization, one more pass "
     "over the calibration data (BiasCorrectionInputs)"),
    ("--tune-scales", "QuantizationParameters", "TuneScales",
     "after calibration, search each activation scale (0.7-1.25x) for the lowest output error against fp32 on the "
     "calibration data; quantizers x 6 runs of the quantized model from each quantizer on (TuneScales)"),
    ("--equalize-layers", "QuantizationParameters", "EqualizeLayers",
     "balance the weight ranges of conv -> relu/affine/batch_norm -> conv pairs, exact in fp32 (EqualizeLayers)"),
    ("--smooth-activations", "QuantizationParameters", "SmoothActivations",
     "move activation range of matmul/mul/conv inputs into their weights, SmoothQuant-style, exact in fp32 "
     "(SmoothActivations)"),
    ("--float-pools", "QuantizationParameters", "FloatPools",
     "with --deploy-backend onednn: run in float every average pool whose input has no scale of its own, instead "
     "of oneDNN quantizing that input at the pooled output's scale (FloatPools)"),
)
_BACKEND_BOOL_FLAGS = (
    ("--fold-input-affine", "QuantizationParameters", "FoldInputAffine",
     "fold the parameter multiply/add an unpadded conv reads into it before calibration, exact in fp32 "
     "(FoldInputAffine; default: the deploy backend's, on for onednn)"),
    ("--smooth-depthwise", "QuantizationParameters", "SmoothDepthwise",
     "bring every input channel of a quantized depthwise conv to one range, moving it into the conv's per-channel "
     "weight scales, exact in fp32 (SmoothDepthwise; default: the deploy backend's, on for onednn with per-channel "
     "weights)"),
)
"""Switches whose unset value is the deploy backend's default: --X turns it on, --no-X off."""
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
    for flag, _block, _element, text in _BACKEND_BOOL_FLAGS:
        group.add_argument(flag, dest=_dest(flag), action=argparse.BooleanOptionalAction, default=None, help=text)


def _overrides(args: argparse.Namespace) -> tuple[dict, dict]:
    """(block, element) -> value for every flag given, and 'Block/Element' -> flag for error messages."""
    values, origins = {}, {}
    for flag, block, element, _ in (*_MODEL_FLAGS, *_DATA_FLAGS, *_QUANT_FLAGS, *_BOOL_FLAGS, *_BACKEND_BOOL_FLAGS):
        value = getattr(args, _dest(flag), None)
        if value is None:
            continue
        if element in _PATH_ELEMENTS:
            value = str(Path(value).expanduser().resolve())
        values[(block, element)] = str(value).lower() if isinstance(value, bool) else value
        origins[f"{block}/{element}"] = flag
        if block == "QuantizationParameters":
            origins[f"Parameters/{element}"] = flag
    return values, origins
