"""The mask-leak check: per-class shares and the AUROC of mask-derived numbers, on a toy segmenter
whose boxes are taller for pneumonia films, like the squashed films of the training set."""

from __future__ import annotations

import numpy as np
import pytest
from tiny import make_tiny_dataset

from xray_xai.data import list_samples
from xray_xai.evaluation.mask_leak import leak_figures
from xray_xai.models.lungs import LungMask
from xray_xai.preprocess import read_dataset_image


class ShapeSegmenter:
    """Lungs 24 px wide; 40 px tall on films brighter than ``cut`` on average (the toy pneumonia
    films are), 30 px on the others, so the lung area follows the label as well as the box shape."""

    def __init__(self, cut: float) -> None:
        self.cut = cut

    def segment(self, pixels: np.ndarray) -> LungMask:
        mask = np.zeros((64, 64), dtype=bool)
        height = 40 if pixels.mean() > self.cut else 30
        mask[10 : 10 + height, 20:44] = True
        return LungMask(mask=mask, probability=mask.astype(np.float32), ok=True)


def test_a_box_shape_that_follows_the_label_is_reported_as_a_leak(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", per_class=4, masks=tmp_path / "masks")
    samples = list_samples(data)
    means = {s.label: [] for s in samples}
    for s in samples:
        means[s.label].append(read_dataset_image(s.path).mean())
    assert max(means[0]) < min(means[1])  # the toy films' brightness follows the label
    figures = leak_figures(samples, tmp_path / "masks", ShapeSegmenter(cut=(max(means[0]) + min(means[1])) / 2))
    assert figures["auroc_lung_box_aspect"] == pytest.approx(1.0)
    assert figures["auroc_lung_area"] == pytest.approx(1.0)
    assert figures["auroc_segmentation_failure"] == pytest.approx(0.5)
    normal = figures["per_class"]["NORMAL"]
    assert normal == {"films": 4, "reference_mask_share": 1.0, "segmentation_failure_share": 0.0}


def test_a_box_shape_unrelated_to_the_label_is_not(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", per_class=4)
    figures = leak_figures(list_samples(data), tmp_path / "no_masks", ShapeSegmenter(cut=2.0))  # every box 30 px tall
    assert figures["auroc_lung_box_aspect"] == pytest.approx(0.5)
    assert figures["per_class"]["PNEUMONIA"]["reference_mask_share"] == 0.0
