"""passes/input_affine.py: parameter multiply/add chains folded into the unpadded conv that reads them.

Oracles: the Paddle Executor on the program before and after the fold (exact algebra: equal within
float rounding), the ops left in the program, and the caller's scope (parameters never overwritten).
"""

from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

import paddle_quant as quant
from paddle_quant.passes.input_affine import fold_input_affine

from support.inference import save_built_model


def _elementwise(op_type, x, y, name):
    block = paddle.static.default_main_program().global_block()
    out = block.create_var(name=name, dtype="float32", shape=max(x.shape, y.shape, key=len))  # the tensor's
    block.append_op(type=op_type, inputs={"X": [x], "Y": [y]}, outputs={"Out": [out]}, attrs={"axis": -1})
    return out


def _net(padding=0, second_reader=False, add_first=False):
    """conv -> hard_swish -> a * h + b (a, b of shape [1], a negative; ``add_first``: a * (h + b)) -> conv kxk
    (+bias) -> flatten; with ``second_reader`` the affine output is also added to the output."""
    x = paddle.static.data("x", [None, 3, 9, 9], "float32")
    h = F.hardswish(paddle.static.nn.conv2d(x, 8, 3, padding=1))
    constant = paddle.nn.initializer.Constant
    a = paddle.static.create_parameter([1], "float32", name="lab_a", default_initializer=constant(-1.5))
    b = paddle.static.create_parameter([1], "float32", name="lab_b", default_initializer=constant(0.7))
    if add_first:
        shifted = _elementwise("elementwise_mul", a, _elementwise("elementwise_add", h, b, "added"), "scaled")
    else:
        shifted = _elementwise("elementwise_add", _elementwise("elementwise_mul", a, h, "scaled"), b, "shifted")
    out = paddle.static.nn.conv2d(shifted, 8, 1 + 2 * padding, padding=padding)
    if second_reader:
        out = out + shifted
    return [x], [paddle.flatten(out, 1)]


def _load(folder):
    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        program, feeds, fetches = paddle.static.load_inference_model(str(folder / "model"), exe)
    return program, scope, fetches


def _run(program, scope, fetches, batch):
    with paddle.static.scope_guard(scope):
        return paddle.static.Executor(paddle.CPUPlace()).run(program, feed={"x": batch}, fetch_list=fetches)[0]


@pytest.mark.parametrize("add_first", [False, True])
def test_the_chain_folds_into_the_unpadded_conv_exactly_and_leaves_the_scope_alone(tmp_path, rng, add_first):
    program, scope, fetches = _load(save_built_model(tmp_path / "m", lambda: _net(add_first=add_first)))
    batch = rng.normal(0, 1, (4, 3, 9, 9)).astype("float32")
    before = _run(program, scope, fetches, batch)
    weights = {name: np.array(scope.find_var(name).get_tensor()) for name in ("lab_a", "conv2d_1.w_0", "conv2d_1.b_0")}
    folds = fold_input_affine(program, scope, paddle.CPUPlace())
    assert len(folds) == 1 and sorted(folds[0].removed) == ["elementwise_add", "elementwise_mul"]
    ops = program.global_block().ops
    assert not any(op.type in ("elementwise_mul",) for op in ops)
    second = [op for op in ops if op.type == "conv2d"][1]
    swish = next(op for op in ops if op.type == "hard_swish").output("Out")[0]
    assert second.input("Input") == [swish]
    np.testing.assert_allclose(_run(program, scope, fetches, batch), before, rtol=1e-5,
                               atol=1e-5 * np.abs(before).max())
    for name, value in weights.items():
        np.testing.assert_array_equal(np.array(scope.find_var(name).get_tensor()), value)


@pytest.mark.parametrize("options", [{"padding": 1}, {"second_reader": True}])
def test_a_padded_conv_or_a_shared_affine_output_is_left_alone(tmp_path, options):
    program, scope, _ = _load(save_built_model(tmp_path / "m", lambda: _net(**options)))
    count = len(program.global_block().ops)
    assert fold_input_affine(program, scope, paddle.CPUPlace()) == []
    assert len(program.global_block().ops) == count


def test_quant_post_quantizes_the_activation_the_folded_conv_reads(tmp_path, rng):
    model = save_built_model(tmp_path / "m", _net)
    batches = [{"x": rng.normal(0, 1, (4, 3, 9, 9)).astype("float32")} for _ in range(2)]
    quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(model), str(tmp_path / "q"), algo="abs_max",
                     quantizable_op_type=["conv2d"], data_loader=lambda: iter(batches), show_progress=False,
                     fold_input_affine=True)
    program, _, _ = _load(tmp_path / "q")
    ops = program.global_block().ops
    quantized = {op.input("X")[0] for op in ops if op.type == "quantize_linear"}
    swish = next(op for op in ops if op.type == "hard_swish").output("Out")[0]
    assert swish in quantized and "shifted" not in quantized
    assert not any(op.type == "elementwise_mul" for op in ops)


def test_the_fp32_onnx_export_folds_the_chain_on_request_and_computes_the_same(tmp_path, rng):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from paddle_quant.export.onnx import export_float_onnx

    folder = save_built_model(tmp_path / "m", _net)
    program, scope, fetches = _load(folder)
    batch = rng.normal(0, 1, (4, 3, 9, 9)).astype("float32")
    expected = _run(program, scope, fetches, batch)
    for fold, elementwise in ((False, 2), (True, 0)):
        path = export_float_onnx(folder, tmp_path / f"fold_{fold}.onnx", fold_input_affine=fold).path
        nodes = [node.op_type for node in onnx.load(str(path)).graph.node]
        assert sum(kind in ("Mul", "Add") for kind in nodes) == elementwise  # the convs' bias adds fold into them
        got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": batch})[0]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    with pytest.raises(quant.ConfigError, match="fold_input_affine must be True or False, got 'yes'"):
        export_float_onnx(folder, tmp_path / "bad.onnx", fold_input_affine="yes")
