"""The shared panels (ROC, precision-recall, reliability) as the Model tab and the evaluation PNGs draw them."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from xray_xai.metrics import ece, reliability_bins
from xray_xai.ui.plots import Mark, Scores, pr_panel, reliability_panel, roc_panel


def scored(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    return labels, np.clip(0.4 * labels + 0.6 * rng.random(n), 0, 1)


def test_roc_panel_draws_each_curve_its_area_and_its_marked_thresholds():
    (y1, p1), (y2, p2) = scored(0, 120), scored(1, 60)
    ax = Figure().subplots()
    roc_panel(
        ax,
        [
            Scores(y1, p1, "validation", "C0", (Mark(0.5),)),
            Scores(y2, p2, "shift_dev", "C3", (Mark(0.5, "balanced", "s", colour="k"),)),
        ],
        "ROC",
    )
    curves = [line for line in ax.get_lines() if "AUROC" in line.get_label()]
    assert [line.get_label() for line in curves] == [
        f"validation: AUROC {roc_auc_score(y1, p1):.3f} (n=120)",
        f"shift_dev: AUROC {roc_auc_score(y2, p2):.3f} (n=60)",
    ]
    fpr, tpr, _ = roc_curve(y1, p1)
    assert curves[0].get_xdata() == pytest.approx(fpr) and curves[0].get_ydata() == pytest.approx(tpr)
    assert to_rgba(curves[1].get_color()) == to_rgba("C3")
    dots = [line for line in ax.get_lines() if line.get_marker() in ("o", "s")]
    called = p1 >= 0.5
    assert (dots[0].get_xdata()[0], dots[0].get_ydata()[0]) == pytest.approx(
        (called[y1 == 0].mean(), called[y1 == 1].mean())
    )
    assert to_rgba(dots[0].get_color()) == to_rgba("C0") and to_rgba(dots[1].get_color()) == to_rgba(
        "k"
    )  # the curve's colour unless given
    chance = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert len(chance) == 1 and list(chance[0].get_xdata()) == [0, 1] and list(chance[0].get_ydata()) == [0, 1]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [line.get_label() for line in curves] + ["balanced"]  # chance line and unnamed marks stay out
    assert (
        ax.get_title() == "ROC"
        and ax.get_xlabel() == "1 - specificity (false positive rate)"
        and ax.get_ylabel() == "sensitivity"
    )


def test_pr_panel_draws_the_curve_its_average_precision_prevalence_and_defined_ppvs():
    labels, probs = scored(2, 100)
    ax = Figure().subplots()
    pr_panel(
        ax, [Scores(labels, probs, marks=(Mark(0.5, "balanced"), Mark(1.5, "nothing called")))], "Precision-recall"
    )
    curve = ax.get_lines()[0]
    precision, recall, _ = precision_recall_curve(labels, probs)
    assert curve.get_label() == f"AUPRC {average_precision_score(labels, probs):.3f}"
    assert curve.get_xdata() == pytest.approx(recall) and curve.get_ydata() == pytest.approx(precision)
    prevalence = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert len(prevalence) == 1 and prevalence[0].get_ydata()[0] == pytest.approx(labels.mean())
    assert prevalence[0].get_label().startswith("prevalence ") and to_rgba(prevalence[0].get_color()) == to_rgba("grey")
    called = probs >= 0.5
    dots = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert len(dots) == 1  # the threshold that calls nothing has no PPV to mark
    assert (dots[0].get_xdata()[0], dots[0].get_ydata()[0]) == pytest.approx(
        (called[labels == 1].mean(), labels[called].mean())
    )


def test_reliability_panel_draws_the_filled_bins_of_its_ece():
    rng = np.random.default_rng(0)
    probs = rng.uniform(0.2, 0.9, 200)
    labels = (rng.uniform(size=200) < probs).astype(int)
    ax = Figure().subplots()
    reliability_panel(ax, probs, labels, "after", bar_colour="C3", dot_colour="k", n_bins=10)
    filled = [b for b in reliability_bins(probs, labels, 10) if b["count"]]
    assert len(ax.patches) == len(filled) < 10  # empty bins are left out
    assert [bar.get_x() for bar in ax.patches] == pytest.approx([b["lo"] for b in filled])
    assert [bar.get_height() for bar in ax.patches] == pytest.approx([b["accuracy"] for b in filled])
    assert all(bar.get_width() == pytest.approx(0.1) for bar in ax.patches)
    assert ax.patches[0].get_facecolor()[:3] == pytest.approx(to_rgba("C3")[:3])
    dots = ax.collections[0]
    assert dots.get_offsets()[:, 0].tolist() == pytest.approx([b["confidence"] for b in filled])
    assert np.all(np.diff(dots.get_sizes()[np.argsort([b["count"] for b in filled])]) >= 0)  # more films, bigger dot
    assert ax.get_title() == f"after: ECE {ece(probs, labels, 10):.3f}"
    assert ax.get_xlim() == (0, 1) and ax.get_ylim() == (0, 1) and ax.get_ylabel() == "observed pneumonia rate"
