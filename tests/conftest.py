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
