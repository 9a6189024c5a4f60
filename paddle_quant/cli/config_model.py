"""The schema behind ``paddle-quant``'s config files: one pydantic model per block, :class:`RunConfig` per ``Config``.

Values arrive as text (XML) or native YAML/JSON values and are parsed here, so a command-line flag
(:mod:`paddle_quant.cli.flags`) accepts exactly what its element accepts. :data:`ELEMENTS` lists
the allowed leaf elements of each block; reading the files themselves is
:mod:`paddle_quant.cli.config_file`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, field_validator, model_validator
from typing_extensions import Annotated

from ..common.errors import ConfigError, closest_match
from ..ptq.config import ALGORITHMS, PTQConfig
from ..common.registry import SUPPORTED_OP_TYPES

if TYPE_CHECKING:  # the data readers (numpy, Pillow) load only when a run needs them
    from ..data.preprocess import PreprocessConfig
    from ..data.sampling import SamplingConfig

__all__ = [
    "WEIGHT_METHODS_CLI",
    "GRANULARITIES",
    "ELEMENTS",
    "ModelSection",
    "DatasetSection",
    "QuantizationSection",
    "RunConfig",
    "ModelFiles",
    "read_skip_list",
]

WEIGHT_METHODS_CLI: tuple[str, ...] = ("abs_max", "channel_wise", "admm", "power_of_two")
GRANULARITIES: tuple[str, ...] = ("per_channel", "per_tensor", "mixed")


# ---------------------------------------------------------------- value parsing
def _text(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _number_items(value: Any) -> Any:
    """'[0.5, 0.5]', '224, 224', '0.5', 0.5 or [..] -> list of items (strings stay for pydantic to check)."""
    if isinstance(value, str):
        inner = value.strip().strip("[]()").strip()
        return [item for item in re.split(r"[,\s]+", inner) if item] if inner else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    return value


def _string_items(value: Any) -> Any:
    if isinstance(value, str):
        inner = value.strip().strip("[]").strip()
        return [item.strip().strip("'\"") for item in re.split(r"[,\s]+", inner) if item.strip()] if inner else None
    return value


_BOOLEANS = {"true": True, "yes": True, "1": True, "on": True, "false": False, "no": False, "0": False, "off": False}


def _boolean(value: Any) -> Any:
    if isinstance(value, str):
        lowered = value.strip().lower()
        return _BOOLEANS.get(lowered, value)
    return value


def _all_means_none(value: Any) -> Any:
    return None if isinstance(value, str) and value.strip().lower() in ("all", "none") else value


def _algorithm(value: Any) -> Any:
    if isinstance(value, str):
        by_lower = {a.lower(): a for a in ALGORITHMS}
        return by_lower.get(value.strip().lower(), value.strip())
    return value


FloatList = Annotated[Optional[tuple[float, ...]], BeforeValidator(_number_items)]
IntList = Annotated[Optional[tuple[int, ...]], BeforeValidator(_number_items)]
Size = Annotated[Optional[tuple[int, int]], BeforeValidator(_number_items)]
Text = Annotated[Optional[str], BeforeValidator(_text)]
Bool = Annotated[bool, BeforeValidator(_boolean)]
StrList = Annotated[Optional[tuple[str, ...]], BeforeValidator(_string_items)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=False)


class ModelSection(_Section):
    """``Model``: where the fp32 inference model is (PathPrefix, or ModelDir and file names)."""

    name: Text = Field(None, alias="Name", description="A name for the model (logs only).")
    path_prefix: Text = Field(None, alias="PathPrefix", description="Model files without .pdmodel/.pdiparams.")
    model_dir: Text = Field(None, alias="ModelDir", description="Folder of the model.")
    model_filename: Text = Field(None, alias="ModelFileName", description="Model file name inside ModelDir.")
    params_filename: Text = Field(None, alias="ParamsFileName", description="Params file name inside ModelDir.")
    save_dir: Text = Field(None, alias="SaveDir", description="Output folder (published template's spot).")


class DatasetSection(_Section):
    """``Dataset``: calibration data, its preprocessing, batching and sampling."""

    name: Text = Field(None, alias="Name", description="A name for the data set (logs only).")
    path: Text = Field(None, alias="Path", description="Folder of images or raw tensor files.")
    data_format: Literal["auto", "images", "raw"] = Field(
        "auto", alias="DataFormat", description="Images, raw tensors (.txt/.npy/.npz), or detect.")
    mean: FloatList = Field(None, alias="Mean", description="Subtracted per channel (pixels scaled to 0-1).")
    std: FloatList = Field(None, alias="Std", description="Divided per channel after Mean.")
    input_scale: FloatList = Field(None, alias="InputScale", description="Multiplied per channel (instead of Std).")
    raw_scale: Optional[float] = Field(None, gt=0, alias="RawScale", description="Multiply 0-1 pixels first.")
    channel_swap: IntList = Field(None, alias="ChannelSwap", description="Channel order, e.g. 2, 1, 0 for BGR.")
    resize_resolution: Size = Field(None, alias="ResizeResolution", description="Resize to (height, width).")
    image_resolution: Size = Field(None, alias="ImageResolution", description="Final (height, width): centre crop.")
    resize_mode: Literal["stretch", "short_side", "pad"] = Field(
        "stretch", alias="ResizeMode", description="How ResizeResolution is applied.")
    layout: Literal["NCHW", "NHWC"] = Field("NCHW", alias="Layout", description="Input layout of the model.")
    color: Literal["RGB", "L"] = Field("RGB", alias="Color", description="Decode images to RGB or grey.")
    batch_size: int = Field(16, ge=1, alias="BatchSize", description="Samples per calibration batch.")
    batch_num: Annotated[Optional[int], BeforeValidator(_all_means_none)] = Field(
        None, ge=1, alias="BatchNum", description="Calibration batches (None or 'all': all the data).")
    calibration_size: Optional[int] = Field(None, ge=1, alias="CalibrationSize", description="Files used.")
    calibration_seed: Optional[int] = Field(None, ge=0, alias="CalibrationSeed", description="Random subset seed.")
    calibration_indices: IntList = Field(None, alias="CalibrationIndices", description="Explicit file indices.")

    @model_validator(mode="after")
    def _check_channels(self) -> "DatasetSection":
        channels = 3 if self.color == "RGB" else 1
        for element, value in (("Mean", self.mean), ("Std", self.std), ("InputScale", self.input_scale)):
            if value is not None and len(value) not in (1, channels):
                raise ConfigError(f"{element} has {len(value)} values {list(value)} but {self.color} images "
                                  f"have {channels} channels; allowed: {_ALLOWED[element]}")
        if self.std is not None and self.input_scale is not None:
            raise ConfigError("Std and InputScale are both set; allowed: one of them")
        if self.channel_swap is not None and sorted(self.channel_swap) != list(range(channels)):
            raise ConfigError(f"ChannelSwap {list(self.channel_swap)} is not a permutation of "
                              f"{list(range(channels))}; allowed: {_ALLOWED['ChannelSwap']}")
        if self.calibration_indices is not None and (self.calibration_size or self.calibration_seed is not None):
            raise ConfigError("CalibrationIndices is mutually exclusive with CalibrationSize and "
                              "CalibrationSeed; allowed: indices alone, or size and/or seed")
        return self


_IMAGE_ELEMENTS = frozenset({"mean", "std", "input_scale", "raw_scale", "channel_swap", "resize_resolution",
                             "image_resolution", "resize_mode", "color"})
"""DatasetSection fields that only image preprocessing reads: setting one means the folder's images."""


class QuantizationSection(_Section):
    """``QuantizationParameters`` (or ``Parameters``): model input and quantization options."""

    input_shape: IntList = Field(None, alias="InputShape", description="Model input shape without batch (C, H, W).")
    input_name: Text = Field(None, alias="InputName", description="Feed name of the model input.")
    save_dir: Text = Field(None, alias="SaveDir", description="Output folder of the quantized model.")
    algorithm: Annotated[Literal[ALGORITHMS], BeforeValidator(_algorithm)] = Field(  # type: ignore[valid-type]
        "hist", alias="Algorithm", description="Activation calibration algorithm.")
    hist_percent: float = Field(0.9999, gt=0, le=1, alias="HistPercent", description="Quantile for hist.")
    weight_method: Literal[WEIGHT_METHODS_CLI] = Field(  # type: ignore[valid-type]
        "abs_max", alias="WeightMethod", description="Weight scales: abs max, channel-wise, ADMM, power of two.")
    granularity: Literal[GRANULARITIES] = Field(  # type: ignore[valid-type]
        "per_channel", alias="Granularity", description="Per-channel, per-tensor or mixed weight scales.")
    weight_bits: int = Field(8, ge=2, le=8, alias="WeightBits", description="Weight bits.")
    activation_bits: int = Field(8, ge=2, le=16, alias="ActivationBits", description="Activation bits.")
    op_types: StrList = Field(None, alias="QuantizableOpType", description="Op types to quantize.")
    is_full_quantize: Bool = Field(False, alias="IsFullQuantize", description="Quantize every supported type.")
    output_scales: Optional[Literal["all", "int8_ops", "none"]] = Field(
        None, alias="OutputScales", description="Output observers (unset: the deploy backend's default).")
    output_algorithm: Annotated[  # type: ignore[valid-type]
        Optional[Literal[ALGORITHMS]], BeforeValidator(_algorithm)] = Field(
        None, alias="OutputAlgorithm", description="Calibration algorithm of the observed outputs (unset: Algorithm).")
    bias_correction: Bool = Field(False, alias="BiasCorrection", description="Correct biases.")
    bias_correction_inputs: Bool = Field(False, alias="BiasCorrectionInputs",
                                         description="Bias correction also for the mean error of each op's input "
                                         "quantization (with BiasCorrection).")
    tune_scales: Bool = Field(False, alias="TuneScales",
                              description="Search each activation scale against the fp32 outputs after calibration.")
    round_type: Literal["round", "adaround"] = Field(
        "round", alias="RoundType", description="Weight rounding: to nearest, or AdaRound (learned per layer).")
    adaround_iterations: int = Field(500, ge=1, alias="AdaRoundIterations", description="AdaRound iterations per layer.")
    fold_input_affine: Optional[Bool] = Field(
        None, alias="FoldInputAffine",
        description="Fold the parameter multiply/add an unpadded conv reads into it; unset: the deploy backend's "
        "default (on for onednn).")
    equalize_layers: Bool = Field(False, alias="EqualizeLayers",
                                  description="Cross-layer equalization of conv pairs before calibration.")
    smooth_activations: Bool = Field(False, alias="SmoothActivations",
                                     description="SmoothQuant-style smoothing of weight-op inputs before calibration.")
    smooth_depthwise: Optional[Bool] = Field(
        None, alias="SmoothDepthwise",
        description="Bring every input channel of a quantized depthwise conv to one range; unset: the deploy "
        "backend's default (on for onednn with per-channel weights).")
    float_pools: Bool = Field(False, alias="FloatPools",
                              description="Run in float every average pool whose input has no scale of its own "
                              "(with DeployBackend onednn).")
    smooth_alpha: Optional[float] = Field(None, ge=0, le=1, alias="SmoothAlpha",
                                          description="Smoothing strength alpha in [0, 1]; unset: searched per layer.")
    skip_tensors: Text = Field(None, alias="SkipTensors", description="File with tensor names to leave in float.")
    skip_tensor_list: StrList = Field(None, alias="SkipTensorList", description="Tensor names to leave in float.")
    deploy_backend: Optional[Literal["onednn", "tensorrt", "paddle_lite", "onnx"]] = Field(
        None, alias="DeployBackend", description="Target runtime; tensorrt also writes a TensorRT calibration cache.")
    onednn_cpu: Optional[Literal["auto", "vnni", "avx2"]] = Field(
        None, alias="OnednnCpu", description="DeployBackend onednn: the CPU the model runs on (auto: this CPU).")
    scale_table: Text = Field(None, alias="ScaleTable",
                              description="A scale_table.json to re-apply instead of calibrating (no data needed).")

    @field_validator("input_shape")
    @classmethod
    def _input_shape(cls, value):
        if value is not None and (len(value) not in (3, 4) or any(v < 1 for v in value[-3:])):
            raise ConfigError(f"InputShape {list(value)}: allowed: {_ALLOWED['InputShape']}")
        return value

    @field_validator("op_types")
    @classmethod
    def _known_op_types(cls, value):
        for op_type in value or ():
            if op_type not in SUPPORTED_OP_TYPES:
                hint = closest_match(op_type, sorted(SUPPORTED_OP_TYPES))
                raise ConfigError(f"unknown op type {op_type!r}" + (f"; did you mean {hint!r}?" if hint else "")
                                  + "; allowed: supported op types such as conv2d, depthwise_conv2d, mul, matmul_v2")
        return value


ELEMENTS: dict[str, tuple[str, ...]] = {
    "Model": tuple(f.alias for f in ModelSection.model_fields.values()),
    "Dataset": tuple(f.alias for f in DatasetSection.model_fields.values()),
    "QuantizationParameters": tuple(f.alias for f in QuantizationSection.model_fields.values()),
}
"""Allowed leaf elements of each block (``Parameters`` takes those of ``QuantizationParameters``)."""

_SIZE = "two ints >= 1, height, width (e.g. '48, 192')"
_ALLOWED: Mapping[str, str] = {
    "Name": "any text", "PathPrefix": "a path without extension", "ModelDir": "a folder",
    "ModelFileName": "a file name", "ParamsFileName": "a file name", "SaveDir": "a folder other than the model's",
    "Path": "a folder", "DataFormat": "'auto', 'images' or 'raw'",
    "Mean": "a list of 1 or one float per channel, e.g. [0.485, 0.456, 0.406]",
    "Std": "a list of 1 or one non-zero float per channel, e.g. [0.229, 0.224, 0.225]",
    "InputScale": "a list of 1 or one float per channel (not with Std)", "RawScale": "a float > 0",
    "ChannelSwap": "a permutation of the channels, e.g. 2, 1, 0", "ResizeResolution": _SIZE,
    "ImageResolution": _SIZE, "ResizeMode": "'stretch', 'short_side' or 'pad'", "Layout": "'NCHW' or 'NHWC'",
    "Color": "'RGB' or 'L'", "BatchSize": "an int >= 1", "BatchNum": "an int >= 1, or 'all'",
    "CalibrationSize": "an int >= 1", "CalibrationSeed": "an int >= 0",
    "CalibrationIndices": "a list of distinct ints >= 0 (not with CalibrationSize/CalibrationSeed)",
    "InputShape": "3 ints >= 1 (C, H, W; H, W, C for NHWC), or 4 with a leading batch size (-1: any)",
    "InputName": "a feed name of the model", "Algorithm": f"one of {list(ALGORITHMS)}",
    "HistPercent": "a float in (0, 1]", "WeightMethod": f"one of {list(WEIGHT_METHODS_CLI)}",
    "Granularity": f"one of {list(GRANULARITIES)}", "WeightBits": "an int in [2, 8]",
    "ActivationBits": "an int in [2, 16]", "QuantizableOpType": "a list of supported op types, e.g. conv2d, mul",
    "IsFullQuantize": "true or false", "OutputScales": "'all', 'int8_ops' or 'none'",
    "OutputAlgorithm": f"one of {list(ALGORITHMS)} (with OutputScales all or int8_ops)",
    "BiasCorrection": "true or false",
    "BiasCorrectionInputs": "true or false (with BiasCorrection true)",
    "TuneScales": "true or false",
    "RoundType": "'round' or 'adaround'", "AdaRoundIterations": "an int >= 1",
    "EqualizeLayers": "true or false", "SmoothActivations": "true or false", "FoldInputAffine": "true or false",
    "SmoothDepthwise": "true or false (needs per-channel weights)",
    "FloatPools": "true or false (with DeployBackend onednn)",
    "SmoothAlpha": "a float in [0, 1] (with SmoothActivations; unset: searched per layer)",
    "SkipTensors": "a text file (one name per line) or a JSON file with a 'skip_list' array",
    "SkipTensorList": "a list of tensor names",
    "DeployBackend": "'onednn', 'tensorrt', 'paddle_lite' or 'onnx'",
    "OnednnCpu": "'auto', 'vnni' or 'avx2' (with DeployBackend onednn)",
    "ScaleTable": "a scale_table.json written by an earlier run (next to its model)",
}


class ModelFiles(BaseModel):
    """Where the fp32 model is, resolved and checked to exist."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_dir: Path = Field(description="Folder of the model.")
    model_filename: Optional[str] = Field(description="Model file name (None: the folder's only *.pdmodel).")
    params_filename: Optional[str] = Field(description="Params file name (None: found next to the model).")


class RunConfig(_Section):
    """One ``Config`` element: a model, its calibration data and the quantization options."""

    model: ModelSection = Field(default_factory=ModelSection, alias="Model", description="The model block.")
    dataset: DatasetSection = Field(default_factory=DatasetSection, alias="Dataset", description="The data block.")
    quantization: Optional[QuantizationSection] = Field(
        None, alias="QuantizationParameters", description="Input and quantization options.")
    parameters: Optional[QuantizationSection] = Field(
        None, alias="Parameters", description="Published templates' spelling of QuantizationParameters.")
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @model_validator(mode="after")
    def _one_parameters_block(self) -> "RunConfig":
        if self.quantization is not None and self.parameters is not None:
            raise ConfigError("give either QuantizationParameters or Parameters, not both (they are the same block)")
        quant_dir, model_dir = self.params.save_dir, self.model.save_dir
        if quant_dir and model_dir and quant_dir != model_dir:
            raise ConfigError(f"SaveDir is set twice with different values: Model/SaveDir={model_dir!r}, "
                              f"{self.params_tag}/SaveDir={quant_dir!r}; keep one")
        if self.params.weight_method == "channel_wise" and self.params.granularity == "per_tensor":
            raise ConfigError("WeightMethod 'channel_wise' contradicts Granularity 'per_tensor'; allowed: "
                              "Granularity 'per_channel' or 'mixed' with channel_wise")
        return self

    @property
    def params(self) -> QuantizationSection:
        """The QuantizationParameters/Parameters block (defaults when absent)."""
        return self.quantization or self.parameters or QuantizationSection()

    @property
    def params_tag(self) -> str:
        """The element name the file used for the parameters block."""
        return "Parameters" if self.parameters is not None else "QuantizationParameters"

    # -------------------------------------------------------- paths
    def path(self, value: Optional[str]) -> Optional[Path]:
        """``value`` as a path, relative ones resolved against the config file's folder."""
        if value is None:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else self._base_dir / path

    def model_files(self) -> ModelFiles:
        """The model's folder and file names, checked to exist.

        Raises:
            ConfigError: neither PathPrefix nor ModelDir, a missing folder or file, or the two disagree.
        """
        prefix, folder = self.path(self.model.path_prefix), self.path(self.model.model_dir)
        if prefix is not None:
            if folder is not None and folder.resolve() != prefix.parent.resolve():
                raise ConfigError(f"Model/PathPrefix {str(prefix)!r} is not inside Model/ModelDir {str(folder)!r}; "
                                  "set one of them")
            files = ModelFiles(model_dir=prefix.parent, model_filename=prefix.name + ".pdmodel",
                               params_filename=prefix.name + ".pdiparams")
        elif folder is not None:
            files = ModelFiles(model_dir=folder, model_filename=self.model.model_filename,
                               params_filename=self.model.params_filename)
        else:
            raise ConfigError("Model: set PathPrefix (model files without extension) or ModelDir (--model-dir)")
        _check_model_files(files)
        return files

    def save_dir(self) -> Path:
        """The output folder; ConfigError when unset or equal to (or inside) the model folder."""
        value = self.params.save_dir or self.model.save_dir
        if value is None:
            raise ConfigError(f"{self.params_tag}/SaveDir is not set: give the output folder (--save-dir)")
        target, source = self.path(value).resolve(), self.model_files().model_dir.resolve()
        if target == source or source in target.parents:
            raise ConfigError(f"SaveDir {value!r} is the model folder {str(source)!r} or inside it; the input model "
                              "is never overwritten: choose another folder")
        return target

    def scale_table(self) -> Optional[Path]:
        """The ScaleTable file to re-apply, checked to exist, or None to calibrate."""
        path = self.path(self.params.scale_table)
        if path is not None and not path.is_file():
            raise ConfigError(f"{self.params_tag}/ScaleTable {str(path)!r} does not exist")
        return path

    def data_dir(self) -> Path:
        """The calibration folder; ConfigError when unset or missing."""
        folder = self.path(self.dataset.path)
        if folder is None:
            raise ConfigError("Dataset/Path is not set: give the calibration data folder (--data)")
        if not folder.is_dir():
            raise ConfigError(f"Dataset/Path {str(folder)!r} does not exist or is not a directory")
        return folder

    # -------------------------------------------------------- derived configs
    def sample_shape(self) -> Optional[tuple[int, ...]]:
        """InputShape without its batch axis, or None when unset."""
        shape = self.params.input_shape
        return None if shape is None else tuple(shape[-3:])

    def implied_data_format(self) -> Optional[str]:
        """``'images'`` when an image-preprocessing element is set (they apply to images only), else None."""
        return "images" if self.dataset.model_fields_set & _IMAGE_ELEMENTS else None

    def preprocess_config(self) -> "PreprocessConfig":
        """The image preprocessing chain: ResizeResolution (else ImageResolution, else InputShape's H, W),
        then a centre crop to ImageResolution when both are set, then layout, ChannelSwap, RawScale,
        Mean, Std/InputScale."""
        from ..data.preprocess import PreprocessConfig

        d, shape = self.dataset, self.sample_shape()
        from_shape = None
        if shape is not None:
            from_shape = shape[1:] if d.layout == "NCHW" else shape[:2]
        resize = d.resize_resolution or d.image_resolution or from_shape
        both = d.resize_resolution is not None and d.image_resolution is not None
        crop = d.image_resolution if both and d.resize_mode != "pad" else None
        return PreprocessConfig(resize=resize, crop=crop, resize_mode=d.resize_mode, color=d.color, layout=d.layout,
                                channel_swap=d.channel_swap, raw_scale=d.raw_scale or 1.0, mean=d.mean, std=d.std,
                                input_scale=d.input_scale)

    def sampling_config(self) -> "SamplingConfig":
        """CalibrationSize / CalibrationSeed / CalibrationIndices."""
        from ..data.sampling import SamplingConfig

        d = self.dataset
        return SamplingConfig(size=d.calibration_size, seed=d.calibration_seed, indices=d.calibration_indices)

    def skip_tensor_list(self) -> tuple[str, ...]:
        """SkipTensorList plus the names in the SkipTensors file."""
        names = list(self.params.skip_tensor_list or ())
        if self.params.skip_tensors:
            names += read_skip_list(self.path(self.params.skip_tensors), element=f"{self.params_tag}/SkipTensors")
        return tuple(dict.fromkeys(names))

    def ptq_config(self, **overrides: Any) -> PTQConfig:
        """The :class:`~paddle_quant.ptq.config.PTQConfig` of this run.

        ``WeightMethod`` channel_wise is abs_max with per-channel scales; ``Granularity`` per_tensor gives
        per-tensor weight scales, per_channel and mixed per-channel weight scales (activations are always
        per tensor, so the two are the same here).
        """
        p = self.params
        fields = dict(
            algo=p.algorithm, hist_percent=p.hist_percent, weight_bits=p.weight_bits,
            activation_bits=p.activation_bits, is_full_quantize=p.is_full_quantize,
            weight_quantize_type="abs_max" if p.granularity == "per_tensor" else "channel_wise_abs_max",
            weight_method="abs_max" if p.weight_method == "channel_wise" else p.weight_method,
            skip_tensor_list=self.skip_tensor_list(), bias_correction=p.bias_correction,
            bias_correction_inputs=p.bias_correction_inputs, tune_scales=p.tune_scales,
            batch_size=self.dataset.batch_size, batch_nums=self.dataset.batch_num, output_scales=p.output_scales,
            output_algo=p.output_algorithm,
            deploy_backend=p.deploy_backend, onednn_cpu=p.onednn_cpu, round_type=p.round_type, adaround_iterations=p.adaround_iterations,
            equalize_layers=p.equalize_layers, fold_input_affine=p.fold_input_affine,
            smooth_activations=p.smooth_activations, smooth_alpha=p.smooth_alpha, smooth_depthwise=p.smooth_depthwise,
            float_pools=p.float_pools,
        )
        if p.op_types is not None:
            fields["quantizable_op_type"] = p.op_types
        fields.update(overrides)
        return PTQConfig(**fields)


def _check_model_files(files: ModelFiles) -> None:
    if not files.model_dir.is_dir():
        raise ConfigError(f"Model folder {str(files.model_dir)!r} does not exist or is not a directory")
    for name, element in ((files.model_filename, "ModelFileName"), (files.params_filename, "ParamsFileName")):
        if name is not None and not (files.model_dir / name).is_file():
            raise ConfigError(f"Model/{element}: {str(files.model_dir / name)!r} does not exist")


def read_skip_list(path: Path, *, element: str = "--skip-tensors") -> list[str]:
    """Tensor names from a text file (one per line, '#' comments) or a JSON file with a "skip_list" array.

    Raises:
        ConfigError: the file is missing, or JSON without a list of strings under "skip_list".
    """
    if not path.is_file():
        raise ConfigError(f"{element}: skip list file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("{"):
        try:
            names = json.loads(text).get("skip_list")
        except (ValueError, AttributeError):
            names = None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{element}: {str(path)!r} is JSON but has no \"skip_list\" array of tensor names")
        return names
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]
