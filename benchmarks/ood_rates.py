"""How often the out-of-distribution checks flag real radiographs and non-radiographs.

Real radiographs: the classifier's patient-level validation split of the training folder.
Non-radiographs: the photographs and drawings that ship with scikit-image and matplotlib, plus
inverted, rotated (90 and 180 degrees), noise and near-uniform variants of validation
radiographs made in memory. Everything goes through the real loader and ``assess_ood``; the
feature-space check is included when a checkpoint is given and exists.

    python benchmarks/ood_rates.py --data ../shared/data/chest_xray [--checkpoint checkpoints/classifier.json]

The last stdout line is one JSON object (rates, counts, and reason counts per set).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from xray_xai.data import list_samples, split_by_patient
from xray_xai.imaging import InputError, LoadedImage, load_image
from xray_xai.models.ood import assess_ood

# Reason text -> short key for the counts (the reasons are plain-language sentences).
REASON_KEYS = (
    ("colour", "colour"),
    ("long and narrow", "aspect"),
    ("uniform", "uniform"),
    ("noise", "noise"),
    ("does not resemble", "not_chest_like"),
    ("inverted", "inverted"),
    ("rotated", "rotated"),
    ("upside down", "rotated"),
    ("internal features", "feature_distance"),
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".tif", ".tiff", ".bmp", ".webp")


def reason_keys(reasons: tuple[str, ...]) -> set[str]:
    return {key for reason in reasons for text, key in REASON_KEYS if text in reason}


def packaged_images() -> list[Path]:
    """Image files shipped inside scikit-image's and matplotlib's data folders (no download)."""
    folders = []
    try:
        import skimage.data

        folders.append(Path(skimage.data.data_dir))
    except ImportError:
        pass
    try:
        import matplotlib

        folders.append(Path(matplotlib.get_data_path()) / "sample_data")
    except ImportError:
        pass
    return sorted(
        p for folder in folders if folder.is_dir() for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
    )


def variants(image: LoadedImage, rng: np.random.Generator) -> dict[str, LoadedImage]:
    """Non-radiograph versions of a radiograph, made in memory."""
    pixels = image.pixels
    noise = rng.random(pixels.shape, dtype=np.float32)
    flat = np.clip(rng.uniform(0.1, 0.9) + rng.normal(0, 0.01, pixels.shape), 0, 1).astype(np.float32)
    return {
        "inverted": replace(image, pixels=1.0 - pixels),
        "rotated_90": replace(image, pixels=np.ascontiguousarray(np.rot90(pixels))),
        "rotated_180": replace(image, pixels=np.ascontiguousarray(np.rot90(pixels, 2))),
        "noise": replace(image, pixels=noise),
        "uniform": replace(image, pixels=flat),
    }


class FeatureDistance:
    """Mahalanobis feature distance of the trained classifier, or nothing without a checkpoint."""

    def __init__(self, checkpoint: Path | None):
        self.classifier = None
        self.threshold = None
        if checkpoint is not None and checkpoint.is_file():
            from xray_xai.models.classifier import Classifier

            self.classifier = Classifier.load(checkpoint)
            self.threshold = self.classifier.card.ood.get("threshold")

    def __call__(self, image: LoadedImage) -> float | None:
        if self.classifier is None:
            return None
        distances = self.classifier.score(self.classifier.prepare(image.pixels)).distance
        return None if distances is None else float(distances[0])


def assess_all(images: dict[str, LoadedImage], distance: FeatureDistance) -> dict[str, set[str]]:
    """Reason keys per image (empty set = not flagged)."""
    keys = {}
    for name, image in images.items():
        result = assess_ood(image, distance(image), distance.threshold)
        keys[name] = reason_keys(result.reasons)
        assert result.flagged == bool(result.reasons)
    return keys


def summarise(keys: dict[str, set[str]]) -> dict:
    n = len(keys)
    return {
        "n": n,
        "flag_rate": round(sum(bool(k) for k in keys.values()) / n, 4),
        "heuristic_flag_rate": round(sum(bool(k - {"feature_distance"}) for k in keys.values()) / n, 4),
        "reasons": dict(sorted(Counter(key for k in keys.values() for key in k).items())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/chest_xray"))
    parser.add_argument("--checkpoint", type=Path, default=Path("checkpoints/classifier.json"))
    parser.add_argument("--variant-every", type=int, default=5, help="make variants of every Nth validation image")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    distance = FeatureDistance(args.checkpoint)
    rng = np.random.default_rng(args.seed)
    _, val = split_by_patient(list_samples(args.data / "train"), 0.15, 0)
    val_images = {str(s.path): load_image(s.path) for s in val}

    non: dict[str, LoadedImage] = {}
    rejected = []
    for path in packaged_images():
        try:
            non[f"packaged/{path.name}"] = load_image(path)
        except InputError:
            rejected.append(path.name)  # the loader refuses it: it never reaches the model
    for i, (name, image) in enumerate(val_images.items()):
        if i % args.variant_every == 0:
            non.update({f"{kind}/{Path(name).name}": v for kind, v in variants(image, rng).items()})

    val_keys = assess_all(val_images, distance)
    non_keys = assess_all(non, distance)
    val_summary, non_summary = summarise(val_keys), summarise(non_keys)
    by_kind = {}
    for kind in sorted({name.split("/")[0] for name in non}):
        by_kind[kind] = summarise({k: v for k, v in non_keys.items() if k.startswith(kind + "/")})
        print(
            f"{kind:12s} n={by_kind[kind]['n']:4d} flagged {by_kind[kind]['flag_rate']:.1%}  {by_kind[kind]['reasons']}"
        )
    print(f"validation radiographs: {val_summary}")
    print(f"non-radiographs: {non_summary}; the loader rejected {len(rejected)} more: {', '.join(rejected)}")
    flagged_names = [Path(k).name for k, v in val_keys.items() if v]
    print(f"flagged validation radiographs ({len(flagged_names)}):", ", ".join(flagged_names[:20]))
    summary = {
        "val_flag_rate": val_summary["flag_rate"],
        "non_radiograph_flag_rate": non_summary["flag_rate"],
        "n_val": len(val_images),
        "n_non": len(non),
        "feature_distance": distance.classifier is not None,
        "feature_threshold": distance.threshold,
        "val_heuristic_flag_rate": val_summary["heuristic_flag_rate"],
        "non_heuristic_flag_rate": non_summary["heuristic_flag_rate"],
        "val_reasons": val_summary["reasons"],
        "non_reasons": non_summary["reasons"],
        "non_flag_rate_by_kind": {kind: s["flag_rate"] for kind, s in by_kind.items()},
        "n_rejected_by_loader": len(rejected),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
