"""The one preprocessing path from a decoded radiograph to model input.

Training, evaluation, the CLI and the app all call :func:`preprocess`, so what the model sees
at serving time is what it saw in training. The training images were made by squashing the
whole radiograph into a square (aspect ratio not kept, bicubic), so uploads are squashed the
same way, with the same antialiased bicubic filter.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def to_model_size(pixels: np.ndarray, size: int) -> np.ndarray:
    """Squash a 2-D grayscale image in [0, 1] to ``size`` x ``size`` (float32, clipped to [0, 1])."""
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale array, got shape {pixels.shape}")
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.shape != (size, size):
        pixels = np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BICUBIC))
    return np.clip(pixels, 0.0, 1.0).astype(np.float32, copy=False)


def normalize(pixels, mean: float, std: float):
    """Standardise [0, 1] pixels (a numpy array or a torch tensor, dtype kept)."""
    return (pixels - mean) / std


def preprocess(pixels: np.ndarray, size: int, mean: float, std: float) -> np.ndarray:
    """Grayscale [0, 1] image of any size -> normalised ``(size, size)`` float32 model input."""
    return normalize(to_model_size(pixels, size), mean, std)


def read_dataset_image(path) -> np.ndarray:
    """Fast reader for the training set's 8-bit files: grayscale float32 in [0, 1].

    Uploads go through :func:`xray_xai.imaging.load_image`, which handles every format.
    """
    with Image.open(path) as image:
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
