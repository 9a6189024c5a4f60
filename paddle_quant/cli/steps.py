"""Steps every subcommand shares: configs from file and flags, the model file and its inputs, the data
reader, exit codes and failure reports."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from ..common.errors import ConfigError, ConfigTypeError, MissingDependencyError, PaddleQuantError
from .config_file import build_configs, load_config_file
from .config_model import RunConfig
from .flags import _overrides

__all__ = ["EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "exit_code_for"]

EXIT_OK = 0
"""The command did what it was asked."""
EXIT_FAILURE = 1
"""The run failed (a model that cannot be quantized, a runtime error, a missing optional module)."""
EXIT_USAGE = 2
"""Bad command line or config file: nothing was run (or the data did not match the config)."""

_logger = logging.getLogger("paddle_quant.cli")


def _configs(args: argparse.Namespace) -> list[RunConfig]:
    overrides, origins = _overrides(args)
    if args.config:
        configs = load_config_file(args.config, overrides=overrides, origins=origins)
    else:
        configs = build_configs([{}], base_dir=Path.cwd(), overrides=overrides, origins=origins)
    index = getattr(args, "config_index", None)
    if index is not None:
        if not 1 <= index <= len(configs):
            raise ConfigError(f"--config-index {index}: the file holds {len(configs)} Config(s); "
                              f"allowed: 1..{len(configs)}")
        configs = [configs[index - 1]]
    return configs


def _model_file(run: RunConfig) -> tuple[Path, Optional[Path]]:
    files = run.model_files()
    if files.model_filename is None:
        found = sorted(p for p in files.model_dir.iterdir() if p.name.endswith((".pdmodel", "__model__")))
        if len(found) != 1:
            raise ConfigError(f"Model/ModelDir {str(files.model_dir)!r} holds model files {[p.name for p in found]}; "
                              "set Model/ModelFileName (--model-filename)")
        model = found[0]
    else:
        model = files.model_dir / files.model_filename
    if files.params_filename:
        return model, files.model_dir / files.params_filename
    guess = model.with_suffix(".pdiparams")
    return model, guess if guess.is_file() else None


def _load_program(model: Path):
    """The model's Program, read from the model file only (no parameters)."""
    import paddle

    from ..common.program import legacy_ir

    with legacy_ir():
        try:
            return paddle.static.Program.parse_from_string(model.read_bytes())
        except Exception as exc:  # protobuf raises its own DecodeError types
            raise ConfigError(f"model file {str(model)!r} is not a Paddle inference Program: {exc}") from exc


def _feeds(program) -> dict[str, tuple[int, ...]]:
    """Feed name -> declared shape, in feed order."""
    block = program.global_block()
    feeds = sorted((op.attr("col"), op.output("Out")[0]) for op in block.ops if op.type == "feed")
    return {name: tuple(block.var(name).shape) for _, name in feeds}


def _check_input(run: RunConfig, feeds: Mapping[str, tuple[int, ...]]) -> list[str]:
    """The feed names the data goes to, after checking InputName and InputShape against the model."""
    tag, name = run.params_tag, run.params.input_name
    if name is not None and name not in feeds:
        hint = _closest(name, feeds)
        raise ConfigError(f"{tag}/InputName {name!r} is not an input of the model; its inputs are {list(feeds)}{hint}")
    shape = run.sample_shape()
    if shape is not None:
        target = name or next(iter(feeds))
        declared = feeds[target]
        if len(declared) != len(shape) + 1 or any(d >= 0 and d != s for d, s in zip(declared[1:], shape)):
            raise ConfigError(f"{tag}/InputShape {list(shape)} does not match the model's input {target!r} of shape "
                              f"{list(declared)} (batch first, -1 = any size)")
    return [name] if name is not None else list(feeds)


def _closest(name: str, names) -> str:
    from ..common.errors import closest_match

    hint = closest_match(name, list(names))
    return f"; did you mean {hint!r}?" if hint else ""


def _reader(run: RunConfig, feed_names: Sequence[str]):
    from ..data import ImageFolder, RawFolder, detect_data_format, output_shape, warn_if_few

    folder = run.data_dir()
    fmt = run.dataset.data_format
    fmt = detect_data_format(folder, run.implied_data_format()) if fmt == "auto" else fmt
    if fmt == "raw":
        return RawFolder(folder, sample_shape=run.sample_shape(), feed_names=feed_names, sampling=run.sampling_config())
    if len(feed_names) != 1:
        raise ConfigError(f"the model has inputs {list(feed_names)}; an image folder feeds one: set InputName, "
                          "or give .npz files with one array per input")
    preprocess = run.preprocess_config()
    produced, shape = output_shape(preprocess), run.sample_shape()
    if produced is not None and shape is not None and tuple(produced) != tuple(shape):
        raise ConfigError(f"{run.params_tag}/InputShape {list(shape)} differs from the preprocessed image shape "
                          f"{list(produced)} (from ResizeResolution/ImageResolution and Layout)")
    reader = ImageFolder(folder, preprocess, run.sampling_config())
    batches = run.dataset.batch_num
    warn_if_few(len(reader) if batches is None else min(len(reader), batches * run.dataset.batch_size))
    return reader


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def exit_code_for(exc: BaseException) -> int:
    """2 for config and usage errors (ConfigError, ConfigTypeError, a missing optional dependency), 1 otherwise."""
    return EXIT_USAGE if isinstance(exc, (ConfigError, ConfigTypeError, MissingDependencyError)) else EXIT_FAILURE


def _each_config(configs: list[RunConfig], run_one: Callable[[int, RunConfig], None]) -> int:
    """Run every config; report each failure; 2 if any config error, else 1 if any failure, else 0."""
    codes = []
    for index, run in enumerate(configs, 1):
        try:
            run_one(index, run)
            codes.append(EXIT_OK)
        except Exception as exc:  # one Config's failure must not stop the others (as the seed script)
            codes.append(_report(exc, f"Config[{index}]"))
    return EXIT_USAGE if EXIT_USAGE in codes else max(codes, default=EXIT_OK)


def _report(exc: BaseException, where: str) -> int:
    code = exit_code_for(exc)
    kind = "config error" if code == EXIT_USAGE else "failed"
    detail = str(exc) if isinstance(exc, PaddleQuantError) else f"{type(exc).__name__}: {exc}"
    _logger.error("%s: %s: %s", where, kind, detail, exc_info=_logger.isEnabledFor(logging.DEBUG))
    return code


def _missing_module(feature: str, module: str, exc: ImportError) -> int:
    _logger.error("paddle-quant %s needs %s, which this installation does not have (%s)", feature, module, exc)
    return EXIT_FAILURE
