"""Data-parallel agreement of quantizer statistics across ranks.

Under ``paddle.DataParallel`` (or fleet's dygraph data parallel) each rank sees a different
slice of the global batch, so an activation statistic computed per rank differs between
ranks (Paddle's own QAT keeps such per-rank moving averages, and which rank saves decides
the model). Every dygraph quanter passes its per-batch statistic through
:meth:`RankSync.max_over_ranks` before updating its state: the all-reduced maximum of the
per-rank abs maxima is the abs max of the global batch, so every rank applies the same update
and ends with the same scales, equal to a single process that saw the concatenated batches.

The first reduction also compares a fingerprint of the QAT config and of the wrapped layers
across ranks and refuses to go on when they differ (ranks quantizing different models would
otherwise deadlock or mix statistics of different tensors).
"""

from __future__ import annotations

import json
import zlib

import paddle
import paddle.distributed as dist

from ..common.errors import ConfigError

__all__ = ["RankSync", "data_parallel_ranks", "config_fingerprint"]


def data_parallel_ranks() -> int:
    """How many ranks the parallel environment has (1 when it is not initialized)."""
    if not dist.is_available() or not dist.is_initialized():
        return 1
    return dist.get_world_size()


def config_fingerprint(config_dict: dict, layer_names: list[str]) -> int:
    """A 31-bit checksum of the config and the wrapped layer names (equal on every rank that agrees)."""
    text = json.dumps({"config": config_dict, "layers": layer_names}, sort_keys=True, default=str)
    return zlib.crc32(text.encode("utf-8")) & 0x7FFFFFFF


class RankSync:
    """Reduces quanter statistics over the data-parallel ranks (an identity in a single process).

    Args:
        fingerprint: :func:`config_fingerprint` of this rank's QAT config and wrapped layers,
            checked against the other ranks at the first reduction.
    """

    def __init__(self, fingerprint: int) -> None:
        self.fingerprint = fingerprint
        self._checked = False

    def max_over_ranks(self, statistic: paddle.Tensor) -> paddle.Tensor:
        """The element-wise maximum of ``statistic`` over all ranks (``statistic`` itself in one process)."""
        if data_parallel_ranks() == 1:
            return statistic
        if not self._checked:
            self._check_same_config()
        reduced = statistic.clone()
        dist.all_reduce(reduced, op=dist.ReduceOp.MAX)
        return reduced

    def _check_same_config(self) -> None:
        highest = paddle.to_tensor([self.fingerprint], dtype="int64")
        lowest = paddle.to_tensor([-self.fingerprint], dtype="int64")
        dist.all_reduce(highest, op=dist.ReduceOp.MAX)
        dist.all_reduce(lowest, op=dist.ReduceOp.MAX)
        high, low = int(highest.item()), -int(lowest.item())
        if high != self.fingerprint or low != self.fingerprint:
            raise ConfigError(
                f"rank {dist.get_rank()} quantizes with config/layers fingerprint {self.fingerprint}, but the "
                f"ranks hold fingerprints from {low} to {high}: every rank must call "
                "QAT(config).quantize(model) with the same config on the same model"
            )
        self._checked = True
