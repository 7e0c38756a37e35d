"""The deep ensemble: one timm-like model, its uncertainty, its bands, its maps and its CLI."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_grad_cam.utils.image import scale_cam_image
from tiny import DEFAULT_POINTS, TINY_ARCH, make_tiny_dataset, smooth_image_like, train_tiny_members

from xray_xai.checkpoint import CheckpointError, ModelCard, save_checkpoint
from xray_xai.explain.cam import compute_cam
from xray_xai.explain.occlusion import occlusion_map, occlusion_map_naive
from xray_xai.models.classifier import Classifier, lower_band, uncertainty
from xray_xai.models.ensemble import Ensemble, members
from xray_xai.models.factory import create_model, load_checkpoint
from xray_xai.pipeline import Options, Pipeline
from xray_xai.report import band_reason_text, maps_source_text
from xray_xai.results import BandReason, MapsSource
from xray_xai.training.ensemble import closest_member, explainer_section, member_arguments
from xray_xai.training.ensemble import main as ensemble_main

SIZE = 32


def tiny_ensemble(n: int = 2) -> Ensemble:
    nets = []
    for seed in range(n):
        torch.manual_seed(seed)
        nets.append(create_model(TINY_ARCH))
    with torch.no_grad():  # distinct, non-zero heads so that members disagree
        for k, net in enumerate(nets):
            net.get_classifier().bias.fill_(0.5 * k - 0.3)
    return Ensemble(nets).eval()


def batch(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def test_ensemble_is_the_mean_logit_and_its_head_matches_the_members():
    model, x = tiny_ensemble(), batch()
    with torch.inference_mode():
        each = torch.cat([m(x) for m in model.members], dim=1)
        assert torch.allclose(model(x)[:, 0], each.mean(dim=1), atol=1e-6)
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        assert pooled.shape == (3, 2 * model.members[0].num_features)
        assert torch.allclose(model.get_classifier()(pooled)[:, 0], each.mean(dim=1), atol=1e-5)
        assert torch.allclose(model.member_logits_from_features(pooled), each, atol=1e-5)
    assert members(model) == list(model.members) and members(model.members[0]) == [model.members[0]]
    with pytest.raises(ValueError):
        Ensemble([])


def ensemble_card(**uncertainty) -> ModelCard:
    return ModelCard(
        arch=TINY_ARCH,
        input_size=SIZE,
        mean=0.5,
        std=0.25,
        temperature=1.7,
        operating_points=DEFAULT_POINTS,
        members=2,
        uncertainty=uncertainty,
    )


def test_checkpoint_round_trip_rebuilds_the_ensemble(tmp_path):
    model = tiny_ensemble()
    save_checkpoint(model, ensemble_card(threshold=0.05), tmp_path / "classifier.json", dtype=torch.float32)
    loaded, card, _ = load_checkpoint(tmp_path / "classifier.json")
    assert isinstance(loaded, Ensemble) and card.members == 2 and card.uncertainty == {"threshold": 0.05}
    with torch.inference_mode():
        assert torch.allclose(loaded(batch()), model(batch()), atol=1e-6)


def test_members_with_their_own_timm_arguments_round_trip(tmp_path):
    torch.manual_seed(0)
    model = Ensemble([create_model(TINY_ARCH, output_stride=16), create_model(TINY_ARCH)]).eval()
    card = ensemble_card()
    card.member_kwargs = [{"output_stride": 16}, {}]
    save_checkpoint(model, card, tmp_path / "classifier.json", dtype=torch.float32)
    loaded, _, _ = load_checkpoint(tmp_path / "classifier.json")
    assert [m.feature_info[-1]["reduction"] for m in loaded.members] == [16, 32]
    with torch.inference_mode():
        assert torch.allclose(loaded(batch()), model(batch()), atol=1e-6)
    card.member_kwargs = [{}]  # one set of arguments for two members
    save_checkpoint(model, card, tmp_path / "classifier.json", dtype=torch.float32)
    with pytest.raises(CheckpointError, match="2"):
        load_checkpoint(tmp_path / "classifier.json")


def test_member_arguments_are_shared_or_listed_per_member():
    plain, fine = ensemble_card(), ensemble_card()
    fine.model_kwargs = {"output_stride": 16}
    assert member_arguments([plain, plain]) == {"model_kwargs": {}}
    assert member_arguments([fine, fine]) == {"model_kwargs": {"output_stride": 16}}
    assert member_arguments([fine, plain]) == {"member_kwargs": [{"output_stride": 16}, {}]}


def test_scores_give_calibrated_member_probabilities_from_one_pass():
    model = tiny_ensemble()
    classifier = Classifier(model, ensemble_card())
    x = batch()
    scores = classifier.score(x)
    with torch.inference_mode():
        each = torch.cat([m(x) for m in model.members], dim=1).double()
    expected_members = torch.sigmoid(each / 1.7).numpy()
    np.testing.assert_allclose(scores.member_probabilities, expected_members, atol=1e-5)
    np.testing.assert_allclose(scores.probabilities, torch.sigmoid(each.mean(dim=1) / 1.7).numpy(), atol=1e-5)
    assert scores.distance is None and scores.features.shape[0] == 3
    single = Classifier(model.members[0], ensemble_card()).score(x)
    assert single.member_probabilities.shape == (3, 1)
    np.testing.assert_allclose(single.member_probabilities[:, 0], expected_members[:, 0], atol=1e-5)


def test_uncertainty_is_the_members_standard_deviation():
    assert uncertainty([0.2, 0.6]) == pytest.approx(0.2)
    assert uncertainty([0.7]) is None and uncertainty([]) is None
    assert [lower_band(b) for b in ("High", "Moderate", "Low")] == ["Moderate", "Low", "Low"]


def test_disagreement_and_unusual_input_lower_the_band_with_reasons():
    classifier = Classifier(None, ensemble_card(threshold=0.05, quantile=0.95))
    agreed = classifier.decide(0.97, "balanced", [0.96, 0.98])
    assert (agreed.band, agreed.band_reasons) == ("High", ()) and agreed.uncertainty == pytest.approx(0.01)
    assert agreed.member_probabilities == (0.96, 0.98)
    split = classifier.decide(0.97, "balanced", [0.88, 0.999])
    assert split.band == "Moderate" and split.label == "PNEUMONIA" and split.confidence == pytest.approx(0.97)
    assert split.band_reasons == (
        BandReason("members_disagree", "High", "Moderate", low=0.88, high=0.999, members=2, quantile=0.95),
    )
    worded = band_reason_text(split.band_reasons[0])
    assert "disagree" in worded and "88.0%" in worded and "High to Moderate" in worded
    assert classifier.decide(0.03, "balanced", [0.001, 0.2]).band == "Moderate"  # NORMAL answers too
    assert classifier.decide(0.7, "balanced", [0.5, 0.9]).band == "Low"  # Moderate -> Low
    unusual = classifier.decide(0.97, "balanced", [0.96, 0.98], unusual=True)
    assert unusual.band == "Low" and unusual.band_reasons[-1] == BandReason("unusual_input", "High", "Low")
    assert "unlike the training films" in band_reason_text(unusual.band_reasons[-1])
    no_limit = Classifier(None, ensemble_card()).decide(0.97, "balanced", [0.5, 0.999])
    assert no_limit.band == "High" and no_limit.uncertainty == pytest.approx(0.2495)
    single = classifier.decide(0.97, "balanced", [0.97])
    assert single.uncertainty is None and single.member_probabilities == () and single.band == "High"


def test_cam_of_an_ensemble_averages_the_members_normalised_maps():
    model = tiny_ensemble()
    with torch.no_grad():  # positive heads: both members show evidence for PNEUMONIA somewhere
        for member in model.members:
            member.get_classifier().weight.abs_()
    x = batch(1, seed=5).repeat(1, 1, 4, 4)  # 128 px: a 4 x 4 last stage
    ensemble_map = compute_cam(model, x, "gradcam", target_class=1)
    # The ensemble's logit is the members' mean, so each member's map (scaled to [0, 1]) is its own Grad-CAM.
    own = [compute_cam(m, x, "gradcam", target_class=1) for m in model.members]
    assert min(m.max() for m in own) > 0.99 and not np.allclose(own[0], own[1])
    np.testing.assert_allclose(ensemble_map, scale_cam_image(np.mean(own, axis=0)[None])[0], atol=1e-4)


def test_occlusion_of_an_ensemble_is_exact_and_explains_its_probability():
    model = tiny_ensemble()
    x = batch(1, seed=3)
    fast = occlusion_map(model, x, window=8, stride=4, temperature=1.7)
    naive = occlusion_map_naive(model, x, window=8, stride=4, temperature=1.7)
    np.testing.assert_allclose(fast.map, naive.map, atol=1e-5)
    with torch.inference_mode():
        assert fast.probability == pytest.approx(float(torch.sigmoid(model(x)[0, 0] / 1.7)), abs=1e-6)
    calls = []
    occlusion_map(model, x, window=8, stride=4, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1][0] == calls[-1][1] and all(total == calls[0][1] for _, total in calls)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


@pytest.mark.slow
def test_ensemble_cli_assembles_calibrates_and_fits_the_uncertainty_limit(tmp_path):
    torch.set_num_threads(1)
    make_tiny_dataset(tmp_path / "data" / "train", per_class=10)
    cards = train_tiny_members(tmp_path / "data", tmp_path, SIZE)
    ensemble_main(
        ["--data", str(tmp_path / "data"), "--members", *cards, "--out", str(tmp_path / "ensemble"), "--threads", "1"]
    )
    card = json.loads((tmp_path / "ensemble" / "classifier.json").read_text())
    assert card["members"] == 2 and card["temperature"] > 0
    assert set(card["operating_points"]) == {"balanced", "screening", "rule_in"}
    assert set(card["validation"]["perturbed"]) == {
        "clean",
        "blur_1px",
        "blur_2px",
        "noise_0.03",
        "gamma_0.7",
        "gamma_1.4",
    }
    assert card["uncertainty"]["threshold"] >= 0 and card["uncertainty"]["quantile"] == 0.95
    assert len(card["training"]["members"]) == 2 and card["ood"]["threshold"] > 0
    # calibrated on the float16 kernels it stores: the reloaded file gives the calibrated probabilities
    assert card["weights_dtype"].startswith("float16") and card["validation"]["stored_weights_max_abs_prob_diff"] == 0.0
    split = json.loads((tmp_path / "ensemble" / "classifier_val_patients.json").read_text())
    assert (
        split == json.loads((tmp_path / "member1" / "classifier_val_patients.json").read_text()) and split["seed"] == 0
    )
    member = json.loads((tmp_path / "member2" / "classifier.json").read_text())
    assert member["data"]["split"].endswith("seed=0")  # the split's seed, not the member's training seed 2
    assert card["data"]["split"] == "patient-level, class-stratified, val_fraction=0.15, seed=0"
    classifier = Classifier.load(tmp_path / "ensemble" / "classifier.json")
    assert isinstance(classifier.model, Ensemble)
    prediction = classifier.predict(smooth_image_like(50))
    assert prediction.uncertainty is not None and len(prediction.member_probabilities) == 2

    with pytest.raises(SystemExit, match="at least two"):
        ensemble_main(["--data", str(tmp_path / "data"), "--members", cards[0], "--out", str(tmp_path / "one")])
    other = tmp_path / "member2" / "classifier_val_patients.json"
    other.write_text(json.dumps({"patients": ["IM-1000"]}))
    with pytest.raises(SystemExit, match="different patients"):
        ensemble_main(["--data", str(tmp_path / "data"), "--members", *cards, "--out", str(tmp_path / "bad")])


def test_closest_member_is_the_one_nearest_the_ensembles_probabilities():
    logits = np.array([[2.0, 1.0, -3.0], [0.5, 0.2, -1.0], [-1.0, -0.5, 2.0]])  # member 1 sits at the mean
    assert closest_member(logits, temperature=1.0) == 1
    section = explainer_section("closest", logits, 1.0)
    assert section["members"] == [1] and 0 <= section["members_gap"]["mean"] <= section["members_gap"]["p95"]
    assert explainer_section("all", logits, 1.0) == {}


def test_maps_come_from_the_members_the_card_names(tmp_path):
    model = tiny_ensemble()
    card = ensemble_card()
    card.explanations = {"members": [1], "shortcut_threshold": {"gradcam": 0.5}}
    classifier = Classifier(model, card)
    assert classifier.explainer is model.members[1]
    assert classifier.maps_source == MapsSource((1,), 2)
    worded = maps_source_text(classifier.maps_source)
    assert (
        "CAM from network 2 of the ensemble's 2" in worded and "occlusion map explains the whole ensemble's" in worded
    )
    everything = Classifier(model, ensemble_card())
    assert everything.explainer is model and maps_source_text(everything.maps_source).startswith(
        "the CAM averaged over the ensemble's 2 networks"
    )
    assert Classifier(model.members[0], ensemble_card()).maps_source is None
    card.explanations = {"members": [2]}
    with pytest.raises(CheckpointError, match="members 0 to 1"):
        _ = Classifier(model, card).explainer

    # The pipeline draws the CAM from that member alone and occludes the whole ensemble, and the report says so.
    card.explanations, card.input_size = {"members": [1]}, 64  # room for the fast preset's 48-px window
    path = tmp_path / "classifier.json"
    save_checkpoint(model, card, path, dtype=torch.float32)
    pipeline = Pipeline(Classifier.load(path))
    image = (smooth_image_like(64) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    result = pipeline.analyze(buffer.getvalue(), Options(occlusion="fast", lung_focus=False))
    member = pipeline.classifier.explainer
    x, target = result.model_input, result.analysis.prediction.label == "PNEUMONIA"
    np.testing.assert_allclose(
        result.maps["gradcam"], compute_cam(member, x, "gradcam", target_class=int(target)), atol=1e-6
    )
    settings = dict(window=48, stride=24, target_class=int(target), temperature=card.temperature)
    whole = occlusion_map(pipeline.classifier.model, x, **settings).map
    assert not np.allclose(whole, occlusion_map(member, x, **settings).map)
    np.testing.assert_allclose(result.maps["occlusion"], np.clip(whole, 0, None) / max(whole.max(), 1e-12), atol=1e-5)
    assert "- Heatmaps: the CAM from network 2 of the ensemble's 2" in result.analysis.report
