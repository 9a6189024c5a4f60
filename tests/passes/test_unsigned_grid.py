"""passes/unsigned_grid.py: the tensors oneDNN stores u8 are rounded on its 255-level grid in the program.

Oracles: Paddle 3.3.1's compute_propagate_scales_onednn_pass / cpu_quantize_pass rules (a relu output with a
scale, a relu6 fused into the conv before it, scale-preserving ops and concats of such tensors), the saved
program's attributes, Paddle Inference oneDNN int8 against the Executor (tests/ptq/test_onednn_cpu.py), and
onnxruntime against the Executor for the ONNX export.
"""

from __future__ import annotations

import numpy as np
import paddle
import pytest

import paddle_quant as quant
from paddle_quant.common.model_files import load_inference_program
from paddle_quant.common.program import legacy_ir
from paddle_quant.export.onnx_requantize import default_weight_type
from paddle_quant.passes.unsigned_grid import UNSIGNED_QMAX, unsigned_tensors

from support.inference import save_built_model

F = paddle.nn.functional


def _conv(x, channels, size=3, **options):
    return paddle.static.nn.conv2d(x, channels, size, padding=size // 2, **options)


def _quantize(tmp_path, build, *, op_types=("conv2d",), backend="onednn", **options):
    paddle.seed(0)
    model = save_built_model(tmp_path / "fp32", build)
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((4, 8, 8, 8)).astype("float32")} for _ in range(2)]
    return quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(model), str(tmp_path / "int8"),
                            data_loader=lambda: feeds, algo="abs_max", quantizable_op_type=list(op_types),
                            deploy_backend=backend, **({"onednn_cpu": "vnni"} if backend else {}), **options), feeds


def _grids(result):
    """{quantized tensor: qmax of its quantize_linear} of the saved program."""
    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    with legacy_ir():
        program, _, _ = load_inference_program(exe, scope, result.model_file, result.params_file)
    block = program.global_block()
    grids = {op.input("X")[0]: int(op.attr("qmax")) for op in block.ops if op.type == "quantize_linear"}
    dequantized = {op.output("Y")[0]: int(op.attr("qmax")) for op in block.ops if op.type == "quantize_linear"}
    for op in block.ops:  # each pair rounds on one grid
        if op.type == "dequantize_linear" and op.input("X")[0] in dequantized:
            assert int(op.attr("qmax")) == dequantized[op.input("X")[0]]
    return grids, block


def _x():
    return paddle.static.data("x", [-1, 8, 8, 8], "float32")


def test_relu_outputs_round_on_the_u8_grid_and_other_tensors_on_int8s(tmp_path):
    def build():
        x = _x()
        y = F.relu(_conv(x, 8))
        return [x], [_conv(y, 8) + _conv(F.hardswish(_conv(x, 8)), 8)]
    result, _ = _quantize(tmp_path, build)
    grids, block = _grids(result)
    relu_out = next(op.output("Out")[0] for op in block.ops if op.type == "relu")
    assert grids.pop(relu_out) == UNSIGNED_QMAX
    assert set(grids.values()) == {127}  # the input and the hard_swish output stay signed


def test_relu6_is_unsigned_only_where_oneDNN_fuses_it_into_a_conv(tmp_path):
    def build():
        x = _x()
        fused = F.relu6(_conv(x, 8))                 # conv + bias + relu6: one fused_conv2d
        alone = F.relu6(paddle.scale(x, 2.0))       # a relu6 op of its own: signed
        return [x], [_conv(fused, 8) + _conv(alone, 8)]
    result, _ = _quantize(tmp_path, build)
    grids, block = _grids(result)
    relu6 = [op.output("Out")[0] for op in block.ops if op.type == "relu6"]
    assert [grids[name] for name in relu6] == [UNSIGNED_QMAX, 127]


def test_the_mark_follows_scale_preserving_ops_and_concats_of_marked_tensors_only(tmp_path):
    def build():
        x = _x()
        a, b = F.relu(_conv(x, 8)), F.relu(_conv(x, 8))
        pooled = F.max_pool2d(a, 2)
        both = paddle.concat([a, b], axis=1)
        mixed = paddle.concat([a, F.hardswish(_conv(x, 8))], axis=1)
        return [x], [_conv(pooled, 8), _conv(both, 8), _conv(mixed, 8)]
    result, _ = _quantize(tmp_path, build, op_types=("conv2d", "pool2d", "concat"))
    grids, block = _grids(result)
    writer = {name: op.type for op in block.ops for name in op.output_arg_names}
    marked = {name for name, qmax in grids.items() if qmax == UNSIGNED_QMAX}
    concats = [op.output("Out")[0] for op in block.ops if op.type == "concat"]
    pool = next(op.output("Out")[0] for op in block.ops if op.type == "pool2d")
    assert pool in marked and concats[0] in marked and concats[1] not in marked
    assert {writer[name] for name in marked} == {"relu", "pool2d", "concat"}


def test_a_pool_of_a_relu_output_without_a_scale_stays_signed():
    """oneDNN marks a relu output only when it has a scale; a pool then hands on nothing (rule, on a program)."""
    with legacy_ir():
        main = paddle.static.Program()
        with paddle.static.program_guard(main, paddle.static.Program()):
            x = _x()
            pooled = F.max_pool2d(F.relu(x), 2)
        block = main.global_block()
        relu_out = next(op.output("Out")[0] for op in block.ops if op.type == "relu")
        assert unsigned_tensors(block, scaled={pooled.name}) == []
        assert unsigned_tensors(block, scaled={pooled.name, relu_out}) == [relu_out, pooled.name]


def test_without_the_onednn_backend_the_program_is_paddleslims(tmp_path):
    def build():
        x = _x()
        return [x], [_conv(F.relu(_conv(x, 8)), 8)]
    result, _ = _quantize(tmp_path, build, backend=None)
    grids, _ = _grids(result)
    assert set(grids.values()) == {127}


@pytest.mark.parametrize("fold_conv", [False, True])
def test_onnx_export_stores_the_u8_grid_as_uint8_and_runs_as_simulated(tmp_path, fold_conv):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")

    def build():
        x = _x()
        return [x], [_conv(F.relu(_conv(x, 8)), 8)]
    result, feeds = _quantize(tmp_path, build)
    grids, block = _grids(result)
    relu_out = next(op.output("Out")[0] for op in block.ops if op.type == "relu")
    # int8 weights beside the u8 activations take onnxruntime's u8s8 kernels, whose 16-bit pair sums saturate on
    # a CPU without VNNI (docs/deploy_onnx.md): uint8 weights (u8u8) there, as default_weight_type() picks
    path = quant.export_onnx(result.model_file.parent, tmp_path / "model.onnx", fold_conv=fold_conv,
                             weight_type=default_weight_type()).path
    graph = onnx.load(str(path)).graph
    initializers = {i.name: i for i in graph.initializer}
    quantizers = [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == relu_out]
    assert len(quantizers) == 1
    zero_point = onnx.numpy_helper.to_array(initializers[quantizers[0].input[2]])
    assert zero_point.dtype == np.uint8 and zero_point.item() == 0
    report = quant.verify(result.model_file.parent, runtime="onnxruntime", runtime_model=path, inputs=feeds[:1],
                          repeats=1)
    assert report.outputs[0].max_steps <= 1.0


def test_onnx_export_warns_where_u8_beside_int8_weights_would_saturate(tmp_path, monkeypatch, caplog):
    pytest.importorskip("onnx")
    import paddle_quant.deploy.cpu as cpu

    def build():
        x = _x()
        return [x], [_conv(F.relu(_conv(x, 8)), 8)]
    result, _ = _quantize(tmp_path, build)
    for has_vnni, weight_type, warned in ((False, "int8", True), (False, "uint8", False), (True, "int8", False)):
        monkeypatch.setattr(cpu, "int8_dot_product", lambda has=has_vnni: has)
        caplog.clear()
        with caplog.at_level("WARNING", logger="paddle_quant"):
            quant.export_onnx(result.model_file.parent, tmp_path / f"{has_vnni}_{weight_type}.onnx",
                              weight_type=weight_type)
        assert any("u8s8" in r.getMessage() for r in caplog.records) == warned, (has_vnni, weight_type)


def test_an_average_pool_of_a_relu_output_reads_it_on_the_u8_grid(tmp_path):
    """A squeeze-and-excite pool of a relu output: the pool's own input pair (passes/pool_inputs.py) reads the
    u8 data oneDNN pools, so it rounds on the same grid as the relu output's pair (PP-OCR cls's first block)."""
    def build():
        x = _x()
        features = F.relu(_conv(x, 8))
        gate = F.hardsigmoid(_conv(F.relu(_conv(F.adaptive_avg_pool2d(features, 1), 4, size=1)), 8, size=1))
        return [x], [_conv(features * gate, 8)]
    result, feeds = _quantize(tmp_path, build)
    _grids(result)  # each pair on one grid
    block = _grids(result)[1]
    pool = next(op for op in block.ops if op.type == "pool2d")
    pool_pair = next(op for op in block.ops if op.type == "dequantize_linear" and op.output("Y") == pool.input("X"))
    assert int(pool_pair.attr("qmax")) == UNSIGNED_QMAX
    report = quant.verify(str(result.model_file.parent), runtime="onednn", inputs=feeds)
    if report.cpu_int8_dot_product:
        assert report.outputs[0].max_steps <= 0.1, report  # 1.0 with the pool's pair on the 127 grid: checked
