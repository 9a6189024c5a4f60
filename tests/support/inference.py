"""Save a frozen program and run it with Paddle Inference (oneDNN fp32 or int8)."""

from __future__ import annotations

import contextlib

import numpy as np
import paddle
from paddle import inference


@contextlib.contextmanager
def legacy_static():
    """Legacy-IR static mode, for module-scoped fixtures (conftest.py's autouse fixture covers each test)."""
    with paddle.pir_utils.OldIrGuard():
        paddle.enable_static()
        try:
            yield
        finally:
            paddle.disable_static()


def save_model(net, program, prefix, feed_names, fetch_names):
    """``save_inference_model`` of ``program`` with the net's scope; returns (model, params) paths."""
    block = program.global_block()
    with paddle.static.scope_guard(net.scope):
        paddle.static.save_inference_model(
            str(prefix), [block.var(n) for n in feed_names], [block.var(n) for n in fetch_names],
            net.exe, program=program,
        )
    return f"{prefix}.pdmodel", f"{prefix}.pdiparams"


def save_built_model(folder, build, *, seed=None):
    """Build a program with ``build() -> (feed vars, fetch vars)``, initialise it in a fresh scope and save it
    as ``folder/model.pdmodel`` + ``.pdiparams``; returns ``folder``. ``seed`` fixes the initial parameters
    (None: Paddle's global generator, whose state depends on the tests run before)."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    if seed is not None:
        main.random_seed = startup.random_seed = seed
    with paddle.static.program_guard(main, startup):
        feeds, fetches = build()
    exe = paddle.static.Executor(paddle.CPUPlace())
    with paddle.static.scope_guard(paddle.static.Scope()):
        exe.run(startup)
        paddle.static.save_inference_model(str(folder / "model"), list(feeds), list(fetches), exe, program=main)
    return folder


def predictor(model_file, params_file, *, int8: bool):
    """A CPU predictor with oneDNN, in int8 mode when ``int8``."""
    config = inference.Config(model_file, params_file)
    config.disable_gpu()
    config.enable_onednn()
    if int8:
        config.enable_onednn_int8()
    config.disable_glog_info()
    return inference.create_predictor(config)


def predict(pred, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run one batch through a predictor."""
    for name in pred.get_input_names():
        pred.get_input_handle(name).copy_from_cpu(feed[name])
    pred.run()
    return [pred.get_output_handle(n).copy_to_cpu() for n in pred.get_output_names()]
