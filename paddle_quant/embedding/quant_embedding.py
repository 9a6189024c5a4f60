"""``quant_embedding``: abs_max, log and product quantization of embedding tables.

Flow: validate the config -> plan (which ``lookup_table``/``lookup_table_v2``
ops read which tables, with which method) -> quantize every planned table in
numpy (:mod:`paddle_quant.embedding.numerics`) -> write the integer tables,
scales, dictionaries and codebooks into the scope -> rewrite a clone of the
program and return it.

What the rewritten program looks like, for a lookup ``out = lookup(W, ids)``:

* ``abs_max``: ``{out}.int = lookup({W}.int, ids)`` then
  ``out = dequantize_abs_max({out}.int, {W}.scale, max_range=2**(bits-1)-1)``;
* ``log``: ``{out}.int = lookup({W}.int, ids)`` then
  ``out = dequantize_log({out}.int, {W}.dict)``;
* ``product_quantization``: ``{out}.int = lookup({W}.pq_codes, ids)`` (int8
  codes ``[.., M]``), ``cast`` to int64, ``elementwise_add`` of
  ``{W}.pq_offsets`` (``m*K`` plus the storage offset), ``lookup_table_v2``
  into the concatenated codebooks ``{W}.pq_codebook`` ``[M*K, D/M]``, and
  ``reshape2`` to ``[.., D]`` written to ``out``.

These are existing Paddle ops with CPU kernels, so the result runs in the
Executor and in Paddle Inference. The lookup op keeps its type and attributes
(``padding_idx`` included: padded ids give code 0, which dequantizes to 0 for
abs_max and log, and to a centroid pinned at zero for product quantization).

Differences from PaddleSlim 2.6, on purpose: the float output keeps its name
(PaddleSlim renames consumers to ``{out}.dequantize``), the program given is
not mutated (a rewritten clone is returned), the float table stays in the
scope unless ``free_float_table=True``, the flat config keys act on
``params_name``, an all-zero table gives zeros instead of NaN, and 16-bit is
refused at quantization time for ``lookup_table_v2`` (no int16 kernel) instead
of crashing at run time.

Not supported: ``fused_embedding_seq_pool`` and ``pyramid_hash`` (PaddleSlim
splits the former; here it is a ConfigError), lookups in sub-blocks (only the
global block is searched), and training programs (the rewritten lookups have no
gradient: pass an inference program).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

import numpy as np
import paddle
from paddle.base import core

from ..common import naming
from ..common.program import (check_program, has_backward, insert_ops, legacy_ir, read_tensor, resolve_scope,
                              write_tensor)
from .config import LOOKUP_OP_TYPES, EmbeddingConfig, EmbeddingMethodConfig, as_embedding_config
from .numerics import pq_code_offset, product_quantize, quantize_abs_max, quantize_log
from ..common.errors import ConfigError, ProgramStateError

__all__ = ["quant_embedding", "plan_embedding", "EmbeddingPlan", "TablePlan", "LookupSite",
           "INT16_LOOKUP_OP_TYPES"]

_logger = logging.getLogger(__name__)

INT16_LOOKUP_OP_TYPES: frozenset[str] = frozenset({"lookup_table"})
"""Lookup op types with an int16 ``W`` CPU kernel in Paddle 3.3.1 (measured: lookup_table_v2 has none)."""

_VT = core.VarDesc.VarType
_INT_TYPES = {"int8": _VT.INT8, "int16": _VT.INT16}
_NO_PADDING = -1


@dataclass(frozen=True)
class LookupSite:
    """One lookup op reading a planned table: its index in the global block, type, ids, output, padding_idx."""

    index: int
    op_type: str
    out: str
    padding_idx: int


@dataclass(frozen=True)
class TablePlan:
    """A table to quantize, the method, and the lookups to rewrite."""

    table: str
    method: EmbeddingMethodConfig
    lookups: tuple[LookupSite, ...]

    @property
    def padded(self) -> bool:
        """True if any lookup of the table has a ``padding_idx``."""
        return any(site.padding_idx != _NO_PADDING for site in self.lookups)


@dataclass(frozen=True)
class EmbeddingPlan:
    """Every table ``quant_embedding`` will quantize (pure data)."""

    tables: tuple[TablePlan, ...]


# ---------------------------------------------------------------------- plan
def _padding_idx(op) -> int:
    value = int(op.attr("padding_idx")) if op.has_attr("padding_idx") else _NO_PADDING
    return value if value >= 0 else _NO_PADDING


def _lookup_sites(block) -> dict[str, list[LookupSite]]:
    """Every lookup op of the block, grouped by the table it reads."""
    sites: dict[str, list[LookupSite]] = {}
    for index, op in enumerate(block.ops):
        if op.type in LOOKUP_OP_TYPES:
            site = LookupSite(index, op.type, op.output("Out")[0], _padding_idx(op))
            sites.setdefault(op.input("W")[0], []).append(site)
    return sites


def _selected_tables(sites: Mapping[str, list[LookupSite]], config: EmbeddingConfig) -> list[str]:
    eligible = [t for t, s in sites.items() if any(site.op_type in config.quantize_op_types for site in s)]
    if config.params_name is None:
        return eligible
    for name in config.params_name:
        if name not in eligible:
            raise ConfigError(
                f"config key 'params_name' got {name!r}: not an embedding table read by "
                f"{list(config.quantize_op_types)} ops in this program; allowed: {eligible}"
                + (f" (all lookup tables: {sorted(sites)})" if sorted(sites) != sorted(eligible) else ""))
    return list(dict.fromkeys(config.params_name))


def _table_method(table: str, sites: list[LookupSite], config: EmbeddingConfig) -> EmbeddingMethodConfig:
    methods = {site.op_type: config.method_for(site.op_type) for site in sites}
    if len(set(methods.values())) > 1:
        raise ConfigError(f"table {table!r} is read by {sorted(methods)} ops configured with different methods "
                          f"{ {k: v.quantize_type for k, v in methods.items()} }; allowed: one method per table")
    method = next(iter(methods.values()))
    without_int16 = sorted({s.op_type for s in sites} - INT16_LOOKUP_OP_TYPES)
    if method.quantize_bits == 16 and without_int16:
        raise ConfigError(f"config key 'quantize_bits' got 16 for table {table!r}, read by {without_int16}: "
                          "Paddle 3.3.1 has no int16 kernel for that lookup op, so the program could not run; "
                          "allowed: 2..8 (or 16 when only lookup_table ops read the table)")
    return method


def _check_free(block, table: str, sites: list[LookupSite], config: EmbeddingConfig) -> None:
    if not config.free_float_table:
        return
    rewritten = {site.index for site in sites}
    others = [op.type for i, op in enumerate(block.ops) if i not in rewritten and table in op.input_arg_names]
    if others:
        raise ConfigError(f"config key 'free_float_table' got True, but table {table!r} is also read by {others} "
                          "ops that keep the float table; allowed: False for this program")


def plan_embedding(program: paddle.static.Program, config: Union[EmbeddingConfig, Mapping[str, Any]]) -> EmbeddingPlan:
    """Which tables of ``program``'s global block ``config`` quantizes, how, and through which lookups.

    Raises:
        ProgramStateError: the program has backward ops (pass the inference program).
        ConfigError: ``params_name`` names no embedding table (the message lists them), a table's lookup op
            types have different methods, 16 bits on a lookup op without an int16 kernel, or
            ``free_float_table`` while other ops read the table.
    """
    config = as_embedding_config(config)
    block = program.global_block()
    if has_backward(block):
        raise ProgramStateError("quant_embedding needs an inference program, got one with backward ops; pass "
                                "the program from before minimize() or program.clone(for_test=True)")
    sites = _lookup_sites(block)
    tables = []
    for table in _selected_tables(sites, config):
        chosen = [s for s in sites[table] if s.op_type in config.quantize_op_types]
        _check_free(block, table, chosen, config)
        tables.append(TablePlan(table, _table_method(table, chosen, config), tuple(chosen)))
    return EmbeddingPlan(tuple(tables))


# --------------------------------------------------------------- emissions
@dataclass(frozen=True)
class _Emission:
    """What one table becomes: persistable arrays, the lookup's new W, and ops to follow each lookup."""

    arrays: dict[str, np.ndarray]
    lookup_table: str
    code_dtype: Any
    code_width: Optional[int]


def _abs_max_emission(plan: TablePlan, weight: np.ndarray) -> _Emission:
    result = quantize_abs_max(weight, plan.method.quantize_bits, plan.method.threshold)
    arrays = {naming.embedding_int_table(plan.table): result.codes,
              naming.embedding_scale(plan.table): np.array([result.scale], np.float32)}
    return _Emission(arrays, naming.embedding_int_table(plan.table), _INT_TYPES[plan.method.storage_dtype], None)


def _log_emission(plan: TablePlan, weight: np.ndarray) -> _Emission:
    result = quantize_log(weight, plan.method.quantize_bits)
    arrays = {naming.embedding_int_table(plan.table): result.codes,
              naming.log_dictionary(plan.table): result.dictionary}
    return _Emission(arrays, naming.embedding_int_table(plan.table), _VT.INT8, None)


def _pq_emission(plan: TablePlan, weight: np.ndarray) -> _Emission:
    method = plan.method
    offset = pq_code_offset(method.centroids)
    result = product_quantize(weight, method.subspaces, method.centroids, method.iterations, method.seed,
                              method.sample_rows, fixed_zero=offset if plan.padded else None)
    subspaces, centroids, width = result.codebooks.shape
    arrays = {naming.pq_codes(plan.table): (result.codes - offset).astype(np.int8),
              naming.pq_codebook(plan.table): result.codebooks.reshape(subspaces * centroids, width),
              naming.pq_offsets(plan.table): (np.arange(subspaces, dtype=np.int64) * centroids + offset)}
    return _Emission(arrays, naming.pq_codes(plan.table), _VT.INT8, subspaces)


_EMITTERS = {"abs_max": _abs_max_emission, "log": _log_emission, "product_quantization": _pq_emission}


def _dequant_ops(plan: TablePlan, site: LookupSite, out_shape: tuple[int, ...]) -> list[tuple]:
    """The ops that turn ``{out}.int`` back into float ``out``."""
    codes, out = naming.lookup_codes(site.out), site.out
    if plan.method.quantize_type == "abs_max":
        qmax = float(2 ** (plan.method.quantize_bits - 1) - 1)
        return [("dequantize_abs_max", {"X": [codes], "Scale": [naming.embedding_scale(plan.table)]},
                 {"Out": [out]}, {"max_range": qmax})]
    if plan.method.quantize_type == "log":
        return [("dequantize_log", {"X": [codes], "Dict": [naming.log_dictionary(plan.table)]}, {"Out": [out]}, {})]
    wide, index, parts = naming.pq_wide_codes(out), naming.pq_index(out), naming.pq_subvectors(out)
    return [
        ("cast", {"X": [codes]}, {"Out": [wide]}, {"in_dtype": int(_VT.INT8), "out_dtype": int(_VT.INT64)}),
        ("elementwise_add", {"X": [wide], "Y": [naming.pq_offsets(plan.table)]}, {"Out": [index]}, {"axis": -1}),
        ("lookup_table_v2", {"W": [naming.pq_codebook(plan.table)], "Ids": [index]}, {"Out": [parts]},
         {"padding_idx": _NO_PADDING}),
        ("reshape2", {"X": [parts]}, {"Out": [out], "XShape": [naming.pq_xshape(out)]},
         {"shape": [0] * (len(out_shape) - 1) + [int(out_shape[-1])]}),
    ]


# -------------------------------------------------------------------- apply
def _create_arrays(block, scope, place, arrays: Mapping[str, np.ndarray]) -> None:
    for name, value in arrays.items():
        if not block.has_var(name):
            block.create_var(name=name, shape=list(value.shape), dtype=str(value.dtype), persistable=True,
                             stop_gradient=True)
        write_tensor(scope, place, name, value)


def _create_intermediates(block, plan: TablePlan, site: LookupSite, emission: _Emission) -> tuple[int, ...]:
    """Create ``{out}.int`` (and the PQ temporaries); return the float output's shape."""
    out_var = block.var(site.out)
    shape = tuple(out_var.shape)
    code_shape = shape[:-1] + (emission.code_width,) if emission.code_width else shape
    block.create_var(name=naming.lookup_codes(site.out), shape=list(code_shape), dtype=emission.code_dtype)
    if emission.code_width:
        width = shape[-1] // emission.code_width
        block.create_var(name=naming.pq_wide_codes(site.out), shape=list(code_shape), dtype=_VT.INT64)
        block.create_var(name=naming.pq_index(site.out), shape=list(code_shape), dtype=_VT.INT64)
        block.create_var(name=naming.pq_subvectors(site.out), shape=list(code_shape) + [width], dtype=out_var.dtype)
        block.create_var(name=naming.pq_xshape(site.out), shape=[0, *code_shape, width], dtype=out_var.dtype)
    return shape


def _rewrite_table(block, plan: TablePlan, emission: _Emission) -> list[tuple[int, list[tuple]]]:
    """Point each lookup at the quantized table; return ``(position, ops)`` insertions."""
    insertions = []
    for site in plan.lookups:
        op = block.ops[site.index]
        shape = _create_intermediates(block, plan, site, emission)
        op._rename_input(plan.table, emission.lookup_table)
        op._rename_output(site.out, naming.lookup_codes(site.out))
        insertions.append((site.index + 1, _dequant_ops(plan, site, shape)))
    return insertions


def _free_table(block, scope, table: str) -> None:
    if scope.find_var(table) is not None:
        scope.find_var(table).get_tensor()._clear()
    if not any(table in op.input_arg_names for op in block.ops):
        block._remove_var(table, sync=False)


def _apply(program, plan: EmbeddingPlan, emissions: list[_Emission], scope, place, free: bool) -> None:
    block = program.global_block()
    insertions = []
    for table_plan, emission in zip(plan.tables, emissions):
        _create_arrays(block, scope, place, emission.arrays)
        insertions.extend(_rewrite_table(block, table_plan, emission))
    for position, ops in sorted(insertions, key=lambda item: item[0], reverse=True):
        insert_ops(block, position, ops)
    if free:
        for table_plan in plan.tables:
            _free_table(block, scope, table_plan.table)
    program._sync_with_cpp()


def quant_embedding(program: paddle.static.Program, place,
                    config: Union[EmbeddingConfig, Mapping[str, Any], None], scope=None) -> paddle.static.Program:
    """Quantize the embedding tables read by lookup ops (PaddleSlim's ``quant_embedding``).

    Args:
        program: a legacy-IR inference Program; it is not modified.
        place: where the new tensors are created (``paddle.CPUPlace()``...).
        config: a dict in either PaddleSlim shape or an :class:`EmbeddingConfig`
            (see :mod:`paddle_quant.embedding.config`); None means every lookup table, abs_max 8 bits.
        scope: the scope holding the float tables; None for the global scope.
            The integer tables, scales, dictionaries and codebooks are written
            into it; the float tables stay unless ``free_float_table=True``.

    Returns:
        A rewritten clone of ``program`` (see the module docstring for its ops).

    Raises:
        UnsupportedProgramError: ``program`` is not a legacy Program.
        ProgramStateError: the program has backward ops.
        ConfigError / ConfigTypeError: a bad config (see :func:`plan_embedding`).
        ScopeError: a table is not initialised in the scope.
    """
    with legacy_ir():
        check_program(program)
        config = as_embedding_config(config)
        scope = resolve_scope(scope)
        plan = plan_embedding(program, config)
        emissions = [_EMITTERS[t.method.quantize_type](t, read_tensor(scope, t.table)) for t in plan.tables]
        quantized = program.clone()
        _apply(quantized, plan, emissions, scope, place, config.free_float_table)
        for table_plan in plan.tables:
            _logger.info("quant_embedding: %s -> %s (%d lookups)", table_plan.table,
                         table_plan.method.quantize_type, len(table_plan.lookups))
        return quantized
