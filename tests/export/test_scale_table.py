"""Scale tables and TensorRT caches: written by quant_post, read back, re-applied byte-identically."""

import hashlib
import json
import struct

import numpy as np
import paddle
import pytest

import paddle_quant as quant
from paddle_quant.common.errors import ConfigError
from paddle_quant.export.scale_table import (SCALE_TABLE_FILENAME, ScaleTable, make_entry, read_scale_table,
                                             write_scale_table)
from paddle_quant.export.tensorrt_cache import (TENSORRT_CACHE_FILENAME, read_tensorrt_cache, tensorrt_scale,
                                                write_tensorrt_cache)


def _exe():
    return paddle.static.Executor(paddle.CPUPlace())


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _model_scales(model_dir):
    """Scale of every quantize_linear/dequantize_linear input read from the saved model (the oracle)."""
    exe, scope = _exe(), paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        program, _, fetch_targets = paddle.static.load_inference_model(str(model_dir / "model"), exe)
    found = {"@fetch": [v.name for v in fetch_targets]}
    for op in program.global_block().ops:
        x = op.input("X")[0] if op.type in ("quantize_linear", "dequantize_linear") else ""
        if op.type == "quantize_linear" or x.endswith("@int8"):  # activations; weights stored int8
            found[x.removesuffix("@int8")] = np.array(scope.find_var(op.input("Scale")[0]).get_tensor())
    return found


@pytest.fixture(scope="module")
def calibrated(digits_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("ptq") / "int8"
    result = quant.quant_post(_exe(), str(digits_model.folder), str(out), algo="hist",
                              data_loader=digits_model.calibration_batches(), deploy_backend="tensorrt")
    return result


def test_the_table_holds_every_scale_the_model_uses(calibrated):
    table = read_scale_table(calibrated.scale_table)
    in_model = _model_scales(calibrated.model_file.parent)
    fetched = in_model.pop("@fetch")
    # the model's outputs are observed too, but save_inference_model prunes a pair after a fetch target
    assert set(in_model) <= set(table.tensors) and set(table.tensors) - set(in_model) <= set(fetched)
    for name, scale in in_model.items():
        np.testing.assert_array_equal(table.tensors[name].scale_array(), scale.astype(np.float32).ravel(), name)
    kinds = {entry.kind for entry in table.tensors.values()}
    assert kinds == {"weight", "activation", "output"}
    conv_weight = next(e for e in table.tensors.values() if e.kind == "weight" and len(e.scale) > 1)
    assert conv_weight.axis == 0 and conv_weight.zero_point == (0,) * len(conv_weight.scale)
    activation = next(e for e in table.tensors.values() if e.kind == "activation")
    assert activation.algorithm == "hist" and activation.bits == 8
    assert activation.statistics["abs_max"] >= activation.scale[0] > 0
    assert activation.statistics["elements"] > 0


def test_reapplying_the_table_gives_a_byte_identical_model_without_data(digits_model, calibrated, tmp_path):
    again = quant.quant_post(_exe(), str(digits_model.folder), str(tmp_path / "again"), algo="hist",
                             scale_table=calibrated.scale_table, deploy_backend="tensorrt")
    assert again.batches == 0
    assert _digests(again.model_file.parent) == _digests(calibrated.model_file.parent)


def test_a_table_for_other_tensors_is_refused_naming_them(digits_model, calibrated, tmp_path):
    table = read_scale_table(calibrated.scale_table)
    first = next(n for n, e in table.tensors.items() if e.kind == "activation")
    smaller = ScaleTable(model=table.model, tensors={n: e for n, e in table.tensors.items() if n != first})
    path = write_scale_table(smaller, tmp_path / "partial.json")
    with pytest.raises(ConfigError, match=first):
        quant.quant_post(_exe(), str(digits_model.folder), str(tmp_path / "x"), algo="hist", scale_table=path)
    assert not (tmp_path / "x").exists()


def test_bias_correction_cannot_use_a_table(digits_model, calibrated, tmp_path):
    with pytest.raises(ConfigError, match="bias_correction"):
        quant.quant_post(_exe(), str(digits_model.folder), str(tmp_path / "x"), scale_table=calibrated.scale_table,
                         bias_correction=True)


@pytest.mark.parametrize("text, match", [
    ("not json", "not JSON"),
    ('{"format": "other", "version": 1, "tensors": {}}', "format"),
    ('{"format": "paddle_quant.scale_table", "version": 9, "tensors": {}}', "version 9"),
    ('{"format": "paddle_quant.scale_table", "version": 1, "tensors": {"x": {"kind": "activation", '
     '"scale": [1.0], "zero_point": [0], "bits": 99, "axis": null, "algorithm": "hist"}}}', "tensors.x.bits"),
    ('{"format": "paddle_quant.scale_table", "version": 1, "tensors": {"x": {"kind": "weight", '
     '"scale": [1.0, 2.0], "zero_point": [0, 0], "bits": 8, "axis": null, "algorithm": "abs_max"}}}', "axis"),
])
def test_bad_tables_are_refused(tmp_path, text, match):
    path = tmp_path / "t.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        read_scale_table(path)


def test_missing_table_file(tmp_path):
    with pytest.raises(ConfigError, match="is not a file"):
        read_scale_table(tmp_path / "absent.json")


def test_float32_scales_round_trip_bit_exactly(tmp_path, rng):
    values = rng.standard_normal(64).astype(np.float32) ** 2 * 1e3
    table = ScaleTable(tensors={"w": make_entry("weight", values, bits=8, axis=1, algorithm="abs_max")})
    back = read_scale_table(write_scale_table(table, tmp_path / "t.json"))
    np.testing.assert_array_equal(back.tensors["w"].scale_array().view(np.uint32), values.view(np.uint32))


def test_tensorrt_cache_parses_back_to_the_same_thresholds(calibrated):
    table = read_scale_table(calibrated.scale_table)
    header, scales = read_tensorrt_cache(calibrated.model_file.parent / TENSORRT_CACHE_FILENAME)
    assert header.startswith("TRT-")
    expected = {n: e.scale[0] for n, e in table.tensors.items() if e.kind != "weight"}
    assert set(scales) == set(expected)
    for name, threshold in expected.items():
        # the cache stores float32(threshold / 127); its threshold is that times 127 (within float32 rounding)
        assert scales[name] == np.float32(np.float64(np.float32(threshold)) / 127), name
        assert scales[name] * 127 == pytest.approx(threshold, rel=1e-6), name


def test_tensorrt_cache_lines_are_big_endian_float_hex(tmp_path):
    table = ScaleTable(tensors={"x": make_entry("activation", [127.0], bits=8, axis=None, algorithm="abs_max")})
    text = write_tensorrt_cache(table, tmp_path / "c.cache").read_text().splitlines()
    assert text[1] == "x: " + struct.pack(">f", 1.0).hex() == "x: 3f800000"
    assert tensorrt_scale(127.0) == np.float32(1.0)
    # by hand: 2.54 / 127 = 0.02, whose float32 is 0x3ca3d70a
    assert struct.pack(">f", tensorrt_scale(2.54)).hex() == "3ca3d70a"


def test_tensorrt_cache_refuses_what_it_cannot_express(tmp_path):
    per_channel = ScaleTable(tensors={"x": make_entry("activation", [1.0, 2.0], bits=8, axis=1, algorithm="a")})
    with pytest.raises(ConfigError, match="per-tensor"):
        write_tensorrt_cache(per_channel, tmp_path / "c.cache")
    bad = tmp_path / "bad.cache"
    bad.write_text("TRT-8601-EntropyCalibration2\nx: zz\n")
    with pytest.raises(ConfigError, match="line 2"):
        read_tensorrt_cache(bad)


def test_table_json_names_its_format_and_version(calibrated):
    data = json.loads(calibrated.scale_table.read_text())
    assert data["format"] == "paddle_quant.scale_table" and data["version"] == 1
    assert calibrated.scale_table.name == SCALE_TABLE_FILENAME
