"""passes/pool_inputs.py: an average pool whose output is quantized reads a quantized input (oneDNN's int8 pool).

Oracles: Paddle Inference oneDNN int8 running the same saved model (what the pass claims the
Executor now reproduces), the model quantized without the pass (which oneDNN runs the same way
but the Executor does not), onnxruntime on the exported model, and the ops and scale variables
read back from the saved program.
"""

from __future__ import annotations

import numpy as np
import paddle
import pytest

import paddle_quant as quant
from paddle_quant.common import naming
from paddle_quant.common.backends import BACKENDS
from paddle_quant.passes.pool_inputs import quantize_pool_inputs

from support.inference import predict, predictor


def _global_pool(block, features, pooling_type):
    """``pooled`` = global ``pooling_type`` pool of the 8-channel ``features``."""
    pooled = block.create_var(name="pooled", dtype="float32", shape=[-1, 8, 1, 1])
    block.append_op(type="pool2d", inputs={"X": [features]}, outputs={"Out": [pooled]},
                    attrs={"pooling_type": pooling_type, "global_pooling": True, "ksize": [1, 1]})
    return pooled


def _save(folder, main, startup, x, fetched):
    """Initialise the parameters and save ``main`` as an inference model with feed ``x``."""
    exe = paddle.static.Executor(paddle.CPUPlace())
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        exe.run(startup)
        paddle.static.save_inference_model(str(folder / "model"), [x], fetched, exe, program=main)
    return folder


def _pool_net(folder, *, pooling_type="avg", shared=False, activation=paddle.nn.functional.hardswish):
    """conv -> ``activation`` (hard_swish; None: none) -> pool (global) -> conv 1x1 -> flatten; ``shared``: a 1x1
    conv also reads the pool input, its mean is fetched second."""
    paddle.seed(5)
    main, startup = paddle.static.Program(), paddle.static.Program()
    block = main.global_block()
    with paddle.static.program_guard(main, startup):
        x = paddle.static.data("x", [None, 3, 11, 11], "float32")
        features = paddle.static.nn.conv2d(x, 8, 3, padding=1)
        features = activation(features) if activation else features
        pooled = _global_pool(block, features, pooling_type)
        fetched = [paddle.flatten(paddle.static.nn.conv2d(pooled, 5, 1), 1)]
        if shared:
            fetched.append(paddle.mean(paddle.static.nn.conv2d(features, 5, 1), axis=[2, 3]))
    return _save(folder, main, startup, x, fetched)


def _batch(seed=0, n=4):
    """Inputs with a few large pixels, so the pooled input has values far beyond the pooled output's range.
    11 x 11 (odd) pixels: a mean of integers is never a rounding tie, which the runtimes break differently."""
    rng = np.random.default_rng(seed)
    batch = rng.standard_normal((n, 3, 11, 11)).astype(np.float32)
    batch[:, :, 2:4, 5:7] *= 6.0
    return batch


def _quantize(tmp_path, name, model=None, **options):
    model = model or _pool_net(tmp_path / "fp32")
    batches = [{"x": _batch(seed)} for seed in range(4)]
    options = {"algo": "abs_max", "quantizable_op_type": ["conv2d"], "output_scales": "none", "skip_tensor_list": ["x"],
               **options}  # the first conv stays float, as the depthwise convs before PP-OCRv4 rec's pools
    quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(model), str(tmp_path / name),
                     data_loader=lambda: iter(batches), show_progress=False, **options)
    return tmp_path / name


def _load(folder):
    exe = paddle.static.Executor(paddle.CPUPlace())
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        program, feeds, fetches = paddle.static.load_inference_model(str(folder / "model"), exe)
    return program, fetches, scope, exe


def _executor(folder, batch):
    program, fetches, scope, exe = _load(folder)
    with paddle.static.scope_guard(scope):
        return exe.run(program, feed={"x": batch}, fetch_list=fetches)[0]  # the pool branch


def _onednn_int8(folder, batch):
    return predict(predictor(str(folder / "model.pdmodel"), str(folder / "model.pdiparams"), int8=True),
                   {"x": batch})[0]


def _ops(folder):
    return list(_load(folder)[0].global_block().ops)


def _pool(ops):
    return next(op for op in ops if op.type == "pool2d")


def _quantizer_of(ops, tensor):
    return [op for op in ops if op.type == "quantize_linear" and op.input("X")[0] == tensor]


def test_onednn_backend_quantizes_the_pool_input_at_the_pooled_scale(tmp_path):
    plain = _quantize(tmp_path, "plain")
    onednn = _quantize(tmp_path, "onednn", deploy_backend="onednn")
    plain_ops, ops = _ops(plain), _ops(onednn)
    features = _pool(plain_ops).input("X")[0]
    assert _quantizer_of(plain_ops, features) == []  # no backend: PaddleSlim's graph
    [quantizer] = _quantizer_of(ops, features)
    [pooled_quantizer] = _quantizer_of(ops, "pooled")
    assert quantizer.input("Scale") == pooled_quantizer.input("Scale")  # one scale, shared
    assert not quantizer.attr("only_observer")
    dequantizer = next(op for op in ops if op.type == "dequantize_linear"
                       and op.input("X") == quantizer.output("Y"))
    assert _pool(ops).input("X") == dequantizer.output("Y")
    assert sum(op.type == "quantize_linear" for op in ops) == sum(op.type == "quantize_linear" for op in plain_ops) + 1


def test_the_executor_now_computes_what_onednn_int8_runs(tmp_path):
    plain = _quantize(tmp_path, "plain")
    onednn = _quantize(tmp_path, "onednn", deploy_backend="onednn")
    simulated_gap, plain_gap, scale = _gaps(plain, onednn, _batch(11))
    assert simulated_gap <= 0.02 * scale
    assert plain_gap >= 5 * max(simulated_gap, 1e-3 * scale)  # without the pass the simulation is elsewhere


def test_onnxruntime_runs_the_exported_pool_input_quantizer(tmp_path):
    pytest.importorskip("onnxruntime")
    from paddle_quant.export.onnx import export_onnx
    from paddle_quant.deploy.runtimes import make_runner

    onednn = _quantize(tmp_path, "onednn", deploy_backend="onednn")
    result = export_onnx(onednn, tmp_path / "model.onnx")
    features = _pool(_ops(tmp_path / "onednn")).input("X")[0]
    assert features == "hardswish_0.tmp_0@pool_input.quantized.dequantized"
    assert "hardswish_0.tmp_0" in result.activations
    batch = _batch(12)
    got = make_runner("onnxruntime", result.path).run({"x": batch})[0]
    deployed = _onednn_int8(onednn, batch)
    assert np.abs(got - deployed).max() <= 0.02 * np.abs(deployed).max()


def test_max_pool_is_left_alone(tmp_path):
    model = _pool_net(tmp_path / "fp32", pooling_type="max")
    plain, onednn = _quantize(tmp_path, "plain", model), _quantize(tmp_path, "onednn", model, deploy_backend="onednn")
    assert [op.type for op in _ops(onednn)] == [op.type for op in _ops(plain)]


@pytest.mark.vnni  # oneDNN int8 = the simulation of a model built for VNNI/AMX
def test_a_max_pool_input_with_its_own_scale_sets_the_pooled_scale(tmp_path):
    """oneDNN's int8 max pool hands its input's scale to its output, as its average pool does; no input pair (rounding
    and clipping commute with max). Without activation the features' largest magnitude is negative, so the pooled
    maxima calibrate a smaller scale than the features' own."""
    model = _pool_net(tmp_path / "fp32", pooling_type="max", shared=True, activation=None)
    plain, onednn = _quantize(tmp_path, "plain", model), _quantize(tmp_path, "onednn", model, deploy_backend="onednn")
    ops, plain_ops = _ops(onednn), _ops(plain)
    assert [op.type for op in ops] == [op.type for op in plain_ops]
    [own] = _quantizer_of(ops, _pool(ops).input("X")[0])  # the 1x1 conv's quantizer of the features
    assert _quantizer_of(ops, "pooled")[0].input("Scale") == own.input("Scale")
    assert _quantizer_of(plain_ops, "pooled")[0].input("Scale") != own.input("Scale")
    simulated_gap, plain_gap, scale = _gaps(plain, onednn, _batch(13))
    assert simulated_gap <= 0.02 * scale
    assert plain_gap >= 5 * max(simulated_gap, 1e-3 * scale)


def _gaps(plain, onednn, batch):
    """max |Executor - oneDNN int8| on the pool branch, for the model with and without the pass; oneDNN's scale."""
    deployed = _onednn_int8(onednn, batch)
    np.testing.assert_allclose(_onednn_int8(plain, batch), deployed, rtol=1e-5, atol=1e-5)  # same graph in oneDNN
    return (np.abs(_executor(onednn, batch) - deployed).max(), np.abs(_executor(plain, batch) - deployed).max(),
            np.abs(deployed).max())


def test_a_pool_input_with_its_own_scale_sets_the_pooled_scale(tmp_path):
    model = _pool_net(tmp_path / "fp32", shared=True)
    plain, onednn = _quantize(tmp_path, "plain", model), _quantize(tmp_path, "onednn", model, deploy_backend="onednn")
    ops, plain_ops = _ops(onednn), _ops(plain)
    features = _pool(plain_ops).input("X")[0]
    [conv_input] = _quantizer_of(plain_ops, features)  # the 1x1 conv's quantizer
    [own] = [op for op in _quantizer_of(ops, features) if op.output("Y") == conv_input.output("Y")]
    [pool_input] = [op for op in _quantizer_of(ops, features) if op is not own]
    assert pool_input.input("Scale") == own.input("Scale")  # the tensor's own scale ...
    pooled = _quantizer_of(ops, "pooled")[0]
    assert pooled.input("Scale") == own.input("Scale")  # ... replaces the pooled tensor's calibrated one
    assert _quantizer_of(plain_ops, "pooled")[0].input("Scale") != own.input("Scale")
    simulated_gap, plain_gap, scale = _gaps(plain, onednn, _batch(13))
    assert simulated_gap <= 0.02 * scale
    assert plain_gap >= 5 * max(simulated_gap, 1e-3 * scale)


def test_pool2d_as_a_quantizable_type_keeps_its_input_quantizer_and_sets_the_pooled_scale(tmp_path):
    model = _pool_net(tmp_path / "fp32")
    both = {"quantizable_op_type": ["conv2d", "pool2d"]}
    plain = _quantize(tmp_path, "plain", model, **both)
    onednn = _quantize(tmp_path, "onednn", model, deploy_backend="onednn", **both)
    ops = _ops(onednn)
    assert [op.type for op in ops] == [op.type for op in _ops(plain)]
    pool_input = next(op for op in ops if op.type == "dequantize_linear" and op.output("Y") == _pool(ops).input("X"))
    assert _quantizer_of(ops, "pooled")[0].input("Scale") == pool_input.input("Scale")
    simulated_gap, plain_gap, scale = _gaps(plain, onednn, _batch(14))
    assert simulated_gap <= 0.02 * scale
    assert plain_gap >= 5 * max(simulated_gap, 1e-3 * scale)


def test_the_pass_is_idempotent_on_a_saved_model(tmp_path):
    onednn = _quantize(tmp_path, "onednn", deploy_backend="onednn")
    program, _, scope, _ = _load(onednn)
    before = [op.type for op in program.global_block().ops]
    assert quantize_pool_inputs(program, scope, paddle.CPUPlace()) == []
    assert [op.type for op in program.global_block().ops] == before


def test_scale_table_reapplied_gives_the_same_model(tmp_path):
    first = _quantize(tmp_path, "first", deploy_backend="onednn")
    again = tmp_path / "again"
    quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(tmp_path / "fp32"), str(again), algo="abs_max",
                     quantizable_op_type=["conv2d"], output_scales="none", deploy_backend="onednn",
                     skip_tensor_list=["x"], scale_table=str(first / "scale_table.json"))
    for name in ("model.pdmodel", "model.pdiparams"):
        assert (first / name).read_bytes() == (again / name).read_bytes()


def test_only_the_onednn_profile_states_pool_input_quantization():
    assert quant.PTQConfig().quantize_pool_inputs is False
    assert {b: quant.PTQConfig(deploy_backend=b).quantize_pool_inputs for b in BACKENDS} == {
        "onednn": True, "tensorrt": False, "paddle_lite": False, "onnx": False}


# ------------------------------------------------------------- float_pools=True: the pool runs in float

def test_float_pools_copies_the_float_pool_output_into_the_quantized_tensor(tmp_path):
    ops = _ops(_quantize(tmp_path, "float", deploy_backend="onednn", float_pools=True))
    pool = _pool(ops)
    assert _quantizer_of(ops, pool.input("X")[0]) == []  # no pair at the pooled scale before the pool
    [copy] = [op for op in ops if op.type == "assign"]
    assert copy.input("X") == pool.output("Out") == [naming.float_pool("pooled")]
    assert copy.output("Out") == ["pooled"] and len(_quantizer_of(ops, "pooled")) == 1


def test_float_pools_makes_onednn_run_the_pool_in_float(tmp_path):
    from paddle_quant.deploy.optimized import onednn_int8_program

    def pool_reads_int8(folder):
        [pool] = [op for op in onednn_int8_program(folder / "model.pdmodel", folder / "model.pdiparams")
                  if op.type == "pool2d"]
        return pool.int8_input

    assert pool_reads_int8(_quantize(tmp_path, "clipped", deploy_backend="onednn"))
    assert not pool_reads_int8(_quantize(tmp_path, "float", deploy_backend="onednn", float_pools=True))


def test_float_pools_the_executor_computes_what_onednn_int8_runs_and_nothing_is_clipped(tmp_path):
    clipped = _quantize(tmp_path, "clipped", deploy_backend="onednn")
    floated = _quantize(tmp_path, "float", deploy_backend="onednn", float_pools=True)
    batch = _batch(11)
    deployed, fp32 = _onednn_int8(floated, batch), _executor(tmp_path / "fp32", batch)
    assert np.abs(_executor(floated, batch) - deployed).max() <= 0.02 * np.abs(deployed).max()
    float_error, clipped_error = np.abs(deployed - fp32).max(), np.abs(_executor(clipped, batch) - fp32).max()
    assert clipped_error >= 3 * float_error  # the batch's large pixels are clipped at the pooled scale


def test_float_pools_is_idempotent_and_reapplies_from_the_scale_table(tmp_path):
    first = _quantize(tmp_path, "first", deploy_backend="onednn", float_pools=True)
    program, _, scope, _ = _load(first)
    before = [op.type for op in program.global_block().ops]
    assert quantize_pool_inputs(program, scope, paddle.CPUPlace(), float_pools=True) == []
    assert [op.type for op in program.global_block().ops] == before
    again = tmp_path / "again"
    quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(tmp_path / "fp32"), str(again), algo="abs_max",
                     quantizable_op_type=["conv2d"], output_scales="none", deploy_backend="onednn", float_pools=True,
                     skip_tensor_list=["x"], scale_table=str(first / "scale_table.json"))
    for name in ("model.pdmodel", "model.pdiparams"):
        assert (first / name).read_bytes() == (again / name).read_bytes()


def test_float_pools_exports_to_onnx_and_onnxruntime_runs_it_as_onednn_does(tmp_path):
    pytest.importorskip("onnxruntime")
    from paddle_quant.export.onnx import export_onnx
    from paddle_quant.deploy.runtimes import make_runner

    floated = _quantize(tmp_path, "float", deploy_backend="onednn", float_pools=True)
    result = export_onnx(floated, tmp_path / "model.onnx")
    batch = _batch(12)
    got = make_runner("onnxruntime", result.path).run({"x": batch})[0]
    deployed = _onednn_int8(floated, batch)
    assert np.abs(got - deployed).max() <= 0.02 * np.abs(deployed).max()


@pytest.mark.parametrize("backend", [None, "tensorrt", "onnx"])
def test_float_pools_needs_the_onednn_backend(backend):
    with pytest.raises(quant.ConfigError, match=f"'float_pools' got True but deploy_backend is {backend!r}"):
        quant.PTQConfig(float_pools=True, deploy_backend=backend)


# ------------------------------------------------------------- pool inputs made by an int8 convolution
def _append(block, op_type, inputs, attrs=None):
    """Append one op writing a new float var shaped like its first input."""
    first = inputs["X"][0]
    out = block.create_var(name=paddle.utils.unique_name.generate(op_type), dtype="float32", shape=first.shape)
    block.append_op(type=op_type, inputs=inputs, outputs={"Out": [out]}, attrs=attrs or {})
    return out


def _se_net(folder, *, affine_after_activation=False, shared_intermediate=False):
    """conv -> hard_swish -> F; F -> pool -> conv 1x1 -> sigmoid -> gate; F * gate -> conv 1x1 (squeeze-and-excite).
    ``affine_after_activation``: F = hard_swish(...) * a (a learnable multiply oneDNN does not fuse);
    ``shared_intermediate``: the conv output is also fetched."""
    paddle.seed(6)
    main, startup = paddle.static.Program(), paddle.static.Program()
    block = main.global_block()
    with paddle.static.program_guard(main, startup):
        x = paddle.static.data("x", [None, 3, 11, 11], "float32")
        conv = paddle.static.nn.conv2d(x, 8, 3, padding=1)
        features = paddle.nn.functional.hardswish(conv)
        if affine_after_activation:
            scale = paddle.static.create_parameter([1], "float32", name="after_act",
                                                   default_initializer=paddle.nn.initializer.Constant(1.5))
            features = _append(block, "elementwise_mul", {"X": [features], "Y": [scale]}, {"axis": -1})
        pooled = _global_pool(block, features, "avg")
        gate = _append(block, "sigmoid", {"X": [paddle.static.nn.conv2d(pooled, 8, 1)]})
        excited = _append(block, "elementwise_mul", {"X": [features], "Y": [gate]}, {"axis": -1})
        out = paddle.flatten(paddle.mean(paddle.static.nn.conv2d(excited, 5, 1), axis=[2, 3]), 1)
        fetched = [out, conv] if shared_intermediate else [out]
    return _save(folder, main, startup, x, fetched)


def _plan_observers(folder, **options):
    from paddle_quant.ptq.steps import plan_post_training

    program = _load(folder)[0]
    config = quant.PTQConfig(quantizable_op_type=["conv2d"], output_scales="none", **options)
    return [o.var for o in plan_post_training(program, config).observers]


def test_a_pool_input_an_int8_conv_writes_gets_its_own_observer(tmp_path):
    model = _se_net(tmp_path / "fp32")
    features = _pool(_ops(model)).input("X")[0]
    assert _plan_observers(model) == []
    assert _plan_observers(model, deploy_backend="onednn") == [features]
    assert _plan_observers(model, deploy_backend="onednn", skip_tensor_list=["x"]) == []  # the conv stays float


@pytest.mark.parametrize("case", ["affine_after_activation", "shared_intermediate"])
def test_no_observer_where_onednn_does_not_fuse_the_chain(tmp_path, case):
    model = _se_net(tmp_path / "fp32", **{case: True})
    assert _plan_observers(model, deploy_backend="onednn") == []


@pytest.mark.vnni  # oneDNN int8 = the simulation of a model built for VNNI/AMX
def test_the_observer_keeps_onednn_from_clipping_the_other_readers_at_the_pooled_scale(tmp_path):
    model = _se_net(tmp_path / "fp32")
    both = {"skip_tensor_list": []}  # the conv writing the pool input is int8
    plain = _quantize(tmp_path, "plain", model, **both)
    onednn = _quantize(tmp_path, "onednn", model, deploy_backend="onednn", **both)
    features = _pool(_ops(model)).input("X")[0]
    [observer] = _quantizer_of(_ops(onednn), features)
    assert not observer.attr("only_observer")  # oneDNN rounds F at its scale for every reader: the pair says so
    assert _quantizer_of(_ops(onednn), "pooled")[0].input("Scale") == observer.input("Scale")
    batch = _batch(15)
    fp32 = _executor(model, batch)
    deployed = _onednn_int8(onednn, batch)
    error = {name: np.abs(_onednn_int8(folder, batch) - fp32).max() for name, folder in
             (("plain", plain), ("onednn", onednn))}
    assert error["onednn"] <= 0.1 * np.abs(fp32).max()
    assert error["plain"] >= 3 * error["onednn"]  # oneDNN requantized F at the pooled scale for every reader
    # the multiply reads F rounded: 2.3 % of the output's range apart with an identity pair there (checked)
    assert np.abs(_executor(onednn, batch) - deployed).max() <= 1e-3 * np.abs(deployed).max()


def _relu_se_net(folder):
    """conv -> relu -> F (u8 in oneDNN); F -> pool -> conv 1x1 -> hard_sigmoid -> gate; F * gate -> conv 1x1:
    MobileNetV3's first squeeze-and-excite block, whose multiply oneDNN runs in float (PP-OCR cls's ``tmp_0``)."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    main.random_seed = startup.random_seed = 6
    block = main.global_block()
    with paddle.static.program_guard(main, startup):
        x = paddle.static.data("x", [None, 3, 11, 11], "float32")
        features = _append(block, "relu", {"X": [paddle.static.nn.conv2d(x, 8, 3, padding=1)]})
        pooled = _global_pool(block, features, "avg")
        gate = _append(block, "hard_sigmoid", {"X": [paddle.static.nn.conv2d(pooled, 8, 1)]},
                       {"slope": 0.2, "offset": 0.5})
        excited = _append(block, "elementwise_mul", {"X": [features], "Y": [gate]}, {"axis": -1})
        out = paddle.flatten(paddle.mean(paddle.static.nn.conv2d(excited, 5, 1), axis=[2, 3]), 1)
    return _save(folder, main, startup, x, [out])


@pytest.mark.vnni  # oneDNN int8 = the simulation of a model built for VNNI/AMX
def test_with_output_scales_all_the_float_multiply_reads_the_observed_tensor_rounded_as_onednn_hands_it_over(
        tmp_path):
    """output_scales='all' (PaddleSlim's; kept with a warning for oneDNN): F's observer pair is the scale oneDNN's
    int8 conv writes F at (u8), because the int8 pool reads it; the float multiply reads it dequantized from there.
    The program's multiply read the observer's identity copy of F until pool_inputs' rule, which makes such an
    observer round, looked past the observer pairs on the conv's and bias add's outputs (oneDNN drops them)."""
    model = _relu_se_net(tmp_path / "fp32")
    onednn = _quantize(tmp_path, "onednn_all", model, deploy_backend="onednn", output_scales="all",
                       skip_tensor_list=[])
    batch = _batch(15)
    deployed = _onednn_int8(onednn, batch)
    assert np.abs(_executor(onednn, batch) - deployed).max() <= 1e-3 * np.abs(deployed).max()
