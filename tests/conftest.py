"""Shared fixtures: legacy static mode for every test, seeded generators, a trained digits model."""

import os
import pathlib
import sys

import numpy as np
import paddle
import pytest
from hypothesis import settings

# CI must not be red by the luck of a draw: `.ci/run` selects the derandomized profile (the same examples
# every run); local runs keep exploring new examples each time. "dev" says derandomize=False itself:
# profiles inherit Hypothesis's default, which is derandomized wherever a CI variable (CI=...) is set.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "demos"))

NO_VNNI_REASON = ("compares int8 kernels with the simulation: they agree only on CPUs with VNNI/AMX, and this one "
                  "has none (docs/deploy.md, 'CPUs without VNNI'; tests/deploy/test_cpu.py covers this case)")


PADDLE_TEST_SEED = 20261206


def _seed_global_generators():
    """Paddle's global generator starts from a random seed in every process, and numpy's legacy one moves
    with every test that draws from it: an unseeded parameter initialiser or ``np.random`` call would give
    each run (and each test order) other values. Seed both before every module and every test."""
    paddle.seed(PADDLE_TEST_SEED)
    np.random.seed(PADDLE_TEST_SEED)


@pytest.fixture(autouse=True, scope="module")
def seeded_module():
    """Seeded generators for the module-scoped fixtures (built before any test's own seeding)."""
    _seed_global_generators()


@pytest.fixture(autouse=True)
def seeded_test(seeded_module):
    """Seeded generators for each test, whatever ran before it."""
    _seed_global_generators()


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
    """Skip tests marked ``gpu`` when Paddle has no CUDA device, and ``vnni`` ones on CPUs without VNNI."""
    from paddle_quant.deploy.cpu import int8_dot_product

    skips = {}
    if not (paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0):
        skips["gpu"] = pytest.mark.skip(reason="needs a CUDA device")
    if not int8_dot_product():
        skips["vnni"] = pytest.mark.skip(reason=NO_VNNI_REASON)
    for item in items:
        for keyword, skip in skips.items():
            if keyword in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def digits_model(tmp_path_factory):
    """A trained fp32 digits CNN saved as an inference model (see tests/support/digits_model.py)."""
    from support.digits_model import build_digits_model

    return build_digits_model(tmp_path_factory.mktemp("digits_fp32"))


@pytest.fixture(scope="session")
def digits_int8_model(digits_model, tmp_path_factory):
    """The digits CNN through quant_post (abs_max, 4 calibration batches): a folder with model.pdmodel,
    model.pdiparams and scale_table.json. Read it, never write into it."""
    import paddle_quant as quant

    out = tmp_path_factory.mktemp("digits_int8") / "int8"
    quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(digits_model.folder), str(out), algo="abs_max",
                     data_loader=digits_model.calibration_batches())
    return out


@pytest.fixture(scope="session")
def ppocr_models():
    """The PP-OCR models (demos/ppocr.py), downloaded once; skipped with a clear reason when offline and uncached."""
    import ppocr

    from support.network import models_or_skip

    return models_or_skip(ppocr.fetch_models, ppocr.DownloadError)
