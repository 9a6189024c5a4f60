"""Calibration data readers: image folders with a preprocessing chain, raw tensor files, sampling.

Typical use with :func:`paddle_quant.quant_post`::

    from paddle_quant.data import ImageFolder, PreprocessConfig, SamplingConfig, batch_generator

    folder = ImageFolder("calib/", PreprocessConfig(resize=(224, 224), mean=[0.485, 0.456, 0.406],
                                                    std=[0.229, 0.224, 0.225]),
                         SamplingConfig(size=100, seed=0))
    quant_post(exe, "model/", "out/", batch_generator=batch_generator(folder, batch_size=16), batch_nums=5)

Readers stream: one file is decoded at a time and one batch is materialised at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np

from ..common.errors import ConfigError
from .images import IMAGE_SUFFIXES, ImageFolder, SkippedFile, list_files
from .preprocess import PreprocessConfig, output_shape, preprocess_image
from .raw import RAW_SUFFIXES, RawFolder, read_text_tensor
from .sampling import MIN_RECOMMENDED_SAMPLES, SamplingConfig, select_samples, warn_if_few

__all__ = [
    "IMAGE_SUFFIXES",
    "RAW_SUFFIXES",
    "MIN_RECOMMENDED_SAMPLES",
    "PreprocessConfig",
    "SamplingConfig",
    "ImageFolder",
    "RawFolder",
    "SkippedFile",
    "preprocess_image",
    "output_shape",
    "read_text_tensor",
    "select_samples",
    "warn_if_few",
    "batch_samples",
    "batch_generator",
    "feed_loader",
    "detect_data_format",
]

Reader = Union[ImageFolder, RawFolder]


def _stack(samples: list, index: int) -> Union[np.ndarray, dict]:
    first = samples[0]
    keys = sorted(first) if isinstance(first, dict) else None
    try:
        if keys is not None:
            return {key: np.stack([s[key] for s in samples]) for key in keys}
        return np.stack(samples)
    except ValueError:
        shapes = sorted({str(list(np.shape(s))) for s in samples} if keys is None else {"(dict samples)"})
        raise ConfigError(f"calibration batch {index} holds samples of different shapes {shapes}; set a resize "
                          "(ResizeResolution/ImageResolution, --resize) so every sample has one shape") from None


def batch_samples(samples: Iterable, batch_size: int) -> Iterator[Union[np.ndarray, dict]]:
    """Group ``samples`` (arrays, or dicts of arrays) into stacked batches of ``batch_size`` (the last may be short)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an int >= 1, got {batch_size!r}")
    pending, index = [], 0
    for sample in samples:
        pending.append(sample)
        if len(pending) == batch_size:
            yield _stack(pending, index)
            pending, index = [], index + 1
    if pending:
        yield _stack(pending, index)


def batch_generator(reader: Reader, batch_size: int) -> Callable[[], Iterator]:
    """A ``batch_generator=`` for :func:`paddle_quant.quant_post`: each call starts a new pass over ``reader``."""
    return lambda: batch_samples(reader.samples(), batch_size)


def feed_loader(reader: Reader, batch_size: int, feed_names: Sequence[str]) -> Callable[[], Iterator[dict]]:
    """A ``data_loader=`` for :func:`paddle_quant.quant_post`: feed dicts ``{feed_names[0]: batch}``.

    Dict samples (``.npz`` files with one array per feed) are passed through as they are.
    """
    if not feed_names:
        raise ConfigError("feed_loader needs at least one feed name")

    def loader() -> Iterator[dict]:
        for batch in batch_samples(reader.samples(), batch_size):
            yield batch if isinstance(batch, dict) else {feed_names[0]: batch}
    return loader


def detect_data_format(folder, implied: Optional[str] = None) -> str:
    """``'images'`` or ``'raw'``: which kind of calibration file ``folder`` holds.

    Args:
        folder: the calibration folder.
        implied: the kind the caller's settings already imply (e.g. ``'images'`` when image
            preprocessing is configured), or None. It decides when the folder holds both kinds; the
            reader then skips the other files with one warning (:func:`~.images.list_files`).

    Raises:
        ConfigError: the folder is missing, holds neither, or holds both with nothing implied.
    """
    if implied not in (None, "images", "raw"):
        raise ConfigError(f"implied must be None, 'images' or 'raw', got {implied!r}")
    has_images = _has(folder, IMAGE_SUFFIXES)
    has_raw = _has(folder, RAW_SUFFIXES)
    if has_images and has_raw:
        if implied is not None:
            return implied
        raise ConfigError(f"calibration folder {str(folder)!r} holds both images and raw tensor files; "
                          "choose one with DataFormat (--data-format images|raw), or set image preprocessing "
                          "(ResizeResolution, Mean, Std, ...) to mean the images")
    if not has_images and not has_raw:
        list_files(folder, IMAGE_SUFFIXES + RAW_SUFFIXES, "image or raw tensor")  # raises the right message
    return "images" if has_images else "raw"


def _has(folder, suffixes: Sequence[str]) -> bool:
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"calibration data folder {str(folder)!r} does not exist or is not a directory")
    return any(p.is_file() and p.suffix.lower() in suffixes for p in root.iterdir())
