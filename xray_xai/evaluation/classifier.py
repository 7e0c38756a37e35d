"""Score a classifier checkpoint on a labelled folder and write metrics and plots.

    python -m xray_xai.evaluation.classifier --data DIR --out OUT [--checkpoint PATH] [--split all|val] [--versus PATH]

``DIR`` is any ``DIR/{NORMAL,PNEUMONIA}/*`` folder, at any resolution: images are decoded by the
app's loader and preprocessed by :meth:`Classifier.prepare`, exactly as an upload would be.
Writes ``OUT/metrics.json``, ``OUT/predictions.csv`` and PNG plots (ROC, precision-recall,
reliability before/after temperature scaling, one confusion matrix per operating point).
Thresholds come from the model card (fitted on validation); nothing is re-fitted here.

With the balanced operating point in the card, ``metrics.json`` also holds ``bands`` (number of
films and accuracy per confidence band, after the app lowers bands for ensemble disagreement and
unusual input), ``high_band_error_rate`` (wrong answers in the High band / all films) and how
often wrong and right answers are flagged. Accuracy at each operating point, ECE and
``high_band_error_rate`` come with 95% bootstrap intervals (``*_ci95``, resampling films within
each class, :func:`xray_xai.metrics.bootstrap_interval`) like the AUROC, so a figure near a target
can be read with its sampling error on a few hundred films.
``--blur SIGMA`` scores softer copies of the films
(a Gaussian blur at the model's input size) to measure robustness to acquisition shift;
``--stretch FACTOR`` scores copies stretched in height by FACTOR (width kept), the same films
squashed into the square from another shape: every training film was squashed whatever its
shape, which makes the lungs' aspect ratio a label cue there, and this measures how much the
network leans on it. Both together: stretched, then blurred.

``--split val`` keeps only the checkpoint's validation patients (``DIR`` = the training folder),
so any checkpoint's validation numbers can be reproduced. ``--versus PATH`` scores a second
checkpoint on the same images and adds a paired bootstrap of the AUROC difference (this one
minus that one): the architecture comparison in the README comes from it.

This module is the command; films are scored by :mod:`.scoring`, the JSON sections that read the
model card are :mod:`.checkpoint_metrics`, the PNGs :mod:`.plots`, the metrics :mod:`xray_xai.metrics`.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .. import CLASSES
from ..cli import checkpoint_parser, data_parser, entry_point, seed_parser, select, split_parser, threads_parser
from ..data import list_samples
from ..models.classifier import Classifier
from .checkpoint_metrics import band_metrics, compute_metrics, versus_metrics
from .plots import save_plots
from .scoring import Scored, blur_input, calibrated, score_samples, stretch_input


def write_predictions(path: Path, scored: Scored, probs: np.ndarray) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label", "logit", "probability"])
        for sample, logit, p in zip(scored.samples, scored.logits, probs, strict=True):
            writer.writerow(
                [f"{CLASSES[sample.label]}/{sample.path.name}", CLASSES[sample.label], f"{logit:.6f}", f"{p:.6f}"]
            )


def perturbation(blur: float, stretch: float) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The copies scored instead of the films: stretched in height, then blurred (None: the films)."""
    if stretch <= 0:
        raise SystemExit(f"--stretch must be positive, not {stretch}.")
    if stretch == 1.0:
        return blur_input(blur) if blur > 0 else None
    stretched = stretch_input(stretch)
    if blur <= 0:
        return stretched
    blurred = blur_input(blur)
    return lambda x: blurred(stretched(x))


def describe_perturbation(blur: float, stretch: float) -> dict[str, float] | None:
    """What ``metrics.json`` records of :func:`perturbation`."""
    described = ({"gaussian_blur_sigma_px": blur} if blur > 0 else {}) | (
        {"height_stretch": stretch} if stretch != 1.0 else {}
    )
    return described or None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[data_parser(), checkpoint_parser(), split_parser(), seed_parser("bootstrap seed"), threads_parser()],
    )  # fmt: skip
    parser.add_argument("--out", required=True, help="output folder for metrics.json and plots")
    parser.add_argument("--versus", default=None, help="a second model card to compare with on the same images")
    parser.add_argument(
        "--blur",
        type=float,
        default=0.0,
        help="score softer copies: Gaussian blur of this sigma in px at the model's input size",
    )
    parser.add_argument(
        "--stretch",
        type=float,
        default=1.0,
        help="score copies stretched in height by this factor about the centre, width kept (1: off)",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals (0: none)")
    return parser.parse_args(argv)


def run(argv: list[str] | None = None) -> dict:
    """The command: writes ``OUT/metrics.json``, the predictions and the plots, prints a summary;
    returns the metrics it writes."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    classifier = Classifier.load(args.checkpoint)
    samples = select(list_samples(args.data), args.split, args.checkpoint)
    if not samples:
        raise SystemExit(f"No images found under {args.data}/{{{','.join(CLASSES)}}} (split {args.split}).")
    perturb = perturbation(args.blur, args.stretch)
    scored = score_samples(classifier, samples, args.batch_size, perturb=perturb)
    if not scored.samples:
        raise SystemExit(f"None of the {len(samples)} images under {args.data} could be read.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    labels = scored.labels
    metrics = compute_metrics(labels, scored.logits, classifier, args.bootstrap, args.seed)
    if "balanced" in classifier.card.operating_points:
        metrics.update(band_metrics(labels, scored, classifier, n_bootstrap=args.bootstrap, seed=args.seed))
    metrics.update(
        data=str(Path(args.data).resolve()),
        checkpoint=str(Path(args.checkpoint).resolve()),
        arch=classifier.card.arch,
        input_size=classifier.input_size,
        checkpoint_sha256=classifier.card.sha256,  # verified against the file on load
        split=args.split,
        perturbation=describe_perturbation(args.blur, args.stretch),
        failed={"count": len(scored.failures), "files": [{"file": f, "reason": r} for f, r in scored.failures]},
    )
    if args.versus:
        other = Classifier.load(args.versus)
        other_logits = score_samples(other, scored.samples, args.batch_size, perturb=perturb).logits
        metrics["versus"] = versus_metrics(
            labels, scored.logits, classifier, other, other_logits, args.bootstrap, args.seed
        )
    metrics["plots"] = save_plots(out, labels, scored.logits, classifier, metrics)
    write_predictions(out / "predictions.csv", scored, calibrated(classifier, scored.logits))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    summary = {
        k: metrics[k] for k in ("n", "auroc", "auroc_ci95", "auprc", "ece", "ece_ci95", "brier", "mean_probability")
    }
    summary["high_band_error_rate"] = metrics.get("high_band_error_rate")
    summary["high_band_error_rate_ci95"] = metrics.get("high_band_error_rate_ci95")
    summary["accuracy_at_balanced"] = metrics["operating_points"].get("balanced", {}).get("accuracy")
    summary["accuracy_at_balanced_ci95"] = metrics["operating_points"].get("balanced", {}).get("accuracy_ci95")
    if "versus" in metrics:
        summary["versus"] = {k: metrics["versus"][k] for k in ("arch", "auroc", "auroc_difference")}
    print(json.dumps(summary))
    return metrics


main = entry_point(run)

if __name__ == "__main__":
    main()
