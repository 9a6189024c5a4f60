"""The optimized program oneDNN int8 runs, read back from Paddle Inference's dump."""

from paddle_quant.deploy.optimized import OptimizedOp, describe_ops, onednn_int8_program, ops_between


def _op(kind, inputs, outputs, int8_in=False, int8_out=False, **attrs):
    return OptimizedOp(kind, tuple(inputs), tuple(outputs), int8_in, int8_out, tuple(attrs.items()))


def test_the_digits_cnn_runs_its_convolutions_in_int8(digits_int8_model):
    ops = onednn_int8_program(digits_int8_model / "model.pdmodel", digits_int8_model / "model.pdiparams")
    types = [op.type for op in ops]
    assert types[0] == "feed" and types[-1] == "fetch" and "quantize" in types
    convs = [op for op in ops if op.type == "fused_conv2d"]
    assert convs and all(op.int8_input for op in convs)
    quantize = next(op for op in ops if op.type == "quantize")
    assert quantize.int8_output and not quantize.int8_input and dict(quantize.attrs)["Scale"] > 0
    # dequantize (if any) reads int8 and writes float
    assert all(op.int8_input and not op.int8_output for op in ops if op.type == "dequantize")


def test_int8_flows_until_an_op_forces_fp32_output():
    from paddle_quant.deploy.optimized import _ops_of

    class FakeOp:
        def __init__(self, kind, inputs, outputs, **attrs):
            self.kind, self.ins, self.outs, self.attrs = kind, inputs, outputs, attrs

        def type(self): return self.kind
        def input_arg_names(self): return self.ins
        def output_arg_names(self): return self.outs
        def attr_names(self): return list(self.attrs)
        def attr(self, name): return self.attrs[name]

    class FakeBlock:
        def __init__(self, ops): self.ops = ops
        def op_size(self): return len(self.ops)
        def op(self, i): return self.ops[i]

    ops = _ops_of(FakeBlock([
        FakeOp("feed", ["feed"], ["x"]),
        FakeOp("quantize", ["x"], ["q"], Scale=10.0),
        FakeOp("fused_conv2d", ["q", "w"], ["c"], force_fp32_output=False, Scale_out=5.0),
        FakeOp("pool2d", ["c"], ["p"]),
        FakeOp("fused_conv2d", ["p", "w2"], ["d"], force_fp32_output=True),
        FakeOp("relu", ["d"], ["r"]),
        FakeOp("fetch", ["r"], ["fetch"]),
    ]))
    flags = [(op.type, op.int8_input, op.int8_output) for op in ops]
    assert flags == [("feed", False, False), ("quantize", False, True), ("fused_conv2d", True, True),
                     ("pool2d", True, True), ("fused_conv2d", True, False), ("relu", False, False),
                     ("fetch", False, False)]


def test_ops_between_follow_the_data_from_one_tensor_to_the_other():
    ops = [_op("feed", ["feed"], ["x"]), _op("quantize", ["x"], ["q"], int8_out=True),
           _op("fused_conv2d", ["q", "w"], ["a"], True, False, fuse_activation="relu"),
           _op("side", ["x"], ["unused"]), _op("scale", ["a"], ["b"]), _op("fetch", ["b"], ["fetch"])]
    assert [op.type for op in ops_between(ops, "a", "b")] == ["scale"]
    assert [op.type for op in ops_between(ops, None, "b")] == ["quantize", "fused_conv2d", "scale"]
    text = describe_ops(ops_between(ops, None, "b"))
    assert text.startswith("quantize[fp32 in, int8 out]") and "fused_conv2d[int8 in, fp32 out, relu fused]" in text
    assert describe_ops([]) == "(no op)"
