"""Post-training quantization on PP-OCR models: paddle_quant.quant_post vs PaddleSlim quant_post_static.

For each model (PP-OCRv4 rec, mobile v2 direction classifier 'cls'; see demos/ppocr.py) and each
activation algorithm this measures:

1. forward: a plain fp32 forward pass over the calibration batches with ``paddle.static.Executor``
   on the loaded legacy-IR inference Program, fresh executor, first batch included (calibration
   pays that cold start too). This is the reference for the calibration times.
2. ours / PaddleSlim: wall time of one ``paddle_quant.quant_post`` / ``paddleslim.quant.
   quant_post_static`` call (load, calibrate, insert QDQ, save) and its peak RSS:
   ``ru_maxrss`` after the call, and its increase over the process's RSS just before the call.
   Every run, forward pass and evaluation happens in its own subprocess (this script with the
   hidden ``--worker`` option), so memory figures are clean and one library's state cannot leak
   into the other's. PaddleSlim runs get a timeout (``--paddleslim-timeout``) and show "timeout".
3. accuracy: the fp32 model and both int8 outputs run with Paddle Inference (oneDNN; int8 via
   ``enable_onednn_int8``) on a fixed rendered evaluation set (``--eval-lines`` lines, seed
   ``--eval-seed``; calibration lines come from ppocr.calibration_feeds, whose seeds never meet
   the evaluation seeds). rec: exact-match % and char %; cls: accuracy %. Latency is the median
   ms of one batch of 8.

Calibration batches are rendered once by the parent process into a raw float32 file; workers
read one batch at a time from it (no mmap), so rendering cost stays out of every timing and no
worker holds more than one batch of input.

The acceptance goal printed per algorithm: ours calibration <= 2 x forward + 2 s.
``--memory-check`` also runs ours with 10 and 100 calibration batches (``--memory-algo``, hist by
default) and prints both peaks and their ratio (goal: 100-batch peak <= 1.1 x 10-batch peak).

Run from the repository root:

    PYTHONPATH=. .venv/bin/python bench/ptq_vs_paddleslim.py [--models cls,rec]
        [--algos KL,hist,mse,avg,abs_max] [--batches 10] [--batch-size 8]
        [--ops conv2d,depthwise_conv2d,mul] [--eval-lines 200] [--paddleslim-timeout 600]
        [--skip-paddleslim] [--memory-check] [--json out.json] [--workdir DIR]

PaddleSlim (optional; only needed for its columns) is called with ``data_loader=`` because its
``sample_generator=`` path fails on Paddle 3.3.1. Its KL on rec takes many minutes.
"""

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from importlib import metadata
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for _path in (str(REPO / "demos"), str(REPO)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import ppocr  # noqa: E402  (demos/ppocr.py; imports paddle lazily)

KINDS = ("cls", "rec")
ALGOS = ("KL", "hist", "mse", "emd", "avg", "abs_max", "min_max")
MODEL_FILENAME, PARAMS_FILENAME = "inference.pdmodel", "inference.pdiparams"
LATENCY_BATCH = 8


# --------------------------------------------------------------------------- arguments


def _csv(allowed=None):
    def parse(text):
        items = [item.strip() for item in text.split(",") if item.strip()]
        bad = [item for item in items if allowed is not None and item not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"{bad} not in {list(allowed)}")
        return items
    return parse


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=_csv(KINDS), default=list(KINDS), help="comma list of cls,rec")
    parser.add_argument("--algos", type=_csv(ALGOS), default=["KL", "hist", "mse", "avg", "abs_max"],
                        help=f"comma list from {','.join(ALGOS)}")
    parser.add_argument("--batches", type=int, default=10, help="calibration batches")
    parser.add_argument("--batch-size", type=int, default=8, help="images per calibration batch")
    parser.add_argument("--ops", type=_csv(), default=["conv2d", "depthwise_conv2d", "mul"],
                        help="quantizable_op_type for both libraries")
    parser.add_argument("--eval-lines", type=int, default=200, help="rendered evaluation lines")
    parser.add_argument("--eval-seed", type=int, default=0, help="evaluation render seed (< ppocr base)")
    parser.add_argument("--calib-seed", type=int, default=0, help="seed given to ppocr.calibration_feeds")
    parser.add_argument("--paddleslim-timeout", type=float, default=600.0,
                        help="seconds per PaddleSlim worker process (imports included)")
    parser.add_argument("--skip-paddleslim", action="store_true", help="run paddle_quant only")
    parser.add_argument("--output-scales", metavar="VALUE",
                        help="pass output_scales=VALUE to quant_post (default: the library's default; "
                        "PaddleSlim always emits output scales)")
    parser.add_argument("--memory-check", action="store_true",
                        help="also run ours with --memory-batches calibration batches and compare peak RSS")
    parser.add_argument("--memory-batches", type=_csv(), default=["10", "100"], help="two batch counts")
    parser.add_argument("--memory-algo", choices=ALGOS, default="hist")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--workdir", type=Path, help="keep data, models and logs here (default: a temp dir)")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is None:
        if not 0 <= args.eval_seed < ppocr.CALIBRATION_SEED_BASE:
            parser.error(f"--eval-seed must be in [0, {ppocr.CALIBRATION_SEED_BASE})")
        if args.batches < 1 or args.batch_size < 1 or args.eval_lines < 1:
            parser.error("--batches, --batch-size and --eval-lines must be >= 1")
        try:
            args.memory_batches = [int(n) for n in args.memory_batches]
        except ValueError:
            parser.error("--memory-batches takes integers")
        if len(args.memory_batches) != 2 or min(args.memory_batches) < 1:
            parser.error("--memory-batches takes two counts >= 1, e.g. 10,100")
    return args


# --------------------------------------------------------------------------- calibration data


def write_calibration_file(kind, n_batches, batch_size, seed, path):
    """Render ppocr.calibration_feeds(kind, ...) into a raw float32 file; return (feed name, batch shape)."""
    name, shape = None, None
    with open(path, "wb") as handle:
        for feed in ppocr.calibration_feeds(kind, n_batches, batch_size, seed):
            (name, batch), = feed.items()
            shape = list(batch.shape)
            np.ascontiguousarray(batch, dtype=np.float32).tofile(handle)
    return name, shape


def make_loader(data):
    """A generator function over the first data['batches'] feed dicts of a calibration file.

    PaddleSlim requires a plain function (it calls it once per pass, twice for KL/hist); each batch
    is read with np.fromfile at its offset, so only one batch is in memory at a time.
    """
    path, name, shape, n_batches = data["path"], data["name"], tuple(data["shape"]), data["batches"]
    count = int(np.prod(shape))

    def loader():
        for index in range(n_batches):
            batch = np.fromfile(path, dtype=np.float32, count=count, offset=index * count * 4)
            yield {name: batch.reshape(shape)}

    return loader


# --------------------------------------------------------------------------- worker side


def _rss_mb():
    """Current resident set size of this process in MiB (VmRSS)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("VmRSS not found in /proc/self/status")


def _peak_mb():
    """Peak resident set size of this process so far in MiB (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _measured(call):
    """Run call(); return its wall seconds and RSS figures around it."""
    rss_before, peak_before = _rss_mb(), _peak_mb()
    start = time.perf_counter()
    value = call()
    seconds = time.perf_counter() - start
    peak = _peak_mb()
    return value, {"seconds": seconds, "rss_before_mb": rss_before, "peak_before_mb": peak_before,
                   "peak_mb": peak, "increase_mb": peak - rss_before}


def task_forward(spec):
    """Time two plain fp32 passes over the calibration batches with a legacy-IR Executor (model loaded).

    The first (cold) pass is the reference; its RSS figures are measured from after the model load.
    """
    import paddle

    loader = make_loader(spec["data"])
    with paddle.pir_utils.OldIrGuard():
        paddle.enable_static()
        exe = paddle.static.Executor(paddle.CPUPlace())
        scope = paddle.static.Scope()
        with paddle.static.scope_guard(scope):
            program, _, fetches = paddle.static.load_inference_model(
                str(Path(spec["model_dir"]) / Path(MODEL_FILENAME).stem), exe)

            def one_pass():
                for feed in loader():
                    exe.run(program, feed=feed, fetch_list=fetches)

            _, cold = _measured(one_pass)  # fresh executor: the cold start calibration pays too
            _, warm = _measured(one_pass)
    return {**cold, "warm_seconds": warm["seconds"], "batches": spec["data"]["batches"]}


def task_ours(spec):
    """One paddle_quant.quant_post run, timed and RSS-measured."""
    import paddle

    import paddle_quant

    exe = paddle.static.Executor(paddle.CPUPlace())
    loader = make_loader(spec["data"])

    options = {} if spec["output_scales"] is None else {"output_scales": spec["output_scales"]}

    def call():
        return paddle_quant.quant_post(
            exe, spec["model_dir"], spec["output"], data_loader=loader, model_filename=MODEL_FILENAME,
            params_filename=PARAMS_FILENAME, batch_nums=spec["data"]["batches"], algo=spec["algo"],
            quantizable_op_type=spec["ops"], onnx_format=True, show_progress=False, **options)

    result, figures = _measured(call)
    return {**figures, "output_scales": _output_scales_used(spec["output_scales"]), "batches": result.batches,
            "quantized_tensors": len(result.quantized_tensors), "output": str(result.model_file.parent)}


def _output_scales_used(given):
    """The output_scales value a quant_post run used: the one given, else PTQConfig's default (None if none)."""
    if given is not None:
        return given
    from paddle_quant.ptq.config import PTQConfig

    field = PTQConfig.model_fields.get("output_scales")
    return None if field is None else field.default


def task_paddleslim(spec):
    """One paddleslim.quant.quant_post_static run, timed and RSS-measured."""
    import paddle
    from paddleslim.quant import quant_post_static

    loader = make_loader(spec["data"])
    with paddle.pir_utils.OldIrGuard():
        paddle.enable_static()
        exe = paddle.static.Executor(paddle.CPUPlace())

        def call():
            quant_post_static(
                exe, spec["model_dir"], spec["output"], data_loader=loader, model_filename=MODEL_FILENAME,
                params_filename=PARAMS_FILENAME, batch_nums=spec["data"]["batches"], algo=spec["algo"],
                onnx_format=True, quantizable_op_type=list(spec["ops"]))

        _, figures = _measured(call)
    return {**figures, "output": spec["output"]}


def eval_set(kind, n_lines, seed):
    """The fixed evaluation set: (images, labels) for rec or cls."""
    if kind == "rec":
        images, labels = zip(*ppocr.render_lines(n_lines, seed=seed))
        return list(images), list(labels)
    return ppocr.cls_dataset(n_lines, seed)


def task_eval(spec):
    """Accuracy and batch-8 latency of one model with Paddle Inference (oneDNN, int8 or fp32)."""
    images, labels = eval_set(spec["kind"], spec["eval_lines"], spec["eval_seed"])
    evaluate = ppocr.evaluate_rec if spec["kind"] == "rec" else ppocr.evaluate_cls
    return evaluate(spec["model"], images, labels, int8=spec["int8"], batch_size=LATENCY_BATCH)


TASKS = {"forward": task_forward, "ours": task_ours, "paddleslim": task_paddleslim, "eval": task_eval}


def worker_main(spec_path):
    """Run the task of a spec file and write {'status': 'ok', ...} or {'status': 'failed', ...}."""
    spec = json.loads(Path(spec_path).read_text())
    try:
        result = {"status": "ok", **TASKS[spec["task"]](spec)}
    except Exception as exc:  # reported in the table; the traceback stays in the log
        traceback.print_exc()
        result = {"status": "failed", "error": f"{type(exc).__name__}: {str(exc).strip()[:500]}"}
    Path(spec["result"]).write_text(json.dumps(result))


# --------------------------------------------------------------------------- parent side


class Runner:
    """Runs worker subprocesses (this script with --worker) and collects their JSON results."""

    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.count = 0

    def run(self, tag, spec, timeout=None):
        self.count += 1
        stem = self.workdir / "logs" / f"{self.count:03d}-{tag}"
        stem.parent.mkdir(parents=True, exist_ok=True)
        spec = {**spec, "result": str(stem) + ".result.json"}
        Path(str(stem) + ".spec.json").write_text(json.dumps(spec))
        log = Path(str(stem) + ".log")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), str(REPO / "demos"), env.get("PYTHONPATH")]))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(stem) + ".spec.json"]
        start = time.perf_counter()
        with open(log, "w") as handle:
            try:
                code = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env, timeout=timeout,
                                      check=False).returncode
            except subprocess.TimeoutExpired:
                return {"status": "timeout", "timeout_s": timeout, "log": str(log)}
        elapsed = time.perf_counter() - start
        result_file = Path(spec["result"])
        if result_file.is_file():
            result = json.loads(result_file.read_text())
        else:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            result = {"status": "failed", "error": f"worker exit code {code}: " + " / ".join(tail)}
        return {**result, "process_seconds": elapsed, "log": str(log)}


def _ok(result):
    return result is not None and result.get("status") == "ok"


def _note(tag, result):
    """One progress line per worker run."""
    if _ok(result):
        figures = [f"{k}={result[k]:.2f}" for k in ("seconds", "peak_mb", "increase_mb", "exact", "char",
                                                     "accuracy", "latency_ms") if k in result]
        print(f"  {tag}: ok {' '.join(figures)}", flush=True)
    else:
        print(f"  {tag}: {result.get('status')} {result.get('error', '')}", flush=True)


def bench_model(kind, args, runner, model_dir):
    """Forward, fp32 eval, then per algorithm ours and PaddleSlim runs and their int8 evals."""
    workdir = runner.workdir / kind
    workdir.mkdir(parents=True, exist_ok=True)
    data = prepare_data(kind, args.batches, args, workdir)
    print(f"[{kind}] {args.batches} calibration batches of {args.batch_size}", flush=True)
    forward = runner.run(f"{kind}-forward", {"task": "forward", "model_dir": str(model_dir), "data": data})
    _note("forward fp32", forward)
    eval_spec = {"task": "eval", "kind": kind, "eval_lines": args.eval_lines, "eval_seed": args.eval_seed}
    fp32 = runner.run(f"{kind}-eval-fp32", {**eval_spec, "model": str(model_dir), "int8": False})
    _note("eval fp32", fp32)
    rows = []
    for algo in args.algos:
        row = {"algo": algo}
        libraries = [("ours", None)] + ([] if args.skip_paddleslim else [("paddleslim", args.paddleslim_timeout)])
        for library, timeout in libraries:
            spec = {"task": library, "model_dir": str(model_dir), "output": str(workdir / f"{library}-{algo}"),
                    "data": data, "algo": algo, "ops": args.ops, "output_scales": args.output_scales}
            run = runner.run(f"{kind}-{library}-{algo}", spec, timeout=timeout)
            _note(f"{library} {algo}", run)
            row[library] = run
            if _ok(run):
                row[f"{library}_eval"] = runner.run(f"{kind}-eval-{library}-{algo}",
                                                    {**eval_spec, "model": run["output"], "int8": True})
                _note(f"eval {library} {algo} int8", row[f"{library}_eval"])
        row["goal"] = calibration_goal(forward, row["ours"])
        rows.append(row)
    return {"forward": forward, "fp32": fp32, "rows": rows, "data": data}


def prepare_data(kind, n_batches, args, workdir):
    """Render n_batches calibration batches into workdir once; return the loader description."""
    path = workdir / f"calibration-{n_batches}x{args.batch_size}-seed{args.calib_seed}.f32"
    name, shape = write_calibration_file(kind, n_batches, args.batch_size, args.calib_seed, path)
    return {"path": str(path), "name": name, "shape": shape, "batches": n_batches}


def calibration_goal(forward, ours):
    """ours seconds <= 2 x forward seconds + 2 s, or None when either run failed."""
    if not (_ok(forward) and _ok(ours)):
        return None
    limit = 2.0 * forward["seconds"] + 2.0
    return {"ours_s": ours["seconds"], "forward_s": forward["seconds"], "limit_s": limit,
            "pass": ours["seconds"] <= limit}


def memory_check(kind, args, runner, model_dir):
    """Ours with each of --memory-batches calibration batches, each in its own process; peaks and ratio."""
    workdir = runner.workdir / kind / "memory"
    workdir.mkdir(parents=True, exist_ok=True)
    few, many = args.memory_batches
    full = prepare_data(kind, max(few, many), args, workdir)
    runs = {}
    for n in (few, many):
        spec = {"task": "ours", "model_dir": str(model_dir), "output": str(workdir / f"ours-{n}"),
                "data": {**full, "batches": n}, "algo": args.memory_algo, "ops": args.ops,
                "output_scales": args.output_scales}
        runs[n] = runner.run(f"{kind}-memory-{n}", spec)
        _note(f"memory {kind} {args.memory_algo} {n} batches", runs[n])
    check = {"algo": args.memory_algo, "runs": {str(n): r for n, r in runs.items()}}
    if _ok(runs[few]) and _ok(runs[many]):
        check["ratio"] = runs[many]["peak_mb"] / runs[few]["peak_mb"]
        check["pass"] = check["ratio"] <= 1.1
    return check


# --------------------------------------------------------------------------- reporting


def _status(result):
    if result is None:
        return "skipped"
    return "ok" if _ok(result) else result.get("status", "failed")


def _num(result, key, fmt="{:.2f}"):
    return fmt.format(result[key]) if _ok(result) and key in result else _status(result)


def _rss(result):
    if not _ok(result):
        return _status(result)
    return f"{result['peak_mb']:.0f} (+{result['increase_mb']:.0f})"


def _ratio(top, bottom):
    if _ok(top) and _ok(bottom) and bottom["seconds"] > 0:
        return f"{top['seconds'] / bottom['seconds']:.2f}"
    return "-"


def _acc(result, key):
    return _num(result, key, "{:.1f}") if result is not None else "-"


def table(kind, bench, skip_paddleslim):
    """The per-model markdown table as a string."""
    forward, fp32 = bench["forward"], bench["fp32"]
    acc_key = "exact" if kind == "rec" else "accuracy"
    acc_name = "exact %" if kind == "rec" else "acc %"
    header = ["algo", "forward s", "ours s", "ours/forward", "PaddleSlim s", "PaddleSlim/ours",
              "ours peak RSS MB (+incr)", "PaddleSlim peak RSS MB (+incr)", f"fp32 {acc_name}",
              f"ours int8 {acc_name}", f"PaddleSlim int8 {acc_name}"]
    if kind == "rec":
        header.append("char % fp32 / ours / PaddleSlim")
    header.append("latency ms (batch 8) ours int8 / PaddleSlim int8 / fp32")
    lines = [" | ".join(header), " | ".join("---" for _ in header)]
    for row in bench["rows"]:
        ours, ps = row["ours"], row.get("paddleslim")
        ours_eval, ps_eval = row.get("ours_eval"), row.get("paddleslim_eval")
        if skip_paddleslim:
            ps = ps_eval = None
        elif not _ok(ps):
            ps_eval = ps  # show why there is no int8 model
        if not _ok(ours):
            ours_eval = ours
        cells = [row["algo"], _num(forward, "seconds"), _num(ours, "seconds"), _ratio(ours, forward),
                 _num(ps, "seconds") if ps is not None else "skipped", _ratio(ps, ours),
                 _rss(ours), _rss(ps) if ps is not None else "skipped",
                 _acc(fp32, acc_key), _acc(ours_eval, acc_key), _acc(ps_eval, acc_key)]
        if kind == "rec":
            cells.append(" / ".join(_acc(r, "char") for r in (fp32, ours_eval, ps_eval)))
        cells.append(" / ".join(_num(r, "latency_ms", "{:.1f}") if r is not None else "-"
                                for r in (ours_eval, ps_eval, fp32)))
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def goal_lines(bench):
    lines = []
    for row in bench["rows"]:
        goal = row["goal"]
        if goal is None:
            lines.append(f"{row['algo']}: ours calibration <= 2 x forward + 2 s: n/a (ours: {_status(row['ours'])}, "
                         f"forward: {_status(bench['forward'])})")
        else:
            lines.append(f"{row['algo']}: ours {goal['ours_s']:.2f} s <= 2 x {goal['forward_s']:.2f} s + 2 s = "
                         f"{goal['limit_s']:.2f} s: {'PASS' if goal['pass'] else 'FAIL'}")
    return lines


def memory_lines(kind, check):
    runs = check["runs"]
    parts = [f"{n} batches: peak {_rss(r)} MB" for n, r in runs.items()]
    line = f"[{kind}] memory check ({check['algo']}): " + "; ".join(parts)
    if "ratio" in check:
        (few, a), (many, b) = runs.items()
        line += (f"; ratio {many}/{few} = {b['peak_mb']:.0f} / {a['peak_mb']:.0f} = {check['ratio']:.3f} "
                 f"(goal <= 1.1): {'PASS' if check['pass'] else 'FAIL'}")
    return [line]


def _version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def failures(results):
    """'kind algo library: error' lines for every run that did not succeed."""
    lines = []
    for kind, bench in results.items():
        for tag in ("forward", "fp32"):
            if not _ok(bench[tag]):
                lines.append(f"{kind} {tag}: {_status(bench[tag])} {bench[tag].get('error', '')}")
        for row in bench["rows"]:
            for key in ("ours", "ours_eval", "paddleslim", "paddleslim_eval"):
                run = row.get(key)
                if run is not None and not _ok(run):
                    timed_out = run.get("status") == "timeout"
                    extra = f"after {run['timeout_s']:.0f} s" if timed_out else run.get("error", "")
                    lines.append(f"{kind} {row['algo']} {key}: {_status(run)} {extra} (log {run.get('log')})")
    return lines


def main(argv=None):
    args = parse_args(argv)
    if args.worker is not None:
        worker_main(args.worker)
        return 0
    started = time.perf_counter()
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    versions = {name: _version(name) for name in ("paddlepaddle", "paddleslim", "numpy")}
    print(f"command: {command}")
    print(f"cores: {cores} (usable by this process: {usable}); load average: {os.getloadavg()}")
    print(f"versions: {versions}", flush=True)
    models = ppocr.fetch_models()
    with tempfile.TemporaryDirectory(prefix="ptq-bench-") as scratch:
        workdir = args.workdir or Path(scratch)
        runner = Runner(workdir)
        results, memory = {}, {}
        for kind in args.models:
            results[kind] = bench_model(kind, args, runner, models[kind])
        if args.memory_check:
            for kind in args.models:
                memory[kind] = memory_check(kind, args, runner, models[kind])
        for kind, bench in results.items():
            scales = "library default" if args.output_scales is None else args.output_scales
            print(f"\n## {kind}: {args.batches} batches of {args.batch_size}, ops {','.join(args.ops)}, "
                  f"eval {args.eval_lines} lines (seed {args.eval_seed}), ours output_scales: {scales}\n")
            print(table(kind, bench, args.skip_paddleslim))
            forward = bench["forward"]
            if _ok(forward):
                print(f"\nfp32 forward pass: cold {forward['seconds']:.2f} s, warm {forward['warm_seconds']:.2f} s, "
                      f"peak RSS {_rss(forward)} MB (increase over the loaded model)")
            print()
            print("\n".join(goal_lines(bench)))
        for kind, check in memory.items():
            print()
            print("\n".join(memory_lines(kind, check)))
        problems = failures(results)
        if problems:
            print("\nproblems:\n" + "\n".join(problems))
        total = time.perf_counter() - started
        print(f"\ntotal wall time: {total:.1f} s")
        if args.json:
            report = {"command": command, "cores": cores, "usable_cores": usable, "versions": versions,
                      "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                                   if k != "worker"},
                      "models": results, "memory_check": memory, "total_seconds": total}
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2))
            print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
