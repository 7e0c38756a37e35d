"""Similar training films: the feature space, the index file, staleness, the pipeline, the report and the evaluation."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.tiny import make_tiny_checkpoint, make_tiny_dataset, synthetic_radiograph
from xray_xai.artifacts.similar_index import main as build_main
from xray_xai.evaluation.similar import chance_agreement, evaluate, label_agreement
from xray_xai.models.classifier import Classifier
from xray_xai.models.similar import FeatureSpace, K, SimilarIndex, load_matching, nearest
from xray_xai.pipeline import Pipeline
from xray_xai.report import build_report
from xray_xai.results import Analysis, OperatingPoint, Prediction, SimilarCase

POINT = OperatingPoint("balanced", 0.5, 0.9, 0.9)


def test_full_space_is_exact_cosine_of_standardised_features():
    rng = np.random.default_rng(0)
    features = rng.gamma(2.0, 1.0, size=(50, 8)) * np.arange(1, 9)  # unequal scales
    space = FeatureSpace.fit(features, dims=100)
    assert space.projection.shape == (8, 8) and space.explained_variance == pytest.approx(1.0)
    z = (features - features.mean(0)) / features.std(0)
    expected = (z[:5] @ z.T) / np.outer(np.linalg.norm(z[:5], axis=1), np.linalg.norm(z, axis=1))
    assert space.embed(features[:5]) @ space.embed(features).T == pytest.approx(expected, abs=1e-5)


def test_nearest_finds_itself_first_and_sorts():
    rng = np.random.default_rng(1)
    space = FeatureSpace.fit(rng.normal(size=(40, 16)), dims=6)
    index = space.embed(rng.normal(size=(40, 16)))
    rows, sims = nearest(index, index[[3, 17]], k=5)
    assert rows[:, 0].tolist() == [3, 17] and sims[:, 0] == pytest.approx(1.0, abs=1e-5)
    assert (np.diff(sims, axis=1) <= 0).all()
    brute = np.argsort(-(index[3] @ index.T))[:5]
    assert rows[0].tolist() == brute.tolist()
    assert nearest(index[:3], index[:1], k=10)[0].shape == (1, 3)


def test_feature_width_mismatch_is_refused():
    from xray_xai.models.similar import StaleIndexError

    space = FeatureSpace.fit(np.random.default_rng(0).normal(size=(10, 4)), dims=2)
    with pytest.raises(StaleIndexError):
        space.embed(np.zeros((1, 5)))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A tiny classifier, a tiny labelled folder, and its index built by the CLI (7 axes: all of 8 centred films)."""
    root = tmp_path_factory.mktemp("similar")
    checkpoint = make_tiny_checkpoint(root / "ckpt", arch="resnet18", size=64)
    data = make_tiny_dataset(root / "train", per_class=4)
    out = root / "index"
    assert (
        build_main(
            [
                "--data",
                str(data),
                "--out",
                str(out),
                "--checkpoint",
                str(checkpoint),
                "--dims",
                "7",
                "--thumbnail-size",
                "32",
                "--cache",
                str(root / "cache"),
            ]
        )
        == 0
    )
    return checkpoint, data, out / "similar.json"


def test_index_file_holds_films_labels_thumbnails_and_the_classifier_hash(built):
    checkpoint, data, card_path = built
    index = SimilarIndex.load(card_path)
    folder_of = {p.name: p.parent.name for p in data.glob("*/*.png")}
    assert sorted(index.card.ids) == sorted(folder_of) and len(index) == 8
    assert [index.card.classes[label] for label in index.labels] == [folder_of[i] for i in index.card.ids]
    assert index.card.classifier_sha256 == Classifier.load(checkpoint).card.sha256
    assert index.embeddings.shape == (8, 7) and index.card.dims == 7
    thumb = index.thumbnail(index.card.ids[0])
    assert thumb.dtype == np.uint8 and thumb.shape == (32, 32)
    raw = json.loads(card_path.read_text())
    assert raw["build"]["films"] == 8 and raw["build"]["per_class"] == {"NORMAL": 4, "PNEUMONIA": 4}


def test_a_training_film_finds_itself(built):
    checkpoint, data, card_path = built
    pipeline = Pipeline.load(checkpoint, lung_checkpoint=None, similar_index=card_path)
    film = sorted((data / "PNEUMONIA").glob("*.png"))[1]
    result = pipeline.first_pass(film)
    similar = result.analysis.similar
    assert len(similar) == K and similar[0].id == film.name and similar[0].label == "PNEUMONIA"
    assert similar[0].similarity == pytest.approx(1.0, abs=1e-2)
    assert [c.similarity for c in similar] == sorted((c.similarity for c in similar), reverse=True)
    assert len(result.thumbnails) == K and result.thumbnails[0].shape == (32, 32)
    payload = json.loads(json.dumps(result.to_json()))
    assert [set(c) for c in payload["similar"]] == [{"id", "label", "similarity"}] * K
    assert "SIMILAR CASES" in result.analysis.report


def test_similar_cases_reuse_the_prediction_forward_pass(built):
    checkpoint, data, card_path = built
    pipeline = Pipeline.load(checkpoint, lung_checkpoint=None, similar_index=card_path)
    model = pipeline.classifier.model
    calls = []
    original = model.forward_features
    model.forward_features = lambda x: calls.append(1) or original(x)
    try:
        analysis = pipeline.predict(next(data.glob("NORMAL/*.png"))).analysis
    finally:
        del model.forward_features
    assert len(analysis.similar) == K and len(calls) == 1


def test_stale_index_is_ignored_with_a_warning(built, tmp_path, caplog):
    checkpoint, data, card_path = built
    other = make_tiny_checkpoint(tmp_path / "other", arch="resnet18", size=64, seed=1)
    with caplog.at_level(logging.WARNING):
        pipeline = Pipeline.load(other, lung_checkpoint=None, similar_index=card_path)
    assert pipeline.similar is None and "built with classifier weights" in caplog.text
    result = pipeline.first_pass(next(data.glob("NORMAL/*.png")))
    assert result.analysis.similar == () and "SIMILAR CASES" not in result.analysis.report


def test_missing_index_is_silent_and_tampered_index_is_refused(built, tmp_path, caplog):
    checkpoint, _, card_path = built
    sha = Classifier.load(checkpoint).card.sha256
    with caplog.at_level(logging.WARNING):
        assert load_matching(tmp_path / "none.json", sha) is None
    assert caplog.text == ""
    copy = tmp_path / "copy"
    shutil.copytree(card_path.parent, copy)
    with open(copy / "similar.safetensors", "r+b") as handle:
        handle.seek(-1, 2)
        handle.write(b"\x00" if handle.read(1) != b"\x00" else b"\x01")
    with caplog.at_level(logging.WARNING):
        assert load_matching(copy / "similar.json", sha) is None
    assert "integrity" in caplog.text
    assert load_matching(card_path, sha).card == SimilarIndex.load(card_path).card


def test_thumbnail_size_is_capped(built, tmp_path, capsys):
    checkpoint, data, _ = built
    with pytest.raises(SystemExit) as refused:
        build_main(
            ["--data", str(data), "--out", str(tmp_path), "--checkpoint", str(checkpoint), "--thumbnail-size", "129"]
        )
    assert refused.value.code == 2 and "--thumbnail-size must be between 1 and 128" in capsys.readouterr().err


def _cases(labels: str) -> tuple[SimilarCase, ...]:
    names = {"N": "NORMAL", "P": "PNEUMONIA"}
    return tuple(SimilarCase(f"f{i}.jpeg", names[c], round(0.9 - i / 100, 2)) for i, c in enumerate(labels))


@pytest.mark.parametrize(
    "labels, reported, phrase, caution",
    [
        ("PPPPPN", "PNEUMONIA", "5 are labelled PNEUMONIA and 1 NORMAL", False),
        ("NNNNPN", "PNEUMONIA", "5 are labelled NORMAL and 1 PNEUMONIA", True),
        ("NNNNNN", "NORMAL", "all 6 are labelled NORMAL", False),
        ("NNNPPP", "PNEUMONIA", "3 are labelled NORMAL and 3 PNEUMONIA", False),
        ("PPPPNN", "NORMAL", "4 are labelled PNEUMONIA and 2 NORMAL", True),
    ],
)
def test_report_counts_labels_and_cautions_when_the_majority_disagrees(labels, reported, phrase, caution):
    probability = 0.9 if reported == "PNEUMONIA" else 0.1
    analysis = Analysis(Prediction(reported, probability, 0.9, "High", POINT), similar=_cases(labels))
    report = build_report(analysis)
    section = report.split("SIMILAR CASES\n")[1].split("\n\n")[0]
    assert phrase + " in the dataset" in section and "feature similarity 0.85 to 0.90" in section
    reliability = report.split("EXPLANATION RELIABILITY\n")[1].split("\n\n")[0]
    assert ("Similar cases disagree" in reliability) is caution
    if caution:
        assert f"unlike the reported {reported}" in reliability
    assert report.index("LOCATIONS") < report.index("SIMILAR CASES") < report.index("IMPRESSION")


def test_label_agreement_and_chance():
    neighbours = np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0], [1, 0, 1, 0, 1]])
    truth = np.array([1, 1, 0])
    assert label_agreement(neighbours, truth) == pytest.approx((3 / 5 + 0 + 2 / 5) / 3)
    assert chance_agreement(np.array([0, 1, 1, 1]), np.array([0, 1])) == pytest.approx((0.25 + 0.75) / 2)


def test_evaluate_separates_clusters_and_not_noise():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 60)
    shift = 5.0 * (np.arange(12) < 4)  # the classes differ along 4 of 12 dimensions
    clustered = rng.normal(size=(120, 12)) + labels[:, None] * shift
    queries = rng.normal(size=(40, 12)) + np.repeat([0, 1], 20)[:, None] * shift
    good = evaluate(clustered, labels, queries, np.repeat([0, 1], 20), k=5, dims=4)
    assert good["agreement"] > 0.95 and good["chance"] == pytest.approx(0.5)
    noise = evaluate(rng.normal(size=(120, 12)), labels, rng.normal(size=(40, 12)), np.repeat([0, 1], 20), k=5, dims=4)
    assert noise["agreement"] < 0.7


def test_committed_index_matches_the_committed_classifier():
    """The shipped index must be rebuilt whenever the shipped classifier changes
    (python -m xray_xai.artifacts.similar_index)."""
    root = Path(__file__).resolve().parent.parent / "checkpoints"
    if not (root / "similar.json").is_file():
        pytest.skip("no similar-case index committed")
    index = SimilarIndex.load(root / "similar.json")
    assert index.card.classifier_sha256 == json.loads((root / "classifier.json").read_text())["sha256"]
    assert index.card.thumbnail_size <= 128
    assert sum(p.stat().st_size for p in root.glob("similar.*")) <= 8_000_000


def test_upload_of_a_new_film_gets_k_neighbours_with_labels(built, tmp_path):
    checkpoint, _, card_path = built
    path = tmp_path / "new.png"
    Image.fromarray(synthetic_radiograph(np.random.default_rng(7), 200, 260, 0)).save(path)
    similar = Pipeline.load(checkpoint, lung_checkpoint=None, similar_index=card_path).first_pass(path).analysis.similar
    assert len(similar) == K and {c.label for c in similar} <= {"NORMAL", "PNEUMONIA"}
    assert all(-1.0 <= c.similarity <= 1.0 for c in similar)


def test_gallery_shows_each_neighbour_with_label_and_similarity():
    from xray_xai.pipeline import Result
    from xray_xai.ui.handlers import gallery_value

    analysis = Analysis(Prediction("NORMAL", 0.1, 0.9, "High", POINT), similar=_cases("NP"))
    thumbs = (np.zeros((64, 64), np.uint8), np.full((64, 64), 200, np.uint8))
    items = gallery_value(Result(analysis, np.zeros((80, 80), np.float32), thumbnails=thumbs))
    assert [caption for _, caption in items] == [
        "0.90 · NORMAL · f0.jpeg",  # the similarity first: a caption cut short still shows it
        "0.89 · PNEUMONIA · f1.jpeg",
    ]
    assert np.asarray(Image.open(items[1][0])).mean() == pytest.approx(200, abs=1)
