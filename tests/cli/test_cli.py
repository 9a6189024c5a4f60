"""`paddle-quant`: parser and exit codes in-process, end-to-end runs, subprocess smoke tests in tmp_path."""

import json
import logging
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import paddle
import pytest
from PIL import Image

import paddle_quant as quant
from paddle_quant.cli.main import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, build_parser, exit_code_for, main
from paddle_quant.common.errors import ConfigError, ConfigTypeError, ProgramStateError, ScopeError

REPO = pathlib.Path(__file__).resolve().parents[2]
SUBCOMMANDS = ("post", "embedding", "inspect", "analyze", "verify", "export-onnx", "demo")


def _cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "paddle_quant", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained conv net saved as an inference model: input 'image' [-1, 3, 8, 8]."""
    folder = tmp_path_factory.mktemp("tiny") / "fp32"
    with paddle.pir_utils.OldIrGuard():
        paddle.enable_static()
        with paddle.utils.unique_name.guard():
            main_program, startup = paddle.static.Program(), paddle.static.Program()
            with paddle.static.program_guard(main_program, startup):
                image = paddle.static.data("image", [-1, 3, 8, 8], "float32")
                hidden = paddle.nn.functional.relu(paddle.nn.Conv2D(3, 4, 3)(image))
                hidden = paddle.nn.Conv2D(4, 4, 3)(hidden)
                logits = paddle.static.nn.fc(paddle.mean(hidden, axis=[2, 3]), 2)
            exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
            with paddle.static.scope_guard(scope):
                paddle.seed(0)
                exe.run(startup)
                paddle.static.save_inference_model(str(folder / "inference"), [image], [logits], exe,
                                                   program=main_program)
    return folder


@pytest.fixture
def image_dir(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)).save(folder / f"im_{i}.png")
    return folder


def _post_args(model, data, out, *extra):
    return ["post", "--model-dir", str(model), "--data", str(data), "--save-dir", str(out), "--input-shape", "3,8,8",
            "--batch-size", "2", *extra]


# ---------------------------------------------------------------- parser, in-process
@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_of_every_subcommand_exits_0(command, capsys):
    assert main([command, "--help"]) == EXIT_OK
    text = capsys.readouterr().out
    assert f"paddle-quant {command}" in text and "exit codes" in text


def test_post_help_lists_every_option(capsys):
    main(["post", "--help"])
    text = capsys.readouterr().out
    for flag in ("--config", "--algo", "--weight-method", "--granularity", "--weight-bits", "--activation-bits",
                 "--mean", "--std", "--channel-swap", "--raw-scale", "--input-scale", "--layout", "--resize",
                 "--crop", "--calibration-size", "--calibration-seed", "--calibration-indices", "--skip-tensors",
                 "--input-shape", "--save-dir", "admm", "power_of_two", "mixed"):
        assert flag in text, flag


def test_usage_errors_exit_2(capsys):
    assert main([]) == EXIT_USAGE
    assert main(["quantize"]) == EXIT_USAGE
    assert main(["post", "--no-such-flag"]) == EXIT_USAGE
    assert main(["post", "--algo", "percentile"]) == EXIT_USAGE
    assert main(["analyze", "--model-dir", "m"]) == EXIT_USAGE  # --report-dir is required
    assert "invalid choice" in capsys.readouterr().err


def test_parsed_namespaces():
    parser = build_parser()
    args = parser.parse_args(["analyze", "-c", "c.xml", "--report-dir", "r", "--max-drop", "0.5", "--metric", "m:f"])
    assert (args.config, args.report_dir, args.max_drop, args.metric) == ("c.xml", "r", 0.5, "m:f")
    args = parser.parse_args(["verify", "--model-dir", "q", "--runtime", "onednn", "--min-cosine", "0.99"])
    assert (args.model_dir, args.runtime, args.min_cosine) == ("q", "onednn", 0.99)
    args = parser.parse_args(["embedding", "--model-dir", "m", "--save-dir", "o", "--quantize-type", "log"])
    assert (args.quantize_type, args.bits, args.op_types) == ("log", 8, "lookup_table,lookup_table_v2")
    args = parser.parse_args(["post", "--skip-tensors", "s.json", "--full-quantize"])
    assert args.skip_tensors == "s.json" and args.full_quantize is True


def test_exit_code_mapping():
    assert exit_code_for(ConfigError("x")) == exit_code_for(ConfigTypeError("x")) == EXIT_USAGE
    for exc in (ProgramStateError("x"), ScopeError("x"), RuntimeError("x")):
        assert exit_code_for(exc) == EXIT_FAILURE


@pytest.mark.parametrize("command, module", [
    (["analyze", "--report-dir", "r"], "paddle_quant.analysis.analyze"),
    (["embedding", "--model-dir", "m", "--save-dir", "o"], "paddle_quant.embedding.quant_embedding"),
])
def test_missing_optional_module_exits_1(command, module, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    assert main(command) == EXIT_FAILURE
    assert module in caplog.text


def test_demo_list_and_unknown_demo(capsys, caplog):
    assert main(["demo", "--list"]) == EXIT_OK
    assert "cli_ppocr" in capsys.readouterr().out.split()
    assert main(["demo", "cli_ppcor"]) == EXIT_USAGE
    assert "did you mean 'cli_ppocr'" in caplog.text


# ---------------------------------------------------------------- runs, in-process
def test_inspect_lists_every_op_with_status(tiny_model, capsys):
    assert main(["inspect", "--model-dir", tiny_model, "--json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    program = paddle.static.Program.parse_from_string((tiny_model / "inference.pdmodel").read_bytes())
    types = [op.type for op in program.global_block().ops]
    assert [row["type"] for row in report["ops"]] == types
    quantized = [row for row in report["ops"] if row["status"] == "quantized"]
    assert sorted(row["type"] for row in quantized) == sorted(t for t in types if t in ("conv2d", "mul"))
    assert all("weight" in row["detail"] for row in quantized)
    main(["inspect", "--model-dir", tiny_model, "--op-types", "conv2d"])
    text = capsys.readouterr().out
    assert "supported type not selected" in text and "summary: conv2d quantized 2" in text


def test_verify_runs_the_emitted_model_on_onednn(tiny_model, image_dir, tmp_path, capsys):
    out = tmp_path / "int8"
    assert main(_post_args(tiny_model, image_dir, out, "--algo", "abs_max", "--batch-num", "3")) == EXIT_OK
    capsys.readouterr()
    data = ["--data", str(image_dir), "--batch-size", "2"]
    assert main(["verify", "--model-dir", str(out), "--fp32-model", str(tiny_model), *data]) == EXIT_OK
    text = capsys.readouterr().out
    assert "runtime onednn, 2 batch(es)" in text and "int8/fp32" in text
    # the simulation against itself is exact, so any positive bound passes; a negative one cannot
    assert main(["verify", "--model-dir", str(out), "--runtime", "executor", "--max-steps", "0", *data]) == EXIT_OK
    assert main(["verify", "--model-dir", str(out), "--runtime", "executor", "--min-cosine", "1.5",
                 *data]) == EXIT_FAILURE
    assert main(["verify", "--model-dir", str(out), "--verify-batches", "0", *data]) == EXIT_USAGE


def _residual_net():
    """a = conv(image); conv(a + conv(a)) -> flatten, on 'image' [-1, 3, 8, 8]: ``a`` is read by a quantized conv
    and, in float, by the residual add (every op has an ONNX converter)."""
    image = paddle.static.data("image", [-1, 3, 8, 8], "float32")
    block_input = paddle.static.nn.conv2d(image, 4, 3, padding=1)
    branch = paddle.static.nn.conv2d(block_input, 4, 1)
    return [image], [paddle.flatten(paddle.static.nn.conv2d(block_input + branch, 2, 1), 1)]


def test_export_onnx_writes_what_verify_finds_equal_to_the_simulation(image_dir, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from support.inference import save_built_model

    fp32, out = save_built_model(tmp_path / "fp32", _residual_net), tmp_path / "int8"
    assert main(_post_args(fp32, image_dir, out, "--algo", "abs_max", "--batch-num", "3",
                           "--output-scales", "int8_ops")) == EXIT_OK
    onnx_file = tmp_path / "int8.onnx"
    assert main(["export-onnx", "--model-dir", str(out), "--output", str(onnx_file), "--observers", "int8_ops",
                 "--activation-type", "uint8", "--round-float-readers"]) == EXIT_OK
    assert "requantized outputs, 1 tensors with rounded readers" in capsys.readouterr().out and onnx_file.is_file()
    data = ["--data", str(image_dir), "--batch-size", "2", "--verify-batches", "1"]
    assert main(["verify", "--model-dir", str(out), "--runtime", "onnxruntime", "--runtime-model", str(onnx_file),
                 "--max-steps", "1", *data]) == EXIT_OK
    float_file = tmp_path / "int8_float_convs.onnx"
    assert main(["export-onnx", "--model-dir", str(out), "--output", str(float_file), "--float-conv-weights",
                 "--fold-input-scales"]) == EXIT_OK
    assert "3 float convs with float32 weights, 0 input scales folded" in capsys.readouterr().out
    assert main(["verify", "--model-dir", str(out), "--runtime", "onnxruntime", "--runtime-model", str(float_file),
                 "--max-steps", "1", *data]) == EXIT_OK
    assert main(["export-onnx", "--model-dir", str(fp32), "--output", str(tmp_path / "fp32.onnx"),
                 "--fp32"]) == EXIT_OK
    assert (tmp_path / "fp32.onnx").is_file()


@pytest.mark.parametrize("extra, match", [
    (["--fp32", "--round-float-readers"], "--round-float-readers apply to quantized models"),
    (["--fp32", "--float-conv-weights"], "--float-conv-weights apply to quantized models"),
    (["--fp32", "--fold-input-scales"], "--fold-input-scales apply to quantized models; --fp32 exports a float "
                                        "model (--fold-input-affine folds the input scales too)"),
    (["--fold-input-affine"], "--fold-input-affine applies to --fp32 exports"),
])
def test_export_onnx_refuses_flags_of_the_other_kind_of_model(tiny_model, tmp_path, caplog, extra, match):
    pytest.importorskip("onnx")
    assert main(["export-onnx", "--model-dir", str(tiny_model), "--output", str(tmp_path / "m.onnx"),
                 *extra]) == EXIT_USAGE
    assert match in caplog.text and not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("verbose", [False, True])
def test_paddles_pass_statistics_show_only_with_v(tiny_model, image_dir, tmp_path, capfd, caplog, verbose):
    from paddle_quant.common.native_output import NATIVE_LOGGER

    out = tmp_path / "int8"
    assert main(_post_args(tiny_model, image_dir, out, "--algo", "abs_max", "--batch-num", "3")) == EXIT_OK
    capfd.readouterr()
    caplog.clear()
    args = ["verify", "--model-dir", str(out), "--data", str(image_dir), "--batch-size", "2", "--verify-batches", "1"]
    assert main(["-v", *args] if verbose else args) == EXIT_OK
    native = [r.getMessage() for r in caplog.records if r.name == NATIVE_LOGGER]
    assert bool(native) is verbose and all("quantized" in m for m in native)
    terminal = "".join(capfd.readouterr())
    assert "squashed" not in terminal and "runtime onednn" in terminal  # the command's own lines only


def test_verify_locate_names_the_first_diverging_tensor(tiny_model, image_dir, tmp_path, capsys, monkeypatch):
    from paddle_quant.deploy import runtimes

    def shifted(model_file, params_file, *, threads):  # a runtime off by 1000 everywhere: the first cut diverges
        runner = runtimes.RUNTIMES["executor"](model_file, params_file, threads=threads)
        return runtimes.Runner("shifted", runner.input_names, runner.output_names,
                               lambda feed: [value + 1000.0 for value in runner.run(feed)])

    out = tmp_path / "int8"
    assert main(_post_args(tiny_model, image_dir, out, "--algo", "abs_max", "--batch-num", "3")) == EXIT_OK
    capsys.readouterr()
    data = ["--data", str(image_dir), "--batch-size", "2", "--verify-batches", "1"]
    monkeypatch.setitem(runtimes.RUNTIMES, "onednn", shifted)
    assert main(["verify", "--model-dir", str(out), "--locate", "--locate-steps", "2", *data]) == EXIT_OK
    text = capsys.readouterr().out
    assert "locate: first diverging quantized tensor" in text and "rule:" in text
    assert main(["verify", "--model-dir", str(out), "--runtime", "executor", "--locate", *data]) == EXIT_USAGE


def test_post_matches_the_library_on_the_same_preprocessed_batches(tiny_model, image_dir, tmp_path):
    out = tmp_path / "cli"
    assert main(_post_args(tiny_model, image_dir, out, "--mean", "0.5,0.4,0.3", "--std", "0.2,0.2,0.25",
                           "--algo", "abs_max", "--batch-num", "3")) == EXIT_OK
    # the oracle: numpy preprocessing of the same files fed to quant_post directly
    # (float32 arithmetic, as the chain documents, so the scales agree to the bit)
    mean = np.array([0.5, 0.4, 0.3], np.float32).reshape(3, 1, 1)
    std = np.array([0.2, 0.2, 0.25], np.float32).reshape(3, 1, 1)
    files = sorted(image_dir.iterdir())
    arrays = [(np.asarray(Image.open(f), np.float32).transpose(2, 0, 1) / np.float32(255) - mean) / std
              for f in files]
    feeds = [{"image": np.stack(arrays[i:i + 2])} for i in range(0, 6, 2)]
    ref = tmp_path / "lib"
    quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(tiny_model), str(ref),
                     data_loader=lambda: iter(feeds), algo="abs_max", batch_size=2, batch_nums=3)
    assert (out / "model.pdiparams").read_bytes() == (ref / "model.pdiparams").read_bytes()


def test_check_validates_without_writing(tiny_model, image_dir, tmp_path, capsys):
    assert main(_post_args(tiny_model, image_dir, tmp_path / "o", "--check")) == EXIT_OK
    assert "ok: model" in capsys.readouterr().out and not (tmp_path / "o").exists()


def test_input_shape_not_matching_the_model_exits_2(tiny_model, image_dir, tmp_path, caplog):
    code = main(["post", "--model-dir", tiny_model, "--data", image_dir, "--save-dir", tmp_path / "o",
                 "--input-shape", "1,8,8", "--check"])
    assert code == EXIT_USAGE
    assert "InputShape [1, 8, 8] does not match the model's input 'image'" in caplog.text


def test_input_name_not_in_model_exits_2(tiny_model, image_dir, tmp_path, caplog):
    assert main(_post_args(tiny_model, image_dir, tmp_path / "o", "--input-name", "imag", "--check")) == EXIT_USAGE
    assert "did you mean 'image'" in caplog.text


def test_savedir_equal_to_model_dir_exits_2(tiny_model, image_dir, caplog):
    assert main(_post_args(tiny_model, image_dir, tiny_model)) == EXIT_USAGE
    assert "is the model folder" in caplog.text


def test_no_readable_images_exits_2(tiny_model, tmp_path, caplog):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"not a png")
    assert main(_post_args(tiny_model, bad, tmp_path / "o")) == EXIT_USAGE
    assert "no readable calibration sample" in caplog.text
    assert not (tmp_path / "o").exists()


def test_corrupt_image_is_skipped_and_reported(tiny_model, image_dir, tmp_path, capsys):
    (image_dir / "zz_corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    assert main(_post_args(tiny_model, image_dir, tmp_path / "o", "--algo", "avg")) == EXIT_OK
    assert "skipped 1 unreadable file(s): zz_corrupt.jpg" in capsys.readouterr().out


def test_missing_data_folder_and_model_exit_2(tiny_model, tmp_path, caplog):
    assert main(_post_args(tiny_model, tmp_path / "none", tmp_path / "o")) == EXIT_USAGE
    assert main(_post_args(tmp_path / "nomodel", tmp_path, tmp_path / "o")) == EXIT_USAGE
    assert "does not exist" in caplog.text


def test_raw_npy_data_and_skip_list_file(tiny_model, tmp_path, capsys):
    data = tmp_path / "raw"
    data.mkdir()
    np.save(data / "batch.npy", np.random.default_rng(1).normal(size=(4, 3, 8, 8)).astype(np.float32))
    program = paddle.static.Program.parse_from_string((tiny_model / "inference.pdmodel").read_bytes())
    first_conv = next(op for op in program.global_block().ops if op.type == "conv2d")
    skip = tmp_path / "skip.json"
    skip.write_text(json.dumps({"skip_list": [first_conv.input("Filter")[0]]}))
    assert main(_post_args(tiny_model, data, tmp_path / "o", "--skip-tensors", skip)) == EXIT_OK
    out = capsys.readouterr().out
    full = tmp_path / "o_full"
    assert main(_post_args(tiny_model, data, full)) == EXIT_OK
    count = int(out.split("quantized ")[1].split()[0])
    assert count == int(capsys.readouterr().out.split("quantized ")[1].split()[0]) - 1


def test_config_error_in_one_config_does_not_stop_the_others(tiny_model, image_dir, tmp_path, caplog):
    config = tmp_path / "two.yaml"
    good = {"Model": {"ModelDir": str(tiny_model)}, "Dataset": {"Path": str(image_dir), "BatchSize": 2},
            "QuantizationParameters": {"SaveDir": str(tmp_path / "good"), "InputShape": [3, 8, 8]}}
    bad = {**good, "QuantizationParameters": {"SaveDir": str(tiny_model)}}
    config.write_text(json.dumps({"QuantizationConfigs": [bad, good]}))
    assert main(["post", "-c", config]) == EXIT_USAGE
    assert (tmp_path / "good" / "model.pdiparams").is_file()
    assert "Config[1]: config error" in caplog.text


# ---------------------------------------------------------------- a calibration folder with stray files
STRAY_XML = """<QuantizationConfigs><Config>
  <Model><ModelDir>{model}</ModelDir></Model>
  <Dataset><Path>{data}</Path><ResizeResolution>8, 8</ResizeResolution><Mean>0.5, 0.5, 0.5</Mean>
           <Std>0.5, 0.5, 0.5</Std><BatchSize>2</BatchSize></Dataset>
  <QuantizationParameters><InputShape>3, 8, 8</InputShape><SaveDir>{out}</SaveDir>
                          <Algorithm>hist</Algorithm></QuantizationParameters>
</Config></QuantizationConfigs>"""


def test_image_preprocessing_in_the_config_means_the_images_of_a_mixed_folder(tiny_model, image_dir, tmp_path,
                                                                            caplog):
    (image_dir / "notes.txt").write_text("lines rendered 2026-12-04\n")  # .txt is also a raw tensor suffix
    config = tmp_path / "cfg.xml"
    config.write_text(STRAY_XML.format(model=tiny_model, data=image_dir, out=tmp_path / "out"))
    with caplog.at_level(logging.WARNING, logger="paddle_quant"):
        assert main(["post", "-c", config]) == EXIT_OK
    assert (tmp_path / "out" / "model.pdmodel").is_file()
    skipped = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(skipped) == 1 and "6 image file(s), skipping 1 other file(s): notes.txt" in skipped[0]


def test_a_mixed_folder_without_preprocessing_keys_is_still_ambiguous(tiny_model, image_dir, tmp_path, caplog):
    np.save(image_dir / "tensor.npy", np.zeros((3, 8, 8), np.float32))
    assert main(_post_args(tiny_model, image_dir, tmp_path / "out")) == EXIT_USAGE
    assert "both images and raw tensor files" in caplog.text and not (tmp_path / "out").exists()
    assert main(_post_args(tiny_model, image_dir, tmp_path / "out", "--mean", "0.5")) == EXIT_OK  # a key decides


# ---------------------------------------------------------------- subprocess smoke tests
@pytest.mark.slow
def test_subprocess_post_help_and_bomb(tiny_model, image_dir, tmp_path):
    done = _cli(*_post_args(tiny_model, image_dir, "out", "--algo", "hist"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "model.pdmodel").is_file() and "quantized" in done.stdout
    assert _cli("--help", cwd=tmp_path).returncode == 0
    bomb = tmp_path / "bomb.xml"
    bomb.write_text('<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
                    + "".join(f'<!ENTITY a{i} "{("&a;" if i == 0 else f"&a{i - 1};") * 10}">' for i in range(9))
                    + ']><QuantizationConfigs><Config><Model><Name>&a8;</Name></Model></Config></QuantizationConfigs>')
    done = _cli("post", "-c", bomb, cwd=tmp_path)
    assert done.returncode == 2 and "DOCTYPE" in done.stderr and "DTDForbidden" in done.stderr
    assert main(["post", "-c", str(bomb)]) == EXIT_USAGE  # (timings: bench/fast_paths.py)


def test_config_errors_are_found_before_paddle_is_imported(tmp_path):
    """The CLI's config path imports no Paddle (seconds of start-up), checked in a fresh process through
    the real package; how long the refusal takes is measured in bench/fast_paths.py."""
    bomb = tmp_path / "bomb.xml"
    bomb.write_text('<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "a">]><QuantizationConfigs/>')
    script = ("import sys\n"
              "from paddle_quant.cli.main import main\n"
              f"code = main(['-q', 'post', '-c', {str(bomb)!r}])\n"
              "print(code, 'paddle' in sys.modules, sorted(m for m in sys.modules if m.startswith('paddle.'))[:3])\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False,
                          cwd=REPO)
    code, imported, *paddle_modules = done.stdout.split(maxsplit=2)
    assert (code, imported) == ("2", "False"), (done.stdout, done.stderr)


# ---------------------------------------------------------------- the acceptance run on PP-OCR cls
CLS_XML = """<?xml version="1.0" encoding="utf-8"?>
<QuantizationConfigs>
    <Config>
        <Model>
            <Name>ch_ppocr_mobile_v2_cls</Name>
            <PathPrefix>{prefix}</PathPrefix>
            <ModelDir></ModelDir>
            <ModelFileName></ModelFileName>
            <ParamsFileName></ParamsFileName>
        </Model>
        <Dataset>
            <Name>rendered text lines</Name>
            <Path>images</Path>
            <Mean>[0.5, 0.5, 0.5]</Mean>
            <Std>[0.5, 0.5, 0.5]</Std>
            <ChannelSwap></ChannelSwap>
            <ResizeResolution>48, 192</ResizeResolution>
            <BatchSize>8</BatchSize>
            <BatchNum>2</BatchNum>
        </Dataset>
        <QuantizationParameters>
            <InputShape>[3, 48, 192]</InputShape>
            <InputName>x</InputName>
            <SaveDir>{save}</SaveDir>
            <Algorithm>hist</Algorithm>
        </QuantizationParameters>
    </Config>
</QuantizationConfigs>
"""

CLS_YAML = """QuantizationConfigs:
  - Model:
      Name: ch_ppocr_mobile_v2_cls
      PathPrefix: {prefix}
    Dataset:
      Name: rendered text lines
      Path: images
      Mean: [0.5, 0.5, 0.5]
      Std: [0.5, 0.5, 0.5]
      ResizeResolution: [48, 192]
      BatchSize: 8
      BatchNum: 2
    QuantizationParameters:
      InputShape: [3, 48, 192]
      InputName: x
      SaveDir: {save}
      Algorithm: hist
"""


@pytest.mark.slow
def test_ppocr_cls_xml_template_end_to_end_and_yaml_gives_the_same_model(tmp_path, ppocr_models):
    import ppocr  # demos/ppocr.py (conftest puts demos/ on the path)
    prefix = ppocr_models["cls"] / "inference"
    images, _ = ppocr.cls_dataset(16, 11)
    (tmp_path / "images").mkdir()
    for i, image in enumerate(images):
        image.save(tmp_path / "images" / f"line_{i:03d}.png")
    (tmp_path / "config.xml").write_text(CLS_XML.format(prefix=prefix, save="int8_xml"))
    (tmp_path / "config.yaml").write_text(CLS_YAML.format(prefix=prefix, save="int8_yaml"))
    for config in ("config.xml", "config.yaml"):  # both as subprocesses: .pdmodel records the Python call stack
        done = _cli("post", "-c", config, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    xml_out, yaml_out = tmp_path / "int8_xml", tmp_path / "int8_yaml"
    assert (xml_out / "model.pdiparams").read_bytes() == (yaml_out / "model.pdiparams").read_bytes()
    assert (xml_out / "model.pdmodel").read_bytes() == (yaml_out / "model.pdmodel").read_bytes()
    program = paddle.static.Program.parse_from_string((xml_out / "model.pdmodel").read_bytes())
    assert sum(op.type == "dequantize_linear" for op in program.global_block().ops) > 40
    eval_images, labels = ppocr.cls_dataset(48, 0)
    fp32 = ppocr.evaluate_cls(ppocr_models["cls"], eval_images, labels, int8=False)["accuracy"]
    int8 = ppocr.evaluate_cls(xml_out, eval_images, labels, int8=True)["accuracy"]
    assert int8 >= fp32 - 10.0, (fp32, int8)


# ---------------------------------------------------------------- embedding and analyze, through the CLI
@pytest.fixture(scope="module")
def embedding_model(tmp_path_factory):
    """ids [-1, 4] int64 -> Embedding(50, 8) -> mean -> fc(3), saved as an inference model."""
    folder = tmp_path_factory.mktemp("emb") / "fp32"
    with paddle.pir_utils.OldIrGuard():
        paddle.enable_static()
        with paddle.utils.unique_name.guard():
            main_program, startup = paddle.static.Program(), paddle.static.Program()
            with paddle.static.program_guard(main_program, startup):
                ids = paddle.static.data("ids", [-1, 4], "int64")
                logits = paddle.static.nn.fc(paddle.mean(paddle.nn.Embedding(50, 8)(ids), axis=1), 3)
            exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
            with paddle.static.scope_guard(scope):
                paddle.seed(0)
                exe.run(startup)
                paddle.static.save_inference_model(str(folder / "inference"), [ids], [logits], exe,
                                                   program=main_program)
    return folder


def _run_saved(prefix, feed):
    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        program, feeds, fetches = paddle.static.load_inference_model(str(prefix), exe)
        return program, exe.run(program, feed=feed, fetch_list=fetches)[0]


def test_embedding_quantizes_the_table_and_keeps_outputs_close(embedding_model, tmp_path, capsys):
    out = tmp_path / "emb_int8"
    assert main(["embedding", "--model-dir", embedding_model, "--save-dir", out]) == EXIT_OK
    assert "quantized 1 table(s)" in capsys.readouterr().out
    feed = {"ids": np.random.default_rng(0).integers(0, 50, size=(6, 4)).astype(np.int64)}
    fp32_program, fp32 = _run_saved(embedding_model / "inference", feed)
    int8_program, int8 = _run_saved(out / "model", feed)
    assert [op.type for op in int8_program.global_block().ops] != [op.type for op in fp32_program.global_block().ops]
    np.testing.assert_allclose(int8, fp32, atol=0.02 * float(np.abs(fp32).max()))
    assert main(["embedding", "--model-dir", embedding_model, "--save-dir", embedding_model]) == EXIT_USAGE


def test_embedding_on_a_model_without_tables_exits_1(tiny_model, tmp_path, caplog):
    assert main(["embedding", "--model-dir", tiny_model, "--save-dir", tmp_path / "o"]) == EXIT_FAILURE
    assert "no embedding table" in caplog.text


def test_analyze_writes_a_skip_list_that_post_accepts(tiny_model, image_dir, tmp_path, capsys):
    skip = tmp_path / "skip.json"
    code = main(["analyze", "--model-dir", tiny_model, "--data", image_dir, "--input-shape", "3,8,8",
                 "--batch-size", "3", "--report-dir", tmp_path / "report", "--max-drop", "0",
                 "--sensitivity", "drop_alone", "--no-plots", "--skip-list-out", skip])
    assert code == EXIT_OK
    assert (tmp_path / "report" / "report.html").is_file()
    skip_list = json.loads(skip.read_text())["skip_list"]
    assert skip_list == json.loads((tmp_path / "report" / "analysis.json").read_text())["skip_list"]
    capsys.readouterr()
    assert main(_post_args(tiny_model, image_dir, tmp_path / "o", "--skip-tensors", skip)) == EXIT_OK
    assert main(_post_args(tiny_model, image_dir, tmp_path / "o2", "--skip-tensors", tmp_path / "none.json")) == 2


def test_scale_table_reapplied_without_data_gives_the_same_model(tiny_model, image_dir, tmp_path):
    from paddle_quant.export.tensorrt_cache import TENSORRT_CACHE_FILENAME

    first = tmp_path / "calibrated"
    assert main(_post_args(tiny_model, image_dir, first, "--deploy-backend", "tensorrt")) == EXIT_OK
    assert (first / TENSORRT_CACHE_FILENAME).is_file()
    again = tmp_path / "from_table"
    code = main(["post", "--model-dir", tiny_model, "--save-dir", again, "--scale-table", first / "scale_table.json"])
    assert code == EXIT_OK
    assert (again / "model.pdiparams").read_bytes() == (first / "model.pdiparams").read_bytes()
    assert main(["post", "--model-dir", tiny_model, "--save-dir", again, "--scale-table", tmp_path / "no.json"]) == 2


def test_post_with_max_drop_searches_and_reports(tiny_model, image_dir, tmp_path, capsys, monkeypatch):
    metric_module = tmp_path / "my_metric.py"
    metric_module.write_text("import numpy as np\n\ndef mean_logit(outputs):\n"
                             "    return float(np.mean([o[0].mean() for o in outputs]))\n")
    monkeypatch.chdir(tmp_path)
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(eval_dir / f"e_{i}.png")
    code = main(_post_args(tiny_model, image_dir, tmp_path / "o", "--max-drop", "1000", "--metric",
                           "my_metric:mean_logit", "--eval-data", eval_dir, "--control-runtime", "executor"))
    assert code == EXIT_OK
    out = capsys.readouterr().out
    assert "accuracy control on executor" in out and "target met" in out and "8 candidates" in out
    assert (tmp_path / "o" / "model.pdmodel").is_file()


@pytest.mark.parametrize("extra, fragment", [
    (("--max-drop", "1"), "needs --metric and --eval-data"),
    (("--metric", "m:f"), "given without --max-drop"),
    (("--max-drop", "-1", "--metric", "flag_metric:f", "--eval-data", "IMAGES"), "max_drop must be a finite number >= 0"),
])
def test_post_accuracy_control_flags_are_checked(tiny_model, image_dir, tmp_path, caplog, extra, fragment,
                                                 monkeypatch):
    (tmp_path / "flag_metric.py").write_text("def f(outputs):\n    return 1.0\n")
    monkeypatch.chdir(tmp_path)
    extra = [str(image_dir) if arg == "IMAGES" else arg for arg in extra]
    assert main(_post_args(tiny_model, image_dir, tmp_path / "o", *extra)) == EXIT_USAGE
    assert fragment in caplog.text


_EQUALIZED = {"conv2d_0.w_0@equalized@int8", "conv2d_1.w_0@equalized@int8", "conv2d_0.b_0@equalized"}
_SMOOTHED = {"conv2d_0.w_0@smoothed@int8", "conv2d_1.w_0@smoothed@int8", "conv2d_0.b_0@smoothed"}
_BOTH = {"conv2d_0.w_0@equalized@smoothed@int8", "conv2d_1.w_0@equalized@smoothed@int8",
         "conv2d_0.b_0@equalized@smoothed"}


@pytest.mark.parametrize("flags, logged, names", [
    (("--equalize-layers",), ["equalize_layers: 1 conv pair(s) equalized"], _EQUALIZED),
    (("--smooth-activations", "--smooth-alpha", "0.5"),
     ["smooth_activations: 1 tensor(s) smoothed into 1 weight op(s); alpha 0.5"], _SMOOTHED),
    (("--equalize-layers", "--smooth-activations"),
     ["equalize_layers: 1 conv pair(s) equalized", "smooth_activations: 1 tensor(s) smoothed into 1 weight op(s); "
      "alpha searched"], _BOTH),
])
def test_post_equalize_and_smooth_flags_rewrite_the_conv_pair(tiny_model, image_dir, tmp_path, caplog, flags, logged,
                                                              names):
    out = tmp_path / "eq"
    with caplog.at_level(logging.INFO, logger="paddle_quant"):
        assert main(_post_args(tiny_model, image_dir, out, "--algo", "abs_max", *flags)) == EXIT_OK
    for line in logged:
        assert line in caplog.text
    with paddle.static.scope_guard(paddle.static.Scope()):
        program, _, _ = paddle.static.load_inference_model(str(out / "model"),
                                                           paddle.static.Executor(paddle.CPUPlace()))
        reads = {name for op in program.global_block().ops for name in op.input_arg_names}
        # both filters rescaled (then quantized), and the first conv's bias (paddle.nn.Conv2D reshapes it first)
        assert names <= reads
        feed = {"image": np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)}
        (logits,) = paddle.static.Executor(paddle.CPUPlace()).run(program, feed=feed,
                                                                  fetch_list=program.global_block().ops[-1].input("X"))
    assert logits.shape == (2, 2) and np.isfinite(logits).all()


def test_analyze_applies_equalization_and_smoothing(tiny_model, image_dir, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="paddle_quant"):
        code = main(["analyze", "--model-dir", tiny_model, "--data", image_dir, "--input-shape", "3,8,8",
                     "--batch-size", "3", "--report-dir", tmp_path / "report", "--sensitivity", "none",
                     "--no-plots", "--equalize-layers", "--smooth-activations", "--smooth-alpha", "0.5"])
    assert code == EXIT_OK
    assert "equalize_layers: 1 conv pair(s) equalized" in caplog.text
    assert "smooth_activations: 1 tensor(s) smoothed" in caplog.text


@pytest.mark.parametrize("extra, message", [
    (("--smooth-activations", "--smooth-alpha", "1.5"), r"SmoothAlpha \(from --smooth-alpha\) got '1.5'.*\[0, 1\]"),
    (("--smooth-activations", "--smooth-alpha", "half"), r"SmoothAlpha \(from --smooth-alpha\) got 'half'.*\[0, 1\]"),
    (("--smooth-alpha", "0.5"), "'smooth_alpha' got 0.5 but smooth_activations is False"),
])
def test_post_bad_smooth_alpha_exits_2(tiny_model, image_dir, tmp_path, caplog, extra, message):
    assert main(_post_args(tiny_model, image_dir, tmp_path / "o", *extra, "--check")) == EXIT_USAGE
    assert re.search(message, caplog.text), caplog.text


def test_post_output_algo_flag_calibrates_the_observed_outputs(tiny_model, image_dir, tmp_path):
    out = tmp_path / "o"
    assert main(_post_args(tiny_model, image_dir, out, "--algo", "avg", "--output-scales", "int8_ops",
                           "--output-algo", "abs_max")) == EXIT_OK
    entries = json.loads((out / "scale_table.json").read_text())["tensors"].values()
    algorithms = {(entry["kind"], entry["algorithm"]) for entry in entries if entry["kind"] != "weight"}
    assert algorithms == {("activation", "avg"), ("output", "abs_max")}


def test_post_output_algo_without_observed_outputs_exits_2(tiny_model, image_dir, tmp_path, caplog):
    args = _post_args(tiny_model, image_dir, tmp_path / "o", "--deploy-backend", "onednn", "--output-algo", "mse",
                      "--check")
    assert main(args) == EXIT_USAGE
    assert "'output_algo' got 'mse' but output_scales is 'none'" in caplog.text


def test_post_fold_input_affine_flag_reaches_the_config():
    from paddle_quant.cli.config_file import build_configs

    run = build_configs([{"Dataset": {}, "QuantizationParameters": {"FoldInputAffine": "true"}}], base_dir=".")[0]
    assert run.ptq_config().fold_input_affine is True
    assert build_parser().parse_args(["post", "--fold-input-affine"]).fold_input_affine is True


def test_post_bias_correction_inputs_flag_reaches_the_config():
    from paddle_quant.cli.config_file import build_configs

    run = build_configs([{"Dataset": {}, "QuantizationParameters": {"BiasCorrection": "true",
                                                                    "BiasCorrectionInputs": "true"}}], base_dir=".")[0]
    assert run.ptq_config().bias_correction_inputs is True
    assert build_parser().parse_args(["post", "--bias-correction-inputs"]).bias_correction_inputs is True
    assert build_parser().parse_args(["post"]).bias_correction_inputs is None  # unset: the config file decides


def test_post_tune_scales_flag_reaches_the_config():
    from paddle_quant.cli.config_file import build_configs

    run = build_configs([{"Dataset": {}, "QuantizationParameters": {"TuneScales": "true"}}], base_dir=".")[0]
    assert run.ptq_config().tune_scales is True
    assert build_parser().parse_args(["post", "--tune-scales"]).tune_scales is True
    assert build_parser().parse_args(["post"]).tune_scales is None  # unset: the config file decides


def test_post_smooth_depthwise_flag_reaches_the_config():
    from paddle_quant.cli.config_file import build_configs

    run = build_configs([{"Dataset": {}, "QuantizationParameters": {"SmoothDepthwise": "true"}}], base_dir=".")[0]
    assert run.ptq_config().smooth_depthwise is True
    assert build_parser().parse_args(["post", "--smooth-depthwise"]).smooth_depthwise is True
    assert build_parser().parse_args(["post"]).smooth_depthwise is None  # unset: the config file decides


def test_post_backend_default_switches_turn_off_with_no_and_stay_unset_otherwise():
    from paddle_quant.cli.config_file import build_configs
    from paddle_quant.cli.flags import _overrides

    def ptq(*flags):
        args = build_parser().parse_args(["post", "--deploy-backend", "onednn", *flags])
        return build_configs([{"Dataset": {}}], base_dir=".", overrides=_overrides(args)[0])[0].ptq_config()

    unset = ptq()
    assert unset.smooth_depthwise is None and unset.fold_input_affine is None  # the backend decides: on for onednn
    assert unset.effective_smooth_depthwise and unset.effective_fold_input_affine
    off = ptq("--no-smooth-depthwise", "--no-fold-input-affine")
    assert off.smooth_depthwise is False and off.fold_input_affine is False
    assert not off.effective_smooth_depthwise and not off.effective_fold_input_affine
    on = ptq("--smooth-depthwise", "--fold-input-affine")
    assert on.smooth_depthwise is True and on.fold_input_affine is True


def test_post_float_pools_flag_reaches_quant_post_and_needs_the_onednn_backend(tiny_model, image_dir, tmp_path,
                                                                                caplog):
    assert main(_post_args(tiny_model, image_dir, tmp_path / "plain", "--float-pools")) == EXIT_USAGE
    assert "'float_pools' got True but deploy_backend is None" in caplog.text
    assert not (tmp_path / "plain").exists()
    assert main(_post_args(tiny_model, image_dir, tmp_path / "onednn", "--float-pools", "--deploy-backend",
                           "onednn")) == EXIT_OK
