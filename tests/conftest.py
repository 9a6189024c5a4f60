"""Shared fixtures: legacy static mode for every test, seeded RNG, a trained digits model."""

import pathlib
import sys

import numpy as np
import paddle
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "demos"))


@pytest.fixture(autouse=True)
def legacy_static_mode():
    """Run each test in legacy-IR static mode and give it fresh name generators."""
    with paddle.pir_utils.OldIrGuard():
        paddle.enable_static()
        with paddle.utils.unique_name.guard():
            yield
        paddle.disable_static()


@pytest.fixture
def rng():
    """A seeded numpy Generator."""
    return np.random.default_rng(0)


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``gpu`` when Paddle has no CUDA device."""
    if paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def digits_model(tmp_path_factory):
    """A trained fp32 digits CNN saved as an inference model (see tests/support/digits_model.py)."""
    from support.digits_model import build_digits_model

    return build_digits_model(tmp_path_factory.mktemp("digits_fp32"))
