"""Evidence boxes: the strongest regions of an explanation map, in the upload's own pixels (drawn by
:func:`xray_xai.ui.overlay.draw_boxes`).

The hottest part of a map (its top :data:`TOP_FRACTION` of pixels with positive values) is
split into connected regions; the up to :data:`MAX_BOXES` regions holding the most of the
map's positive mass become boxes. Maps live in the model's square input, which is the whole
upload squashed, so a map pixel ``(r, c)`` of an ``S x S`` map covers rows
``[r H / S, (r + 1) H / S)`` and columns ``[c W / S, (c + 1) W / S)`` of an ``H x W`` upload.
Each box is named by the lung zone (or image region, without a plausible segmentation) that
holds most of its region's mass, with the zones of :mod:`xray_xai.explain.anatomy`.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from scipy import ndimage

from ..models.lungs import LungMask
from ..results import OUTSIDE_KEY, EvidenceBox
from .anatomy import image_zone_masks, zone_masks

TOP_FRACTION = 0.10  # candidate pixels: the map's hottest 10%
MAX_BOXES = 3
MIN_SCORE = 0.01  # regions with less than 1% of the map's mass are not evidence worth a box


def zone_regions(lung: LungMask | None, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Zone key -> boolean mask at ``shape``: lung zones plus "outside lungs", or image regions
    without a plausible segmentation."""
    if lung is None or not lung.ok:
        return image_zone_masks(shape)
    mask = cv2.resize(lung.mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST).astype(bool)
    return {**zone_masks(mask), OUTSIDE_KEY: ~mask}


def top_regions(heatmap: np.ndarray, top_fraction: float = TOP_FRACTION) -> tuple[np.ndarray, int]:
    """Connected regions (``scipy.ndimage.label``, 8-connected) of the map's hottest positive pixels."""
    positive = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float64)), 0, None)
    if not positive.any():
        return np.zeros(positive.shape, dtype=np.int32), 0
    threshold = np.quantile(positive, 1.0 - top_fraction)
    return ndimage.label((positive >= threshold) & (positive > 0), structure=np.ones((3, 3)))


def to_upload(
    rows: slice, cols: slice, map_shape: tuple[int, int], upload_shape: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Map-pixel slices -> ``(x0, y0, x1, y1)`` in upload pixels (end-exclusive, covering every map pixel)."""
    sy, sx = upload_shape[0] / map_shape[0], upload_shape[1] / map_shape[1]
    return (
        int(math.floor(cols.start * sx)),
        int(math.floor(rows.start * sy)),
        min(upload_shape[1], int(math.ceil(cols.stop * sx))),
        min(upload_shape[0], int(math.ceil(rows.stop * sy))),
    )


def evidence_boxes(
    heatmap: np.ndarray,
    method: str,
    upload_shape: tuple[int, int],
    zones: dict[str, np.ndarray],
    max_boxes: int = MAX_BOXES,
) -> tuple[EvidenceBox, ...]:
    """Up to ``max_boxes`` boxes around the map's strongest regions, strongest first.

    ``score`` is the share of the map's positive mass inside the region; ``zones`` are
    :func:`zone_regions` at the map's shape.
    """
    mass = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float64)), 0, None)
    labels, count = top_regions(mass)
    if count == 0:
        return ()
    shares = ndimage.sum_labels(mass, labels, index=np.arange(1, count + 1)) / mass.sum()
    slices = ndimage.find_objects(labels)
    boxes = []
    for k in np.argsort(-shares, kind="stable")[:max_boxes]:
        if shares[k] < MIN_SCORE:
            break
        region = labels == k + 1
        zone = max(zones, key=lambda name: mass[region & zones[name]].sum())
        x0, y0, x1, y1 = to_upload(*slices[k], mass.shape, upload_shape)
        boxes.append(EvidenceBox(method, x0, y0, x1, y1, round(float(shares[k]), 4), zone))
    return tuple(boxes)
