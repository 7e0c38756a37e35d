"""Dice and IoU of a lung segmenter against reference masks, each prediction scored at its mask's
resolution: what the lung evaluation CLI reports and the lung trainer writes into its card."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..data import Sample, read_mask
from ..models.lungs import LungSegmenter, dice, iou
from ..preprocess import read_dataset_image


def evaluate(
    segmenter: LungSegmenter, pairs: list[tuple[Sample, Path]], desc: str = "segment"
) -> tuple[dict, list[dict]]:
    """Summary metrics and one record per image, each prediction scored at its mask's resolution."""
    records = []
    for sample, path in tqdm(pairs, desc=desc, file=sys.stderr, leave=False):
        reference = read_mask(path)
        lung = segmenter.segment(read_dataset_image(sample.path))
        predicted = lung.resized(*reference.shape)
        records.append(
            {
                "image": f"{sample.path.parent.name}/{sample.path.name}",
                "size": list(reference.shape),
                "dice": dice(predicted, reference),
                "iou": iou(predicted, reference),
                "plausible": lung.ok,
                "note": lung.note,
            }
        )
    return summarize(records), records


def summarize(records: list[dict]) -> dict:
    """Mean, 5th percentile and minimum Dice, mean IoU and the share of plausible masks."""
    if not records:
        raise ValueError("no image with a reference mask to evaluate")
    dices = np.array([r["dice"] for r in records])
    return {
        "n": len(records),
        "dice_mean": float(dices.mean()),
        "dice_p05": float(np.percentile(dices, 5)),
        "dice_min": float(dices.min()),
        "iou_mean": float(np.mean([r["iou"] for r in records])),
        "plausible_fraction": float(np.mean([r["plausible"] for r in records])),
    }
