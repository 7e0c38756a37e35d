"""Image-level out-of-distribution checks and their combination with the feature distance."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
from fuzz_corpus import encode, synthetic_radiograph, to_uint8
from PIL import Image

from xray_xai.checkpoint import PROJECT_ROOT
from xray_xai.imaging import LoadedImage, load_image
from xray_xai.models.ood import CHEST_TEMPLATE, MAX_ASPECT, assess_ood, image_stats, quality_reasons
from xray_xai.results import OODResult, to_jsonable

CHEST = load_image(encode(synthetic_radiograph(240, 300), "PNG"))


def _with(pixels: np.ndarray) -> LoadedImage:
    return replace(CHEST, pixels=np.ascontiguousarray(pixels, dtype=np.float32))


def _reasons_text(image: LoadedImage) -> str:
    return " ".join(quality_reasons(image)).lower()


@pytest.mark.parametrize("seed,shape", [(0, (240, 300)), (1, (300, 240)), (2, (480, 640)), (3, (224, 224))])
def test_radiograph_like_images_are_not_flagged(seed, shape):
    image = load_image(encode(synthetic_radiograph(*shape, seed=seed), "JPEG", quality=90))
    assert quality_reasons(image) == []
    result = assess_ood(image)
    assert result == OODResult(flagged=False, reasons=(), distance=None, threshold=None)


def test_colour_photographs_are_flagged():
    chest = to_uint8(CHEST.pixels)
    tinted = np.stack([chest, (chest * 0.7).astype(np.uint8), (chest * 0.3).astype(np.uint8)], axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(tinted).save(buffer, "PNG")
    assert "colour" in _reasons_text(load_image(buffer.getvalue()))


def test_inverted_radiographs_are_flagged():
    assert "inverted" in _reasons_text(_with(1.0 - CHEST.pixels))


@pytest.mark.parametrize("turns,expected", [(1, "counter-clockwise"), (2, "upside down"), (3, "clockwise")])
def test_rotated_radiographs_are_flagged(turns, expected):
    text = _reasons_text(_with(np.rot90(CHEST.pixels, turns)))
    assert expected in text and "inverted" not in text


def test_inverted_and_rotated_radiographs_get_both_reasons():
    text = _reasons_text(_with(np.rot90(1.0 - CHEST.pixels)))
    assert "inverted" in text and "rotated" in text


@pytest.mark.parametrize("level", [0.0, 0.5, 1.0])
def test_near_uniform_images_are_flagged(level):
    rng = np.random.default_rng(0)
    pixels = np.clip(level + rng.normal(0, 0.01, (256, 256)), 0, 1)
    assert quality_reasons(_with(pixels)) == [quality_reasons(_with(pixels))[0]]
    assert "uniform" in _reasons_text(_with(pixels))


@pytest.mark.parametrize("side", [64, 256, 1500])
def test_noise_images_are_flagged(side):
    pixels = np.random.default_rng(side).random((side, side))
    assert "noise" in _reasons_text(_with(pixels))


def test_extreme_aspect_ratios_are_flagged():
    wide = np.asarray(Image.fromarray(CHEST.pixels).resize((int(240 * (MAX_ASPECT + 0.5)), 240)))
    assert "long and narrow" in _reasons_text(_with(wide))
    tall = wide.T
    assert "long and narrow" in _reasons_text(_with(tall))


def test_image_stats_of_a_radiograph():
    stats = image_stats(CHEST)
    assert stats.colourfulness == 0.0 and stats.aspect == pytest.approx(300 / 240)
    assert stats.template_match[0] == max(stats.template_match) and stats.template_match[0] > 0.7
    assert stats.smoothness > 0.8 and stats.contrast > 0.1


def test_template_is_z_scored():
    assert CHEST_TEMPLATE.shape == (8, 8)
    assert abs(CHEST_TEMPLATE.mean()) < 0.01 and CHEST_TEMPLATE.std() == pytest.approx(1.0, abs=0.01)


def test_feature_distance_above_threshold_flags_a_radiograph():
    result = assess_ood(CHEST, feature_distance=42.5, threshold=30.0)
    assert result.flagged and result.distance == 42.5 and result.threshold == 30.0
    assert len(result.reasons) == 1 and "42.5" in result.reasons[0] and "30.0" in result.reasons[0]
    assert to_jsonable(result)["reasons"] == list(result.reasons)


def test_feature_distance_below_threshold_does_not_flag():
    result = assess_ood(CHEST, feature_distance=12.0, threshold=30.0)
    assert not result.flagged and result.reasons == () and result.distance == 12.0


def test_heuristic_and_feature_reasons_combine():
    result = assess_ood(_with(1.0 - CHEST.pixels), feature_distance=99.0, threshold=30.0)
    assert result.flagged and len(result.reasons) == 2
    assert isinstance(result.reasons, tuple) and all(isinstance(r, str) for r in result.reasons)


EXAMPLES = sorted((PROJECT_ROOT / "examples").glob("*/*.jpeg"))


@pytest.mark.skipif(not EXAMPLES, reason="no example radiographs in examples/")
def test_real_example_radiographs_pass_and_their_rotations_and_negatives_do_not():
    for path in EXAMPLES:
        image = load_image(path)
        assert quality_reasons(image) == [], path.name
        assert "inverted" in _reasons_text(replace(image, pixels=1.0 - image.pixels)), path.name
        for turns in (1, 2, 3):
            rotated = replace(image, pixels=np.ascontiguousarray(np.rot90(image.pixels, turns)))
            assert "rotated" in _reasons_text(rotated), (path.name, turns)
