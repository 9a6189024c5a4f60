"""Tests of paddle_quant.common.config: PaddleSlim 2.6 parity, its defects fixed, and error messages.

Oracles: PaddleSlim 2.6's ``_quant_config_default``/``_parse_configs`` (differential, where
PaddleSlim is right) and explicit regression cases for where it is not. When PaddleSlim
cannot be imported, Paddle's own ``paddle.static.quantization.quanter`` (the same config
minus ``deploy_backend``) stands in, with PaddleSlim's one-line deploy_backend check.
"""

from __future__ import annotations

import ast
import os
import pathlib

os.environ.setdefault("FLAGS_enable_pir_api", "0")

import pydantic
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from paddle_quant.common import config as config_module
from paddle_quant.common import registry
from paddle_quant.common.config import DEFAULT_CONFIG, TENSORRT_CONFIG, QuantConfig, as_quant_config
from paddle_quant.common.errors import ConfigError, ConfigTypeError

_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

# PaddleSlim 2.6 deploy_backend spellings (it lower-cases them) -> our normalized names.
_SLIM_BACKENDS = {"tensorrt": "tensorrt", "mkldnn": "onednn", "arm": "paddle_lite"}
_SUPPORTED = sorted(registry.SUPPORTED_OP_TYPES)


class _Oracle:
    """PaddleSlim's config defaults and parser (or Paddle's, plus PaddleSlim's backend check)."""

    def __init__(self) -> None:
        import paddle  # noqa: F401  (PaddleSlim needs paddle imported first)

        try:
            from paddleslim.quant import quanter
        except Exception:  # PaddleSlim missing or broken: fall back to Paddle's copy
            from paddle.static.quantization import quanter

            self.defaults = {**quanter._quant_config_default, "deploy_backend": None}
            self.is_paddleslim = False
        else:
            self.defaults = dict(quanter._quant_config_default)
            self.is_paddleslim = True
        self.quanter = quanter

    def parse(self, user_config: dict) -> dict | None:
        """Resolved config, or None when the parser refuses ``user_config``."""
        try:
            resolved = self.quanter._parse_configs(user_config)
            backend = resolved.get("deploy_backend")
            if not self.is_paddleslim and backend and backend.lower() not in _SLIM_BACKENDS:
                return None
            return resolved
        except Exception:
            return None


@pytest.fixture(scope="module")
def oracle() -> _Oracle:
    return _Oracle()


def _dedupe(op_types) -> tuple:
    return tuple(dict.fromkeys(op_types))


def _slim_split(resolved_op_types) -> tuple[tuple, tuple]:
    """PaddleSlim quant_aware's split of resolved op types into weight-pass and activation-pass ops."""
    weight, activation = [], []
    for op_type in resolved_op_types:
        if op_type in registry.TRANSFORM_PASS_OP_TYPES:
            weight.append(op_type)
        elif op_type in registry.QUANT_DEQUANT_PASS_OP_TYPES:
            activation.append(op_type)
    return _dedupe(weight), _dedupe(activation)


# --------------------------------------------------------------------------- parity


def test_defaults_equal_paddleslim(oracle):
    assert QuantConfig().to_dict() == oracle.defaults
    assert list(QuantConfig().to_dict()) == list(oracle.defaults)
    assert list(QuantConfig.model_fields) == list(oracle.defaults)


def test_op_type_constants_equal_paddle(oracle):
    from paddle.static.quantization import quanter as paddle_quanter

    for name in ("TRANSFORM_PASS_OP_TYPES", "QUANT_DEQUANT_PASS_OP_TYPES", "TENSORRT_OP_TYPES"):
        assert list(getattr(registry, name)) == getattr(paddle_quanter, name), name
        assert list(getattr(registry, name)) == getattr(oracle.quanter, name), name


def test_every_field_has_a_description():
    for name, field in QuantConfig.model_fields.items():
        assert field.description, name


@st.composite
def _valid_slim_dicts(draw) -> dict:
    """Random configs PaddleSlim 2.6 accepts and that are correct (a random subset of keys)."""
    for_tensorrt = draw(st.booleans())
    weight_types = ["channel_wise_abs_max"] if for_tensorrt else [
        "abs_max", "channel_wise_abs_max", "range_abs_max", "moving_average_abs_max"]
    activation_types = ["range_abs_max", "moving_average_abs_max"] + ([] if for_tensorrt else ["abs_max"])
    values = {
        "weight_quantize_type": st.sampled_from(weight_types),
        "activation_quantize_type": st.sampled_from(activation_types),
        "weight_bits": st.integers(1, 16),
        "activation_bits": st.integers(1, 16),
        "not_quant_pattern": st.one_of(st.text(max_size=8), st.lists(st.text(max_size=8), max_size=3)),
        "quantize_op_types": st.lists(st.sampled_from(_SUPPORTED), max_size=6),
        "dtype": st.just("int8"),
        "window_size": st.integers(1, 10**9),
        "moving_rate": st.floats(0.0, 1.0, exclude_min=True, exclude_max=True),
        "is_full_quantize": st.booleans(),
        "onnx_format": st.booleans(),
        "quant_post_first": st.booleans(),
        "scale_trainable": st.booleans(),
        "deploy_backend": st.sampled_from([None, "tensorrt", "TensorRT", "mkldnn", "MKLDNN", "arm", "ARM"]),
    }
    drawn = draw(st.fixed_dictionaries({}, optional=values))
    if for_tensorrt or draw(st.booleans()):
        drawn["for_tensorrt"] = for_tensorrt
    return _runnable_on_backend(drawn)


def _runnable_on_backend(drawn: dict) -> dict:
    """Keep a drawn dict inside what its deploy_backend can run: PaddleSlim accepts e.g. 4-bit
    activations for mkldnn, which Paddle Inference then refuses; we refuse those at config time
    (tests/common/test_backends.py), so the round-trip property only covers runnable ones."""
    backend = drawn.get("deploy_backend")
    if backend is None:
        return drawn
    drawn = {**drawn, "activation_bits": 8} if "activation_bits" in drawn else drawn
    if not 2 <= drawn.get("weight_bits", 8) <= 8:
        drawn["weight_bits"] = 8
    if backend.lower() == "tensorrt" and "weight_quantize_type" in drawn:
        drawn["weight_quantize_type"] = "channel_wise_abs_max"
    if backend.lower() == "mkldnn" and "onnx_format" in drawn:
        drawn["onnx_format"] = True
    return drawn


@_SETTINGS
@given(user=_valid_slim_dicts())
def test_valid_paddleslim_dicts_round_trip(oracle, user):
    resolved = oracle.parse(user)
    assert resolved is not None, "generator made a dict PaddleSlim refuses"
    expected = {**oracle.defaults, **user}
    if expected["deploy_backend"] is not None:
        expected["deploy_backend"] = _SLIM_BACKENDS[expected["deploy_backend"].lower()]

    config = QuantConfig.from_dict(user)

    assert config.to_dict() == expected
    assert list(config.to_dict()) == list(oracle.defaults)
    assert QuantConfig.from_dict(config.to_dict()) == config
    assert config.effective_op_types == _dedupe(resolved["quantize_op_types"])
    assert (config.weight_op_types, config.activation_op_types) == _slim_split(resolved["quantize_op_types"])


# Candidate values per key: (ours, PaddleSlim's equivalent, verdict).
#   "ok":        valid on its own; PaddleSlim and we accept it.
#   "trusted":   PaddleSlim refuses it, rightly; so must we.
#   "refuse":    we refuse; PaddleSlim wrongly accepts (or accepts only in some branches).
#   "extension": we accept; PaddleSlim needs its own spelling (the second element).
# Cross-key rules (for_tensorrt with the quantize types) are left to PaddleSlim, which gets them right.
_OK, _T, _R, _E = "ok", "trusted", "refuse", "extension"


def _same(verdict, *values):
    return [(v, v, verdict) for v in values]


_CANDIDATES = {
    "weight_quantize_type": _same(_OK, "abs_max", "channel_wise_abs_max", "range_abs_max", "moving_average_abs_max")
    + _same(_T, "ABS_MAX", "log", 3),
    "activation_quantize_type": _same(_OK, "abs_max", "range_abs_max", "moving_average_abs_max")
    + _same(_T, "hist", None) + _same(_R, "channel_wise_abs_max"),
    "weight_bits": _same(_OK, 1, 4, 8, 16) + _same(_T, 0, 17, -8, "8", 8.0) + _same(_R, True),
    "activation_bits": _same(_OK, 1, 8, 16) + _same(_T, 0, 17, "8", 8.0, False) + _same(_R, True),
    "not_quant_pattern": _same(_OK, "skip_quant", "", ["skip_quant"], [], ["a", "b"])
    + [(("a",), ["a"], _E)] + _same(_T, 3, None) + _same(_R, ["a", 3]),
    "quantize_op_types": _same(_OK, ["conv2d"], [], ["relu", "mul", "pool2d"], ["matmul_v2", "matmul_v2"])
    + [(("conv2d", "mul"), ["conv2d", "mul"], _E)] + _same(_T, "conv2d", None)
    + _same(_R, ["conv3d"], ["conv2d", "Conv2D"]),
    "dtype": _same(_OK, "int8") + _same(_T, "uint8", "int16", 8),
    "window_size": _same(_OK, 1, 10000) + _same(_T, 1.0, "10") + _same(_R, 0, -5, True),
    "moving_rate": _same(_OK, 0.5, 0.9, 1e-9) + _same(_T, 1, "0.9", True)
    + _same(_R, 0.0, 1.0, 1.5, -0.1, float("nan")),
    "for_tensorrt": _same(_OK, True, False) + _same(_T, 1, 0, None),
    "is_full_quantize": _same(_OK, True, False) + _same(_T, 1, "yes"),
    "onnx_format": _same(_OK, True, False) + _same(_R, 1, "yes", None),
    "quant_post_first": _same(_OK, True, False) + _same(_R, 0),
    "scale_trainable": _same(_OK, True, False) + _same(_R, 1.0),
    "deploy_backend": _same(_OK, None, "tensorrt", "TensorRT", "mkldnn", "ARM")
    + [("onednn", "mkldnn", _E), ("paddle_lite", "arm", _E), ("ONNX", None, _E)]
    + _same(_T, "cuda", 3) + _same(_R, "", 0, False),
    "weight_quantize_typ": _same(_R, "abs_max"),  # unknown key: PaddleSlim ignores it
}


def _candidate(values):
    """Mostly (3 in 4) a value valid on its own, so that whole configs are often valid."""
    good = [v for v in values if v[2] in (_OK, _E)]
    if not good:
        return st.sampled_from(values)
    return st.one_of(st.sampled_from(good), st.sampled_from(good), st.sampled_from(good), st.sampled_from(values))


def _backend_cannot_run(user: dict) -> bool:
    """The deploy_backend rules of docs/deploy.md, restated: PaddleSlim accepts these, the runtime refuses them."""
    backend = user.get("deploy_backend")
    if not isinstance(backend, str) or not backend:  # None, or a non-string PaddleSlim refuses itself
        return False
    backend = backend.lower()
    defaults = {"activation_bits": 8, "weight_bits": 8, "weight_quantize_type": "channel_wise_abs_max",
                "onnx_format": True}
    value = {**defaults, **user}
    return (value["activation_bits"] != 8 or not 2 <= value["weight_bits"] <= 8
            or (backend == "tensorrt" and value["weight_quantize_type"] != "channel_wise_abs_max")
            or (backend == "mkldnn" and value["onnx_format"] is not True))


@settings(_SETTINGS, max_examples=300)
@given(case=st.fixed_dictionaries({}, optional={k: _candidate(v) for k, v in _CANDIDATES.items()}))
@example(case={"deploy_backend": (3, 3, _T)})  # drawn on Python 3.9: the helper called .lower() on an int
def test_acceptance_agrees_with_paddleslim(oracle, case):
    ours = {key: value for key, (value, _, _) in case.items()}
    slims = {key: value for key, (_, value, _) in case.items()}
    verdicts = {verdict for _, _, verdict in case.values()}

    try:
        config = QuantConfig.from_dict(ours)
    except (ConfigError, ConfigTypeError):
        config = None
    if _R in verdicts or _backend_cannot_run(ours):
        assert config is None, f"accepted a config PaddleSlim wrongly accepts: {ours}"
        return
    resolved = oracle.parse(slims)
    assert (config is not None) == (resolved is not None), (ours, slims)
    if config is not None:
        assert config.effective_op_types == _dedupe(resolved["quantize_op_types"])
        assert (config.weight_op_types, config.activation_op_types) == _slim_split(resolved["quantize_op_types"])


# --------------------------------------------------------------------------- PaddleSlim defects


def test_activation_channel_wise_refused(oracle):
    user = {"activation_quantize_type": "channel_wise_abs_max"}
    if oracle.is_paddleslim:
        assert oracle.parse(user) is not None  # the defect: checked against the weight list
    with pytest.raises(ConfigError) as info:
        QuantConfig.from_dict(user)
    message = str(info.value)
    assert "'activation_quantize_type'" in message and "'channel_wise_abs_max'" in message
    assert "['abs_max', 'range_abs_max', 'moving_average_abs_max']" in message


def test_none_config_equals_explicit_defaults(oracle):
    from_none = as_quant_config(None)
    spelled_out = as_quant_config(dict(oracle.defaults))
    assert from_none == spelled_out == QuantConfig() == DEFAULT_CONFIG
    assert from_none.weight_op_types == spelled_out.weight_op_types == ("conv2d", "depthwise_conv2d", "mul")
    assert from_none.activation_op_types == spelled_out.activation_op_types == ()


def test_mkldnn_backend_kept(oracle):
    config = QuantConfig.from_dict({"deploy_backend": "mkldnn"})
    assert config.deploy_backend == "onednn"
    assert config.to_dict()["deploy_backend"] == "onednn"
    if oracle.is_paddleslim:
        assert oracle.parse({"deploy_backend": "mkldnn"}).get("quant_config") is None  # the defect: dropped


@pytest.mark.parametrize(
    ("given_backend", "normalized"),
    [("mkldnn", "onednn"), ("MKLDNN", "onednn"), ("arm", "paddle_lite"), ("ARM", "paddle_lite"),
     ("TensorRT", "tensorrt"), ("onednn", "onednn"), ("Paddle_Lite", "paddle_lite"), ("onnx", "onnx"), (None, None)],
)
def test_deploy_backend_aliases(given_backend, normalized):
    assert QuantConfig(deploy_backend=given_backend).deploy_backend == normalized


# --------------------------------------------------------------------------- bad input

_BUILDERS = {
    "from_dict": QuantConfig.from_dict,
    "constructor": lambda d: QuantConfig(**d),
    "as_quant_config": as_quant_config,
}

_ALL_OPS_FRAGMENT = "'conv2d_transpose'"  # part of the listed supported op types

_BAD = [
    # (user config, exception type, fragments the message must contain: key, value, allowed)
    ({"weight_quantize_typ": "abs_max"}, ConfigError,
     ["'weight_quantize_typ'", "'abs_max'", "did you mean 'weight_quantize_type'?"]),
    ({"weight_bits": "8"}, ConfigTypeError, ["'weight_bits'", "'8'", "[1, 16]"]),
    ({"weight_bits": True}, ConfigTypeError, ["'weight_bits'", "True", "[1, 16]", "bool refused"]),
    ({"weight_bits": 8.0}, ConfigTypeError, ["'weight_bits'", "8.0", "[1, 16]"]),
    ({"weight_bits": 0}, ConfigError, ["'weight_bits'", "got 0", "[1, 16]"]),
    ({"activation_bits": 17}, ConfigError, ["'activation_bits'", "got 17", "[1, 16]"]),
    ({"for_tensorrt": 1}, ConfigTypeError, ["'for_tensorrt'", "got 1", "True or False"]),
    ({"quantize_op_types": "conv2d"}, ConfigTypeError, ["'quantize_op_types'", "'conv2d'", _ALL_OPS_FRAGMENT]),
    ({"quantize_op_types": ["conv3d"]}, ConfigError,
     ["'quantize_op_types'", "'conv3d'", "did you mean 'conv2d'?", _ALL_OPS_FRAGMENT]),
    ({"not_quant_pattern": 3}, ConfigTypeError, ["'not_quant_pattern'", "got 3", "a str or a list of str"]),
    ({"not_quant_pattern": ["a", 3]}, ConfigTypeError, ["'not_quant_pattern'", "['a', 3]", "item 1"]),
    ({"dtype": "uint8"}, ConfigError, ["'dtype'", "'uint8'", "'int8'"]),
    ({"window_size": 0}, ConfigError, ["'window_size'", "got 0", ">= 1"]),
    ({"moving_rate": 1.5}, ConfigError, ["'moving_rate'", "1.5", "(0, 1)"]),
    ({"moving_rate": 1}, ConfigTypeError, ["'moving_rate'", "got 1", "(0, 1)"]),
    ({"deploy_backend": "cuda"}, ConfigError, ["'deploy_backend'", "'cuda'", "'onednn'", "'mkldnn'"]),
    ({"weight_quantize_type": "log"}, ConfigError, ["'weight_quantize_type'", "'log'", "'channel_wise_abs_max'"]),
    ({"for_tensorrt": True, "weight_quantize_type": "abs_max"}, ConfigError,
     ["for_tensorrt=True", "'abs_max'", "['channel_wise_abs_max']", "['range_abs_max', 'moving_average_abs_max']"]),
    ({"for_tensorrt": True, "activation_quantize_type": "abs_max"}, ConfigError,
     ["for_tensorrt=True", "'abs_max'", "['range_abs_max', 'moving_average_abs_max']"]),
]


@pytest.mark.parametrize("builder", list(_BUILDERS.values()), ids=list(_BUILDERS))
@pytest.mark.parametrize(("user", "error", "fragments"), _BAD, ids=[repr(case[0]) for case in _BAD])
def test_bad_value_names_key_value_and_allowed(builder, user, error, fragments):
    with pytest.raises(error) as info:
        builder(user)
    assert not isinstance(info.value, pydantic.ValidationError)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_every_failing_key_is_named():
    with pytest.raises(ConfigError) as info:
        QuantConfig.from_dict({"weight_bits": "8", "dtype": "uint8", "window_size": 0})
    message = str(info.value)
    assert "'weight_bits'" in message and "'dtype'" in message and "'window_size'" in message


def test_only_type_errors_raise_config_type_error():
    with pytest.raises(ConfigTypeError) as info:
        QuantConfig.from_dict({"weight_bits": "8", "for_tensorrt": 1})
    assert "'weight_bits'" in str(info.value) and "'for_tensorrt'" in str(info.value)


@pytest.mark.parametrize("bad", [["weight_bits", 8], "abs_max", 3, ("a", 1)])
def test_non_dict_config_refused(bad):
    with pytest.raises(ConfigTypeError) as info:
        as_quant_config(bad)
    assert type(bad).__name__ in str(info.value) and "dict" in str(info.value)
    with pytest.raises(ConfigTypeError):
        QuantConfig.from_dict(bad)


def test_non_str_key_refused():
    with pytest.raises(ConfigTypeError, match="keys must be str"):
        QuantConfig.from_dict({1: 8})


def test_frozen():
    config = QuantConfig()
    with pytest.raises(ConfigError) as info:
        config.weight_bits = 4
    assert "frozen" in str(info.value) and "weight_bits" in str(info.value)
    assert config.weight_bits == 8
    assert hash(config) == hash(QuantConfig())


# --------------------------------------------------------------------------- behaviour


def test_lists_stored_as_tuples_and_returned_as_lists():
    config = QuantConfig.from_dict({"quantize_op_types": ["conv2d", "relu"], "not_quant_pattern": ["a", "b"]})
    assert config.quantize_op_types == ("conv2d", "relu")
    assert config.not_quant_pattern == ("a", "b")
    assert config.to_dict()["quantize_op_types"] == ["conv2d", "relu"]
    assert config.to_dict()["not_quant_pattern"] == ["a", "b"]


def test_str_pattern_kept_as_str():
    config = QuantConfig.from_dict({"not_quant_pattern": "skip_me"})
    assert config.to_dict()["not_quant_pattern"] == "skip_me"
    assert config.not_quant_patterns == ("skip_me",)
    assert DEFAULT_CONFIG.not_quant_patterns == ("skip_quant",)


def test_effective_op_types():
    assert TENSORRT_CONFIG.effective_op_types == registry.TENSORRT_OP_TYPES
    assert QuantConfig(for_tensorrt=True, is_full_quantize=True).effective_op_types == registry.TENSORRT_OP_TYPES
    full = QuantConfig(is_full_quantize=True).effective_op_types
    assert full == _dedupe(registry.TRANSFORM_PASS_OP_TYPES + registry.QUANT_DEQUANT_PASS_OP_TYPES)
    assert set(full) == registry.SUPPORTED_OP_TYPES
    mixed = QuantConfig(quantize_op_types=["relu", "mul", "pool2d", "conv2d", "relu"])
    assert mixed.effective_op_types == ("relu", "mul", "pool2d", "conv2d")
    assert mixed.weight_op_types == ("mul", "conv2d")
    assert mixed.activation_op_types == ("relu", "pool2d")


@_SETTINGS
@given(user=_valid_slim_dicts())
def test_every_effective_op_goes_to_exactly_one_pass(user):
    config = QuantConfig.from_dict(user)
    weight, activation = set(config.weight_op_types), set(config.activation_op_types)
    assert not weight & activation
    assert weight | activation == set(config.effective_op_types)


def test_as_quant_config_returns_a_config_itself():
    config = QuantConfig(weight_bits=4)
    assert as_quant_config(config) is config
    assert as_quant_config(None) is DEFAULT_CONFIG
    assert as_quant_config({"weight_bits": 4}) == config


def test_presets():
    assert DEFAULT_CONFIG == QuantConfig()
    assert TENSORRT_CONFIG.for_tensorrt and TENSORRT_CONFIG.weight_quantize_type == "channel_wise_abs_max"


def test_config_module_imports_no_paddle():
    tree = ast.parse(pathlib.Path(config_module.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert imported <= {"__future__", "typing", "pydantic", "pydantic_core", "paddle_quant.common",
                        "paddle_quant.common.errors", "paddle_quant.common.registry", "paddle_quant.common.validation",
                        "paddle_quant.common.backends"}, imported
