"""Build the similar-case index of a classifier from a labelled folder of training films.

    python -m xray_xai.artifacts.similar_index --data ../shared/data/chest_xray/train --out checkpoints/

Every film of ``--data`` (ids = file names, labels = folders) is embedded with the classifier
of ``--checkpoint`` (pooled penultimate features, the app's own preprocessing), and stored with
a grayscale JPEG thumbnail (at most 128 px a side, as the data rules allow for train/ films).
The index records the sha256 of the classifier weights: after the classifier changes, run the
same command again, or the app ignores the stale index. ``--exclude-val-patients`` leaves out
the checkpoint's validation patients (for evaluation only; the shipped index keeps everything).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from ..cli import TRAINING_SET, checkpoint_parser, data_parser, threads_parser, validation_split
from ..data import Sample, list_samples
from ..models.classifier import Classifier
from ..models.features import cached_embed
from ..models.similar import FeatureSpace, IndexCard, SimilarIndex, encode_thumbnail
from ..preprocess import read_dataset_image

MAX_THUMBNAIL = 128  # the data rules' limit for thumbnails of train/ films


@torch.inference_mode()
def make_thumbnails(samples: list[Sample], size: int, quality: int) -> list[bytes]:
    """Grayscale JPEG thumbnails of the films, ``size`` px square."""
    return [encode_thumbnail(read_dataset_image(s.path), size, quality) for s in samples]


def pack(thumbnails: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """JPEG byte strings -> one uint8 array and the ``(n + 1,)`` offsets of each."""
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in thumbnails])]).astype(np.int64)
    return np.frombuffer(b"".join(thumbnails), dtype=np.uint8).copy(), offsets


def build_index(
    features: np.ndarray,
    samples: list[Sample],
    thumbnails: list[bytes],
    classifier: Classifier,
    dims: int,
    thumbnail_size: int,
    build: dict,
) -> SimilarIndex:
    """Fit the feature space on these films and assemble the index (pure: writes nothing)."""
    space = FeatureSpace.fit(features, dims)
    blob, offsets = pack(thumbnails)
    card = IndexCard(
        classifier_sha256=classifier.card.sha256,
        classes=tuple(classifier.card.classes),
        ids=tuple(s.path.name for s in samples),
        dims=int(space.projection.shape[1]),
        explained_variance=round(space.explained_variance, 4),
        thumbnail_size=thumbnail_size,
        build=build,
    )
    return SimilarIndex(card, space, space.embed(features), np.array([s.label for s in samples]), blob, offsets)


def main(argv: list[str] | None = None) -> int:
    common = [data_parser(TRAINING_SET, "DIR/{NORMAL,PNEUMONIA}/*"), checkpoint_parser(), threads_parser()]
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, parents=common
    )
    parser.add_argument("--out", default="checkpoints/", help="folder for similar.json and similar.safetensors")
    parser.add_argument("--dims", type=int, default=128, help="principal axes kept (the feature width keeps all)")
    parser.add_argument("--thumbnail-size", type=int, default=64)
    parser.add_argument("--quality", type=int, default=75, help="JPEG quality of the thumbnails")
    parser.add_argument(
        "--exclude-val-patients", action="store_true", help="leave out the checkpoint's validation patients"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cache", default="outputs/features", help="feature cache folder ('' for none)")
    args = parser.parse_args(argv)
    if not 0 < args.thumbnail_size <= MAX_THUMBNAIL:
        parser.error(f"--thumbnail-size must be between 1 and {MAX_THUMBNAIL}")
    torch.set_num_threads(args.threads)
    classifier = Classifier.load(args.checkpoint)
    samples = list_samples(args.data)
    if args.exclude_val_patients:
        held_out = {s.path for s in validation_split(samples, args.checkpoint)}
        samples = [s for s in samples if s.path not in held_out]
    features = cached_embed(
        classifier.model,
        classifier.card.sha256,
        [s.path for s in samples],
        classifier.prepare,
        Path(args.cache) if args.cache else None,
        args.batch_size,
    )
    thumbnails = make_thumbnails(samples, args.thumbnail_size, args.quality)
    build = {
        "command": "python -m xray_xai.artifacts.similar_index " + " ".join(argv if argv is not None else sys.argv[1:]),
        "classifier_card": Path(args.checkpoint).name,
        "films": len(samples),
        "per_class": {name: int(sum(s.label == i for s in samples)) for i, name in enumerate(classifier.card.classes)},
        "excluded_validation_patients": args.exclude_val_patients,
        "thumbnail_quality": args.quality,
    }
    index = build_index(features, samples, thumbnails, classifier, args.dims, args.thumbnail_size, build)
    card = index.save(Path(args.out) / "similar.json")
    size = sum((Path(args.out) / name).stat().st_size for name in ("similar.json", card.weights))
    print(
        f"{len(index)} films, {card.dims} axes keeping {card.explained_variance:.1%} of the variance, "
        f"{size / 1e6:.2f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
