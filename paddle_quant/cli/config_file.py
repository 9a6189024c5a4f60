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
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

from pydantic import ValidationError

from ..common.errors import ConfigError, PaddleQuantError, closest_match
from .config_model import _ALLOWED, ELEMENTS, RunConfig

__all__ = [
    "ROOT_ELEMENT",
    "CONFIG_ELEMENT",
    "load_config_file",
    "parse_config_text",
    "build_configs",
]

ROOT_ELEMENT = "QuantizationConfigs"
CONFIG_ELEMENT = "Config"
_MAX_FILE_BYTES = 1 << 20


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
