"""Lung-field segmentation: where the lungs are on a radiograph, and whether that answer is plausible.

A small U-Net (segmentation-models-pytorch, timm encoder, random initialisation: nothing is
ever downloaded) trained on the lung masks of the training images. The mask is returned at the
classifier's input size in the same squashed frame as the heatmaps, so both can be compared
pixel by pixel. Every prediction passes a plausibility check (two lung fields of plausible size,
one on each image half, side by side); when it fails the mask is still returned for display but
``ok`` is False and ``note`` says why, so callers fall back to image zones instead of naming
wrong anatomy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from ..checkpoint import DEFAULT_LUNG_CHECKPOINT, Card, load_tensors, read_card
from ..preprocess import preprocess

THRESHOLD = 0.5  # on the lung probability; ``LungMask.mask == LungMask.probability > THRESHOLD``


@dataclass(frozen=True)
class PlausibilityRules:
    """Bounds a lung mask must meet, as fractions of the image area or height.

    Set well outside the range of the 5,103 reference training masks (per lung 7-37% of the
    image, vertical overlap of the two lungs >= 74%, area ratio >= 0.50), so a failure means a
    prediction unlike any real pair of lung fields.
    """

    min_component: float = 0.005  # smaller blobs are dropped as specks
    min_lung_area: float = 0.03
    max_lung_area: float = 0.45
    min_lung_height: float = 0.25
    centroid_rows: tuple[float, float] = (0.2, 0.8)
    min_vertical_overlap: float = 0.5  # of the shorter lung's height
    min_area_ratio: float = 0.3  # smaller lung / larger lung


@dataclass
class LungCard(Card):
    """Everything needed to rebuild and run a lung-segmentation checkpoint (``lungs.json``).

    ``input_size`` is the network's working resolution; ``output_size`` is the size of the
    returned mask (the classifier's input size, in the same squashed frame).
    """

    arch: str = "smp.Unet"
    encoder: str = "tu-resnet10t"
    decoder_channels: tuple[int, ...] = (64, 32, 16, 8)
    input_size: int = 128
    output_size: int = 224
    mean: float = 0.5
    std: float = 0.25
    plausibility: dict[str, Any] = field(default_factory=lambda: asdict(PlausibilityRules()))
    validation: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)
    weights: str = ""
    sha256: str = ""
    weights_dtype: str = "float16"

    def rules(self) -> PlausibilityRules:
        values = dict(self.plausibility)
        if "centroid_rows" in values:
            values["centroid_rows"] = tuple(values["centroid_rows"])
        return PlausibilityRules(**values)


def build_model(card: LungCard) -> torch.nn.Module:
    """The card's U-Net, randomly initialised (``encoder_weights=None``: never downloads)."""
    import segmentation_models_pytorch as smp  # imported here: only segmentation needs it

    if card.arch != "smp.Unet":
        raise ValueError(f"unknown lung segmentation architecture {card.arch!r}")
    return smp.Unet(
        card.encoder,
        encoder_weights=None,
        encoder_depth=len(card.decoder_channels),
        decoder_channels=tuple(card.decoder_channels),
        in_channels=1,
        classes=1,
    )


@dataclass(frozen=True, eq=False)
class LungMask:
    """A lung mask in the classifier's input frame and the verdict of the plausibility check."""

    mask: np.ndarray  # bool (S, S): lung fields, specks removed and holes filled
    probability: np.ndarray  # float32 (S, S), consistent with ``mask`` (mask == probability > 0.5)
    ok: bool
    note: str | None = None  # why the check failed, None when it passed

    @property
    def area_fraction(self) -> float:
        return float(self.mask.mean())

    def resized(self, height: int, width: int) -> np.ndarray:
        """The mask at another size (e.g. the original upload), with smooth outlines."""
        if (height, width) == self.mask.shape:
            return self.mask.copy()
        image = Image.fromarray(self.probability.astype(np.float32)).resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(image) > THRESHOLD

    def box(self, margin: int = 0) -> tuple[int, int, int, int]:
        """Bounding box ``(y0, y1, x0, x1)`` (end-exclusive) of the lungs plus ``margin`` pixels,
        clipped to the mask; the whole mask when it is empty."""
        height, width = self.mask.shape
        if not self.mask.any():
            return 0, height, 0, width
        rows, cols = np.nonzero(self.mask.any(axis=1))[0], np.nonzero(self.mask.any(axis=0))[0]
        return (
            max(0, int(rows[0]) - margin),
            min(height, int(rows[-1]) + 1 + margin),
            max(0, int(cols[0]) - margin),
            min(width, int(cols[-1]) + 1 + margin),
        )


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice overlap of two boolean masks (1.0 when both are empty)."""
    pred, ref = pred.astype(bool), ref.astype(bool)
    total = pred.sum() + ref.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(pred, ref).sum() / total)


def iou(pred: np.ndarray, ref: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    pred, ref = pred.astype(bool), ref.astype(bool)
    union = np.logical_or(pred, ref).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, ref).sum() / union)


def components(mask: np.ndarray, min_fraction: float = 0.0) -> list[np.ndarray]:
    """Connected regions of a boolean mask covering at least ``min_fraction`` of the image, largest first."""
    labels, count = ndimage.label(mask)
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    keep = [k + 1 for k in np.argsort(areas)[::-1] if areas[k] >= max(1, min_fraction * mask.size)]
    return [labels == k for k in keep]


def on_patient_right(region: np.ndarray) -> bool:
    """Whether a region's centre lies on the image's left half, which holds the PATIENT's right
    side (radiographs are displayed facing the viewer)."""
    return float(np.nonzero(region)[1].mean()) < region.shape[1] / 2


def main_lungs(mask: np.ndarray, min_fraction: float) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Largest region on the image's left half and on its right half (None where there is none).

    The image's left half holds the PATIENT's right lung (radiographs are displayed facing
    the viewer).
    """
    left = right = None
    for region in components(mask, min_fraction):
        if on_patient_right(region):
            left = region if left is None else left
        else:
            right = region if right is None else right
    return left, right


def check_plausibility(mask: np.ndarray, rules: PlausibilityRules = PlausibilityRules()) -> tuple[bool, str | None]:
    """Whether a mask looks like two lung fields; if not, a short reason a user can read."""
    height = mask.shape[0]
    image_left, image_right = main_lungs(mask, rules.min_component)
    sides = (
        ("image's left half (patient's right lung)", image_left),
        ("image's right half (patient's left lung)", image_right),
    )
    for name, region in sides:
        if region is None:
            return False, f"No lung field found on the {name}."
    for name, region in sides:
        area = region.mean()
        if not rules.min_lung_area <= area <= rules.max_lung_area:
            return False, (
                f"The lung field on the {name} covers {area:.0%} of the image "
                f"(expected {rules.min_lung_area:.0%}-{rules.max_lung_area:.0%})."
            )
        top, bottom = _row_extent(region)
        if (bottom - top + 1) / height < rules.min_lung_height:
            return (
                False,
                f"The lung field on the {name} is too short ({(bottom - top + 1) / height:.0%} of the image height).",
            )
        centre = np.nonzero(region)[0].mean() / height
        if not rules.centroid_rows[0] <= centre <= rules.centroid_rows[1]:
            return (
                False,
                f"The lung field on the {name} sits too high or too low (centre at {centre:.0%} of the image height).",
            )
    (top_a, bottom_a), (top_b, bottom_b) = _row_extent(image_left), _row_extent(image_right)
    overlap = (min(bottom_a, bottom_b) - max(top_a, top_b) + 1) / min(bottom_a - top_a + 1, bottom_b - top_b + 1)
    if overlap < rules.min_vertical_overlap:
        return False, f"The two lung fields are not side by side (vertical overlap {max(overlap, 0):.0%})."
    areas = sorted((image_left.sum(), image_right.sum()))
    if areas[0] / areas[1] < rules.min_area_ratio:
        return False, f"The two lung fields are very unequal in size (ratio {areas[0] / areas[1]:.2f})."
    return True, None


def _row_extent(region: np.ndarray) -> tuple[int, int]:
    rows = np.nonzero(region.any(axis=1))[0]
    return int(rows[0]), int(rows[-1])


def finish_mask(probability: np.ndarray, rules: PlausibilityRules = PlausibilityRules()) -> LungMask:
    """Threshold, clean (drop specks, fill holes; keep only the two lungs when plausible) and check."""
    raw = probability > THRESHOLD
    cleaned = np.zeros_like(raw)
    for region in components(raw, rules.min_component):
        cleaned |= region
    cleaned = ndimage.binary_fill_holes(cleaned)
    ok, note = check_plausibility(cleaned, rules)
    if ok:
        left, right = main_lungs(cleaned, rules.min_component)
        cleaned = left | right
    # Make the probability agree with the cleaned mask, so resizing it keeps the same regions.
    eps = 1e-3
    consistent = np.where(cleaned, np.maximum(probability, THRESHOLD + eps), np.minimum(probability, THRESHOLD - eps))
    return LungMask(mask=cleaned, probability=consistent.astype(np.float32), ok=ok, note=note)


class LungSegmenter:
    """A lung-segmentation checkpoint ready to run on radiographs of any size."""

    def __init__(self, model: torch.nn.Module, card: LungCard):
        self.model = model.eval()
        self.card = card
        self.rules = card.rules()

    @classmethod
    def load(cls, card_path: str | Path = DEFAULT_LUNG_CHECKPOINT) -> LungSegmenter:
        """Load ``lungs.json`` and its weights (sha256-checked; raises CheckpointError)."""
        card = read_card(card_path, LungCard)
        model = build_model(card)
        model.load_state_dict(load_tensors(card_path, card)[0])
        return cls(model.to(memory_format=torch.channels_last), card)

    def prepare(self, pixels: np.ndarray) -> torch.Tensor:
        """Grayscale [0, 1] image of any size -> ``(1, 1, S, S)`` normalised network input."""
        x = preprocess(pixels, self.card.input_size, self.card.mean, self.card.std)
        return torch.from_numpy(x)[None, None].contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """Lung probability at ``output_size`` for a normalised ``(N, 1, S, S)`` batch."""
        logits = self.model(batch.float().contiguous(memory_format=torch.channels_last))
        size = self.card.output_size
        return torch.sigmoid(F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False))[:, 0]

    def segment(self, pixels: np.ndarray) -> LungMask:
        """Lung mask of a grayscale [0, 1] radiograph, in the classifier's squashed input frame."""
        probability = self.probabilities(self.prepare(pixels))[0].numpy()
        return finish_mask(probability, self.rules)
