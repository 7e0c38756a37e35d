"""Temperature scaling, calibration error and operating points, all fitted on validation only."""

from __future__ import annotations

import numpy as np

# torch, scipy, scikit-learn and .metrics (scipy.stats) are imported in the functions that use
# them: the app's page reads OPERATING_POINTS from here and is served without them.
from .results import RULE_IN_MIN_SPECIFICITY, SCREENING_MIN_SENSITIVITY

OPERATING_POINTS = ("balanced", "screening", "rule_in")


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function in float64 (:func:`scipy.special.expit`, stable for large ``|x|``)."""
    from scipy.special import expit

    return expit(np.asarray(x, dtype=np.float64))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature T > 0 minimising the NLL of ``sigmoid(logit / T)`` (LBFGS on log T)."""
    import torch

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
    """Mean negative log-likelihood of P(positive) (:func:`sklearn.metrics.log_loss`).

    Probabilities are clipped to [1e-12, 1 - 1e-12] first, as this function always did, so that a
    confident mistake costs at most -log(1e-12) whatever sklearn's own clipping."""
    from sklearn.metrics import log_loss

    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1 - 1e-12)
    return float(log_loss(np.asarray(labels).astype(int), p, labels=[0, 1]))


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared error of P(positive) against the 0/1 label (:func:`sklearn.metrics.brier_score_loss`)."""
    from sklearn.metrics import brier_score_loss

    return float(brier_score_loss(np.asarray(labels).astype(int), np.asarray(probs, dtype=np.float64), labels=[0, 1]))


def candidate_thresholds(probs: np.ndarray) -> np.ndarray:
    """Every threshold that splits the scores differently, in increasing order: 0 (everything
    positive), the midpoints between neighbouring distinct scores (0 and 1 count as neighbours
    of the lowest and highest), and the float just above 1 (nothing positive)."""
    scores = np.unique(np.concatenate(([0.0], np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0), [1.0])))
    return np.concatenate(([0.0], (scores[:-1] + scores[1:]) / 2, [np.nextafter(1.0, 2.0)]))


def rates_at(probs: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sensitivity and specificity of ``p >= t`` for each threshold ``t`` (NaN for a class with no
    films), from :func:`xray_xai.metrics.counts_at`."""
    from .metrics import counts_at

    tn, fp, fn, tp = counts_at(labels, probs, thresholds).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return tp / (tp + fn), tn / (tn + fp)


def _point(probs: np.ndarray, labels: np.ndarray, threshold: float, target: str, rule: str) -> dict:
    sensitivity, specificity = rates_at(probs, labels, np.array([threshold]))
    return {
        "threshold": float(threshold),
        "sensitivity": float(sensitivity[0]),
        "specificity": float(specificity[0]),
        "target": target,
        "rule": rule,
    }


def operating_points(probs: np.ndarray, labels: np.ndarray) -> dict[str, dict]:
    """The three named thresholds on calibrated P(pneumonia); a case is positive when ``p >= threshold``.

    Their order ``screening <= balanced <= rule_in`` holds by construction, so screening never
    misses more than balanced and rule-in never raises more false alarms than balanced.

    - ``balanced``: the prevalence of pneumonia in ``labels``. For calibrated probabilities this
      is the threshold that maximises Youden's J = sensitivity + specificity - 1 (predict
      pneumonia when p / prevalence > (1 - p) / (1 - prevalence)). The empirical maximum of J is
      not used: on a few hundred validation films J is flat over a wide range of thresholds
      (within a handful of films), so its arg-max jumps with the sample.
    - ``screening``: the highest threshold whose sensitivity is >= 0.99, and no higher than
      balanced.
    - ``rule_in``: the lowest threshold whose specificity is >= 0.99, and no lower than balanced.

    Screening and rule-in thresholds are midpoints between neighbouring scores
    (:func:`candidate_thresholds`), never a film's own score, so a film does not sit on the
    boundary. On nearly separable validation data a whole range of thresholds meets a target;
    taking its far end (the highest for sensitivity, the lowest for specificity) and clamping at
    balanced keeps each point on its own side of balanced. Each point records its ``target`` and
    ``rule`` in words; ``sensitivity`` and ``specificity`` are measured on ``labels`` at the final
    threshold.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).astype(int)
    prevalence = float(labels.mean())
    candidates = candidate_thresholds(probs)
    sensitivity, specificity = rates_at(probs, labels, candidates)
    # An empty class meets its target vacuously (NaN compares False, so test for it explicitly).
    meets_sensitivity = np.isnan(sensitivity) | (sensitivity >= SCREENING_MIN_SENSITIVITY)
    meets_specificity = np.isnan(specificity) | (specificity >= RULE_IN_MIN_SPECIFICITY)
    # Candidate 0 has sensitivity 1 and the last candidate specificity 1, so both sets are non-empty.
    screening = min(float(candidates[np.flatnonzero(meets_sensitivity)[-1]]), prevalence)
    rule_in = max(float(candidates[np.flatnonzero(meets_specificity)[0]]), prevalence)
    return {
        "balanced": _point(
            probs,
            labels,
            prevalence,
            "maximum Youden's J for calibrated probabilities",
            "the validation prevalence of pneumonia",
        ),
        "screening": _point(
            probs,
            labels,
            screening,
            f"validation sensitivity >= {SCREENING_MIN_SENSITIVITY}",
            "the highest midpoint between validation scores meeting the target, at most balanced",
        ),
        "rule_in": _point(
            probs,
            labels,
            rule_in,
            f"validation specificity >= {RULE_IN_MIN_SPECIFICITY}",
            "the lowest midpoint between validation scores meeting the target, at least balanced",
        ),
    }
