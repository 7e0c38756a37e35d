"""The evaluation's PNGs: ROC, precision-recall and reliability panels drawn by
:mod:`xray_xai.ui.plots` (as in the app's Model tab) and one confusion matrix per operating point."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay

from .. import CLASSES
from ..calibration import OPERATING_POINTS, sigmoid
from ..metrics import both_classes
from ..models.classifier import Classifier
from ..ui.plots import Mark, Scores, pr_panel, reliability_panel, roc_panel
from .scoring import calibrated

MARKERS = dict(zip(OPERATING_POINTS, (("o", "C1"), ("s", "C2"), ("^", "C3")), strict=True))  # marker, colour


def save_plots(out: Path, labels: np.ndarray, logits: np.ndarray, classifier: Classifier, metrics: dict) -> list[str]:
    """ROC, precision-recall, reliability and confusion-matrix PNGs; returns the file names."""
    probs = calibrated(classifier, logits)
    points = metrics["operating_points"]
    written = []

    def save(fig: Figure, name: str) -> None:
        fig.savefig(out / name, dpi=120)
        written.append(name)

    if both_classes(labels):
        marks = [
            Mark(
                point["threshold"],
                f"{name} (t={point['threshold']:.3f})",
                marker=MARKERS[name][0],
                size=8,
                colour=MARKERS[name][1],
            )
            for name, point in points.items()
        ]
        fig = Figure(figsize=(5, 5), layout="tight")
        roc_panel(fig.subplots(), [Scores(labels, probs, marks=marks)], f"ROC (n={len(labels)})")
        save(fig, "roc.png")
        fig = Figure(figsize=(5, 5), layout="tight")
        pr_panel(fig.subplots(), [Scores(labels, probs, marks=marks)], "Precision-recall")
        save(fig, "pr.png")

    fig = Figure(figsize=(9, 4.5), layout="tight")
    axes = fig.subplots(1, 2, sharey=True)
    panels = (("before temperature", sigmoid(logits)), (f"after (T={classifier.card.temperature:.2f})", probs))
    for ax, (title, p) in zip(axes, panels, strict=True):
        reliability_panel(ax, p, labels, title, bar_colour="C0", dot_colour="C3")
        ax.label_outer()
    save(fig, "reliability.png")

    for name, point in points.items():
        fig = Figure(figsize=(4, 4), layout="tight")
        ax = fig.subplots()
        ConfusionMatrixDisplay(np.array(point["confusion"]), display_labels=CLASSES).plot(
            ax=ax, colorbar=False, cmap="Blues"
        )
        ax.set_title(f"{name} (p >= {point['threshold']:.3f})")
        save(fig, f"confusion_{name}.png")
    return written
