"""CI runs the property tests derandomized (tests/conftest.py, .ci/run); local runs explore."""

import os
import pathlib

from hypothesis import settings

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_ci_selects_the_derandomized_profile_and_runs_the_readme_command():
    text = (REPO / ".ci" / "run").read_text()
    assert "export HYPOTHESIS_PROFILE=ci" in text and "\nmake test\n" in text


def test_the_loaded_profile_reaches_tests_that_bring_their_own_settings():
    in_ci = os.environ.get("HYPOTHESIS_PROFILE") == "ci"
    assert settings.default.derandomize is in_ci
    assert settings(max_examples=5, deadline=None).derandomize is in_ci  # how the suite's @settings are made
    assert settings.get_profile("ci").derandomize and not settings.get_profile("dev").derandomize
