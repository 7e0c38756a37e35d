"""Lung zones, the side convention, outside-lung shares and the shortcut warning on synthetic lungs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xray_xai.explain.anatomy import (
    analyze_anatomy,
    image_zone_shares,
    zone_masks,
    zone_shares,
)
from xray_xai.models.lungs import LungMask, finish_mask
from xray_xai.results import OUTSIDE_KEY, ZONE_KEYS, to_jsonable

SIZE = 224


def ellipse(cy: float, cx: float, ry: float, rx: float, size: int = SIZE) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def blob(cy: float, cx: float, sigma: float = 6.0, size: int = SIZE) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)).astype(np.float32)


# Image-left lung (the PATIENT's right) spans rows 20-200; image-right lung (patient's left) rows 80-200.
IMAGE_LEFT_LUNG = ellipse(110, 65, 90, 35)
IMAGE_RIGHT_LUNG = ellipse(140, 160, 60, 35)
LUNGS = IMAGE_LEFT_LUNG | IMAGE_RIGHT_LUNG


def lung_mask(mask: np.ndarray = LUNGS) -> LungMask:
    return finish_mask(np.where(mask, 0.9, 0.1).astype(np.float32))


def test_map_on_the_image_left_lung_is_the_patients_right():
    shares = zone_shares(blob(170, 65), LUNGS)
    assert shares["right lower"] > 0.95
    assert sum(shares[z] for z in ZONE_KEYS if z.startswith("left")) < 0.01


def test_map_on_the_image_right_lung_is_the_patients_left():
    shares = zone_shares(blob(100, 160), LUNGS)
    assert shares["left upper"] > 0.95


def test_zones_are_thirds_of_each_lungs_own_extent():
    # Row 90 is in the middle third of the image-left lung (rows 20-200) but in the upper
    # third of the image-right lung (rows 80-200).
    assert max(zone_shares(blob(90, 65, 3), LUNGS).items(), key=lambda kv: kv[1])[0] == "right middle"
    assert max(zone_shares(blob(90, 160, 3), LUNGS).items(), key=lambda kv: kv[1])[0] == "left upper"


def test_zones_and_outside_partition_the_image():
    zones = zone_masks(LUNGS)
    assert set(zones) == set(ZONE_KEYS)
    coverage = sum(z.astype(int) for z in zones.values()) + (~LUNGS).astype(int)
    assert np.all(coverage == 1)


def test_shares_sum_to_one_and_have_the_documented_keys():
    heatmap = np.random.default_rng(0).random((SIZE, SIZE)).astype(np.float32)
    shares = zone_shares(heatmap, LUNGS)
    assert set(shares) == set(ZONE_KEYS) | {OUTSIDE_KEY}
    assert sum(shares.values()) == pytest.approx(1.0)
    # A uniform map puts the non-lung area fraction outside.
    assert zone_shares(np.ones((SIZE, SIZE)), LUNGS)[OUTSIDE_KEY] == pytest.approx(1 - LUNGS.mean())


def test_negative_values_do_not_count_and_an_empty_map_has_no_shares():
    heatmap = blob(170, 65) - blob(20, 20)  # negative evidence outside the lungs
    assert zone_shares(heatmap, LUNGS)[OUTSIDE_KEY] < 0.01
    assert all(v == 0 for v in zone_shares(np.zeros((SIZE, SIZE)), LUNGS).values())


def test_a_coarse_map_is_resized_to_the_mask():
    coarse = np.zeros((7, 7), dtype=np.float32)
    coarse[5, 1] = 1.0  # lower part of the image-left lung
    shares = zone_shares(coarse, LUNGS)
    assert max(shares.items(), key=lambda kv: kv[1])[0] == "right lower"


def test_image_zone_fallback_keeps_the_side_convention():
    shares = image_zone_shares(blob(30, 40))
    assert set(shares) == set(ZONE_KEYS)
    assert shares["right upper"] > 0.95
    assert image_zone_shares(blob(200, 200))["left lower"] > 0.95


def test_shortcut_warning_fires_outside_the_lungs_and_not_inside():
    outside = blob(10, 112, 8)  # top border between the lungs
    inside = blob(150, 65) + blob(150, 160)
    anatomy = analyze_anatomy(
        {"gradcam": inside, "occlusion": outside}, lung_mask(), {"gradcam": 0.5, "occlusion": 0.5}
    )
    assert anatomy.segmentation_ok
    assert anatomy.shortcut_warning
    assert anatomy.shortcut_methods == ("occlusion",)
    assert anatomy.outside_lung_share["occlusion"] > 0.9
    assert anatomy.outside_lung_share["gradcam"] < 0.1
    assert anatomy.lung_area_fraction == pytest.approx(LUNGS.mean(), abs=0.01)
    assert not analyze_anatomy({"gradcam": inside}, lung_mask()).shortcut_warning


def test_shortcut_threshold_is_a_parameter():
    outside = blob(10, 112, 8)
    assert analyze_anatomy({"gradcam": outside}, lung_mask()).shortcut_warning
    assert not analyze_anatomy({"gradcam": outside}, lung_mask(), {"gradcam": 1.0}).shortcut_warning


@pytest.mark.parametrize(
    "mask",
    [IMAGE_LEFT_LUNG, np.zeros((SIZE, SIZE), dtype=bool), ellipse(112, 112, 80, 90)],
    ids=["one lung", "empty", "one central blob"],
)
def test_fallback_when_segmentation_fails_its_check(mask):
    lung = lung_mask(mask)
    assert not lung.ok and lung.note
    anatomy = analyze_anatomy({"gradcam": blob(10, 112, 8)}, lung)
    assert not anatomy.segmentation_ok
    assert lung.note in anatomy.segmentation_note
    assert not anatomy.shortcut_warning and anatomy.outside_lung_share == {}
    assert set(anatomy.zones["gradcam"]) == set(ZONE_KEYS)
    json.dumps(to_jsonable(anatomy))


def test_fallback_without_segmentation():
    anatomy = analyze_anatomy({"gradcam": blob(30, 40)}, None)
    assert not anatomy.segmentation_ok and anatomy.lung_area_fraction is None
    assert anatomy.zones["gradcam"]["right upper"] > 0.95
