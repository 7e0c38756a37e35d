"""Occlusion sensitivity: how much the calibrated probability drops when a region is hidden.

A ``window`` x ``window`` square slides with ``stride`` over the model input (positions 0,
stride, 2 * stride, ... exactly like Captum's ``Occlusion``: the last window along an axis may
hang over the edge and is then cut off); its pixels are replaced by a baseline and the drop of
the calibrated probability of the target class is recorded. Each pixel gets the mean drop of
the windows covering it, so positive values mark regions that support the answer.

The maps are exact (equal to a one-window-at-a-time loop), but most of the work is skipped by
incremental inference (Nakandala et al., SIGMOD 2019): an occluded copy differs from the clean
image only inside the window, so in the early layers of a ResNet its activations differ only
inside the window's receptive-field footprint. Those layers are computed on small crops (the
footprint plus the halo that exact convolution needs, taken from the cached clean
activations), from the first layer whose crop would exceed ``CROP_AREA_LIMIT`` of its map the
network runs in full, and BatchNorm is folded into the convolutions (a copy, cached per
model). Models that are not eval-mode timm ResNets run in full on every occluded copy (same
maps, no speed-up).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from timm.layers import DropPath
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .cam import private_copy
from ..models.ensemble import members
from ..results import Region

BASELINES = ("blur", "mean", "zero")
# Gaussian sigma of the "blur" baseline as a fraction of the input size (16 px at 224 px).
# It wipes out structure smaller than about 2 sigma = 32 px (ribs, vessels, consolidation,
# air bronchograms: what a window is meant to hide) but keeps the large-scale exposure
# pattern (bright mediastinum, dark lung fields), so an occluded copy still looks like a
# radiograph instead of carrying an out-of-distribution black square.
BLUR_SIGMA_FRACTION = 1.0 / 14.0
# A segment runs on crops while its crop covers at most this fraction of its input's area;
# from the first segment whose crop is larger, the network runs in full. A crop costs more
# per pixel than the full map (smaller matrices, gathering), so crops of more than about 60%
# of the map stop paying off (measured with benchmarks/occlusion.py on resnet18 at 224 px).
CROP_AREA_LIMIT = 0.6


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
) -> OcclusionResult:
    """Occlusion sensitivity of a single-logit classifier on a normalised ``(1, 1, S, S)`` input.

    An :class:`~xray_xai.models.ensemble.Ensemble` is occluded member by member (each with its own
    incremental engine) and the members' logits are averaged before the calibrated probability
    is taken, so the map explains exactly the ensemble's reported probability.

    ``target_class`` 1 explains PNEUMONIA (the sigmoid of ``logit / temperature``), 0 NORMAL.
    ``region`` keeps only the windows that overlap the box; inside it the map equals the
    full-image map exactly, outside it is 0. ``incremental=False`` runs the whole network on
    every occluded copy (same result, slower; kept for benchmarking). ``progress(done, total)``
    is called after each batch with window counts.
    """
    rows, cols = _positions(x, window, stride, region)
    base = make_baseline(x, baseline)
    engines = [_Engine.build(member, incremental) for member in members(model)]
    clean_logit, logits = 0.0, np.zeros((len(rows), len(cols)))
    with torch.inference_mode():
        for k, engine in enumerate(engines):
            member_clean, member_logits = engine.logits(x, base, rows, cols, window, batch_size, _part(progress, k, len(engines)))
            clean_logit, logits = clean_logit + member_clean / len(engines), logits + member_logits / len(engines)
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


# --- incremental inference -------------------------------------------------------------


class _Unsupported(Exception):
    """A module whose spatial dependencies we cannot bound: run the network in full."""


@dataclass(frozen=True)
class _Geometry:
    """Output position ``o`` of a layer reads input positions ``[stride*o - before, stride*o + after]``."""

    stride: int = 1
    before: int = 0
    after: int = 0

    def then(self, nxt: _Geometry) -> _Geometry:
        return _Geometry(
            self.stride * nxt.stride,
            self.stride * nxt.before + self.before,
            self.stride * nxt.after + self.after,
        )

    def union(self, other: _Geometry) -> _Geometry:
        if other.stride != self.stride:
            raise _Unsupported("branches with different strides")
        return _Geometry(self.stride, max(self.before, other.before), max(self.after, other.after))


_POINTWISE = (
    nn.BatchNorm2d,
    nn.ReLU,
    nn.SiLU,
    nn.GELU,
    nn.LeakyReLU,
    nn.Identity,
    nn.Dropout,
    DropPath,
)


def _square(value) -> int:
    pair = value if isinstance(value, tuple) else (value, value)
    if not isinstance(pair[0], int) or pair[0] != pair[1]:
        raise _Unsupported(f"non-square or symbolic setting {value!r}")
    return pair[0]


def _geometry(module: nn.Module | None) -> _Geometry:
    """Receptive-field geometry of a module, or :class:`_Unsupported`."""
    if module is None or isinstance(module, _POINTWISE):
        return _Geometry()
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        kernel, stride, pad = (
            _square(module.kernel_size),
            _square(module.stride),
            _square(module.padding),
        )
        dilation = _square(getattr(module, "dilation", 1))
        return _Geometry(stride, pad, dilation * (kernel - 1) - pad)
    if isinstance(module, nn.Sequential):
        geometry = _Geometry()
        for child in module:
            geometry = geometry.then(_geometry(child))
        return geometry
    if isinstance(module, (BasicBlock, Bottleneck)):
        if module.se is not None:
            raise _Unsupported("attention uses global context")
        main = ["conv1", "aa", "conv2"] if isinstance(module, BasicBlock) else ["conv1", "conv2", "aa", "conv3"]
        for name, child in module.named_children():
            if name not in main and name != "downsample":
                _pointwise(child)
        geometry = _Geometry()
        for name in main:
            geometry = geometry.then(_geometry(getattr(module, name)))
        return geometry.union(_geometry(module.downsample))
    raise _Unsupported(type(module).__name__)


def _pointwise(module: nn.Module) -> None:
    if not isinstance(module, _POINTWISE):
        raise _Unsupported(type(module).__name__)


def _folded(segment: nn.Module) -> nn.Module:
    """A copy of an eval-mode segment with each BatchNorm merged into the convolution before it.

    Saves a pass over every activation and changes results only by float rounding (~1e-7).
    The copy has none of the model's hooks (e.g. a concurrent Grad-CAM's) and shares its
    unchanged tensors, never writing to them.
    """
    copied = private_copy(segment)
    _fold(copied)
    return copied


def _fold(module: nn.Module) -> None:
    if isinstance(module, nn.Sequential):
        children = list(module)
        for i, child in enumerate(children):
            _fold(child)
            last = child[-1] if isinstance(child, nn.Sequential) and len(child) else child
            if i + 1 < len(children) and isinstance(last, nn.Conv2d) and type(children[i + 1]) is nn.BatchNorm2d:
                _merge(last, children[i + 1])
                module[i + 1] = nn.Identity()
    elif isinstance(module, (BasicBlock, Bottleneck)):
        for k in (1, 2, 3):
            conv, norm = (
                getattr(module, f"conv{k}", None),
                getattr(module, f"bn{k}", None),
            )
            if isinstance(conv, nn.Conv2d) and type(norm) is nn.BatchNorm2d:
                _merge(conv, norm)
                setattr(module, f"bn{k}", nn.Identity())
        if module.downsample is not None:
            _fold(module.downsample)


@torch.no_grad()
def _merge(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    """Give ``conv`` new weight and bias tensors equal to conv followed by ``norm`` (eval mode)."""
    weight, bias = fuse_conv_bn_weights(
        conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.eps, norm.weight, norm.bias
    )
    conv.weight = nn.Parameter(weight.contiguous(memory_format=torch.channels_last), requires_grad=False)
    conv.bias = nn.Parameter(bias, requires_grad=False)


@dataclass(frozen=True)
class _Crops:
    """Per-axis plan of one network segment for every window position along that axis."""

    start: torch.Tensor  # crop start in the segment's input, per window (a multiple of the stride)
    length: int  # crop length, the same for all windows
    out_box: tuple[torch.Tensor, torch.Tensor]  # output positions [lo, hi) that can change, per window


def _plan_axis(
    box: tuple[np.ndarray, np.ndarray],
    geometries: Sequence[_Geometry],
    sizes: Sequence[int],
) -> list[_Crops]:
    """Crops along one axis from the windows' ``box`` [lo, hi); ``sizes`` = each segment's input length, then the output's."""
    lo, hi = box
    plan = []
    for geometry, size_in, size_out in zip(geometries, sizes[:-1], sizes[1:]):
        s, before, after = geometry.stride, geometry.before, geometry.after
        out_lo = np.maximum(0, -((after - lo) // s))  # ceil((lo - after) / s)
        out_hi = np.minimum(size_out, (hi - 1 + before) // s + 1)
        need_lo = (np.maximum(0, s * out_lo - before) // s) * s
        need_hi = np.minimum(size_in, s * (out_hi - 1) + after + 1)
        need = int((need_hi - need_lo).max())
        length = size_in - ((size_in - need) // s) * s  # >= need, and size_in - length divisible by s
        start = np.minimum(need_lo, size_in - length)
        plan.append(
            _Crops(
                torch.from_numpy(start),
                length,
                (torch.from_numpy(out_lo), torch.from_numpy(out_hi)),
            )
        )
        lo, hi = out_lo, out_hi
    return plan


def _gather(
    changed: torch.Tensor,
    per_window: bool,
    clean: torch.Tensor,
    starts: tuple[torch.Tensor, torch.Tensor],
    lengths: tuple[int, int],
    boxes: tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    offsets: tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """Crops of the occluded activations: ``changed`` inside each window's box, ``clean`` elsewhere.

    ``changed`` is (N or 1, C, h, w) holding absolute positions ``offsets + [0, h)``; ``clean``
    is the (1, C, H, W) clean activation; crop n starts at ``starts[n]``. Returns
    (N, C, *lengths) in channels-last layout.
    """
    n = len(starts[0])
    channels, h, w = changed.shape[1:]
    ys = starts[0][:, None] + torch.arange(lengths[0])  # (N, Ly) absolute rows
    xs = starts[1][:, None] + torch.arange(lengths[1])
    out = _rows(clean).index_select(0, (ys[:, :, None] * clean.shape[-1] + xs[:, None, :]).reshape(-1))
    in_y = (ys >= boxes[0][0][:, None]) & (ys < boxes[0][1][:, None])
    in_x = (xs >= boxes[1][0][:, None]) & (xs < boxes[1][1][:, None])
    dest = (in_y[:, :, None] & in_x[:, None, :]).reshape(-1).nonzero().squeeze(1)
    first = (torch.arange(n) * (h * w) if per_window else torch.zeros(n, dtype=torch.long))[:, None, None]
    source = first + (ys - offsets[0][:, None])[:, :, None] * w + (xs - offsets[1][:, None])[:, None, :]
    out.index_copy_(0, dest, _rows(changed).index_select(0, source.reshape(-1)[dest]))
    return out.view(n, *lengths, channels).permute(0, 3, 1, 2)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N*H*W, C), free for channels-last tensors."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


# Per model: its segments with BatchNorm folded in (building them copies every convolution
# weight) and their geometry, reused while the model's parameters and buffers are unchanged
# (same tensors, same version counters).
_FOLDED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class _Engine:
    """A network cut into segments (stem, residual blocks) plus a head giving the logit."""

    segments: list[nn.Module]
    head: Callable[[torch.Tensor], torch.Tensor]
    geometries: list[_Geometry] | None  # None: no incremental inference

    @classmethod
    def build(cls, model: nn.Module, incremental: bool) -> _Engine:
        """Incremental engine for an eval-mode timm ResNet, else one that runs ``model`` in full."""
        if incremental and isinstance(model, ResNet) and not model.training:
            state = tuple((id(t), t._version) for t in [*model.parameters(), *model.buffers()])
            cached = _FOLDED.get(model)
            if cached is not None and cached[0] == state:
                return cls(cached[1], model.forward_head, cached[2])
            stem = nn.Sequential(model.conv1, model.bn1, model.act1, model.maxpool)
            segments = [stem] + [
                block for stage in (model.layer1, model.layer2, model.layer3, model.layer4) for block in stage
            ]
            try:
                geometries = [_geometry(s) for s in segments]
            except _Unsupported:
                return cls([], model, None)
            folded = [_folded(s) for s in segments]
            _FOLDED[model] = (state, folded, geometries)
            return cls(folded, model.forward_head, geometries)
        return cls([], model, None)

    def logits(self, x, base, rows, cols, window, batch_size, progress) -> tuple[float, np.ndarray]:
        """The clean image's logit and the logit of each occluded copy (rows x cols)."""
        x = x.detach().float().contiguous(memory_format=torch.channels_last)
        base = base.to(x)
        clean_acts = [x]
        for segment in self.segments:
            clean_acts.append(segment(clean_acts[-1]))
        clean = float(self.head(clean_acts[-1]).reshape(-1)[0])
        boxes = (
            (rows, np.minimum(rows + window, x.shape[-2])),
            (cols, np.minimum(cols + window, x.shape[-1])),
        )
        first_full, plans = self._split(clean_acts, boxes)
        boxes = tuple(tuple(torch.from_numpy(b) for b in axis) for axis in boxes)

        grid = [(i, j) for i in range(len(rows)) for j in range(len(cols))]
        logits = np.zeros((len(rows), len(cols)))
        for begin in range(0, len(grid), batch_size):
            chunk = grid[begin : begin + batch_size]
            iy = torch.tensor([i for i, _ in chunk])
            ix = torch.tensor([j for _, j in chunk])
            values = self._forward(clean_acts, base, boxes, plans, first_full, iy, ix).reshape(-1).double().numpy()
            for (i, j), value in zip(chunk, values):
                logits[i, j] = value
            if progress is not None:
                progress(begin + len(chunk), len(grid))
        return clean, logits

    def _split(self, clean_acts, boxes):
        """Per-axis crop plans and the first segment to run in full (see ``CROP_AREA_LIMIT``)."""
        if self.geometries is None:
            return 0, None
        heights = [a.shape[-2] for a in clean_acts]
        widths = [a.shape[-1] for a in clean_acts]
        plans = (
            _plan_axis(boxes[0], self.geometries, heights),
            _plan_axis(boxes[1], self.geometries, widths),
        )
        for i, (along_y, along_x) in enumerate(zip(*plans)):
            if along_y.length * along_x.length > CROP_AREA_LIMIT * heights[i] * widths[i]:
                return i, plans
        return len(self.segments), plans

    def _forward(self, clean_acts, base, boxes, plans, first_full, iy, ix) -> torch.Tensor:
        """Logits of a batch of occluded copies; windows given by row and column index."""
        zeros = (torch.zeros_like(iy), torch.zeros_like(ix))
        changed, per_window, offsets = base, False, zeros
        boxes = _pick(boxes, iy, ix)
        for i in range(first_full):
            along_y, along_x = plans[0][i], plans[1][i]
            starts = (along_y.start[iy], along_x.start[ix])
            crop = _gather(
                changed,
                per_window,
                clean_acts[i],
                starts,
                (along_y.length, along_x.length),
                boxes,
                offsets,
            )
            changed, per_window = self.segments[i](crop), True
            stride = self.geometries[i].stride
            offsets = (starts[0] // stride, starts[1] // stride)
            boxes = _pick((along_y.out_box, along_x.out_box), iy, ix)
        clean = clean_acts[first_full]
        out = _gather(changed, per_window, clean, zeros, tuple(clean.shape[-2:]), boxes, offsets)
        for segment in self.segments[first_full:]:
            out = segment(out)
        return self.head(out)


def _pick(boxes, iy, ix):
    """Select the per-window (lo, hi) boxes of a batch from the per-axis tables."""
    return tuple(b[iy] for b in boxes[0]), tuple(b[ix] for b in boxes[1])
