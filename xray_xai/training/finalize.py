"""What the classifier and ensemble trainers share around a trained network: decoding the films
once, scoring them, timing the network, the card's calibration metrics and saving the checkpoint
with float16 kernels when that keeps the calibrated probabilities.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..calibration import brier, nll, sigmoid
from ..checkpoint import ModelCard, save_checkpoint
from ..data import Sample
from ..metrics import ece
from ..models.factory import load_checkpoint
from ..models.features import penultimate_features
from ..models.framing import unframed
from ..preprocess import normalize, read_dataset_image, to_model_size

NORMALISATION = (0.5, 0.25)  # mean and std applied to [0, 1] pixels
FP16_TOLERANCE = 1e-3  # float16 kernels are stored only if every validation probability stays this close


def load_pixels(samples: list[Sample], size: int, desc: str) -> torch.Tensor:
    """Decode every image once into a ``(n, 1, size, size)`` float16 tensor of [0, 1] pixels."""
    out = torch.empty((len(samples), 1, size, size), dtype=torch.float16)
    for i, sample in enumerate(tqdm(samples, desc=desc, file=sys.stderr, leave=False)):
        out[i, 0] = torch.from_numpy(to_model_size(read_dataset_image(sample.path), size))
    return out


def to_input(pixels: torch.Tensor) -> torch.Tensor:
    """[0, 1] pixels normalised by ``NORMALISATION``, float32, channels-last: the network's input."""
    mean, std = NORMALISATION
    return normalize(pixels.float(), mean, std).contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, pixels: torch.Tensor, batch_size: int = 64, features: bool = False):
    """Logits (and optionally penultimate features) of [0, 1] pixels, in batches."""
    model.eval()
    logits, feats = [], []
    for start in range(0, len(pixels), batch_size):
        x = to_input(pixels[start : start + batch_size])
        f = penultimate_features(model, x)
        feats.append(f)
        logits.append(model.get_classifier()(f).squeeze(1))
    logit_array = torch.cat(logits).double().numpy()
    return (logit_array, torch.cat(feats).double().numpy()) if features else logit_array


def measure_latency(model: torch.nn.Module, size: int, repeats: int = 20) -> float:
    """Median single-image forward time in milliseconds."""
    x = torch.zeros(1, 1, size, size).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        for i in range(repeats + 3):
            start = time.perf_counter()
            model(x)
            if i >= 3:
                times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def calibration_metrics(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict[str, float]:
    """NLL, ECE and Brier score of validation probabilities before and after the temperature: the
    model card's evidence that calibration helped (the same keys for single networks and ensembles)."""
    probs = {"before": sigmoid(logits), "after": sigmoid(logits / temperature)}
    scores = (("nll", nll), ("ece", ece), ("brier", brier))
    return {f"{name}_{when}": score(p, labels) for name, score in scores for when, p in probs.items()}


def save_within_tolerance(
    model, card: ModelCard, card_path: Path, extras: dict, x_val: torch.Tensor, cal_p: np.ndarray
) -> ModelCard:
    """Write the checkpoint with float16 convolution kernels (half the file) if the calibrated
    validation probabilities stay within ``FP16_TOLERANCE`` of the float32 model that was
    calibrated, else in float32; the measured difference goes into the card."""
    for dtype in (torch.float16, torch.float32):
        save_checkpoint(unframed(model), card, card_path, extras, dtype=dtype)
        reloaded, card, _ = load_checkpoint(card_path)
        stored_p = sigmoid(predict_logits(reloaded, x_val) / card.temperature)
        difference = float(np.max(np.abs(stored_p - cal_p)))
        if difference <= FP16_TOLERANCE:
            break
    card.validation["stored_weights_max_abs_prob_diff"] = difference
    return save_checkpoint(unframed(reloaded), card, card_path, extras, dtype=dtype)
