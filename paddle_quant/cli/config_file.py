"""Config files of ``paddle-quant post``: the seed's XML format, and the same schema as YAML or JSON.

One pydantic model (:class:`RunConfig`, one per ``Config`` element) is behind all three
formats. The XML is the PaddlePaddle quantization script's template::

    <QuantizationConfigs>
      <Config>
        <Model> Name PathPrefix ModelDir ModelFileName ParamsFileName [SaveDir] </Model>
        <Dataset> Name Path Mean Std ChannelSwap ResizeResolution ImageResolution BatchSize BatchNum </Dataset>
        <QuantizationParameters> InputShape InputName SaveDir Algorithm </QuantizationParameters>
      </Config>
    </QuantizationConfigs>

Published versions of the template spell the last block ``Parameters`` and put ``SaveDir``
under ``Model``: both are accepted. Extra elements carry the options of the other seed tools
(see :data:`ELEMENTS`). Values are text: lists are written ``[0.485, 0.456, 0.406]`` or
``224, 224``; an empty element means "not set". YAML/JSON use the same element names, either
``{"QuantizationConfigs": [{"Model": {...}, "Dataset": {...}, ...}, ...]}`` (a ``Config`` key
holding the list is accepted too) or a single ``{"Model": ..., ...}`` mapping; values may be
native lists and numbers or the XML text forms.

XML is parsed with defusedxml with DTDs forbidden (no entity expansion, no external entities);
YAML with a safe loader that refuses anchors and aliases (no alias bombs). Relative paths in a
file are relative to the file's folder. Every error is a
:class:`~paddle_quant.common.errors.ConfigError` naming the element, the value and what is allowed;
an unknown element gets the closest allowed name suggested.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, Optional

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError, field_validator,
                      model_validator)
from typing_extensions import Annotated

from ..common.errors import ConfigError, PaddleQuantError, closest_match
from ..ptq.config import ALGORITHMS, PTQConfig
from ..common.registry import SUPPORTED_OP_TYPES

if TYPE_CHECKING:  # the data readers (numpy, Pillow) load only when a run needs them
    from ..data.preprocess import PreprocessConfig
    from ..data.sampling import SamplingConfig

__all__ = [
    "ROOT_ELEMENT",
    "WEIGHT_METHODS_CLI",
    "GRANULARITIES",
    "CONFIG_ELEMENT",
    "ELEMENTS",
    "ModelSection",
    "DatasetSection",
    "QuantizationSection",
    "RunConfig",
    "ModelFiles",
    "load_config_file",
    "parse_config_text",
    "build_configs",
    "read_skip_list",
]

ROOT_ELEMENT = "QuantizationConfigs"
CONFIG_ELEMENT = "Config"
_MAX_FILE_BYTES = 1 << 20

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
    output_scales: Literal["all", "none"] = Field("all", alias="OutputScales", description="Output observers.")
    bias_correction: Bool = Field(False, alias="BiasCorrection", description="Correct biases.")
    skip_tensors: Text = Field(None, alias="SkipTensors", description="File with tensor names to leave in float.")
    skip_tensor_list: StrList = Field(None, alias="SkipTensorList", description="Tensor names to leave in float.")
    deploy_backend: Optional[Literal["onednn", "tensorrt", "paddle_lite", "onnx"]] = Field(
        None, alias="DeployBackend", description="Target runtime; tensorrt also writes a TensorRT calibration cache.")
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
    "IsFullQuantize": "true or false", "OutputScales": "'all' or 'none'", "BiasCorrection": "true or false",
    "SkipTensors": "a text file (one name per line) or a JSON file with a 'skip_list' array",
    "SkipTensorList": "a list of tensor names",
    "DeployBackend": "'onednn', 'tensorrt', 'paddle_lite' or 'onnx'",
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
            batch_size=self.dataset.batch_size, batch_nums=self.dataset.batch_num, output_scales=p.output_scales,
            deploy_backend=p.deploy_backend,
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


# ---------------------------------------------------------------- XML
def _xml_module():
    try:
        from defusedxml import ElementTree
    except ImportError as exc:  # a runtime dependency; refuse rather than fall back to an unsafe parser
        raise ConfigError("reading XML configs needs defusedxml (pip install defusedxml)") from exc
    return ElementTree


def _xml_leaf(element, where: str) -> Optional[str]:
    if len(element):
        raise ConfigError(f"{where}/{element.tag} holds child elements {[c.tag for c in element]}; "
                          f"it takes a value ({_ALLOWED.get(element.tag, 'text')})")
    if element.attrib:
        raise ConfigError(f"{where}/{element.tag} has attributes {dict(element.attrib)}; values go in the text")
    text = (element.text or "").strip()
    return text or None


def _xml_block(element, where: str) -> dict:
    if element.attrib:
        raise ConfigError(f"{where}/{element.tag} has attributes {dict(element.attrib)}; use child elements")
    values: dict[str, Any] = {}
    for child in element:
        if not isinstance(child.tag, str):
            continue  # comments and processing instructions
        if child.tag in values:
            raise ConfigError(f"{where}/{element.tag}/{child.tag} appears twice; give it once")
        values[child.tag] = _xml_leaf(child, f"{where}/{element.tag}")
    return values


def _xml_config(element, where: str) -> dict:
    blocks: dict[str, Any] = {}
    for child in element:
        if not isinstance(child.tag, str):
            continue
        if child.tag in blocks:
            raise ConfigError(f"{where}/{child.tag} appears twice; give each block once")
        blocks[child.tag] = _xml_block(child, where)
    return blocks


def _parse_xml(text: str) -> list[dict]:
    tree = _xml_module()
    import defusedxml

    try:
        root = tree.fromstring(text, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException as exc:
        raise ConfigError(f"XML config refused: {type(exc).__name__} ({exc}); config files may not hold a DOCTYPE, "
                          "entity declarations or external references") from None
    except tree.ParseError as exc:
        raise ConfigError(f"XML config is not well-formed: {exc}") from None
    if root.tag != ROOT_ELEMENT:
        raise ConfigError(_unknown("root element", root.tag, [ROOT_ELEMENT]))
    configs = []
    for index, child in enumerate((c for c in root if isinstance(c.tag, str)), 1):
        if child.tag != CONFIG_ELEMENT:
            raise ConfigError(_unknown(f"element in {ROOT_ELEMENT}", child.tag, [CONFIG_ELEMENT]))
        configs.append(_xml_config(child, f"{CONFIG_ELEMENT}[{index}]"))
    return configs


# ---------------------------------------------------------------- YAML / JSON
def _yaml_load(text: str) -> Any:
    import yaml

    class _NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):  # noqa: D102 - refuse aliases (no alias bombs)
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise ConfigError(f"YAML config uses an alias (*{event.anchor}) at line {event.start_mark.line + 1}; "
                                  "anchors and aliases are not allowed in config files")
            return super().compose_node(parent, index)

    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML config is not valid YAML: {exc}") from None


def _json_load(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"JSON config is not valid JSON: {exc}") from None


def _tree_configs(data: Any) -> list[dict]:
    if isinstance(data, Mapping) and ROOT_ELEMENT in data:
        if len(data) != 1:
            extra = sorted(k for k in data if k != ROOT_ELEMENT)
            raise ConfigError(f"top-level keys {extra} next to {ROOT_ELEMENT}; allowed: only {ROOT_ELEMENT}")
        data = data[ROOT_ELEMENT]
        if isinstance(data, Mapping) and set(data) == {CONFIG_ELEMENT}:
            data = data[CONFIG_ELEMENT]
    elif isinstance(data, Mapping):
        unknown = [k for k in data if k not in _CONFIG_BLOCKS]
        if unknown:
            raise ConfigError(_unknown("top-level key", unknown[0], [ROOT_ELEMENT, *_CONFIG_BLOCKS]))
    configs = [data] if isinstance(data, Mapping) else data
    if not isinstance(configs, list) or not all(isinstance(c, Mapping) for c in configs):
        raise ConfigError(f"{ROOT_ELEMENT} must hold a mapping or a list of mappings (one per Config), "
                          f"got {type(data).__name__}")
    return [_drop_empty(dict(c)) for c in configs]


def _drop_empty(block: Any) -> Any:
    if isinstance(block, Mapping):
        return {k: _drop_empty(v) for k, v in block.items() if v is not None and v != ""}
    return block


_CONFIG_BLOCKS: tuple[str, ...] = tuple(field.alias for field in RunConfig.model_fields.values())


# ---------------------------------------------------------------- errors
def _unknown(what: str, name: str, allowed) -> str:
    hint = closest_match(name, list(allowed))
    return (f"unknown {what} {name!r}" + (f"; did you mean {hint!r}?" if hint else "")
            + f" allowed: {list(allowed)}")


def _location(loc: tuple) -> tuple[str, Optional[str]]:
    """(element path, leaf alias) of a pydantic error location."""
    parts = [str(p) for p in loc if not isinstance(p, int)]
    leaf = parts[1] if len(parts) > 1 else None
    return "/".join(parts[:2]), leaf


def _error_message(error: Mapping[str, Any], raw: Mapping, index: int, origins: Mapping[str, str]) -> str:
    path, leaf = _location(error["loc"])
    where = f"{CONFIG_ELEMENT}[{index}]" + (f"/{path}" if path else "")
    origin = origins.get(path)
    where += f" (from {origin})" if origin else ""
    cause = error.get("ctx", {}).get("error")
    if error["type"] == "extra_forbidden":
        parts = path.split("/")
        block = parts[0] if len(parts) > 1 else None
        allowed = ELEMENTS.get("QuantizationParameters" if block == "Parameters" else block) if block else None
        allowed = allowed or tuple(_CONFIG_BLOCKS)
        return f"{CONFIG_ELEMENT}[{index}]: " + _unknown(f"element in {block or CONFIG_ELEMENT}", parts[-1], allowed)
    if isinstance(cause, PaddleQuantError):
        return f"{where}: {cause}"
    value = _raw_value(raw, error["loc"])
    allowed = _ALLOWED.get(leaf or "", "see docs/cli.md")
    return f"{where} got {value!r}: {error['msg']}; allowed: {allowed}"


def _raw_value(raw: Mapping, loc: tuple) -> Any:
    node: Any = raw
    for part in loc:
        if isinstance(part, int):
            break
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _validate(raw: dict, index: int, base_dir: Path, origins: Mapping[str, str]) -> RunConfig:
    try:
        config = RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError("; ".join(_error_message(e, raw, index, origins) for e in exc.errors())) from None
    except PaddleQuantError as exc:
        raise ConfigError(f"{CONFIG_ELEMENT}[{index}]: {exc}") from None
    config._base_dir = base_dir
    return config


# ---------------------------------------------------------------- entry points
def parse_config_text(text: str, fmt: Literal["xml", "yaml", "json"]) -> list[dict]:
    """The raw ``Config`` blocks of a config file's text (element name -> value), empty values dropped."""
    if fmt == "xml":
        return [_drop_empty(c) for c in _parse_xml(text)]
    return _tree_configs(_yaml_load(text) if fmt == "yaml" else _json_load(text))


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    formats = {".xml": "xml", ".yaml": "yaml", ".yml": "yaml", ".json": "json"}
    if suffix not in formats:
        raise ConfigError(f"config file {str(path)!r} has suffix {suffix!r}; allowed: {sorted(formats)}")
    return formats[suffix]


def _apply_overrides(raw: dict, overrides: Mapping[tuple[str, str], Any]) -> dict:
    merged = {block: dict(values) if isinstance(values, Mapping) else values for block, values in raw.items()}
    params_tag = "Parameters" if "Parameters" in merged else "QuantizationParameters"
    for (block, element), value in overrides.items():
        if block == "QuantizationParameters":
            block = params_tag
            if element == "SaveDir" and isinstance(merged.get("Model"), dict):
                merged["Model"].pop("SaveDir", None)
        if block in merged and not isinstance(merged[block], dict):
            continue  # a malformed block: validation reports it
        merged.setdefault(block, {})[element] = value
    return merged


def build_configs(raws: list[dict], *, base_dir: Path, overrides: Mapping[tuple[str, str], Any] | None = None,
                  origins: Mapping[str, str] | None = None) -> list[RunConfig]:
    """Validate raw Config blocks (after applying command-line ``overrides``: (block, element) -> value).

    Args:
        raws: from :func:`parse_config_text`; not modified.
        base_dir: folder that relative paths of the file are resolved against.
        overrides: values from command-line flags; they replace file values.
        origins: 'Block/Element' -> flag name, to say in errors which flag a bad value came from.

    Raises:
        ConfigError: naming ``Config[i]/Block/Element``, the value and what is allowed.
    """
    overrides = overrides or {}
    raws = raws or [{}]
    return [_validate(_apply_overrides(raw, overrides), i, base_dir, origins or {}) for i, raw in enumerate(raws, 1)]


def load_config_file(path, *, overrides: Mapping[tuple[str, str], Any] | None = None,
                     origins: Mapping[str, str] | None = None) -> list[RunConfig]:
    """Read an XML, YAML or JSON config file into one :class:`RunConfig` per ``Config``.

    Raises:
        ConfigError: a missing or oversized file, a refused or malformed document, or a bad value.
    """
    path = Path(path)
    fmt = _format_of(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    if path.stat().st_size > _MAX_FILE_BYTES:
        raise ConfigError(f"config file {str(path)!r} is larger than {_MAX_FILE_BYTES} bytes; refused")
    raws = parse_config_text(path.read_text(encoding="utf-8"), fmt)
    if not raws:
        raise ConfigError(f"config file {str(path)!r} holds no {CONFIG_ELEMENT} element")
    return build_configs(raws, base_dir=path.resolve().parent, overrides=overrides, origins=origins)

