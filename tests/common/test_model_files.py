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


def test_a_program_without_parameters_saves_no_params_file_and_every_runner_loads_it(tmp_path):
    """locate cuts models at tensors computed from the inputs alone (an anchored conv's input): no parameters."""
    import numpy as np
    import paddle

    from paddle_quant.common.model_files import save_inference_atomically
    from paddle_quant.common.program import legacy_ir
    from paddle_quant.deploy.runtimes import make_runner

    with legacy_ir():
        main = paddle.static.Program()
        with paddle.static.program_guard(main, paddle.static.Program()):
            x = paddle.static.data("x", [-1, 4], "float32")
            y = paddle.concat([x, paddle.scale(x, 0.0)], axis=1)
        exe = paddle.static.Executor(paddle.CPUPlace())
        model, params = save_inference_atomically(exe, paddle.static.Scope(), main, ["x"], [y.name], tmp_path / "cut")
    assert params is None and model.exists() and sorted(p.name for p in model.parent.iterdir()) == ["model.pdmodel"]
    feed = {"x": np.arange(8, dtype="float32").reshape(2, 4)}
    for runtime in ("executor", "onednn"):
        out = make_runner(runtime, model, params).run(feed)[0]
        assert np.array_equal(out, np.concatenate([feed["x"], np.zeros((2, 4), "float32")], axis=1))
