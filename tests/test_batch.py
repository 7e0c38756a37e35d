"""Batch analysis: input expansion, resume, ordering, Parquet, summary, and the local and Ray
engines giving the same rows, on a small random-weight model."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
import torch
from PIL import Image

from tests.tiny import make_tiny_checkpoint, synthetic_radiograph
from xray_xai.__main__ import main as cli_main
from xray_xai.batch import (
    INTERNAL_ERROR,
    ROW_FIELDS,
    Job,
    Outcome,
    error_record,
    expand_inputs,
    read_rows,
    result_record,
    run,
    run_local,
    summarize,
)
from xray_xai.models.classifier import Classifier
from xray_xai.pipeline import Options, Pipeline

SIZE = 64


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), size=SIZE)


@pytest.fixture(scope="module")
def films(tmp_path_factory) -> list[str]:
    """Three synthetic radiographs (one in a subfolder) and a broken JPEG, in input order."""
    root = tmp_path_factory.mktemp("films")
    (root / "sub").mkdir()
    rng = np.random.default_rng(0)
    paths = [root / "a.png", root / "b_broken.jpeg", root / "sub" / "c.png", root / "sub" / "d.png"]
    for path, (height, width, label) in zip(
        [paths[0], *paths[2:]], [(120, 100, 0), (96, 128, 1), (100, 100, 1)], strict=True
    ):
        Image.fromarray(synthetic_radiograph(rng, height, width, label)).save(path)
    paths[1].write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return [str(p) for p in paths]


@pytest.fixture(scope="module")
def job(checkpoint, tmp_path_factory) -> Job:
    return Job(
        str(checkpoint), str(tmp_path_factory.mktemp("nolungs") / "none.json"), Options(occlusion="fast"), threads=1
    )


@pytest.fixture(scope="module")
def ray_runtime():
    ray.init(address="local", num_cpus=2, include_dashboard=False)  # never a cluster left running
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The local engine sets torch's thread count in this process: restore it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def jsonl(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


class CountingAnalyze:
    """Pipeline.analyze that records which inputs it was called with, and fails on ``fail``."""

    def __init__(self, monkeypatch, fail: str | None = None) -> None:
        self.calls: list[str] = []
        self.fail = fail
        original = Pipeline.analyze

        def analyze(pipeline, source, options=Options(), progress=None):
            self.calls.append(str(source))
            if str(source) == self.fail:
                raise RuntimeError("boom")
            return original(pipeline, source, options, progress)

        monkeypatch.setattr(Pipeline, "analyze", analyze)


@pytest.mark.slow
def test_ray_and_local_engines_write_identical_outputs(ray_runtime, films, job, tmp_path):
    """The local engine through the library, Ray through the CLI (on the runtime already running)."""
    local = run(films, tmp_path / "local", job, run_local)
    argv = [
        "analyze",
        str(Path(films[0]).parent),
        "--out",
        str(tmp_path / "ray"),
        "--checkpoint",
        job.checkpoint,
        "--lung-checkpoint",
        job.lung_checkpoint,
    ]
    assert cli_main([*argv, "--engine", "ray", "--workers", "2", "--batch-size", "1"]) == 0
    assert ray.is_initialized()  # a runtime the CLI did not start is left running
    text = (tmp_path / "local" / "results.jsonl").read_text()
    assert (tmp_path / "ray" / "results.jsonl").read_text() == text
    rows = [json.loads(line) for line in text.splitlines()]
    assert [row["input"] for row in rows] == films
    assert [row["ok"] for row in rows] == [True, False, True, True]
    assert all(row["agreement"] is not None for row in rows if row["ok"])  # occlusion ran
    pngs = sorted(p.name for p in (tmp_path / "local").glob("*.png"))
    assert pngs == sorted(name for row in rows if row["ok"] for name in row["overlays"]) and len(pngs) == 6
    for name in pngs:
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    distributed = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert (distributed["engine"], distributed["workers"], distributed["threads_per_worker"]) == ("ray", 2, 1)
    assert (
        (local.ok, local.errors, local.analysed)
        == (distributed["ok"], distributed["errors"], distributed["analysed"])
        == (3, 1, 4)
    )


def test_cli_rows_equal_the_in_process_pipeline(films, checkpoint, tmp_path):
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    argv = [
        "analyze",
        films[0],
        "--out",
        str(out),
        "--checkpoint",
        str(checkpoint),
        "--lung-checkpoint",
        str(tmp_path / "none.json"),
        "--threads",
        str(threads),
    ]
    assert cli_main(argv) == 0
    (row,) = jsonl(out)
    expected = result_record(
        films[0], Pipeline(Classifier.load(checkpoint)).analyze(films[0], Options(occlusion="fast"))
    )
    assert row.pop("overlays") == ["0000_a_gradcam.png", "0000_a_occlusion.png"]
    assert row == json.loads(json.dumps(expected))
    assert row["agreement"] is not None and 0.0 <= row["probability"] <= 1.0
    assert row["answer"] in (row["label"], "INCONCLUSIVE") and list(row) == [f for f in ROW_FIELDS if f != "overlays"]
    assert row["answer"] == "INCONCLUSIVE" or not row["ood"]["flagged"]


def test_cam_method_choices_are_listed_in_help(capsys):
    with pytest.raises(SystemExit):
        cli_main(["analyze", "--help"])
    assert "--cam-method {gradcam,hirescam,gradcam++,layercam}" in capsys.readouterr().out


def test_folders_and_manifests_expand_in_order(tmp_path):
    (tmp_path / "scans" / "deep").mkdir(parents=True)
    for name in (
        "scans/b.png",
        "scans/a.DCM",
        "scans/deep/c.jpg",
        "scans/export",
        "scans/notes.txt",
        "scans/.hidden.png",
    ):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "list.txt").write_text("# films\nx1.png\n\n  /abs/x2.dcm \n")
    (tmp_path / "list.csv").write_text("id,path\n1,y1.png\n2,scans/b.png\n")
    (tmp_path / "bare.csv").write_text("z1.png,NORMAL\n")
    scans = tmp_path / "scans"
    expanded = expand_inputs(
        [str(scans), str(tmp_path / "list.txt"), str(tmp_path / "list.csv"), str(tmp_path / "bare.csv"), "missing.png"]
    )
    assert expanded == [
        str(scans / "a.DCM"),
        str(scans / "b.png"),
        str(scans / "deep" / "c.jpg"),
        str(scans / "export"),  # no suffix: maybe a DICOM export
        str(tmp_path / "x1.png"),
        "/abs/x2.dcm",
        str(tmp_path / "y1.png"),  # scans/b.png again: dropped
        str(tmp_path / "z1.png"),
        "missing.png",  # kept: it becomes an error row
    ]


def test_resume_analyses_only_new_inputs_and_keeps_input_order(films, job, tmp_path, monkeypatch):
    counter = CountingAnalyze(monkeypatch)
    out = tmp_path / "out"
    run(films[2:], out, job, run_local)
    assert counter.calls == films[2:]
    # A crash left an unordered file with a half-written last line ...
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text(lines[1] + "\n" + lines[0] + "\n" + '{"input": "' + films[0])

    def crash_after_one(job, items):
        yield next(run_local(job, items))
        raise KeyboardInterrupt

    # ... and the next run is interrupted after one film: that film's row is kept, whole.
    with pytest.raises(KeyboardInterrupt):
        run(films, out, job, crash_after_one)
    assert [row["input"] for row in read_rows(out / "results.jsonl")] == [films[3], films[2], films[0]]
    counter.calls.clear()
    summary = run(films, out, job, run_local)
    assert counter.calls == [films[1]]
    assert [row["input"] for row in jsonl(out)] == films
    assert (summary.inputs, summary.analysed) == (4, 1)
    counter.calls.clear()
    run(films, out, job, run_local)
    assert counter.calls == [] and [row["input"] for row in jsonl(out)] == films


def test_ray_options_need_the_ray_engine(films, tmp_path, capsys):
    with pytest.raises(SystemExit) as refused:
        cli_main(["analyze", films[0], "--out", str(tmp_path), "--workers", "2"])
    assert refused.value.code == 2 and "--address and --workers need --engine ray" in capsys.readouterr().err


def test_a_crashing_file_is_one_error_row(films, job, checkpoint, tmp_path, monkeypatch):
    CountingAnalyze(monkeypatch, fail=films[2])
    summary = run(films, tmp_path / "out", job, run_local)
    rows = jsonl(tmp_path / "out")
    assert [row["ok"] for row in rows] == [True, False, False, True]
    assert rows[1]["error"] and not rows[1]["error"].startswith(INTERNAL_ERROR)  # the broken JPEG: the user's problem
    assert rows[2] == error_record(films[2], f"{INTERNAL_ERROR} (RuntimeError); please report it.")
    for row in rows:  # every documented field, in order, in error rows too
        assert list(row) == list(ROW_FIELDS)
    assert rows[1]["answer"] is None and rows[1]["label"] is None and rows[1]["similar"] == [] and rows[1]["disclaimer"]
    assert (summary.errors, summary.internal_errors) == (2, 1)
    argv = [
        "analyze",
        films[2],
        "--out",
        str(tmp_path / "cli"),
        "--checkpoint",
        str(checkpoint),
        "--lung-checkpoint",
        job.lung_checkpoint,
    ]
    assert cli_main(argv) == 1


def test_rows_arriving_out_of_order_are_written_in_input_order(job, tmp_path):
    inputs = [f"film{i}.png" for i in range(5)]

    def backwards(job, items):
        for index, path in reversed(items):
            yield Outcome(index, {"input": path, "ok": False, "error": "nope"})

    run(inputs, tmp_path, job, backwards)
    assert [row["input"] for row in jsonl(tmp_path)] == inputs


def test_parquet_holds_the_same_rows(films, job, tmp_path):
    out = tmp_path / "out"
    run(films, out, job, run_local)
    table = pq.read_table(out / "results.parquet").to_pylist()
    nested = (
        "ood",
        "agreement",
        "anatomy",
        "overlays",
        "band_reasons",
        "member_probabilities",
        "member_views",
        "prediction_set",
        "similar",
        "track_record",
        "boxes",
    )
    decoded = [{k: json.loads(v) if k in nested else v for k, v in row.items() if v is not None} for row in table]
    rows = jsonl(out)
    assert decoded == [{k: v for k, v in row.items() if v is not None} for row in rows]
    assert [row["input"] for row in decoded] == films and decoded[0]["anatomy"]["zones"]


def test_summary_counts(job, tmp_path):
    anatomy = {"shortcut_warning": True}
    rows = [
        {
            "input": "a",
            "ok": True,
            "answer": "INCONCLUSIVE",
            "ood": {"flagged": True, "reasons": ["odd"]},
            "anatomy": None,
        },
        {"input": "b", "ok": True, "ood": {"flagged": False, "reasons": []}, "anatomy": anatomy},
        {"input": "c", "ok": True, "ood": {"flagged": True, "reasons": ["odd"]}, "anatomy": anatomy},
        {"input": "d", "ok": False, "error": f"{INTERNAL_ERROR} (KeyError); please report it."},
        {"input": "e", "ok": False, "error": "The file is empty (0 bytes)."},
    ]
    summary = summarize(rows, rows[2:], seconds=2.0, engine="ray", workers=2, threads=1)
    assert (summary.inputs, summary.ok, summary.errors, summary.ood_flagged, summary.shortcut_warnings) == (
        5,
        3,
        2,
        2,
        2,
    )
    assert (summary.analysed, summary.internal_errors, summary.films_per_second) == (3, 1, 1.5)
    assert summary.inconclusive == 1 and "3 ok, 2 errors, 1 INCONCLUSIVE" in summary.describe()
    assert "4 films: 3 ok, 1 error, 1 INCONCLUSIVE" in summarize(rows[:4], rows[:4], 1.0, "local", 1, 1).describe()

    def replay(job, items):
        for index, _path in items:
            yield Outcome(index, rows[index])

    saved = run([row["input"] for row in rows], tmp_path, job, replay)
    assert json.loads((tmp_path / "summary.json").read_text()) == asdict(saved)
    assert (saved.ok, saved.errors, saved.ood_flagged, saved.shortcut_warnings, saved.internal_errors) == (
        3,
        2,
        2,
        2,
        1,
    )
    assert read_rows(tmp_path / "results.jsonl") == rows
