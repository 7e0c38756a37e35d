"""Lung-mask guidance: train a classifier whose evidence lies in the lungs.

Behind a global-average-pooled linear head the class activation map is an exact additive split
of the logit over the last feature grid: ``logit = bias + sum_k cam_k`` with
``cam_k = w . f_k / K``. Penalising the share of ``|cam|`` that falls outside the (dilated)
reference lung mask therefore changes what the logit is made of, not only a picture drawn from
it (Ross et al. 2017, "Right for the Right Reasons", with the CAM in place of input gradients).

The masks are human-reviewed outlines of the training films (``lung_masks/train``). They only
shape the loss: the network never sees a mask at inference, so a mask's shape cannot leak the
label into an answer.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data import Sample, mask_path
from ..preprocess import read_dataset_image, to_model_size

MASK_DILATION = 8  # px at 224: the reference outlines are tight; evidence at the lung edge is still lung evidence


def load_masks(samples: list[Sample], mask_root: str | Path, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, 1, size, size)`` uint8 masks (1 = lung) of the samples' films, and which films have one.

    A film's mask is ``mask_root/CLASS/STEM.png``; films without one get an all-ones mask and
    ``False`` (no guidance: nothing counts as outside).
    """
    out = torch.ones((len(samples), 1, size, size), dtype=torch.uint8)
    found = torch.zeros(len(samples), dtype=torch.bool)
    for i, sample in enumerate(tqdm(samples, desc="lung masks", file=sys.stderr, leave=False)):
        path = mask_path(sample, mask_root)
        if path.is_file():
            out[i, 0] = torch.from_numpy(reference_mask(path, size))
            found[i] = True
    return out, found


def reference_mask(path: Path, size: int) -> np.ndarray:
    """A reference lung mask squashed to ``size`` x ``size`` as its film is (True = lung)."""
    return to_model_size(read_dataset_image(path), size) > 0.5


def dilate(masks: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of ``(N, 1, H, W)`` masks by a square of ``2 * radius + 1`` px."""
    if radius <= 0:
        return masks
    return F.max_pool2d(masks.float(), 2 * radius + 1, stride=1, padding=radius)


def class_activation_map(features: torch.Tensor, head: torch.nn.Linear) -> torch.Tensor:
    """``(N, h, w)`` CAM of the single logit of a GAP-linear ``head`` over ``(N, C, h, w)`` features;
    it sums to the logit minus the bias."""
    weight = head.weight[0].to(features.dtype)
    return torch.einsum("nchw,c->nhw", features, weight) / (features.shape[-2] * features.shape[-1])


def outside_share(cam: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``(N,)`` share of ``|cam|`` outside the lung masks, the masks area-averaged onto the CAM grid."""
    inside = F.adaptive_avg_pool2d(masks.float(), cam.shape[-2:])[:, 0]
    magnitude = cam.abs()
    return (magnitude * (1 - inside)).sum(dim=(1, 2)) / (magnitude.sum(dim=(1, 2)) + 1e-6)
