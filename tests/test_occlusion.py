"""Occlusion sensitivity: exact against a naive loop and Captum, region mode, progress, toy model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import Occlusion
from torch import nn

from xray_xai.explain import _occlusion_engine as occlusion_engine
from xray_xai.explain.occlusion import (
    OcclusionError,
    make_baseline,
    occlusion_map,
    occlusion_map_naive,
    window_positions,
)
from xray_xai.explain.sanity import rank_correlation
from xray_xai.models.factory import create_model

SIZE = 48


def sensitive(arch: str, x: torch.Tensor, seed: int = 0) -> nn.Module:
    """A random timm model with non-trivial BatchNorm statistics whose clean P is 0.5 and whose
    logit moves by several units under occlusion (so any indexing error shows in the maps)."""
    torch.manual_seed(seed)
    model = create_model(arch).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
        model.fc.weight.mul_(3.0 / abs(model(x).item()))
        model.fc.bias.sub_(model(x).item())
    return model


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(1, 1, SIZE, SIZE)


@pytest.fixture(scope="module")
def resnet(image) -> nn.Module:
    return sensitive("resnet18", image)


@pytest.mark.parametrize("baseline", ["blur", "mean", "zero"])
@pytest.mark.parametrize(
    "window,stride", [pytest.param(12, 6, marks=pytest.mark.slow), (10, 7)]
)  # (10, 7): last window cut off
def test_matches_naive_loop(resnet, image, baseline, window, stride):
    naive = occlusion_map_naive(resnet, image, window=window, stride=stride, baseline=baseline)
    fast = occlusion_map(resnet, image, window=window, stride=stride, baseline=baseline, batch_size=7)
    assert np.abs(naive.grid).max() > 0.01  # the test has teeth
    np.testing.assert_allclose(fast.map, naive.map, atol=1e-5, rtol=0)
    np.testing.assert_allclose(fast.grid, naive.grid, atol=1e-5, rtol=0)
    assert fast.n_forward == naive.n_forward == fast.grid.size + 1


@pytest.mark.parametrize("limit", [0.0, 0.3, 1.0])  # all segments in full, some cropped, all cropped
@pytest.mark.parametrize("arch", ["resnet10t", "resnet26d"])  # basic + deep stem; bottleneck + avg-pool shortcut
@pytest.mark.slow
def test_every_split_of_the_network_is_exact(monkeypatch, image, arch, limit):
    model = sensitive(arch, image)
    naive = occlusion_map_naive(model, image, window=12, stride=5)
    monkeypatch.setattr(occlusion_engine, "CROP_AREA_LIMIT", limit)
    fast = occlusion_map(model, image, window=12, stride=5, batch_size=16)
    np.testing.assert_allclose(fast.map, naive.map, atol=1e-5, rtol=0)


def test_non_resnet_runs_in_full_and_is_exact(image):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 5, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 1),
    ).eval()
    naive = occlusion_map_naive(model, image, window=8, stride=4, baseline="mean")
    fast = occlusion_map(model, image, window=8, stride=4, baseline="mean", batch_size=5)
    np.testing.assert_allclose(fast.map, naive.map, atol=1e-5, rtol=0)


@pytest.mark.parametrize("target_class", [0, 1])
def test_matches_captum(resnet, image, target_class):
    window, stride, temperature, batch = 10, 4, 1.7, 16
    base = make_baseline(image, "blur")

    def probability(batch_x):
        p = torch.sigmoid(resnet(batch_x).reshape(-1) / temperature)
        return p if target_class == 1 else 1 - p

    reference = Occlusion(probability).attribute(
        image,
        sliding_window_shapes=(1, window, window),
        strides=(1, stride, stride),
        baselines=base,
        perturbations_per_eval=batch,
    )
    ours = occlusion_map(
        resnet,
        image,
        window=window,
        stride=stride,
        batch_size=batch,
        target_class=target_class,
        temperature=temperature,
    )
    np.testing.assert_allclose(ours.map, reference[0, 0].detach().numpy(), atol=1e-4, rtol=0)


def test_window_positions_follow_captum():
    assert list(window_positions(224, 32, 16)) == list(range(0, 193, 16))
    assert list(window_positions(224, 48, 24)) == list(range(0, 193, 24))  # last window cut to 32 px
    assert list(window_positions(48, 48, 10)) == [0]


def test_region_equals_full_run_inside_and_is_zero_outside(resnet, image):
    full = occlusion_map(resnet, image, window=8, stride=4)
    region = (10, 30, 5, 40)
    part = occlusion_map(resnet, image, window=8, stride=4, region=region)
    y0, y1, x0, x1 = region
    np.testing.assert_allclose(part.map[y0:y1, x0:x1], full.map[y0:y1, x0:x1], atol=1e-6, rtol=0)
    outside = np.ones(full.map.shape, bool)
    outside[y0:y1, x0:x1] = False
    assert not part.map[outside].any()
    assert part.n_forward < full.n_forward and part.region == region


def test_progress_reports_every_batch(resnet, image):
    calls = []
    result = occlusion_map(
        resnet,
        image,
        window=12,
        stride=6,
        batch_size=10,
        progress=lambda done, total: calls.append((done, total)),
    )
    total = result.grid.size
    assert calls[-1] == (total, total)
    assert [done for done, _ in calls] == sorted({min(total, 10 * (i + 1)) for i in range(len(calls))})


def test_baselines():
    x = torch.randn(1, 1, 32, 32)
    assert not make_baseline(x, "zero").any()
    assert torch.allclose(make_baseline(x, "mean"), x.mean().expand_as(x))
    blurred = make_baseline(x, "blur")
    assert blurred.shape == x.shape and blurred.std() < 0.2 * x.std()  # local structure removed
    assert abs(float(blurred.mean() - x.mean())) < 0.05  # global exposure kept
    with pytest.raises(OcclusionError, match="baseline"):
        make_baseline(x, "black")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window": 0},
        {"window": SIZE + 1},
        {"stride": 13, "window": 12},
        {"region": (20, 10, 0, 5)},
        {"region": (0, 60, 0, 5)},
        {"precision": "fp16"},
    ],
)
def test_invalid_settings_raise(resnet, image, kwargs):
    with pytest.raises(OcclusionError):
        occlusion_map(resnet, image, **kwargs)


def test_bf16_map_runs_under_autocast_and_keeps_the_ranking(resnet, image):
    full = occlusion_map(resnet, image, window=12, stride=6)
    half = occlusion_map(resnet, image, window=12, stride=6, precision="bf16")
    assert not np.array_equal(full.grid, half.grid)  # bfloat16 really ran
    np.testing.assert_allclose(half.grid, full.grid, atol=0.05)
    assert rank_correlation(full.grid, half.grid) > 0.95


def test_works_inside_inference_mode(resnet, image):
    expected = occlusion_map(resnet, image, window=12, stride=6).map
    with torch.inference_mode():
        inside = occlusion_map(resnet, image.clone(), window=12, stride=6).map
    np.testing.assert_array_equal(inside, expected)


class PatchNet(nn.Module):
    """A toy classifier whose logit is the mean brightness of a fixed box (plus a CAM target layer)."""

    def __init__(self, box: tuple[int, int, int, int]):
        super().__init__()
        self.box = box
        conv = nn.Conv2d(1, 2, 4, stride=4)
        with torch.no_grad():
            conv.weight.fill_(1 / 16)
            conv.bias.zero_()
        self.layer4 = nn.Sequential(conv, nn.ReLU())  # 4x4 cells

    def forward(self, x):
        y0, y1, x0, x1 = (v // 4 for v in self.box)
        return self.layer4(x)[:, :, y0:y1, x0:x1].mean(dim=(1, 2, 3))[:, None] - 1.0


def toy_case():
    box = (8, 24, 32, 48)  # rows 8-24, cols 32-48 of a 64-px input
    x = torch.zeros(1, 1, 64, 64)
    x[..., 8:24, 32:48] = 3.0  # the evidence sits in the box
    return PatchNet(box).eval(), x, box


def test_toy_model_occlusion_lights_the_known_region():
    model, x, (y0, y1, x0, x1) = toy_case()
    heat = occlusion_map(model, x, window=8, stride=4, baseline="zero").map
    assert heat[y0:y1, x0:x1].min() > 0.05
    peak = np.unravel_index(np.argmax(heat), heat.shape)
    assert y0 <= peak[0] < y1 and x0 <= peak[1] < x1
    outside = heat.copy()
    outside[y0 - 8 : y1 + 8, x0 - 8 : x1 + 8] = 0  # windows overlapping the box light its rim
    assert np.abs(outside).max() < 1e-6


def test_weight_changes_are_picked_up(image):
    model = sensitive("resnet10t", image)
    before = occlusion_map(model, image, window=12, stride=6)
    with torch.no_grad():
        model.layer1[0].conv1.weight.mul_(-1.0)  # in place: same tensor, new version
    after = occlusion_map(model, image, window=12, stride=6)
    naive = occlusion_map_naive(model, image, window=12, stride=6)
    np.testing.assert_allclose(after.map, naive.map, atol=1e-5, rtol=0)
    assert np.abs(after.map - before.map).max() > 1e-3


def test_model_parameters_untouched(resnet, image):
    state = {k: v.clone() for k, v in resnet.state_dict().items()}
    occlusion_map(resnet, image, window=12, stride=6)
    assert all(torch.equal(state[k], v) for k, v in resnet.state_dict().items())
