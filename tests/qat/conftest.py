"""Fixtures of the QAT tests."""

import paddle
import pytest


@pytest.fixture
def dygraph_mode():
    """Dygraph mode with seed 0 for one test (the root conftest puts every test in legacy static mode first)."""
    paddle.disable_static()
    paddle.seed(0)
    yield
    paddle.enable_static()
