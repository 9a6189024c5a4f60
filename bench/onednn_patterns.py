"""Does oneDNN int8 compute what the QDQ simulation computes, pattern by pattern? (issue 14, step 1)

One small fp32 network per op type and fusion pattern oneDNN's int8 passes handle (conv + activation
fusions, depthwise chains, matmul_v2 with a weight and between activations, residual adds, average
pools, concat, reshape/transpose, layer_norm -> matmul, ...), each quantized by ``quant_post`` the way
PaddleSlim's docs show (``quantizable_op_type=["conv2d", "depthwise_conv2d", "mul", "matmul_v2"]``,
``deploy_backend="onednn"``), then run on Paddle Inference oneDNN int8 and in the Executor
(``paddle_quant.verify``). Per pattern it prints the deviation in quantization steps of the output
(max |oneDNN - simulation| / (max |simulation| / 127)) and what oneDNN ran: the ops of the optimized
program (int8 in/out, fused activations, scales), read back from Paddle Inference's dump.

    python bench/onednn_patterns.py [--algo avg] [--patterns conv,depthwise,...] [--output-scales all|none]
                                    [--batches 4] [--seed 0] [--show-ops] [--onednn-cpu auto|vnni|avx2]
                                    [--json PATH]

Meaningful on a CPU with VNNI/AMX only (printed at the top): without one, oneDNN's int8 kernels differ
from the simulation for every pattern (docs/deploy.md, "CPUs without VNNI").
"""

import argparse
import json
import logging
import os
import sys
import tempfile
import warnings

import numpy as np
from paddle_quant.common.native_output import ignore_paddle_import_notes

ignore_paddle_import_notes()

import paddle  # noqa: E402
import paddle.nn.functional as F  # noqa: E402

import paddle_quant as quant  # noqa: E402
from paddle_quant.deploy.cpu import int8_dot_product  # noqa: E402
from paddle_quant.deploy.optimized import onednn_int8_program  # noqa: E402

OP_TYPES = ["conv2d", "depthwise_conv2d", "mul", "matmul_v2"]


def _conv(x, out_channels, size=3, groups=1, act=None):
    """conv2d (depthwise_conv2d when groups == channels) + bias add (axis 1), as Paddle's model zoo has them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # paddle.static.nn.conv2d is deprecated, but it builds what old models hold
        # use_cudnn=False lets Paddle emit depthwise_conv2d for groups == channels (as PP-OCR's models hold)
        return paddle.static.nn.conv2d(x, out_channels, size, padding=size // 2, groups=groups, act=act,
                                       use_cudnn=groups == 1)


def _linear(x, out_features, act=None):
    """matmul_v2 with a weight + bias add (nn.Linear; paddle.matmul does not build legacy ops in Paddle 3.3.1)."""
    y = paddle.nn.Linear(x.shape[-1], out_features)(x)
    return getattr(F, act)(y) if act else y


def _fc(x, out_features):
    """mul with a weight + bias add (the legacy fc)."""
    return paddle.static.nn.fc(x, out_features, num_flatten_dims=len(x.shape) - 1)


def _unary(op_type, x, **attrs):
    """One op ``op_type(X) -> Out`` appended directly (some paddle.* functions build no legacy op in 3.3.1)."""
    out = x.block.create_var(name=paddle.utils.unique_name.generate(op_type), dtype=x.dtype)
    x.block.append_op(type=op_type, inputs={"X": [x]}, outputs={"Out": [out]}, attrs=attrs)
    return out


def _matmul(x, y, transpose_y=False):
    """matmul_v2 of two activations, appended op by op."""
    block = x.block
    out = block.create_var(name=paddle.utils.unique_name.generate("matmul_v2"), dtype=x.dtype)
    block.append_op(type="matmul_v2", inputs={"X": [x], "Y": [y]}, outputs={"Out": [out]},
                    attrs={"trans_x": False, "trans_y": transpose_y})
    return out


# Each pattern: (input shape without batch, builder(x) -> output).
PATTERNS = {
    "conv": ((16, 12, 12), lambda x: _conv(x, 32)),
    "conv_relu": ((16, 12, 12), lambda x: _conv(x, 32, act="relu")),
    "conv_hardswish": ((16, 12, 12), lambda x: F.hardswish(_conv(x, 32))),
    "conv_swish": ((16, 12, 12), lambda x: F.swish(_conv(x, 32))),
    "conv_conv": ((16, 12, 12), lambda x: _conv(_conv(x, 32), 32)),
    "conv_relu_conv": ((16, 12, 12), lambda x: _conv(_conv(x, 32, act="relu"), 32)),
    "depthwise": ((16, 12, 12), lambda x: _conv(x, 16, groups=16)),
    "depthwise_relu": ((16, 12, 12), lambda x: _conv(x, 16, groups=16, act="relu")),
    "depthwise_hardswish": ((16, 12, 12), lambda x: F.hardswish(_conv(x, 16, groups=16))),
    "mobilenet_block": ((16, 12, 12), lambda x: _conv(F.hardswish(_conv(F.hardswish(_conv(x, 32, 1)), 32,
                                                                              groups=32)), 16, 1)),
    "residual_add": ((16, 12, 12), lambda x: _conv(x, 16) + x),
    "conv_residual_conv": ((16, 12, 12), lambda x: _conv(_conv(x, 16, act="relu") + x, 16)),
    "avg_pool": ((16, 12, 12), lambda x: _conv(F.avg_pool2d(_conv(x, 16), 2), 16)),
    "max_pool": ((16, 12, 12), lambda x: _conv(F.max_pool2d(_conv(x, 16), 2), 16)),
    "concat": ((16, 12, 12), lambda x: _conv(paddle.concat([_conv(x, 8), _conv(x, 8)], axis=1), 16)),
    "transpose_reshape_linear": ((16, 4, 8), lambda x: _linear(
        paddle.reshape(paddle.transpose(_conv(x, 16), [0, 2, 3, 1]), [-1, 32, 16]), 24)),
    "linear": ((32, 48), lambda x: _linear(x, 64)),
    "fc_mul": ((32, 48), lambda x: _fc(x, 64)),
    "linear_gelu": ((32, 48), lambda x: _unary("gelu", _linear(x, 64), approximate=False)),
    "linear_linear": ((32, 48), lambda x: _linear(_linear(x, 64, act="relu"), 32)),
    "layernorm_linear": ((32, 48), lambda x: _linear(paddle.static.nn.layer_norm(x, begin_norm_axis=2), 64)),
    "attention": ((32, 48), lambda x: _matmul(F.softmax(_matmul(_linear(x, 48), _linear(x, 48), transpose_y=True)
                                                        * 0.15), _linear(x, 48))),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", default="avg", help="quant_post algo")
    parser.add_argument("--patterns", default=",".join(PATTERNS), help="comma-separated pattern names")
    parser.add_argument("--output-scales", default=None, choices=["all", "none"],
                        help="quant_post output_scales (default: the onednn profile's)")
    parser.add_argument("--batches", type=int, default=4, help="calibration batches of 8")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show-ops", action="store_true", help="print the optimized program's ops per pattern")
    parser.add_argument("--onednn-cpu", default=None, choices=("auto", "vnni", "avx2"),
                        help="quant_post onednn_cpu (default unset: built for VNNI/AMX)")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    return parser.parse_args(argv)


def build(folder, shape, builder, seed):
    """Save the fp32 inference model of ``builder`` on an input of ``shape`` (batch dimension -1)."""
    paddle.seed(seed)
    with paddle.pir_utils.OldIrGuard():
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            x = paddle.static.data("x", [-1, *shape], "float32")
            y = builder(x)
        exe = paddle.static.Executor(paddle.CPUPlace())
        exe.run(startup)
        paddle.static.save_inference_model(os.path.join(folder, "model"), [x], [y], exe, program=main)
        return sorted({op.type for op in main.global_block().ops} - {"feed", "fetch"})


def measure(name, args, workdir):
    shape, builder = PATTERNS[name]
    rng = np.random.default_rng(args.seed)
    fp32_dir, int8_dir = os.path.join(workdir, name, "fp32"), os.path.join(workdir, name, "int8")
    fp32_ops = build(fp32_dir, shape, builder, args.seed)
    feeds = [{"x": rng.standard_normal((8, *shape)).astype("float32")} for _ in range(args.batches)]
    options = {} if args.output_scales is None else {"output_scales": args.output_scales}
    result = quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), fp32_dir, int8_dir, data_loader=lambda: feeds,
                              algo=args.algo, quantizable_op_type=OP_TYPES, deploy_backend="onednn",
                              onednn_cpu=args.onednn_cpu, **options)
    test = [{"x": rng.standard_normal((8, *shape)).astype("float32")} for _ in range(2)]
    report = quant.verify(int8_dir, runtime="onednn", inputs=test, repeats=1)
    optimized = onednn_int8_program(result.model_file, result.params_file)
    int8_ops = [op for op in optimized if op.int8_input or op.int8_output]
    deviation = report.outputs[0]
    return {"pattern": name, "fp32_ops": fp32_ops, "max_steps": deviation.max_steps, "mean_steps": deviation.mean_steps,
            "cosine": deviation.cosine, "int8_ops": [op.describe() for op in int8_ops],
            "optimized": [op.describe() for op in optimized if op.type not in ("feed", "fetch")]}


def main(argv=None):
    args = parse_args(argv)
    logging.getLogger("paddle_quant").setLevel(logging.ERROR)
    with paddle.pir_utils.OldIrGuard():  # before enable_static, so paddle.matmul & co. build legacy ops
        paddle.enable_static()
        run(args)


def run(args):
    print(f"int8 dot-product instruction (VNNI/AMX): {int8_dot_product()}; algo={args.algo}, "
          f"output_scales={args.output_scales or 'onednn default'}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="onednn_patterns_") as workdir:
        for name in args.patterns.split(","):
            try:
                row = measure(name, args, workdir)
            except Exception as exc:  # a pattern that fails to quantize or run is a finding, not the end of the run
                row = {"pattern": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
            rows.append(row)
            if "error" in row:
                print(f"{name:26s} ERROR {row['error']}")
                continue
            print(f"{name:26s} max {row['max_steps']:7.2f} steps  mean {row['mean_steps']:6.3f}  "
                  f"cos {row['cosine']:.6f}  int8 ops: {len(row['int8_ops'])}", flush=True)
            if args.show_ops:
                print("    " + " -> ".join(row["optimized"]))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(rows, file, indent=1)


if __name__ == "__main__":
    sys.exit(main())
