"""The model-parameter randomisation test: what is randomised, what is kept, and the correlation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.tiny import TINY_ARCH
from xray_xai.explain.cam import compute_cam
from xray_xai.explain.sanity import randomized_top, rank_correlation
from xray_xai.models.ensemble import Ensemble
from xray_xai.models.factory import create_model
from xray_xai.models.framing import LungBoxFramed, LungBoxFramer


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(TINY_ARCH).eval()


def _changed(a: torch.nn.Module, b: torch.nn.Module) -> set[str]:
    mine = dict(b.state_dict())
    return {name for name, value in a.state_dict().items() if not torch.equal(value, mine[name])}


def test_only_the_head_and_last_stage_of_every_member_change():
    model = Ensemble([_net(0), _net(1)])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    randomized = randomized_top(model, seed=3)
    changed = _changed(model, randomized)
    assert changed and all(".layer4." in name or ".fc." in name for name in changed)
    for member in ("members.0", "members.1"):
        assert any(n.startswith(f"{member}.layer4.") for n in changed) and f"{member}.fc.weight" in changed
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original is untouched
    assert not _changed(randomized, randomized_top(model, seed=3))  # seeded
    assert _changed(randomized, randomized_top(model, seed=4))


def test_a_lung_box_member_randomises_its_own_network_and_keeps_its_framing():
    framer = object.__new__(LungBoxFramer)  # never called: only the weights are compared
    model = Ensemble([_net(0), LungBoxFramed(_net(1), framer)])
    changed = _changed(model, randomized_top(model, seed=0))
    assert any(n.startswith("members.1.net.layer4.") for n in changed) and "members.1.net.fc.weight" in changed
    assert all(".layer4." in name or ".fc." in name for name in changed)


def test_a_network_without_a_last_stage_is_refused():
    with pytest.raises(ValueError, match="layer4"):
        randomized_top(torch.nn.Sequential(torch.nn.Linear(2, 1)))


def test_rank_correlation():
    a = np.arange(16, dtype=np.float32).reshape(4, 4)
    assert rank_correlation(a, a**2) == pytest.approx(1.0)  # ranks, not values
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    assert rank_correlation(a, np.zeros_like(a)) == 0.0
    noise = np.random.default_rng(0).random((64, 64))
    assert abs(rank_correlation(noise, np.random.default_rng(1).random((64, 64)))) < 0.05


def test_randomising_the_top_changes_the_gradcam_map():
    model = _net(0)
    x = torch.randn(1, 1, 64, 64)
    real = compute_cam(model, x)
    assert rank_correlation(real, compute_cam(model, x)) == pytest.approx(1.0)
    assert rank_correlation(real, compute_cam(randomized_top(model, seed=1), x)) < 0.9
