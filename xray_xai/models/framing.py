"""Lung-box framing: a classifier that sees only the box around the lungs of each film.

Borders, burned-in text, side markers and the patient's shoulders lie mostly outside the box
of the lungs, so a network trained on lung boxes cannot read its answer from them. Such a
network is trained on crops made by :mod:`xray_xai.training.lung_crops`; in an ensemble it
is wrapped in :class:`LungBoxFramed`, whose :class:`LungBoxFramer` segments each input film,
crops it to the same box and resizes the crop to the input size inside the forward pass. The
ensemble therefore still maps one whole-film batch to one logit, and everything downstream
(calibration, the OOD features, occlusion, the faithfulness tests) sees the composite model as
it is served.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import CheckpointError
from .ensemble import Ensemble
from .lungs import LungMask, LungSegmenter

LUNG_BOX_MARGIN = 16  # px at 224 around the lungs' bounding box (also the occlusion focus of the app)


def framing_box(
    mask: LungMask | None, shape: tuple[int, int], margin: int = LUNG_BOX_MARGIN
) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` of the lung box in an image of ``shape`` (end-exclusive), with
    ``margin`` given in px of a 224-px film; the whole image when the mask failed its
    plausibility check (a crop of a wrong mask would hide the lungs)."""
    height, width = shape
    if mask is None or not mask.ok:
        return 0, height, 0, width
    size = mask.mask.shape[0]
    y0, y1, x0, x1 = mask.box(margin=int(round(margin * size / 224)))
    return (
        int(y0 * height / size),
        int(np.ceil(y1 * height / size)),
        int(x0 * width / size),
        int(np.ceil(x1 * width / size)),
    )


def lung_box(
    pixels: np.ndarray, segmenter: LungSegmenter, margin: int = LUNG_BOX_MARGIN
) -> tuple[tuple[int, int, int, int], bool]:
    """:func:`framing_box` of a grayscale [0, 1] film as ``segmenter`` finds its lungs, and whether
    the segmentation was used (False: the whole film, because the mask failed its plausibility check)."""
    mask = segmenter.segment(pixels)
    return framing_box(mask, pixels.shape, margin), mask.ok


class LungBoxFramer:
    """Crops normalised ``(N, 1, S, S)`` whole-film batches to their lung boxes.

    Each film is de-normalised, segmented, cropped to its lung box and resized back to ``S`` x ``S``
    with the same bicubic filter and clipping as the training crops. The lung-box members of an
    ensemble share one framer, which keeps the crops of the last batch it saw: the members see
    the same batch in one forward pass, so it is segmented once however many of them there are.
    Nothing is kept while gradients are recorded.
    """

    def __init__(self, segmenter: LungSegmenter, mean: float, std: float, margin: int = LUNG_BOX_MARGIN) -> None:
        self.segmenter, self.mean, self.std, self.margin = segmenter, mean, std, margin
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None  # (a copy of the batch, its crops)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # a backward pass needs crops in its own graph
            return self._crop(x)
        last = self._last  # read once: another thread may replace it meanwhile
        if last is None or last[0].shape != x.shape or not torch.equal(last[0], x):
            last = self._last = (x.clone(), self._crop(x))
        return last[1]

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pixels = (x.detach().float() * self.std + self.mean).clamp(0, 1).cpu().numpy()
        lo, hi = (0 - self.mean) / self.std, (1 - self.mean) / self.std
        crops = []
        for i in range(x.shape[0]):
            y0, y1, x0, x1 = framing_box(self.segmenter.segment(pixels[i, 0]), tuple(size), self.margin)
            crop = x[i : i + 1, :, y0:y1, x0:x1]
            if crop.shape[-2:] != size:
                crop = F.interpolate(
                    crop.contiguous(), size=tuple(size), mode="bicubic", align_corners=False, antialias=True
                )
            crops.append(crop.clamp(lo, hi))
        return torch.cat(crops).contiguous(memory_format=torch.channels_last)


class LungBoxFramed(nn.Module):
    """Wraps a timm network trained on lung-box crops so that it takes whole films.

    The input is a normalised ``(N, 1, S, S)`` batch (``(x - mean) / std`` of [0, 1] pixels,
    as every classifier input), which ``framer`` crops to each film's lung box. The box is a
    function of the film, so occluding or blurring a film can move it, as it would in the app.
    Exposes the timm interface the ensemble uses.
    """

    def __init__(self, net: nn.Module, framer: LungBoxFramer) -> None:
        super().__init__()
        self.net = net
        self.framer = framer  # holds the segmenter, whose weights belong to the lung checkpoint

    @property
    def segmenter(self) -> LungSegmenter:
        return self.framer.segmenter

    def frame(self, x: torch.Tensor) -> torch.Tensor:
        return self.framer(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.frame(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(self.frame(x))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.net.forward_head(features, pre_logits=pre_logits)

    def get_classifier(self) -> nn.Module:
        return self.net.get_classifier()


def member_views(framing: dict, members: int) -> tuple[str, ...]:
    """What each of ``members`` networks sees, "whole film" or "lung box", when a card's
    ``framing`` makes them differ; () when they all see the same."""
    boxed = {int(i) for i in framing.get("lung_box_members", [])}
    if not boxed or len(boxed) == members:
        return ()
    return tuple("lung box" if i in boxed else "whole film" for i in range(members))


def frame_members(
    model: nn.Module, framing: dict, card_dir: Path, mean: float, std: float, segmenter: LungSegmenter | None = None
) -> nn.Module:
    """Wrap the members that a card's ``framing`` names (``lung_box_members``) in
    :class:`LungBoxFramed`, with the lung segmenter it names, which must be the one the
    classifier was calibrated with (same weights sha256). A ``segmenter`` already loaded with
    those weights (the app's own) is shared rather than loaded a second time."""
    indices = [int(i) for i in framing.get("lung_box_members", [])]
    if not indices:
        return model
    if segmenter is None or segmenter.card.sha256 != framing.get("segmenter_sha256"):
        segmenter = framing_segmenter(framing, card_dir)
    framer = LungBoxFramer(segmenter, mean, std, int(framing.get("margin", LUNG_BOX_MARGIN)))
    if not isinstance(model, Ensemble):
        if indices != [0]:
            raise CheckpointError(f"framing.lung_box_members {indices} must be [0] for a single network.")
        return LungBoxFramed(model, framer)
    if any(not 0 <= i < len(model.members) for i in indices):
        raise CheckpointError(f"framing.lung_box_members {indices} must name members 0 to {len(model.members) - 1}.")
    for i in indices:
        model.members[i] = LungBoxFramed(model.members[i], framer)
    return model


def framing_segmenter(framing: dict, card_dir: Path) -> LungSegmenter:
    """The lung segmenter a card's ``framing`` names, next to the card, checked against its sha256."""
    path = card_dir / framing.get("segmenter", "")
    if not path.is_file():
        raise CheckpointError(f"The lung segmenter {path} that frames the lung-box members is missing.")
    segmenter = LungSegmenter.load(path)
    if segmenter.card.sha256 != framing.get("segmenter_sha256"):
        raise CheckpointError(
            f"The lung segmenter {path} is not the one the classifier was calibrated with (weights sha256 differ)."
        )
    return segmenter


def unframed(model: nn.Module) -> nn.Module:
    """The same networks without their framing wrappers (what the weight file stores)."""
    if isinstance(model, LungBoxFramed):
        return model.net
    if isinstance(model, Ensemble):
        return Ensemble([unframed(m) for m in model.members])
    return model


def is_framed(model: nn.Module) -> bool:
    """Whether any network inside ``model`` sees lung-box crops rather than the input film."""
    return isinstance(model, nn.Module) and any(isinstance(m, LungBoxFramed) for m in model.modules())
