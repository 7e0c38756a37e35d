"""Evidence boxes: the strongest regions of an explanation map, in the upload's own pixels.

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

from .anatomy import image_zone_masks, zone_masks
from ..models.lungs import LungMask
from ..results import OUTSIDE_KEY, EvidenceBox

TOP_FRACTION = 0.10  # candidate pixels: the map's hottest 10%
MAX_BOXES = 3
MIN_SCORE = 0.01  # regions with less than 1% of the map's mass are not evidence worth a box
BOX_COLOR = (0, 230, 0)  # green: absent from the inferno colormap and distinct from the cyan lung outline


def zone_regions(lung: LungMask | None, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Zone key -> boolean mask at ``shape``: lung zones plus "outside lungs", or image regions without a plausible segmentation."""
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


def to_upload(rows: slice, cols: slice, map_shape: tuple[int, int], upload_shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """Map-pixel slices -> ``(x0, y0, x1, y1)`` in upload pixels (end-exclusive, covering every map pixel)."""
    sy, sx = upload_shape[0] / map_shape[0], upload_shape[1] / map_shape[1]
    return (
        int(math.floor(cols.start * sx)),
        int(math.floor(rows.start * sy)),
        min(upload_shape[1], int(math.ceil(cols.stop * sx))),
        min(upload_shape[0], int(math.ceil(rows.stop * sy))),
    )


def evidence_boxes(
    heatmap: np.ndarray, method: str, upload_shape: tuple[int, int], zones: dict[str, np.ndarray], max_boxes: int = MAX_BOXES
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


def draw_boxes(rgb: np.ndarray, boxes: tuple[EvidenceBox, ...], upload_shape: tuple[int, int]) -> np.ndarray:
    """A copy of an overlay with the boxes drawn and numbered by rank (the overlay may be a downscaled upload)."""
    out = rgb.copy()
    sy, sx = rgb.shape[0] / upload_shape[0], rgb.shape[1] / upload_shape[1]
    thickness = max(1, round(min(rgb.shape[:2]) / 200))
    for rank, box in enumerate(boxes, start=1):
        top_left = (int(box.x0 * sx), int(box.y0 * sy))
        bottom_right = (max(top_left[0], int(math.ceil(box.x1 * sx)) - 1), max(top_left[1], int(math.ceil(box.y1 * sy)) - 1))
        cv2.rectangle(out, top_left, bottom_right, BOX_COLOR, thickness)
        label_at = (top_left[0] + 2 * thickness, top_left[1] + 12 * thickness)
        cv2.putText(out, str(rank), label_at, cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, BOX_COLOR, thickness, cv2.LINE_AA)
    return out
