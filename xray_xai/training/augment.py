"""Radiograph-safe augmentation of batches of [0, 1] pixels, shared by the trainers.

An :class:`Augmentation` says how strongly films are moved (:func:`warp`) and how their
exposure and detail vary (:func:`photometric`); :func:`augment` does both. :func:`flatten_some`
and :func:`mix` make the classifier's featureless films and mixup blends, and :func:`blur_each`
is the per-film Gaussian blur they and the ensemble's perturbed validation copies use.

Every random number comes from the ``generator`` passed in, in a fixed order, so the same seed
gives the same batch.

No horizontal flip: chest anatomy is not left-right symmetric (heart, aortic arch, gastric
bubble, the side marker), a mirrored film is not a realistic input, and the report names the
patient's side from the map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from torchvision.transforms.v2.functional import gaussian_blur

SHARPNESS_SIGMA = 1.0  # px at 224: the scale of the detail that the sharpness augmentation scales
SHARPNESS_KERNEL = 7  # +- 3 sigma
FEATURELESS_SIGMA = (8.0, 16.0)  # px at 224: every rib, vessel and opacity gone (16 = the occlusion baseline)


@dataclass(frozen=True)
class Augmentation:
    """How strongly a batch is augmented; the defaults change nothing (every range is empty)."""

    rotation_deg: float = 0.0  # rotation in U(-this, this) degrees
    translation: float = 0.0  # shift in U(-this, this) of the side, each axis
    scale_range: tuple[float, float] = (1.0, 1.0)  # zoom in U(lo, hi)
    aspect: float = 0.0  # height stretched against width by exp(U(-this, this))
    brightness: float = 0.0  # shift of [0, 1] pixels in U(-this, this)
    contrast: float = 0.0  # contrast factor in U(1 - this, 1 + this)
    gamma: float = 0.0  # exposure curve: pixels ** exp(U(-gamma, gamma))
    sharpness: float = 0.0  # detail gain: blur + (1 + U(-sharpness, sharpness)) * (pixels - blur)
    blur: float = 0.0  # half of each batch is blurred with a Gaussian of sigma U(0, blur) px at 224, label kept
    noise: float = 0.0  # additive Gaussian noise of std U(0, noise), on half of each batch


def augment(batch: torch.Tensor, aug: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """:func:`warp` then :func:`photometric`."""
    return photometric(warp(batch, aug, generator), aug, generator)


def warp(batch: torch.Tensor, aug: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """Small rotation, translation and scale (patient positioning varies), and optionally a
    change of aspect ratio, batched with one ``grid_sample``; every channel moves alike, so a lung
    mask stacked on a film stays on it.

    The aspect change is there because every film was squashed into a square whatever its
    original shape: in the training set the lungs' height against their width tells pneumonia
    from normal films (AUROC 0.89 on validation, ``evaluation.mask_leak``), a cue of the
    acquisition, not of the disease. Stretching films at random weakens it (a 3-epoch fine-tune
    with ``aspect=0.25`` halved the networks' response to a 15% stretch). With ``aspect == 0`` no
    random number is drawn for it, so earlier recipes give the same batches."""
    n = batch.shape[0]
    angle = torch.deg2rad(_uniform(n, -aug.rotation_deg, aug.rotation_deg, generator))
    scale = _uniform(n, *aug.scale_range, generator)
    shift = (
        _uniform(n, -aug.translation, aug.translation, generator),
        _uniform(n, -aug.translation, aug.translation, generator),
    )
    stretch = torch.exp(_uniform(n, -aug.aspect, aug.aspect, generator)) if aug.aspect > 0 else torch.ones(n)
    cos, sin = torch.cos(angle), torch.sin(angle)
    sx, sy = scale, scale * stretch  # sy > sx: the content is taller
    theta = torch.stack(
        [torch.stack([cos / sx, -sin / sy, 2 * shift[0]], 1), torch.stack([sin / sx, cos / sy, 2 * shift[1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    return F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)


def photometric(batch: torch.Tensor, aug: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """Gamma, brightness and contrast (exposure and processing vary), and a random
    blur-or-sharpen (detector and post-processing vary; in the training set pneumonia films are
    on average blurrier than normal ones, so global sharpness would otherwise be a shortcut),
    plus, as options, a label-keeping Gaussian blur of up to ``blur`` px and sensor noise, for
    films from softer or noisier acquisitions than the training batch."""
    n, out = batch.shape[0], batch
    if aug.gamma > 0:
        out = out.clamp_min(0) ** torch.exp(_uniform(n, -aug.gamma, aug.gamma, generator)).view(n, 1, 1, 1)
    if aug.sharpness > 0:
        blurred = gaussian_blur(out, [SHARPNESS_KERNEL] * 2, [SHARPNESS_SIGMA] * 2)
        out = blurred + (1 + _uniform(n, -aug.sharpness, aug.sharpness, generator)).view(n, 1, 1, 1) * (out - blurred)
    if aug.blur > 0:
        sigma = torch.where(
            torch.rand(n, generator=generator) < 0.5, _uniform(n, 0, aug.blur, generator), torch.zeros(n)
        )
        out = blur_each(out, sigma)
    if aug.noise > 0:
        std = torch.where(
            torch.rand(n, generator=generator) < 0.5, _uniform(n, 0, aug.noise, generator), torch.zeros(n)
        )
        out = out + std.view(n, 1, 1, 1) * torch.randn(out.shape, generator=generator)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    contrast = _uniform(n, 1 - aug.contrast, 1 + aug.contrast, generator).view(n, 1, 1, 1)
    brightness = _uniform(n, -aug.brightness, aug.brightness, generator).view(n, 1, 1, 1)
    return ((out - mean) * contrast + mean + brightness).clamp(0, 1)


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def flatten_some(batch: torch.Tensor, share: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Blur about ``share`` of the images flat (sigma in ``FEATURELESS_SIGMA``); returns the batch and which ones."""
    n = batch.shape[0]
    chosen = torch.rand(n, generator=generator) < share
    lo, hi = FEATURELESS_SIGMA
    sigma = torch.where(chosen, lo + (hi - lo) * torch.rand(n, generator=generator), torch.zeros(n))
    return blur_each(batch, sigma), chosen


def blur_each(batch: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian blur of each ``(1, H, W)`` image with its own sigma in px (0 = unchanged; reflected borders)."""
    out = batch.clone()
    for i in torch.nonzero(sigma > 0).flatten().tolist():
        out[i, 0] = torch.from_numpy(gaussian_filter(batch[i, 0].numpy(), float(sigma[i]), mode="reflect"))
    return out


def mix(
    pixels: torch.Tensor, targets: torch.Tensor, alpha: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (Zhang et al. 2018): blend each film and its target with a random other film of the
    batch, weight ``lam ~ Beta(alpha, alpha)`` per film. Trained on blends, a network is less
    over-confident away from its training films (Thulasidasan et al. 2019)."""
    n = pixels.shape[0]
    rng = np.random.default_rng(int(torch.randint(2**31 - 1, (1,), generator=generator)))
    lam = torch.from_numpy(rng.beta(alpha, alpha, n)).float()
    other = torch.randperm(n, generator=generator)
    mixed = lam.view(n, 1, 1, 1) * pixels + (1 - lam).view(n, 1, 1, 1) * pixels[other]
    return mixed, lam * targets + (1 - lam) * targets[other]
