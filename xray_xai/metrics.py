"""Metrics of a classifier on labelled films, from ``labels`` (1 = PNEUMONIA) and calibrated
``probs`` = P(pneumonia) alone: the one implementation behind the evaluation JSON, the Model tab
and the model report.

A film is called PNEUMONIA when ``p >= threshold``, the rule of
:meth:`xray_xai.models.classifier.Classifier.decide`.

**Undefined values are ``None``, never NaN**: a ratio whose denominator is zero (sensitivity
without a PNEUMONIA film, PPV without a PNEUMONIA call, ...), an AUROC on one class, an interval
without resamples. ``None`` is what the JSON holds (``null``) and what the app shows as "n/a".

Intervals are percentile bootstraps (:func:`scipy.stats.bootstrap`) that resample films within
each class, so every resample holds both classes and statistics that need both (AUROC) are
always defined; all arrays of a statistic are resampled with the same films (paired).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest, bootstrap
from sklearn.metrics import average_precision_score, roc_auc_score

from .conformal import INCONCLUSIVE, NORMAL, PNEUMONIA
from .results import BANDS

CI_LEVEL = 0.95


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``, or ``None`` when the denominator is zero (undefined)."""
    return float(numerator / denominator) if denominator > 0 else None


def finite_or_none(value: float | None) -> float | None:
    """``value`` as a float, ``None`` when it is ``None``, NaN or infinite."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def both_classes(labels: Sequence[int]) -> bool:
    """Whether ``labels`` hold films of both classes."""
    return len(np.unique(np.asarray(labels))) == 2


# --- a threshold ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Confusion:
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
        return ratio(self.tp, self.tp + self.fn)

    @property
    def specificity(self) -> float | None:
        return ratio(self.tn, self.tn + self.fp)

    @property
    def ppv(self) -> float | None:
        return ratio(self.tp, self.tp + self.fp)

    @property
    def npv(self) -> float | None:
        return ratio(self.tn, self.tn + self.fn)

    @property
    def accuracy(self) -> float | None:
        return ratio(self.tp + self.tn, self.n)

    @property
    def balanced_accuracy(self) -> float | None:
        """Mean of sensitivity and specificity; ``None`` unless both classes are present."""
        if self.sensitivity is None or self.specificity is None:
            return None
        return (self.sensitivity + self.specificity) / 2

    @property
    def f1(self) -> float | None:
        return ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def prevalence(self) -> float | None:
        return ratio(self.tp + self.fn, self.n)

    @property
    def confusion(self) -> list[list[int]]:
        """Rows = true NORMAL, PNEUMONIA; columns = predicted NORMAL, PNEUMONIA."""
        return [[self.tn, self.fp], [self.fn, self.tp]]


def called_pneumonia(probs: Sequence[float], threshold: float) -> np.ndarray:
    """Which films are called PNEUMONIA at ``threshold`` (``p >= threshold``)."""
    return np.asarray(probs, dtype=np.float64) >= threshold


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> list[dict[str, float]]:
    """Equal-width bins of P(positive): count, mean confidence and observed positive rate."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    index = np.minimum((probs * n_bins).astype(int), n_bins - 1)
    bins = []
    for b in range(n_bins):
        member = index == b
        count = int(member.sum())
        bins.append(
            {
                "lo": b / n_bins,
                "hi": (b + 1) / n_bins,
                "count": count,
                "confidence": float(probs[member].mean()) if count else float("nan"),
                "accuracy": float(labels[member].mean()) if count else float("nan"),
            }
        )
    return bins


def ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error of P(positive) over ``n_bins`` equal-width bins."""
    total = len(probs)
    return float(
        sum(
            b["count"] / total * abs(b["confidence"] - b["accuracy"])
            for b in reliability_bins(probs, labels, n_bins)
            if b["count"]
        )
    )


def counts_at(labels: Sequence[int], probs: Sequence[float], thresholds: Sequence[float]) -> np.ndarray:
    """``(4, T)`` counts (tn, fp, fn, tp) of calling PNEUMONIA when ``p >= t``, for every threshold
    ``t`` at once (sorted scores and binary search: a sweep over all candidate thresholds costs
    one sort)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).astype(int)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    positives, negatives = np.sort(probs[labels == 1]), np.sort(probs[labels == 0])
    fn = np.searchsorted(positives, thresholds, side="left")
    tn = np.searchsorted(negatives, thresholds, side="left")
    return np.stack([tn, len(negatives) - tn, fn, len(positives) - fn])


def confusion_at(labels: Sequence[int], probs: Sequence[float], threshold: float) -> Confusion:
    """The confusion matrix of calling PNEUMONIA when ``p >= threshold``."""
    tn, fp, fn, tp = counts_at(labels, probs, [threshold])[:, 0]
    return Confusion(float(threshold), int(tn), int(fp), int(fn), int(tp))


def threshold_metrics(
    labels: Sequence[int], probs: Sequence[float], threshold: float, n_bootstrap: int = 0, seed: int = 0
) -> dict:
    """The evaluation JSON of one operating point: the rates of :class:`Confusion`, the confusion
    matrix, and ``accuracy_ci95``, the accuracy's bootstrap interval (``None`` without resamples)."""
    labels = np.asarray(labels, dtype=int)
    rates = confusion_at(labels, probs, threshold)
    keys = ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "balanced_accuracy")
    return {
        "threshold": float(threshold),
        **{key: getattr(rates, key) for key in keys},
        "confusion": rates.confusion,
        "accuracy_ci95": share_interval(labels, called_pneumonia(probs, threshold) == labels, n_bootstrap, seed),
    }


def predictive_values(
    sensitivity: float | None, specificity: float | None, prevalence: float
) -> tuple[float | None, float | None]:
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
    return ratio(true_pos, true_pos + false_pos), ratio(true_neg, true_neg + false_neg)


# --- ranking --------------------------------------------------------------------------------------


def auroc(labels: Sequence[int], probs: Sequence[float]) -> float | None:
    """Area under the ROC curve (scikit-learn); ``None`` unless both classes are present."""
    return float(roc_auc_score(labels, probs)) if both_classes(labels) else None


def auprc(labels: Sequence[int], probs: Sequence[float]) -> float | None:
    """Area under the precision-recall curve as average precision (scikit-learn); ``None`` unless
    both classes are present."""
    return float(average_precision_score(labels, probs)) if both_classes(labels) else None


# --- confidence bands -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BandRow:
    """How many films fell in one confidence band and how many of them were called right."""

    band: str
    n: int
    correct: int

    @property
    def accuracy(self) -> float | None:
        return ratio(self.correct, self.n)


def band_rows(correct: Sequence[bool], bands: Sequence[str]) -> list[BandRow]:
    """One row per confidence band (High, Moderate, Low): the films in it and those called right."""
    correct, bands = np.asarray(correct, dtype=bool), np.asarray(bands)
    return [BandRow(name, int((bands == name).sum()), int(correct[bands == name].sum())) for _, name in BANDS]


# --- bootstrap intervals --------------------------------------------------------------------------


def bootstrap_interval(
    labels: Sequence[int], statistic: Callable[[np.ndarray], float], n_resamples: int = 1000, seed: int = 0
) -> list[float] | None:
    """Percentile bootstrap interval (95%) of ``statistic(index)``, where ``index`` selects a
    resample of the films: :func:`scipy.stats.bootstrap` draws films with replacement within each
    class (so each resample keeps both classes and their counts), and every array the statistic
    reads is indexed with the same films. ``None`` without resamples, or unless each class has
    at least two films (one film of a class would be in every resample: no spread to measure)."""
    labels = np.asarray(labels)
    by_class = tuple(np.flatnonzero(labels == label) for label in np.unique(labels))
    if n_resamples <= 0 or len(by_class) != 2 or min(map(len, by_class)) < 2:
        return None
    return percentile_interval(by_class, lambda *index: statistic(np.concatenate(index)), n_resamples, seed)


def percentile_interval(
    samples: Sequence[np.ndarray], statistic: Callable[..., float], n_resamples: int, seed: int, paired: bool = False
) -> list[float]:
    """Percentile bootstrap interval at ``CI_LEVEL`` of ``statistic(*samples)`` as ``[low, high]``
    (:func:`scipy.stats.bootstrap`, seeded; ``paired`` resamples the arrays' elements together):
    the one way every reported bootstrap interval is drawn, so they all read the same."""
    result = bootstrap(
        samples,
        statistic,
        paired=paired,
        vectorized=False,
        n_resamples=n_resamples,
        method="percentile",
        confidence_level=CI_LEVEL,
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return [float(low), float(high)]


def share_figure(hits: np.ndarray, n_resamples: int, seed: int) -> dict:
    """A share with its bootstrap interval and, since a share of 0 or 1 gives a bootstrap
    interval of zero width, the exact (Clopper-Pearson) interval too."""
    hits = np.asarray(hits, dtype=float)
    if not hits.size:
        return {"value": None, "k": 0, "n": 0, "ci95": None, "exact_ci95": None}
    k, n = int(hits.sum()), int(hits.size)
    exact = binomtest(k, n).proportion_ci(CI_LEVEL, method="exact")
    return {
        "value": k / n,
        "k": k,
        "n": n,
        "ci95": percentile_interval((hits,), np.mean, n_resamples, seed, paired=True),
        "exact_ci95": [float(exact.low), float(exact.high)],
    }


def answer_shares(given: np.ndarray, labels: np.ndarray, n_resamples: int, seed: int) -> dict:
    """What the answers (NORMAL, PNEUMONIA or INCONCLUSIVE) were worth on labelled films, each a
    :func:`share_figure`: decisive answers that are right, answers INCONCLUSIVE, and normal films
    not answered PNEUMONIA."""
    given, labels = np.asarray(given, dtype=object), np.asarray(labels).astype(int)
    decisive = given != INCONCLUSIVE
    truth = np.where(labels == 1, PNEUMONIA, NORMAL)
    return {
        "decisive_right": share_figure((given == truth)[decisive], n_resamples, seed),
        "inconclusive": share_figure(~decisive, n_resamples, seed),
        "normal_not_called_pneumonia": share_figure(given[labels == 0] != PNEUMONIA, n_resamples, seed),
    }


def share_interval(
    labels: Sequence[int], hits: Sequence[bool], n_resamples: int = 1000, seed: int = 0
) -> list[float] | None:
    """Bootstrap interval (95%) of the share of films where ``hits`` holds (an accuracy, an
    error rate); the same resamples as the AUROC's for the same seed."""
    hits = np.asarray(hits, dtype=bool)
    return bootstrap_interval(labels, lambda i: float(hits[i].mean()), n_resamples, seed)


def ece_interval(
    labels: Sequence[int], probs: Sequence[float], n_resamples: int = 1000, seed: int = 0
) -> list[float] | None:
    """Bootstrap interval (95%) of the ECE. Binned ECE is biased upward on small samples, and
    more so on resamples (duplicated films), so read it as the sampling spread, not an unbiased
    range."""
    labels, probs = np.asarray(labels), np.asarray(probs)
    return bootstrap_interval(labels, lambda i: ece(probs[i], labels[i]), n_resamples, seed)


def auroc_interval(
    labels: Sequence[int], probs: Sequence[float], n_resamples: int = 1000, seed: int = 0
) -> list[float] | None:
    """Bootstrap interval (95%) of the AUROC; ``None`` if the data hold a single class."""
    labels, probs = np.asarray(labels), np.asarray(probs)
    return bootstrap_interval(labels, lambda i: roc_auc_score(labels[i], probs[i]), n_resamples, seed)


def paired_auroc_difference(
    labels: Sequence[int], a: Sequence[float], b: Sequence[float], n_resamples: int = 1000, seed: int = 0
) -> dict | None:
    """AUROC of scores ``a`` minus that of ``b`` on the same films, with a paired bootstrap
    interval (95%; the same resampled films score both); ``None`` on a single class."""
    labels, a, b = np.asarray(labels), np.asarray(a), np.asarray(b)
    if not both_classes(labels):
        return None
    interval = bootstrap_interval(
        labels, lambda i: roc_auc_score(labels[i], a[i]) - roc_auc_score(labels[i], b[i]), n_resamples, seed
    )
    return {"difference": float(roc_auc_score(labels, a) - roc_auc_score(labels, b)), "ci95": interval}
