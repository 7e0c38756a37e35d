"""The loaded classifier: preprocessing, calibrated probabilities, predictions and OOD distance."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .model import DEFAULT_CHECKPOINT, ModelCard, load_checkpoint
from .ood import mahalanobis, penultimate_features
from .preprocess import preprocess
from .results import OperatingPoint, Prediction, confidence_band


class UnknownOperatingPoint(ValueError):
    """An operating point name that the model card does not define."""


@dataclass
class Classifier:
    """A single-logit pneumonia classifier with its model card.

    ``model`` maps a normalised ``(N, 1, S, S)`` batch to ``(N, 1)`` logits of PNEUMONIA;
    probabilities are calibrated with the card's temperature.
    """

    model: torch.nn.Module
    card: ModelCard
    ood_mean: np.ndarray | None = None
    ood_precision: np.ndarray | None = None

    @classmethod
    def load(cls, card_path: str | Path = DEFAULT_CHECKPOINT) -> "Classifier":
        model, card, extras = load_checkpoint(card_path)
        mean, precision = extras.get("ood_mean"), extras.get("ood_precision")
        return cls(
            model,
            card,
            None if mean is None else mean.numpy(),
            None if precision is None else precision.numpy(),
        )

    @property
    def input_size(self) -> int:
        return self.card.input_size

    def prepare(self, pixels: np.ndarray) -> torch.Tensor:
        """Grayscale [0, 1] image of any size -> ``(1, 1, S, S)`` model input."""
        x = preprocess(pixels, self.card.input_size, self.card.mean, self.card.std)
        return torch.from_numpy(np.ascontiguousarray(x))[None, None].contiguous(memory_format=torch.channels_last)

    def calibrate(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated P(pneumonia) from raw logits (any shape)."""
        return torch.sigmoid(logits / self.card.temperature)

    @torch.inference_mode()
    def probabilities(self, batch: torch.Tensor) -> np.ndarray:
        """Calibrated P(pneumonia) for a normalised ``(N, 1, S, S)`` batch."""
        return self.calibrate(self.model(batch).reshape(-1)).double().numpy()

    @torch.inference_mode()
    def score(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """Calibrated P(pneumonia) and feature-space (Mahalanobis) distance in one forward pass."""
        probs, distance, _ = self.score_with_features(batch)
        return probs, distance

    @torch.inference_mode()
    def score_with_features(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """:meth:`score` plus the pooled penultimate features ``(N, d)`` of that same forward pass."""
        features = penultimate_features(self.model, batch)
        probs = self.calibrate(self.model.get_classifier()(features).reshape(-1)).double().numpy()
        pooled = features.float().numpy()
        if self.ood_mean is None or self.ood_precision is None:
            return probs, None, pooled
        return probs, mahalanobis(pooled.astype(np.float64), self.ood_mean, self.ood_precision), pooled

    def operating_point(self, name: str = "balanced") -> OperatingPoint:
        points = self.card.operating_points
        if name not in points:
            raise UnknownOperatingPoint(f"Unknown operating point {name!r}; choose one of {', '.join(points)}.")
        p = points[name]
        return OperatingPoint(name, float(p["threshold"]), float(p["sensitivity"]), float(p["specificity"]))

    def decide(self, probability: float, operating_point: str = "balanced") -> Prediction:
        """Label, confidence and band for a calibrated P(pneumonia) at a named operating point."""
        point = self.operating_point(operating_point)
        positive = probability >= point.threshold
        confidence = probability if positive else 1.0 - probability
        label = self.card.classes[1] if positive else self.card.classes[0]
        return Prediction(label, float(probability), float(confidence), confidence_band(confidence), point)

    def predict(self, pixels: np.ndarray, operating_point: str = "balanced") -> Prediction:
        return self.decide(float(self.probabilities(self.prepare(pixels))[0]), operating_point)
