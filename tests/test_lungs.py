"""Lung segmentation: metrics, plausibility, checkpoints, and the training/evaluation CLIs end to end."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xray_xai.checkpoint import CheckpointError, save_checkpoint, sha256_file
from xray_xai.evaluation import lungs as evaluate_lungs
from xray_xai.models.lungs import (
    LungCard,
    LungMask,
    LungSegmenter,
    build_model,
    check_plausibility,
    dice,
    finish_mask,
    iou,
)
from xray_xai.training import lungs as train_lungs

TINY = LungCard(decoder_channels=(16, 8, 8, 8), input_size=32)


def ellipse(shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - cy * shape[0]) / (ry * shape[0])) ** 2 + ((xx - cx * shape[1]) / (rx * shape[1])) ** 2 <= 1


def synthetic_pair(shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A bright 'chest' with two dark lung ellipses (jittered), and their mask."""
    dy, dx = rng.uniform(-0.04, 0.04, 2)
    mask = ellipse(shape, 0.5 + dy, 0.3 + dx, 0.3, 0.14) | ellipse(shape, 0.52 + dy, 0.7 + dx, 0.28, 0.14)
    image = np.where(mask, 0.25, 0.7) + rng.normal(0, 0.05, shape)
    return np.clip(image, 0, 1), mask


def write_dataset(
    images: Path, masks: Path, names: dict[str, list[str]], shape: tuple[int, int], seed: int = 0
) -> None:
    """``images/CLASS/NAME.jpeg`` and ``masks/CLASS/NAME.png``; the first image of each class has no mask."""
    rng = np.random.default_rng(seed)
    for label, files in names.items():
        (images / label).mkdir(parents=True)
        (masks / label).mkdir(parents=True)
        for i, name in enumerate(files):
            image, mask = synthetic_pair(shape, rng)
            Image.fromarray((image * 255).astype(np.uint8)).convert("RGB").save(
                images / label / f"{name}.jpeg", quality=90
            )
            if i > 0:
                Image.fromarray(mask.astype(np.uint8) * 255).save(masks / label / f"{name}.png")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """chest_xray/{train,val} and lung_masks/{train,val} in the shared data layout (val at full resolution)."""
    root = tmp_path_factory.mktemp("data")
    train = {
        "NORMAL": [f"IM-{i:04d}-0001" for i in range(14)],
        "PNEUMONIA": [f"person{i}_bacteria_{i}" for i in range(14)],
    }
    val = {
        "NORMAL": ["NORMAL2-IM-0001-0001", "NORMAL2-IM-0002-0001"],
        "PNEUMONIA": ["person900_bacteria_1", "person901_bacteria_1"],
    }
    write_dataset(root / "chest_xray" / "train", root / "lung_masks" / "train", train, (224, 224))
    write_dataset(root / "chest_xray" / "val", root / "lung_masks" / "val", val, (300, 250), seed=1)
    return root


def test_dice_and_iou_on_constructed_masks():
    a = np.zeros((20, 20), dtype=bool)
    b = np.zeros((20, 20), dtype=bool)
    a[:10, :10] = True
    b[:10, 5:15] = True
    assert dice(a, b) == pytest.approx(0.5)
    assert iou(a, b) == pytest.approx(1 / 3)
    assert dice(a, a) == iou(a, a) == 1.0
    assert dice(a, ~a) == iou(a, ~a) == 0.0
    assert dice(np.zeros_like(a), np.zeros_like(a)) == 1.0


def test_plausibility_check():
    shape = (224, 224)
    lungs = ellipse(shape, 0.5, 0.3, 0.3, 0.14) | ellipse(shape, 0.52, 0.7, 0.28, 0.14)
    assert check_plausibility(lungs) == (True, None)
    failures = {
        "empty": np.zeros(shape, dtype=bool),
        "one lung": ellipse(shape, 0.5, 0.3, 0.3, 0.14),
        "tiny lung": ellipse(shape, 0.5, 0.3, 0.3, 0.14) | ellipse(shape, 0.5, 0.7, 0.05, 0.05),
        "not side by side": ellipse(shape, 0.25, 0.3, 0.12, 0.14) | ellipse(shape, 0.75, 0.7, 0.12, 0.14),
    }
    for name, mask in failures.items():
        ok, note = check_plausibility(mask)
        assert not ok and note, name


def test_finish_mask_cleans_and_stays_consistent_with_its_probability():
    shape = (224, 224)
    lungs = ellipse(shape, 0.5, 0.3, 0.3, 0.14) | ellipse(shape, 0.52, 0.7, 0.28, 0.14)
    noisy = lungs.copy()
    noisy[100:104, 60:64] = False  # a hole
    noisy[5:8, 5:8] = True  # a speck
    lung = finish_mask(np.where(noisy, 0.8, 0.2).astype(np.float32))
    assert lung.ok and lung.note is None
    assert np.array_equal(lung.mask, lungs)
    assert np.array_equal(lung.probability > 0.5, lung.mask)
    big = lung.resized(600, 500)
    assert big.shape == (600, 500)
    assert big.mean() == pytest.approx(lungs.mean(), abs=0.01)
    assert dice(lung.resized(224, 224), lungs) == 1.0


def save_tiny(path: Path) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(TINY)
    save_checkpoint(model, replace(TINY), path)
    return model


def test_checkpoint_round_trip_and_segment_frame(tmp_path):
    model = save_tiny(tmp_path / "lungs.json")
    segmenter = LungSegmenter.load(tmp_path / "lungs.json")
    assert segmenter.card.decoder_channels == TINY.decoder_channels
    for name, value in model.state_dict().items():
        loaded = segmenter.model.state_dict()[name]
        assert torch.allclose(loaded.float(), value.float().half().float()), name
    lung = segmenter.segment(np.random.default_rng(0).random((300, 200), dtype=np.float32))
    assert lung.mask.shape == lung.probability.shape == (224, 224)
    assert lung.mask.dtype == bool
    # the seeded random network happens to split this noise into two plausible, side-by-side fields
    assert lung.ok is True and lung.note is None and check_plausibility(lung.mask, segmenter.rules) == (True, None)


def test_tampered_or_missing_checkpoint_is_refused(tmp_path):
    save_tiny(tmp_path / "lungs.json")
    weights = tmp_path / "lungs.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="integrity"):
        LungSegmenter.load(tmp_path / "lungs.json")
    with pytest.raises(CheckpointError, match="not found"):
        LungSegmenter.load(tmp_path / "missing.json")


@pytest.mark.slow
def test_train_and_evaluate_clis_end_to_end(dataset, tmp_path, capsys):
    out, work = tmp_path / "checkpoints", tmp_path / "work"
    args = [
        "--data",
        str(dataset / "chest_xray"),
        "--masks",
        str(dataset / "lung_masks"),
        "--out",
        str(out),
        "--work",
        str(work),
        "--epochs",
        "2",
        "--input-size",
        "32",
        "--batch-size",
        "8",
        "--decoder-channels",
        "16",
        "8",
        "8",
        "8",
        "--threads",
        "1",
    ]
    card = train_lungs.run(args)
    card_path = out / "lungs.json"
    saved = json.loads(card_path.read_text())
    assert saved["sha256"] == sha256_file(out / "lungs.safetensors")
    assert (out / "lungs.safetensors").stat().st_size < 10e6
    assert saved["input_size"] == 32 and saved["output_size"] == 224
    assert saved["training"]["epochs_run"] == 2 and len(saved["training"]["history"]) == 2
    assert saved["latency"]["segment_224_ms"] > 0
    # 2 images per class have no mask (the first of each class), the rest are paired.
    assert saved["data"]["images_without_mask_skipped"] == 2
    assert saved["data"]["train_pairs"] + saved["data"]["val_pairs"] == 26
    scored = saved["validation"]
    assert scored["n"] == saved["data"]["val_pairs"] > 0
    assert (
        0 <= scored["dice_min"] <= scored["dice_p05"] <= scored["dice_mean"] <= 1
        and 0 <= scored["iou_mean"] <= scored["dice_mean"]
    )
    assert 0 <= scored["plausible_fraction"] <= 1 and "saved float16 checkpoint" in scored["scored"]
    assert card.validation == saved["validation"]

    # Rerunning resumes after the last finished epoch instead of training again.
    capsys.readouterr()
    assert train_lungs.main(args) is None
    assert "resuming after epoch 2" in capsys.readouterr().out

    # Full-resolution images: predictions are scored at each mask's resolution.
    report = tmp_path / "eval"
    metrics = evaluate_lungs.run(
        [
            "--data",
            str(dataset / "chest_xray" / "val"),
            "--masks",
            str(dataset / "lung_masks" / "val"),
            "--out",
            str(report),
            "--checkpoint",
            str(card_path),
            "--threads",
            "1",
        ]
    )
    saved_metrics = json.loads((report / "lung_metrics.json").read_text())
    assert saved_metrics["n"] == 2  # the two val images with masks
    assert all(r["size"] == [300, 250] for r in saved_metrics["per_image"])
    assert 0 <= saved_metrics["dice_p05"] <= saved_metrics["dice_mean"] <= 1
    assert metrics["checkpoint_sha256"] == saved["sha256"]
    with Image.open(report / "lung_contact_sheet.png") as sheet:
        assert sheet.size == (
            8 * 192,
            22 + 192 + 16,
        )  # one row of 8 cells of 192 px for the 2 films, caption 16 px, header 22 px

    # The patient-level validation split of train reproduces the card's validation scores.
    split = evaluate_lungs.run(
        [
            "--data",
            str(dataset / "chest_xray" / "train"),
            "--masks",
            str(dataset / "lung_masks" / "train"),
            "--out",
            str(tmp_path / "eval_split"),
            "--checkpoint",
            str(card_path),
            "--split",
            "val",
            "--threads",
            "1",
        ]
    )
    assert split["n"] == saved["validation"]["n"]
    assert split["dice_mean"] == pytest.approx(saved["validation"]["dice_mean"])


def test_augmentation_moves_image_and_mask_together():
    rng = np.random.default_rng(0)
    _, mask = synthetic_pair((64, 64), rng)
    masks = torch.from_numpy(mask.astype(np.float32))[None, None].repeat(4, 1, 1, 1)
    cfg = train_lungs.LungTrainConfig(max_rotation_deg=10, max_translation=0.1, brightness=0.0, contrast=0.0)
    images, warped = train_lungs.augment_pair(masks.clone(), masks, cfg, torch.Generator().manual_seed(0))
    assert not torch.allclose(warped, masks)  # the geometry changed...
    assert torch.allclose(images, warped, atol=1e-5)  # ...identically for image and mask
    cfg = train_lungs.LungTrainConfig(
        max_rotation_deg=0, max_translation=0, scale_range=(1.0, 1.0), brightness=0.2, contrast=0.3
    )
    images, warped = train_lungs.augment_pair(masks.clone(), masks, cfg, torch.Generator().manual_seed(0))
    assert torch.allclose(warped, masks, atol=1e-5)  # intensity changes never touch the mask
    assert not torch.allclose(images, masks, atol=1e-3)


def test_lung_box_is_the_masks_bounding_box_plus_margin_clipped_to_the_film():
    def mask_of(array):
        return LungMask(mask=array, probability=array.astype(np.float32), ok=True)

    mask = np.zeros((100, 80), dtype=bool)
    mask[20:60, 10:70] = True
    assert mask_of(mask).box() == (20, 60, 10, 70)
    assert mask_of(mask).box(margin=15) == (5, 75, 0, 80)
    assert mask_of(np.zeros((100, 80), dtype=bool)).box(5) == (0, 100, 0, 80)
