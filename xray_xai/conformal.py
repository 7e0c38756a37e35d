"""Class-conditional (Mondrian) split conformal prediction for the pneumonia classifier.

Fitted on the validation split only. For a film with calibrated P(pneumonia) ``p``:

- nonconformity of a label is ``1 - P(label)``: ``p`` for NORMAL, ``1 - p`` for PNEUMONIA;
- for each class ``y`` separately, ``q_y`` is the ``ceil((n_y + 1)(1 - alpha))``-th smallest
  nonconformity among the ``n_y`` validation films of class ``y`` (1, every label kept, when
  that rank exceeds ``n_y``);
- the prediction set is ``{y : 1 - P(y) <= q_y}``.

If the films of a class are exchangeable with its validation films, the set contains the true
label with probability at least ``1 - alpha`` for each class separately (not only on average
over the classes, which a majority class could carry alone). A set holding both labels, or
none, is not an answer: :func:`answer` says INCONCLUSIVE there, and also for a film the
out-of-distribution check flags, where exchangeability is not believable.

Why not a library: ``crepes`` (ConformalClassifier) takes Mondrian categories per *object*,
whereas class-conditional conformal needs the category of the *hypothesised label* (a
different one per column), so it must be called once per class; it returns p-values rather than
thresholds, and the app needs two numbers in the model card and no extra dependency to serve
them. MAPIE's Mondrian wrapper likewise partitions by a group known for the test object. The
computation is one order statistic per class, so it is written here and checked against
crepes' non-smoothed p-values in the tests (``p_y > alpha`` is the same set as
``1 - P(y) <= q_y``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import CLASSES

NORMAL, PNEUMONIA = CLASSES  # "NORMAL", "PNEUMONIA"
INCONCLUSIVE = "INCONCLUSIVE"
ANSWERS = (NORMAL, PNEUMONIA, INCONCLUSIVE)
NONCONFORMITY = "1 - calibrated P(true class)"


@dataclass(frozen=True)
class ConformalThresholds:
    """Per-class thresholds on the nonconformity ``1 - P(class)`` at miscoverage ``alpha``."""

    alpha: float
    q_normal: float
    q_pneumonia: float
    n_normal: int
    n_pneumonia: int

    def to_json(self) -> dict:
        """A JSON-ready dict (the model card's ``conformal`` field), with the rule in words."""
        return {
            "alpha": float(self.alpha),
            "q_normal": float(self.q_normal),
            "q_pneumonia": float(self.q_pneumonia),
            "n_normal": int(self.n_normal),
            "n_pneumonia": int(self.n_pneumonia),
            "nonconformity": NONCONFORMITY,
            "rule": (
                "Mondrian (class-conditional) split conformal: q_y is the ceil((n_y + 1)(1 - alpha))-th smallest "
                "nonconformity of the n_y validation films of class y; the set is {y : 1 - P(y) <= q_y}; "
                "INCONCLUSIVE when it holds both classes or none, or the film is flagged unlike the training films"
            ),
        }

    @classmethod
    def from_dict(cls, raw: dict) -> ConformalThresholds:
        """Read :meth:`to_json`'s dict (extra keys, e.g. validation figures, are ignored)."""
        return cls(
            float(raw["alpha"]),
            float(raw["q_normal"]),
            float(raw["q_pneumonia"]),
            int(raw["n_normal"]),
            int(raw["n_pneumonia"]),
        )

    @property
    def pneumonia_from(self) -> float:
        """PNEUMONIA is in the set when ``p >= pneumonia_from``."""
        return 1.0 - self.q_pneumonia

    @property
    def normal_up_to(self) -> float:
        """NORMAL is in the set when ``p <= normal_up_to``."""
        return self.q_normal


def conformal_rank(n: int, alpha: float) -> int:
    """``ceil((n + 1)(1 - alpha))``, the rank of the order statistic that is ``q`` (may exceed ``n``).

    Computed as ``n + 1 - floor((n + 1) alpha)`` with a rounding guard, so that e.g.
    ``n = 19, alpha = 0.05`` gives 19 and not 20 through ``20 * 0.95 = 19.000000000000004``."""
    return n + 1 - math.floor((n + 1) * alpha + 1e-9)


def class_threshold(scores: np.ndarray, alpha: float) -> float:
    """``q`` for one class: the conformal-rank smallest of its nonconformity ``scores`` (1 if too few)."""
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    k = conformal_rank(len(scores), alpha)
    return 1.0 if k > len(scores) else float(scores[k - 1])


def fit_mondrian(probabilities: np.ndarray, labels: np.ndarray, alpha: float) -> ConformalThresholds:
    """Per-class thresholds from validation P(pneumonia) and labels (0 NORMAL, 1 PNEUMONIA)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels).astype(int)
    if p.shape != y.shape or p.ndim != 1:
        raise ValueError("probabilities and labels must be 1-D arrays of the same length")
    normal, pneumonia = p[y == 0], p[y == 1]
    return ConformalThresholds(
        alpha=float(alpha),
        q_normal=class_threshold(normal, alpha),  # nonconformity of NORMAL: 1 - (1 - p) = p
        q_pneumonia=class_threshold(1.0 - pneumonia, alpha),
        n_normal=int(len(normal)),
        n_pneumonia=int(len(pneumonia)),
    )


def _membership(p: np.ndarray, thresholds: ConformalThresholds) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(p, dtype=np.float64)
    return p <= thresholds.q_normal, (1.0 - p) <= thresholds.q_pneumonia


def prediction_set(p_pneumonia: float, thresholds: ConformalThresholds) -> frozenset[str]:
    """The labels whose nonconformity is within their class's threshold."""
    normal, pneumonia = _membership(np.asarray(float(p_pneumonia)), thresholds)
    return frozenset(name for name, kept in ((NORMAL, normal), (PNEUMONIA, pneumonia)) if kept)


def answer(p_pneumonia: float, thresholds: ConformalThresholds, flagged_unusual: bool = False) -> str:
    """PNEUMONIA or NORMAL when the set holds exactly that label and the film is not flagged,
    otherwise INCONCLUSIVE."""
    labels = prediction_set(p_pneumonia, thresholds)
    if flagged_unusual or len(labels) != 1:
        return INCONCLUSIVE
    return next(iter(labels))


def answers(
    probabilities: np.ndarray, thresholds: ConformalThresholds, flagged: np.ndarray | None = None
) -> np.ndarray:
    """:func:`answer` for many films at once (an array of strings)."""
    normal, pneumonia = _membership(probabilities, thresholds)
    out = np.full(normal.shape, INCONCLUSIVE, dtype=object)
    out[normal & ~pneumonia] = NORMAL
    out[pneumonia & ~normal] = PNEUMONIA
    if flagged is not None:
        out[np.asarray(flagged, dtype=bool)] = INCONCLUSIVE
    return out


def _share(mask: np.ndarray) -> float | None:
    return float(mask.mean()) if mask.size else None


def coverage(
    probabilities: np.ndarray, labels: np.ndarray, thresholds: ConformalThresholds, flagged: np.ndarray | None = None
) -> dict:
    """How the sets and answers behave on labelled films.

    ``coverage`` (overall and per class): share of films whose set contains their label (the
    conformal guarantee; ``flagged`` plays no part). ``inconclusive``: share answered
    INCONCLUSIVE (with ``flagged``, flagged films count). ``decisive_accuracy``: share of the
    decisive answers that are right. ``normal_not_called_pneumonia``: share of NORMAL films
    answered NORMAL or INCONCLUSIVE. Shares over no films are ``None``.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels).astype(int)
    normal, pneumonia = _membership(p, thresholds)
    covered = np.where(y == 1, pneumonia, normal)
    given = answers(p, thresholds, flagged)
    decisive = given != INCONCLUSIVE
    right = decisive & (given == np.where(y == 1, PNEUMONIA, NORMAL))
    return {
        "n": int(y.size),
        "n_normal": int((y == 0).sum()),
        "n_pneumonia": int((y == 1).sum()),
        "coverage": _share(covered),
        "coverage_normal": _share(covered[y == 0]),
        "coverage_pneumonia": _share(covered[y == 1]),
        "inconclusive": _share(~decisive),
        "both_labels": _share(normal & pneumonia),
        "empty_set": _share(~normal & ~pneumonia),
        "flagged": None if flagged is None else _share(np.asarray(flagged, dtype=bool)),
        "decisive": int(decisive.sum()),
        "decisive_accuracy": float(right.sum() / decisive.sum()) if decisive.any() else None,
        "normal_not_called_pneumonia": _share(given[y == 0] != PNEUMONIA),
    }
