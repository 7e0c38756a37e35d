"""A deep ensemble of single-logit timm classifiers that behaves like one timm model.

The ensemble's logit is the mean of its members' logits. Because the mean is linear in the
members' pooled features, the ensemble exposes the timm interface the rest of the library
uses: ``forward_features`` / ``forward_head(pre_logits=True)`` give the concatenated pooled
features (the out-of-distribution statistics are fitted on them) and ``get_classifier()`` is
one linear layer over them that equals the mean of the members' heads. Calibration, the
decision rule and evaluation therefore treat an ensemble exactly like a single network.

Explanations are made per member and combined (see :mod:`xray_xai.explain.cam` and
:mod:`xray_xai.explain.occlusion`); how far the members disagree is the ensemble's uncertainty.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Ensemble(nn.Module):
    """Mean-logit ensemble of timm models with a single-logit linear head each."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.member_logits(x).mean(dim=1, keepdim=True)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, M)`` logits, one column per member."""
        return torch.cat([m(x).reshape(-1, 1) for m in self.members], dim=1)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(m.forward_features(x) for m in self.members)

    def forward_head(self, features: tuple[torch.Tensor, ...], pre_logits: bool = False) -> torch.Tensor:
        pooled = torch.cat(
            [m.forward_head(f, pre_logits=True) for m, f in zip(self.members, features, strict=True)], dim=1
        )
        return pooled if pre_logits else self.get_classifier()(pooled)

    def get_classifier(self) -> nn.Linear:
        """One linear layer over the concatenated pooled features equal to the mean member logit."""
        heads = [m.get_classifier() for m in self.members]
        head = nn.Linear(sum(h.in_features for h in heads), 1)
        with torch.no_grad():
            head.weight.copy_(torch.cat([h.weight for h in heads], dim=1) / len(heads))
            head.bias.copy_(torch.stack([h.bias for h in heads]).mean(dim=0))
        return head.to(heads[0].weight.device)

    def member_logits_from_features(self, pooled: torch.Tensor) -> torch.Tensor:
        """``(N, M)`` member logits from concatenated pooled features (no second forward pass)."""
        logits, start = [], 0
        for member in self.members:
            head = member.get_classifier()
            logits.append(head(pooled[:, start : start + head.in_features]).reshape(-1, 1))
            start += head.in_features
        return torch.cat(logits, dim=1)


def members(model: nn.Module) -> list[nn.Module]:
    """The networks inside ``model``: an ensemble's members, or the model itself."""
    return list(model.members) if isinstance(model, Ensemble) else [model]
