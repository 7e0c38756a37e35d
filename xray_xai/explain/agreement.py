"""Do Grad-CAM and occlusion point at the same regions?

Both maps are area-averaged down to the occlusion grid (occlusion cannot resolve anything
finer), then compared by Spearman rank correlation (do they order regions alike?) and by the
IoU of their top-20% cells (do their hot spots overlap?). Two independent maps have an
expected top-20% IoU of 0.2 * 0.2 / (0.2 + 0.2 - 0.04) = 0.11 and a Spearman correlation of 0.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..results import Agreement, Region

TOP_FRACTION = 0.2
# Verdict thresholds. "agree": a clear rank correlation AND hot spots that overlap well
# beyond chance (0.11). "disagree": rank correlation near zero OR hot spots overlapping
# barely above chance. Anything in between: "partly agree".
AGREE_SPEARMAN = 0.5
AGREE_IOU = 0.4
DISAGREE_SPEARMAN = 0.2
DISAGREE_IOU = 0.15


def agreement(
    cam_map: np.ndarray,
    occlusion_map: np.ndarray,
    grid: tuple[int, int],
    region: Region | None = None,
) -> Agreement:
    """Compare two same-size maps at ``grid`` = (rows, cols) resolution, optionally only inside ``region``.

    ``region`` = (y0, y1, x0, x1) restricts the comparison to a box, e.g. the box an occlusion
    run was limited to (its map is 0 outside); ``grid`` then refers to that box.
    """
    if cam_map.shape != occlusion_map.shape:
        raise ValueError(f"maps differ in shape: {cam_map.shape} vs {occlusion_map.shape}")
    if region is not None:
        y0, y1, x0, x1 = region
        cam_map, occlusion_map = cam_map[y0:y1, x0:x1], occlusion_map[y0:y1, x0:x1]
    a, b = downsample(cam_map, grid).ravel(), downsample(occlusion_map, grid).ravel()
    from scipy.stats import spearmanr  # on first use: scipy.stats adds ~1 s to the app's start-up

    rho = spearmanr(a, b).statistic if a.std() > 0 and b.std() > 0 else math.nan
    rho = 0.0 if math.isnan(rho) else float(rho)  # a constant map orders nothing
    top_a, top_b = top_mask(a, TOP_FRACTION), top_mask(b, TOP_FRACTION)
    iou = float((top_a & top_b).sum() / (top_a | top_b).sum())
    return Agreement(
        spearman=rho,
        top20_iou=iou,
        verdict=verdict(rho, iou),
        grid=(int(grid[0]), int(grid[1])),
    )


def downsample(heatmap: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Area-average a 2-D map down to ``grid`` = (rows, cols)."""
    rows, cols = grid
    return cv2.resize(
        np.asarray(heatmap, dtype=np.float32),
        (cols, rows),
        interpolation=cv2.INTER_AREA,
    )


def top_mask(values: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask of the ``ceil(fraction * n)`` largest values (ties broken by position)."""
    k = max(1, math.ceil(fraction * values.size))
    mask = np.zeros(values.size, dtype=bool)
    mask[np.argsort(-values.ravel(), kind="stable")[:k]] = True
    return mask.reshape(values.shape)


def verdict(spearman: float, iou: float) -> str:
    if spearman >= AGREE_SPEARMAN and iou >= AGREE_IOU:
        return "agree"
    if spearman < DISAGREE_SPEARMAN or iou < DISAGREE_IOU:
        return "disagree"
    return "partly agree"
