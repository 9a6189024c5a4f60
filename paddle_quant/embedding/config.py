"""Options of ``quant_embedding``, validated, in both of PaddleSlim's shapes.

Two dict shapes are accepted (and may not be mixed):

* the flat one of PaddleSlim's docs::

      {"params_name": "emb", "quantize_type": "abs_max", "quantize_bits": 8,
       "dtype": "int8", "threshold": 10.0}

  which PaddleSlim 2.6 merges and then silently ignores; here it quantizes the
  named table(s) with the given method;
* PaddleSlim 2.6's per-op-type dicts::

      {"quantize_op_types": ["lookup_table_v2"],
       "lookup_table_v2": {"quantize_type": "log", "quantize_bits": 8}}

  which quantize every table read by an op of a listed type (``params_name``
  may be added to restrict them).

``quantize_type`` is ``abs_max``, ``log`` or ``product_quantization`` (with
``subspaces``, ``codebook_size``, ``iterations``, ``seed``, ``sample_rows``).
``free_float_table`` (default False) clears the float table from the scope
after quantization, as PaddleSlim always does.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..common.validation import translate_validation_error
from ..common.errors import ConfigError, ConfigTypeError, closest_match

__all__ = [
    "QuantizeType",
    "LookupOpType",
    "LOOKUP_OP_TYPES",
    "QUANTIZE_TYPES",
    "EmbeddingMethodConfig",
    "EmbeddingConfig",
    "as_embedding_config",
]

QuantizeType = Literal["abs_max", "log", "product_quantization"]
"""How a table is quantized: per-tensor abs max, sign + log2 codebook, or product quantization."""

LookupOpType = Literal["lookup_table", "lookup_table_v2"]
"""Op types whose ``W`` input is an embedding table this module quantizes."""

LOOKUP_OP_TYPES: tuple[str, ...] = ("lookup_table", "lookup_table_v2")
QUANTIZE_TYPES: tuple[str, ...] = ("abs_max", "log", "product_quantization")
_PADDLESLIM_ONLY_OP_TYPES = ("fused_embedding_seq_pool", "pyramid_hash")
_PQ_KEYS = ("subspaces", "codebook_size", "iterations", "seed", "sample_rows")
_METHOD_KEYS = ("quantize_type", "quantize_bits", "dtype", "threshold", *_PQ_KEYS)

_METHOD_ALLOWED = {
    "quantize_type": f"one of {list(QUANTIZE_TYPES)}",
    "quantize_bits": "abs_max: an int in [2, 8] or 16; log: an int in [2, 8]; product_quantization: an int in "
                     "[1, 8] (bits per code)",
    "dtype": "'int8' (bits <= 8) or 'int16' (abs_max at 16 bits), or None to derive it from quantize_bits",
    "threshold": "a number > 0 (abs_max only), or None for PaddleSlim's rule (clip at the 99.99th percentile "
                 "of |W| when max|W| >= 1)",
    "subspaces": "an int >= 1 dividing the embedding width (product_quantization only)",
    "codebook_size": "an int in [2, 2**quantize_bits] (product_quantization only), or None for 2**quantize_bits",
    "iterations": "an int >= 1 (k-means iterations, product_quantization only)",
    "seed": "an int >= 0 (product_quantization only)",
    "sample_rows": "an int >= 1 (rows k-means is fitted on; all rows are then assigned), or None for all rows",
}
_ALLOWED = {
    "params_name": "a table name or a list of table names (the W inputs of lookup ops), or None for every table",
    "quantize_op_types": f"a list drawn from {list(LOOKUP_OP_TYPES)}",
    "lookup_table": f"a dict with keys from {list(_METHOD_KEYS)}",
    "lookup_table_v2": f"a dict with keys from {list(_METHOD_KEYS)}",
    "free_float_table": "True (clear the float table from the scope, as PaddleSlim does) or False (keep it)",
}


class EmbeddingMethodConfig(BaseModel):
    """How one table is quantized (one op type's dict, or the flat keys)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    quantize_type: QuantizeType = Field("abs_max", description="Quantization method.")
    quantize_bits: int = Field(8, description="Bits per value (abs_max, log) or per code (product_quantization).")
    dtype: Optional[Literal["int8", "int16"]] = Field(
        None, description="Storage type of the integer table; None derives it from quantize_bits.")
    threshold: Optional[float] = Field(
        None, gt=0.0, description="abs_max clip value; None: PaddleSlim's 99.99th-percentile rule when max|W| >= 1.")
    subspaces: int = Field(16, ge=1, description="Product quantization: sub-vectors per row.")
    codebook_size: Optional[int] = Field(
        None, ge=2, le=256, description="Product quantization: centroids per sub-space; None: 2**quantize_bits.")
    iterations: int = Field(20, ge=1, description="Product quantization: k-means iterations.")
    seed: int = Field(0, ge=0, description="Product quantization: seed of k-means initialisation and row sampling.")
    sample_rows: Optional[int] = Field(
        32768, ge=1, description="Product quantization: rows (seeded sample) k-means is fitted on; None: all rows.")

    def __init__(self, **data: Any) -> None:
        """Validate ``data``; bad values raise ConfigError/ConfigTypeError."""
        if isinstance(data.get("threshold"), int) and not isinstance(data.get("threshold"), bool):
            data["threshold"] = float(data["threshold"])
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise translate_validation_error(exc, data, type(self).model_fields, _METHOD_ALLOWED) from None

    @model_validator(mode="after")
    def _consistent(self) -> "EmbeddingMethodConfig":
        _check_bits(self)
        _check_method_keys(self)
        return self

    @property
    def storage_dtype(self) -> str:
        """``int16`` for 16-bit abs_max, ``int8`` otherwise."""
        return "int16" if self.quantize_bits == 16 else "int8"

    @property
    def centroids(self) -> int:
        """Product quantization: centroids per sub-space (``codebook_size`` or ``2**quantize_bits``)."""
        return self.codebook_size if self.codebook_size is not None else 2 ** self.quantize_bits


def _bits_allowed(quantize_type: str, bits: int) -> bool:
    if quantize_type == "abs_max":
        return 2 <= bits <= 8 or bits == 16
    if quantize_type == "log":
        return 2 <= bits <= 8
    return 1 <= bits <= 8


def _method_error(key: str, value: Any, problem: str) -> ConfigError:
    return ConfigError(f"config key {key!r} got {value!r}: {problem}; allowed: {_METHOD_ALLOWED[key]}")


def _check_bits(method: EmbeddingMethodConfig) -> None:
    bits = method.quantize_bits
    if not _bits_allowed(method.quantize_type, bits):
        raise _method_error("quantize_bits", bits, f"not allowed with quantize_type {method.quantize_type!r}")
    if method.dtype is not None and method.dtype != method.storage_dtype:
        raise _method_error("dtype", method.dtype, f"does not match quantize_bits {bits} "
                            f"(which stores {method.storage_dtype!r})")
    if method.codebook_size is not None and method.codebook_size > 2 ** bits:
        raise _method_error("codebook_size", method.codebook_size,
                            f"does not fit in quantize_bits {bits} (at most {2 ** bits} codes)")


def _check_method_keys(method: EmbeddingMethodConfig) -> None:
    given = method.model_fields_set
    if method.quantize_type != "abs_max" and "threshold" in given and method.threshold is not None:
        raise _method_error("threshold", method.threshold,
                            f"only used by quantize_type 'abs_max', not {method.quantize_type!r}")
    if method.quantize_type != "product_quantization":
        for key in _PQ_KEYS:
            if key in given:
                raise _method_error(key, getattr(method, key), f"only used by quantize_type "
                                    f"'product_quantization', not {method.quantize_type!r}")


class EmbeddingConfig(BaseModel):
    """``quant_embedding`` options: which tables, which method per lookup op type, keep or free the float table."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    params_name: Optional[tuple[str, ...]] = Field(
        None, description="Tables to quantize (W inputs of lookup ops); None: every table of the listed op types.")
    quantize_op_types: tuple[LookupOpType, ...] = Field(
        LOOKUP_OP_TYPES, min_length=1, description="Lookup op types whose tables are quantized.")
    lookup_table: EmbeddingMethodConfig = Field(
        default_factory=EmbeddingMethodConfig, description="Method for tables read by lookup_table ops.")
    lookup_table_v2: EmbeddingMethodConfig = Field(
        default_factory=EmbeddingMethodConfig, description="Method for tables read by lookup_table_v2 ops.")
    free_float_table: bool = Field(
        False, description="Clear the float table from the scope afterwards (PaddleSlim always does).")

    def __init__(self, **data: Any) -> None:
        """Validate ``data`` (nested shape only; use :meth:`from_dict` for PaddleSlim dicts)."""
        data = _normalise_lists(data)
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise translate_validation_error(exc, data, type(self).model_fields, _ALLOWED) from None

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "EmbeddingConfig":
        """Build from either PaddleSlim dict shape (see the module docstring).

        Raises:
            ConfigError: unknown key, bad value, or flat method keys mixed with per-op-type dicts.
            ConfigTypeError: ``config`` is not a mapping, or a value has the wrong type.
        """
        if not isinstance(config, Mapping):
            raise ConfigTypeError(f"config must be a dict or EmbeddingConfig, got {type(config).__name__}")
        data = dict(config)
        _check_known_keys(data, (*cls.model_fields, *_METHOD_KEYS))
        flat = {key: data.pop(key) for key in _METHOD_KEYS if key in data}
        if flat:
            nested = [t for t in LOOKUP_OP_TYPES if t in data]
            if nested:
                raise ConfigError(f"config mixes flat method keys {sorted(flat)} with per-op-type dicts {nested}; "
                                  "allowed: one shape (flat keys apply to every lookup op type)")
            method = _method_from(flat)
            data.update({op_type: method for op_type in LOOKUP_OP_TYPES})
        for op_type in LOOKUP_OP_TYPES:
            if isinstance(data.get(op_type), Mapping):
                data[op_type] = _method_from(data[op_type])
        return cls(**data)

    def method_for(self, op_type: str) -> EmbeddingMethodConfig:
        """The method configured for tables read by ``op_type``."""
        return getattr(self, op_type)


def _check_known_keys(data: Mapping[str, Any], known: tuple[str, ...]) -> None:
    for key, value in data.items():
        if key not in known:
            hint = closest_match(key, known)
            suggestion = f"; did you mean {hint!r}?" if hint else ";"
            raise ConfigError(f"unknown config key {key!r} (value {value!r}){suggestion} allowed keys: {list(known)}")


def _method_from(values: Mapping[str, Any]) -> EmbeddingMethodConfig:
    return EmbeddingMethodConfig(**dict(values))


def _normalise_lists(data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    for key in ("params_name", "quantize_op_types"):
        value = data.get(key)
        if isinstance(value, str):
            data[key] = (value,)
        elif isinstance(value, list):
            data[key] = tuple(value)
    for op_type in data.get("quantize_op_types") or ():
        if op_type in _PADDLESLIM_ONLY_OP_TYPES:
            raise ConfigError(f"config key 'quantize_op_types' got {op_type!r}: PaddleSlim's {op_type} is not "
                              f"supported by paddle_quant; allowed: {_ALLOWED['quantize_op_types']}")
    return data


def as_embedding_config(config: Union[EmbeddingConfig, Mapping[str, Any], None]) -> EmbeddingConfig:
    """Normalize what ``quant_embedding`` received as ``config``.

    Args:
        config: a PaddleSlim-style dict (either shape), an EmbeddingConfig, or None
            (PaddleSlim's default: every lookup table, abs_max 8 bits).

    Returns:
        The validated EmbeddingConfig (``config`` itself when it already is one).

    Raises:
        ConfigTypeError: ``config`` is of another type, or a value has the wrong type.
        ConfigError: an unknown key or a value outside its allowed set.
    """
    if isinstance(config, EmbeddingConfig):
        return config
    return EmbeddingConfig.from_dict({} if config is None else config)
