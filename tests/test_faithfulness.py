"""Deletion/insertion on a toy model with a known answer, lung figures, and the CLI end to end."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import make_tiny_checkpoint, make_tiny_dataset

from xray_xai.evaluation import faithfulness
from xray_xai.evaluation.faithfulness import (
    RANDOM_GRID,
    lung_figures,
    perturbation_curve,
    random_maps,
    rank_pixels,
    step_counts,
)
from xray_xai.models.lungs import LungMask

SIZE, STEP = 16, 16
PATCH = (slice(4, 8), slice(4, 8))  # 16 pixels: exactly one step


def patch_score(batch: torch.Tensor) -> np.ndarray:
    """A 'model' whose score is the mean intensity of a known patch (in [0, 1])."""
    return batch[:, 0, PATCH[0], PATCH[1]].mean(dim=(1, 2)).numpy()


def toy_image() -> torch.Tensor:
    x = torch.full((1, 1, SIZE, SIZE), 0.5)
    x[0, 0, PATCH[0], PATCH[1]] = 1.0
    return x


def toy_maps() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    good = rng.random((SIZE, SIZE)) * 0.5
    good[PATCH] = 1.0 + rng.random((4, 4))
    bad = rng.random((SIZE, SIZE)) * 0.5 + 1.0
    bad[PATCH] = rng.random((4, 4)) * 0.1
    return {"good": good, "random": rng.random((SIZE, SIZE)), "bad": bad}


def curves(saliency: np.ndarray):
    x, baseline = toy_image(), torch.zeros(1, 1, SIZE, SIZE)
    deletion = perturbation_curve(patch_score, x, baseline, saliency, step=STEP, batch_size=5)
    insertion = perturbation_curve(patch_score, baseline, x, saliency, step=STEP, batch_size=5)
    return deletion, insertion


def test_known_answer_for_the_map_that_finds_the_patch():
    deletion, insertion = curves(toy_maps()["good"])
    n_steps = SIZE * SIZE // STEP
    assert len(deletion.score) == n_steps + 1 and deletion.fraction[0] == 0 and deletion.fraction[-1] == 1
    np.testing.assert_allclose(deletion.score, [1.0] + [0.0] * n_steps)
    assert deletion.auc == pytest.approx(0.5 / n_steps)
    assert insertion.auc == pytest.approx(1 - 0.5 / n_steps)


def test_good_map_beats_random_which_beats_the_worst_map():
    result = {name: curves(saliency) for name, saliency in toy_maps().items()}
    deletion = {name: c[0].auc for name, c in result.items()}
    insertion = {name: c[1].auc for name, c in result.items()}
    assert deletion["good"] < deletion["random"] < deletion["bad"]
    assert insertion["good"] > insertion["random"] > insertion["bad"]
    assert deletion["bad"] == pytest.approx(1 - 0.5 / (SIZE * SIZE // STEP))


def test_random_references_are_seeded_noise_per_pixel_and_on_a_coarse_grid():
    maps = random_maps(56, seed=(0, 3))
    assert set(maps) == {"random", "random_smooth"}
    for saliency in maps.values():
        assert saliency.shape == (56, 56) and 0 <= saliency.min() and saliency.max() <= 1
    np.testing.assert_array_equal(maps["random_smooth"], random_maps(56, seed=(0, 3))["random_smooth"])
    assert not np.array_equal(maps["random_smooth"], random_maps(56, seed=(0, 4))["random_smooth"])

    def neighbour_correlation(saliency: np.ndarray) -> float:
        return float(np.corrcoef(saliency[:, :-1].ravel(), saliency[:, 1:].ravel())[0, 1])

    assert abs(neighbour_correlation(maps["random"])) < 0.1  # independent pixels
    assert neighbour_correlation(maps["random_smooth"]) > 0.95  # regions, like a CAM
    # A 7 x 7 grid upsampled: the values at the cells' centres all differ, neighbours within a cell barely.
    cell = 56 // RANDOM_GRID
    centres = maps["random_smooth"][cell // 2 :: cell, cell // 2 :: cell]
    assert centres.shape == (RANDOM_GRID, RANDOM_GRID) and len(np.unique(centres)) == RANDOM_GRID**2


def test_curve_end_points_are_the_start_and_finish_images():
    x, baseline = toy_image(), torch.zeros(1, 1, SIZE, SIZE)
    deletion = perturbation_curve(patch_score, x, baseline, toy_maps()["random"], step=7)
    assert deletion.score[0] == pytest.approx(1.0) and deletion.score[-1] == pytest.approx(0.0)
    assert list(deletion.fraction * SIZE * SIZE) == list(step_counts(SIZE * SIZE, 7))
    with pytest.raises(ValueError, match="does not match"):
        perturbation_curve(patch_score, x, baseline, np.zeros((8, 8)))


def test_ties_are_broken_by_a_seeded_shuffle_not_raster_order():
    flat = np.zeros((SIZE, SIZE))
    ranks = rank_pixels(flat, seed=1)
    assert sorted(ranks) == list(range(SIZE * SIZE))
    assert not np.array_equal(ranks, np.arange(SIZE * SIZE))
    assert np.array_equal(ranks, rank_pixels(flat, seed=1))
    saliency = np.arange(SIZE * SIZE, dtype=float).reshape(SIZE, SIZE)
    assert rank_pixels(saliency)[-1] == 0  # the largest value comes first


def test_lung_figures():
    lungs = np.zeros((SIZE, SIZE), dtype=bool)
    lungs[2:14, 2:7] = lungs[2:14, 9:14] = True
    inside = np.where(lungs, 1.0, 0.0)
    assert lung_figures(inside, lungs) == (pytest.approx(1.0), True)
    outside_map = np.where(lungs, 0.0, 1.0)
    share, peak = lung_figures(outside_map, lungs)
    assert share == pytest.approx(0.0) and peak is False
    half = np.where(lungs, 1.0, 0.0) + np.where(lungs, 0.0, lungs.sum() / (~lungs).sum())
    assert lung_figures(half, lungs)[0] == pytest.approx(0.5)
    assert lung_figures(np.zeros((SIZE, SIZE)), lungs) == (None, None)
    negative = -np.ones((SIZE, SIZE))
    negative[3, 3] = -0.5
    assert lung_figures(negative, lungs) == (None, True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("faithfulness")
    checkpoint = make_tiny_checkpoint(root / "checkpoint")
    data = make_tiny_dataset(root / "data", per_class=3, masks=root / "masks")
    (root / "masks" / "PNEUMONIA" / "person102_bacteria_2.png").unlink()  # one image without a mask
    return root, checkpoint, data


def run(root, checkpoint, data, out, *extra):
    argv = ["--data", str(data), "--masks", str(root / "masks"), "--out", str(out), "--checkpoint", str(checkpoint),
            "--window", "8", "--stride", "4", "--step", "32", "--threads", "1", *extra]  # fmt: skip
    return faithfulness.run(argv)


@pytest.mark.slow
def test_cli_writes_every_figure(tiny):
    root, checkpoint, data = tiny
    result = run(root, checkpoint, data, root / "out")
    saved = json.loads((root / "out" / "faithfulness.json").read_text())
    assert saved["n"] == result["n"] == 3 and saved["n_with_mask"] == 2
    assert 0.1 < saved["lung_area_fraction"] < 0.6
    assert set(saved["methods"]) == {"gradcam", "occlusion", "random", "random_smooth"}
    for name, method in saved["methods"].items():
        for key in ("deletion_auc", "insertion_auc"):
            assert 0 <= method[key] <= 1, (name, key)
        for key in ("inside_lung_fraction", "peak_in_lung_rate", "outside_lung_share_p95"):
            assert method[key] is None or 0 <= method[key] <= 1, (name, key)
        assert len(method["per_image"]) == 3
        assert sum(row["inside_lung_fraction"] is None for row in method["per_image"]) >= 1  # the image without a mask
    for name in ("gradcam", "occlusion"):  # the sanity check ran for every real map, not the random one
        correlation = saved["methods"][name]["randomization_rank_correlation"]
        assert isinstance(correlation, float) and -1 <= correlation <= 1, name
        assert all(-1 <= row["randomization_rank_correlation"] <= 1 for row in saved["methods"][name]["per_image"])
    for reference in ("random", "random_smooth"):
        assert "randomization_rank_correlation" not in saved["methods"][reference]
        for name in ("gradcam", "occlusion"):  # paired wins over each reference
            wins = saved["methods"][name][f"vs_{reference}"]
            assert set(wins) == {"deletion_lower_rate", "insertion_higher_rate"}
            assert all(0 <= rate <= 1 for rate in wins.values())
    random = saved["methods"]["random"]
    assert random["inside_lung_fraction"] == pytest.approx(saved["lung_area_fraction"], abs=0.08)  # chance level
    assert len(saved["mean_curves"]["fraction"]) == len(saved["mean_curves"]["gradcam"]["deletion"]) == 32 + 1
    assert all(k.startswith("PNEUMONIA/") for k in saved["probabilities"])
    assert set(saved["probability"]) == {"clean", "deleted", "blurred"} and all(
        0 <= v <= 1 for v in saved["probability"].values()
    )
    with Image.open(root / "out" / "faithfulness_curves.png") as plot:
        assert (
            plot.size == (1200, 504) and len(plot.getcolors(1 << 16) or range(1 << 16)) > 50
        )  # two panels at 120 dpi, drawn


@pytest.mark.slow
def test_cli_limit_classes_and_validation_split(tiny, tmp_path):
    root, checkpoint, data = tiny
    assert run(root, checkpoint, data, tmp_path / "a", "--classes", "NORMAL", "PNEUMONIA", "--limit", "2")["n"] == 2
    (checkpoint.parent / "classifier_val_patients.json").write_text(json.dumps({"patients": ["IM-1001", "person100"]}))
    result = run(root, checkpoint, data, tmp_path / "b", "--classes", "NORMAL", "PNEUMONIA", "--split", "val")
    assert sorted(result["probabilities"]) == ["NORMAL/IM-1001-0001.png", "PNEUMONIA/person100_bacteria_0.png"]
    assert result["methods"]["gradcam"]["per_image"][0]["file"] == "NORMAL/IM-1001-0001.png"


class BoxLungs:
    """A segmenter that finds lungs in rows 8-16, columns 4-20 of every 32-px film."""

    def __init__(self, ok: bool) -> None:
        self.ok = ok
        self.card = SimpleNamespace(sha256="f" * 64)

    def segment(self, pixels: np.ndarray) -> LungMask:
        mask = np.zeros((32, 32), dtype=bool)
        mask[8:16, 4:20] = True
        return LungMask(mask, mask.astype(np.float32), self.ok)


@pytest.mark.parametrize("ok", [True, False])
@pytest.mark.slow
def test_cli_lung_focus_occludes_only_the_box_the_app_occludes(tiny, tmp_path, monkeypatch, ok):
    root, checkpoint, data = tiny
    monkeypatch.setattr(faithfulness.LungSegmenter, "load", classmethod(lambda cls, path: BoxLungs(ok)))
    focused = run(root, checkpoint, data, tmp_path / "focus", "--lung-focus")
    assert (
        focused["settings"]["occlusion"]["region"] == "the app's lung box"
        and focused["settings"]["lung_segmenter_sha256"] == "f" * 64
    )
    # the app's margin of 16 px at 224 px is 2 px at 32 px; a failed mask leaves the whole film
    assert set(map(lambda r: None if r is None else tuple(r), focused["occlusion_regions"].values())) == (
        {(6, 18, 2, 22)} if ok else {None}
    )
    whole = run(root, checkpoint, data, tmp_path / "whole")
    assert (
        set(whole["occlusion_regions"].values()) == {None} and whole["settings"]["occlusion"]["region"] == "whole image"
    )

    def occlusion(result: dict) -> list[float]:
        return [row["deletion_auc"] for row in result["methods"]["occlusion"]["per_image"]]

    assert (occlusion(focused) != occlusion(whole)) == ok  # the restricted map ranks pixels differently


@pytest.mark.slow
def test_cli_scores_the_chosen_maps_only(tiny, tmp_path, capsys):
    root, checkpoint, data = tiny
    default = run(root, checkpoint, data, tmp_path / "default")
    chosen = run(root, checkpoint, data, tmp_path / "chosen", "--maps", "hirescam", "gradcam", "layercam", "gradcam")
    assert list(chosen["methods"]) == ["hirescam", "gradcam", "layercam", "random", "random_smooth"]
    assert chosen["settings"]["maps"] == list(chosen["methods"])
    assert (
        chosen["methods"]["gradcam"]["per_image"] == default["methods"]["gradcam"]["per_image"]
    )  # same map, same figures
    for reference in ("random", "random_smooth"):
        assert chosen["methods"][reference]["per_image"] == default["methods"][reference]["per_image"]
    assert chosen["settings"]["occlusion"] is None
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:  # nothing for --lung-focus to restrict
        run(root, checkpoint, data, tmp_path / "nothing", "--maps", "gradcam", "--lung-focus")
    assert refused.value.code == 2 and "--lung-focus restricts the occlusion map" in capsys.readouterr().err
