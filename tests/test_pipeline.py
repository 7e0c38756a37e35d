"""The analysis pipeline in-process, and the ``analyze`` CLI, on a small random-weight model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.tiny import make_tiny_checkpoint, synthetic_radiograph
from xray_xai import DISCLAIMER
from xray_xai.__main__ import main as cli_main
from xray_xai.imaging import InputError
from xray_xai.models.classifier import Classifier
from xray_xai.pipeline import Options, Pipeline
from xray_xai.ui.overlay import draw_result

SIZE = 64


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    points = {
        "balanced": {"threshold": 0.5, "sensitivity": 0.9, "specificity": 0.9},
        "screening": {"threshold": 0.0, "sensitivity": 1.0, "specificity": 0.0},
        "rule_in": {"threshold": 1.0, "sensitivity": 0.0, "specificity": 1.0},
    }
    return make_tiny_checkpoint(
        tmp_path_factory.mktemp("ckpt"), temperature=2.0, arch="resnet18", size=SIZE, operating_points=points
    )


@pytest.fixture(scope="module")
def pipeline(checkpoint) -> Pipeline:
    return Pipeline(Classifier.load(checkpoint))


@pytest.fixture()
def radiograph(tmp_path) -> Path:
    path = tmp_path / "chest.png"
    Image.fromarray(synthetic_radiograph(np.random.default_rng(0), 240, 300, 1)).save(path)
    return path


def test_occlusion_precision_follows_the_card(checkpoint, radiograph, monkeypatch):
    from dataclasses import replace

    import xray_xai.explain.occlusion as occlusion

    classifier = Classifier.load(checkpoint)
    classifier.card = replace(classifier.card, runtime={"occlusion_precision": {"fast": "bf16"}})
    pipeline = Pipeline(classifier)
    assert [pipeline.occlusion_precision(p) for p in ("fast", "fine")] == ["bf16", "f32"]
    seen, real = [], occlusion.occlusion_map
    monkeypatch.setattr(occlusion, "occlusion_map", lambda *a, **kw: seen.append(kw["precision"]) or real(*a, **kw))
    for preset in ("fast", "fine"):
        pipeline.analyze(radiograph, Options(occlusion=preset))
    assert seen == ["bf16", "f32"]


def test_full_analysis(pipeline, radiograph):
    calls = []
    result = pipeline.analyze(
        radiograph, Options(occlusion="fast"), progress=lambda done, total: calls.append((done, total))
    )
    analysis = result.analysis
    assert set(result.maps) == {"gradcam", "occlusion"}
    for heat in result.maps.values():
        assert heat.shape == (SIZE, SIZE) and heat.min() >= 0 and heat.max() <= 1
    assert analysis.agreement is not None
    assert analysis.anatomy is not None and set(analysis.anatomy.zones) == {"gradcam", "occlusion"}
    assert DISCLAIMER in analysis.report
    assert analysis.runtime == pipeline.classifier.served_runtime and analysis.occlusion_precision == "f32"
    assert f"- Computed with: {analysis.runtime} for the answer;" in analysis.report
    assert calls and calls[-1][0] == calls[-1][1]
    overlays = draw_result(result, opacity=0.5)
    assert overlays["gradcam"].shape == (240, 300, 3) and overlays["gradcam"].dtype == np.uint8
    assert json.loads(json.dumps(result.to_json()))["prediction"]["label"] == analysis.prediction.label


def test_first_pass_has_no_occlusion_yet(pipeline, radiograph):
    first = pipeline.first_pass(radiograph, Options())
    assert set(first.maps) == {"gradcam"}
    assert first.analysis.agreement is None
    assert DISCLAIMER in first.analysis.report


def test_operating_points_change_only_the_decision(pipeline, radiograph):
    screening = pipeline.first_pass(
        radiograph, Options(operating_point="screening", occlusion="off")
    ).analysis.prediction
    rule_in = pipeline.first_pass(radiograph, Options(operating_point="rule_in", occlusion="off")).analysis.prediction
    assert screening.probability == pytest.approx(rule_in.probability)
    assert (screening.label, rule_in.label) == ("PNEUMONIA", "NORMAL")


def test_explain_pneumonia_regardless(pipeline, radiograph):
    result = pipeline.first_pass(radiograph, Options(operating_point="rule_in", explain="pneumonia"))
    assert result.analysis.prediction.label == "NORMAL"
    assert result.analysis.explained_class == "PNEUMONIA"


@pytest.mark.parametrize("options", [Options(cam_method="nope"), Options(explain="both"), Options(occlusion="ultra")])
def test_bad_options_are_refused_clearly(pipeline, radiograph, options):
    with pytest.raises(InputError, match="choose"):
        pipeline.first_pass(radiograph, options)


def test_garbage_upload_is_an_input_error(pipeline, tmp_path):
    bad = tmp_path / "scan.png"
    bad.write_bytes(b"<html>not an image</html>")
    with pytest.raises(InputError):
        pipeline.analyze(bad)


def test_analyze_cli(checkpoint, radiograph, tmp_path, capsys):
    bad = tmp_path / "broken.jpeg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "out"
    status = cli_main(
        [
            "analyze",
            str(radiograph),
            str(bad),
            "--out",
            str(out),
            "--checkpoint",
            str(checkpoint),
            "--lung-checkpoint",
            str(tmp_path / "none.json"),
        ]
    )
    assert status == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["input"] for r in rows] == [str(radiograph), str(bad)]
    good, broken = rows
    assert good["ok"] and good["error"] is None
    for key in (
        "label",
        "probability",
        "band",
        "operating_point",
        "threshold",
        "ood",
        "agreement",
        "report",
        "anatomy",
        "similar",
        "track_record",
        "boxes",
    ):
        assert key in good
    assert set(good["ood"]) == {"flagged", "reasons", "distance", "threshold", "not_radiograph"}  # the app's JSON
    assert all((out / name).is_file() for name in good["overlays"])
    assert not broken["ok"] and broken["error"] and "Traceback" not in broken["error"]


def test_analyze_cli_without_occlusion(checkpoint, radiograph, tmp_path):
    out = tmp_path / "out"
    assert (
        cli_main(["analyze", str(radiograph), "--out", str(out), "--checkpoint", str(checkpoint), "--occlusion", "off"])
        == 0
    )
    row = json.loads((out / "results.jsonl").read_text())
    assert row["ok"] and row["agreement"] is None


@pytest.mark.slow
def test_fuzz_corpus_through_the_whole_analysis(pipeline):
    """Every hostile or odd file gives a clear InputError or a complete, valid analysis."""
    from tests.fuzz_corpus import build_corpus

    analysed = 0
    for name, data in build_corpus():
        try:
            result = pipeline.analyze(data, Options(occlusion="fast"))
        except InputError as error:
            assert str(error) and "Traceback" not in str(error), name
            continue
        analysed += 1
        assert 0.0 <= result.analysis.prediction.probability <= 1.0, name
        assert all(np.isfinite(m).all() for m in result.maps.values()), name
        assert DISCLAIMER in result.analysis.report, name
    assert analysed >= 10  # the odd-but-valid files really were analysed


def test_dicom_patient_data_never_reaches_any_output(pipeline, checkpoint, tmp_path, caplog):
    """Name, id and dates in a DICOM header appear nowhere: report, JSON, warnings, CLI rows, logs."""
    from tests.fuzz_corpus import PHI_ID, PHI_NAME, dicom_bytes
    from tests.fuzz_corpus import synthetic_radiograph as chest

    stored = np.round(chest(200, 240) * 4095).astype(np.uint16)
    path = tmp_path / "export"  # no extension: recognised by content
    path.write_bytes(dicom_bytes(np.stack([stored, stored]), photometric="MONOCHROME1", frames=2))
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(dicom_bytes(stored, pixel_data=False))
    result = pipeline.analyze(path)
    texts = [json.dumps(result.to_json()), result.analysis.report, *result.analysis.input_warnings]
    with pytest.raises(InputError) as error:
        pipeline.analyze(broken)
    texts.append(str(error.value))
    out = tmp_path / "out"
    cli_main(
        ["analyze", str(path), str(broken), "--out", str(out), "--checkpoint", str(checkpoint), "--occlusion", "off"]
    )
    texts.append((out / "results.jsonl").read_text())
    texts.append(caplog.text)
    for secret in (PHI_NAME, "Doe", "Jane", PHI_ID):
        assert not any(secret in text for text in texts), secret
    assert result.analysis.input_warnings  # the second frame was dropped, with a warning


@pytest.mark.slow
def test_heavy_packages_wait_for_the_warm_up(checkpoint):
    """Start-up stays light: the CAM package, scikit-learn and scipy.stats load on first use (the app's warm-up)."""
    script = (
        "import sys\n"
        "from xray_xai.models.classifier import Classifier\n"
        "from xray_xai.pipeline import Pipeline\n"
        "heavy = ('pytorch_grad_cam', 'sklearn', 'scipy.stats')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "Pipeline(Classifier.load(sys.argv[1])).warm_up()\n"
        "print(all(m in sys.modules for m in ('pytorch_grad_cam', 'scipy.stats')))\n"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", script, str(checkpoint)], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["[]", "True"]


def test_shortcut_thresholds_come_from_the_classifier_card(checkpoint, tmp_path):
    """They are fitted on this classifier's maps, so they travel with its model card."""
    import shutil

    folder = tmp_path / "ckpt"
    shutil.copytree(checkpoint.parent, folder)
    card = folder / checkpoint.name
    raw = json.loads(card.read_text())
    raw["explanations"] = {"shortcut_threshold": {"gradcam": 0.12, "occlusion": 0.34}}
    card.write_text(json.dumps(raw))
    assert Pipeline(Classifier.load(card)).shortcut_threshold == {"gradcam": 0.12, "occlusion": 0.34}
    assert Pipeline(Classifier.load(checkpoint)).shortcut_threshold == {}
