"""Occlusion sensitivity: how much the calibrated probability drops when a region is hidden.

A ``window`` x ``window`` square slides with ``stride`` over the model input (positions 0,
stride, 2 * stride, ... exactly like Captum's ``Occlusion``: the last window along an axis may
hang over the edge and is then cut off); its pixels are replaced by a baseline and the drop of
the calibrated probability of the target class is recorded. Each pixel gets the mean drop of
the windows covering it, so positive values mark regions that support the answer.

The maps are exact (equal to a one-window-at-a-time loop up to float rounding); the work is done
by the engines of :mod:`xray_xai.explain._occlusion_engine` (incremental inference, lung-box
members framed per occluded copy, full passes through the served runtime).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from ..models.ensemble import members
from ..results import Region
from ._occlusion_engine import engines

BASELINES = ("blur", "mean", "zero")
# "bf16": the torch networks run under bfloat16 autocast (about twice as fast on CPUs with
# AVX-512 BF16); a preset uses it only where its maps passed the check against float32 maps
# (rank correlation >= 0.99: ``python benchmarks/occlusion.py --precision-check``).
PRECISIONS = ("f32", "bf16")
# Gaussian sigma of the "blur" baseline as a fraction of the input size (16 px at 224 px).
# It wipes out structure smaller than about 2 sigma = 32 px (ribs, vessels, consolidation,
# air bronchograms: what a window is meant to hide) but keeps the large-scale exposure
# pattern (bright mediastinum, dark lung fields), so an occluded copy still looks like a
# radiograph instead of carrying an out-of-distribution black square.
BLUR_SIGMA_FRACTION = 1.0 / 14.0


class OcclusionError(ValueError):
    """Invalid occlusion settings (window, stride, baseline or region)."""


@dataclass(frozen=True)
class OcclusionResult:
    """An occlusion map and how it was made."""

    map: np.ndarray  # float32 (S, S): mean drop of the target-class probability per pixel
    grid: np.ndarray  # float32 (rows, cols): the drop for each window position evaluated
    n_forward: int  # forward passes used: one per occluded copy plus the clean image
    probability: float  # calibrated probability of the target class on the clean image
    window: int
    stride: int
    baseline: str
    target_class: int
    region: Region | None = None  # windows limited to those overlapping this box


def window_positions(size: int, window: int, stride: int) -> np.ndarray:
    """Start of each window along one axis, as Captum's ``Occlusion`` places them."""
    return np.arange(math.ceil((size - window) / stride) + 1, dtype=np.int64) * stride


def make_baseline(x: torch.Tensor, kind: str = "blur") -> torch.Tensor:
    """The values that replace occluded pixels, shaped like the normalised input ``x``.

    ``"blur"``: a Gaussian-blurred copy (sigma = ``BLUR_SIGMA_FRACTION`` of the input size);
    ``"mean"``: the image's own mean; ``"zero"``: 0 in the normalised input space, i.e. the
    training set's mean grey (Captum's default baseline).
    """
    if kind not in BASELINES:
        raise OcclusionError(f"Unknown baseline {kind!r}; choose one of {', '.join(BASELINES)}.")
    x = x.detach()
    if kind == "zero":
        return torch.zeros_like(x)
    if kind == "mean":
        return torch.full_like(x, float(x.double().mean()))
    sigma = BLUR_SIGMA_FRACTION * max(x.shape[-2:])
    image = x.reshape(x.shape[-2:]).double().cpu().numpy()
    blurred = gaussian_filter(image, sigma, mode="reflect")
    return torch.from_numpy(blurred).to(x.dtype).reshape(x.shape).contiguous()


def occlusion_map(
    model: nn.Module,
    x: torch.Tensor,
    *,
    window: int = 32,
    stride: int = 16,
    baseline: str = "blur",
    batch_size: int = 32,
    target_class: int = 1,
    temperature: float = 1.0,
    region: Region | None = None,
    incremental: bool = True,
    progress: Callable[[int, int], None] | None = None,
    served: nn.Module | None = None,
    reframe: bool = True,
    precision: str = "f32",
) -> OcclusionResult:
    """Occlusion sensitivity of a single-logit classifier on a normalised ``(1, 1, S, S)`` input.

    An :class:`~xray_xai.models.ensemble.Ensemble` is occluded member by member (a whole-film
    member with its own incremental engine; lung-box members each copy segmented and cropped as
    their framer does) and the members' logits are averaged before the calibrated probability
    is taken, so the map explains exactly the ensemble's reported probability. ``served``: the
    same networks compiled (``Classifier.serving``), which run the full forward passes.
    ``reframe=False`` keeps each lung-box member's crop at the clean film's lung box instead of
    segmenting every occluded copy again (several times faster; differs only where a window
    would move the box). ``precision="bf16"`` runs the torch networks under bfloat16 autocast
    (the compiled ``served`` networks keep their own precision).

    ``target_class`` 1 explains PNEUMONIA (the sigmoid of ``logit / temperature``), 0 NORMAL.
    ``region`` keeps only the windows that overlap the box; inside it the map equals the
    full-image map exactly, outside it is 0. ``incremental=False`` runs the whole network on
    every occluded copy (same result, slower; kept for benchmarking). ``progress(done, total)``
    is called after each batch with window counts.
    """
    if precision not in PRECISIONS:
        raise OcclusionError(f"Unknown occlusion precision {precision!r}; choose one of {', '.join(PRECISIONS)}.")
    rows, cols = _positions(x, window, stride, region)
    base = make_baseline(x, baseline)
    parts = engines(model, served, incremental, reframe)
    total = len(members(model))
    clean_logit, logits = 0.0, np.zeros((len(rows), len(cols)))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    with torch.inference_mode(), autocast:
        for k, engine in enumerate(parts):
            part_clean, part_logits = engine.logits(
                x, base, rows, cols, window, batch_size, _part(progress, k, len(parts))
            )
            clean_logit, logits = clean_logit + part_clean.sum() / total, logits + part_logits.sum(axis=0) / total
    clean = _target_probability(torch.tensor([clean_logit]), target_class, temperature)[0]
    drops = clean - _target_probability(torch.from_numpy(logits), target_class, temperature).reshape(logits.shape)
    return _result(drops, clean, rows, cols, x, window, stride, baseline, target_class, region)


def _part(progress: Callable[[int, int], None] | None, k: int, n: int) -> Callable[[int, int], None] | None:
    """Progress of the ``k``-th of ``n`` equal parts of the work, reported on the whole."""
    if progress is None:
        return None
    return lambda done, total: progress(k * total + done, n * total)


def occlusion_map_naive(
    model: nn.Module,
    x: torch.Tensor,
    *,
    window: int = 32,
    stride: int = 16,
    baseline: str = "blur",
    target_class: int = 1,
    temperature: float = 1.0,
    region: Region | None = None,
) -> OcclusionResult:
    """Reference implementation: one occluded copy and one forward pass at a time."""
    rows, cols = _positions(x, window, stride, region)
    base = make_baseline(x, baseline)
    drops = np.zeros((len(rows), len(cols)))
    with torch.inference_mode():
        clean = _target_probability(model(x), target_class, temperature)[0]
        for i, top in enumerate(rows):
            for j, left in enumerate(cols):
                occluded = x.clone()
                occluded[..., top : top + window, left : left + window] = base[
                    ..., top : top + window, left : left + window
                ]
                drops[i, j] = clean - _target_probability(model(occluded), target_class, temperature)[0]
    return _result(drops, clean, rows, cols, x, window, stride, baseline, target_class, region)


def _target_probability(logits: torch.Tensor, target_class: int, temperature: float) -> np.ndarray:
    p = torch.sigmoid(logits.reshape(-1).float() / temperature)
    return (p if target_class == 1 else 1.0 - p).double().numpy()


def _positions(x: torch.Tensor, window: int, stride: int, region: Region | None) -> tuple[np.ndarray, np.ndarray]:
    if x.ndim != 4 or x.shape[:2] != (1, 1):
        raise OcclusionError(f"expected a (1, 1, H, W) input, got shape {tuple(x.shape)}")
    height, width = x.shape[-2:]
    if not 1 <= window <= min(height, width):
        raise OcclusionError(f"window must be between 1 and {min(height, width)} px, got {window}")
    if not 1 <= stride <= window:
        raise OcclusionError(f"stride must be between 1 and the window ({window} px), got {stride}")
    rows, cols = (
        window_positions(height, window, stride),
        window_positions(width, window, stride),
    )
    if region is None:
        return rows, cols
    y0, y1, x0, x1 = region
    if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
        raise OcclusionError(f"region {region} is not a non-empty box inside the {height}x{width} input")
    return rows[(rows < y1) & (rows + window > y0)], cols[(cols < x1) & (cols + window > x0)]


def _result(drops, clean, rows, cols, x, window, stride, baseline, target_class, region) -> OcclusionResult:
    """Average each window's drop over the pixels it covers (Captum's weighting)."""
    height, width = x.shape[-2:]
    total = np.zeros((height, width))
    count = np.zeros((height, width))
    for i, top in enumerate(rows):
        for j, left in enumerate(cols):
            total[top : top + window, left : left + window] += drops[i, j]
            count[top : top + window, left : left + window] += 1
    heat = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    if region is not None:
        y0, y1, x0, x1 = region
        inside = np.zeros_like(heat, dtype=bool)
        inside[y0:y1, x0:x1] = True
        heat[~inside] = 0.0
    return OcclusionResult(
        map=heat.astype(np.float32),
        grid=np.asarray(drops, dtype=np.float32),
        n_forward=len(rows) * len(cols) + 1,
        probability=float(clean),
        window=window,
        stride=stride,
        baseline=baseline,
        target_class=target_class,
        region=None if region is None else tuple(int(v) for v in region),
    )
