"""Fit the shortcut-warning thresholds of a classifier on its validation images.

    python -m xray_xai.training.shortcuts --data ../shared/data/chest_xray/train [--checkpoint PATH] [--limit N]

The app warns that an explanation may rest on something other than the lungs when a map puts
an unusual share of its mass outside the predicted lung fields. "Unusual" is fitted here, per
method, as the 95th percentile of that share over the classifier's validation patients, with
maps made exactly as the app makes them (:meth:`xray_xai.pipeline.Pipeline.analyze` with the
default options: the reported class explained, Grad-CAM, fast occlusion around the lungs).
The thresholds are written to the model card's ``explanations`` section, since they belong to
that classifier's maps; images whose segmentation fails the plausibility check are skipped,
as the app raises no warning for them either.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..checkpoint import DEFAULT_LUNG_CHECKPOINT, ModelCard
from ..cli import (
    TRAINING_SET,
    checkpoint_parser,
    data_parser,
    entry_point,
    limit_parser,
    seed_parser,
    threads_parser,
    validation_split,
)
from ..data import Sample, list_samples, seeded_subset
from ..pipeline import Options, Pipeline

PERCENTILE = 95.0


def outside_lung_shares(
    pipeline: Pipeline, samples: list[Sample], options: Options = Options()
) -> dict[str, list[float]]:
    """Per method, the share of map mass outside the lungs, for every image with a plausible segmentation."""
    shares: dict[str, list[float]] = {}
    for sample in tqdm(samples, desc="shortcut thresholds", unit="img", file=sys.stderr):
        anatomy = pipeline.analyze(sample.path, options).analysis.anatomy
        if anatomy is None or not anatomy.segmentation_ok:
            continue
        for method, share in anatomy.outside_lung_share.items():
            shares.setdefault(method, []).append(float(share))
    return shares


def fit_thresholds(shares: dict[str, list[float]], percentile: float = PERCENTILE) -> dict[str, float]:
    """The ``percentile``-th percentile of each method's outside-lung shares."""
    return {method: round(float(np.percentile(values, percentile)), 4) for method, values in shares.items() if values}


def write_thresholds(card_path: str | Path, thresholds: dict[str, float], n: int, n_images: int) -> ModelCard:
    """Store the thresholds and how they were fitted in the card's ``explanations`` section."""
    card = ModelCard.from_json(card_path)
    card.explanations = {
        **card.explanations,
        "shortcut_threshold": thresholds,
        "shortcut_threshold_rule": (
            f"{PERCENTILE:g}th percentile of the share of map mass outside the predicted lungs over {n} validation "
            f"images with a plausible segmentation (of {n_images}), maps made as the app makes them "
            "(python -m xray_xai.training.shortcuts)"
        ),
    }
    card.to_json(card_path)
    return card


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    common = [
        data_parser(TRAINING_SET, "folder with NORMAL/ and PNEUMONIA/ (the training set)"),
        checkpoint_parser(help="classifier model card to fit and update"),
        limit_parser("seeded random subset of this many validation images (0 = all)"),
        seed_parser("the subset of validation images"),
        threads_parser(),
    ]
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, parents=common
    )
    parser.add_argument("--lung-checkpoint", default=str(DEFAULT_LUNG_CHECKPOINT), help="lung segmenter model card")
    return parser.parse_args(argv)


def run(argv: list[str] | None = None) -> dict:
    """The command: fits the thresholds, writes them into the card and prints its ``explanations``;
    returns the card's updated ``explanations``."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if not Path(args.lung_checkpoint).is_file():
        raise SystemExit(f"Lung segmenter not found: {args.lung_checkpoint}; the thresholds need predicted lung masks.")
    samples = validation_split(list_samples(args.data), args.checkpoint)
    samples = seeded_subset(samples, args.limit, args.seed)
    pipeline = Pipeline.load(args.checkpoint, args.lung_checkpoint)
    shares = outside_lung_shares(pipeline, samples)
    if not shares:
        raise SystemExit("No validation image had a plausible lung segmentation; nothing to fit.")
    thresholds = fit_thresholds(shares)
    n = len(next(iter(shares.values())))
    card = write_thresholds(args.checkpoint, thresholds, n, len(samples))
    print(json.dumps(card.explanations))
    return card.explanations


main = entry_point(run)

if __name__ == "__main__":
    main()
