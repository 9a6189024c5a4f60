"""Which calibration files are used: a size, a seed, or explicit indices (as xfDNN's quantizer).

* ``indices``: exactly those positions of the sorted file list, in the order given;
  mutually exclusive with ``seed`` and ``size``.
* ``seed`` (with or without ``size``): a random subset of ``size`` files (all files when
  ``size`` is None) drawn without replacement by ``numpy.random.default_rng(seed)``,
  then put back in sorted order, so the same seed always picks the same files.
* ``size`` alone: the first ``size`` files of the sorted list.
* nothing: every file.

Fewer than :data:`MIN_RECOMMENDED_SAMPLES` calibration samples log a warning
(TNN's advice: "keep the number of pictures at least 50").
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Sequence, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..common.validation import translate_validation_error
from ..common.errors import ConfigError

__all__ = ["SamplingConfig", "select_samples", "warn_if_few", "MIN_RECOMMENDED_SAMPLES"]

MIN_RECOMMENDED_SAMPLES = 50
"""Below this many calibration samples a warning is logged (TNN's documented minimum)."""

_logger = logging.getLogger(__name__)
_T = TypeVar("_T")

_ALLOWED = {
    "size": "None or an int >= 1",
    "seed": "None or an int >= 0",
    "indices": "None or a list of distinct ints >= 0 (not with size or seed)",
}


class SamplingConfig(BaseModel):
    """How calibration samples are picked from a folder."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    size: Optional[int] = Field(None, ge=1, description="Number of samples; None: all (or all indices).")
    seed: Optional[int] = Field(None, ge=0, description="Seed of a random subset; None: the first files.")
    indices: Optional[tuple[int, ...]] = Field(None, description="Explicit positions in the sorted file list.")

    def __init__(self, **data: Any) -> None:
        """Validate ``data``; bad values raise ConfigError/ConfigTypeError naming the field."""
        data = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise translate_validation_error(exc, data, type(self).model_fields, _ALLOWED) from None

    @model_validator(mode="after")
    def _exclusive(self) -> "SamplingConfig":
        if self.indices is not None:
            if self.seed is not None or self.size is not None:
                raise ConfigError("calibration indices are mutually exclusive with calibration size and seed; "
                                  f"got indices={list(self.indices)}, size={self.size}, seed={self.seed}")
            if any(i < 0 for i in self.indices) or len(set(self.indices)) != len(self.indices):
                raise ConfigError(f"calibration indices must be distinct ints >= 0, got {list(self.indices)}")
        return self


def select_samples(items: Sequence[_T], sampling: SamplingConfig) -> list[_T]:
    """The items ``sampling`` picks (see the module docstring); ``items`` is not modified.

    Raises:
        ConfigError: an index past the end, or a size larger than the number of items.
    """
    count = len(items)
    if sampling.indices is not None:
        bad = [i for i in sampling.indices if i >= count]
        if bad:
            raise ConfigError(f"calibration indices {bad} are out of range: there are {count} samples "
                              f"(indices 0..{count - 1})")
        return [items[i] for i in sampling.indices]
    size = count if sampling.size is None else sampling.size
    if size > count:
        raise ConfigError(f"calibration size {size} is larger than the {count} samples available")
    if sampling.seed is None:
        return list(items[:size])
    chosen = np.random.default_rng(sampling.seed).choice(count, size=size, replace=False)
    return [items[i] for i in sorted(int(i) for i in chosen)]


def warn_if_few(count: int, where: str = "calibration") -> bool:
    """Log a warning when ``count`` is below :data:`MIN_RECOMMENDED_SAMPLES`; return True if it did."""
    if count >= MIN_RECOMMENDED_SAMPLES:
        return False
    _logger.warning("%s uses %d sample(s); at least %d are recommended for stable scales",
                    where, count, MIN_RECOMMENDED_SAMPLES)
    return True
