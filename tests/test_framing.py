"""Lung-box framing: the crop, the in-graph wrapper, its checkpoint, the ensemble CLI and the crops CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import TINY_ARCH, make_tiny_dataset, smooth_image_like, train_tiny_members

from xray_xai.checkpoint import CheckpointError, ModelCard, save_checkpoint
from xray_xai.models.classifier import Classifier
from xray_xai.models.ensemble import Ensemble
from xray_xai.models.factory import create_model, load_checkpoint
from xray_xai.models.framing import (
    LungBoxFramed,
    LungBoxFramer,
    framing_box,
    is_framed,
    lung_box,
    member_views,
    unframed,
)
from xray_xai.models.lungs import LungCard, LungMask, LungSegmenter, build_model
from xray_xai.preprocess import normalize, to_model_size
from xray_xai.report import maps_source_text
from xray_xai.results import MapsSource
from xray_xai.training import lung_crops
from xray_xai.training.ensemble import main as ensemble_main

SIZE = 64


def box_mask(size: int, y0: int, y1: int, x0: int, x1: int, ok: bool = True) -> LungMask:
    mask = np.zeros((size, size), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return LungMask(mask, mask.astype(np.float32), ok)


class FixedLungs:
    """A segmenter that finds the same lungs in every film (rows 20-40, columns 10-50 of 112)."""

    def __init__(self, ok: bool = True) -> None:
        self.ok, self.calls = ok, 0

    def segment(self, pixels: np.ndarray) -> LungMask:
        self.calls += 1
        return box_mask(112, 20, 40, 10, 50, self.ok)


def test_framing_box_scales_the_mask_box_and_its_margin_to_the_image():
    mask = box_mask(112, 20, 40, 10, 50)
    assert framing_box(mask, (224, 224), margin=0) == (40, 80, 20, 100)
    assert framing_box(mask, (224, 224), margin=16) == (24, 96, 4, 116)  # 16 px at 224 = 8 px of the mask
    assert framing_box(mask, (448, 224), margin=0) == (80, 160, 20, 100)
    assert framing_box(replace(mask, ok=False), (224, 224)) == (0, 224, 0, 224)  # implausible mask: the whole film
    assert framing_box(None, (100, 80)) == (0, 100, 0, 80)


def crop_to_lungs(film: np.ndarray, lungs: FixedLungs, margin: int) -> np.ndarray:
    (y0, y1, x0, x1), _ = lung_box(film, lungs, margin)
    return film[y0:y1, x0:x1]


def test_lung_box_is_the_framing_box_of_the_segmented_lungs():
    film = np.random.default_rng(0).random((224, 224), dtype=np.float32)
    assert lung_box(film, FixedLungs(), margin=0) == ((40, 80, 20, 100), True)
    assert lung_box(film, FixedLungs(ok=False)) == ((0, 224, 0, 224), False)  # implausible mask: the whole film


def test_framed_network_sees_the_crop_the_training_copy_holds():
    torch.manual_seed(0)
    net = create_model(TINY_ARCH).eval()
    lungs = FixedLungs()
    framed = LungBoxFramed(net, LungBoxFramer(lungs, mean=0.5, std=0.25, margin=16)).eval()
    films = [smooth_image_like(SIZE), np.random.default_rng(1).random((SIZE, SIZE), dtype=np.float32) * 0.6 + 0.2]
    x = torch.from_numpy(np.stack([normalize(f, 0.5, 0.25) for f in films]))[:, None]
    # what xray_xai.training.lung_crops stores, read back and prepared as training does
    expected = torch.from_numpy(
        np.stack([normalize(to_model_size(crop_to_lungs(f, lungs, 16), SIZE), 0.5, 0.25) for f in films])
    )[:, None]
    framed_input = framed.frame(x)
    assert framed_input.shape == x.shape and lungs.calls >= 2 * 2
    assert (framed_input - expected).abs().max() < 1e-3  # torch's antialiased bicubic = PIL's bicubic
    with torch.inference_mode():
        np.testing.assert_allclose(framed(x).numpy(), net(framed_input).numpy(), atol=1e-5)
        np.testing.assert_allclose(
            framed.forward_head(framed.forward_features(x)).numpy(), framed(x).numpy(), atol=1e-5
        )
        assert not np.allclose(framed(x).numpy(), net(x).numpy(), atol=1e-4)  # the crop changes what it sees
    assert framed.get_classifier() is net.get_classifier()
    assert is_framed(Ensemble([create_model(TINY_ARCH), framed])) and not is_framed(net)
    assert unframed(framed) is net


def test_lung_box_members_share_one_segmentation_per_batch():
    torch.manual_seed(0)
    nets = [create_model(TINY_ARCH).eval() for _ in range(3)]
    shared = FixedLungs()
    framer = LungBoxFramer(shared, mean=0.5, std=0.25)
    ensemble = Ensemble([nets[0], LungBoxFramed(nets[1], framer), LungBoxFramed(nets[2], framer)]).eval()
    apart = Ensemble(
        [nets[0], *(LungBoxFramed(net, LungBoxFramer(FixedLungs(), mean=0.5, std=0.25)) for net in nets[1:])]
    ).eval()
    x = torch.randn(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(ensemble.member_logits(x), apart.member_logits(x))
        assert shared.calls == 2  # two films, segmented once for both lung-box members
        ensemble(x.clone())
        assert shared.calls == 2  # the same films in another tensor: the same crops
        x.mul_(0.5)  # the same tensor, changed in place: segmented again
        ensemble(x)
        assert shared.calls == 4
    x = x.clone()
    grad = x.clone().requires_grad_()
    ensemble(grad).sum().backward()
    ensemble(grad).sum().backward()  # while gradients are recorded, each member crops in its own graph
    assert shared.calls == 4 + 2 * 2 * 2 and grad.grad is not None


def test_member_views_name_what_each_network_sees_only_when_they_differ():
    assert member_views({"lung_box_members": [1]}, 2) == ("whole film", "lung box")
    assert member_views({}, 2) == () and member_views({"lung_box_members": [0, 1]}, 2) == ()


def save_segmenter(folder) -> LungCard:
    torch.manual_seed(0)
    card = LungCard(decoder_channels=(16, 8, 8, 8), input_size=32)
    save_checkpoint(build_model(card), card, folder / "lungs.json")
    return LungCard.from_json(folder / "lungs.json")


@pytest.mark.slow
def test_checkpoint_with_a_lung_box_member_round_trips_and_checks_its_segmenter(tmp_path):
    lung_card = save_segmenter(tmp_path)
    torch.manual_seed(0)
    model = Ensemble([create_model(TINY_ARCH), create_model(TINY_ARCH)]).eval()
    framing = {"lung_box_members": [1], "margin": 16, "segmenter": "lungs.json", "segmenter_sha256": lung_card.sha256}
    card = ModelCard(arch=TINY_ARCH, input_size=SIZE, mean=0.5, std=0.25, members=2, framing=framing)
    save_checkpoint(model, card, tmp_path / "classifier.json", dtype=torch.float32)
    loaded, _, _ = load_checkpoint(tmp_path / "classifier.json")
    assert isinstance(loaded.members[1], LungBoxFramed) and not isinstance(loaded.members[0], LungBoxFramed)
    for name, value in model.state_dict().items():  # the weight file stores plain networks
        assert torch.equal(unframed(loaded).state_dict()[name], value), name
    shared = LungSegmenter.load(tmp_path / "lungs.json")  # the app's own segmenter is shared, not loaded again
    assert load_checkpoint(tmp_path / "classifier.json", segmenter=shared)[0].members[1].segmenter is shared
    other = LungSegmenter(
        build_model(LungCard(decoder_channels=(16, 8, 8, 8), input_size=32)), replace(shared.card, sha256="0" * 64)
    )
    assert (
        load_checkpoint(tmp_path / "classifier.json", segmenter=other)[0].members[1].segmenter.card.sha256
        == lung_card.sha256
    )
    save_checkpoint(
        unframed(loaded),
        ModelCard.from_json(tmp_path / "classifier.json"),
        tmp_path / "again.json",
        dtype=torch.float32,
    )
    assert (
        ModelCard.from_json(tmp_path / "again.json").sha256 == ModelCard.from_json(tmp_path / "classifier.json").sha256
    )

    # maps may not come from the lung-box member, nor be averaged over it
    card.explanations = {"members": [1]}
    with pytest.raises(CheckpointError, match="whole-film"):
        Classifier(loaded, card)
    with pytest.raises(CheckpointError, match="whole-film"):
        Classifier(loaded, replace(card, explanations={}))
    explained = Classifier(loaded, replace(card, explanations={"members": [0]}))
    assert explained.explainer is loaded.members[0]
    assert explained.maps_source == MapsSource((0,), 2, lung_box_members=(1,))
    worded = maps_source_text(explained.maps_source)
    assert "network 1 of the ensemble's 2" in worded and "network 2 sees only the box around the lungs" in worded

    for bad, message in (
        ({**framing, "segmenter_sha256": "0" * 64}, "not the one"),
        ({**framing, "segmenter": "gone.json"}, "missing"),
        ({**framing, "lung_box_members": [2]}, "members 0 to 1"),
    ):
        save_checkpoint(model, replace(card, framing=bad, explanations={}), tmp_path / "bad.json", dtype=torch.float32)
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(tmp_path / "bad.json")


@pytest.mark.slow
def test_ensemble_cli_frames_the_lung_box_members_and_explains_with_a_whole_film_member(tmp_path):
    torch.set_num_threads(1)
    data = make_tiny_dataset(tmp_path / "data" / "train", per_class=10).parent
    save_segmenter(tmp_path)
    cards = train_tiny_members(data, tmp_path, 32)
    common = ["--data", str(data), "--members", *cards, "--segmenter", str(tmp_path / "lungs.json"), "--threads", "1"]
    ensemble_main([*common, "--lung-box", cards[0], "--out", str(tmp_path / "ensemble")])
    card = json.loads((tmp_path / "ensemble" / "classifier.json").read_text())
    assert card["framing"]["lung_box_members"] == [0] and card["framing"]["margin"] == 16
    assert card["explanations"]["members"] == [1]  # the whole-film member, however close the other is
    assert (tmp_path / "ensemble" / "lungs.json").is_file()
    classifier = Classifier.load(tmp_path / "ensemble" / "classifier.json")
    assert isinstance(classifier.model.members[0], LungBoxFramed)
    prediction = classifier.predict(smooth_image_like(50))
    assert 0 <= prediction.probability <= 1 and prediction.member_views == ("lung box", "whole film")

    with pytest.raises(SystemExit, match="whole films"):
        ensemble_main([*common, "--lung-box", *cards, "--out", str(tmp_path / "all_boxes")])
    with pytest.raises(SystemExit, match="not --members"):
        ensemble_main([*common, "--lung-box", str(tmp_path / "elsewhere.json"), "--out", str(tmp_path / "unknown")])
    with pytest.raises(SystemExit, match="explainer all"):
        ensemble_main([*common, "--lung-box", cards[0], "--explainer", "all", "--out", str(tmp_path / "averaged")])


def test_lung_crops_cli_keeps_layout_and_stems_and_cuts_each_film(tmp_path, monkeypatch):
    data = make_tiny_dataset(tmp_path / "data" / "train", per_class=3).parent
    monkeypatch.setattr(lung_crops.LungSegmenter, "load", classmethod(lambda cls, path: FixedLungs()))
    counts = lung_crops.main(
        ["--data", str(data), "--out", str(tmp_path / "crops"), "--splits", "train", "--margin", "0"]
    )
    assert counts == {"train": {"films": 6, "whole_film_fallbacks": 0}}
    for original in sorted((data / "train").glob("*/*")):
        copy = tmp_path / "crops" / "train" / original.parent.name / f"{original.stem}.png"
        with Image.open(original) as image:
            film = to_model_size(np.asarray(image.convert("L"), dtype=np.float32) / 255, 224)
        assert np.array_equal(np.asarray(Image.open(copy)), np.round(film[40:80, 20:100] * 255).astype(np.uint8))
    monkeypatch.setattr(lung_crops.LungSegmenter, "load", classmethod(lambda cls, path: FixedLungs(ok=False)))
    counts = lung_crops.main(["--data", str(data), "--out", str(tmp_path / "whole"), "--splits", "train"])
    assert counts["train"]["whole_film_fallbacks"] == 6


def test_lung_crops_cuts_each_reference_mask_to_its_films_box(tmp_path, monkeypatch):
    data = make_tiny_dataset(tmp_path / "data" / "train", per_class=2, masks=tmp_path / "masks" / "train").parent
    missing = next((tmp_path / "masks" / "train" / "NORMAL").iterdir())
    missing.unlink()  # a film without a reference mask gets no cut mask
    monkeypatch.setattr(lung_crops.LungSegmenter, "load", classmethod(lambda cls, path: FixedLungs()))
    args = ["--data", str(data), "--out", str(tmp_path / "crops"), "--splits", "train", "--margin", "0"]
    with pytest.raises(SystemExit):
        lung_crops.main([*args, "--lung-masks", str(tmp_path / "masks")])  # no --masks-out
    counts = lung_crops.main([*args, "--lung-masks", str(tmp_path / "masks"), "--masks-out", str(tmp_path / "cut")])
    assert counts == {"train": {"films": 4, "whole_film_fallbacks": 0, "masks": 3}}
    for film in sorted((tmp_path / "crops" / "train").glob("*/*.png")):
        cut = tmp_path / "cut" / "train" / film.parent.name / film.name
        reference = tmp_path / "masks" / "train" / film.parent.name / film.name
        assert cut.is_file() == reference.is_file()
        if cut.is_file():
            with Image.open(reference) as image:
                lungs = to_model_size(np.asarray(image.convert("L"), dtype=np.float32) / 255, 224) > 0.5
            cut_pixels = np.asarray(Image.open(cut))
            assert cut_pixels.shape == np.asarray(Image.open(film)).shape  # the film's crop, pixel for pixel
            assert np.array_equal(cut_pixels, lungs[40:80, 20:100].astype(np.uint8) * 255)
            assert 0 < cut_pixels.mean() < 255  # the box cuts through the lungs: both values occur
