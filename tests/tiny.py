"""Tiny generated checkpoints and datasets for fast end-to-end tests (no ../shared needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from xray_xai import CLASSES
from xray_xai.checkpoint import ModelCard, save_checkpoint
from xray_xai.models.factory import create_model

TINY_ARCH = "resnet10t"
TINY_SIZE = 32


DEFAULT_POINTS = {
    "balanced": {"threshold": 0.5, "sensitivity": 0.9, "specificity": 0.9},
    "screening": {"threshold": 0.2, "sensitivity": 0.95, "specificity": 0.6},
    "rule_in": {"threshold": 0.8, "sensitivity": 0.6, "specificity": 0.95},
}


def make_tiny_checkpoint(
    folder: Path,
    temperature: float = 1.5,
    seed: int = 0,
    arch: str = TINY_ARCH,
    size: int = TINY_SIZE,
    operating_points: dict | None = None,
) -> Path:
    """A randomly initialised timm model (resnet10t at 32 px by default) with a complete model card."""
    torch.manual_seed(seed)
    model = create_model(arch).eval()
    card = ModelCard(
        arch=arch,
        input_size=size,
        mean=0.5,
        std=0.25,
        temperature=temperature,
        operating_points=operating_points or DEFAULT_POINTS,
    )
    path = Path(folder) / "classifier.json"
    save_checkpoint(model, card, path)
    return path


def synthetic_radiograph(rng: np.random.Generator, height: int, width: int, label: int) -> np.ndarray:
    """A smooth 8-bit image: two dark 'lung' ellipses, a brighter blob in them for label 1."""
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    lungs = sum(np.exp(-(((xx - cx) / 0.14) ** 2 + ((yy - 0.5) / 0.3) ** 2)) for cx in (0.3, 0.7))
    image = 0.75 - 0.45 * lungs + 0.03 * rng.standard_normal((height, width))
    if label:
        image += 0.3 * np.exp(-(((xx - 0.3) / 0.08) ** 2 + ((yy - 0.6) / 0.08) ** 2))
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def lung_mask(height: int, width: int) -> np.ndarray:
    """The synthetic images' lung fields: 255 inside the two ellipses, 0 elsewhere."""
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    inside = sum(((xx - cx) / 0.14) ** 2 + ((yy - 0.5) / 0.3) ** 2 <= 1 for cx in (0.3, 0.7)) > 0
    return np.where(inside, 255, 0).astype(np.uint8)


def make_tiny_dataset(
    root: Path, per_class: int = 4, sizes=((40, 36), (48, 64)), masks: Path | None = None, seed: int = 0
) -> Path:
    """``root/{NORMAL,PNEUMONIA}/*.png`` with dataset-style names (and masks under ``masks`` if given)."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        (Path(root) / name).mkdir(parents=True, exist_ok=True)
        if masks is not None:
            (Path(masks) / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            height, width = sizes[i % len(sizes)]
            stem = f"person{100 + i}_bacteria_{i}" if label else f"IM-{1000 + i:04d}-0001"
            Image.fromarray(synthetic_radiograph(rng, height, width, label)).save(Path(root) / name / f"{stem}.png")
            if masks is not None:
                Image.fromarray(lung_mask(height, width)).save(Path(masks) / name / f"{stem}.png")
    return Path(root)


def smooth_image_like(size: int) -> np.ndarray:
    """A smooth float32 ``(size, size)`` pattern in [0, 1]: structure for maps to find, no noise."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    return (0.5 + 0.4 * np.sin(6 * xx) * np.cos(4 * yy)).astype(np.float32)


def train_tiny_members(data: Path, folder: Path, size: int, seeds: tuple[int, ...] = (1, 2)) -> list[str]:
    """Cards of one-epoch networks trained by the real training command on ``data`` (the folder
    holding ``train/``), one per seed, under ``folder``: members for the ensemble commands."""
    from xray_xai.training.classifier import main as train_main

    cards = []
    for seed in seeds:
        out, work = folder / f"member{seed}", folder / f"work{seed}"
        flags = ["--arch", TINY_ARCH, "--input-size", str(size), "--epochs", "1", "--threads", "1", "--seed", str(seed)]
        train_main(["--data", str(data), "--out", str(out), "--work", str(work), *flags])
        cards.append(str(out / "classifier.json"))
    return cards
