"""A folder of calibration images (jpg, jpeg, png, bmp), read one file at a time.

Files are listed once, sorted by name (so runs are reproducible), narrowed by a
:class:`~paddle_quant.data.sampling.SamplingConfig`, and decoded lazily: only the
image being preprocessed is in memory. A file that cannot be decoded is skipped,
logged and recorded in :attr:`ImageFolder.skipped`; when a pass over the folder
yields no image at all, :class:`~paddle_quant.common.errors.ConfigError` lists why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from ..common.errors import ConfigError
from .preprocess import PreprocessConfig, preprocess_image
from .sampling import SamplingConfig, select_samples

__all__ = ["IMAGE_SUFFIXES", "SkippedFile", "ImageFolder", "list_files", "stream_files"]

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp")
"""Image file name suffixes read (case-insensitive)."""

_logger = logging.getLogger(__name__)
_SHOWN_SKIPPED = 3  # names listed in the skipped-files warning
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


@dataclass(frozen=True)
class SkippedFile:
    """A calibration file that could not be read, and why."""

    path: Path
    reason: str


def list_files(folder, suffixes: Sequence[str], kind: str) -> list[Path]:
    """Files of ``folder`` (not recursive) whose suffix is in ``suffixes``, sorted by name. Other files
    (a README, labels, notes; hidden files aside) are skipped with one warning giving their count and names.

    Raises:
        ConfigError: the folder does not exist, or holds no such file.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"calibration data folder {str(folder)!r} does not exist or is not a directory")
    entries = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    files = [p for p in entries if p.suffix.lower() in suffixes]
    if not files:
        raise ConfigError(f"calibration data folder {str(folder)!r} holds no {kind} file "
                          f"(looked for {', '.join(suffixes)})")
    others = [p.name for p in entries if p.suffix.lower() not in suffixes]
    if others:
        shown = ", ".join(others[:_SHOWN_SKIPPED]) + (", ..." if len(others) > _SHOWN_SKIPPED else "")
        _logger.warning("calibration folder %s: reading its %d %s file(s), skipping %d other file(s): %s",
                        root, len(files), kind, len(others), shown)
    return files


def stream_files(paths: Sequence[Path], load: Callable[[Path], Iterator], skipped: list[SkippedFile],
                 errors: tuple[type[BaseException], ...]) -> Iterator:
    """Yield what ``load(path)`` yields for each path, skipping (and recording) files that raise ``errors``.

    Raises:
        ConfigError: no file gave anything; the message lists the skipped files and reasons.
    """
    produced = 0
    for path in paths:
        try:
            items = list(load(path))
        except errors as exc:
            skipped.append(SkippedFile(path, f"{type(exc).__name__}: {exc}"))
            _logger.warning("skipping unreadable calibration file %s (%s)", path, skipped[-1].reason)
            continue
        produced += len(items)
        yield from items
    if not produced:
        details = "; ".join(f"{s.path.name}: {s.reason}" for s in skipped[:5])
        raise ConfigError(f"no readable calibration sample among {len(paths)} file(s)"
                          + (f"; skipped: {details}" if details else ""))


class ImageFolder:
    """Calibration images of one folder, preprocessed lazily in sorted (or sampled) order.

    Attributes:
        paths: the files this reader reads, after sampling.
        skipped: files of the last pass that could not be decoded, with reasons.
    """

    def __init__(self, folder, preprocess: PreprocessConfig, sampling: SamplingConfig | None = None) -> None:
        """List (not read) the images of ``folder``; ConfigError when it is missing or has none."""
        self.folder = Path(folder)
        self.preprocess = preprocess
        self.paths = select_samples(list_files(folder, IMAGE_SUFFIXES, "image"), sampling or SamplingConfig())
        self.skipped: list[SkippedFile] = []

    def __len__(self) -> int:
        """Number of files selected (some may turn out unreadable)."""
        return len(self.paths)

    def _load(self, path: Path) -> Iterator[np.ndarray]:
        with Image.open(path) as image:
            image.load()
            yield preprocess_image(image, self.preprocess)

    def samples(self) -> Iterator[np.ndarray]:
        """Yield one preprocessed float32 array per readable image; a new pass resets :attr:`skipped`."""
        self.skipped = []
        return stream_files(self.paths, self._load, self.skipped, _DECODE_ERRORS)
