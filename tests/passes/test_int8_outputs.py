"""passes/int8_outputs.py and ``output_scales='int8_ops'``: observers on the outputs of int8 weight ops only.

Oracles: the observers planned (the chain a runtime folds into the int8 op, nothing past it), and the
Paddle Executor running models quantized with ``'none'`` and ``'int8_ops'`` (observers are identities,
so the two must compute the same values) against ``'all'`` (whose observer on a pool input changes what
``deploy_backend='onednn'`` states for that pool); for ``output_algo``, the abs max of each observed output
over the calibration batches (from the fp32 program) and the scale table of the same call without it.
"""

from __future__ import annotations

import numpy as np
import paddle
import pytest

import paddle_quant as quant
from paddle_quant.common.errors import ConfigError
from paddle_quant.export.onnx import export_onnx
from paddle_quant.export.scale_table import SCALE_TABLE_FILENAME, read_scale_table
from paddle_quant.ptq.steps import plan_post_training

from support.inference import save_built_model


def _scalar_multiply(x, name, value):
    """Legacy ``elementwise_mul`` of ``x`` by a learnable scalar (PP-LCNetV3's learnable affine block)."""
    scale = paddle.static.create_parameter([1], "float32", name=name,
                                           default_initializer=paddle.nn.initializer.Constant(value))
    block = paddle.static.default_main_program().global_block()
    out = block.create_var(name=f"{name}.out", dtype="float32", shape=x.shape)
    block.append_op(type="elementwise_mul", inputs={"X": [x], "Y": [scale]}, outputs={"Out": [out]},
                    attrs={"axis": -1})
    return out


def _affine_net():
    """conv (+bias) -> * a -> hard_swish -> * b -> global avg pool -> conv 1x1 (+bias) -> flatten (the shape of
    PP-OCRv4 rec's last stage: the multiply after the activation keeps oneDNN from fusing it into the conv)."""
    x = paddle.static.data("x", [None, 3, 11, 11], "float32")
    scaled = _scalar_multiply(paddle.static.nn.conv2d(x, 8, 3, padding=1), "lab_a", 1.5)
    features = _scalar_multiply(paddle.nn.functional.hardswish(scaled), "lab_b", 0.8)
    pooled = paddle.nn.functional.adaptive_avg_pool2d(features, 1)
    return [x], [paddle.flatten(paddle.static.nn.conv2d(pooled, 5, 1), 1)]


def _program(folder):
    exe = paddle.static.Executor(paddle.CPUPlace())
    with paddle.static.scope_guard(paddle.static.Scope()):
        return paddle.static.load_inference_model(str(folder / "model"), exe)[0]


def _batch(seed):
    rng = np.random.default_rng(seed)
    batch = rng.standard_normal((4, 3, 11, 11)).astype(np.float32)
    batch[:, :, 2:4, 5:7] *= 6.0  # a few large pixels: the pool input's range is far beyond the pooled one's
    return batch


CALIBRATION_SEEDS = range(3)


def _quantize(model, folder, **options):
    batches = [{"x": _batch(seed)} for seed in CALIBRATION_SEEDS]
    options = {"algo": "abs_max", **options}
    quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(model), str(folder),
                     quantizable_op_type=["conv2d"], data_loader=lambda: iter(batches), show_progress=False,
                     **options)
    return folder


def _calibration_abs_max(folder, names):
    """max |value| of each tensor of ``names`` over the calibration batches, run in the fp32 model."""
    exe = paddle.static.Executor(paddle.CPUPlace())
    with paddle.static.scope_guard(paddle.static.Scope()):
        program = paddle.static.load_inference_model(str(folder / "model"), exe)[0]
        runs = [exe.run(program, feed={"x": _batch(seed)}, fetch_list=list(names)) for seed in CALIBRATION_SEEDS]
    return {name: max(float(np.abs(run[i]).max()) for run in runs) for i, name in enumerate(names)}


def _run(folder, batch):
    exe = paddle.static.Executor(paddle.CPUPlace())
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        program, _, fetches = paddle.static.load_inference_model(str(folder / "model"), exe)
        return exe.run(program, feed={"x": batch}, fetch_list=fetches)[0]


@pytest.fixture
def model(tmp_path):
    return save_built_model(tmp_path / "fp32", _affine_net)


def test_int8_ops_observes_the_weight_ops_and_the_affine_ops_folding_into_them_only(model):
    program = _program(model)
    ops = list(program.global_block().ops)
    observed = {o.var for o in plan_post_training(program, quant.PTQConfig(
        quantizable_op_type=["conv2d"], output_scales="int8_ops")).observers}
    first, second = [op for op in ops if op.type == "conv2d"]
    chain = [first.output("Output")[0]]
    for op in ops:  # conv -> bias add -> * a (then hard_swish ends the chain)
        if op.type in ("elementwise_add", "elementwise_mul") and chain[-1] in op.input_arg_names:
            chain.append(op.output("Out")[0])
        if op.type == "hard_swish":
            break
    after_second = next(op for op in ops if op.type == "elementwise_add" and second.output("Output")[0]
                        in op.input_arg_names).output("Out")[0]
    assert len(chain) == 3
    assert observed == set(chain) | {second.output("Output")[0], after_second}
    swish = next(op for op in ops if op.type == "hard_swish").output("Out")[0]
    all_observed = {o.var for o in plan_post_training(program, quant.PTQConfig(
        quantizable_op_type=["conv2d"], output_scales="all")).observers}
    assert {swish, "lab_b.out"} <= all_observed  # past the activation: not an int8 op's output
    assert not {swish, "lab_b.out"} & observed


def test_int8_ops_computes_what_none_computes_and_keeps_the_outputs_an_export_requantizes(model, tmp_path):
    options = {"deploy_backend": "onednn", "onednn_cpu": "vnni"}
    none = _quantize(model, tmp_path / "none", output_scales="none", **options)
    int8_ops = _quantize(model, tmp_path / "int8_ops", output_scales="int8_ops", **options)
    every = _quantize(model, tmp_path / "all", output_scales="all", **options)
    batch = _batch(7)
    assert np.array_equal(_run(int8_ops, batch), _run(none, batch))
    # 'all': the observer on the pool input (lab_b.out) gives the pool its own, wider scale
    assert not np.array_equal(_run(every, batch), _run(none, batch))
    result = export_onnx(int8_ops, tmp_path / "m.onnx", observers="int8_ops")
    assert len(result.observers) == 2  # the two folded conv chains


def test_a_bad_output_scales_value_is_named():
    with pytest.raises(ConfigError, match="'output_scales' got 'int8'.*allowed: 'all', 'int8_ops', 'none'"):
        quant.PTQConfig(output_scales="int8")


def _pooled_net():
    """conv (+bias) -> hard_swish -> global avg pool -> conv 1x1 (+bias) -> flatten: oneDNN quantizes the pool's
    input, which the program observes for it (passes/pool_inputs.py)."""
    x = paddle.static.data("x", [None, 3, 11, 11], "float32")
    features = paddle.nn.functional.hardswish(paddle.static.nn.conv2d(x, 8, 3, padding=1))
    pooled = paddle.nn.functional.adaptive_avg_pool2d(features, 1)
    return [x], [paddle.flatten(paddle.static.nn.conv2d(pooled, 5, 1), 1)]


def test_output_algo_calibrates_the_observed_outputs_and_leaves_every_input_scale_to_algo(tmp_path):
    model = save_built_model(tmp_path / "fp32", _pooled_net)
    pool_input = next(op for op in _program(model).global_block().ops if op.type == "hard_swish").output("Out")[0]
    options = {"deploy_backend": "onednn", "onednn_cpu": "vnni", "output_scales": "int8_ops", "algo": "avg"}
    plain = read_scale_table(_quantize(model, tmp_path / "avg", **options) / SCALE_TABLE_FILENAME).tensors
    chosen = _quantize(model, tmp_path / "abs_max", output_algo="abs_max", **options)
    table = read_scale_table(chosen / SCALE_TABLE_FILENAME).tensors
    outputs = sorted(name for name, entry in table.items() if entry.kind == "output" and name != pool_input)
    assert len(outputs) == 4 and all(table[name].algorithm == "abs_max" for name in outputs)  # 2 convs, 2 bias adds
    peaks = _calibration_abs_max(model, outputs)
    for name in outputs:
        assert table[name].scale[0] == pytest.approx(peaks[name], rel=1e-6)
        assert plain[name].algorithm == "avg" and plain[name].scale[0] < 0.99 * peaks[name]
    # the inputs keep algo: the quantized activations, and the pool input oneDNN quantizes (observed for it)
    inputs = [name for name, entry in table.items() if entry.kind == "activation"] + [pool_input]
    assert len(inputs) == 3 and all(table[name] == plain[name] for name in inputs)
    none = _quantize(model, tmp_path / "none", **{**options, "output_scales": "none"})
    batch = _batch(7)
    assert np.array_equal(_run(chosen, batch), _run(none, batch))


@pytest.mark.parametrize("options", [{"output_scales": "none"}, {"deploy_backend": "onednn"}])
def test_output_algo_without_observed_outputs_is_refused_by_name(options):
    with pytest.raises(ConfigError, match="'output_algo' got 'abs_max' but output_scales is 'none'.*allowed"):
        quant.PTQConfig(output_algo="abs_max", **options)
    with pytest.raises(ConfigError, match="'output_algo' got 'max'.*allowed: one of"):
        quant.PTQConfig(output_algo="max", output_scales="all")
