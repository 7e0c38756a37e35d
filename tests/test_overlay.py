"""Overlays: original size and aspect ratio, colormap blending, lung outline, legends."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from matplotlib import colormaps

from xray_xai.ui.overlay import LEGEND, OUTLINE_COLOR, contour, overlay, resize_map


def test_returns_the_original_size_from_a_model_size_map():
    pixels = np.random.default_rng(0).random((300, 500)).astype(np.float32)
    heat = np.zeros((224, 224), np.float32)
    heat[:, :112] = 1.0  # left half hot at model size
    rgb = overlay(pixels, heat)
    assert rgb.shape == (300, 500, 3) and rgb.dtype == np.uint8
    gray = np.rint(pixels * 255)
    assert np.array_equal(rgb[:, 300:, 0], gray[:, 300:])  # cold right part stays the plain radiograph
    assert not np.array_equal(rgb[:, :200, 0], gray[:, :200])


def test_opacity_blends_the_colormap():
    pixels = np.full((10, 10), 0.5, np.float32)
    heat = np.ones((10, 10), np.float32)
    assert np.array_equal(overlay(pixels, heat, opacity=0.0), np.full((10, 10, 3), 128, np.uint8))
    full = overlay(pixels, heat, opacity=1.0)
    expected = np.rint(255 * np.array(colormaps["inferno"](1.0)[:3])).astype(np.uint8)
    assert np.array_equal(full[0, 0], expected)
    with pytest.raises(ValueError):
        overlay(pixels, heat, opacity=1.5)


def test_cold_regions_are_tinted_only_without_fading():
    pixels = np.full((8, 8), 0.8, np.float32)
    cold = np.zeros((8, 8), np.float32)
    assert np.array_equal(overlay(pixels, cold)[..., 0], np.full((8, 8), 204))
    assert (overlay(pixels, cold, fade_cold=False)[..., 0] < 204).all()  # inferno's dark end shows


def test_outline_draws_a_thin_contour_of_the_mask():
    pixels = np.zeros((512, 400), np.float32)
    mask = np.zeros((64, 64), bool)
    mask[16:48, 8:24] = True
    rgb = overlay(pixels, np.zeros((64, 64)), outline=mask)
    drawn = (rgb == OUTLINE_COLOR).all(axis=-1)
    big = cv2.resize(mask.astype(np.uint8), (400, 512), interpolation=cv2.INTER_NEAREST) > 0
    assert drawn.any() and not drawn[~big].any()  # only on the mask ...
    assert not drawn[200:300, 80:130].any()  # ... and not its interior
    assert drawn.sum() < 0.2 * big.sum()


def test_contour_thickness_scales_with_the_image():
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    assert contour(mask, (20, 20)).sum() == 36  # 1-px ring of a 10x10 square
    assert contour(mask, (1024, 1024)).sum() > 36 * 51.2 * 3


def test_resize_map():
    heat = np.arange(16, dtype=np.float32).reshape(4, 4)
    assert resize_map(heat, (8, 6)).shape == (8, 6)
    assert resize_map(heat, (2, 2)).tolist() == [
        [2.5, 4.5],
        [10.5, 12.5],
    ]  # area average
    assert resize_map(heat, (4, 4)) is not heat


def test_legends_fill_in():
    assert "PNEUMONIA" in LEGEND["cam"].format(label="PNEUMONIA", method="Grad-CAM")
    assert "NORMAL" in LEGEND["occlusion"].format(label="NORMAL")
    assert all("\n" not in text for text in LEGEND.values())
