"""Embeddings: the pooled penultimate features of a classifier, for the OOD check and similar films."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..preprocess import read_dataset_image


def penultimate_features(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Pooled features that feed a timm classifier's last layer (an ensemble: its members' side by side)."""
    return model.forward_head(model.forward_features(batch), pre_logits=True)


@torch.inference_mode()
def embed(
    model: torch.nn.Module, films: Sequence[Path], prepare: Callable[[np.ndarray], torch.Tensor], batch_size: int = 32
) -> np.ndarray:
    """Pooled penultimate features ``(n, d)`` of dataset films, each turned into model input by ``prepare``."""
    features = []
    for start in tqdm(range(0, len(films), batch_size), desc="embedding", unit="batch", file=sys.stderr):
        batch = torch.cat([prepare(read_dataset_image(path)) for path in films[start : start + batch_size]])
        features.append(penultimate_features(model, batch).float().numpy())
    return np.concatenate(features)


def cached_embed(
    model: torch.nn.Module,
    weights_sha256: str,
    films: Sequence[Path],
    prepare: Callable[[np.ndarray], torch.Tensor],
    cache: Path | None,
    batch_size: int = 32,
) -> np.ndarray:
    """:func:`embed`, kept in ``cache`` (if given) under a key of the weights and the file list, so
    that building and evaluating the similar index embed the training films once."""
    if cache is None:
        return embed(model, films, prepare, batch_size)
    files = hashlib.sha256("\n".join(str(Path(p).resolve()) for p in films).encode()).hexdigest()
    path = Path(cache) / f"features-{weights_sha256[:12]}-{files[:12]}.npy"
    if path.is_file():
        return np.load(path)
    features = embed(model, films, prepare, batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, features)
    return features
