"""Copy a dataset with every film cropped to the box of its lungs, to train a lung-box member.

    python -m xray_xai.training.lung_crops --data ../shared/data/chest_xray --out runs/crops

Each film is squashed to the classifier's input size (as the app sees it), segmented with the
committed lung segmenter and cut to the lung box plus a margin (:func:`xray_xai.models.framing.lung_box`),
the very crop that :class:`xray_xai.models.framing.LungBoxFramed` makes inside an ensemble. The copy
keeps the folder layout and file stems (so patients and splits are unchanged) and is training
data: keep it out of version control.

With ``--lung-masks ROOT --masks-out DIR`` each film's reference lung mask
(``ROOT/SPLIT/CLASS/STEM.png``, where there is one) is cut to the same box and written to
``DIR/SPLIT/CLASS/STEM.png``, so that a lung-box member can be trained with the lung guidance
(``xray_xai.training.classifier --data OUT --lung-masks DIR --lung-guidance ...``).
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
from ..data import list_samples, mask_path
from ..models.framing import LUNG_BOX_MARGIN, lung_box
from ..models.lungs import LungSegmenter
from ..preprocess import read_dataset_image, to_model_size
from .guidance import reference_mask


def crop_split(
    source: Path,
    target: Path,
    segmenter: LungSegmenter,
    size: int,
    margin: int,
    masks: tuple[Path, Path] | None = None,
) -> dict[str, int]:
    """Crop every film of ``source/{NORMAL,PNEUMONIA}`` into ``target``; returns counts.

    ``masks``: ``(reference root, output root)`` of this split's lung masks; a film's mask, squashed
    to ``size`` like the film, is cut to the film's box and saved as a 0/255 PNG.
    """
    for root in (target,) if masks is None else (target, masks[1]):
        for name in CLASSES:
            (root / name).mkdir(parents=True, exist_ok=True)
    films = fallback = cut_masks = 0
    for sample in tqdm(list_samples(source), desc=source.name, file=sys.stderr, leave=False):
        film = to_model_size(read_dataset_image(sample.path), size)
        (y0, y1, x0, x1), used_mask = lung_box(film, segmenter, margin)
        save_png(film[y0:y1, x0:x1], target / sample.path.parent.name / f"{sample.path.stem}.png")
        films += 1
        fallback += not used_mask
        if masks is not None and mask_path(sample, masks[0]).is_file():
            lungs = reference_mask(mask_path(sample, masks[0]), size)
            save_png(lungs[y0:y1, x0:x1].astype(np.float32), mask_path(sample, masks[1]))
            cut_masks += 1
    counts = {"films": films, "whole_film_fallbacks": fallback}
    return counts if masks is None else {**counts, "masks": cut_masks}


def save_png(pixels: np.ndarray, path: Path) -> None:
    """A grayscale [0, 1] array as an 8-bit PNG."""
    Image.fromarray(np.round(pixels * 255).astype(np.uint8)).save(path)


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
    parser.add_argument(
        "--lung-masks", default=None, help="reference lung masks, ROOT/SPLIT/CLASS/STEM.png, to cut like the films"
    )
    parser.add_argument("--masks-out", default=None, help="where the cut masks go (with --lung-masks)")
    args = parser.parse_args(argv)
    if (args.lung_masks is None) != (args.masks_out is None):
        parser.error("--lung-masks and --masks-out go together")
    return args


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
        split: crop_split(
            Path(args.data) / split,
            Path(args.out) / split,
            segmenter,
            args.input_size,
            args.margin,
            None if args.lung_masks is None else (Path(args.lung_masks) / split, Path(args.masks_out) / split),
        )
        for split in args.splits
    }
    print(json.dumps(counts))
    return counts


if __name__ == "__main__":
    main()
