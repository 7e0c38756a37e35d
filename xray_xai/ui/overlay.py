"""Heatmaps drawn over the radiograph, as lossless uint8 RGB arrays (PNG encoding is the app's job).

Maps made at the model's square input size are resized back to the original upload's size
and aspect ratio (the model input squashes the image, so resizing the map undoes exactly that).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import cv2
import numpy as np

from ..results import EvidenceBox

# One-line legends; fill in with .format(label=..., method=...).
LEGEND = {
    "cam": "Brighter = stronger evidence for {label} ({method}, scaled 0-1 per image).",
    "occlusion": (
        "Brighter = hiding this area lowers the probability of {label} more "
        "(occlusion, scaled to this image's largest drop)."
    ),
}
OUTLINE_COLOR = (0, 255, 255)  # cyan: absent from perceptually uniform maps like inferno
BOX_COLOR = (0, 230, 0)  # green: absent from the inferno colormap and distinct from the cyan lung outline


def resize_map(heatmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a 2-D float map to ``shape`` = (rows, cols): area-averaging down, bilinear up."""
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.shape == tuple(shape):
        return heatmap.copy()
    shrink = shape[0] <= heatmap.shape[0] and shape[1] <= heatmap.shape[1]
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(heatmap, (shape[1], shape[0]), interpolation=interpolation)


def overlay(
    pixels: np.ndarray,
    heatmap: np.ndarray,
    opacity: float = 0.45,
    colormap: str = "inferno",
    outline: np.ndarray | None = None,
    fade_cold: bool = True,
) -> np.ndarray:
    """A heatmap (any size, values in [0, 1], clipped) over a grayscale image in [0, 1].

    Returns uint8 ``(H, W, 3)`` at the image's own size. Each pixel blends the colormap with
    weight ``opacity`` (times the heat when ``fade_cold``, so cold regions keep the plain
    radiograph). ``outline`` is an optional boolean mask (any size, e.g. the lung fields)
    drawn as a thin contour.
    """
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {pixels.shape}")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    from matplotlib import colormaps  # here: the app's page is served without matplotlib

    gray = np.clip(np.asarray(pixels, dtype=np.float32), 0.0, 1.0)[..., None]
    heat = np.clip(np.nan_to_num(resize_map(heatmap, gray.shape[:2])), 0.0, 1.0)
    colors = colormaps[colormap](heat)[..., :3].astype(np.float32)
    alpha = (opacity * heat if fade_cold else np.full_like(heat, opacity))[..., None]
    rgb = np.rint(255.0 * ((1.0 - alpha) * gray + alpha * colors)).astype(np.uint8)
    if outline is not None:
        rgb[contour(outline, gray.shape[:2])] = OUTLINE_COLOR
    return rgb


def contour(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The inner boundary of a boolean mask resized to ``shape``, about 1 px per 256 px of image."""
    mask = cv2.resize(
        np.asarray(mask, dtype=np.uint8),
        (shape[1], shape[0]),
        interpolation=cv2.INTER_NEAREST,
    )
    thickness = max(1, round(min(shape) / 256))
    eroded = cv2.erode(
        mask,
        np.ones((2 * thickness + 1, 2 * thickness + 1), np.uint8),
        borderType=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return (mask > 0) & (eroded == 0)


def draw_boxes(rgb: np.ndarray, boxes: tuple[EvidenceBox, ...], upload_shape: tuple[int, int]) -> np.ndarray:
    """A copy of an overlay with the boxes drawn and numbered by rank (the overlay may be a downscaled upload)."""
    out = rgb.copy()
    sy, sx = rgb.shape[0] / upload_shape[0], rgb.shape[1] / upload_shape[1]
    thickness = max(1, round(min(rgb.shape[:2]) / 200))
    for rank, box in enumerate(boxes, start=1):
        top_left = (int(box.x0 * sx), int(box.y0 * sy))
        bottom_right = (
            max(top_left[0], int(math.ceil(box.x1 * sx)) - 1),
            max(top_left[1], int(math.ceil(box.y1 * sy)) - 1),
        )
        cv2.rectangle(out, top_left, bottom_right, BOX_COLOR, thickness)
        label_at = (top_left[0] + 2 * thickness, top_left[1] + 12 * thickness)
        cv2.putText(
            out, str(rank), label_at, cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, BOX_COLOR, thickness, cv2.LINE_AA
        )
    return out


def draw_result(
    result, opacity: float = 0.45, outline: bool = True, maps: Iterable[str] | None = None, boxes: bool = True
) -> dict[str, np.ndarray]:
    """RGB uint8 overlays of a :class:`xray_xai.pipeline.Result` on the upload's own aspect ratio, one
    per map (or per name in ``maps``), with the lung outline when ``outline`` and the segmentation
    is plausible, and each map's evidence boxes when ``boxes``. Only draws: the maps are computed."""
    contour = result.lung.mask if (outline and result.lung is not None and result.lung.ok) else None
    names = result.maps if maps is None else maps
    drawn = {name: overlay(result.pixels, result.maps[name], opacity=opacity, outline=contour) for name in names}
    if not boxes:
        return drawn
    frame = result.upload_shape or result.pixels.shape
    return {
        name: draw_boxes(rgb, tuple(b for b in result.analysis.boxes if b.method == name), frame)
        for name, rgb in drawn.items()
    }
