"""The dygraph QAT config: PaddleSlim 2.6's ``paddleslim.QAT`` config dict, validated.

:class:`DygraphQATConfig` has the keys, defaults and key order of PaddleSlim 2.6's
dygraph ``_quant_config_default`` plus ``deploy_backend``. The keys it shares with the
static :class:`~paddle_quant.common.config.QuantConfig` (quantize types, bits, ``dtype``,
``window_size``, ``moving_rate``, ``onnx_format``, ``deploy_backend``) are validated by
``QuantConfig`` itself (held as :attr:`DygraphQATConfig.quant`), so both workflows accept
and refuse the same values; which static op types a layer type becomes comes from
:data:`paddle_quant.common.registry.LAYER_OP_TYPES`.

Deliberate differences from PaddleSlim 2.6: every key is validated with a typed error (no
``assert``), unknown keys are refused, ``activation_quantize_type`` is checked against the
activation list (PaddleSlim checks it against the weight list), ``dtype`` only ``'int8'``.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..common import registry
from ..common.config import QuantConfig
from ..common.errors import ConfigError, ConfigTypeError, closest_match
from ..common.validation import translate_validation_error

__all__ = ["DygraphQATConfig", "as_dygraph_config", "DYGRAPH_DEFAULTS", "SHARED_KEYS", "LAYER_TYPES"]

SHARED_KEYS: tuple[str, ...] = (
    "weight_quantize_type", "activation_quantize_type", "weight_bits", "activation_bits", "dtype",
    "window_size", "moving_rate", "onnx_format", "deploy_backend",
)
"""Keys validated by :class:`QuantConfig` (the static config) for both workflows."""

LAYER_TYPES: tuple[str, ...] = tuple(registry.LAYER_OP_TYPES)
"""Values ``quantizable_layer_type`` may hold."""

_OWN_ALLOWED = {
    "weight_preprocess_type": "None or 'PACT'",
    "activation_preprocess_type": "None or 'PACT'",
    "quantizable_layer_type": f"a list of layer types from {list(LAYER_TYPES)}",
    "fuse_conv_bn": "True or False",
}
_KEY_ORDER = ("weight_preprocess_type", "activation_preprocess_type", "weight_quantize_type",
              "activation_quantize_type", "weight_bits", "activation_bits", "dtype", "window_size",
              "moving_rate", "quantizable_layer_type", "fuse_conv_bn", "onnx_format", "deploy_backend")


class _DygraphOptions(BaseModel):
    """The keys only the dygraph workflow has."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    weight_preprocess_type: Optional[Literal["PACT"]] = Field(
        None, description="Preprocess weights before quantizing: None or 'PACT' (a learned clip).")
    activation_preprocess_type: Optional[Literal["PACT"]] = Field(
        None, description="Preprocess activations before quantizing: None or 'PACT' (a learned clip).")
    quantizable_layer_type: tuple[str, ...] = Field(
        ("Conv2D", "Linear"), description="Layer classes wrapped by QAT.quantize (LAYER_TYPES).")
    fuse_conv_bn: bool = Field(False, description="Fold BatchNorm2D into the Conv2D before it, before wrapping.")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise translate_validation_error(exc, data, _KEY_ORDER, _OWN_ALLOWED) from None

    @field_validator("quantizable_layer_type", mode="before")
    @classmethod
    def _list_to_tuple(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    @field_validator("quantizable_layer_type", mode="after")
    @classmethod
    def _check_layer_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for layer_type in value:
            if layer_type not in LAYER_TYPES:
                hint = closest_match(layer_type, list(LAYER_TYPES))
                suggestion = f"; did you mean {hint!r}?" if hint else ""
                raise ConfigError(f"layer type {layer_type!r} cannot be quantized{suggestion}")
        if not value:
            raise ConfigError("the list is empty, so nothing would be quantized")
        return value


class DygraphQATConfig:
    """Validated, immutable dygraph QAT config (PaddleSlim 2.6's ``paddleslim.QAT`` keys + ``deploy_backend``).

    Attributes:
        options: the dygraph-only keys (preprocess types, ``quantizable_layer_type``, ``fuse_conv_bn``).
        quant: the shared keys as a static :class:`QuantConfig`, whose ``quantize_op_types`` are the op
            types the wrapped layers become when the model is saved.
    """

    __slots__ = ("options", "quant")

    def __init__(self, options: _DygraphOptions, quant: QuantConfig) -> None:
        object.__setattr__(self, "options", options)
        object.__setattr__(self, "quant", quant)

    def __setattr__(self, name: str, value: Any) -> None:
        raise ConfigError(f"DygraphQATConfig is frozen: cannot set {name}={value!r}; build a new one from a dict")

    def __getattr__(self, name: str) -> Any:
        if name in _DygraphOptions.model_fields:
            return getattr(self.options, name)
        if name in SHARED_KEYS:
            return getattr(self.quant, name)
        raise AttributeError(name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DygraphQATConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"DygraphQATConfig({self.to_dict()!r})"

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "DygraphQATConfig":
        """Build a config from a PaddleSlim-style dict; missing keys take PaddleSlim's defaults.

        Raises:
            ConfigTypeError: ``config`` is not a mapping, or a value has the wrong type.
            ConfigError: an unknown key, or a value outside its allowed set.
        """
        if not isinstance(config, Mapping):
            raise ConfigTypeError(f"config must be a dict (or DygraphQATConfig or None), got "
                                  f"{type(config).__name__}: {config!r}")
        _refuse_unknown_keys(config)
        options = _DygraphOptions(**{k: v for k, v in config.items() if k in _DygraphOptions.model_fields})
        shared = {k: v for k, v in config.items() if k in SHARED_KEYS}
        op_types = tuple(dict.fromkeys(t for layer in options.quantizable_layer_type
                                       for t in registry.LAYER_OP_TYPES[layer]))
        return cls(options, QuantConfig(**shared, quantize_op_types=op_types))

    def to_dict(self) -> dict[str, Any]:
        """The PaddleSlim-shaped dict (PaddleSlim's key order, lists instead of tuples, then ``deploy_backend``)."""
        merged = {**self.options.model_dump(), **{k: getattr(self.quant, k) for k in SHARED_KEYS}}
        return {key: list(merged[key]) if isinstance(merged[key], tuple) else merged[key] for key in _KEY_ORDER}


def _refuse_unknown_keys(config: Mapping[str, Any]) -> None:
    for key, value in config.items():
        if not isinstance(key, str):
            raise ConfigTypeError(f"config keys must be str, got {key!r} ({type(key).__name__})")
        if key not in _KEY_ORDER:
            hint = closest_match(key, list(_KEY_ORDER))
            suggestion = f"; did you mean {hint!r}?" if hint else ";"
            raise ConfigError(f"unknown config key {key!r} (value {value!r}){suggestion} allowed keys: "
                              f"{list(_KEY_ORDER)}")


DYGRAPH_DEFAULTS = DygraphQATConfig.from_dict({})
"""PaddleSlim 2.6's dygraph defaults: channel-wise abs max weights, moving-average activations, Conv2D + Linear."""


def as_dygraph_config(config: Union[DygraphQATConfig, Mapping[str, Any], None]) -> DygraphQATConfig:
    """None (PaddleSlim's defaults), a PaddleSlim-style dict, or a DygraphQATConfig -> a DygraphQATConfig."""
    if config is None:
        return DYGRAPH_DEFAULTS
    if isinstance(config, DygraphQATConfig):
        return config
    return DygraphQATConfig.from_dict(config)
