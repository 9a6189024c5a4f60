"""The quantization config: PaddleSlim 2.6's ``quant_aware`` config dict, validated.

:class:`QuantConfig` has exactly the keys, defaults and key order of PaddleSlim 2.6's
``_quant_config_default``, so ``QuantConfig.from_dict(d).to_dict()`` gives back the
dict PaddleSlim would use. Unlike PaddleSlim it validates every key (no ``assert``),
refuses unknown keys, and resolves which op types get quantized in one place
(:attr:`QuantConfig.effective_op_types`).

Every failure raises :class:`~paddle_quant.common.errors.ConfigError` (a ``ValueError``) or
:class:`~paddle_quant.common.errors.ConfigTypeError` (a ``TypeError``) whose message names
the key, the value given and what is allowed; pydantic's ``ValidationError`` never
escapes.

Deliberate differences from PaddleSlim 2.6 (each a PaddleSlim defect):

* ``activation_quantize_type='channel_wise_abs_max'`` is refused (PaddleSlim checks
  the activation type against the weight list).
* ``bool`` is refused for ``weight_bits``/``activation_bits``/``window_size``, and
  ``onnx_format``/``quant_post_first``/``scale_trainable`` must be ``bool``.
* ``window_size >= 1``, ``0 < moving_rate < 1``, pattern items must be ``str``.
* ``quantize_op_types`` entries are checked even when ``for_tensorrt`` or
  ``is_full_quantize`` replaces them.
* ``deploy_backend='mkldnn'`` is kept (as ``'onednn'``), not silently dropped;
  ``''`` is refused instead of meaning "no backend".
* ``None`` and an explicit default dict give the same config.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping, Optional, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from paddle_quant.common import registry
from paddle_quant.common.validation import translate_validation_error
from paddle_quant.common.backends import check_backend
from paddle_quant.common.errors import ConfigError, ConfigTypeError, closest_match

__all__ = [
    "WeightQuantizeType",
    "ActivationQuantizeType",
    "DeployBackend",
    "QuantConfig",
    "as_quant_config",
    "DEFAULT_CONFIG",
    "TENSORRT_CONFIG",
]

WeightQuantizeType = Literal["abs_max", "channel_wise_abs_max", "range_abs_max", "moving_average_abs_max"]
"""How weights are quantized (PaddleSlim's WEIGHT_QUANTIZATION_TYPES)."""

ActivationQuantizeType = Literal["abs_max", "range_abs_max", "moving_average_abs_max"]
"""How activations are quantized (PaddleSlim's ACTIVATION_QUANTIZATION_TYPES)."""

DeployBackend = Literal["onednn", "tensorrt", "paddle_lite", "onnx"]
"""Inference backend the quantized model targets (None: no particular backend)."""

_MIN_BITS, _MAX_BITS = 1, 16
_TENSORRT_WEIGHT_TYPES: tuple[str, ...] = ("channel_wise_abs_max",)
_TENSORRT_ACTIVATION_TYPES: tuple[str, ...] = ("range_abs_max", "moving_average_abs_max")

# PaddleSlim 2.6 spellings (compared lower-cased, as PaddleSlim does) -> our names.
_BACKEND_ALIASES: Mapping[str, str] = {"mkldnn": "onednn", "arm": "paddle_lite"}

_BOOL = "True or False"
_BITS = f"an int in [{_MIN_BITS}, {_MAX_BITS}] (bool refused)"
_ALLOWED: Mapping[str, str] = {
    "weight_quantize_type": f"one of {list(get_args(WeightQuantizeType))}",
    "activation_quantize_type": f"one of {list(get_args(ActivationQuantizeType))}",
    "weight_bits": _BITS,
    "activation_bits": _BITS,
    "not_quant_pattern": "a str or a list of str",
    "quantize_op_types": f"a list of op types from {sorted(registry.SUPPORTED_OP_TYPES)}",
    "dtype": "'int8'",
    "window_size": "an int >= 1 (bool refused)",
    "moving_rate": "a float in the open interval (0, 1)",
    "for_tensorrt": _BOOL,
    "is_full_quantize": _BOOL,
    "onnx_format": _BOOL,
    "quant_post_first": _BOOL,
    "scale_trainable": _BOOL,
    "deploy_backend": (
        f"None or one of {list(get_args(DeployBackend))}, case-insensitive; "
        f"PaddleSlim aliases {dict(_BACKEND_ALIASES)}"
    ),
}


class QuantConfig(BaseModel):
    """Validated, immutable quantization config with PaddleSlim 2.6's keys.

    Build it with ``QuantConfig(**kw)``, :meth:`from_dict` or :func:`as_quant_config`;
    all raise ``ConfigError``/``ConfigTypeError`` on bad input. Lists given for
    ``quantize_op_types``/``not_quant_pattern`` are stored as tuples.

    Example:
        >>> QuantConfig.from_dict({"weight_bits": 4}).weight_op_types
        ('conv2d', 'depthwise_conv2d', 'mul')
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    weight_quantize_type: WeightQuantizeType = Field(
        "channel_wise_abs_max",
        description="Weight quantizer; per-channel abs max or per-tensor abs_max/range_abs_max/moving_average_abs_max.",
    )
    activation_quantize_type: ActivationQuantizeType = Field(
        "moving_average_abs_max",
        description="Activation quantizer (per-tensor); channel_wise_abs_max is not an activation type.",
    )
    weight_bits: int = Field(8, ge=_MIN_BITS, le=_MAX_BITS, description="Bits of quantized weights, 1..16.")
    activation_bits: int = Field(8, ge=_MIN_BITS, le=_MAX_BITS, description="Bits of quantized activations, 1..16.")
    not_quant_pattern: Union[str, tuple[str, ...]] = Field(
        ("skip_quant",),
        description="Ops whose op_namescope contains any of these substrings are not quantized (a str is one pattern).",
    )
    quantize_op_types: tuple[str, ...] = Field(
        ("conv2d", "depthwise_conv2d", "mul"),
        description="Op types to quantize (each in registry.SUPPORTED_OP_TYPES); "
        "replaced when for_tensorrt or is_full_quantize is set.",
    )
    dtype: Literal["int8"] = Field("int8", description="Integer type of quantized values; only int8.")
    window_size: int = Field(10000, ge=1, description="Window of the range_abs_max quantizer, >= 1.")
    moving_rate: float = Field(
        0.9, gt=0.0, lt=1.0, description="Decay r of moving_average_abs_max: state' = r*state + 1, in (0, 1)."
    )
    for_tensorrt: bool = Field(
        False,
        description="Quantize registry.TENSORRT_OP_TYPES for TensorRT; needs channel_wise_abs_max weights "
        "and range_abs_max or moving_average_abs_max activations.",
    )
    is_full_quantize: bool = Field(
        False, description="Quantize every supported op type (weight ops, then activation ops)."
    )
    onnx_format: bool = Field(True, description="Insert quantize_linear/dequantize_linear (QDQ) instead of fake_* ops.")
    quant_post_first: bool = Field(False, description="Calibrate with post-training quantization before training.")
    scale_trainable: bool = Field(True, description="Whether quantization scales are trained.")
    deploy_backend: Optional[DeployBackend] = Field(
        None,
        description="Target backend: None, 'onednn', 'tensorrt', 'paddle_lite' or 'onnx' (case-insensitive). "
        "PaddleSlim 2.6 spellings are accepted and normalized: 'tensorrt' -> 'tensorrt', "
        "'mkldnn' -> 'onednn' (PaddleSlim drops it silently; we keep it), 'arm' -> 'paddle_lite'.",
    )

    def __init__(self, **data: Any) -> None:
        """Validate ``data``; raise ConfigError/ConfigTypeError instead of pydantic's ValidationError."""
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise translate_validation_error(exc, data, type(self).model_fields, _ALLOWED) from None

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError:
            raise ConfigError(
                f"QuantConfig is frozen: cannot set {name}={value!r}; build a new one with "
                f"QuantConfig.from_dict({{**config.to_dict(), {name!r}: {value!r}}})"
            ) from None

    @field_validator("not_quant_pattern", "quantize_op_types", mode="before")
    @classmethod
    def _list_to_tuple(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    @field_validator("moving_rate", mode="before")
    @classmethod
    def _float_only(cls, value: Any) -> Any:
        if not isinstance(value, float):
            raise PydanticCustomError("float_type", "Input should be a float")
        return value

    @field_validator("deploy_backend", mode="before")
    @classmethod
    def _normalize_backend(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.lower()
            return _BACKEND_ALIASES.get(value, value)
        return value

    @field_validator("quantize_op_types", mode="after")
    @classmethod
    def _check_op_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for op_type in value:
            if op_type not in registry.SUPPORTED_OP_TYPES:
                hint = closest_match(op_type, sorted(registry.SUPPORTED_OP_TYPES))
                suggestion = f"; did you mean {hint!r}?" if hint else ""
                raise ConfigError(f"op type {op_type!r} is not supported{suggestion}")
        return value

    @model_validator(mode="after")
    def _runnable_on_backend(self) -> "QuantConfig":
        check_backend(self.deploy_backend, activation_bits=self.activation_bits, weight_bits=self.weight_bits,
                      weight_quantize_type=self.weight_quantize_type, onnx_format=self.onnx_format)
        return self

    @model_validator(mode="after")
    def _check_tensorrt(self) -> "QuantConfig":
        if not self.for_tensorrt:
            return self
        if (
            self.weight_quantize_type not in _TENSORRT_WEIGHT_TYPES
            or self.activation_quantize_type not in _TENSORRT_ACTIVATION_TYPES
        ):
            raise ConfigError(
                f"for_tensorrt=True with weight_quantize_type={self.weight_quantize_type!r} and "
                f"activation_quantize_type={self.activation_quantize_type!r}; TensorRT allows "
                f"weight_quantize_type in {list(_TENSORRT_WEIGHT_TYPES)} and "
                f"activation_quantize_type in {list(_TENSORRT_ACTIVATION_TYPES)}"
            )
        return self

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "QuantConfig":
        """Build a config from a PaddleSlim-style dict; missing keys take PaddleSlim's defaults.

        Args:
            config: mapping from config key to value, e.g. ``{"weight_bits": 4}``.

        Raises:
            ConfigTypeError: ``config`` is not a mapping, a key is not a str, or a value has the wrong type.
            ConfigError: an unknown key or a value outside its allowed set.
        """
        if not isinstance(config, Mapping):
            raise ConfigTypeError(
                f"config must be a dict (or QuantConfig or None), got {type(config).__name__}: {config!r}"
            )
        for key in config:
            if not isinstance(key, str):
                raise ConfigTypeError(f"config keys must be str, got {key!r} ({type(key).__name__})")
        return cls(**config)

    def to_dict(self) -> dict[str, Any]:
        """Return the PaddleSlim-shaped dict: every key in PaddleSlim's order, lists instead of tuples."""
        dumped = self.model_dump()
        return {key: list(value) if isinstance(value, tuple) else value for key, value in dumped.items()}

    @property
    def not_quant_patterns(self) -> tuple[str, ...]:
        """``not_quant_pattern`` as a tuple (a single str becomes a 1-tuple)."""
        pattern = self.not_quant_pattern
        return (pattern,) if isinstance(pattern, str) else pattern

    @property
    def effective_op_types(self) -> tuple[str, ...]:
        """Op types actually quantized, without duplicates, in first-occurrence order.

        ``for_tensorrt`` gives ``registry.TENSORRT_OP_TYPES``; otherwise ``is_full_quantize``
        gives ``TRANSFORM_PASS_OP_TYPES + QUANT_DEQUANT_PASS_OP_TYPES``; otherwise
        ``quantize_op_types``.
        """
        if self.for_tensorrt:
            op_types = registry.TENSORRT_OP_TYPES
        elif self.is_full_quantize:
            op_types = registry.TRANSFORM_PASS_OP_TYPES + registry.QUANT_DEQUANT_PASS_OP_TYPES
        else:
            op_types = self.quantize_op_types
        return tuple(dict.fromkeys(op_types))

    @property
    def weight_op_types(self) -> tuple[str, ...]:
        """Effective op types that carry a weight (go to the weight pass), in effective order."""
        return tuple(t for t in self.effective_op_types if t in registry.TRANSFORM_PASS_OP_TYPES)

    @property
    def activation_op_types(self) -> tuple[str, ...]:
        """Effective op types quantized on activations only (not weight ops), in effective order."""
        return tuple(
            t
            for t in self.effective_op_types
            if t in registry.QUANT_DEQUANT_PASS_OP_TYPES and t not in registry.TRANSFORM_PASS_OP_TYPES
        )


def as_quant_config(config: Union[QuantConfig, Mapping[str, Any], None]) -> QuantConfig:
    """Normalize what a public function received as ``config``.

    Args:
        config: None (PaddleSlim defaults), a PaddleSlim-style dict, or a QuantConfig.

    Returns:
        The validated QuantConfig (``config`` itself when it already is one).

    Raises:
        ConfigTypeError: ``config`` is of another type, or a value has the wrong type.
        ConfigError: an unknown key or a value outside its allowed set.
    """
    if config is None:
        return DEFAULT_CONFIG
    if isinstance(config, QuantConfig):
        return config
    return QuantConfig.from_dict(config)


DEFAULT_CONFIG: QuantConfig = QuantConfig()
"""PaddleSlim 2.6's default quant_aware config (what ``config=None`` means)."""

TENSORRT_CONFIG: QuantConfig = QuantConfig(for_tensorrt=True)
"""Defaults with ``for_tensorrt=True``: TensorRT op types, per-channel weights, moving-average activations."""
