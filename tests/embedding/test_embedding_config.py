"""EmbeddingConfig: both PaddleSlim dict shapes, and typed errors naming key, value and allowed set."""

from __future__ import annotations

import pydantic
import pytest

from paddle_quant.embedding.config import EmbeddingConfig, EmbeddingMethodConfig, as_embedding_config
from paddle_quant.common.errors import ConfigError, ConfigTypeError


def test_flat_shape_applies_to_named_tables():
    config = EmbeddingConfig.from_dict({"params_name": "emb", "quantize_type": "log", "quantize_bits": 8,
                                        "dtype": "int8"})
    assert config.params_name == ("emb",)
    assert config.lookup_table.quantize_type == config.lookup_table_v2.quantize_type == "log"


def test_flat_threshold_int_is_accepted():
    config = EmbeddingConfig.from_dict({"params_name": ["a", "b"], "threshold": 10})
    assert config.params_name == ("a", "b") and config.lookup_table_v2.threshold == 10.0


def test_per_op_type_shape():
    config = EmbeddingConfig.from_dict({"quantize_op_types": ["lookup_table_v2"],
                                        "lookup_table_v2": {"quantize_type": "abs_max", "quantize_bits": 8,
                                                            "dtype": "int8", "threshold": 3.0}})
    assert config.quantize_op_types == ("lookup_table_v2",)
    assert config.method_for("lookup_table_v2").threshold == 3.0
    assert config.method_for("lookup_table") == EmbeddingMethodConfig()


def test_product_quantization_options():
    method = EmbeddingConfig.from_dict({"lookup_table": {"quantize_type": "product_quantization", "subspaces": 8,
                                                         "codebook_size": 64, "iterations": 5, "seed": 3}}).lookup_table
    assert (method.subspaces, method.centroids, method.iterations, method.seed) == (8, 64, 5, 3)
    assert EmbeddingMethodConfig(quantize_type="product_quantization", quantize_bits=4).centroids == 16


def test_defaults_keep_float_table_and_cover_both_lookup_types():
    config = as_embedding_config({})
    assert config.free_float_table is False
    assert config.quantize_op_types == ("lookup_table", "lookup_table_v2")
    assert as_embedding_config(config) is config
    assert as_embedding_config(None) == config


@pytest.mark.parametrize("bad, pattern", [
    ({"quantize_type": "kmeans"}, r"'quantize_type' got 'kmeans'.*'abs_max', 'log', 'product_quantization'"),
    ({"quantize_type": "log", "quantize_bits": 16}, r"'quantize_bits' got 16.*not allowed with quantize_type 'log'"),
    ({"quantize_bits": 12}, r"'quantize_bits' got 12"),
    ({"quantize_bits": 16, "dtype": "int8"}, r"'dtype' got 'int8'.*'int16'"),
    ({"quantize_type": "log", "threshold": 2.0}, r"'threshold' got 2.0.*only used by quantize_type 'abs_max'"),
    ({"subspaces": 4}, r"'subspaces' got 4.*only used by quantize_type 'product_quantization'"),
    ({"quantize_type": "product_quantization", "quantize_bits": 4, "codebook_size": 64},
     r"'codebook_size' got 64.*at most 16"),
    ({"threshold": -1.0}, r"'threshold' got -1.0"),
    ({"quantize_type": "abs_max", "lookup_table": {}}, r"mixes flat method keys"),
    ({"quantize_op_types": ["fused_embedding_seq_pool"]}, r"fused_embedding_seq_pool.*not\s+supported"),
    ({"quantize_op_types": ["conv2d"]}, r"'quantize_op_types'"),
    ({"quantise_type": "log"}, r"unknown config key 'quantise_type'.*did you mean 'quantize_type'"),
    ({"lookup_table": {"bits": 8}}, r"unknown config key 'bits'"),
    ({"free_float_table": "yes"}, r"'free_float_table'"),
])
def test_bad_values_name_key_value_and_allowed(bad, pattern):
    with pytest.raises((ConfigError, ConfigTypeError), match=pattern):
        EmbeddingConfig.from_dict(bad)


def test_wrong_types_are_type_errors():
    with pytest.raises(ConfigTypeError, match=r"'quantize_bits' got '8'"):
        EmbeddingConfig.from_dict({"quantize_bits": "8"})
    with pytest.raises(ConfigTypeError, match="config must be a dict"):
        as_embedding_config(["params_name"])


def test_config_is_frozen():
    config = EmbeddingConfig.from_dict({"params_name": "emb"})
    with pytest.raises(pydantic.ValidationError, match="frozen_instance"):
        config.params_name = ("other",)
    assert config.params_name == ("emb",)
