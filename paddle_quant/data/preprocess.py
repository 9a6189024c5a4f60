"""The image preprocessing chain for calibration data, validated, in one documented order.

The chain covers what the seed tools do (the PaddlePaddle XML script, TNN, xfDNN,
TVM). A decoded image (converted to RGB, or to one channel with ``color='L'``)
goes through these steps, in this order:

1. **resize** to ``resize`` = (height, width), by ``resize_mode``:
   ``'stretch'`` to exactly that size; ``'short_side'`` the shorter side to
   ``min(resize)`` keeping the aspect ratio (the seed script's ``resize_short``);
   ``'pad'`` height to ``resize[0]`` keeping the aspect ratio with the width
   capped at ``resize[1]`` (PP-OCR's ``resize_norm_img``; the padding is step 8).
   Then, when ``crop`` = (height, width) is set, a centre crop to that size.
2. pixels become float32 in [0, 1] (``x / 255``), as the seed script and
   ``caffe.io.load_image`` do.
3. **layout**: ``'NCHW'`` (channels first) or ``'NHWC'``.
4. **channel_swap**: a permutation of the channels, e.g. ``(2, 1, 0)`` for RGB -> BGR.
5. **raw_scale**: ``x * raw_scale`` (e.g. 255 for the 0-255 range TNN and Caffe models expect).
6. **mean**: ``x - mean`` per channel (in the order after step 4).
7. **std**: ``x / std`` per channel, or **input_scale**: ``x * input_scale`` (not both).
8. with ``resize_mode='pad'``, right-pad the width to ``resize[1]`` with ``pad_value``.

With the defaults (``raw_scale=1``) Mean/Std act as in the seed script:
``(x / 255 - mean) / std``.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..common.validation import translate_validation_error
from ..common.errors import ConfigError

__all__ = ["PreprocessConfig", "preprocess_image", "output_shape"]

_ALLOWED = {
    "resize": "None or (height, width), two ints >= 1",
    "crop": "None or (height, width), two ints >= 1, not larger than the resized image",
    "resize_mode": "'stretch', 'short_side' or 'pad'",
    "color": "'RGB' (3 channels) or 'L' (1 channel)",
    "layout": "'NCHW' or 'NHWC'",
    "channel_swap": "None or a permutation of range(channels), e.g. (2, 1, 0)",
    "raw_scale": "a float > 0",
    "mean": "None or 1 float or one float per channel",
    "std": "None or 1 float or one float per channel, all != 0",
    "input_scale": "None or 1 float or one float per channel (not together with std)",
    "pad_value": "a float",
}


def _size(value):
    if value is None:
        return None
    value = tuple(value)
    if len(value) != 2 or any(isinstance(v, bool) or int(v) != v or v < 1 for v in value):
        raise ConfigError(f"got {value!r}")
    return tuple(int(v) for v in value)


class PreprocessConfig(BaseModel):
    """Options of the image preprocessing chain (see the module docstring for the order)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resize: Optional[tuple[int, int]] = Field(None, description="Step 1: target (height, width); None keeps the size.")
    crop: Optional[tuple[int, int]] = Field(None, description="Step 1: centre crop (height, width) after resizing.")
    resize_mode: Literal["stretch", "short_side", "pad"] = Field(
        "stretch", description="Step 1: exact size, shorter side to min(resize), or height-fit and pad.")
    color: Literal["RGB", "L"] = Field("RGB", description="Decode to RGB (3 channels) or grey (1 channel).")
    layout: Literal["NCHW", "NHWC"] = Field("NCHW", description="Step 3: channels first or last.")
    channel_swap: Optional[tuple[int, ...]] = Field(None, description="Step 4: channel permutation, e.g. (2, 1, 0).")
    raw_scale: float = Field(1.0, gt=0, description="Step 5: multiply the [0, 1] pixels by this.")
    mean: Optional[tuple[float, ...]] = Field(None, description="Step 6: subtracted per channel.")
    std: Optional[tuple[float, ...]] = Field(None, description="Step 7: divided per channel.")
    input_scale: Optional[tuple[float, ...]] = Field(None, description="Step 7: multiplied per channel (no std).")
    pad_value: float = Field(0.0, description="Step 8: value of the padding when resize_mode='pad'.")

    def __init__(self, **data: Any) -> None:
        """Validate ``data``; bad values raise ConfigError/ConfigTypeError naming the field."""
        data = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
        for key in ("mean", "std", "input_scale"):
            if isinstance(data.get(key), (int, float)) and not isinstance(data.get(key), bool):
                data[key] = (float(data[key]),)
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise translate_validation_error(exc, data, type(self).model_fields, _ALLOWED) from None

    @field_validator("resize", "crop", mode="before")
    @classmethod
    def _check_size(cls, value):
        return _size(value)

    @property
    def channels(self) -> int:
        """Number of channels the chain produces."""
        return 3 if self.color == "RGB" else 1

    @model_validator(mode="after")
    def _check_chain(self) -> "PreprocessConfig":
        channels = self.channels
        if self.channel_swap is not None and sorted(self.channel_swap) != list(range(channels)):
            raise ConfigError(f"channel_swap {list(self.channel_swap)} is not a permutation of "
                              f"{list(range(channels))} ({self.color} images have {channels} channel(s))")
        for key in ("mean", "std", "input_scale"):
            value = getattr(self, key)
            if value is not None and len(value) not in (1, channels):
                raise ConfigError(f"{key} has {len(value)} values {list(value)} but {self.color} images have "
                                  f"{channels} channel(s); give 1 value or {channels}")
        if self.std is not None and self.input_scale is not None:
            raise ConfigError("give std or input_scale, not both (x / std and x * input_scale are the same step)")
        if self.std is not None and any(v == 0 for v in self.std):
            raise ConfigError(f"std {list(self.std)} holds 0; every std value must be non-zero")
        if self.crop is not None and self.resize_mode == "pad":
            raise ConfigError("crop is not used with resize_mode='pad' (the width is padded, not cropped)")
        return self


def output_shape(config: PreprocessConfig) -> Optional[tuple[int, int, int]]:
    """Shape of one preprocessed image ((C, H, W) or (H, W, C)), or None when it depends on the image."""
    if config.crop is not None:
        height, width = config.crop
    elif config.resize is not None and config.resize_mode != "short_side":
        height, width = config.resize
    else:
        return None
    return (config.channels, height, width) if config.layout == "NCHW" else (height, width, config.channels)


# ---------------------------------------------------------------- step 1
def _resized(image: Image.Image, config: PreprocessConfig) -> Image.Image:
    if config.resize is None:
        return image
    height, width = config.resize
    if config.resize_mode == "short_side":
        factor = min(height, width) / min(image.height, image.width)
        size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    elif config.resize_mode == "pad":
        size = (min(width, int(math.ceil(height * image.width / float(image.height)))), height)
    else:
        size = (width, height)
    return image.resize(size, Image.BILINEAR)


def _cropped(image: Image.Image, crop) -> Image.Image:
    if crop is None:
        return image
    height, width = crop
    if height > image.height or width > image.width:
        raise ConfigError(f"crop {height}x{width} (height x width) is larger than the resized image "
                          f"{image.height}x{image.width}; set resize at least as large as crop")
    top, left = (image.height - height) // 2, (image.width - width) // 2
    return image.crop((left, top, left + width, top + height))


# ---------------------------------------------------------------- steps 2-8
def _per_channel(values, layout: str) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).reshape((-1, 1, 1) if layout == "NCHW" else (1, 1, -1))


def _padded(x: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    width = config.resize[1]
    axis = 2 if config.layout == "NCHW" else 1
    missing = width - x.shape[axis]
    if missing <= 0:
        return x
    pad = [(0, 0)] * 3
    pad[axis] = (0, missing)
    return np.pad(x, pad, constant_values=np.float32(config.pad_value))


def preprocess_image(image: Image.Image, config: PreprocessConfig) -> np.ndarray:
    """Apply the chain to one decoded image; returns float32 (C, H, W) or (H, W, C).

    Args:
        image: a PIL image in any mode (converted to ``config.color`` first); not modified.
        config: the chain.

    Returns:
        A new float32 array.
    """
    image = _cropped(_resized(image.convert(config.color), config), config.crop)
    x = np.asarray(image, dtype=np.float32).reshape(image.height, image.width, -1) / np.float32(255.0)
    channel_axis = 0 if config.layout == "NCHW" else 2
    if config.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    if config.channel_swap is not None:
        x = np.take(x, list(config.channel_swap), axis=channel_axis)
    x = x * np.float32(config.raw_scale)
    if config.mean is not None:
        x = x - _per_channel(config.mean, config.layout)
    if config.std is not None:
        x = x / _per_channel(config.std, config.layout)
    if config.input_scale is not None:
        x = x * _per_channel(config.input_scale, config.layout)
    if config.resize_mode == "pad" and config.resize is not None:
        x = _padded(x, config)
    return np.ascontiguousarray(x, dtype=np.float32)
