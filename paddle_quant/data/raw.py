"""Calibration tensors stored as files: text (one float per line, NCHW, as TNN), ``.npy`` and ``.npz``.

Raw tensors are fed as stored: the image preprocessing chain does not apply (as in
TNN, where mean and scale only act on pictures).

* ``.txt``: one float per line, N*C*H*W lines in NCHW order; ``sample_shape``
  (C, H, W) is needed to split it into N samples.
* ``.npy``: one array, a sample of ``sample_shape`` or a stack of them (one more
  leading axis). Without ``sample_shape`` the array is one sample.
* ``.npz``: one array (read as ``.npy``), or exactly one array per feed name: one
  sample (a feed dict) for models with several inputs.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from ..common.errors import ConfigError
from .images import SkippedFile, list_files, stream_files
from .sampling import SamplingConfig, select_samples

__all__ = ["RAW_SUFFIXES", "RawFolder", "read_text_tensor", "split_samples"]

RAW_SUFFIXES: tuple[str, ...] = (".txt", ".npy", ".npz")
"""Raw tensor file suffixes read (case-insensitive)."""

_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile)


def read_text_tensor(path, sample_shape: Sequence[int]) -> np.ndarray:
    """Read a TNN text input: one float per line (NCHW order) -> float32 array (N, *sample_shape).

    Raises:
        ValueError: a line is not a float, or the count is not a multiple of prod(sample_shape).
    """
    values = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    values.append(float(line))
                except ValueError:
                    raise ValueError(f"line {number} ({line.strip()[:40]!r}) is not a float") from None
    per_sample = int(np.prod(sample_shape))
    if not values or len(values) % per_sample:
        raise ValueError(f"{len(values)} values is not a multiple of {per_sample} = prod({list(sample_shape)})")
    return np.asarray(values, dtype=np.float32).reshape(-1, *sample_shape)


def split_samples(array: np.ndarray, sample_shape: Optional[Sequence[int]]) -> list[np.ndarray]:
    """``array`` as a list of samples: split along axis 0 when it has one axis more than ``sample_shape``.

    Raises:
        ValueError: the shape is neither ``sample_shape`` nor ``(N, *sample_shape)``.
    """
    if sample_shape is None:
        return [array]
    shape = tuple(sample_shape)
    if array.shape == shape:
        return [array]
    if array.shape[1:] == shape:
        return list(array)
    raise ValueError(f"array of shape {list(array.shape)} is neither {list(shape)} nor [N, *{list(shape)}]")


def _npz_samples(path: Path, sample_shape, feed_names) -> list:
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    if len(arrays) == 1:
        return split_samples(next(iter(arrays.values())), sample_shape)
    if feed_names is None or set(arrays) != set(feed_names):
        raise ValueError(f"holds arrays {sorted(arrays)}; a multi-array .npz needs exactly the feed names "
                         f"{sorted(feed_names or [])}")
    return [arrays]


class RawFolder:
    """Raw calibration tensors of one folder, read one file at a time in sorted (or sampled) order.

    Attributes:
        paths: the files this reader reads, after sampling (sampling picks files, not samples).
        skipped: files of the last pass that could not be read, with reasons.
    """

    def __init__(self, folder, *, sample_shape: Optional[Sequence[int]] = None,
                 feed_names: Optional[Sequence[str]] = None, sampling: SamplingConfig | None = None) -> None:
        """List (not read) the raw files of ``folder``; ConfigError when it is missing or has none."""
        self.folder = Path(folder)
        self.sample_shape = None if sample_shape is None else tuple(int(v) for v in sample_shape)
        self.feed_names = None if feed_names is None else tuple(feed_names)
        self.paths = select_samples(list_files(folder, RAW_SUFFIXES, "raw tensor"), sampling or SamplingConfig())
        self.skipped: list[SkippedFile] = []
        if self.sample_shape is None and any(p.suffix.lower() == ".txt" for p in self.paths):
            raise ConfigError(f"text calibration files in {str(folder)!r} need the sample shape (C, H, W): "
                              "set InputShape (--input-shape)")

    def __len__(self) -> int:
        """Number of files selected."""
        return len(self.paths)

    def _load(self, path: Path) -> list:
        suffix = path.suffix.lower()
        if suffix == ".txt":
            return list(read_text_tensor(path, self.sample_shape))
        if suffix == ".npz":
            return _npz_samples(path, self.sample_shape, self.feed_names)
        return split_samples(np.load(path, allow_pickle=False), self.sample_shape)

    def samples(self) -> Iterator:
        """Yield one sample (array, or dict for several feeds) at a time; a new pass resets :attr:`skipped`."""
        self.skipped = []
        return stream_files(self.paths, self._load, self.skipped, _READ_ERRORS)
