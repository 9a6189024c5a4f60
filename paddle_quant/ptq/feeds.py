"""Calibration data in every form PaddleSlim accepts, as one stream of feed dicts.

- ``sample_generator``: a callable returning an iterable of single samples (an
  array, a tuple/list with one array per feed, or a dict), batched here by
  ``batch_size`` (PaddleSlim's own batching of it is broken on Paddle 3.3.1).
- ``batch_generator``: a callable returning an iterable of whole batches.
- ``data_loader``: a callable returning an iterable of feed dicts, or an
  iterable such as ``paddle.io.DataLoader``.

Nothing is read ahead: one batch is materialised at a time.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from ..common.errors import ConfigError, ConfigTypeError

__all__ = ["feed_batches", "as_feed", "check_reiterable"]


def _as_array(value: Any) -> np.ndarray:
    return np.asarray(value.numpy() if hasattr(value, "numpy") else value)


def as_feed(item: Any, feed_names: Sequence[str], where: str) -> dict[str, np.ndarray]:
    """One batch or sample as a feed dict: a dict (as given), one array (a single-input model), or a tuple/list
    with one array per feed in feed order.

    Raises:
        ConfigError: the number of arrays differs from the model's feeds (the message names ``where``).
    """
    if isinstance(item, list) and len(item) == 1 and isinstance(item[0], dict):
        item = item[0]  # paddle.io.DataLoader(return_list=False) yields [feed_dict]
    if isinstance(item, dict):
        return {name: _as_array(value) for name, value in item.items()}
    values = list(item) if isinstance(item, (tuple, list)) else [item]
    if len(values) != len(feed_names):
        raise ConfigError(
            f"{where} holds {len(values)} tensor(s) but the model has {len(feed_names)} feed(s) "
            f"{list(feed_names)}; give one array per feed, in that order, or a dict keyed by feed name"
        )
    return {name: _as_array(value) for name, value in zip(feed_names, values)}


def _stack(samples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.stack([s[name] for s in samples]) for name in samples[0]}


def _batched(samples: Iterable[Any], feed_names, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    pending: list[dict[str, np.ndarray]] = []
    for index, sample in enumerate(samples):
        pending.append(as_feed(sample, feed_names, f"sample {index} of sample_generator"))
        if len(pending) == batch_size:
            yield _stack(pending)
            pending = []
    if pending:
        yield _stack(pending)


def _call(source: Callable | Iterable, name: str) -> Iterable:
    if callable(source):
        return source()
    if isinstance(source, Iterable):
        return source
    raise ConfigTypeError(f"{name} must be a callable returning an iterable (or an iterable), got {type(source).__name__}")


def feed_batches(feed_names: Sequence[str], *, sample_generator=None, batch_generator=None,
                 data_loader=None, batch_size: int = 16) -> Iterator[dict[str, np.ndarray]]:
    """Yield one feed dict per calibration batch from whichever source was given.

    Raises:
        ConfigError: none or more than one source, or items that do not match the feeds.
        ConfigTypeError: a source that is neither callable nor iterable.
    """
    given = {k: v for k, v in (("sample_generator", sample_generator), ("batch_generator", batch_generator),
                               ("data_loader", data_loader)) if v is not None}
    if len(given) != 1:
        raise ConfigError(
            "give exactly one calibration source: sample_generator, batch_generator or data_loader; "
            f"got {sorted(given) or 'none'}"
        )
    (name, source), = given.items()
    items = _call(source, name)
    if name == "sample_generator":
        return _batched(items, feed_names, batch_size)
    return (as_feed(item, feed_names, f"batch {i} of {name}") for i, item in enumerate(items))


def one_shot_sources(sources: dict) -> tuple[str, ...]:
    """The names of the given calibration sources that can be read only once (an iterator or generator object)."""
    return tuple(name for name, source in sources.items()
                 if source is not None and not callable(source) and iter(source) is source)


def check_reiterable(sources: dict, reason: str) -> None:
    """ConfigError when the given calibration source can be read only once (an iterator or generator object)
    and ``reason`` needs a second pass over it."""
    one_shot = one_shot_sources(sources)
    if one_shot:
        raise ConfigError(f"{one_shot[0]} is an iterator that can be read once, but {reason} reads the calibration "
                          f"data twice; pass a callable returning a fresh iterable (e.g. lambda: batches) "
                          f"or a re-iterable such as a list or paddle.io.DataLoader")
