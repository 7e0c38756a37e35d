"""The shared reliability panel: bins, bars, dots and title as the Model tab and the evaluation PNGs draw them."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from xray_xai.calibration import ece, reliability_bins
from xray_xai.ui.plots import reliability_panel


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
