"""Agreement between two maps: Spearman at the occlusion grid, top-20% IoU, verdict."""

from __future__ import annotations

import numpy as np
import pytest

from xray_xai.explain import agreement as agr
from xray_xai.explain.agreement import agreement, downsample, top_mask, verdict


def smooth_map(seed: int, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    cy, cx = rng.random(2)
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.05).astype(np.float32)


def test_identical_maps_agree():
    a = smooth_map(0)
    result = agreement(a, a.copy(), (8, 8))
    assert result.spearman == pytest.approx(1.0) and result.top20_iou == 1.0
    assert result.verdict == "agree" and result.grid == (8, 8)


def test_inverted_maps_disagree():
    a = smooth_map(0)
    result = agreement(a, -a, (8, 8))
    assert result.spearman == pytest.approx(-1.0) and result.top20_iou == 0.0
    assert result.verdict == "disagree"


def test_rescaling_changes_nothing():
    a = smooth_map(1)
    result = agreement(a, 0.3 * a - 0.01, (7, 7))
    assert result.spearman == pytest.approx(1.0) and result.top20_iou == 1.0


def test_distant_hot_spots_disagree():
    a, b = np.zeros((64, 64), np.float32), np.zeros((64, 64), np.float32)
    yy, xx = np.mgrid[0:64, 0:64]
    a += np.exp(-((yy - 10) ** 2 + (xx - 10) ** 2) / 50.0)
    b += np.exp(-((yy - 54) ** 2 + (xx - 54) ** 2) / 50.0)
    assert agreement(a, b, (8, 8)).verdict == "disagree"


def test_constant_map_has_no_rank_information():
    a = smooth_map(2)
    result = agreement(a, np.zeros_like(a), (8, 8))
    assert result.spearman == 0.0 and result.verdict == "disagree"


def test_compared_at_the_grid_resolution():
    fine = np.zeros((64, 64), np.float32)
    fine[::2, ::2] = 1.0  # a checkerboard-like pattern finer than the grid
    assert np.allclose(downsample(fine, (8, 8)), 0.25)
    assert downsample(np.ones((224, 224)), (13, 13)).shape == (13, 13)


def test_region_restricts_the_comparison():
    a = smooth_map(3)
    b = a.copy()
    b[:, 32:] = np.random.default_rng(0).random((64, 32))  # noise outside the region
    assert agreement(a, b, (8, 4), region=(0, 64, 0, 32)).spearman == pytest.approx(1.0)


def test_top_mask_takes_the_top_fifth():
    values = np.arange(10.0)
    assert list(np.flatnonzero(top_mask(values, 0.2))) == [8, 9]


@pytest.mark.parametrize(
    "rho,iou,expected",
    [
        (agr.AGREE_SPEARMAN, agr.AGREE_IOU, "agree"),
        (0.9, agr.AGREE_IOU - 0.01, "partly agree"),
        (agr.AGREE_SPEARMAN - 0.01, 0.9, "partly agree"),
        (agr.DISAGREE_SPEARMAN - 0.01, 0.9, "disagree"),
        (0.9, agr.DISAGREE_IOU - 0.01, "disagree"),
    ],
)
def test_verdict_thresholds(rho, iou, expected):
    assert verdict(rho, iou) == expected


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        agreement(np.zeros((8, 8)), np.zeros((9, 9)), (4, 4))
