"""Temperature scaling, calibration error and operating points, all fitted on validation only."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_curve

OPERATING_POINTS = ("balanced", "screening", "rule_in")
SCREENING_MIN_SENSITIVITY = 0.95
RULE_IN_MIN_SPECIFICITY = 0.90


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature T > 0 minimising the NLL of ``sigmoid(logit / T)`` (LBFGS on log T)."""
    z = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    y = torch.as_tensor(np.asarray(labels, dtype=np.float64))
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1 - 1e-12)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean((np.asarray(probs, dtype=np.float64) - np.asarray(labels)) ** 2))


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
        sum(b["count"] / total * abs(b["confidence"] - b["accuracy"]) for b in reliability_bins(probs, labels, n_bins) if b["count"])
    )


def operating_points(probs: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, float]]:
    """The three named thresholds on calibrated P(pneumonia); a case is positive when ``p >= threshold``.

    - ``balanced``: the prevalence of pneumonia in ``labels``. For calibrated probabilities this
      is the threshold that maximises Youden's J = sensitivity + specificity - 1 (predict
      pneumonia when p / prevalence > (1 - p) / (1 - prevalence)). The empirical maximum of J is
      not used: on a few hundred validation films J is flat over a wide range of thresholds
      (within a handful of films), so its arg-max jumps with the sample.
    - ``screening``: the highest threshold whose sensitivity is >= 0.95.
    - ``rule_in``: the lowest threshold whose specificity is >= 0.90.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).astype(int)
    fpr, tpr, thresholds = roc_curve(labels, probs, drop_intermediate=False)
    finite = np.isfinite(thresholds)
    fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
    spec = 1 - fpr
    # roc_curve orders thresholds from high to low.
    points = {
        name: {"threshold": float(thresholds[i]), "sensitivity": float(tpr[i]), "specificity": float(spec[i])}
        for name, i in (
            ("screening", int(np.flatnonzero(tpr >= SCREENING_MIN_SENSITIVITY)[0])),
            ("rule_in", int(np.flatnonzero(spec >= RULE_IN_MIN_SPECIFICITY)[-1])),
        )
    }
    prevalence = float(labels.mean())
    predicted = probs >= prevalence
    balanced = {"threshold": prevalence, "sensitivity": float(predicted[labels == 1].mean()), "specificity": float((~predicted[labels == 0]).mean())}
    return {"balanced": balanced, **points}
