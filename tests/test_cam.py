"""Grad-CAM through pytorch-grad-cam: shape/range, the right region, no leaked hooks, thread safety."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import timm
import torch
from test_occlusion import toy_case
from torch import nn

from xray_xai.explain import cam as cam_module
from xray_xai.explain.cam import CAM_METHODS, CamError, cam_class, compute_cam, find_target_layer
from xray_xai.models.factory import create_model


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("resnet10t").eval()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(1, 1, 48, 48)


def hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) + len(m._backward_pre_hooks)
        for m in model.modules()
    )


@pytest.mark.parametrize("method", sorted(CAM_METHODS))
@pytest.mark.parametrize("target_class", [0, 1])
def test_shape_and_range(model, image, method, target_class):
    heat = compute_cam(model, image, method=method, target_class=target_class)
    assert heat.shape == (48, 48) and heat.dtype == np.float32
    assert np.isfinite(heat).all() and heat.min() >= 0.0 and heat.max() <= 1.0 + 1e-6


def test_target_layer_is_last_block_of_last_stage(model):
    assert find_target_layer(model) is model.layer4[-1]
    deep = create_model("resnet26d")  # two blocks in layer4, so the last is not also the first
    assert len(deep.layer4) > 1 and find_target_layer(deep) is deep.layer4[-1]
    with pytest.raises(CamError, match="layer4"):
        find_target_layer(nn.Sequential(nn.Conv2d(1, 1, 3)))
    other = timm.create_model("mobilenetv3_small_050", pretrained=False, in_chans=1, num_classes=1)
    stage = other.get_submodule(other.feature_info[-1]["module"])  # found through timm's feature_info
    assert find_target_layer(other) is list(stage.children())[-1]


def test_unknown_method_and_class(model, image):
    with pytest.raises(CamError, match="gradcam"):
        compute_cam(model, image, method="magic")
    with pytest.raises(CamError, match="target_class"):
        compute_cam(model, image, target_class=2)


@pytest.mark.parametrize("method", ["gradcam", "hirescam"])
def test_toy_model_lights_the_known_region(method):
    net, x, (y0, y1, x0, x1) = toy_case()
    heat = compute_cam(net, x, method=method, target_class=1)
    inside = np.zeros(heat.shape, bool)
    inside[y0:y1, x0:x1] = True
    assert heat[inside].mean() > 0.6 and heat[~inside].mean() < 0.1
    peak = np.unravel_index(np.argmax(heat), heat.shape)
    assert inside[peak]


def test_no_evidence_gives_zeros_not_nan():
    net, x, _ = toy_case()
    heat = compute_cam(net, x, target_class=0)  # every gradient is negative: no NORMAL evidence
    assert np.isfinite(heat).all() and not heat.any()


@pytest.mark.slow
def test_no_hooks_left_after_100_calls(model, image):
    before = hook_count(model)
    for i in range(100):
        compute_cam(model, image, method=sorted(CAM_METHODS)[i % len(CAM_METHODS)])
    assert hook_count(model) == before == 0


def test_the_model_itself_never_carries_cam_hooks(model, image, monkeypatch):
    seen = []

    class Spy(cam_class("gradcam")):
        def forward(self, *args, **kwargs):
            seen.append(hook_count(model))  # other threads may be running this model now
            assert hook_count(self.model) > 0  # the hooks live on the private copy
            return super().forward(*args, **kwargs)

    monkeypatch.setattr(cam_module, "cam_class", lambda method: Spy)
    compute_cam(model, image)
    assert seen == [0]


def test_leaves_parameters_and_mode_as_they_were(model, image):
    params = list(model.parameters())
    params[0].requires_grad_(False)
    marker = torch.full_like(params[1], 7.0)
    params[1].grad = marker
    try:
        compute_cam(model, image)
        assert not params[0].requires_grad and all(p.requires_grad for p in params[1:])
        assert params[1].grad is marker and all(p.grad is None for p in params[2:])
    finally:
        params[0].requires_grad_(True)
        params[1].grad = None
    model.train()
    compute_cam(model, image)
    assert model.training
    model.eval()


def test_works_inside_inference_mode(model, image):
    expected = compute_cam(model, image)
    with torch.inference_mode():
        x = image.clone()  # an inference tensor
        inside = compute_cam(model, x)
    np.testing.assert_array_equal(inside, expected)


def test_concurrent_calls_give_the_serial_answers(model):
    torch.manual_seed(2)
    inputs = [torch.randn(1, 1, 48, 48) for _ in range(4)]
    expected = [compute_cam(model, x, method="hirescam") for x in inputs]
    results: dict[int, np.ndarray] = {}

    def work(i):
        with torch.inference_mode():
            results[i] = compute_cam(model, inputs[i], method="hirescam")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        np.testing.assert_array_equal(results[i], expected[i])
