"""How often the similar training films carry the query film's true label.

    python -m xray_xai.evaluation.similar --data ../shared/data/chest_xray/train \\
        --shift ../shared/data/chest_xray/shift_dev

Label agreement at k: the share of a film's k nearest index films that carry the film's TRUE
label, averaged over films. Two settings, each with the index's feature space fitted on the
index films only (as the shipped index is):

- validation: the checkpoint's validation patients queried against an index of the other
  training patients (no patient on both sides);
- shift_dev: the shifted films queried against an index of the full training split (the
  shipped index). Nothing is fitted on shift_dev.

Chance is what neighbours drawn at random from the index would give. The exit status is 1
when shift_dev agreement falls below the floor.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from .. import CLASSES
from ..cli import DATASET, TRAINING_SET, checkpoint_parser, data_parser, threads_parser, validation_split
from ..data import list_samples
from ..models.classifier import Classifier
from ..models.features import cached_embed
from ..models.similar import FeatureSpace, nearest

K = 5
FLOOR = 0.85  # minimum shift_dev agreement


def label_agreement(neighbour_labels: np.ndarray, true_labels: np.ndarray) -> float:
    """Mean over queries of the share of their neighbours ``(m, k)`` carrying the true label ``(m,)``."""
    return float((np.asarray(neighbour_labels) == np.asarray(true_labels)[:, None]).mean())


def chance_agreement(index_labels: np.ndarray, true_labels: np.ndarray) -> float:
    """Agreement that neighbours drawn at random from the index would give on average."""
    share = np.bincount(index_labels, minlength=len(CLASSES)) / len(index_labels)
    return float(share[np.asarray(true_labels)].mean())


def evaluate(
    index_features: np.ndarray,
    index_labels: np.ndarray,
    query_features: np.ndarray,
    query_labels: np.ndarray,
    k: int,
    dims: int,
) -> dict:
    """Agreement overall and per true class, for an index fitted on ``index_features``."""
    space = FeatureSpace.fit(index_features, dims)
    rows, _ = nearest(space.embed(index_features), space.embed(query_features), k)
    neighbours = index_labels[rows]
    return {
        "films": int(len(query_labels)),
        "index_films": int(len(index_labels)),
        "dims": int(space.projection.shape[1]),
        "explained_variance": round(space.explained_variance, 4),
        "agreement": round(label_agreement(neighbours, query_labels), 4),
        "by_class": {
            name: round(label_agreement(neighbours[query_labels == i], query_labels[query_labels == i]), 4)
            for i, name in enumerate(CLASSES)
            if (query_labels == i).any()
        },
        "chance": round(chance_agreement(index_labels, query_labels), 4),
    }


def main(argv: list[str] | None = None) -> int:
    common = [
        data_parser(TRAINING_SET, "the training folder (NORMAL/, PNEUMONIA/)"),
        checkpoint_parser(),
        threads_parser(),
    ]
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, parents=common
    )
    parser.add_argument("--shift", default=f"{DATASET}/shift_dev")
    parser.add_argument(
        "--dims",
        type=int,
        nargs="+",
        default=[128, 100000],
        help="principal axes kept (first = shipped; a large value keeps all)",
    )
    parser.add_argument("--k", type=int, default=K)
    parser.add_argument("--out", default="checkpoints/similar_eval.json")
    parser.add_argument(
        "--cache", default="outputs/features", help="feature cache folder shared with build_index ('' for none)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cache = Path(args.cache) if args.cache else None
    classifier = Classifier.load(args.checkpoint)
    train, shift = list_samples(args.data), list_samples(args.shift)
    features = cached_embed(
        classifier.model, classifier.card.sha256, [s.path for s in train], classifier.prepare, cache
    )
    shift_features = cached_embed(
        classifier.model, classifier.card.sha256, [s.path for s in shift], classifier.prepare, cache
    )
    labels, shift_labels = np.array([s.label for s in train]), np.array([s.label for s in shift])
    held_out = {s.path for s in validation_split(train, args.checkpoint)}
    val = np.array([s.path in held_out for s in train])
    results = {
        "k": args.k,
        "classifier_sha256": classifier.card.sha256,
        "command": "python -m xray_xai.evaluation.similar " + " ".join(argv if argv is not None else sys.argv[1:]),
        "validation": [
            evaluate(features[~val], labels[~val], features[val], labels[val], args.k, d) for d in args.dims
        ],
        "shift_dev": [evaluate(features, labels, shift_features, shift_labels, args.k, d) for d in args.dims],
        "floor_shift_dev": FLOOR,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results))
    return 0 if results["shift_dev"][0]["agreement"] >= FLOOR else 1


if __name__ == "__main__":
    sys.exit(main())
