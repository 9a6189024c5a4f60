"""Does oneDNN's int8 convolution compute what the QDQ simulation computes on this CPU?

One 3x3 convolution (16 -> 32 channels, no bias, standard-normal input, so a signed int8 input),
quantized by ``quant_post`` (abs_max, per-channel weights, no output scales), run on Paddle
Inference oneDNN int8 and in the Executor (the simulation). It prints whether this CPU has an int8
dot-product instruction (:func:`paddle_quant.deploy.cpu.int8_dot_product`) and the largest
deviation of oneDNN's output from the simulation, and from two integer models of what a CPU
without VNNI might do (weights rounded to even integers, i.e. oneDNN's ``sa0.5`` weight reorder,
ties to even or away from zero), in steps of ``max|y| / 127``.

    python bench/onednn_isa.py [--seed 0] [--batches 4]

Run with ``ONEDNN_VERBOSE=1`` to see the kernel (``jit_uni_int8:avx2`` without VNNI) and the
weight reorder (``wei:...:sa0.5``). Measured on an AMD EPYC with AVX2 only (seed 0): 2.21 steps from
the simulation, 2.62 / 4.22 from the two 7-bit models: neither model explains oneDNN's arithmetic
there. What does (docs/deploy.md, "CPUs without VNNI"; paddle_quant/ptq/onednn_cpu.py): Paddle derives
the weight scale from each channel's largest weight and oneDNN halves ``q`` with float rounding at the
ties; the last line quantizes the same conv with ``deploy_backend="onednn", onednn_cpu="avx2"`` (even
weights, each channel's +-127 kept) and prints oneDNN against that model's simulation: 0.27 steps.
"""

import argparse
import os
import tempfile

import numpy as np
import paddle
import paddle.nn.functional as F

import paddle_quant as quant
from paddle_quant.deploy.cpu import int8_dot_product
from paddle_quant.deploy.runtimes import make_runner


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="input and weight seed")
    parser.add_argument("--batches", type=int, default=4, help="calibration batches of 4")
    return parser.parse_args(argv)


def build_conv(folder, seed):
    """An fp32 inference model of one conv, saved to folder."""
    paddle.seed(seed)
    with paddle.pir_utils.OldIrGuard():
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            x = paddle.static.data("x", [-1, 16, 8, 8], "float32")
            y = paddle.static.nn.conv2d(x, 32, 3, bias_attr=False)
        exe = paddle.static.Executor(paddle.CPUPlace())
        exe.run(startup)
        paddle.static.save_inference_model(os.path.join(folder, "model"), [x], [y], exe, program=main)


def integer_conv(q_x, q_w):
    """``conv2d`` of integer-valued arrays in float64 (exact for these sizes)."""
    paddle.disable_static()
    out = F.conv2d(paddle.to_tensor(q_x.astype("float64")), paddle.to_tensor(q_w.astype("float64"))).numpy()
    paddle.enable_static()
    return out


def main(argv=None):
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    paddle.enable_static()
    folder = tempfile.mkdtemp(prefix="onednn_isa_")
    build_conv(os.path.join(folder, "fp32"), args.seed)
    feeds = [{"x": rng.standard_normal((4, 16, 8, 8)).astype("float32")} for _ in range(args.batches)]
    result = quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), os.path.join(folder, "fp32"),
                              os.path.join(folder, "int8"), data_loader=lambda: feeds, algo="abs_max",
                              quantizable_op_type=["conv2d"], output_scales="none")
    x = feeds[0]["x"]
    simulated = make_runner("executor", result.model_file, result.params_file).run({"x": x})[0]
    deployed = make_runner("onednn", result.model_file, result.params_file).run({"x": x})[0]
    table = quant_scales(result)
    q_x = np.clip(np.rint(x.astype(np.float64) * 127 / table["x"]), -128, 127)
    w = table["w"]
    step = table["x"] / 127 * table["w_scale"].reshape(1, -1, 1, 1) / 127
    out_step = np.abs(simulated).max() / 127
    print(f"int8 dot-product instruction (VNNI/AMX): {int8_dot_product()}")
    candidates = {"simulation (Executor)": simulated,
                  "7-bit weights, ties to even": integer_conv(q_x, 2 * np.rint(w / 2)) * step,
                  "7-bit weights, ties away": integer_conv(q_x, 2 * np.trunc(w / 2 + np.sign(w) * 0.5)) * step}
    for name, reference in candidates.items():
        print(f"oneDNN int8 vs {name}: max {np.abs(deployed - reference).max() / out_step:.2f} output steps")
    half_scale = quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), os.path.join(folder, "fp32"),
                                  os.path.join(folder, "int8_avx2"), data_loader=lambda: feeds, algo="abs_max",
                                  quantizable_op_type=["conv2d"], output_scales="none", deploy_backend="onednn",
                                  onednn_cpu="avx2")
    states = make_runner("executor", half_scale.model_file, half_scale.params_file).run({"x": x})[0]
    runs = make_runner("onednn", half_scale.model_file, half_scale.params_file).run({"x": x})[0]
    print(f"onednn_cpu='avx2' model (even weights, each channel's +-127 kept): oneDNN int8 vs its simulation: "
          f"max {np.abs(runs - states).max() / (np.abs(states).max() / 127):.2f} output steps")


def quant_scales(result):
    """The input scale, the int8 weight and its per-channel scales of the one quantized conv."""
    from paddle_quant.common.model_files import load_inference_program
    from paddle_quant.common.program import legacy_ir, read_tensor

    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    with legacy_ir(), paddle.static.scope_guard(scope):
        program, _, _ = load_inference_program(exe, scope, result.model_file, result.params_file)
        ops = program.global_block().ops
        x_quant = next(op for op in ops if op.type == "quantize_linear" and op.input("X") == ["x"])
        w_dequant = next(op for op in ops if op.type == "dequantize_linear" and "w_0" in op.input("X")[0])
        return {"x": float(read_tensor(scope, x_quant.input("Scale")[0])[0]),
                "w": read_tensor(scope, w_dequant.input("X")[0]).astype(np.float64),
                "w_scale": read_tensor(scope, w_dequant.input("Scale")[0]).astype(np.float64)}


if __name__ == "__main__":
    main()
