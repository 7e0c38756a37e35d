"""Matplotlib panels drawn the same way by the app's Model tab and the evaluation CLI's PNGs."""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes

from ..calibration import ece, reliability_bins


def reliability_panel(ax: Axes, probs: np.ndarray, labels: np.ndarray, title: str, bar_colour: str, dot_colour: str, n_bins: int = 15) -> None:
    """Draw one reliability diagram on ``ax``: observed pneumonia rate against predicted
    P(pneumonia) in the bins of the ECE given in the title (dot area grows with the films in a bin).
    Call ``ax.label_outer()`` after it on panels that share the y axis."""
    bins = [b for b in reliability_bins(probs, labels, n_bins) if b["count"]]
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.bar([b["lo"] for b in bins], [b["accuracy"] for b in bins], width=1 / n_bins, align="edge", alpha=0.45, color=bar_colour, edgecolor="k")
    ax.scatter([b["confidence"] for b in bins], [b["accuracy"] for b in bins], s=[12 + 2 * b["count"] ** 0.75 for b in bins], color=dot_colour, zorder=3)
    ax.set(
        xlabel="predicted P(pneumonia)",
        ylabel="observed pneumonia rate",
        title=f"{title}: ECE {ece(probs, labels, n_bins):.3f}",
        xlim=(0, 1),
        ylim=(0, 1),
    )
