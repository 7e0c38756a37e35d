"""How the classifier behaves on a labelled set of films, from stored probabilities alone.

Pure functions of ``labels`` (1 = PNEUMONIA) and calibrated ``probs`` = P(pneumonia): rates at a
threshold, predictive values re-weighted to another prevalence (Bayes), ROC and precision-recall
curves, and accuracy per confidence band. A film is called PNEUMONIA when ``p >= threshold``,
the rule of :meth:`xray_xai.models.classifier.Classifier.decide`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, confusion_matrix, precision_recall_curve, roc_auc_score, roc_curve

from .results import BANDS


def _ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``, or ``None`` when the denominator is zero (undefined)."""
    return float(numerator / denominator) if denominator > 0 else None


@dataclass(frozen=True)
class Rates:
    """Confusion matrix of ``p >= threshold`` and the rates read from it (``None`` when 0/0)."""

    threshold: float
    tn: int
    fp: int
    fn: int
    tp: int

    @property
    def n(self) -> int:
        return self.tn + self.fp + self.fn + self.tp

    @property
    def sensitivity(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def specificity(self) -> float | None:
        return _ratio(self.tn, self.tn + self.fp)

    @property
    def prevalence(self) -> float | None:
        return _ratio(self.tp + self.fn, self.n)

    @property
    def confusion(self) -> list[list[int]]:
        """Rows = true NORMAL, PNEUMONIA; columns = predicted NORMAL, PNEUMONIA."""
        return [[self.tn, self.fp], [self.fn, self.tp]]


def rates_at(labels: Sequence[int], probs: Sequence[float], threshold: float) -> Rates:
    """The confusion matrix of calling PNEUMONIA when ``p >= threshold``."""
    predicted = (np.asarray(probs, dtype=np.float64) >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(np.asarray(labels, dtype=int), predicted, labels=[0, 1]).ravel()
    return Rates(float(threshold), int(tn), int(fp), int(fn), int(tp))


def predictive_values(sensitivity: float | None, specificity: float | None, prevalence: float) -> tuple[float | None, float | None]:
    """PPV and NPV that the same sensitivity and specificity give at another ``prevalence`` (Bayes).

    PPV = sens * prev / (sens * prev + (1 - spec) * (1 - prev)) and
    NPV = spec * (1 - prev) / (spec * (1 - prev) + (1 - sens) * prev); ``None`` where undefined.
    """
    if not 0.0 <= prevalence <= 1.0:
        raise ValueError(f"prevalence must be in [0, 1], got {prevalence}")
    if sensitivity is None or specificity is None:
        return None, None
    true_pos, false_pos = sensitivity * prevalence, (1 - specificity) * (1 - prevalence)
    true_neg, false_neg = specificity * (1 - prevalence), (1 - sensitivity) * prevalence
    return _ratio(true_pos, true_pos + false_pos), _ratio(true_neg, true_neg + false_neg)


@dataclass(frozen=True)
class Curves:
    """ROC and precision-recall curves with their areas (``None`` areas when one class is missing)."""

    fpr: np.ndarray
    tpr: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    auroc: float | None
    auprc: float | None


def curves(labels: Sequence[int], probs: Sequence[float]) -> Curves:
    """ROC and precision-recall curves, AUROC and AUPRC (average precision), all from scikit-learn."""
    labels, probs = np.asarray(labels, dtype=int), np.asarray(probs, dtype=np.float64)
    if len(np.unique(labels)) < 2:
        empty = np.zeros(0)
        return Curves(empty, empty, empty, empty, None, None)
    fpr, tpr, _ = roc_curve(labels, probs)
    precision, recall, _ = precision_recall_curve(labels, probs)
    return Curves(fpr, tpr, precision, recall, float(roc_auc_score(labels, probs)), float(average_precision_score(labels, probs)))


@dataclass(frozen=True)
class BandRow:
    """How many films fell in one confidence band and how many of them were called right."""

    band: str
    n: int
    correct: int

    @property
    def accuracy(self) -> float | None:
        return _ratio(self.correct, self.n)


def band_rows(labels: Sequence[int], probs: Sequence[float], bands: Sequence[str], threshold: float) -> list[BandRow]:
    """One row per confidence band (High, Moderate, Low): films in it and those right at ``threshold``."""
    labels, bands = np.asarray(labels, dtype=int), np.asarray(bands)
    right = (np.asarray(probs, dtype=np.float64) >= threshold).astype(int) == labels
    return [BandRow(name, int((bands == name).sum()), int(right[bands == name].sum())) for _, name in BANDS]
