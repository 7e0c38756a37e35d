"""Model-parameter randomisation test for saliency maps (Adebayo et al. 2018, "Sanity Checks
for Saliency Maps").

A map that explains the model must change when the model's learned parameters are destroyed. The
test re-initialises the top of the network (the classifier head and the last stage of every
member) and compares the maps of that copy with the real maps by Spearman rank correlation: near
1 means the map mostly reflects the input (edges, contrast) rather than what the model learned,
which is the failure the paper found in several gradient methods.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from ..models.ensemble import members
from ..models.framing import LungBoxFramed

TOP_STAGE = "layer4"  # the last stage of a timm ResNet, where the app's CAMs are taken


def randomized_top(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` whose head and last stage (every member's, for an ensemble; a lung-box
    member's own network) are re-initialised with their modules' own ``reset_parameters``
    (seeded); the rest, lung framing included, is kept."""
    copied = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for member in members(copied):
            network = member.net if isinstance(member, LungBoxFramed) else member
            stage = getattr(network, TOP_STAGE, None)
            if stage is None:
                raise ValueError(f"{type(network).__name__} has no '{TOP_STAGE}' stage to randomise.")
            for part in (stage, network.get_classifier()):
                for module in part.modules():
                    if hasattr(module, "reset_parameters"):
                        module.reset_parameters()
                    if hasattr(module, "reset_running_stats"):
                        module.reset_running_stats()
    return copied.eval()


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps' pixels; 0 when either map is constant (a map with
    no evidence at all ranks nothing, so it agrees with nothing)."""
    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)
