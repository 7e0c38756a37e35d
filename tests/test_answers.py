"""The answer figures measured on analyze rows (xray_xai.evaluation.answers)."""

import json

import pytest

from xray_xai.evaluation import answers


def row(folder, answer, label, band="High", ood=False, shortcut=False, ok=True):
    return {
        "input": f"/data/shift_dev/{folder}/film.jpeg",
        "ok": ok,
        "answer": answer if ok else None,
        "label": label if ok else None,
        "band": band if ok and label else None,
        "operating_point": "balanced",
        "ood": {"flagged": ood} if ok else None,
        "anatomy": {"shortcut_warning": shortcut} if ok else None,
    }


ROWS = [
    row("NORMAL", "NORMAL", "NORMAL"),
    row("NORMAL", "NORMAL", "NORMAL"),
    row("NORMAL", "INCONCLUSIVE", "PNEUMONIA", band="Moderate", shortcut=True),  # wrong label, flagged
    row("NORMAL", "PNEUMONIA", "PNEUMONIA"),  # wrong, decisive, High: not flagged
    row("PNEUMONIA", "PNEUMONIA", "PNEUMONIA"),
    row("PNEUMONIA", "PNEUMONIA", "PNEUMONIA", ood=True),  # right but flagged
    row("PNEUMONIA", "INCONCLUSIVE", "NORMAL", band="High"),  # wrong, only INCONCLUSIVE flags it
    row("PNEUMONIA", None, None, ok=False),  # failed: counted, not scored
    {**row("NORMAL", "INCONCLUSIVE", None), "label": None},  # not a radiograph: no label
]


def test_answer_figures_count_what_a_person_was_told():
    figures = answers.answer_figures(ROWS, n_resamples=200)
    assert (figures["n"], figures["scored"]) == (9, 7)
    assert figures["not_scored"] == {"failed": 1, "no_label": 1, "unlabelled_folder": 0}
    assert (figures["decisive_right"]["k"], figures["decisive_right"]["n"]) == (4, 5)
    assert (figures["inconclusive"]["k"], figures["inconclusive"]["n"]) == (2, 7)
    assert (figures["normal_not_called_pneumonia"]["k"], figures["normal_not_called_pneumonia"]["n"]) == (3, 4)
    assert (figures["accuracy"]["k"], figures["accuracy"]["n"]) == (4, 7)
    assert figures["high_band_errors"]["k"] == 2  # the decisive wrong one and the INCONCLUSIVE High one
    assert (figures["flagged"]["wrong"]["k"], figures["flagged"]["wrong"]["n"]) == (1, 3)
    assert (figures["flagged"]["right"]["k"], figures["flagged"]["right"]["n"]) == (1, 4)
    assert figures["flagged_or_inconclusive"]["wrong"]["k"] == 2
    assert figures["shortcut_warning"]["wrong"]["k"] == 1 and figures["shortcut_warning"]["right"]["k"] == 0
    low, high = figures["decisive_right"]["exact_ci95"]
    assert low < 0.8 < high


def test_truth_comes_from_the_folder():
    assert answers.truth("x/PNEUMONIA/a.jpeg") == 1 and answers.truth("x/NORMAL/a.png") == 0
    assert answers.truth("x/other/a.png") is None


def test_command_writes_the_figures(tmp_path, capsys):
    rows = tmp_path / "results.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    figures = answers.run([str(rows), "--out", str(tmp_path / "answers.json"), "--bootstrap", "100"])
    assert json.loads((tmp_path / "answers.json").read_text()) == figures
    assert "decisive answers right: 80.0% (4/5" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="analyze first"):
        answers.run([str(tmp_path / "missing.jsonl")])
