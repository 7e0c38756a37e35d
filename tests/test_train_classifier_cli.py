"""The classifier's training command end to end: two short trainings on a tiny dataset (slow)."""

from __future__ import annotations

import json

import pytest
from tiny import TINY_ARCH, make_tiny_dataset, smooth_image_like

from xray_xai.models.classifier import Classifier
from xray_xai.training.classifier import main as train_main

pytestmark = pytest.mark.slow


def test_training_cli_end_to_end_and_resume(tmp_path, capsys):
    make_tiny_dataset(tmp_path / "data" / "train", per_class=10)
    argv = ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "ckpt"), "--work", str(tmp_path / "work"),
            "--arch", TINY_ARCH, "--input-size", "32", "--epochs", "2", "--threads", "1"]  # fmt: skip
    train_main(argv)
    assert "resuming" not in capsys.readouterr().out
    for name in ("classifier.json", "classifier.safetensors", "classifier_val_patients.json"):
        assert (tmp_path / "ckpt" / name).is_file(), name
    card = json.loads((tmp_path / "ckpt" / "classifier.json").read_text())
    assert set(card["operating_points"]) == {"balanced", "screening", "rule_in"} and card["temperature"] > 0
    assert card["training"]["epochs_run"] == 2 and len(card["validation"]["history"]) == 2
    val_patients = json.loads((tmp_path / "ckpt" / "classifier_val_patients.json").read_text())["patients"]
    assert len(val_patients) == card["data"]["val_patients"] > 0
    classifier = Classifier.load(tmp_path / "ckpt" / "classifier.json")
    assert 0 <= classifier.predict(smooth_image_like(50)).probability <= 1

    assert card["validation"]["stored_weights_max_abs_prob_diff"] <= 1e-3
    assert card["weights_dtype"].startswith("float16")

    train_main(argv)
    assert "resuming after epoch 2" in capsys.readouterr().out

    state = tmp_path / "work" / "last.json"  # a run saved before an option existed resumes with its default
    meta = json.loads(state.read_text())
    del meta["config"]["gamma"]
    state.write_text(json.dumps(meta))
    train_main(argv)
    assert "resuming after epoch 2" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="another configuration"):
        train_main([*argv, "--lr", "0.1"])
    with pytest.raises(SystemExit, match="another configuration"):
        train_main([*argv, "--mixup", "0.2"])


def test_training_stores_float32_when_float16_would_move_probabilities(tmp_path, monkeypatch):
    import xray_xai.training.finalize as finalize

    monkeypatch.setattr(finalize, "FP16_TOLERANCE", -1.0)  # no float16 file is close enough
    make_tiny_dataset(tmp_path / "data" / "train", per_class=10)
    train_main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "ckpt"), "--work", str(tmp_path / "work"),
                "--arch", TINY_ARCH, "--input-size", "32", "--epochs", "1", "--threads", "1"])  # fmt: skip
    card = json.loads((tmp_path / "ckpt" / "classifier.json").read_text())
    assert card["weights_dtype"] == "float32" and card["validation"]["stored_weights_max_abs_prob_diff"] == 0.0
