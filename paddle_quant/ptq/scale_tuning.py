"""Activation scale tuning: each activation quantizer's scale searched against the fp32 model's outputs.

A calibration algorithm picks every activation scale from that tensor's own values (KL, hist, mse, ...), so
it cannot see what clipping or rounding there costs at the model's output. ``tune_scales=True`` starts from
those scales and, one quantizer at a time in program order, tries a few multiples of its scale
(:data:`MULTIPLIERS`), keeping one only when it lowers the output error of the quantized program on the
calibration batches (:func:`output_error` against the fp32 outputs: log-probabilities for a softmax output,
else relative squared error; a coordinate descent in the spirit of loss-aware PTQ, Nahshan et al., 2019). The
search runs the program the model is saved as, so it measures what the Executor simulation computes (with
``deploy_backend='onednn'``: what oneDNN computes, docs/deploy.md); observer scales (``output_scales``) are
identities there and are not tuned. It never ends above the error it started from on those batches. Each
candidate runs the quantized program from its quantizer on over the tuning batches, fed the tensors live there
(computed with the scales chosen before it: the same arithmetic as a whole run): quantizers x
(``len(MULTIPLIERS)`` + 1) partial runs (PP-OCR cls, 53 quantizers, 10 batches of 8: 154 s of quant_post on 2
cores, 228 s with whole runs, the same model byte for byte). It holds the tensors live at a cut for every
tuning batch, up to three copies at once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from ..common import naming
from ..common.program import read_tensor, write_tensor

__all__ = ["MULTIPLIERS", "output_error", "program_outputs", "tunable_scales", "tune_activation_scales"]

_logger = logging.getLogger(__name__)

PROBABILITY_FLOOR = 1e-7
"""Probabilities are compared as logarithms of at least this (an int8 model may output an exact 0)."""

MULTIPLIERS = (0.7, 0.8, 0.9, 1.1, 1.25)
"""Multiples of a calibrated scale tried per quantizer (1.0, the calibrated scale, is where it starts)."""


def program_outputs(exe, program, scope, batches: Sequence[dict], fetch_names: Sequence[str]) -> list[list]:
    """The outputs of ``program`` (in ``scope``) for each feed dict of ``batches``: one list per batch."""
    return [exe.run(program, feed=dict(feed), fetch_list=list(fetch_names), scope=scope) for feed in batches]


def output_error(reference: list[list], outputs: list[list]) -> float:
    """Error of ``outputs`` against ``reference`` (both as :func:`program_outputs` returns them), averaged over the
    model's outputs: for an output that holds probabilities (:func:`_is_probability`) the squared error of their
    logarithms (what decides a class is the ratio of probabilities, and a confident output hides its error in
    ``1 - p``), else the squared error relative to the reference's energy."""
    errors = []
    for index in range(len(reference[0])):
        ref = [np.asarray(batch[index], np.float64) for batch in reference]
        out = [np.asarray(batch[index], np.float64) for batch in outputs]
        if all(_is_probability(r) for r in ref):
            ref = [np.log(np.maximum(r, PROBABILITY_FLOOR)) for r in ref]
            out = [np.log(np.maximum(o, PROBABILITY_FLOOR)) for o in out]
            scale = float(sum(r.size for r in ref))
        else:
            scale = max(sum(float(np.square(r).sum()) for r in ref), 1e-30)
        errors.append(sum(float(np.square(o - r).sum()) for o, r in zip(out, ref)) / scale)
    return float(np.mean(errors))


def _is_probability(values: np.ndarray) -> bool:
    """Whether ``values`` look like a softmax output: in [0, 1], summing to 1 over the last axis."""
    return values.ndim >= 1 and values.shape[-1] > 1 and bool(np.all(values >= 0) and np.all(values <= 1)) \
        and bool(np.allclose(values.sum(axis=-1), 1.0, atol=1e-3))


def tunable_scales(program, activations: Sequence[str]) -> list[str]:
    """The activation tensors of ``activations`` whose per-tensor quantizer (not an observer) ``program`` runs,
    in program order."""
    wanted = {naming.scale(name): name for name in activations}
    found = []
    for op in program.global_block().ops:
        if op.type != "quantize_linear" or op.attr("only_observer") or op.attr("quant_axis") != -1:
            continue
        name = wanted.get(op.input("Scale")[0])
        if name is not None and name not in found:
            found.append(name)
    return found


def _first_reader(block, var: str) -> int:
    """Index of the first op of ``block`` that reads ``var``."""
    return next(index for index, op in enumerate(block.ops) if var in op.input_arg_names)


def _live_at(block, index: int, feed_names: Sequence[str], fetch_names: Sequence[str]) -> list[str]:
    """The non-persistable tensors written before op ``index`` (or fed) that ops from ``index`` on read or that
    are fetched: what a run of the program from ``index`` needs."""
    written = set(feed_names).union(*(op.output_arg_names for op in block.ops[:index]))
    read = set(fetch_names).union(*(op.input_arg_names for op in block.ops[index:]))
    return sorted(name for name in written & read if block.has_var(name) and not block.var(name).persistable)


class _Suffix:
    """The program from one quantizer on, fed the tensors live there (computed with the scales chosen so far)."""

    def __init__(self, exe, program, scope, live: Sequence[str], fetch_names: Sequence[str]):
        block = program.global_block()
        self.exe, self.scope, self.live, self.fetch_names = exe, scope, list(live), list(fetch_names)
        self.program = program._prune_with_input(self.live, [block.var(name) for name in fetch_names])

    def run(self, cache: list[dict], next_live: Sequence[str]) -> tuple[list[list], list[dict]]:
        """(outputs per batch, the tensors of ``next_live`` per batch) from the cached live tensors."""
        outputs, advanced = [], []
        computed = [name for name in next_live if name not in self.live]
        for feed in cache:
            values = self.exe.run(self.program, feed=feed, fetch_list=self.fetch_names + computed, scope=self.scope)
            outputs.append(values[:len(self.fetch_names)])
            known = dict(zip(computed, values[len(self.fetch_names):]))
            advanced.append({name: known[name] if name in known else feed[name] for name in next_live})
        return outputs, advanced


def tune_activation_scales(exe, program, scope, place, batches: Sequence[dict], reference: list[list],
                           fetch_names: Sequence[str], activations: Sequence[str],
                           multipliers: Sequence[float] = MULTIPLIERS) -> dict[str, float]:
    """Coordinate search of the activation scales of ``program`` (quantized, in ``scope``) against ``reference``
    (the fp32 outputs on ``batches``). Returns ``{tensor: multiplier}`` for the scales it changed; the scope
    holds the tuned scales when it returns.

    Each candidate runs only the ops from its quantizer on, fed the tensors live there (computed once per
    quantizer with the scales chosen before it): the same arithmetic as a whole run, about half the ops."""
    block = program.global_block()
    feed_names = list(batches[0])
    tunable = tunable_scales(program, activations)
    cuts = [_first_reader(block, naming.scale(name)) for name in tunable]
    lives = [_live_at(block, index, feed_names, fetch_names) for index in cuts] + [[]]
    whole = _Suffix(exe, program, scope, feed_names, fetch_names)
    outputs, cache = whole.run([dict(feed) for feed in batches], lives[0])
    best = start = output_error(reference, outputs)
    chosen = {}
    for position, name in enumerate(tunable):
        suffix = _Suffix(exe, program, scope, lives[position], fetch_names)
        var = naming.scale(name)
        calibrated = read_tensor(scope, var)
        kept, kept_cache = 1.0, None
        for multiplier in (1.0, *multipliers):
            write_tensor(scope, place, var, (calibrated * multiplier).astype(calibrated.dtype))
            outputs, advanced = suffix.run(cache, lives[position + 1])
            candidate = output_error(reference, outputs)
            if multiplier == 1.0 or candidate < best:
                best, kept, kept_cache = candidate, float(multiplier), advanced
        write_tensor(scope, place, var, (calibrated * kept).astype(calibrated.dtype))
        cache = kept_cache
        if kept != 1.0:
            chosen[name] = kept
    _logger.info("tune_scales: %d of %d activation scales changed; output error %.4g -> %.4g on %d batches",
                 len(chosen), len(tunable), start, best, len(batches))
    return chosen
