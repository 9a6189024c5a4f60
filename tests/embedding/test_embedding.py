"""quant_embedding at program level: Executor vs numpy reference, PaddleSlim differential, Paddle Inference.

The oracle for our outputs is :mod:`paddle_quant.embedding.numerics` applied to
the float table and indexed by the ids in numpy (the Executor must agree), and
PaddleSlim 2.6's ``quant_embedding`` for abs_max (within one quantization step).
"""

from __future__ import annotations

import numpy as np
import paddle
import pytest
from paddle import inference

from paddle_quant.embedding import numerics as en
from paddle_quant.embedding.quant_embedding import plan_embedding, quant_embedding
from paddle_quant.common.errors import ConfigError, ProgramStateError

PLACE = paddle.CPUPlace()
VOCAB, DIM = 60, 16


class Net:
    """ids -> lookup(emb_w) -> mean over tokens -> fc; plus a second table ``other_w``."""

    def __init__(self, op_type="lookup_table_v2", padding_idx=None, seed=0):
        self.main, self.startup = paddle.static.Program(), paddle.static.Program()
        self.main.random_seed = self.startup.random_seed = seed
        self.op_type = op_type
        with paddle.static.program_guard(self.main, self.startup):
            self.emb, self.other, self.ids_names = self._lookups(op_type, padding_idx)
            pooled = paddle.mean(self.emb, axis=1) + paddle.mean(self.other, axis=1)
            self.logits = paddle.static.nn.fc(pooled, 3)
        self.scope = paddle.static.Scope()
        self.exe = paddle.static.Executor(PLACE)
        with paddle.static.scope_guard(self.scope):
            self.exe.run(self.startup)

    def _lookups(self, op_type, padding_idx):
        if op_type == "lookup_table_v2":
            ids = paddle.static.data("ids", [-1, 5], "int64")
            other_ids = paddle.static.data("other_ids", [-1, 5], "int64")
            emb = paddle.static.nn.embedding(ids, size=[VOCAB, DIM], padding_idx=padding_idx,
                                             param_attr=paddle.ParamAttr(name="emb_w"))
            other = paddle.static.nn.embedding(other_ids, size=[VOCAB, DIM], param_attr=paddle.ParamAttr(name="other_w"))
            return emb, other, ("ids", "other_ids")
        ids = paddle.static.data("ids", [-1, 5, 1], "int64")
        other_ids = paddle.static.data("other_ids", [-1, 5, 1], "int64")
        return (self._lookup_v1(ids, "emb_w", padding_idx), self._lookup_v1(other_ids, "other_w", None),
                ("ids", "other_ids"))

    def _lookup_v1(self, ids, table, padding_idx):
        block = self.main.global_block()
        weight = paddle.static.create_parameter([VOCAB, DIM], "float32", name=table)
        out = block.create_var(name=f"{table}.out", shape=[-1, 5, DIM], dtype="float32")
        block.append_op(type="lookup_table", inputs={"W": weight, "Ids": ids}, outputs={"Out": out},
                        attrs={"padding_idx": -1 if padding_idx is None else padding_idx})
        return out

    def table(self, name="emb_w"):
        return np.array(self.scope.find_var(name).get_tensor())

    def set_table(self, value, name="emb_w"):
        self.scope.find_var(name).get_tensor().set(np.asarray(value, np.float32), PLACE)

    def feed(self, seed=1, batch=4):
        rng = np.random.default_rng(seed)
        shape = (batch, 5) if self.op_type == "lookup_table_v2" else (batch, 5, 1)
        return {name: rng.integers(0, VOCAB, shape).astype(np.int64) for name in self.ids_names}

    def run(self, program, fetch, feed):
        with paddle.static.scope_guard(self.scope):
            return self.exe.run(program, feed=feed, fetch_list=list(fetch))


def _ids(feed, name="ids"):
    return feed[name].reshape(feed[name].shape[0], 5)


# ------------------------------------------------------ Executor vs numpy
@pytest.mark.parametrize("op_type", ["lookup_table_v2", "lookup_table"])
def test_abs_max_executor_matches_numpy_reference(op_type):
    net = Net(op_type)
    table, feed = net.table(), net.feed()
    quantized = quant_embedding(net.main, PLACE, {"params_name": "emb_w"}, scope=net.scope)
    (got,) = net.run(quantized, [net.emb.name], feed)
    ref = en.quantize_abs_max(table, 8, None)
    expected = en.dequantize_abs_max(ref.codes, ref.scale, 8)[_ids(feed)]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7)
    types = [op.type for op in quantized.global_block().ops]
    assert types.count("dequantize_abs_max") == 1 and types.index("dequantize_abs_max") == types.index(op_type) + 1


def test_log_executor_matches_numpy_reference():
    net = Net()
    table, feed = net.table(), net.feed()
    quantized = quant_embedding(net.main, PLACE, {"params_name": "emb_w", "quantize_type": "log"}, scope=net.scope)
    (got,) = net.run(quantized, [net.emb.name], feed)
    ref = en.quantize_log(table, 8)
    np.testing.assert_array_equal(got, en.dequantize_log(ref.codes, ref.dictionary)[_ids(feed)])
    assert "dequantize_log" in [op.type for op in quantized.global_block().ops]


@pytest.mark.parametrize("op_type", ["lookup_table_v2", "lookup_table"])
def test_pq_executor_matches_numpy_reference(op_type):
    net = Net(op_type)
    table, feed = net.table(), net.feed()
    config = {"params_name": "emb_w", "quantize_type": "product_quantization", "subspaces": 4,
              "codebook_size": 16, "iterations": 5, "seed": 3}
    quantized = quant_embedding(net.main, PLACE, config, scope=net.scope)
    (got,) = net.run(quantized, [net.emb.name], feed)
    ref = en.product_quantize(table, 4, 16, 5, 3, sample_rows=32768)
    np.testing.assert_allclose(got, en.reconstruct_pq(ref.codes, ref.codebooks)[_ids(feed)], rtol=0, atol=1e-6)
    codes = np.array(net.scope.find_var("emb_w.pq_codes").get_tensor())
    assert codes.dtype == np.int8 and codes.shape == (VOCAB, 4)


@pytest.mark.parametrize("quantize_type", ["abs_max", "log", "product_quantization"])
def test_padding_idx_rows_stay_zero(quantize_type):
    net = Net(padding_idx=0)
    feed = net.feed()
    feed["ids"][:, 0] = 0
    extra = {"subspaces": 4, "codebook_size": 256, "iterations": 3} if quantize_type == "product_quantization" else {}
    quantized = quant_embedding(net.main, PLACE, {"params_name": "emb_w", "quantize_type": quantize_type, **extra},
                                scope=net.scope)
    (got,) = net.run(quantized, [net.emb.name], feed)
    assert np.all(got[:, 0] == 0)


# ------------------------------------------------------------- semantics
def test_flat_config_acts_only_on_named_table():
    net = Net()
    quantized = quant_embedding(net.main, PLACE, {"params_name": "other_w", "quantize_type": "abs_max"},
                                scope=net.scope)
    tables = [op.input("W")[0] for op in quantized.global_block().ops if op.type == "lookup_table_v2"]
    assert sorted(tables) == ["emb_w", "other_w.int"]


def test_per_op_type_config_quantizes_every_table():
    net = Net()
    plan = plan_embedding(net.main, {"quantize_op_types": ["lookup_table_v2"],
                                     "lookup_table_v2": {"quantize_type": "log"}})
    assert [(t.table, t.method.quantize_type) for t in plan.tables] == [("emb_w", "log"), ("other_w", "log")]
    assert plan_embedding(net.main, {"quantize_op_types": ["lookup_table"]}).tables == ()


def test_bad_params_name_lists_the_tables():
    net = Net()
    with pytest.raises(ConfigError, match=r"'params_name' got 'fc_0.w_0'.*\['emb_w', 'other_w'\]"):
        quant_embedding(net.main, PLACE, {"params_name": "fc_0.w_0"}, scope=net.scope)


def test_float_table_and_original_program_still_work():
    net = Net()
    table, feed = net.table(), net.feed()
    types_before = [op.type for op in net.main.global_block().ops]
    (before,) = net.run(net.main, [net.logits.name], feed)
    quant_embedding(net.main, PLACE, {"params_name": "emb_w"}, scope=net.scope)
    np.testing.assert_array_equal(net.table(), table)
    assert [op.type for op in net.main.global_block().ops] == types_before
    (after,) = net.run(net.main, [net.logits.name], feed)
    np.testing.assert_array_equal(after, before)


def test_free_float_table_clears_it_and_the_model_still_computes_the_same():
    net = Net()
    table, feed = net.table(), net.feed()
    (fp32,) = net.run(net.main, [net.logits.name], feed)
    quantized = quant_embedding(net.main, PLACE, {"params_name": "emb_w", "free_float_table": True},
                                scope=net.scope)
    assert not net.scope.find_var("emb_w").get_tensor()._is_initialized()
    assert not quantized.global_block().has_var("emb_w")
    emb, logits = net.run(quantized, [net.emb.name, net.logits.name], feed)
    ref = en.quantize_abs_max(table, 8, None)
    np.testing.assert_allclose(emb, en.dequantize_abs_max(ref.codes, ref.scale, 8)[_ids(feed)], rtol=0, atol=1e-7)
    # the logits move only by the table's rounding: at most half a step per element, averaged over 5 tokens
    step = float(ref.scale) / 127
    fc_w = net.table("fc_0.w_0")
    assert np.abs(logits - fp32).max() <= step / 2 * np.abs(fc_w).sum(axis=0).max() + 1e-6


@pytest.mark.parametrize("quantize_type", ["abs_max", "log"])
def test_all_zero_table_gives_zeros_not_nan(quantize_type):
    net = Net()
    net.set_table(np.zeros((VOCAB, DIM)))
    quantized = quant_embedding(net.main, PLACE, {"params_name": "emb_w", "quantize_type": quantize_type},
                                scope=net.scope)
    (got,) = net.run(quantized, [net.emb.name], net.feed())
    assert np.all(got == 0)


def test_16_bits_runs_on_lookup_table():
    net = Net("lookup_table")
    table, feed = net.table(), net.feed()
    quantized = quant_embedding(net.main, PLACE, {"params_name": "emb_w", "quantize_bits": 16}, scope=net.scope)
    (got,) = net.run(quantized, [net.emb.name], feed)
    ref = en.quantize_abs_max(table, 16, None)
    np.testing.assert_allclose(got, en.dequantize_abs_max(ref.codes, ref.scale, 16)[_ids(feed)], rtol=0, atol=1e-7)
    assert np.array(net.scope.find_var("emb_w.int").get_tensor()).dtype == np.int16


def test_16_bits_on_lookup_table_v2_is_a_clear_error():
    net = Net()
    with pytest.raises(ConfigError, match=r"'quantize_bits' got 16.*lookup_table_v2.*no int16 kernel"):
        quant_embedding(net.main, PLACE, {"params_name": "emb_w", "quantize_bits": 16, "dtype": "int16"},
                        scope=net.scope)


def test_lookup_table_v2_really_has_no_int16_kernel():
    """If Paddle gains the kernel, INT16_LOOKUP_OP_TYPES should list lookup_table_v2."""
    main = paddle.static.Program()
    block = main.global_block()
    with paddle.static.program_guard(main):
        ids = paddle.static.data("ids", [-1], "int64")
    weight = block.create_var(name="w16", shape=[4, 2], dtype="int16", persistable=True)
    out = block.create_var(name="o16", dtype="int16")
    block.append_op(type="lookup_table_v2", inputs={"W": weight, "Ids": ids}, outputs={"Out": out})
    scope = paddle.static.Scope()
    scope.var("w16").get_tensor().set(np.ones((4, 2), np.int16), PLACE)
    with paddle.static.scope_guard(scope), pytest.raises(Exception, match="no kernels"):
        paddle.static.Executor(PLACE).run(main, feed={"ids": np.array([1], np.int64)}, fetch_list=[out])


def _tied_net():
    """Net whose emb_w is also read by a matmul_v2 (weight tying)."""
    net = Net()
    block = net.main.global_block()
    with paddle.static.program_guard(net.main, net.startup):
        pooled = paddle.mean(net.emb, axis=1)
    tied = block.create_var(name="tied_logits", shape=[-1, VOCAB], dtype="float32")
    block.append_op(type="matmul_v2", inputs={"X": pooled, "Y": block.var("emb_w")}, outputs={"Out": tied},
                    attrs={"trans_x": False, "trans_y": True})
    return net, tied


def test_tied_table_keeps_float_for_other_readers():
    net, tied = _tied_net()
    feed = net.feed()
    (before,) = net.run(net.main, [tied.name], feed)
    quantized = quant_embedding(net.main, PLACE, {"params_name": "emb_w"}, scope=net.scope)
    (after,) = net.run(quantized, [tied.name], feed)
    readers = [op.type for op in quantized.global_block().ops if "emb_w" in op.input_arg_names]
    assert readers == ["matmul_v2"]
    assert np.abs(after - before).max() < 0.05 * np.abs(before).max()


def test_free_float_table_refused_when_other_ops_read_it():
    net, _ = _tied_net()
    with pytest.raises(ConfigError, match=r"'free_float_table' got True.*\['matmul_v2'\]"):
        quant_embedding(net.main, PLACE, {"params_name": "emb_w", "free_float_table": True}, scope=net.scope)


def test_training_program_is_refused():
    net = Net()
    with paddle.static.program_guard(net.main, net.startup):
        paddle.optimizer.SGD(0.1).minimize(paddle.mean(net.logits))
    with pytest.raises(ProgramStateError, match="inference program"):
        quant_embedding(net.main, PLACE, {"params_name": "emb_w"}, scope=net.scope)


# --------------------------------------------------------- vs PaddleSlim
@pytest.mark.slow
@pytest.mark.parametrize("table_scale", [0.05, 3.0])  # below 1: no clip; above 1: the 99.99th-percentile clip
def test_abs_max_matches_paddleslim_within_one_step(table_scale):
    from paddleslim.quant import quant_embedding as slim_quant_embedding

    ours_net, slim_net = Net(), Net()
    table = np.random.default_rng(5).normal(0, table_scale, (VOCAB, DIM)).astype(np.float32)
    ours_net.set_table(table)
    slim_net.set_table(table)
    feed = ours_net.feed()
    quantized = quant_embedding(ours_net.main, PLACE, {"quantize_op_types": ["lookup_table_v2"]},
                                scope=ours_net.scope)
    config = {"quantize_op_types": ["lookup_table_v2"], "lookup_table_v2": {"quantize_type": "abs_max"}}
    slim_program = slim_quant_embedding(slim_net.main, PLACE, config, scope=slim_net.scope)
    (ours,) = ours_net.run(quantized, [ours_net.emb.name], feed)
    (slim,) = slim_net.run(slim_program, [f"{slim_net.emb.name}.dequantize"], feed)
    step = float(np.array(ours_net.scope.find_var("emb_w.scale").get_tensor())[0]) / 127
    assert step > 0
    np.testing.assert_allclose(ours, slim, rtol=0, atol=step * 1.0001)
    slim_scale = np.array(slim_net.scope.find_var("emb_w.scale").get_tensor()).reshape(-1)[0]
    assert abs(slim_scale / 127 - step) <= 1e-6 * step


# ------------------------------------------------------ Paddle Inference
def _save_and_predict(net, program, tmp_path, feed, onednn):
    prefix = str(tmp_path / "model")
    block = program.global_block()
    with paddle.static.scope_guard(net.scope):
        paddle.static.save_inference_model(prefix, [block.var(n) for n in net.ids_names],
                                           [block.var(net.logits.name)], net.exe, program=program)
    config = inference.Config(f"{prefix}.pdmodel", f"{prefix}.pdiparams")
    config.disable_gpu()
    if onednn:
        config.enable_onednn()
    config.disable_glog_info()
    predictor = inference.create_predictor(config)
    for name in predictor.get_input_names():
        predictor.get_input_handle(name).copy_from_cpu(feed[name])
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


@pytest.mark.slow
@pytest.mark.parametrize("config", [
    {"params_name": "emb_w"},
    {"params_name": "emb_w", "quantize_type": "log"},
    {"params_name": ["emb_w", "other_w"], "quantize_type": "product_quantization", "subspaces": 4,
     "codebook_size": 32, "iterations": 3},
], ids=["abs_max", "log", "pq"])
@pytest.mark.parametrize("onednn", [False, True], ids=["native", "onednn"])
def test_paddle_inference_runs_quantized_program(config, onednn, tmp_path):
    net = Net()
    feed = net.feed()
    quantized = quant_embedding(net.main, PLACE, config, scope=net.scope)
    (expected,) = net.run(quantized, [net.logits.name], feed)
    got = _save_and_predict(net, quantized, tmp_path, feed, onednn)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("onednn", [False, True], ids=["native", "onednn"])
def test_paddle_inference_runs_16_bit_lookup_table(onednn, tmp_path):
    net = Net("lookup_table")
    config = {"params_name": "emb_w", "quantize_bits": 16}
    feed = net.feed()
    quantized = quant_embedding(net.main, PLACE, config, scope=net.scope)
    (expected,) = net.run(quantized, [net.logits.name], feed)
    got = _save_and_predict(net, quantized, tmp_path, feed, onednn)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------- PQ acceptance, 100k x 128
def _bench_module():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[2] / "bench" / "embedding.py"
    spec = importlib.util.spec_from_file_location("bench_embedding", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_pq_compresses_100k_table_16x_with_lower_mse_than_abs_max_4bit(tmp_path):
    """On bench/embedding.py's embedding-like table (see docs/embedding.md; i.i.d. Gaussian tables differ)."""
    bench = _bench_module()
    rows, dim = 100_000, 128
    table = bench.embedding_like_table(rows, dim, seed=0)
    program, out = bench.build_program(rows, dim)
    scope = bench.fresh_scope(table)
    config = {"params_name": bench.TABLE, "quantize_type": "product_quantization", "subspaces": 16,
              "codebook_size": 256, "iterations": 8, "sample_rows": 16384}
    quantized = quant_embedding(program, PLACE, config, scope=scope)
    exe = paddle.static.Executor(PLACE)
    restored = bench.lookup_all(exe, quantized, out, scope, rows)
    pq_mse = float(np.mean((restored - table) ** 2))
    four_bit = en.quantize_abs_max(table, 4, None)
    abs_max_mse = float(np.mean((en.dequantize_abs_max(four_bit.codes, four_bit.scale, 4) - table) ** 2))
    assert table.nbytes / bench.persistable_bytes(quantized, scope) >= 16
    assert pq_mse < abs_max_mse, (pq_mse, abs_max_mse)

    prefix = str(tmp_path / "pq")
    block = quantized.global_block()
    with paddle.static.scope_guard(scope):
        paddle.static.save_inference_model(prefix, [block.var("ids")], [block.var(out)], exe, program=quantized)
    config = inference.Config(f"{prefix}.pdmodel", f"{prefix}.pdiparams")
    config.disable_gpu()
    config.enable_onednn()
    config.disable_glog_info()
    predictor = inference.create_predictor(config)
    assert (tmp_path / "pq.pdiparams").stat().st_size * 16 <= table.nbytes   # the float table is not saved
    ids = np.array([0, 7, 99_999, 12_345], np.int64)
    predictor.get_input_handle(predictor.get_input_names()[0]).copy_from_cpu(ids)
    predictor.run()
    got = predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
    np.testing.assert_allclose(got, restored[ids], rtol=0, atol=1e-6)
