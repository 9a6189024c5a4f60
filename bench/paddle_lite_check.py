"""Paddle-Lite end to end: opt to .nb, run with the x86 kernels, compare with Paddle Inference.

Paddle-Lite 2.13rc0 has wheels for Python <= 3.9 only, so this script makes a Python 3.9 virtual
environment under --cache-dir (once: ``pip install paddlelite==2.13rc0 "numpy<2"``), converts the
models with ``paddle_quant.export.paddle_lite.export_paddle_lite`` and runs every ``.nb`` in that
environment with ``paddlelite.lite.MobileConfig`` / ``create_paddle_predictor`` (x86 kernels).

Models (--models):

* digits: the demos/qat_digits.py CNN trained in fp32 on scikit-learn's digits; its PTQ output
  (quant_post, QDQ format) and QAT outputs (convert, QDQ and old fake-quant format).
* cls: PP-OCR's direction classifier from ``ppocr.fetch_models()`` and its quant_post output,
  evaluated on ``ppocr.cls_dataset(--cls-lines, 0)``.

For each model it prints the number of errors from the structure check, then per batch size (one
predictor per model, the data run batch by batch): the venv's numpy, rows with NaN/inf, the max
|Lite - reference| where the reference is Paddle Inference with IR passes off (for int8 models
that is the fake-quant simulation the model was calibrated for), argmax agreement with the fp32
model and top-1 accuracy.

--check-vs-lite breaks copies of the digits QAT models in the ways the structure check looks for
and shows, next to the check's error count, what paddle_lite_opt and the Lite x86 run do with them.

--cls-layers quantizes PP-OCR cls one conv2d at a time (all others and their inputs left in float)
and compares Lite with Paddle for each, to locate the layers Lite gets wrong.

--repro runs the minimal reproductions of the Paddle-Lite x86 defects (one quantized conv2d, fc or
depthwise_conv2d), each made with Paddle's own PostTrainingQuantization so paddle_quant plays no
part, and compares Lite's output with numpy models of exact int8 arithmetic and of u8*s8
multiply-adds that saturate pairs of products to int16.

    python bench/paddle_lite_check.py [--cache-dir ~/.cache/paddle_quant/paddle-lite-2.13rc0]
        [--python39 python3.9] [--numpy "numpy<2"] [--models digits,cls] [--batch-sizes 1,8,64]
        [--cls-lines 64] [--bits 8] [--check-vs-lite] [--cls-layers] [--repro] [--out out/paddle_lite_check]
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import paddle

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "demos")]

import paddle_quant as quant  # noqa: E402
from paddle_quant.common.errors import ExportError  # noqa: E402
from paddle_quant.export.paddle_lite import check_paddle_lite_structure, export_paddle_lite  # noqa: E402
from _table import print_table  # noqa: E402  (demos/_table.py)

LITE_SPEC = "paddlelite==2.13rc0"

RUNNER = textwrap.dedent('''\
    """Run a .nb with Paddle-Lite (x86 kernels) batch by batch; save the outputs; report numpy's version."""
    import json, sys
    import numpy as np
    from paddlelite.lite import MobileConfig, create_paddle_predictor
    nb, x_path, out_path, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    x = np.load(x_path)
    config = MobileConfig()
    config.set_model_from_file(nb)
    predictor = create_paddle_predictor(config)
    outputs = []
    for start in range(0, len(x), batch):
        chunk = np.ascontiguousarray(x[start:start + batch])
        tensor = predictor.get_input(0)
        tensor.from_numpy(chunk)
        predictor.run()
        outputs.append(predictor.get_output(0).numpy().copy())
    np.save(out_path, np.concatenate(outputs))
    print(json.dumps({"numpy": np.__version__}))
    ''')


def parse_args(argv=None):
    default_cache = pathlib.Path(os.environ.get("PADDLE_QUANT_CACHE", "~/.cache/paddle_quant")) / "paddle-lite-2.13rc0"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=str(default_cache), help="where the Python 3.9 venv is made/reused")
    parser.add_argument("--python39", default=None, help="Python 3.9 interpreter (default: python3.9 on PATH)")
    parser.add_argument("--numpy", default="numpy<2", help="numpy requirement for the venv ('numpy<2' needed)")
    parser.add_argument("--models", default="digits", help="comma list of: digits, cls")
    parser.add_argument("--batch-sizes", default="1,8,64", help="comma list of Lite batch sizes")
    parser.add_argument("--cls-lines", type=int, default=64, help="rendered lines for the cls evaluation")
    parser.add_argument("--bits", type=int, default=8, help="weight and activation bits of the quantized models")
    parser.add_argument("--check-vs-lite", action="store_true",
                        help="break the digits QAT models on purpose; compare the structure check with real Lite")
    parser.add_argument("--cls-layers", action="store_true",
                        help="PP-OCR cls with one conv2d quantized at a time (--bits), Lite vs Paddle (minutes)")
    parser.add_argument("--repro", action="store_true", help="also run the minimal x86 int8 reproductions")
    parser.add_argument("--out", default=str(ROOT / "out" / "paddle_lite_check"), help="output folder")
    return parser.parse_args(argv)


# ---------------------------------------------------------------- the Python 3.9 environment
def _python_version(python) -> tuple[int, int] | None:
    try:
        done = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True,
                              text=True, timeout=60)
    except OSError:
        return None
    return tuple(int(v) for v in done.stdout.split()) if done.returncode == 0 else None


def _pyenv_pythons() -> list[str]:
    """python3.9/3.8/3.7 interpreters that pyenv has installed, newest first."""
    try:
        done = subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=60)
    except OSError:
        return []
    versions = pathlib.Path(done.stdout.strip()) / "versions"
    found = sorted(versions.glob("3.[789].*/bin/python3"), reverse=True) if versions.is_dir() else []
    return [str(p) for p in found]


def find_python39(given=None) -> str:
    """A Python 3.7-3.9 interpreter (paddlelite 2.13rc0 has no wheels for newer ones)."""
    candidates = [given] if given else [shutil.which("python3.9"), *_pyenv_pythons()]
    for python in filter(None, candidates):
        if (version := _python_version(python)) and (3, 7) <= version <= (3, 9):
            return python
    sys.exit(f"no Python 3.7-3.9 interpreter found (tried {candidates}); pass --python39 PATH")


def ensure_venv(cache_dir: pathlib.Path, python39, numpy_spec) -> pathlib.Path:
    """The venv's bin folder, created with paddlelite and numpy on first use."""
    bin_dir = cache_dir / "bin"
    if (bin_dir / "paddle_lite_opt").exists():
        return bin_dir
    python39 = find_python39(python39)
    print(f"creating {cache_dir} with {python39}: pip install {LITE_SPEC} '{numpy_spec}'")
    subprocess.run([python39, "-m", "venv", str(cache_dir)], check=True)
    subprocess.run([str(bin_dir / "pip"), "install", "-q", LITE_SPEC, numpy_spec], check=True)
    return bin_dir


def run_lite(bin_dir, work: pathlib.Path, nb, x, batch) -> tuple[np.ndarray, dict]:
    """Outputs of ``nb`` on ``x`` run in the venv with the given batch size, and the runner's report."""
    runner, x_path, out_path = work / "_lite_runner.py", work / "_x.npy", work / "_y.npy"
    runner.write_text(RUNNER)
    np.save(x_path, x)
    done = subprocess.run([str(bin_dir / "python"), str(runner), str(nb), str(x_path), str(out_path), str(batch)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"Paddle-Lite run of {nb} failed ({done.returncode}): {done.stderr[-1500:]}")
    return np.load(out_path), json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- Paddle Inference references
def paddle_inference(model_dir: pathlib.Path, x, *, ir_optim=False) -> np.ndarray:
    """Outputs of Paddle Inference on CPU; ir_optim=False runs the program op by op (the simulation)."""
    model = next(model_dir.glob("*.pdmodel"))
    config = paddle.inference.Config(str(model), str(model.with_suffix(".pdiparams")))
    config.disable_gpu()
    config.switch_ir_optim(ir_optim)
    config.disable_glog_info()
    predictor = paddle.inference.create_predictor(config)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(x.shape))
    handle.copy_from_cpu(np.ascontiguousarray(x))
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


# ---------------------------------------------------------------- models
def digits_models(out: pathlib.Path, bits: int):
    """{name: folder} for the digits fp32 / PTQ / QAT models, and (test images, labels)."""
    import qat_digits as qd

    x_train, x_test, y_train, y_test = qd.load_data(0)
    folders = {name: out / "digits" / name for name in ("fp32", "ptq_qdq", "qat_qdq", "qat_old")}
    exe = paddle.static.Executor(paddle.CPUPlace())
    for fmt, onnx in (("qdq", True), ("old", False)):
        config = dict(qd.QUANT_CONFIG, onnx_format=onnx, weight_bits=bits, activation_bits=bits)
        with paddle.utils.unique_name.guard():
            train, test, startup, image, label, logits, loss, _ = qd.build_programs(0, lr=3e-3)
            scope = paddle.static.Scope()
            with paddle.static.scope_guard(scope):
                exe.run(startup)
                rng = np.random.default_rng(0)
                for _ in range(8):
                    for feed in qd.batches(x_train, y_train, 32, rng):
                        exe.run(train, feed=feed, fetch_list=[loss])
                if onnx:
                    qd.save_model(str(folders["fp32"]), image, logits, exe, test)
                test_q = quant.quant_aware(test, paddle.CPUPlace(), config, for_test=True)
                train_q = quant.quant_aware(train, paddle.CPUPlace(), config)
                for feed in qd.batches(x_train, y_train, 32, rng):
                    exe.run(train_q, feed=feed, fetch_list=[loss])
                qd.save_model(str(folders[f"qat_{fmt}"]), image, logits, exe,
                              quant.convert(test_q, paddle.CPUPlace(), config))
    calibration = lambda: ({"image": x_train[i * 32:(i + 1) * 32]} for i in range(4))  # noqa: E731
    quant.quant_post(exe, str(folders["fp32"]), str(folders["ptq_qdq"]), data_loader=calibration, algo="abs_max",
                     weight_bits=bits, activation_bits=bits)
    return folders, (x_test, y_test[:, 0])


def cls_models(out: pathlib.Path, lines: int, bits: int):
    """{name: folder} for PP-OCR cls fp32 and its quant_post output, and (images, labels)."""
    import ppocr

    fp32 = ppocr.fetch_models()["cls"]
    int8 = out / "cls" / "ptq_qdq"
    quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(fp32), str(int8),
                     data_loader=lambda: ppocr.calibration_feeds("cls", 4, 8, 0), algo="hist", batch_nums=4,
                     quantizable_op_type=["conv2d", "depthwise_conv2d"], output_scales="all", weight_bits=bits,
                     activation_bits=bits)
    images, labels = ppocr.cls_dataset(lines, 0)
    return {"fp32": pathlib.Path(fp32), "ptq_qdq": int8}, (ppocr.cls_batch(images), labels)


# ---------------------------------------------------------------- comparison
def compare(bin_dir, out, family, folders, data, batch_sizes):
    """Rows of the result table for one model family."""
    x, labels = data
    fp32 = paddle_inference(folders["fp32"], x)
    rows = []
    for name, folder in folders.items():
        findings = check_paddle_lite_structure(folder)
        errors = sum(f.severity == "error" for f in findings)
        reference = paddle_inference(folder, x)
        try:
            nb = export_paddle_lite(folder, out / "nb" / f"{family}_{name}_x86", valid_targets=("x86",),
                                    opt=bin_dir / "paddle_lite_opt")
        except ExportError as exc:
            first = next((line for line in str(exc).splitlines() if line.startswith("[F")), str(exc).splitlines()[-1])
            rows.append((f"{family}/{name}", str(errors), "-", "-", "-", f"opt failed: {first[-70:]}", "-", "-", "-"))
            continue
        for batch in batch_sizes:
            got, report = run_lite(bin_dir, out, nb, x, batch)
            rows.append(_row(family, name, errors, batch, got, reference, fp32, labels, report))
    return rows


def _row(family, name, errors, batch, got, reference, fp32, labels, report):
    finite = np.isfinite(got).all(axis=tuple(range(1, got.ndim)))
    deviation = np.abs(got - reference)[finite].max(initial=0.0)
    agree = 100.0 * float(np.mean(got.argmax(1) == fp32.argmax(1)))
    accuracy = 100.0 * float(np.mean(got.argmax(1) == labels))
    reference_accuracy = 100.0 * float(np.mean(reference.argmax(1) == labels))
    numpy_cell = report["numpy"] + (" (from_numpy broken)" if int(report["numpy"].split(".")[0]) >= 2 else "")
    return (f"{family}/{name}", str(errors), str(batch), numpy_cell, str(int((~finite).sum())), f"{deviation:.4g}",
            f"{agree:.1f}", f"{accuracy:.1f}", f"{reference_accuracy:.1f}")


HEADER = ("model", "structure errors", "batch", "venv numpy", "NaN/inf rows", "max |Lite - Paddle| (finite rows)",
          "argmax = fp32 (%)", "Lite acc (%)", "Paddle acc (%)")


# ---------------------------------------------------------------- minimal reproductions
TINY_SHAPES = {"conv": (1, 8, 8), "fc": (64,), "depthwise": (3, 8, 8)}


def _tiny_model(folder: pathlib.Path, kind, rng):
    """Save one conv2d (1->4, no bias), one fc (mul + bias) or one depthwise_conv2d (3 groups), seeded."""
    shape = TINY_SHAPES[kind]
    init = lambda s: paddle.ParamAttr(initializer=paddle.nn.initializer.Assign(  # noqa: E731
        rng.standard_normal(s).astype("float32")))
    with paddle.utils.unique_name.guard():
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            x = paddle.static.data("x", [None, *shape], "float32")
            if kind == "conv":
                y = paddle.static.nn.conv2d(x, 4, 3, padding=1, param_attr=init([4, 1, 3, 3]), bias_attr=False)
            elif kind == "fc":
                y = paddle.static.nn.fc(x, 10, weight_attr=init([64, 10]), bias_attr=init([10]))
            else:
                y = paddle.static.nn.conv2d(x, 3, 3, padding=1, groups=3, param_attr=init([3, 1, 3, 3]),
                                            bias_attr=False)
        exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
        with paddle.static.scope_guard(scope):
            exe.run(startup)
            paddle.static.save_inference_model(str(folder / "fp32" / "model"), [x], [y], exe, program=main)


def _paddle_ptq(folder: pathlib.Path, calibration, bits):
    """Paddle's own PostTrainingQuantization (abs_max, QDQ, ``bits``) of folder/fp32 into folder/int8."""
    from paddle.static.quantization import PostTrainingQuantization

    ptq = PostTrainingQuantization(
        executor=paddle.static.Executor(paddle.CPUPlace()), model_dir=str(folder / "fp32"),
        model_filename="model.pdmodel", params_filename="model.pdiparams",
        data_loader=lambda: iter([{"x": calibration}]), batch_nums=1, algo="abs_max", weight_bits=bits,
        activation_bits=bits, quantizable_op_type=["conv2d", "depthwise_conv2d", "mul"], onnx_format=True)
    ptq.quantize()
    ptq.save_quantized_model(str(folder / "int8"), model_filename="model.pdmodel", params_filename="model.pdiparams")
    scope, exe = paddle.static.Scope(), paddle.static.Executor(paddle.CPUPlace())
    with paddle.static.scope_guard(scope):
        program, _, _ = paddle.static.load_inference_model(str(folder / "int8" / "model"), exe)
        return {v.name: np.array(scope.find_var(v.name).get_tensor()) for v in program.list_vars()
                if v.persistable and scope.find_var(v.name) is not None and v.name not in ("feed", "fetch")}


def _int8_gemm(cols, weight, *, saturate=None):
    """cols [..., K] int8 activations times weight [K, N] int8, in int64 (exact) or as x86 u8*s8 code does it.

    ``saturate='x'`` shifts the activations to u8 (+128), ``'w'`` the weights; products of
    neighbouring k are then added in int16 with saturation (``vpmaddubsw``) before the int32 sum,
    and the shift is subtracted again.
    """
    if saturate is None:
        return cols @ weight
    u, w = (cols + 128, weight) if saturate == "x" else (cols, weight + 128)
    products = u[..., :, None] * w  # [..., K, N]
    if products.shape[-2] % 2:
        products = np.concatenate([products, np.zeros_like(products[..., :1, :])], axis=-2)
    pairs = np.clip(products[..., 0::2, :] + products[..., 1::2, :], -32768, 32767).sum(-2)
    return pairs - (128 * weight.sum(0) if saturate == "x" else 128 * cols.sum(-1)[..., None])


def _im2col(q):
    padded = np.pad(q, ((0, 0), (0, 0), (1, 1), (1, 1)))
    return np.stack([padded[:, 0, i:i + 8, j:j + 8] for i in range(3) for j in range(3)], -1)  # [N, 8, 8, 9]


def _simulate(kind, tensors, x, bits, *, saturate=None, bias=True):
    """numpy int model of the quantized conv/fc: fp32 -> int activations, integer accumulation, rescale."""
    qmax = 2 ** (bits - 1) - 1
    w_name = "conv2d_0.w_0" if kind == "conv" else "fc_0.w_0"
    weight = tensors[w_name].astype(np.int64)
    w_scale, x_scale = tensors[f"{w_name}@scale"].ravel(), float(tensors["x@scale"].ravel()[0])
    q = np.clip(np.round(x * qmax / x_scale), -qmax, qmax).astype(np.int64)
    if kind == "conv":
        acc = _int8_gemm(_im2col(q), weight.reshape(4, 9).T, saturate=saturate).transpose(0, 3, 1, 2)
        return acc * x_scale / qmax * w_scale[None, :, None, None] / qmax
    out = _int8_gemm(q, weight, saturate=saturate) * x_scale / qmax * w_scale / qmax
    return out + tensors["fc_0.b_0"] if bias else out


# What Lite's x86 int8 kernels were found to compute (see docs/deploy_paddle_lite.md).
LITE_LIKE = {"conv": ({"saturate": "x"}, "u8(x+128)*s8(w), int16 pair saturation"),
             "fc": ({"saturate": "w", "bias": False}, "s8(x)*u8(w+128), int16 pair saturation, bias dropped")}
REPRO_CASES = (("conv", 8), ("fc", 8), ("depthwise", 8))  # Paddle's own PTQ gets 7-bit outputs wrong


def repro(bin_dir, out: pathlib.Path):
    """Rows: tiny conv2d / fc / depthwise_conv2d models, fp32 and Paddle-quantized, through Lite x86."""
    rows = []
    for kind, bits in REPRO_CASES:
        rng = np.random.default_rng(0)
        folder = out / "repro" / f"{kind}_{bits}bit"
        _tiny_model(folder, kind, rng)
        tensors = _paddle_ptq(folder, rng.standard_normal((32, *TINY_SHAPES[kind])).astype("float32"), bits)
        x = np.random.default_rng(2).standard_normal((64, *TINY_SHAPES[kind])).astype("float32")
        for name in ("fp32", "int8"):
            nb = export_paddle_lite(folder / name, out / "nb" / f"repro_{kind}_{bits}_{name}",
                                    valid_targets=("x86",), opt=bin_dir / "paddle_lite_opt")
            reference = paddle_inference(folder / name, x)
            for batch in (1, 64):
                label = f"{kind} {'fp32' if name == 'fp32' else f'{bits}-bit'}"
                try:
                    got, _ = run_lite(bin_dir, out, nb, x, batch)
                except RuntimeError as exc:
                    crash = f"Lite crashed: {exc.args[0][-40:]}"
                    rows.append((label, str(batch), f"{np.abs(reference).max():.3g}", crash, "-", "-", "-", "-"))
                    continue
                rows.append(_repro_row(label, kind if name == "int8" else None, bits, batch, got, reference,
                                       tensors, x))
    return rows


def _repro_row(label, kind, bits, batch, got, reference, tensors, x):
    cells = [label, str(batch), f"{np.abs(reference).max():.3g}", f"{np.abs(got - reference).max():.3g}"]
    if kind not in LITE_LIKE:
        return tuple(cells + ["-"] * 4)
    exact = _simulate(kind, tensors, x, bits)
    options, description = LITE_LIKE[kind]
    lite_like = _simulate(kind, tensors, x, bits, **options)
    return tuple(cells + [f"{np.abs(exact - reference).max():.3g}", f"{np.abs(got - exact).max():.3g}",
                          description, f"{np.abs(got - lite_like).max():.3g}"])


REPRO_HEADER = ("model", "batch", "max |Paddle|", "max |Lite - Paddle|", "max |exact int - Paddle|",
                "max |Lite - exact int|", "int8 model of Lite", "max |Lite - that model|")


# ---------------------------------------------------------------- does the structure check predict Lite?
def _edit_copy(source: pathlib.Path, target: pathlib.Path, edit):
    """Copy a saved model, apply ``edit(program, scope)`` and save it over the copy."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    scope, exe = paddle.static.Scope(), paddle.static.Executor(paddle.CPUPlace())
    with paddle.static.scope_guard(scope):
        program, feeds, fetches = paddle.static.load_inference_model(str(target / "model"), exe)
        edit(program.global_block(), scope)
        block = program.global_block()
        paddle.static.save_inference_model(str(target / "model"), [block.var(n) for n in feeds], fetches, exe,
                                           program=program)
    return target


def _weight_dequant(block):
    return next(op for op in block.ops if op.type == "dequantize_linear" and block.var(op.input("X")[0]).persistable)


def _share_weight_scale(block, scope):
    """An activation dequantize_linear reads the weight's scale instead of its quantize_linear's."""
    act = next(op for op in block.ops
               if op.type == "dequantize_linear" and not block.var(op.input("X")[0]).persistable)
    act.desc.set_input("Scale", _weight_dequant(block).input("Scale"))


def _float_weight(block, scope):
    """The int8 weight behind a dequantize_linear stored as float32 (same values)."""
    name = _weight_dequant(block).input("X")[0]
    values = np.array(scope.find_var(name).get_tensor()).astype("float32")
    block.var(name).desc.set_dtype(paddle.base.core.VarDesc.VarType.FP32)
    scope.find_var(name).get_tensor().set(values, paddle.CPUPlace())


def _off_grid(block, scope):
    """An old-format conv weight moved off the integer grid by 0.25."""
    name = next(op for op in block.ops if op.type == "conv2d").input("Filter")[0]
    values = np.array(scope.find_var(name).get_tensor())
    scope.find_var(name).get_tensor().set(values + 0.25, paddle.CPUPlace())


BROKEN = (
    ("qat_qdq", "none (as convert saves it)", lambda block, scope: None),
    ("qat_old", "none (as convert saves it)", lambda block, scope: None),
    ("qat_qdq", "activation dequantize reads another scale", _share_weight_scale),
    ("qat_qdq", "int8 weight stored as float32", _float_weight),
    ("qat_qdq", "weight quant_axis 0 -> 1", lambda block, scope: _weight_dequant(block)._set_attr("quant_axis", 1)),
    ("qat_qdq", "quantize_linear without ZeroPoint",
     lambda block, scope: next(op for op in block.ops if op.type == "quantize_linear").desc.set_input("ZeroPoint", [])),
    ("qat_old", "conv weight off the integer grid", _off_grid),
)


def check_vs_lite(bin_dir, out: pathlib.Path, folders, x):
    """Rows: for each broken variant of the digits QAT models, the check's errors and what Lite does."""
    rows = []
    for index, (source, change, edit) in enumerate(BROKEN):
        folder = _edit_copy(folders[source], out / "broken" / f"{index}_{source}", edit)
        errors = [f for f in check_paddle_lite_structure(folder) if f.severity == "error"]
        rows.append((source, change, str(len(errors)), _lite_outcome(bin_dir, out, folder, x)))
    return rows


def _lite_outcome(bin_dir, out, folder, x) -> str:
    try:
        nb = export_paddle_lite(folder, folder / "x86", valid_targets=("x86",), opt=bin_dir / "paddle_lite_opt")
    except ExportError as exc:
        lines = str(exc).splitlines()
        first = next((line for line in lines if line.startswith("[F")), lines[0].split(": ", 1)[-1].split(";")[0])
        return f"opt fails: {first.split('] ', 1)[-1][:60]}"
    try:
        got, _ = run_lite(bin_dir, out, nb, x, 1)
    except RuntimeError as exc:
        return f"run fails: {exc.args[0][-60:].strip()}"
    try:
        reference = paddle_inference(folder, x)
    except (RuntimeError, ValueError) as exc:  # Paddle refuses some broken models too
        return f"runs; Paddle itself refuses the model: {str(exc).splitlines()[0][:50]}"
    deviation, largest = np.abs(got - reference).max(), np.abs(reference).max()
    return f"runs; max |Lite - Paddle| = {deviation:.3g} (max |Paddle| {largest:.3g})"


CHECK_HEADER = ("model", "change", "check errors", "paddle_lite_opt / Lite x86 (batch 1)")


# ---------------------------------------------------------------- PP-OCR cls, one quantized conv at a time
def cls_layers(bin_dir, out: pathlib.Path, lines: int, bits: int):
    """Rows: the cls model with only its k-th conv2d quantized (``bits``), Lite x86 vs Paddle, batch 1."""
    import ppocr

    fp32 = pathlib.Path(ppocr.fetch_models()["cls"])
    images, labels = ppocr.cls_dataset(lines, 0)
    x = ppocr.cls_batch(images)
    scope, exe = paddle.static.Scope(), paddle.static.Executor(paddle.CPUPlace())
    with paddle.static.scope_guard(scope):
        program, _, _ = paddle.static.load_inference_model(str(fp32 / "inference"), exe)
    convs = [(op.input("Filter")[0], op.input("Input")[0]) for op in program.global_block().ops
             if op.type == "conv2d"]
    shapes = {w: list(np.array(scope.find_var(w).get_tensor()).shape) for w, _ in convs}
    rows = []
    for k, (weight, source) in enumerate(convs):
        skip = [w for w, _ in convs if w != weight] + [i for _, i in convs if i != source]
        folder = out / "cls_layers" / f"conv{k}"
        quant.quant_post(exe, str(fp32), str(folder), data_loader=lambda: ppocr.calibration_feeds("cls", 2, 8, 0),
                         algo="abs_max", batch_nums=2, quantizable_op_type=["conv2d"], output_scales="none",
                         skip_tensor_list=skip, weight_bits=bits, activation_bits=bits, show_progress=False)
        nb = export_paddle_lite(folder, out / "nb" / f"cls_conv{k}", valid_targets=("x86",),
                                opt=bin_dir / "paddle_lite_opt")
        got, _ = run_lite(bin_dir, out, nb, x, 1)
        reference = paddle_inference(folder, x)
        accuracies = [f"{100 * np.mean(y.argmax(1) == labels):.1f}" for y in (got, reference)]
        rows.append((weight, str(shapes[weight]), source, f"{np.abs(got - reference).max():.3g}", *accuracies))
    return rows


LAYER_HEADER = ("quantized conv2d weight", "shape", "input", "max |Lite - Paddle| (softmax)", "Lite acc (%)",
                "Paddle acc (%)")


def main(argv=None):
    args = parse_args(argv)
    out = pathlib.Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    bin_dir = ensure_venv(pathlib.Path(args.cache_dir).expanduser(), args.python39, args.numpy)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    rows = []
    with paddle.pir_utils.OldIrGuard():
        paddle.enable_static()
        for family in [m for m in args.models.split(",") if m]:
            if family == "digits":
                folders, data = digits_models(out, args.bits)
                digits = folders, data
            else:
                folders, data = cls_models(out, args.cls_lines, args.bits)
            rows += compare(bin_dir, out, family, folders, data, batch_sizes)
        if rows:
            print_table(HEADER, rows)
        if args.check_vs_lite:
            folders, (x, _) = digits if "digits" in args.models.split(",") else digits_models(out, args.bits)
            print()
            print_table(CHECK_HEADER, check_vs_lite(bin_dir, out, folders, x[:8]))
        if args.cls_layers:
            print()
            print_table(LAYER_HEADER, cls_layers(bin_dir, out, args.cls_lines, args.bits))
        if args.repro:
            print()
            print_table(REPRO_HEADER, repro(bin_dir, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
