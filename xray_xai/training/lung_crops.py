"""Copy a dataset with every film cropped to the box of its lungs, to train a lung-box member.

    python -m xray_xai.training.lung_crops --data ../shared/data/chest_xray --out runs/crops

Each film is squashed to the classifier's input size (as the app sees it), segmented with the
committed lung segmenter and cut to the lung box plus a margin (:func:`xray_xai.models.framing.crop_to_lungs`),
the very crop that :class:`xray_xai.models.framing.LungBoxFramed` makes inside an ensemble. The copy
keeps the folder layout and file stems (so patients and splits are unchanged) and is training
data: keep it out of version control.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from .. import CLASSES
from ..checkpoint import DEFAULT_LUNG_CHECKPOINT
from ..cli import DATASET, data_parser, threads_parser
from ..models.framing import LUNG_BOX_MARGIN, crop_to_lungs
from ..models.lungs import LungSegmenter
from ..preprocess import read_dataset_image, to_model_size


def crop_split(source: Path, target: Path, segmenter: LungSegmenter, size: int, margin: int) -> dict[str, int]:
    """Crop every film of ``source/{NORMAL,PNEUMONIA}`` into ``target``; returns counts."""
    films = fallback = 0
    for name in CLASSES:
        (target / name).mkdir(parents=True, exist_ok=True)
        for path in tqdm(sorted((source / name).iterdir()), desc=f"{source.name}/{name}", file=sys.stderr, leave=False):
            crop, used_mask = crop_to_lungs(to_model_size(read_dataset_image(path), size), segmenter, margin)
            Image.fromarray(np.round(crop * 255).astype(np.uint8)).save(target / name / f"{path.stem}.png")
            films += 1
            fallback += not used_mask
    return {"films": films, "whole_film_fallbacks": fallback}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    common = [data_parser(DATASET, "folder with SPLIT/{NORMAL,PNEUMONIA}"), threads_parser(1)]
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, parents=common
    )
    parser.add_argument("--out", default="runs/crops", help="where the cropped copy is written")
    parser.add_argument("--splits", nargs="+", default=["train", "shift_dev"])
    parser.add_argument("--segmenter", default=str(DEFAULT_LUNG_CHECKPOINT))
    parser.add_argument(
        "--input-size",
        type=int,
        default=224,
        help="the classifier's input size: films are cropped as the app sees them",
    )
    parser.add_argument("--margin", type=int, default=LUNG_BOX_MARGIN, help="px at 224 around the lungs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, dict[str, int]]:
    """The command: writes the cropped copy and prints the counts (returned too, until the tests
    that read them call :func:`run`)."""
    return run(argv)


def run(argv: list[str] | None = None) -> dict[str, dict[str, int]]:
    """:func:`main`, returning the counts per split."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    segmenter = LungSegmenter.load(args.segmenter)
    counts = {
        split: crop_split(Path(args.data) / split, Path(args.out) / split, segmenter, args.input_size, args.margin)
        for split in args.splits
    }
    print(json.dumps(counts))
    return counts


if __name__ == "__main__":
    main()
