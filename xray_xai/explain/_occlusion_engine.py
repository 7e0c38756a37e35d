"""Incremental inference for occlusion (Nakandala et al., SIGMOD 2019), private to :mod:`.occlusion`.

An occluded copy differs from the clean image only inside the window, so in the early layers of
a ResNet its activations differ only inside the window's receptive-field footprint. Those layers
are computed on small crops (the footprint plus the halo that exact convolution needs, taken
from the cached clean activations), from the first layer whose crop would exceed
``CROP_AREA_LIMIT`` of its map the network runs in full, and BatchNorm is folded into the
convolutions (a copy, cached per model). Models that are not eval-mode timm ResNets run in full
on every occluded copy (same maps, no speed-up).

Lung-box members (:class:`~xray_xai.models.framing.LungBoxFramed`) are handled by
:class:`FramedEngine`: every occluded copy is segmented and cropped exactly as the member's
framer does, the copies of a batch through one segmenter call; a copy whose lung mask is the
clean film's and whose window lies outside the lung box has the clean crop, hence the clean
logit, and is not run again. Full forward passes go to the served (compiled) networks when given.
With ``reframe=False`` every copy keeps the clean film's lung box (no segmentation per copy,
every crop incremental): the map then explains the ensemble with its lung-box members framed
as on the clean film, which differs from re-framing only for the copies whose window would move
the box.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ..models.ensemble import members
from ..models.framing import LungBoxFramed, framing_box
from ..models.lungs import THRESHOLD, LungSegmenter, finish_mask
from .cam import private_copy

# A segment runs on crops while its crop covers at most this fraction of its input's area;
# from the first segment whose crop is larger, the network runs in full. A crop costs more
# per pixel than the full map (smaller matrices, gathering), so crops of more than about 60%
# of the map stop paying off (measured with benchmarks/occlusion.py on resnet18 at 224 px).
CROP_AREA_LIMIT = 0.6


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
    """Crops along one axis from the windows' ``box`` [lo, hi); ``sizes``: each segment's input
    length, then the output's."""
    lo, hi = box
    plan = []
    for geometry, size_in, size_out in zip(geometries, sizes[:-1], sizes[1:], strict=True):
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


@dataclass(frozen=True)
class _Clean:
    """What an engine keeps of the clean input for one map."""

    acts: list[torch.Tensor]  # the input, then each segment's output
    logit: float
    plans: tuple[list[_Crops], list[_Crops]] | None
    first_full: int  # the first segment run in full
    boxes: tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # per-axis (lo, hi) tables


# Per model: its segments with BatchNorm folded in (building them copies every convolution
# weight) and their geometry, reused while the model's parameters and buffers are unchanged
# (same tensors, same version counters).
_FOLDED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class Engine:
    """A network cut into segments (stem, residual blocks) plus a head giving the logit."""

    segments: list[nn.Module]
    head: Callable[[torch.Tensor], torch.Tensor]
    geometries: list[_Geometry] | None  # None: no incremental inference

    @classmethod
    def build(cls, model: nn.Module, incremental: bool, served: nn.Module | None = None) -> Engine:
        """Incremental engine for an eval-mode timm ResNet, else one that runs ``model`` in full
        (through ``served``, its compiled copy, when given)."""
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
                return cls([], served or model, None)
            folded = [_folded(s) for s in segments]
            _FOLDED[model] = (state, folded, geometries)
            return cls(folded, model.forward_head, geometries)
        return cls([], served or model, None)

    def logits(self, x, base, rows, cols, window, batch_size, progress) -> tuple[np.ndarray, np.ndarray]:
        """``(1,)`` the clean image's logit and ``(1, rows, cols)`` the logit of each occluded copy."""
        x = x.detach().float().contiguous(memory_format=torch.channels_last)
        base = base.to(x)
        clean = self.prepare(
            x, ((rows, np.minimum(rows + window, x.shape[-2])), (cols, np.minimum(cols + window, x.shape[-1])))
        )
        grid = [(i, j) for i in range(len(rows)) for j in range(len(cols))]
        logits = np.zeros((len(rows), len(cols)))
        for begin in range(0, len(grid), batch_size):
            chunk = grid[begin : begin + batch_size]
            iy = torch.tensor([i for i, _ in chunk])
            ix = torch.tensor([j for _, j in chunk])
            values = self.batch(clean, base, False, iy, ix)
            for (i, j), value in zip(chunk, values, strict=True):
                logits[i, j] = value
            if progress is not None:
                progress(begin + len(chunk), len(grid))
        return np.array([clean.logit]), logits[None]

    def prepare(self, x: torch.Tensor, boxes) -> _Clean:
        """Clean activations and crop plans for copies of ``x`` that differ from it only inside
        per-axis ``boxes`` ``((lo_y, hi_y), (lo_x, hi_x))`` (arrays indexed by window row / column)."""
        acts = [x]
        for segment in self.segments:
            acts.append(segment(acts[-1]))
        first_full, plans = self._split(acts, boxes)
        tables = tuple(tuple(torch.from_numpy(np.asarray(b)) for b in axis) for axis in boxes)
        return _Clean(acts, float(self.head(acts[-1]).reshape(-1)[0]), plans, first_full, tables)

    def batch(
        self, clean: _Clean, changed: torch.Tensor, per_window: bool, iy: torch.Tensor, ix: torch.Tensor
    ) -> np.ndarray:
        """Logits of copies that equal ``changed`` (one per window if ``per_window``, else shared)
        inside the boxes of windows ``(iy, ix)`` and the clean input elsewhere."""
        return (
            self._forward(clean.acts, changed, per_window, clean.boxes, clean.plans, clean.first_full, iy, ix)
            .reshape(-1)
            .double()
            .numpy()
        )

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
        for i, (along_y, along_x) in enumerate(zip(*plans, strict=True)):
            if along_y.length * along_x.length > CROP_AREA_LIMIT * heights[i] * widths[i]:
                return i, plans
        return len(self.segments), plans

    def _forward(self, clean_acts, changed, per_window, boxes, plans, first_full, iy, ix) -> torch.Tensor:
        """Logits of a batch of occluded copies; windows given by row and column index."""
        zeros = (torch.zeros_like(iy), torch.zeros_like(ix))
        offsets = zeros
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


def engines(
    model: nn.Module, served: nn.Module | None, incremental: bool, reframe: bool = True
) -> list[Engine | FramedEngine]:
    """The engines that together give every member's logits: one per whole-film member and one
    per group of lung-box members sharing a framer. ``served``: ``model`` compiled, member for
    member (:func:`xray_xai.models.runtime.serve`), used for full forward passes and segmentation.
    ``reframe``: segment every occluded copy again (exact) or keep the clean film's lung box."""
    fast_members = members(served) if served is not None else members(model)
    built: list[Engine | FramedEngine] = []
    framed: dict[int, list[tuple[LungBoxFramed, LungBoxFramed]]] = {}
    for member, fast in zip(members(model), fast_members, strict=True):
        if isinstance(fast, LungBoxFramed):
            framed.setdefault(id(fast.framer), []).append((member, fast))
        else:
            built.append(Engine.build(member, incremental, fast if fast is not member else None))
    return built + [
        FramedEngine.build([pair[0] for pair in group], [pair[1] for pair in group], incremental, reframe)
        for group in framed.values()
    ]


def occluded_copies(
    x: torch.Tensor, base: torch.Tensor, tops: torch.Tensor, lefts: torch.Tensor, window: int
) -> torch.Tensor:
    """``(N, 1, S, S)`` copies of ``x``, copy n with the window at ``(tops[n], lefts[n])`` taken from ``base``."""
    size_y, size_x = x.shape[-2:]
    ys, xs = torch.arange(size_y), torch.arange(size_x)
    inside_y = (ys >= tops[:, None]) & (ys < tops[:, None] + window)  # (N, H)
    inside_x = (xs >= lefts[:, None]) & (xs < lefts[:, None] + window)  # (N, W)
    inside = (inside_y[:, :, None] & inside_x[:, None, :])[:, None]
    return torch.where(inside, base, x).contiguous(memory_format=torch.channels_last)


@functools.lru_cache(maxsize=256)
def resize_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """``(size_out, size_in)`` matrix of the framer's 1-D resize (bicubic, antialiased, as
    ``F.interpolate``, which is separable): ``R_y @ crop @ R_x.T`` is its resized crop."""
    eye = torch.eye(size_in)[None, None]
    if size_in == size_out:
        return eye[0, 0]
    return F.interpolate(eye, size=(size_out, size_in), mode="bicubic", align_corners=False, antialias=True)[0, 0]


@dataclass
class FramedEngine:
    """Occlusion of the lung-box members that share one framer (see the module docstring).

    A copy whose lung box is the clean film's differs from the clean crop only in the rows and
    columns its window reaches through the resize, so each member's incremental :class:`Engine`
    runs it on those; a copy whose box moved runs in full through ``nets`` (served when given).
    """

    engines: list[Engine]  # per member, on crops (incremental when the member is a timm ResNet)
    nets: list[nn.Module]  # per member, full forward passes on crops
    segmenter: LungSegmenter  # the framer's (served when given)
    mean: float
    std: float
    margin: int
    reframe: bool = True  # segment every occluded copy again; False keeps the clean film's box

    @classmethod
    def build(
        cls,
        torch_members: Sequence[LungBoxFramed],
        fast_members: Sequence[LungBoxFramed],
        incremental: bool,
        reframe: bool = True,
    ) -> FramedEngine:
        framer = fast_members[0].framer
        return cls(
            [
                Engine.build(t.net, incremental, f.net if f is not t else None)
                for t, f in zip(torch_members, fast_members, strict=True)
            ],
            [f.net for f in fast_members],
            framer.segmenter,
            framer.mean,
            framer.std,
            framer.margin,
            reframe,
        )

    def _raw_masks(self, films: torch.Tensor) -> np.ndarray:
        """Thresholded lung probability ``(N, S, S)`` of normalised films, as the framer segments them."""
        pixels = (films.detach().float() * self.std + self.mean).clamp(0, 1).numpy()
        batch = torch.cat([self.segmenter.prepare(p[0]) for p in pixels])
        return self.segmenter.probabilities(batch).numpy() > THRESHOLD

    def _box(self, raw: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int]:
        """The framer's lung box for a thresholded lung probability (``finish_mask`` reads only that)."""
        return framing_box(finish_mask(raw.astype(np.float32), self.segmenter.rules), shape, self.margin)

    def _boxes(
        self, raw: np.ndarray, clean_raw: np.ndarray, clean_box: tuple[int, ...], shape
    ) -> list[tuple[int, ...]]:
        """Each film's lung box; a film whose raw mask is the clean film's has the clean box."""
        return [clean_box if np.array_equal(mask, clean_raw) else self._box(mask, shape) for mask in raw]

    def _crops(self, films: torch.Tensor, box: tuple[int, ...]) -> torch.Tensor:
        """``LungBoxFramer``'s crops of normalised ``(N, 1, S, S)`` films that share one box."""
        size_y, size_x = films.shape[-2:]
        y0, y1, x0, x1 = box
        rows, cols = resize_matrix(y1 - y0, size_y), resize_matrix(x1 - x0, size_x)
        crops = rows @ films[:, :, y0:y1, x0:x1].float() @ cols.T
        return crops.clamp((0 - self.mean) / self.std, (1 - self.mean) / self.std).contiguous(
            memory_format=torch.channels_last
        )

    def _reach(self, starts: np.ndarray, window: int, lo: int, hi: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Per window start, the ``[lo, hi)`` crop positions its window (clipped to the box ``[lo, hi)``) reaches."""
        weights = resize_matrix(hi - lo, size).abs() > 0
        first, last = np.zeros(len(starts), np.int64), np.ones(len(starts), np.int64)
        for k, start in enumerate(starts):
            a, b = max(int(start), lo) - lo, min(int(start) + window, hi) - lo
            touched = weights[:, a:b].any(dim=1).nonzero() if b > a else torch.zeros(0, 1)
            if len(touched):
                first[k], last[k] = int(touched[0]), int(touched[-1]) + 1
        return first, last

    def logits(self, x, base, rows, cols, window, batch_size, progress) -> tuple[np.ndarray, np.ndarray]:
        """``(M,)`` clean logits and ``(M, rows, cols)`` logits of the occluded copies, one row per member."""
        x = x.detach().float()
        base = base.to(x)
        shape = tuple(x.shape[-2:])
        clean_raw = self._raw_masks(x)[0]
        clean_box = self._box(clean_raw, shape)
        y0, y1, x0, x1 = clean_box
        boxes = (self._reach(rows, window, y0, y1, shape[0]), self._reach(cols, window, x0, x1, shape[1]))
        cleans = [engine.prepare(self._crops(x, clean_box), boxes) for engine in self.engines]
        grid = [(i, j) for i in range(len(rows)) for j in range(len(cols))]
        logits = np.repeat(np.array([c.logit for c in cleans])[:, None], len(grid), axis=1)
        for begin in range(0, len(grid), batch_size):
            chunk = grid[begin : begin + batch_size]
            iy, ix = torch.tensor([i for i, _ in chunk]), torch.tensor([j for _, j in chunk])
            tops, lefts = torch.from_numpy(rows[iy.numpy()]), torch.from_numpy(cols[ix.numpy()])
            films = occluded_copies(x, base, tops, lefts, window)
            moved: dict[tuple[int, ...], list[int]] = {}
            framed = (
                self._boxes(self._raw_masks(films), clean_raw, clean_box, shape)
                if self.reframe
                else [clean_box] * len(films)
            )
            for n, box in enumerate(framed):
                moved.setdefault(box, []).append(n)
            same = [n for n in moved.pop(clean_box, []) if _overlaps(clean_box, int(tops[n]), int(lefts[n]), window)]
            if same:
                crops = self._crops(films[same], clean_box)
                for m, (engine, clean) in enumerate(zip(self.engines, cleans, strict=True)):
                    logits[m, [begin + n for n in same]] = engine.batch(clean, crops, True, iy[same], ix[same])
            for box, picked in moved.items():
                crops = self._crops(films[picked], box)
                for m, net in enumerate(self.nets):
                    logits[m, [begin + n for n in picked]] = net(crops).reshape(-1).double().numpy()
            if progress is not None:
                progress(begin + len(chunk), len(grid))
        return np.array([c.logit for c in cleans]), logits.reshape(len(self.nets), len(rows), len(cols))


def _overlaps(box: tuple[int, ...], top: int, left: int, window: int) -> bool:
    """Whether a window at ``(top, left)`` covers any pixel of the box ``(y0, y1, x0, x1)``."""
    y0, y1, x0, x1 = box
    return top < y1 and top + window > y0 and left < x1 and left + window > x0
