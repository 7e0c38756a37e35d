"""The Model tab and its report: the CLI on tiny data, every plot and table, staleness, a browser."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score

from tests.tiny import make_tiny_checkpoint, make_tiny_dataset
from xray_xai.artifacts import model_report
from xray_xai.metrics import ece
from xray_xai.models.classifier import Classifier
from xray_xai.report import percent
from xray_xai.results import confidence_band
from xray_xai.ui.model_tab import (
    ModelReport,
    bands_table,
    build_model_tab,
    confusion_figure,
    explore,
    gallery_items,
    pr_figure,
    reliability_figure,
    report_problem,
    roc_figure,
)

SHA = "ab" * 32
POINTS = {
    "balanced": {"threshold": 0.5, "sensitivity": 0.9, "specificity": 0.9},
    "screening": {"threshold": 0.3, "sensitivity": 0.95, "specificity": 0.7},
    "rule_in": {"threshold": 0.7, "sensitivity": 0.7, "specificity": 0.95},
}


def _split(rng: np.random.Generator, n: int, separation: float) -> dict:
    labels = (np.arange(n) % 3 != 0).astype(int)
    probs = np.clip(0.5 + separation * (labels - 0.5) + 0.25 * rng.standard_normal(n), 0.001, 0.999).round(6)
    bands = [confidence_band(p if p >= 0.5 else 1 - p) for p in probs]
    return {
        "file": [f"f{i}.jpeg" for i in range(n)],
        "label": labels.tolist(),
        "probability": probs.tolist(),
        "band": bands,
    }


@pytest.fixture
def report_path(tmp_path) -> Path:
    """A hand-made report: 90 validation and 60 shift_dev films, two gallery errors."""
    rng = np.random.default_rng(0)
    errors = [
        {"file": "NORMAL/a.jpeg", "label": 0, "probability": 0.91, "band": "High"},
        {"file": "PNEUMONIA/b.jpeg", "label": 1, "probability": 0.2, "band": "Moderate"},
    ]
    tiles = [
        (Image.new("RGB", (128, 128), (40 * i, 40 * i, 40 * i)), Image.new("RGB", (128, 100), (200, 40 * i, 0)))
        for i in range(len(errors))
    ]
    model_report.sprite(tiles).save(tmp_path / "errors.jpg", quality=85)
    raw = {
        "classifier_sha256": SHA,
        "operating_points": POINTS,
        "splits": {"validation": _split(rng, 90, 0.6), "shift_dev": _split(rng, 60, 0.3)},
        "errors": {"sprite": "errors.jpg", "tile": 128, "films": errors},
    }
    path = tmp_path / "model_report.json"
    path.write_text(json.dumps(raw))
    return path


def _renders(fig) -> bool:
    """What gr.Plot sends to the browser: a base64 image."""
    return gr.Plot().postprocess(fig).plot.startswith("data:image/")


def test_roc_and_pr_figures_show_both_splits_with_their_areas(report_path):
    report = ModelReport.load(report_path)
    roc = roc_figure(report)
    labels = [line.get_label() for line in roc.axes[0].get_lines()]
    for name, split in report.splits.items():
        auroc = roc_auc_score(split.labels, split.probs)
        assert any(label.startswith(f"{name}: AUROC {auroc:.3f}") for label in labels), labels
    pr = pr_figure(report)
    legend = [t.get_text() for t in pr.axes[0].get_legend().get_texts()]
    assert legend == [
        entry
        for name, split in report.splits.items()
        for entry in (
            f"{name}: AUPRC {average_precision_score(split.labels, split.probs):.3f}",
            f"{name} prevalence {percent(split.labels.mean())}",
        )
    ]
    assert _renders(roc) and _renders(pr)


def test_reliability_and_confusion_figures(report_path):
    report = ModelReport.load(report_path)
    reliability = reliability_figure(report)
    assert [ax.get_title() for ax in reliability.axes] == [
        f"{name}: ECE {ece(s.probs, s.labels):.3f}" for name, s in report.splits.items()
    ]
    assert [ax.get_ylabel() for ax in reliability.axes] == [
        "observed pneumonia rate",
        "",
    ]  # shared y axis: labelled once
    confusion = confusion_figure(report)
    assert len(confusion.axes) == 6
    val = report.splits["validation"]
    top_left = [t.get_text() for t in confusion.axes[0].texts]  # validation at balanced: TN, FP, FN, TP
    tn = int(((val.probs < 0.5) & (val.labels == 0)).sum())
    assert top_left[0] == str(tn) and sum(int(t) for t in top_left) == 90
    assert _renders(reliability) and _renders(confusion)


def test_bands_table_counts_every_film(report_path):
    table = bands_table(ModelReport.load(report_path))
    assert list(table["Band"]) == ["High", "Moderate", "Low"]
    assert table["validation n"].sum() == 90 and table["shift_dev n"].sum() == 60
    for name, split in ModelReport.load(report_path).splits.items():
        right = (split.probs >= 0.5) == split.labels  # the balanced threshold of POINTS
        expected = [
            percent(right[split.bands == band].mean()) if (split.bands == band).any() else "n/a"
            for band in ("High", "Moderate", "Low")
        ]
        assert list(table[f"{name} accuracy"]) == expected and list(table[f"{name} n"]) == [
            (split.bands == b).sum() for b in ("High", "Moderate", "Low")
        ]


def test_explorer_recomputes_ppv_and_npv_for_the_prevalence(report_path):
    report = ModelReport.load(report_path)
    own = 100 * report.splits["validation"].labels.mean()
    table, note = explore(report, 0.5, own)
    val = report.splits["validation"]
    called = val.probs >= 0.5
    observed_ppv = (val.labels[called] == 1).mean()
    assert table.loc[0, f"PPV at {own:g}%"] == percent(
        observed_ppv
    )  # Bayes at the split's own prevalence = observed; one format
    rare, _ = explore(report, 0.5, 1.0)
    common, _ = explore(report, 0.5, 90.0)
    assert float(rare.loc[0, "PPV at 1%"].rstrip("%")) < float(common.loc[0, "PPV at 90%"].rstrip("%"))
    assert float(rare.loc[0, "NPV at 1%"].rstrip("%")) > float(common.loc[0, "NPV at 90%"].rstrip("%"))
    assert rare.loc[0, "Sensitivity"] == common.loc[0, "Sensitivity"]  # the model does not change with prevalence
    strict, _ = explore(report, 0.9, 10.0)
    assert float(strict.loc[0, "Sensitivity"].rstrip("%")) < float(rare.loc[0, "Sensitivity"].rstrip("%"))
    assert "Bayes" in note and "0.500" in note


def test_gallery_cuts_the_sprite_into_captioned_pairs(report_path):
    items = gallery_items(ModelReport.load(report_path))
    assert [image.size for image, _ in items] == [(256, 128), (256, 128)]
    assert items[0][1].startswith("False positive") and items[1][1].startswith("False negative")
    assert "band Moderate" in items[1][1]
    assert items[1][0].getpixel((64, 64))[0] == pytest.approx(40, abs=6)  # second row of the sprite, not the first


def test_gallery_shows_the_most_confidently_wrong_first_whatever_the_sprite_order(report_path):
    raw = json.loads(report_path.read_text())
    raw["errors"]["films"] = [  # the sprite's rows: a false negative at P(normal) 0.8, then a false positive at 0.91
        {"file": "PNEUMONIA/b.jpeg", "label": 1, "probability": 0.2, "band": "Moderate"},
        {"file": "NORMAL/a.jpeg", "label": 0, "probability": 0.91, "band": "High"},
    ]
    report_path.write_text(json.dumps(raw))
    items = gallery_items(ModelReport.load(report_path))
    assert items[0][1].startswith("False positive · called PNEUMONIA with 91.0% · NORMAL/a.jpeg")
    assert items[1][1].startswith("False negative · called NORMAL with 80.0% · PNEUMONIA/b.jpeg")
    assert items[0][0].getpixel((64, 64))[0] == pytest.approx(40, abs=6)  # the sprite's second row goes with a.jpeg


def test_the_artifact_keeps_the_most_confidently_wrong_films():
    films = [
        model_report.Film("fn_far", 1, 0.05, "High"),  # called NORMAL with 95%
        model_report.Film("fp_near", 0, 0.80, "Moderate"),  # called PNEUMONIA with 80%, 0.06 above the threshold
        model_report.Film("fp_sure", 0, 0.99, "High"),  # called PNEUMONIA with 99%
        model_report.Film("right", 1, 0.9, "High"),
    ]
    assert [f.file for f in model_report.errors(films, 0.74, 2)] == ["fp_sure", "fn_far"]
    assert [f.file for f in model_report.errors(films, 0.74, 5)] == ["fp_sure", "fn_far", "fp_near"]


@pytest.mark.parametrize("prevalence", [0.0, 100.0, None, -3.0])
def test_an_impossible_prevalence_gets_a_clear_message_not_an_error(report_path, prevalence):
    table, note = explore(ModelReport.load(report_path), 0.5, prevalence)
    assert "PPV and NPV need a prevalence between 0.1% and 99.9%" in note
    assert set(table["PPV at your prevalence"]) == set(table["NPV at your prevalence"]) == {"n/a"}
    assert table.loc[0, "Sensitivity"] == explore(ModelReport.load(report_path), 0.5, 10.0)[0].loc[0, "Sensitivity"]


def _model_tab(report_path, sha) -> tuple[gr.Blocks, gr.Tab]:
    with gr.Blocks() as demo:
        with gr.Tabs():
            with gr.Tab("Analyse"):
                gr.Markdown("analyse")
            with gr.Tab("Model") as tab:
                build_model_tab(tab, sha, report_path)
    return demo, tab


def _components(report_path, sha) -> list:
    return list(_model_tab(report_path, sha)[0].blocks.values())


def _open(demo: gr.Blocks, tab: gr.Tab, opened_before: bool = False) -> dict:
    """What opening the tab sends (the values Gradio sends, by elem_id), with its inputs as built,
    or as after an earlier opening (``opened_before``: the explorer's note shown)."""
    (fn,) = [f for f in demo.fns.values() if (tab._id, "select") in f.targets]
    assert fn.api_visibility == "private"
    inputs = [block.value for block in fn.inputs]
    assert not inputs[0]  # the explorer's note, empty until the tab is filled in
    if opened_before:
        inputs[0] = "Threshold p ≥ 0.500; prevalence in your setting 10%."
    sent = fn.fn(*inputs)
    assert len(sent) == len(fn.outputs)
    return {
        block.elem_id or type(block).__name__: value if _kept(value) else block.postprocess(value)
        for block, value in zip(fn.outputs, sent, strict=True)
    }


def _kept(value) -> bool:
    """Whether a handler's output leaves its component as it is (``gr.skip()``)."""
    return isinstance(value, dict) and value == gr.skip()


@pytest.mark.slow
def test_tab_is_drawn_when_first_opened_with_every_view(report_path):
    demo, tab = _model_tab(report_path, SHA)
    blocks = list(demo.blocks.values())
    kinds = [type(b).__name__ for b in blocks]
    assert kinds.count("Plot") == 4 and kinds.count("Dataframe") == 2 and kinds.count("Gallery") == 1
    # Built without drawing: the page is served before anything of the tab is drawn.
    assert all(not b.value for b in blocks if isinstance(b, (gr.Plot, gr.Gallery)))
    assert all(not b.value["data"] for b in blocks if isinstance(b, gr.Dataframe))
    report = ModelReport.load(report_path)
    values = _open(demo, tab)
    assert all(
        values[f"model-{name}"].plot.startswith("data:image/") for name in ("roc", "pr", "reliability", "confusion")
    )
    assert values["model-bands"].data == bands_table(report).values.tolist()
    assert [row[0] for row in values["model-explorer"].data] == ["validation", "shift_dev"]
    table, note = explore(report, round(report.threshold("balanced"), 3), 10.0)  # the inputs as shown
    assert values["model-explorer"].data == table.values.tolist() and note in values.values()
    assert [item.caption for item in values["model-errors"].root] == [caption for _, caption in gallery_items(report)]
    # Opened again in the same session: nothing is sent again (the explorer follows its own inputs).
    assert all(_kept(value) for value in _open(demo, tab, opened_before=True).values())
    # Drawn once per process: another page on the same report gets the same figures without drawing them again.
    again = _open(*_model_tab(report_path, SHA))
    assert all(again[f"model-{name}"] is values[f"model-{name}"] for name in ("roc", "pr", "reliability", "confusion"))


@pytest.mark.slow
def test_the_figures_sent_are_the_tabs_figures(report_path):
    report = ModelReport.load(report_path)
    values = _open(*_model_tab(report_path, SHA))
    for name, figure in (
        ("roc", roc_figure),
        ("pr", pr_figure),
        ("reliability", reliability_figure),
        ("confusion", confusion_figure),
    ):
        assert values[f"model-{name}"].plot == gr.Plot().postprocess(figure(report)).plot


def test_stale_or_missing_report_is_refused(report_path, tmp_path):
    assert report_problem(report_path, SHA) is None
    stale = report_problem(report_path, "cd" * 32)
    assert "stale" in stale and "abababababab" in stale and "python -m xray_xai.artifacts.model_report" in stale
    assert "No model report" in report_problem(tmp_path / "missing.json", SHA)
    kinds = [type(b).__name__ for b in _components(report_path, "cd" * 32)]
    assert "Plot" not in kinds and "Dataframe" not in kinds and "Markdown" in kinds


def test_cli_on_tiny_data(tmp_path):
    """The CLI: validation patients only, the band the classifier gives, errors imaged, shift never imaged."""
    card = make_tiny_checkpoint(
        tmp_path / "ckpt",
        operating_points={**POINTS, "balanced": {"threshold": 0.0, "sensitivity": 1.0, "specificity": 0.0}},
    )
    (card.parent / "classifier_val_patients.json").write_text(
        json.dumps({"patients": ["IM-1000", "IM-1001", "person100"]})
    )
    train = make_tiny_dataset(tmp_path / "train", per_class=3)
    shift = make_tiny_dataset(tmp_path / "shift", per_class=2, seed=1)
    out = tmp_path / "out"
    report = model_report.run(
        ["--train", str(train), "--shift", str(shift), "--checkpoint", str(card), "--out", str(out), "--threads", "1"]
    )
    classifier = Classifier.load(card)
    assert report["classifier_sha256"] == classifier.card.sha256
    val = report["splits"]["validation"]
    assert sorted(val["file"]) == [
        "NORMAL/IM-1000-0001.png",
        "NORMAL/IM-1001-0001.png",
        "PNEUMONIA/person100_bacteria_0.png",
    ]
    assert len(report["splits"]["shift_dev"]["label"]) == 4
    for p, band in zip(val["probability"], val["band"], strict=True):
        assert band == classifier.decide(p, "balanced").band
    # Threshold 0: every film is called PNEUMONIA, so the two NORMAL validation films are the errors.
    assert sorted(f["file"] for f in report["errors"]["films"]) == [
        "NORMAL/IM-1000-0001.png",
        "NORMAL/IM-1001-0001.png",
    ]
    with Image.open(out / model_report.SPRITE_NAME) as sheet:
        assert sheet.size == (256, 256)
    assert {p.name for p in out.iterdir()} == {model_report.SPRITE_NAME, model_report.REPORT_NAME}
    assert report_problem(out / model_report.REPORT_NAME, classifier.card.sha256) is None
    assert len(gallery_items(ModelReport.load(out / model_report.REPORT_NAME))) == 2


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(_chromium() is None, reason="no Chromium on this machine (CI installs the Debian package)")
def test_model_tab_renders_in_a_browser(report_path):
    playwright = pytest.importorskip("playwright.sync_api")
    demo, _ = _model_tab(report_path, SHA)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/", wait_until="networkidle")
            page.get_by_role("tab", name="Model").click()
            for plot in ("roc", "pr", "reliability", "confusion"):
                page.locator(f"#model-{plot} img").wait_for(state="visible", timeout=30_000)
                assert page.locator(f"#model-{plot} img").evaluate("img => img.naturalWidth") > 100
            page.get_by_text("PPV at 10%").first.wait_for(state="visible")
            page.locator("#model-errors img").first.wait_for(state="visible", timeout=30_000)
            browser.close()
    finally:
        demo.close()
