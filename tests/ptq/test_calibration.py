"""ptq/calibration.py: what makes calibration stream (ops in program order, the caller's flags left alone)."""

import subprocess
import sys
import textwrap

import numpy as np
import paddle
import pytest

import paddle_quant as quant
from paddle_quant.common.program import SERIAL_RUN_FLAG, legacy_ir
from paddle_quant.ptq import calibration

from support.inference import save_built_model


def _serial_flag():
    return paddle.get_flags([SERIAL_RUN_FLAG])[SERIAL_RUN_FLAG]


def test_calibration_runs_its_programs_with_ops_in_program_order(digits_model, tmp_path, monkeypatch):
    seen = []
    real_run = paddle.static.Executor.run

    def run(self, *args, **kwargs):
        seen.append(_serial_flag())
        return real_run(self, *args, **kwargs)

    with legacy_ir():  # its first use in a process runs a tiny program of its own (the banner); not counted
        pass
    monkeypatch.setattr(calibration, "WHOLE_TENSOR_BUDGET", 0)  # the statistics program, as on real models
    monkeypatch.setattr(paddle.static.Executor, "run", run)
    assert _serial_flag() is False
    result = quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(digits_model.folder),
                              str(tmp_path / "q"), algo="hist", data_loader=digits_model.calibration_batches())
    # loading the model (the caller's setting), every calibration batch in order, saving the model
    assert seen == [False] + [True] * result.batches + [False], seen
    assert _serial_flag() is False  # the caller's setting is back


def test_the_flag_is_restored_when_the_data_fails(digits_model, tmp_path):
    def broken():
        yield from list(digits_model.calibration_batches()())[:1]
        raise RuntimeError("the data loader broke")

    paddle.set_flags({SERIAL_RUN_FLAG: False})
    with pytest.raises(RuntimeError, match="loader broke"):
        quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(digits_model.folder), str(tmp_path / "q"),
                         algo="hist", data_loader=broken)
    assert _serial_flag() is False and not (tmp_path / "q").exists()


CHAIN = textwrap.dedent("""
    import os, sys, tempfile
    from pathlib import Path
    import numpy as np
    import paddle
    import paddle_quant as quant
    from paddle_quant.ptq import calibration

    def rss(field):
        return next(int(l.split()[1]) for l in Path("/proc/self/status").read_text().splitlines()
                    if l.startswith(field + ":")) / 1024

    paddle.enable_static()
    folder = tempfile.mkdtemp()
    with paddle.pir_utils.OldIrGuard():
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            x = paddle.static.data("x", [-1, 32, 64, 64], "float32")
            h = x
            for _ in range(24):
                h = paddle.nn.functional.relu(paddle.static.nn.conv2d(h, 32, 3, padding=1))
            y = paddle.mean(h)
        exe = paddle.static.Executor(paddle.CPUPlace())
        exe.run(startup)
        paddle.static.save_inference_model(os.path.join(folder, "fp32", "model"), [x], [y], exe, program=main)
    feeds = [{"x": np.random.default_rng(i).standard_normal((8, 32, 64, 64)).astype("float32")} for i in range(3)]
    calibration.WHOLE_TENSOR_BUDGET = 0
    if sys.argv[1] == "any_order":  # the rule removed, to show this test can fail
        import contextlib
        calibration.ops_in_program_order = contextlib.nullcontext
    before = rss("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), os.path.join(folder, "fp32"),
                     os.path.join(folder, "q"), data_loader=lambda: feeds, algo="hist",
                     quantizable_op_type=["conv2d"], output_scales="none")
    print(rss("VmHWM") - before)
""")


def _peak_added_mb(tmp_path, mode):
    script = tmp_path / "chain.py"
    script.write_text(CHAIN)
    done = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return float(done.stdout.split()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads peak RSS from /proc")
def test_calibration_memory_does_not_hold_every_activation(tmp_path):
    """24 conv + relu layers, 4 MB per activation of a batch (192 MB in all). Calibration in program order
    peaked at 77-88 MB added; with the executor free to reorder, 428-455 MB (it kept the activations
    until their statistics ran). The bound sits between, at three quarters of the activations."""
    activations_mb = 24 * 2 * 8 * 32 * 64 * 64 * 4 / 2**20
    assert _peak_added_mb(tmp_path, "in_order") < 0.75 * activations_mb


def test_a_zero_dimensional_observed_output_is_one_row(tmp_path, monkeypatch):
    """output_scales='all' observes a mean's 0-d output; the statistics program reshaped it to [0, -1] and
    Paddle refused ("The index of 0 in `shape` must be less than the input tensor X's dimensions")."""
    def conv_mean():
        x = paddle.static.data("x", [-1, 3, 8, 8], "float32")
        return [x], [paddle.mean(paddle.nn.functional.relu(paddle.static.nn.conv2d(x, 4, 3)))]

    save_built_model(tmp_path / "fp32", conv_mean)
    exe = paddle.static.Executor(paddle.CPUPlace())
    feeds = [{"x": np.random.default_rng(i).standard_normal((2, 3, 8, 8)).astype("float32")} for i in range(2)]
    results = {}
    for budget in (0, calibration.WHOLE_TENSOR_BUDGET):  # in-graph statistics, then whole tensors
        monkeypatch.setattr(calibration, "WHOLE_TENSOR_BUDGET", budget)
        result = quant.quant_post(exe, str(tmp_path / "fp32"), str(tmp_path / f"q{budget}"), data_loader=lambda: feeds,
                                  algo="abs_max", quantizable_op_type=["conv2d"], output_scales="all")
        results[budget] = result.scale_table.read_text()
    assert results[0] == results[calibration.WHOLE_TENSOR_BUDGET]  # abs_max: exact either way


def test_large_models_give_the_freed_heap_back_after_every_batch(digits_model, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(calibration, "release_free_heap", lambda: calls.append("trim"))
    result = quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(digits_model.folder),
                              str(tmp_path / "small"), algo="hist", data_loader=digits_model.calibration_batches())
    assert calls == ["trim"]  # a small model: whole tensors, once at the end
    calls.clear()
    monkeypatch.setattr(calibration, "WHOLE_TENSOR_BUDGET", 0)  # as for PP-OCRv4 rec
    result = quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(digits_model.folder),
                              str(tmp_path / "large"), algo="hist", data_loader=digits_model.calibration_batches())
    assert calls == ["trim"] * (result.batches + 1)


def test_releasing_the_heap_is_harmless_to_call():
    assert calibration.release_free_heap() in (None, 0, 1)  # glibc: 1 if memory went back, 0 if none; else None


def test_in_graph_statistics_leave_nothing_in_the_callers_scope(digits_model, tmp_path, monkeypatch):
    monkeypatch.setattr(calibration, "WHOLE_TENSOR_BUDGET", 0)  # statistics inside the program, as for rec
    scope = paddle.static.Scope()
    quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(digits_model.folder), str(tmp_path / "q"),
                     algo="hist", data_loader=digits_model.calibration_batches(), scope=scope)
    left = [name for name in scope.local_var_names() if "@sample" in name or name.endswith(("@peak", "@total"))]
    assert left == []
