"""Shared fixtures: legacy static mode for every test, seeded RNG."""

import numpy as np
import paddle
import pytest


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
