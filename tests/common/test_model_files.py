"""Finding a model in a folder: the error says what is there."""

import pytest

from paddle_quant.common.errors import ConfigError
from paddle_quant.common.model_files import model_files


def test_a_folder_without_a_model_says_so_and_lists_what_it_holds(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"holds no model file \(\*\.pdmodel or __model__\); it holds \['notes.txt'\]"):
        model_files(tmp_path)


def test_two_models_ask_for_model_filename(tmp_path):
    for name in ("a.pdmodel", "b.pdmodel"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ConfigError, match=r"\['a.pdmodel', 'b.pdmodel'\]; pass model_filename="):
        model_files(tmp_path)


def test_one_model_finds_its_params(tmp_path):
    for name in ("inference.pdmodel", "inference.pdiparams"):
        (tmp_path / name).write_bytes(b"")
    assert model_files(tmp_path) == (tmp_path / "inference.pdmodel", tmp_path / "inference.pdiparams")
