"""Can the lung masks themselves leak the label? A check for a new shortcut of mask guidance.

    python -m xray_xai.evaluation.mask_leak --data ../shared/data/chest_xray --out outputs/mask_leak.json

Segmentation fails more often on hazy pneumonia films, so anything that depends on a mask's
presence or shape could read the label from it instead of from the lungs:

- the guided classifier's loss only sees films that have a reference mask (``lung_masks/train``);
  if masks are missing mostly for pneumonia films, guidance is applied unevenly by class;
- lung-box members see the box the segmenter cuts; if the box's size or the segmenter's
  failures differ by class, the crop's framing carries the label.

For the validation split of a checkpoint and for shift_dev this reports, per class, the share of
films with a reference mask and the share whose predicted mask fails the plausibility check,
and how well the predicted lung area, lung-box area and lung-box aspect ratio (height / width)
alone separate the classes (AUROC; 0.5 = no information). Nothing is fitted.

The aspect ratio is a cue of the films, not of the masks: every film was squashed into a square
whatever its original shape, so the lungs' shape in the square says something about the
original frame, and in the training set that differs by class. Any network can read it from the
anatomy, whole film or lung box (the box is squashed to a square too); ``evaluate --stretch``
measures how much the networks lean on it, ``training.classifier --aspect`` trains against it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from .. import CLASSES
from ..checkpoint import DEFAULT_CHECKPOINT, DEFAULT_LUNG_CHECKPOINT
from ..data import Sample, list_samples, mask_path, validation_samples
from ..models.framing import LUNG_BOX_MARGIN
from ..models.lungs import LungSegmenter
from ..preprocess import read_dataset_image


def _auroc(labels: np.ndarray, values: np.ndarray) -> float | None:
    """AUROC of one number for the label, folded so that 0.5 is chance and 1 is perfect either way."""
    if len(set(labels.tolist())) < 2:
        return None
    auc = float(roc_auc_score(labels, values))
    return max(auc, 1.0 - auc)


def leak_figures(samples: list[Sample], mask_dir: Path, segmenter: LungSegmenter) -> dict:
    """Per-class mask availability and segmentation failures, and the AUROC of mask-derived sizes."""
    labels = np.array([s.label for s in samples])
    has_reference = np.array([mask_path(s, mask_dir).is_file() for s in samples])
    area, box_area, box_aspect, failed = [], [], [], []
    for sample in tqdm(samples, desc="segmenting", file=sys.stderr, leave=False):
        mask = segmenter.segment(read_dataset_image(sample.path))
        y0, y1, x0, x1 = mask.box(margin=LUNG_BOX_MARGIN)
        area.append(mask.area_fraction)
        box_area.append((y1 - y0) * (x1 - x0) / mask.mask.size)
        box_aspect.append((y1 - y0) / (x1 - x0))
        failed.append(not mask.ok)
    failed_array = np.array(failed)
    per_class = {
        name: {
            "films": int((labels == k).sum()),
            "reference_mask_share": float(has_reference[labels == k].mean()),
            "segmentation_failure_share": float(failed_array[labels == k].mean()),
        }
        for k, name in enumerate(CLASSES)
        if (labels == k).any()
    }
    return {
        "per_class": per_class,
        "auroc_lung_area": _auroc(labels, np.array(area)),
        "auroc_lung_box_area": _auroc(labels, np.array(box_area)),
        "auroc_lung_box_aspect": _auroc(labels, np.array(box_aspect)),
        "auroc_segmentation_failure": _auroc(labels, failed_array.astype(float)),
        "auroc_reference_mask_missing": _auroc(labels, (~has_reference).astype(float)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/chest_xray", help="folder with train/ and shift_dev/")
    parser.add_argument(
        "--masks", default="../shared/data/lung_masks", help="folder with train/ and shift_dev/ reference masks"
    )
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="whose validation patients to use")
    parser.add_argument("--segmenter", default=str(DEFAULT_LUNG_CHECKPOINT))
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    segmenter = LungSegmenter.load(args.segmenter)
    data, masks = Path(args.data), Path(args.masks)
    figures = {
        "validation": leak_figures(
            validation_samples(list_samples(data / "train"), args.checkpoint), masks / "train", segmenter
        ),
        "shift_dev": leak_figures(list_samples(data / "shift_dev"), masks / "shift_dev", segmenter),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
