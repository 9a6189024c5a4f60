"""Dygraph QAT under paddle.DataParallel on CPU (gloo): two ranks launched by paddle.distributed.launch."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).resolve().parents[1] / "support" / "qat_dp_worker.py"
CONFIG = "{'fuse_conv_bn': True}"


def _launch(out: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir",
               str(out / "log"), str(WORKER), "--out", str(out), *args]
    return subprocess.run(command, cwd=out, capture_output=True, text=True, timeout=300)


def _single(out: Path, *args: str) -> None:
    subprocess.run([sys.executable, str(WORKER), "--out", str(out), *args], check=True, capture_output=True,
                   timeout=300)


def _worker_logs(out: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted((out / "log").glob("workerlog.*")))


@pytest.fixture(scope="module")
def parallel_run(tmp_path_factory):
    """(rank 0 state, rank 1 state, single-process state on the concatenated batches)."""
    out = tmp_path_factory.mktemp("dp")
    single = out / "single"
    single.mkdir()
    result = _launch(out, "--config", CONFIG)
    assert result.returncode == 0, result.stdout[-2000:] + _worker_logs(out)[-4000:]
    _single(single, "--config", CONFIG)
    return np.load(out / "rank0.npz"), np.load(out / "rank1.npz"), np.load(single / "rank0.npz")


def test_both_ranks_hold_identical_scales_and_weights(parallel_run):
    rank0, rank1, _single_run = parallel_run
    scales = [k for k in rank0.files if "_fake_quant_input" in k]
    assert len(scales) == 9  # scale, state, accum of three input quanters
    for key in rank0.files:
        np.testing.assert_array_equal(rank0[key], rank1[key], err_msg=key)


def test_parallel_run_equals_one_process_on_the_concatenated_batches(parallel_run):
    rank0, _rank1, single = parallel_run
    for key in rank0.files:
        np.testing.assert_allclose(rank0[key], single[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_ranks_with_different_configs_are_refused_at_the_first_sync(tmp_path):
    result = _launch(tmp_path, "--config", CONFIG, "--config-rank1", "{'fuse_conv_bn': True, 'moving_rate': 0.5}")
    assert result.returncode != 0
    assert "ConfigError" in _worker_logs(tmp_path) and "same config" in _worker_logs(tmp_path)


def test_fleet_dygraph_data_parallel_agrees_as_well(parallel_run, tmp_path):
    result = _launch(tmp_path, "--config", CONFIG, "--fleet")
    assert result.returncode == 0, result.stdout[-2000:] + _worker_logs(tmp_path)[-4000:]
    rank0, rank1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    for key in rank0.files:
        np.testing.assert_array_equal(rank0[key], rank1[key], err_msg=key)
        np.testing.assert_allclose(rank0[key], parallel_run[0][key], rtol=1e-6, atol=1e-7, err_msg=key)
