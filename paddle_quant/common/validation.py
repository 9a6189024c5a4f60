"""Turn pydantic validation failures into paddle_quant's typed errors.

Shared by every pydantic model of the package: the message names each failing
key, the value given and what is allowed (``allowed`` maps key -> description).
"""

from __future__ import annotations

from typing import Any, Mapping

from pydantic import ValidationError

from .errors import ConfigError, ConfigTypeError, PaddleQuantError, closest_match

__all__ = ["translate_validation_error"]


def _is_type_error(error: Mapping[str, Any]) -> bool:
    if error["type"] == "literal_error":
        return not isinstance(error["input"], str)
    return error["type"].endswith("_type")


def _unknown_key_message(key: str, value: Any, fields) -> str:
    hint = closest_match(key, fields)
    suggestion = f"; did you mean {hint!r}?" if hint else ";"
    return f"unknown config key {key!r} (value {value!r}){suggestion} allowed keys: {list(fields)}"


def _type_problem(value: Any, errors: list[Mapping[str, Any]]) -> str:
    for error in errors:
        if isinstance(value, (list, tuple)) and isinstance(error["loc"][-1], int):
            item = error["input"]
            return f"item {error['loc'][-1]} ({item!r}) has wrong type {type(item).__name__}"
    return f"wrong type {type(value).__name__}"


def _key_message(key: str, value: Any, errors: list[Mapping[str, Any]], fields, allowed) -> str:
    if errors[0]["type"] == "extra_forbidden":
        return _unknown_key_message(key, value, fields)
    cause = errors[0].get("ctx", {}).get("error")
    if isinstance(cause, PaddleQuantError):
        problem = str(cause)
    elif all(_is_type_error(e) for e in errors):
        problem = _type_problem(value, errors)
    else:
        problem = "value not allowed"
    return f"config key {key!r} got {value!r}: {problem}; allowed: {allowed[key]}"


def translate_validation_error(exc: ValidationError, data: Mapping[str, Any], fields, allowed) -> PaddleQuantError:
    """Turn pydantic's ValidationError into one ConfigError/ConfigTypeError naming every failing key."""
    by_key: dict[Any, list[Mapping[str, Any]]] = {}
    for error in exc.errors():
        by_key.setdefault(error["loc"][0] if error["loc"] else None, []).append(error)
    messages = []
    for key, errors in by_key.items():
        cause = errors[0].get("ctx", {}).get("error")
        if key is None:
            messages.append(str(cause) if isinstance(cause, PaddleQuantError) else errors[0]["msg"])
        else:
            messages.append(_key_message(key, data.get(key), errors, fields, allowed))
    only_types = all(_is_type_error(e) for e in exc.errors())
    return (ConfigTypeError if only_types else ConfigError)("; ".join(messages))
