"""Classifier networks: one ``create_model`` entry point and loading a classifier checkpoint.

A card with ``members > 1`` is a mean-logit :class:`~xray_xai.models.ensemble.Ensemble`; a card
with ``framing`` wraps its lung-box members so that they see the lung box of each film
(:mod:`xray_xai.models.framing`). Either way one whole-film batch goes in and one logit comes out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..checkpoint import CheckpointError, ModelCard, load_tensors, read_card
from .ensemble import Ensemble
from .framing import frame_members


def create_model(arch: str, in_chans: int = 1, num_classes: int = 1, **kwargs: Any) -> torch.nn.Module:
    """A timm model, always randomly initialised: weights never come from a hub."""
    import timm  # imported here: it pulls in torchvision and torch._dynamo (seconds), which the page need not wait for

    return timm.create_model(arch, pretrained=False, in_chans=in_chans, num_classes=num_classes, **kwargs)


def build_classifier(card: ModelCard) -> torch.nn.Module:
    """The randomly initialised network (or ensemble) a card describes, before framing; members
    may differ in their timm arguments (e.g. a finer output stride for the explaining network)."""
    if card.members == 1:
        return create_model(card.arch, **card.model_kwargs)
    kwargs = card.member_kwargs or [card.model_kwargs] * card.members
    if len(kwargs) != card.members:
        raise CheckpointError(f"The card lists arguments for {len(kwargs)} members but has {card.members}.")
    return Ensemble([create_model(card.arch, **member) for member in kwargs])


def load_checkpoint(
    card_path: str | Path, segmenter=None
) -> tuple[torch.nn.Module, ModelCard, dict[str, torch.Tensor]]:
    """Rebuild the classifier of a card, after checking the weight file's sha256.

    Returns the model in eval mode (float32, channels_last), its card, and the extra tensors
    stored beside the weights (e.g. feature statistics for out-of-distribution checks).
    ``segmenter``: an already loaded lung segmenter that lung-box members may share (used only
    if its weights are the ones the card names; see :func:`xray_xai.models.framing.frame_members`).
    """
    card = read_card(card_path, ModelCard)
    state, extras = load_tensors(card_path, card)
    model = build_classifier(card)
    model.load_state_dict(state)
    if card.framing:
        model = frame_members(model, card.framing, Path(card_path).parent, card.mean, card.std, segmenter)
    model.eval().to(memory_format=torch.channels_last)
    return model, card, extras
