"""Where a saved Paddle model's files are: one lookup rule for every entry point."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import paddle
from paddle.base import core

from .errors import ConfigError

__all__ = ["model_files", "load_inference_program", "save_inference_atomically", "swap_into_place", "model_op_types"]

_MODEL_SUFFIXES = (".pdmodel", "__model__")


def model_files(model_dir, model_filename=None, params_filename=None) -> tuple[Path, Path | None]:
    """The model and params files of a saved model folder.

    With ``model_filename=None`` the folder must hold exactly one ``*.pdmodel`` (or
    ``__model__``); its params are ``<stem>.pdiparams`` when that file exists. Params
    may be None (a model saved with separate parameter files).

    Raises:
        ConfigError: the folder or a named file is missing, or the model is ambiguous.
    """
    folder = Path(model_dir)
    if not folder.is_dir():
        raise ConfigError(f"model_dir {str(model_dir)!r} is not a directory")
    if model_filename is None:
        found = sorted(p.name for p in folder.iterdir() if p.name.endswith(_MODEL_SUFFIXES))
        if not found:
            raise ConfigError(f"model_dir {str(model_dir)!r} holds no model file (*.pdmodel or __model__); it holds "
                              f"{sorted(p.name for p in folder.iterdir())[:10]}")
        if len(found) > 1:
            raise ConfigError(f"model_dir {str(model_dir)!r} holds model files {found}; pass model_filename= to pick one")
        model_filename = found[0]
        guess = folder / (Path(model_filename).stem + ".pdiparams")
        params_filename = params_filename or (guess.name if guess.exists() else None)
    model = folder / model_filename
    if not model.is_file():
        raise ConfigError(f"model_filename {model_filename!r} not found in {str(model_dir)!r}; it holds "
                          f"{sorted(p.name for p in folder.iterdir())}")
    params = folder / params_filename if params_filename else None
    if params is not None and not params.is_file():
        raise ConfigError(f"params_filename {params_filename!r} not found in {str(model_dir)!r}")
    return model, params


def load_inference_program(exe, scope, model: Path, params: Path | None):
    """Load ``model`` (+ ``params``) into ``scope``: ``(program, feed names, fetch names)``.

    Raises:
        ConfigError: the file is not a Paddle inference Program.
    """
    same_stem = model.suffix == ".pdmodel" and params is not None and params.name == model.stem + ".pdiparams"
    args = {} if same_stem else {"model_filename": model.name, "params_filename": params.name if params else None}
    location = str(model.with_suffix("")) if same_stem else str(model.parent)
    try:
        with paddle.static.scope_guard(scope):
            program, feed_names, fetch_targets = paddle.static.load_inference_model(location, exe, **args)
    except Exception as exc:  # Paddle raises bare RuntimeError/ValueError/protobuf errors here
        raise ConfigError(f"model file {str(model)!r} could not be loaded as a Paddle inference Program: {exc}") from exc
    return program, list(feed_names), [v.name for v in fetch_targets]


def save_inference_atomically(exe, scope, program, feed_names, fetch_names, target: Path,
                              model_filename: str = "model.pdmodel", params_filename: str = "model.pdiparams",
                              extra_files: dict[str, str] | None = None):
    """Save the model and ``extra_files`` (name -> text) into a temporary folder and rename it to ``target``.

    Returns the model file and the parameters file, or None for the latter when the program has no
    persistable variable (a model cut at a tensor computed from the inputs alone): Paddle writes none then."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        block = program.global_block()
        with paddle.static.scope_guard(scope), paddle.utils.unique_name.guard():
            paddle.static.save_inference_model(
                str(staging / "model"), [block.var(n) for n in feed_names], [block.var(n) for n in fetch_names],
                exe, program=program)
        _strip_callstacks(staging / "model.pdmodel")
        os.replace(staging / "model.pdmodel", staging / model_filename)
        has_params = (staging / "model.pdiparams").exists()
        if has_params:
            os.replace(staging / "model.pdiparams", staging / params_filename)
        for name, text in (extra_files or {}).items():
            (staging / name).write_text(text, encoding="utf-8")
        swap_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / model_filename, (target / params_filename) if has_params else None


def model_op_types(model_file: Path) -> frozenset[str]:
    """The op types of every block of a legacy ``.pdmodel`` (read from its protobuf; nothing is run)."""
    desc = core.ProgramDesc(Path(model_file).read_bytes())
    return frozenset(desc.block(b).op(i).type() for b in range(desc.num_blocks())
                     for i in range(desc.block(b).op_size()))


def _strip_callstacks(model_file: Path) -> None:
    """Drop the Python call stacks Paddle records on the feed/fetch ops it adds, so the same
    model and scales give the same bytes whoever calls quant_post (edits the protobuf directly)."""
    desc = core.ProgramDesc(model_file.read_bytes())
    attr = core.op_proto_and_checker_maker.kOpCreationCallstackAttrName()
    for b in range(desc.num_blocks()):
        block = desc.block(b)
        for i in range(block.op_size()):
            if block.op(i).has_attr(attr):
                block.op(i).remove_attr(attr)
    model_file.write_bytes(desc.serialize_to_string())


def swap_into_place(staging: Path, target: Path) -> None:
    if not target.exists():
        os.replace(staging, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    os.replace(target, old / "previous")
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)
