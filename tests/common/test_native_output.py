"""Paddle's native chatter goes to the DEBUG log, never to the terminal; the terminal always comes back."""

import logging
import os
import subprocess
import sys
import textwrap

import pytest

from paddle_quant.common.native_output import NATIVE_LOGGER, native_output_to_log
from paddle_quant.deploy.runtimes import create_predictor, onednn_config


def test_a_predictor_builds_pass_statistics_reach_the_debug_log_not_the_terminal(digits_int8_model, capfd, caplog):
    config = onednn_config(digits_int8_model / "model.pdmodel", digits_int8_model / "model.pdiparams", threads=2,
                           int8=True)
    capfd.readouterr()
    with caplog.at_level(logging.DEBUG, logger=NATIVE_LOGGER):
        create_predictor(config)
    out, err = capfd.readouterr()
    assert "quantized" not in out + err and "---" not in out + err
    (record,) = [r for r in caplog.records if r.name == NATIVE_LOGGER]
    assert record.levelno == logging.DEBUG and "quantized" in record.getMessage()
    assert "\x1b[" not in record.getMessage()  # ANSI colours stripped


def test_the_terminal_is_restored_after_an_exception(capfd, caplog):
    with caplog.at_level(logging.DEBUG, logger=NATIVE_LOGGER):
        with pytest.raises(RuntimeError, match="boom"):
            with native_output_to_log("a failing call"):
                os.write(1, b"native out\n")
                os.write(2, b"native err\n")
                raise RuntimeError("boom")
        os.write(1, b"after on stdout\n")
        os.write(2, b"after on stderr\n")
    out, err = capfd.readouterr()
    assert out == "after on stdout\n" and err == "after on stderr\n"
    (record,) = [r for r in caplog.records if r.name == NATIVE_LOGGER]
    assert "a failing call" in record.getMessage() and "native out" in record.getMessage()
    assert "native err" in record.getMessage()


def test_nested_captures_share_the_outer_one(capfd, caplog):
    with caplog.at_level(logging.DEBUG, logger=NATIVE_LOGGER):
        with native_output_to_log("outer"):
            os.write(1, b"one\n")
            with native_output_to_log("inner"):
                os.write(1, b"two\n")
            os.write(1, b"three\n")
        os.write(1, b"free\n")
    assert capfd.readouterr().out == "free\n"
    (record,) = [r for r in caplog.records if r.name == NATIVE_LOGGER]
    assert record.getMessage().endswith("one\ntwo\nthree")


def test_nothing_captured_logs_nothing(caplog):
    with caplog.at_level(logging.DEBUG, logger=NATIVE_LOGGER):
        with native_output_to_log("silent"):
            pass
    assert not [r for r in caplog.records if r.name == NATIVE_LOGGER]


def test_a_fresh_process_shows_no_executor_banner():
    """glog's once-per-process Executor lines ('New Executor is Running.', 'Standalone Executor is Used.')
    are taken by paddle_quant's legacy_ir on its first entry, even for the caller's own training program."""
    script = textwrap.dedent("""
        import numpy as np, paddle
        from paddle_quant.common.program import legacy_ir
        with legacy_ir():
            main, startup = paddle.static.Program(), paddle.static.Program()
            with paddle.static.program_guard(main, startup):
                x = paddle.static.data("x", [None, 4], "float32")
                loss = paddle.mean(paddle.static.nn.fc(x, 3))
                paddle.optimizer.SGD(0.1).minimize(loss)
            exe = paddle.static.Executor(paddle.CPUPlace())
            exe.run(startup)
            exe.run(main, feed={"x": np.ones((2, 4), np.float32)}, fetch_list=[loss])
        print("trained")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "trained"
    assert "Executor is Running" not in done.stderr and "Standalone Executor" not in done.stderr, done.stderr
