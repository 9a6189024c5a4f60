"""The subcommands' handlers: ``post``, ``inspect``, ``embedding``, ``analyze``, ``verify``, ``export-onnx``,
``demo``.

Each takes the parsed arguments and returns an exit code; Paddle and the workflow modules are
imported inside the handler, so ``--help`` and config errors cost no Paddle import.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

from ..common.errors import ConfigError
from .config_file import build_configs
from .config_model import RunConfig
from .flags import _overrides
from .steps import (EXIT_FAILURE, EXIT_OK, _check_input, _closest, _configs, _each_config, _feeds, _load_program,
                    _logger, _missing_module, _model_file, _reader, _say)

__all__ = []


def _accuracy_control(args: argparse.Namespace, run: RunConfig, feed_names):
    """The AccuracyControl the post flags ask for, or None without --max-drop."""
    given = {"--metric": args.metric, "--eval-data": args.eval_data}
    if args.max_drop is None:
        if any(v is not None for v in given.values()):
            raise ConfigError(f"{', '.join(k for k, v in given.items() if v is not None)} given without --max-drop; "
                              "accuracy control needs --max-drop, --metric and --eval-data together")
        return None
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise ConfigError(f"--max-drop {args.max_drop} needs {' and '.join(missing)}")
    from ..data import feed_loader
    from ..ptq.accuracy_control import AccuracyControl

    evaluation = run.model_copy(update={"dataset": run.dataset.model_copy(update={"path": args.eval_data})})
    ptq = run.ptq_config()
    batches = list(feed_loader(_reader(evaluation, feed_names), ptq.batch_size, feed_names)())
    return AccuracyControl(metric=_load_metric(args.metric), eval_batches=batches, max_drop=args.max_drop,
                           runtime=args.control_runtime)


def _post_one(index: int, run: RunConfig, args: argparse.Namespace) -> None:
    import paddle

    from ..data import batch_generator
    from ..ptq.quant_post import run_post_training, run_with_accuracy_control

    model, params = _model_file(run)
    save_dir, table = run.save_dir(), run.scale_table()
    feed_names = _check_input(run, _feeds(_load_program(model)))
    reader = None if table is not None else _reader(run, feed_names)
    control = _accuracy_control(args, run, feed_names)
    ptq = run.ptq_config()
    label = f"Config[{index}]" + (f" ({run.model.name})" if run.model.name else "")
    source = f"scales from {table}" if reader is None else f"{len(reader)} calibration file(s) in {reader.folder}"
    if args.check:
        _say(f"{label}: ok: model {model}, {source}, algo {ptq.algo}, output {save_dir}")
        return
    sources = {} if reader is None else {"batch_generator": batch_generator(reader, ptq.batch_size)}
    exe, files = paddle.static.Executor(paddle.CPUPlace()), {"model_filename": model.name,
                                                             "params_filename": params.name if params else None}
    if control is not None:
        if table is not None:
            raise ConfigError("--max-drop calibrates every candidate itself; it cannot be combined with ScaleTable")
        result = run_with_accuracy_control(exe, str(model.parent), str(save_dir), ptq, sources, control, {
            **files, "save_model_filename": "model.pdmodel", "save_params_filename": "model.pdiparams",
            "allow_output_in_model_dir": False})
        _say(f"{label}: {_control_summary(result.accuracy_control)}")
    else:
        result = run_post_training(exe, str(model.parent), str(save_dir), ptq, sources=sources, scale_table=table,
                                   **files)
    how = f"scales from {table.name}" if reader is None else f"{ptq.algo}, {result.batches} batches of {ptq.batch_size}"
    _say(f"{label}: quantized {len(result.quantized_tensors)} tensors ({how}) -> {result.model_file}, "
         f"{result.params_file}{_skipped_note(reader)}")


def _control_summary(found) -> str:
    verdict = "target met" if found.target_met else "TARGET NOT MET (the best model found was written)"
    options = ", ".join(f"{k}={v}" for k, v in found.options.items())
    return (f"accuracy control on {found.runtime}: metric {found.int8_metric:.4g} vs fp32 {found.fp32_metric:.4g} "
            f"(max drop {found.max_drop:g}): {verdict}; {options}; {len(found.skipped_tensors)} tensor(s) left in "
            f"float; {len(found.candidates)} candidates in {found.seconds:.0f} s")


def _skipped_note(reader) -> str:
    if reader is None or not reader.skipped:
        return ""
    return f"; skipped {len(reader.skipped)} unreadable file(s): " + ", ".join(
        f"{s.path.name} ({s.reason})" for s in reader.skipped)


def _run_post(args: argparse.Namespace) -> int:
    configs = _configs(args)
    return _each_config(configs, lambda i, run: _post_one(i, run, args))


# ---------------------------------------------------------------- inspect
def _plan_rows(program, run: RunConfig, ptq) -> list[dict]:
    from ..passes.plan import plan_quantization
    from ..common.registry import SUPPORTED_OP_TYPES

    config = ptq.to_quant_config()
    block = program.global_block()
    plan = plan_quantization(block, config).without_tensors(ptq.skip_tensor_list)
    wanted = set(config.effective_op_types)
    by_index = {op.index: op for op in plan.ops}
    skipped = {s.index: s.reason for s in plan.skipped}
    tensors = {t.var: t for t in plan.tensors}
    rows = []
    for index, op in enumerate(block.ops):
        row = {"index": index, "type": op.type}
        if index in by_index:
            quant = [tensors[name] for _, name in by_index[index].inputs]
            row.update(status="quantized", detail=", ".join(
                f"{t.var} ({t.role}, {t.method}, {t.bits} bits" + (f", axis {t.axis})" if t.axis >= 0 else ")")
                for t in quant))
        elif index in skipped:
            row.update(status="skipped", detail=skipped[index])
        elif op.type in ("feed", "fetch"):
            row.update(status="-", detail="feed/fetch")
        elif op.type in SUPPORTED_OP_TYPES and op.type not in wanted:
            row.update(status="-", detail="supported type not selected (add it to --op-types, or --full-quantize)")
        else:
            row.update(status="-", detail="no quantizer for this op type")
        rows.append(row)
    return rows


def _inspect_one(index: int, run: RunConfig, args: argparse.Namespace) -> None:
    from collections import Counter

    from ..common.program import legacy_ir

    model, _ = _model_file(run)
    program = _load_program(model)
    with legacy_ir():
        rows = _plan_rows(program, run, run.ptq_config())
    if args.json:
        _say(json.dumps({"config": index, "model": str(model), "ops": rows}, indent=1))
        return
    _say(f"Config[{index}]: {model}: {len(rows)} ops, feeds {list(_feeds(program))}")
    for row in rows:
        if args.show == "all" or row["status"] == args.show:
            _say(f"{row['index']:5d}  {row['type']:<22s} {row['status']:<10s} {row['detail']}")
    counts = Counter((row["type"], row["status"]) for row in rows if row["status"] != "-")
    summary = ", ".join(f"{t} {s} {n}" for (t, s), n in sorted(counts.items()))
    _say(f"summary: {summary or 'nothing would be quantized'}")


def _run_inspect(args: argparse.Namespace) -> int:
    configs = _configs(args)
    return _each_config(configs, lambda i, run: _inspect_one(i, run, args))


def _embedding_config(args: argparse.Namespace) -> dict:
    op_types = [t.strip() for t in args.op_types.split(",") if t.strip()]
    per_op = {"quantize_type": args.quantize_type, "quantize_bits": args.bits}
    optional = {"dtype": args.dtype, "threshold": args.threshold, "subspaces": args.subspaces,
                "codebook_size": args.codebook_size}
    per_op.update({key: value for key, value in optional.items() if value is not None})
    config = {"quantize_op_types": op_types, **{op_type: dict(per_op) for op_type in op_types}}
    if args.params_name:
        config["params_name"] = [n.strip() for n in args.params_name.split(",") if n.strip()]
    return config


def _save_atomically(exe, scope, program, feed_names, fetch_names, target: Path) -> None:
    """The model into a temporary sibling folder of ``target``, then swapped into place."""
    from ..common.model_files import save_inference_atomically

    if target.exists() and not target.is_dir():
        raise ConfigError(f"--save-dir {str(target)!r} exists and is not a directory")
    save_inference_atomically(exe, scope, program, feed_names, fetch_names, target)


def _run_embedding(args: argparse.Namespace) -> int:
    try:
        from ..embedding.quant_embedding import plan_embedding, quant_embedding
    except ImportError as exc:
        return _missing_module("embedding", "paddle_quant.embedding.quant_embedding", exc)
    import paddle

    from ..common.model_files import load_inference_program
    from ..common.program import legacy_ir
    from ..common.errors import ProgramStateError

    run = build_configs([{}], base_dir=Path.cwd(), overrides=_overrides(args)[0])[0]
    model, params = _model_file(run)
    target, config = run.save_dir(), _embedding_config(args)
    exe, scope, place = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope(), paddle.CPUPlace()
    with legacy_ir(), paddle.static.scope_guard(scope):
        program, feeds, fetches = load_inference_program(exe, scope, model, params)
        tables = [t.table for t in plan_embedding(program, config).tables]
        if not tables:
            raise ProgramStateError(f"the model has no embedding table read by {args.op_types}; op types in the "
                                    f"model: {sorted({op.type for op in program.global_block().ops})}")
        quantized = quant_embedding(program, place, config, scope=scope)
        _save_atomically(exe, scope, quantized, feeds, fetches, target)
    _say(f"embedding: quantized {len(tables)} table(s) {tables} ({args.quantize_type}, {args.bits} bits) -> "
         f"{target / 'model.pdmodel'}, {target / 'model.pdiparams'}")
    return EXIT_OK


# ---------------------------------------------------------------- analyze
def _load_metric(spec: Optional[str]):
    if spec is None:
        return None
    import importlib

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"--metric {spec!r}: allowed: MODULE:FUNCTION, e.g. my_metrics:accuracy")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # the console script does not put the current folder on the path
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"--metric {spec!r} could not be loaded: {exc}") from exc


def _analyze_one(index: int, run: RunConfig, args: argparse.Namespace, analyze: Callable) -> None:
    from ..data import feed_loader

    model, params = _model_file(run)
    feed_names = _check_input(run, _feeds(_load_program(model)))
    reader = _reader(run, feed_names)
    ptq = run.ptq_config()
    report_dir = Path(args.report_dir).resolve()
    report_dir = report_dir / f"config{index}" if index > 1 else report_dir
    runner = None
    if args.runtime == "onednn":
        from ..analysis.sensitivity import onednn_runner

        runner = onednn_runner()
    result = analyze(str(model.parent), feed_loader(reader, ptq.batch_size, feed_names), ptq,
                     report_dir=report_dir, max_drop=args.max_drop, metric=_load_metric(args.metric),
                     model_filename=model.name, params_filename=params.name if params else None,
                     sensitivity=args.sensitivity, granularity=args.unit, runner=runner, plots=not args.no_plots)
    skip_list = list(result.skip_list)
    if args.skip_list_out:
        _write_json(Path(args.skip_list_out), {"skip_list": skip_list})
    _say(f"Config[{index}]: report {result.report_path}; skip list ({len(skip_list)}) in "
         f"{getattr(result, 'json_path', args.skip_list_out)}: {', '.join(skip_list) or '-'}")


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        json.dump(data, stream, indent=1)
    os.replace(temp, path)


def _run_analyze(args: argparse.Namespace) -> int:
    configs = _configs(args)
    try:
        from ..analysis.analyze import analyze
    except ImportError as exc:
        return _missing_module("analyze", "paddle_quant.analysis.analyze", exc)
    return _each_config(configs, lambda i, run: _analyze_one(i, run, args, analyze))


# ---------------------------------------------------------------- verify
def _run_verify(args: argparse.Namespace) -> int:
    import itertools

    from ..data import feed_loader
    from ..deploy.verify import verify

    if args.verify_batches < 1:
        raise ConfigError(f"--verify-batches must be >= 1, got {args.verify_batches}")
    run = _configs(args)[0]
    model_run = build_configs([{"Model": {"ModelDir": args.model_dir}}], base_dir=Path.cwd())[0]
    model, params = _model_file(model_run)
    feed_names = _check_input(run, _feeds(_load_program(model)))
    loader = feed_loader(_reader(run, feed_names), run.dataset.batch_size, feed_names)
    inputs = list(itertools.islice(loader(), args.verify_batches))
    report = verify(model.parent, args.runtime, inputs, fp32_model=args.fp32_model, runtime_model=args.runtime_model,
                    model_filename=model.name, params_filename=params.name if params else None,
                    locate=args.locate, locate_steps=args.locate_steps)
    _say(report.table())
    worst_cosine = min(o.cosine for o in report.outputs)
    if args.max_steps is not None and not report.within(args.max_steps):
        _logger.error("verify: an output deviates %.2f steps, more than --max-steps %.2f", report.max_steps,
                      args.max_steps)
        return EXIT_FAILURE
    if args.min_cosine is not None and worst_cosine < args.min_cosine:
        _logger.error("verify: output cosine %.6f is below --min-cosine %.6f", worst_cosine, args.min_cosine)
        return EXIT_FAILURE
    return EXIT_OK


# ---------------------------------------------------------------- export-onnx
def _run_export_onnx(args: argparse.Namespace) -> int:
    from ..export.onnx import export_float_onnx, export_onnx

    if args.fp32:
        quantized_only = [flag for flag, given in (("--observers", args.observers != "none"),
                                                   ("--activation-type", args.activation_type != "int8"),
                                                   ("--weight-type", args.weight_type != "auto"),
                                                   ("--round-float-readers", args.round_float_readers),
                                                   ("--float-conv-weights", args.float_conv_weights),
                                                   ("--fold-input-scales", args.fold_input_scales)) if given]
        if quantized_only:
            raise ConfigError(f"{', '.join(quantized_only)} apply to quantized models; --fp32 exports a float model"
                          + (" (--fold-input-affine folds the input scales too)" if args.fold_input_scales else ""))
        result = export_float_onnx(args.model_dir, args.output, fold_conv=not args.no_fold,
                                   fold_input_affine=args.fold_input_affine)
        _say(f"export-onnx: fp32 model {args.model_dir} -> {result.path}")
        return EXIT_OK
    if args.fold_input_affine:
        raise ConfigError("--fold-input-affine applies to --fp32 exports; a quantized model folds them in post "
                          "(FoldInputAffine)")
    observers = args.observers if args.observers in ("none", "int8_ops", "all") else \
        [name.strip() for name in args.observers.split(",") if name.strip()]
    if args.weight_type == "auto":
        from ..export.onnx_requantize import default_weight_type

        weight_type = default_weight_type()
    else:
        weight_type = args.weight_type
    result = export_onnx(args.model_dir, args.output, observers=observers, fold_conv=not args.no_fold,
                         activation_type=args.activation_type, weight_type=weight_type,
                         round_float_readers=args.round_float_readers, float_conv_weights=args.float_conv_weights,
                         fold_input_scales=args.fold_input_scales)
    _say(f"export-onnx: {len(result.weights)} int8 weights, {len(result.activations)} quantized activations, "
         f"{len(result.observers)} requantized outputs, {len(result.rounded_readers)} tensors with rounded readers, "
         f"{len(result.float_conv_weights)} float convs with float32 weights, "
         f"{len(result.folded_input_scales)} input scales folded "
         f"(weights {weight_type}, activations {args.activation_type}) -> {result.path}")
    return EXIT_OK


# ---------------------------------------------------------------- demo
def _demo_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "demos"


def _run_demo(args: argparse.Namespace) -> int:
    folder = _demo_dir()
    if not folder.is_dir():
        _logger.error("demos are part of the source checkout (demos/ next to paddle_quant/); none at %s", folder)
        return EXIT_FAILURE
    names = sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_") and p.stem != "ppocr")
    if args.list:
        _say("\n".join(names))
        return EXIT_OK
    if args.name not in names:
        raise ConfigError(f"unknown demo {args.name!r}{_closest(args.name, names)} allowed: {names}")
    path = os.pathsep.join(filter(None, [str(folder.parent), os.environ.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, str(folder / f"{args.name}.py"), *args.demo_args], check=False,
                          env={**os.environ, "PYTHONPATH": path})  # this checkout's paddle_quant
    return EXIT_OK if done.returncode == 0 else EXIT_FAILURE
