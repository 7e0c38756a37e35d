"""The loaded classifier: preprocessing, calibrated probabilities, predictions and OOD distance."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import DEFAULT_CHECKPOINT, CheckpointError, ModelCard
from ..conformal import INCONCLUSIVE, ConformalThresholds, prediction_set
from ..imaging import InputError
from ..preprocess import preprocess
from ..results import BANDS, BandReason, MapsSource, OperatingPoint, Prediction, confidence_band
from . import runtime
from .ensemble import Ensemble
from .factory import load_checkpoint
from .features import penultimate_features
from .framing import is_framed, member_views
from .lungs import LungSegmenter
from .ood import mahalanobis


class UnknownOperatingPoint(InputError):
    """An operating point name that the model card does not define (a user-input error, like any
    other :class:`InputError`: its message is meant for the person who chose it)."""


@dataclass(frozen=True)
class Scores:
    """What one forward pass over a batch gives the decision, the uncertainty and the OOD check."""

    logits: np.ndarray  # (N,) raw logit of PNEUMONIA (an ensemble: the mean of its members' logits)
    probabilities: np.ndarray  # (N,) calibrated P(pneumonia)
    member_probabilities: np.ndarray  # (N, M) calibrated P(pneumonia) of each member (M = 1 for one network)
    features: np.ndarray  # (N, D) pooled penultimate features (an ensemble: its members' side by side)
    distance: np.ndarray | None  # (N,) Mahalanobis distance to the training features, if the card has statistics


def uncertainty(member_probabilities: Sequence[float]) -> float | None:
    """Spread of an ensemble's answers: the standard deviation of its members' calibrated
    P(pneumonia); ``None`` for a single network, which has no second opinion."""
    values = np.asarray(member_probabilities, dtype=np.float64)
    return float(values.std()) if values.size > 1 else None


def lower_band(band: str) -> str:
    """The next lower confidence band (Low stays Low)."""
    names = [name for _, name in BANDS]
    return names[min(names.index(band) + 1, len(names) - 1)]


def explaining_model(model: torch.nn.Module, chosen: Sequence[int] | None) -> torch.nn.Module:
    """The network whose maps the app shows: the whole model, or, for an ensemble whose card names
    ``explanations["members"]``, only those members (one member makes each map cost one network,
    not M). Their maps are checked against the whole ensemble's probability by the faithfulness
    evaluation. A card naming members the model lacks fails when the classifier is built."""
    if chosen is None or not isinstance(model, Ensemble):
        explainer = model
    else:
        if not chosen or any(not 0 <= int(i) < len(model.members) for i in chosen):
            raise CheckpointError(
                f"explanations.members {list(chosen)} must name members 0 to {len(model.members) - 1}."
            )
        picked = [model.members[int(i)] for i in chosen]
        explainer = picked[0] if len(picked) == 1 else Ensemble(picked)
    if is_framed(explainer):
        raise CheckpointError(
            "The maps must come from whole-film networks: "
            "a lung-box member's maps are in its crop's frame, not the film's."
        )
    return explainer


def maps_source(model: torch.nn.Module, chosen: Sequence[int] | None) -> MapsSource | None:
    """Which networks of an ensemble the maps come from (None for a single network)."""
    if not isinstance(model, Ensemble):
        return None
    total = len(model.members)
    members = tuple(range(total)) if chosen is None else tuple(int(i) for i in chosen)
    return MapsSource(members, total, tuple(i for i, member in enumerate(model.members) if is_framed(member)))


@dataclass
class Classifier:
    """A single-logit pneumonia classifier with its model card.

    ``model`` maps a normalised ``(N, 1, S, S)`` batch to ``(N, 1)`` logits of PNEUMONIA;
    probabilities are calibrated with the card's temperature. ``model`` stays the torch network
    (Grad-CAM needs its gradients); ``serving`` is what scores: the same networks compiled by the
    runtime the card's ``runtime`` names (:func:`xray_xai.models.runtime.serve`), else ``model``.
    """

    model: torch.nn.Module
    card: ModelCard
    ood_mean: np.ndarray | None = None
    ood_precision: np.ndarray | None = None
    # The network whose Grad-CAM and occlusion maps the app shows, and which members it is.
    explainer: torch.nn.Module = field(init=False, repr=False)
    maps_source: MapsSource | None = field(init=False)
    serving: torch.nn.Module = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.explainer = explaining_model(self.model, self.card.explanations.get("members"))
        self.maps_source = maps_source(self.model, self.card.explanations.get("members"))
        self.serving = runtime.serve(self.model, self.card)

    @property
    def served_runtime(self) -> str:
        """What scores the films, e.g. "OpenVINO 2026.0 f32" or "PyTorch 2.x fp32"."""
        return runtime.describe(self.serving)

    def lung_segmenter(self, segmenter: LungSegmenter | None) -> LungSegmenter | None:
        """The served (compiled) copy of ``segmenter`` when the classifier frames with the same
        weights through its runtime, else ``segmenter``: one compiled U-Net for framing and display."""
        served = runtime.served_segmenter(self.serving)
        if segmenter is None or served is None or served.card.sha256 != segmenter.card.sha256:
            return segmenter
        return served

    @classmethod
    def load(cls, card_path: str | Path = DEFAULT_CHECKPOINT, segmenter=None) -> Classifier:
        """Load a checkpoint; ``segmenter``, if given, is shared with any lung-box members."""
        model, card, extras = load_checkpoint(card_path, segmenter=segmenter)
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
        return self.calibrate(self.serving(batch).reshape(-1)).double().numpy()

    @torch.inference_mode()
    def score(self, batch: torch.Tensor) -> Scores:
        """Calibrated probabilities (the ensemble's and each member's), features and their
        Mahalanobis distance, all from one forward pass."""
        features = penultimate_features(self.serving, batch)
        if isinstance(self.serving, Ensemble):
            member_logits = self.serving.member_logits_from_features(features)
        else:
            member_logits = self.serving.get_classifier()(features).reshape(-1, 1)
        logits = member_logits.mean(dim=1)  # the ensemble's logit: the mean of its members'
        feature_array = features.double().numpy()
        distance = None
        if self.ood_mean is not None and self.ood_precision is not None:
            distance = mahalanobis(feature_array, self.ood_mean, self.ood_precision)
        return Scores(
            logits=logits.double().numpy(),
            probabilities=self.calibrate(logits).double().numpy(),
            member_probabilities=self.calibrate(member_logits).double().numpy(),
            features=feature_array,
            distance=distance,
        )

    def operating_point(self, name: str = "balanced") -> OperatingPoint:
        points = self.card.operating_points
        if name not in points:
            raise UnknownOperatingPoint(f"Unknown operating point {name!r}; choose one of {', '.join(points)}.")
        p = points[name]
        return OperatingPoint(name, float(p["threshold"]), float(p["sensitivity"]), float(p["specificity"]))

    def decide(
        self,
        probability: float,
        operating_point: str = "balanced",
        member_probabilities: Sequence[float] = (),
        unusual: bool = False,
    ) -> Prediction:
        """Label, confidence and band for a calibrated P(pneumonia) at a named operating point.

        The band starts from the calibrated probability of the reported label and is lowered
        when the answer deserves less trust than that probability says: by one step when the
        ensemble's members disagree more than the card's validation-fitted limit, and to Low
        when the film looks unlike the training data (``unusual``: the OOD check flagged it).
        """
        point = self.operating_point(operating_point)
        positive = probability >= point.threshold
        confidence = probability if positive else 1.0 - probability
        label = self.card.classes[1] if positive else self.card.classes[0]
        band, reasons = confidence_band(confidence), []
        spread = uncertainty(member_probabilities)
        limit = self.card.uncertainty.get("threshold")
        if spread is not None and limit is not None and spread > limit:
            lowered = lower_band(band)
            if lowered != band:
                reasons.append(
                    BandReason(
                        "members_disagree",
                        band,
                        lowered,
                        low=float(min(member_probabilities)),
                        high=float(max(member_probabilities)),
                        members=len(member_probabilities),
                        quantile=float(self.card.uncertainty.get("quantile", 0.95)),
                    )
                )
                band = lowered
        if unusual and band != "Low":
            reasons.append(BandReason("unusual_input", band, "Low"))
            band = "Low"
        labels = self.prediction_set(probability)
        decisive = not unusual and (labels == (label,) if labels else True)
        return Prediction(
            label,
            float(probability),
            float(confidence),
            band,
            point,
            answer=label if decisive else INCONCLUSIVE,
            prediction_set=labels,
            uncertainty=spread,
            member_probabilities=tuple(float(p) for p in member_probabilities) if spread is not None else (),
            member_views=member_views(self.card.framing, len(member_probabilities)) if spread is not None else (),
            band_reasons=tuple(reasons),
        )

    def prediction_set(self, probability: float) -> tuple[str, ...]:
        """The conformal prediction set of a calibrated P(pneumonia), in class order
        (() without thresholds in the card)."""
        if not self.card.conformal:
            return ()
        labels = prediction_set(probability, ConformalThresholds.from_dict(self.card.conformal))
        return tuple(name for name in self.card.classes if name in labels)

    def predict(self, pixels: np.ndarray, operating_point: str = "balanced") -> Prediction:
        scores = self.score(self.prepare(pixels))
        return self.decide(float(scores.probabilities[0]), operating_point, scores.member_probabilities[0])
