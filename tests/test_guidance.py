"""Lung-mask guidance: the CAM is the logit's additive split, the penalty measures evidence outside
the mask, and a guided run trains and records its settings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.tiny import TINY_ARCH, TINY_SIZE, make_tiny_dataset
from xray_xai.data import list_samples
from xray_xai.models.factory import create_model, load_checkpoint
from xray_xai.training.classifier import main as train_main
from xray_xai.training.guidance import class_activation_map, dilate, load_masks, outside_share


def test_the_cam_sums_to_the_logit_minus_the_bias():
    torch.manual_seed(0)
    model = create_model(TINY_ARCH).eval()
    x = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        features = model.forward_features(x)
        cam = class_activation_map(features, model.get_classifier())
        logits = model.forward_head(features).squeeze(1)
    torch.testing.assert_close(cam.sum(dim=(1, 2)), logits - model.get_classifier().bias, rtol=1e-4, atol=1e-4)


def test_outside_share_is_the_share_of_cam_magnitude_outside_the_mask():
    cam = torch.zeros(2, 4, 4)
    cam[0, 1:3, 1:3] = 1.0  # all inside
    cam[1, 0, 0], cam[1, 1, 1] = -3.0, 1.0  # 3 of 4 units outside, whatever the sign
    masks = torch.zeros(2, 1, 8, 8)
    masks[:, :, 2:6, 2:6] = 1  # the inner 2x2 cells of the 4x4 grid
    torch.testing.assert_close(outside_share(cam, masks), torch.tensor([0.0, 0.75]), rtol=0, atol=1e-5)


def test_dilation_grows_a_mask_by_its_radius():
    mask = torch.zeros(1, 1, 9, 9)
    mask[0, 0, 4, 4] = 1
    assert dilate(mask, 2).sum() == 25 and dilate(mask, 0).sum() == 1


def test_films_without_a_reference_mask_get_no_guidance(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", per_class=2, masks=tmp_path / "masks")
    samples = list_samples(data)
    next((tmp_path / "masks" / "NORMAL").glob("*.png")).unlink()
    masks, found = load_masks(samples, tmp_path / "masks", 32)
    assert found.tolist() == [False, True, True, True]
    assert masks[0].all() and not masks[1].all() and masks[1].any()


@pytest.mark.slow
def test_a_guided_run_trains_and_its_card_rebuilds_the_finer_grid(tmp_path):
    data = make_tiny_dataset(tmp_path / "data" / "train", per_class=12, masks=tmp_path / "masks" / "train")
    out = tmp_path / "out"
    train_main(
        [
            "--data",
            str(data.parent),
            "--out",
            str(out),
            "--work",
            str(tmp_path / "work"),
            "--arch",
            TINY_ARCH,
            "--input-size",
            str(TINY_SIZE),
            "--epochs",
            "1",
            "--threads",
            "1",
            "--lung-masks",
            str(tmp_path / "masks"),
            "--lung-guidance",
            "1",
            "--output-stride",
            "16",
            "--bf16",
        ]
    )
    card = json.loads((out / "classifier.json").read_text())
    assert card["training"]["config"]["lung_guidance"] == 1.0 and card["training"]["config"]["bf16"] is True
    assert card["model_kwargs"] == {"output_stride": 16}
    model, _, _ = load_checkpoint(out / "classifier.json")
    with torch.no_grad():
        assert model.forward_features(torch.zeros(1, 1, TINY_SIZE, TINY_SIZE)).shape[-1] == TINY_SIZE // 16
    assert np.isfinite(card["validation"]["auroc"])
