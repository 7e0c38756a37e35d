"""Where a heatmap falls relative to the lungs: zones, the share outside the lungs, shortcut warnings.

Pure functions on arrays in the classifier's squashed input frame (heatmap and lung mask of the
same size). Sides are the PATIENT's: radiographs are displayed facing the viewer, so the
patient's right lung is the one on the IMAGE's left. Upper, middle and lower zones are thirds of
each lung's own vertical extent.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..models.lungs import LungMask, components, on_patient_right
from ..results import LEVELS, OUTSIDE_KEY, SIDES, Anatomy

# Used for a method the lung card has no calibrated threshold for. The lung outlines include the
# heart, so a map spread uniformly over a typical radiograph (lungs ~33% of it) already has ~67%
# of its mass outside; more than 50% outside means most evidence is not on the lung fields.
DEFAULT_SHORTCUT_THRESHOLD = 0.5


def lung_sides(lung_mask: np.ndarray) -> dict[str, np.ndarray]:
    """Split a lung mask into the patient's right and left lung by each region's centre column."""
    lung_mask = np.asarray(lung_mask, dtype=bool)
    sides = {side: np.zeros_like(lung_mask) for side in SIDES}
    for region in components(lung_mask):
        sides["right" if on_patient_right(region) else "left"] |= region
    return sides


def thirds(rows_mask: np.ndarray, height: int) -> np.ndarray:
    """Level index (0 upper, 1 middle, 2 lower) of every row, by thirds of the rows where ``rows_mask`` is set."""
    rows = np.nonzero(rows_mask)[0]
    top, extent = rows[0], rows[-1] - rows[0] + 1
    return np.clip(((np.arange(height) - top) * 3) // extent, 0, 2)


def zone_masks(lung_mask: np.ndarray) -> dict[str, np.ndarray]:
    """The six lung zones as boolean masks (a zone is empty when its lung is missing)."""
    height = lung_mask.shape[0]
    out = {}
    for side, region in lung_sides(lung_mask).items():
        level = thirds(region.any(axis=1), height) if region.any() else np.zeros(height, dtype=int)
        for index, name in enumerate(LEVELS):
            out[f"{side} {name}"] = region & (level == index)[:, None]
    return out


def image_zone_masks(shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """The same six keys on the whole image: halves (image left = patient's right) and thirds."""
    height, width = shape
    level = thirds(np.ones(height, dtype=bool), height)
    left_half = np.arange(width) < width / 2
    out = {}
    for side, columns in zip(SIDES, (left_half, ~left_half), strict=True):
        for index, name in enumerate(LEVELS):
            out[f"{side} {name}"] = (level == index)[:, None] & columns[None, :]
    return out


def _mass(heatmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Non-negative heatmap at ``shape`` (negative evidence is not a location of this class)."""
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 2:
        raise ValueError(f"expected a 2-D heatmap, got shape {heatmap.shape}")
    if heatmap.shape != tuple(shape):
        heatmap = np.asarray(Image.fromarray(heatmap).resize((shape[1], shape[0]), Image.Resampling.BILINEAR))
    return np.clip(np.nan_to_num(heatmap), 0, None).astype(np.float64)


def _shares(mass: np.ndarray, regions: dict[str, np.ndarray]) -> dict[str, float]:
    total = mass.sum()
    return {name: float(mass[region].sum() / total) if total > 0 else 0.0 for name, region in regions.items()}


def zone_shares(heatmap: np.ndarray, lung_mask: np.ndarray) -> dict[str, float]:
    """Share of heatmap mass in each lung zone and outside both lungs (sums to 1; all 0 for an empty map).

    The heatmap is resized to the mask's size if needed; negative values count as zero.
    """
    lung_mask = np.asarray(lung_mask, dtype=bool)
    regions = zone_masks(lung_mask)
    regions[OUTSIDE_KEY] = ~lung_mask
    return _shares(_mass(heatmap, lung_mask.shape), regions)


def image_zone_shares(heatmap: np.ndarray) -> dict[str, float]:
    """Fallback when segmentation failed: shares by image halves and thirds (no "outside lungs")."""
    mass = _mass(heatmap, np.shape(heatmap))
    return _shares(mass, image_zone_masks(mass.shape))


def analyze_anatomy(
    maps: dict[str, np.ndarray], lung: LungMask | None, shortcut_threshold: dict[str, float] | None = None
) -> Anatomy:
    """Zones, outside-lung shares and the shortcut warning for each explanation map.

    ``maps`` are heatmaps by method name ("gradcam", "occlusion") in the classifier's input
    frame. A method is flagged when its share outside the lungs exceeds its threshold
    (``shortcut_threshold[method]``, else :data:`DEFAULT_SHORTCUT_THRESHOLD`). Without a
    plausible segmentation, zones fall back to image regions and nothing is flagged.
    """
    if lung is None or not lung.ok:
        note = "Lung segmentation unavailable." if lung is None else lung.note
        return Anatomy(
            segmentation_ok=False,
            segmentation_note=f"{note} Locations refer to image regions, not lungs.",
            zones={method: image_zone_shares(heatmap) for method, heatmap in maps.items()},
        )
    thresholds = shortcut_threshold or {}
    zones = {method: zone_shares(heatmap, lung.mask) for method, heatmap in maps.items()}
    outside = {method: shares[OUTSIDE_KEY] for method, shares in zones.items()}
    flagged = tuple(m for m, share in outside.items() if share > thresholds.get(m, DEFAULT_SHORTCUT_THRESHOLD))
    return Anatomy(
        segmentation_ok=True,
        lung_area_fraction=lung.area_fraction,
        outside_lung_share=outside,
        zones=zones,
        shortcut_warning=bool(flagged),
        shortcut_methods=flagged,
    )
