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
``high_band_error_rate`` come with 95% bootstrap intervals (``*_ci95``, resampling films) like the
AUROC, so a figure near a target can be read with its sampling error on a few hundred films.
``--blur SIGMA`` scores softer copies of the films
(a Gaussian blur at the model's input size) to measure robustness to acquisition shift.

``--split val`` keeps only the checkpoint's validation patients (``DIR`` = the training folder),
so any checkpoint's validation numbers can be reproduced. ``--versus PATH`` scores a second
checkpoint on the same images and adds a paired bootstrap of the AUROC difference (this one
minus that one): the architecture comparison in the README comes from it.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    ConfusionMatrixDisplay,
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)
from scipy.ndimage import gaussian_filter  # noqa: E402
from tqdm import tqdm  # noqa: E402

from .. import CLASSES  # noqa: E402
from ..calibration import OPERATING_POINTS, brier, ece, sigmoid  # noqa: E402
from ..models.classifier import Classifier  # noqa: E402
from ..data import Sample, list_samples, validation_samples  # noqa: E402
from ..imaging import InputError, LoadedImage, load_image  # noqa: E402
from ..checkpoint import DEFAULT_CHECKPOINT  # noqa: E402
from ..models.ood import assess_ood  # noqa: E402
from ..ui.plots import reliability_panel  # noqa: E402
from ..results import BANDS  # noqa: E402

CI_LEVEL = 0.95


@dataclass
class Scored:
    """Scores of the images that could be read, and the files that could not."""

    samples: list[Sample]
    logits: np.ndarray  # raw (uncalibrated) logit of PNEUMONIA, one per sample
    member_probabilities: np.ndarray  # (n, members) calibrated P(pneumonia) of each ensemble member
    unusual: np.ndarray  # (n,) bool: the app's out-of-distribution check flags the film
    failures: list[tuple[str, str]]  # (file name, reason)

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=int)


def blur_input(sigma: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """A Gaussian blur of ``sigma`` px at the model's input size (reflected borders): a softer film."""

    def perturb(x: torch.Tensor) -> torch.Tensor:
        blurred = gaussian_filter(x[0, 0].double().numpy(), sigma, mode="reflect")
        return torch.from_numpy(blurred).to(x.dtype)[None, None].contiguous(memory_format=torch.channels_last)

    return perturb


def score_samples(
    classifier: Classifier,
    samples: list[Sample],
    batch_size: int = 32,
    progress: bool = True,
    perturb: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Scored:
    """Decode, preprocess (then ``perturb``) and score ``samples`` in batches, with the app's own
    out-of-distribution check; unreadable files are skipped and listed."""
    kept: list[Sample] = []
    failures: list[tuple[str, str]] = []
    images: list[LoadedImage] = []
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    batch: list[torch.Tensor] = []
    threshold = classifier.card.ood.get("threshold")

    def flush() -> None:
        if batch:
            scores = classifier.score(torch.cat(batch))
            distances = [None] * len(batch) if scores.distance is None else [float(d) for d in scores.distance]
            unusual = [assess_ood(image, d, threshold).flagged for image, d in zip(images, distances)]
            parts.append((scores.logits, scores.member_probabilities, np.array(unusual, dtype=bool)))
            batch.clear()
            images.clear()

    for sample in tqdm(samples, desc="scoring", unit="img", file=sys.stderr, disable=not progress):
        try:
            image = load_image(sample.path)
        except InputError as error:
            failures.append((f"{CLASSES[sample.label]}/{sample.path.name}", str(error)))
            continue
        x = classifier.prepare(image.pixels)
        batch.append(x if perturb is None else perturb(x))
        images.append(image)
        kept.append(sample)
        if len(batch) == batch_size:
            flush()
    flush()
    if not parts:
        return Scored(kept, np.zeros(0), np.zeros((0, 1)), np.zeros(0, dtype=bool), failures)
    logits, members, unusual = (np.concatenate(column) for column in zip(*parts))
    return Scored(kept, logits, members, unusual, failures)


def band_metrics(
    labels: np.ndarray, scored: Scored, classifier: Classifier, operating_point: str = "balanced", n_bootstrap: int = 1000, seed: int = 0
) -> dict:
    """How far the app's confidence bands (after lowering for uncertainty and unusual input)
    can be trusted at one operating point: accuracy per band, the wrong answers given in the
    High band as a share of all films (with its bootstrap interval), and how often wrong and
    right answers are flagged (a band below High or an out-of-distribution warning)."""
    probs = calibrated(classifier, scored.logits)
    predictions = [
        classifier.decide(float(p), operating_point, members, bool(unusual))
        for p, members, unusual in zip(probs, scored.member_probabilities, scored.unusual)
    ]
    positive = classifier.card.classes[1]
    correct = np.array([(pred.label == positive) == bool(y) for pred, y in zip(predictions, labels)])
    bands = np.array([pred.band for pred in predictions])
    flagged = (bands != "High") | scored.unusual
    lowered = np.array([bool(pred.band_reasons) for pred in predictions])
    spread = np.array([pred.uncertainty if pred.uncertainty is not None else np.nan for pred in predictions])

    def share(mask: np.ndarray) -> float | None:
        return float(mask.mean()) if mask.size else None

    return {
        "operating_point": operating_point,
        "bands": {
            name: {"n": int((bands == name).sum()), "accuracy": share(correct[bands == name])} for _, name in BANDS
        },
        "high_band_error_rate": float(((bands == "High") & ~correct).sum() / max(1, len(labels))),
        "high_band_error_rate_ci95": share_interval(labels, (bands == "High") & ~correct, n_bootstrap, seed),
        "flagged": {
            "rule": "band below High, or an out-of-distribution warning",
            "wrong": {"n": int((~correct).sum()), "share_flagged": share(flagged[~correct])},
            "right": {"n": int(correct.sum()), "share_flagged": share(flagged[correct])},
        },
        "band_lowered": {"wrong": share(lowered[~correct]), "right": share(lowered[correct])},
        "out_of_distribution": int(scored.unusual.sum()),
        "uncertainty": None
        if np.isnan(spread).all()
        else {"median_wrong": _finite_or_none(np.nanmedian(spread[~correct])) if (~correct).any() else None,
              "median_right": _finite_or_none(np.nanmedian(spread[correct])) if correct.any() else None},
    }


def calibrated(classifier: Classifier, logits: np.ndarray) -> np.ndarray:
    """Calibrated P(pneumonia) of raw logits, by the card's temperature."""
    return classifier.calibrate(torch.as_tensor(logits, dtype=torch.float64)).numpy()


def both_classes(labels: np.ndarray) -> bool:
    return len(np.unique(labels)) == 2


def bootstrap_interval(labels: np.ndarray, statistic: Callable[[np.ndarray], float], n_resamples: int = 1000, seed: int = 0) -> list[float] | None:
    """Percentile bootstrap interval (95%) of ``statistic(index)``, resampling images with
    replacement; resamples that hold a single class are skipped (``None`` if all do)."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_resamples):
        index = rng.integers(0, len(labels), len(labels))
        if both_classes(labels[index]):
            values.append(statistic(index))
    if not values:
        return None
    tail = 100 * (1 - CI_LEVEL) / 2
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]


def share_interval(labels: np.ndarray, hits: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> list[float] | None:
    """Bootstrap interval (95%) of the share of films where ``hits`` holds (an accuracy, an
    error rate); the same resamples as the AUROC's for the same seed."""
    hits = np.asarray(hits, dtype=bool)
    return bootstrap_interval(np.asarray(labels), lambda i: float(hits[i].mean()), n_resamples, seed)


def ece_interval(labels: np.ndarray, probs: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> list[float] | None:
    """Bootstrap interval (95%) of the ECE. Binned ECE is biased upward on small samples, and
    more so on resamples (duplicated films), so read it as the sampling spread, not an unbiased
    range."""
    labels, probs = np.asarray(labels), np.asarray(probs)
    return bootstrap_interval(labels, lambda i: ece(probs[i], labels[i]), n_resamples, seed)


def bootstrap_auroc_ci(labels: np.ndarray, scores: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> list[float] | None:
    """Bootstrap interval (95%) of the AUROC; ``None`` if the data hold a single class."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    if not both_classes(labels) or n_resamples <= 0:
        return None
    return bootstrap_interval(labels, lambda i: roc_auc_score(labels[i], scores[i]), n_resamples, seed)


def paired_auroc_difference(labels: np.ndarray, a: np.ndarray, b: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> dict | None:
    """AUROC of scores ``a`` minus that of ``b`` on the same images, with a paired bootstrap
    interval (95%; the same resampled images score both)."""
    labels, a, b = np.asarray(labels), np.asarray(a), np.asarray(b)
    if not both_classes(labels):
        return None
    interval = bootstrap_interval(labels, lambda i: roc_auc_score(labels[i], a[i]) - roc_auc_score(labels[i], b[i]), n_resamples, seed)
    return {"difference": float(roc_auc_score(labels, a) - roc_auc_score(labels, b)), "ci95": interval}


def versus_metrics(labels: np.ndarray, logits: np.ndarray, classifier: Classifier, other: Classifier, other_logits: np.ndarray, n_bootstrap: int, seed: int) -> dict:
    """Side-by-side numbers of a second checkpoint scored on the same images."""
    probs, other_probs = calibrated(classifier, logits), calibrated(other, other_logits)
    ranked = both_classes(labels)
    return {
        "arch": other.card.arch,
        "checkpoint_sha256": other.card.sha256,
        "auroc": float(roc_auc_score(labels, other_probs)) if ranked else None,
        "ece": ece(other_probs, labels),
        "brier": brier(other_probs, labels),
        "auroc_difference": paired_auroc_difference(labels, probs, other_probs, n_bootstrap, seed),
    }


def threshold_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float, n_bootstrap: int = 0, seed: int = 0) -> dict:
    """Confusion-matrix metrics of ``p >= threshold``; undefined ratios (0/0) are ``None``.
    ``accuracy_ci95`` is the accuracy's bootstrap interval (``None`` without resamples)."""
    labels = np.asarray(labels, dtype=int)
    predicted = (np.asarray(probs) >= threshold).astype(int)
    nan = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = {
            "threshold": float(threshold),
            "accuracy": accuracy_score(labels, predicted) if len(labels) else nan,
            "sensitivity": recall_score(labels, predicted, pos_label=1, zero_division=nan),
            "specificity": recall_score(labels, predicted, pos_label=0, zero_division=nan),
            "ppv": precision_score(labels, predicted, pos_label=1, zero_division=nan),
            "npv": precision_score(labels, predicted, pos_label=0, zero_division=nan),
            "f1": f1_score(labels, predicted, pos_label=1, zero_division=nan),
            "balanced_accuracy": balanced_accuracy_score(labels, predicted) if both_classes(labels) else nan,
        }
    values = {k: _finite_or_none(v) for k, v in values.items()}
    values["confusion"] = confusion_matrix(labels, predicted, labels=[0, 1]).tolist()
    values["accuracy_ci95"] = share_interval(labels, predicted == labels, n_bootstrap, seed)
    return values


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def compute_metrics(labels: np.ndarray, logits: np.ndarray, classifier: Classifier, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Ranking, calibration and per-operating-point metrics of raw logits under a model card."""
    labels = np.asarray(labels, dtype=int)
    raw = sigmoid(logits)
    probs = calibrated(classifier, logits)
    notes = []
    ranked = both_classes(labels)
    if not ranked:
        notes.append("Only one class present: AUROC, AUPRC and their interval are undefined (null).")
    card = classifier.card
    metrics = {
        "n": int(len(labels)),
        "counts": {name: int((labels == i).sum()) for i, name in enumerate(CLASSES)},
        "auroc": float(roc_auc_score(labels, probs)) if ranked else None,
        "auroc_ci95": bootstrap_auroc_ci(labels, probs, n_bootstrap, seed),
        "auprc": float(average_precision_score(labels, probs)) if ranked else None,
        "ece": ece(probs, labels),
        "ece_ci95": ece_interval(labels, probs, n_bootstrap, seed),
        "brier": brier(probs, labels),
        "mean_probability": float(probs.mean()) if len(probs) else None,
        "uncalibrated": {"ece": ece(raw, labels), "brier": brier(raw, labels)},
        "operating_points": {
            name: threshold_metrics(labels, probs, card.operating_points[name]["threshold"], n_bootstrap, seed)
            | {"validation": {k: card.operating_points[name][k] for k in ("sensitivity", "specificity")}}
            for name in OPERATING_POINTS
            if name in card.operating_points
        },
        "temperature": card.temperature,
        "bootstrap": {"resamples": n_bootstrap, "seed": seed, "level": CI_LEVEL, "unit": "image"},
        "notes": notes,
    }
    missing = [name for name in OPERATING_POINTS if name not in card.operating_points]
    if missing:
        notes.append(f"The model card defines no {', '.join(missing)} operating point.")
    return metrics


def save_plots(out: Path, labels: np.ndarray, logits: np.ndarray, classifier: Classifier, metrics: dict) -> list[str]:
    """ROC, precision-recall, reliability and confusion-matrix PNGs; returns the file names."""
    probs = calibrated(classifier, logits)
    written = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        written.append(name)

    points = metrics["operating_points"]
    markers = dict(zip(OPERATING_POINTS, ("o", "s", "^")))
    if both_classes(labels):
        fpr, tpr, _ = roc_curve(labels, probs)
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot(fpr, tpr, label=f"AUROC {metrics['auroc']:.3f}")
        ax.plot([0, 1], [0, 1], ":", color="grey")
        for name, point in points.items():
            ax.plot(1 - point["specificity"], point["sensitivity"], markers[name], ms=8, label=f"{name} (t={point['threshold']:.3f})")
        ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC (n={len(labels)})", xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
        ax.legend(loc="lower right", fontsize=8)
        save(fig, "roc.png")

        precision, recall, _ = precision_recall_curve(labels, probs)
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot(recall, precision, label=f"AUPRC {metrics['auprc']:.3f}")
        ax.axhline(labels.mean(), ls=":", color="grey", label="prevalence")
        for name, point in points.items():
            if point["ppv"] is not None:
                ax.plot(point["sensitivity"], point["ppv"], markers[name], ms=8, label=name)
        ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title="Precision-recall", xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
        ax.legend(loc="lower left", fontsize=8)
        save(fig, "pr.png")

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5), sharey=True)
    for ax, (title, p) in zip(axes, (("before temperature", sigmoid(logits)), (f"after (T={classifier.card.temperature:.2f})", probs))):
        reliability_panel(ax, p, labels, title, bar_colour="C0", dot_colour="C3")
        ax.label_outer()
    save(fig, "reliability.png")

    for name, point in points.items():
        fig, ax = plt.subplots(figsize=(4, 4))
        ConfusionMatrixDisplay(np.array(point["confusion"]), display_labels=CLASSES).plot(ax=ax, colorbar=False, cmap="Blues")
        ax.set_title(f"{name} (p >= {point['threshold']:.3f})")
        save(fig, f"confusion_{name}.png")
    return written


def write_predictions(path: Path, scored: Scored, probs: np.ndarray) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label", "logit", "probability"])
        for sample, logit, p in zip(scored.samples, scored.logits, probs):
            writer.writerow([f"{CLASSES[sample.label]}/{sample.path.name}", CLASSES[sample.label], f"{logit:.6f}", f"{p:.6f}"])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder with NORMAL/ and PNEUMONIA/ subfolders")
    parser.add_argument("--out", required=True, help="output folder for metrics.json and plots")
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="model card JSON")
    parser.add_argument("--split", choices=("all", "val"), default="all", help="val: only the checkpoint's validation patients")
    parser.add_argument("--versus", default=None, help="a second model card to compare with on the same images")
    parser.add_argument("--blur", type=float, default=0.0, help="score softer copies: Gaussian blur of this sigma in px at the model's input size")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals (0: none)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    classifier = Classifier.load(args.checkpoint)
    samples = list_samples(args.data)
    if args.split == "val":
        try:
            samples = validation_samples(samples, args.checkpoint)
        except FileNotFoundError as error:
            raise SystemExit(str(error)) from None
    if not samples:
        raise SystemExit(f"No images found under {args.data}/{{{','.join(CLASSES)}}} (split {args.split}).")
    perturb = blur_input(args.blur) if args.blur > 0 else None
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
        perturbation={"gaussian_blur_sigma_px": args.blur} if args.blur > 0 else None,
        failed={"count": len(scored.failures), "files": [{"file": f, "reason": r} for f, r in scored.failures]},
    )
    if args.versus:
        other = Classifier.load(args.versus)
        other_logits = score_samples(other, scored.samples, args.batch_size, perturb=perturb).logits
        metrics["versus"] = versus_metrics(labels, scored.logits, classifier, other, other_logits, args.bootstrap, args.seed)
    metrics["plots"] = save_plots(out, labels, scored.logits, classifier, metrics)
    write_predictions(out / "predictions.csv", scored, calibrated(classifier, scored.logits))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    summary = {k: metrics[k] for k in ("n", "auroc", "auroc_ci95", "auprc", "ece", "ece_ci95", "brier", "mean_probability")}
    summary["high_band_error_rate"] = metrics.get("high_band_error_rate")
    summary["high_band_error_rate_ci95"] = metrics.get("high_band_error_rate_ci95")
    summary["accuracy_at_balanced"] = metrics["operating_points"].get("balanced", {}).get("accuracy")
    summary["accuracy_at_balanced_ci95"] = metrics["operating_points"].get("balanced", {}).get("accuracy_ci95")
    if "versus" in metrics:
        summary["versus"] = {k: metrics["versus"][k] for k in ("arch", "auroc", "auroc_difference")}
    print(json.dumps(summary))
    return metrics


if __name__ == "__main__":
    main()
