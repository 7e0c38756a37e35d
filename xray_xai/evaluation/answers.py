"""What a person is told, measured on ``analyze`` rows of a labelled folder.

    python -m xray_xai analyze ../shared/data/chest_xray/shift_dev --out runs/analyze_shift --no-overlays
    python -m xray_xai.evaluation.answers runs/analyze_shift/results.jsonl [--out answers.json]

Each row's truth is the name of its file's folder (``NORMAL`` or ``PNEUMONIA``, as in the
dataset). The figures are those of the app's own answers, exactly as the rows carry them (the
conformal answer, the label at the row's operating point, the confidence band after every
lowering step, the shortcut check of the maps included), each share with its bootstrap and exact
interval (:func:`xray_xai.metrics.share_figure`):

- decisive answers (NORMAL or PNEUMONIA) that are right, the share INCONCLUSIVE, normal films
  answered NORMAL or INCONCLUSIVE;
- accuracy of the label, wrong labels given in the High band as a share of all films;
- how many wrong and right labels are flagged: a band below High or an out-of-distribution
  warning (the rule of ``evaluate``'s ``flagged`` block, here with the maps' shortcut check,
  which lowers the band), and the same with an INCONCLUSIVE answer counted as a flag.

Rows that failed (``ok`` false) or got no label (not a radiograph) are counted, not scored.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .. import CLASSES
from ..batch import read_rows
from ..cli import entry_point, seed_parser
from ..conformal import INCONCLUSIVE
from ..metrics import answer_shares, share_figure


def truth(path: str) -> int | None:
    """1 for a film in a PNEUMONIA folder, 0 in a NORMAL folder, None elsewhere."""
    folder = Path(path).parent.name
    return CLASSES.index(folder) if folder in CLASSES else None


def answer_figures(rows: list[dict], n_resamples: int = 2000, seed: int = 0) -> dict:
    """The figures of the module docstring for ``rows`` (``results.jsonl`` objects)."""
    scored = [r for r in rows if r["ok"] and r["label"] is not None and truth(r["input"]) is not None]
    y = np.array([truth(r["input"]) for r in scored], dtype=int)
    answer = np.array([r["answer"] for r in scored], dtype=object)
    label = np.array([CLASSES.index(r["label"]) for r in scored], dtype=int)
    band = np.array([r["band"] for r in scored], dtype=object)
    ood = np.array([bool(r["ood"] and r["ood"]["flagged"]) for r in scored], dtype=bool)
    shortcut = np.array([bool(r["anatomy"] and r["anatomy"]["shortcut_warning"]) for r in scored], dtype=bool)
    decisive = answer != INCONCLUSIVE
    right = label == y
    flagged = (band != "High") | ood
    flagged_or_inconclusive = flagged | ~decisive

    def share(hits: np.ndarray) -> dict:
        return share_figure(hits, n_resamples, seed)

    def by_correctness(hits: np.ndarray) -> dict:
        return {"wrong": share(hits[~right]), "right": share(hits[right])}

    return {
        "n": len(rows),
        "scored": len(scored),
        "not_scored": {
            "failed": sum(not r["ok"] for r in rows),
            "no_label": sum(bool(r["ok"]) and r["label"] is None for r in rows),
            "unlabelled_folder": sum(bool(r["ok"]) and truth(r["input"]) is None for r in rows),
        },
        "operating_points": sorted({r["operating_point"] for r in scored}),
        **answer_shares(answer, y, n_resamples, seed),
        "accuracy": share(right),
        "high_band_errors": share((band == "High") & ~right),
        "flagged": {"rule": "band below High, or an out-of-distribution warning"} | by_correctness(flagged),
        "flagged_or_inconclusive": {"rule": "flagged, or the answer is INCONCLUSIVE"}
        | by_correctness(flagged_or_inconclusive),
        "shortcut_warning": by_correctness(shortcut),
    }


def _pct(figure: dict) -> str:
    if figure["value"] is None:
        return "n/a"
    low, high = figure["exact_ci95"]
    return f"{100 * figure['value']:.1f}% ({figure['k']}/{figure['n']}; exact 95% CI {100 * low:.1f}-{100 * high:.1f})"


def summary(figures: dict) -> str:
    """The figures as lines of text."""
    lines = [
        f"{figures['scored']} of {figures['n']} rows scored; not scored: {figures['not_scored']}",
        f"decisive answers right: {_pct(figures['decisive_right'])}",
        f"INCONCLUSIVE: {_pct(figures['inconclusive'])}",
        f"normal films answered NORMAL or INCONCLUSIVE: {_pct(figures['normal_not_called_pneumonia'])}",
        f"label accuracy at {', '.join(figures['operating_points'])}: {_pct(figures['accuracy'])}",
        f"wrong labels in the High band, of all films: {_pct(figures['high_band_errors'])}",
    ]
    for key in ("flagged", "flagged_or_inconclusive", "shortcut_warning"):
        block = figures[key]
        lines.append(f"{key}: wrong {_pct(block['wrong'])}; right {_pct(block['right'])}")
    return "\n".join(lines)


def run(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[seed_parser("bootstrap resampling")],
    )
    parser.add_argument("rows", help="results.jsonl written by python -m xray_xai analyze")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the intervals")
    args = parser.parse_args(argv)
    path = Path(args.rows)
    if not path.is_file():
        raise SystemExit(f"{path} not found: run python -m xray_xai analyze first")
    figures = answer_figures(read_rows(path), args.bootstrap, args.seed)
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    print(summary(figures))
    return figures


main = entry_point(run)

if __name__ == "__main__":
    main()
