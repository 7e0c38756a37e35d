"""Matplotlib panels drawn the same way by the app's Model tab and the evaluation CLI's PNGs:
ROC and precision-recall curves (scikit-learn's displays) and the reliability diagram."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

from ..metrics import auprc, auroc, confusion_at, ece, reliability_bins
from ..report import percent

LIMITS = (-0.01, 1.01)


@dataclass(frozen=True)
class Mark:
    """A threshold marked on a curve: ``label`` names it in the legend (``None``: unnamed);
    ``colour`` None draws it in its curve's colour."""

    threshold: float
    label: str | None = None
    marker: str = "o"
    size: float = 7
    colour: str | None = None


@dataclass(frozen=True)
class Scores:
    """One set of scored films drawn as one curve: ``name`` prefixes its legend entries ("" for a
    lone curve); ``colour`` None takes the next colour of the axes' cycle for the curve and grey
    for its prevalence line."""

    labels: np.ndarray
    probs: np.ndarray
    name: str = ""
    colour: str | None = None
    marks: Sequence[Mark] = ()


def _prefix(scores: Scores) -> str:
    return f"{scores.name}: " if scores.name else ""


def _plot_mark(ax: Axes, mark: Mark, x: float, y: float, curve_colour: str) -> None:
    """``mark`` at ``(x, y)``, drawn alike on every panel: in its curve's colour unless it has its
    own, and out of the legend (``_mark``) unless it is named."""
    ax.plot(x, y, mark.marker, color=mark.colour or curve_colour, ms=mark.size, label=mark.label or "_mark")


def roc_panel(ax: Axes, curves: Sequence[Scores], title: str) -> None:
    """ROC curves (:meth:`sklearn.metrics.RocCurveDisplay.from_predictions`) with their AUROC and
    film count in the legend, the chance diagonal, and each curve's marked thresholds at their
    (1 - specificity, sensitivity). Every curve needs both classes."""
    for index, scores in enumerate(curves):
        area = auroc(scores.labels, scores.probs)
        display = RocCurveDisplay.from_predictions(
            scores.labels, scores.probs, ax=ax,
            curve_kwargs={
                "label": f"{_prefix(scores)}AUROC {area:.3f} (n={len(scores.labels)})",
                "color": scores.colour,
            },
            plot_chance_level=index == 0, chance_level_kw={"color": "grey", "linestyle": ":", "label": "_chance"},
        )  # fmt: skip
        colour = display.line_.get_color()
        for mark in scores.marks:
            rates = confusion_at(scores.labels, scores.probs, mark.threshold)
            _plot_mark(ax, mark, 1 - rates.specificity, rates.sensitivity, colour)
    ax.set(xlabel="1 - specificity (false positive rate)", ylabel="sensitivity", title=title, xlim=LIMITS, ylim=LIMITS)
    ax.legend(loc="lower right", fontsize=8)


def pr_panel(ax: Axes, curves: Sequence[Scores], title: str) -> None:
    """Precision-recall curves (:meth:`sklearn.metrics.PrecisionRecallDisplay.from_predictions`)
    with their AUPRC (average precision) in the legend, each curve's prevalence (the precision of
    calling every film PNEUMONIA) as a dotted line, and its marked thresholds at (sensitivity, PPV)
    where the PPV is defined. Every curve needs both classes."""
    for scores in curves:
        prevalence = float(np.mean(scores.labels))
        display = PrecisionRecallDisplay.from_predictions(
            scores.labels, scores.probs, ax=ax,
            curve_kwargs={
                "label": f"{_prefix(scores)}AUPRC {auprc(scores.labels, scores.probs):.3f}",
                "color": scores.colour,
            },
        )  # fmt: skip
        colour = display.line_.get_color()
        ax.axhline(
            prevalence,
            ls=":",
            color=scores.colour or "grey",
            label=f"{scores.name + ' ' if scores.name else ''}prevalence {percent(prevalence)}",
        )
        for mark in scores.marks:
            rates = confusion_at(scores.labels, scores.probs, mark.threshold)
            if rates.ppv is not None:
                _plot_mark(ax, mark, rates.sensitivity, rates.ppv, colour)
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title=title, xlim=LIMITS, ylim=LIMITS)
    ax.legend(loc="lower left", fontsize=8)


def reliability_panel(
    ax: Axes, probs: np.ndarray, labels: np.ndarray, title: str, bar_colour: str, dot_colour: str, n_bins: int = 15
) -> None:
    """Draw one reliability diagram on ``ax``: observed pneumonia rate against predicted
    P(pneumonia) in the bins of the ECE given in the title (dot area grows with the films in a bin).
    Call ``ax.label_outer()`` after it on panels that share the y axis."""
    bins = [b for b in reliability_bins(probs, labels, n_bins) if b["count"]]
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.bar(
        [b["lo"] for b in bins], [b["accuracy"] for b in bins],
        width=1 / n_bins, align="edge", alpha=0.45, color=bar_colour, edgecolor="k",
    )  # fmt: skip
    ax.scatter(
        [b["confidence"] for b in bins], [b["accuracy"] for b in bins],
        s=[12 + 2 * b["count"] ** 0.75 for b in bins], color=dot_colour, zorder=3,
    )  # fmt: skip
    ax.set(
        xlabel="predicted P(pneumonia)",
        ylabel="observed pneumonia rate",
        title=f"{title}: ECE {ece(probs, labels, n_bins):.3f}",
        xlim=(0, 1),
        ylim=(0, 1),
    )
