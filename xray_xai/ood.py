"""Out-of-distribution checks in the model's feature space.

At training time the penultimate-layer features of the training images are summarised by a
mean and a shrunk (Ledoit-Wolf) precision matrix; an input whose Mahalanobis distance to that
distribution exceeds the 99th percentile of the validation images is flagged.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.covariance import LedoitWolf


def penultimate_features(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Pooled features that feed a timm classifier's last layer."""
    return model.forward_head(model.forward_features(batch), pre_logits=True)


def fit_feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and shrunk precision matrix of training features ``(n, d)``."""
    estimator = LedoitWolf().fit(np.asarray(features, dtype=np.float64))
    return estimator.location_.astype(np.float32), estimator.precision_.astype(np.float32)


def mahalanobis(features: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Mahalanobis distance of each row of ``features`` to the fitted distribution."""
    centred = np.asarray(features, dtype=np.float64) - mean
    return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", centred, precision.astype(np.float64), centred), 0.0))
