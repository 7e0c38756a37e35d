"""Occlusion of a whole ensemble with lung-box members: each occluded copy segmented and cropped as
the framer does (moved boxes, unchanged crops skipped, incremental crops), in torch and served."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.test_occlusion import sensitive
from tests.tiny import synthetic_radiograph
from xray_xai.explain import _occlusion_engine as occlusion_engine
from xray_xai.explain.occlusion import make_baseline, occlusion_map, occlusion_map_naive, window_positions
from xray_xai.models.ensemble import Ensemble
from xray_xai.models.framing import LungBoxFramed, LungBoxFramer
from xray_xai.models.lungs import LungCard, LungSegmenter
from xray_xai.preprocess import normalize

SIZE = 48


def dark_is_lung() -> LungSegmenter:
    """A segmenter calling every pixel darker than mid-grey lung: the synthetic films' two dark
    ellipses give a plausible mask, and occluding their edges moves the lung box."""
    card = LungCard(input_size=SIZE, output_size=SIZE)
    net = nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        net.weight.fill_(-5.0)
        net.bias.fill_(0.0)
    return LungSegmenter(net, card)


@pytest.fixture(scope="module")
def film() -> torch.Tensor:
    pixels = synthetic_radiograph(np.random.default_rng(0), SIZE, SIZE, label=1).astype(np.float32) / 255
    return torch.from_numpy(normalize(pixels, 0.5, 0.25))[None, None].float()


@pytest.fixture(scope="module")
def ensemble(film) -> Ensemble:
    framer = LungBoxFramer(dark_is_lung(), mean=0.5, std=0.25, margin=4)
    nets = [sensitive("resnet10t", film, seed) for seed in range(3)]
    return Ensemble([nets[0], LungBoxFramed(nets[1], framer), LungBoxFramed(nets[2], framer)]).eval()


def test_the_test_has_teeth(ensemble, film):
    """The clean lung box is a real crop, and some occluded copies move it while others keep it."""
    engine = occlusion_engine.engines(ensemble, None, True)[-1]
    clean_raw = engine._raw_masks(film)[0]
    clean_box = engine._box(clean_raw, (SIZE, SIZE))
    assert clean_box != (0, SIZE, 0, SIZE)
    rows = torch.from_numpy(window_positions(SIZE, 12, 6))
    tops, lefts = rows.repeat_interleave(len(rows)), rows.repeat(len(rows))
    copies = occlusion_engine.occluded_copies(film, make_baseline(film), tops, lefts, 12)
    boxes = engine._boxes(engine._raw_masks(copies), clean_raw, clean_box, (SIZE, SIZE))
    assert 0 < sum(box != clean_box for box in boxes) < len(boxes)


def test_crop_matrices_equal_the_framer_resize(film):
    framer = LungBoxFramer(dark_is_lung(), mean=0.5, std=0.25)
    engine = occlusion_engine.FramedEngine([], [], framer.segmenter, 0.5, 0.25, 4)
    box = (5, 40, 3, 44)
    expected = torch.nn.functional.interpolate(
        film[:, :, 5:40, 3:44], size=(SIZE, SIZE), mode="bicubic", align_corners=False, antialias=True
    ).clamp(-2, 2)
    np.testing.assert_allclose(engine._crops(film, box).numpy(), expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("window,stride", [(12, 6), (10, 7)])
@pytest.mark.slow
def test_ensemble_map_equals_the_naive_loop(ensemble, film, window, stride):
    naive = occlusion_map_naive(ensemble, film, window=window, stride=stride)
    fast = occlusion_map(ensemble, film, window=window, stride=stride, batch_size=9)
    assert np.abs(naive.grid).max() > 0.01
    np.testing.assert_allclose(fast.grid, naive.grid, atol=1e-5, rtol=0)
    np.testing.assert_allclose(fast.map, naive.map, atol=1e-5, rtol=0)
    assert fast.probability == pytest.approx(naive.probability, abs=1e-6)


@pytest.mark.slow
def test_served_networks_give_the_same_map(ensemble, film, tmp_path):
    runtime = pytest.importorskip("xray_xai.models.runtime")
    pytest.importorskip("openvino")
    served = runtime.accelerate(ensemble, SIZE, "f32", cache=tmp_path)
    naive = occlusion_map_naive(ensemble, film, window=12, stride=6)
    fast = occlusion_map(ensemble, film, window=12, stride=6, served=served, batch_size=16)
    np.testing.assert_allclose(fast.grid, naive.grid, atol=1e-4, rtol=0)


def test_without_reframing_only_the_windows_that_move_the_box_differ(ensemble, film):
    """reframe=False keeps the clean film's lung box: the map equals the exact one at every window
    whose copy keeps the box, and differs at some window whose copy moves it."""
    window, stride = 12, 6
    exact = occlusion_map(ensemble, film, window=window, stride=stride, batch_size=9)
    fixed = occlusion_map(ensemble, film, window=window, stride=stride, batch_size=9, reframe=False)
    engine = occlusion_engine.engines(ensemble, None, True)[-1]
    clean_raw = engine._raw_masks(film)[0]
    clean_box = engine._box(clean_raw, (SIZE, SIZE))
    starts = torch.from_numpy(window_positions(SIZE, window, stride))
    tops, lefts = starts.repeat_interleave(len(starts)), starts.repeat(len(starts))
    copies = occlusion_engine.occluded_copies(film, make_baseline(film), tops, lefts, window)
    moved = np.array(
        [box != clean_box for box in engine._boxes(engine._raw_masks(copies), clean_raw, clean_box, (SIZE, SIZE))]
    )
    moved = moved.reshape(exact.grid.shape)
    np.testing.assert_allclose(fixed.grid[~moved], exact.grid[~moved], atol=1e-5, rtol=0)
    assert np.abs(fixed.grid[moved] - exact.grid[moved]).max() > 1e-4
    assert fixed.probability == pytest.approx(exact.probability, abs=1e-6)
