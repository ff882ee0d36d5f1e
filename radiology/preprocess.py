"""The one place where images become model inputs, shared by training, evaluation and the app."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class PreprocessSpec:
    """How a grayscale image becomes a model input.

    The default reproduces the original notebook: 224x224 RGB rescaled by 1/255.

    Attributes:
        height: input height in pixels.
        width: input width in pixels.
        channels: 3 replicates the grayscale image into RGB; 1 keeps it single-channel.
        rescale: factor applied to the uint8 pixel values.
    """

    height: int = 224
    width: int = 224
    channels: int = 3
    rescale: float = 1.0 / 255.0

    def to_dict(self) -> dict:
        """Returns the spec as JSON-ready data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessSpec:
        """Builds a spec from :meth:`to_dict` output, ignoring unknown keys."""
        return cls(**{k: data[k] for k in ("height", "width", "channels", "rescale") if k in data})

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The model's input shape (H, W, C)."""
        return (self.height, self.width, self.channels)


def resize(gray: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Resizes a grayscale image to the spec's input size with bilinear filtering.

    Args:
        gray: uint8 array of shape (H, W).
        spec: the model's preprocessing spec.

    Returns:
        uint8 array of shape (spec.height, spec.width).
    """
    if gray.shape == (spec.height, spec.width):
        return gray
    image = Image.fromarray(gray, mode="L")
    return np.asarray(image.resize((spec.width, spec.height), Image.BILINEAR), dtype=np.uint8)


def fit_within(gray: np.ndarray, max_side: int) -> np.ndarray:
    """Shrinks an image, keeping its aspect ratio, so that neither side exceeds ``max_side``; for display.

    Args:
        gray: uint8 array of shape (H, W).
        max_side: the largest side wanted.

    Returns:
        uint8 array; the input itself when it already fits.
    """
    h, w = gray.shape
    if max(h, w) <= max_side:
        return gray
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(gray, mode="L").resize(size, Image.BILINEAR), dtype=np.uint8)


def to_model_input(resized: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Turns resized grayscale images into the model's float input.

    Args:
        resized: uint8 array of shape (N, H, W) or (H, W), already at the spec's size.
        spec: the model's preprocessing spec.

    Returns:
        float32 array of shape (N, H, W, C).
    """
    batch = np.asarray(resized)
    if batch.ndim == 2:
        batch = batch[None]
    x = batch.astype(np.float32) * np.float32(spec.rescale)
    return np.repeat(x[..., None], spec.channels, axis=-1)


def preprocess(gray: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Resizes one grayscale image and returns it as a batch of one model input.

    Args:
        gray: uint8 array of shape (H, W).
        spec: the model's preprocessing spec.

    Returns:
        float32 array of shape (1, H, W, C).
    """
    return to_model_input(resize(gray, spec), spec)
