"""Where a saved Paddle model's files are: one lookup rule for every entry point."""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError

__all__ = ["model_files"]

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
        if len(found) != 1:
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
