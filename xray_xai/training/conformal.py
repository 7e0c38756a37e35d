"""Fit the conformal thresholds and re-fit the ordered operating points of a checkpoint.

    python -m xray_xai.training.conformal --data ../shared/data/chest_xray \
        --checkpoint checkpoints/classifier.json [--alpha auto|A] [--out runs/conformal_candidate/classifier.json] \
        [--report-shift ../shared/data/chest_xray/shift_dev]

Everything is fitted on the checkpoint's validation films only (``DATA/train`` restricted to the
validation patients saved next to the card):

- the **operating points** (:func:`xray_xai.calibration.operating_points`): balanced at the
  validation prevalence, screening at most and rule-in at least balanced;
- the **conformal thresholds** (:mod:`xray_xai.conformal`) at ``--alpha``. With ``--alpha auto``
  (the default) alpha is chosen on validation alone: the smallest alpha in ``--alphas`` whose
  held-out validation share of INCONCLUSIVE answers (5-fold patient-grouped cross-fitting; films
  flagged by the out-of-distribution check count as INCONCLUSIVE) is at most
  ``--max-inconclusive``; the largest alpha if none is.

The card is copied to ``--out`` with both written into it, and next to it the files that make
it a loadable checkpoint (the unchanged weights, the validation patient ids, the lung
segmenter); ``checkpoints/`` is never written. Per-film validation probabilities are cached
next to ``--out`` (``conformal_scores.json``, keyed by the weights' sha256), so a rerun with
another alpha does not score the films again.

``--report-shift DIR`` also scores ``DIR`` (e.g. shift_dev) for *evaluation only*: nothing is
fitted or chosen on it. It reports, with 95% bootstrap intervals (:func:`scipy.stats.bootstrap`,
percentile, films resampled): the share of decisive answers that are right, the share
INCONCLUSIVE, the share of normal films answered NORMAL or INCONCLUSIVE, per-class coverage
next to validation's, and the sensitivity and specificity of the operating points (screening
against balanced, rule-in against balanced, as paired differences).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import StratifiedGroupKFold
from tqdm import tqdm

from .. import CLASSES
from ..calibration import OPERATING_POINTS, operating_points
from ..checkpoint import DEFAULT_CHECKPOINT, ModelCard, read_card
from ..conformal import INCONCLUSIVE, NORMAL, PNEUMONIA, ConformalThresholds, answers, coverage, fit_mondrian
from ..data import VAL_PATIENTS_FILE, Sample, list_samples, patient_id, validation_samples
from ..imaging import InputError, load_image
from ..metrics import answer_shares, percentile_interval, share_figure
from ..preprocess import read_dataset_image

ALPHAS = (0.01, 0.02, 0.05, 0.1)
MAX_INCONCLUSIVE = 0.10
SCORES_FILE = "conformal_scores.json"
DEFAULT_OUT = Path("runs/conformal_candidate/classifier.json")


# --- scoring ------------------------------------------------------------------------------------


def score_films(classifier, samples: list[Sample], batch_size: int = 32, progress: bool = True) -> dict:
    """Calibrated P(pneumonia) of each film (read with :func:`read_dataset_image`, as in training)
    and whether the app's out-of-distribution check flags it (image checks on the decoded upload
    plus the feature distance against the card's threshold). Unreadable files are skipped."""
    from ..models.ood import assess_ood

    threshold = classifier.card.ood.get("threshold")
    files, labels, probabilities, flagged, skipped = [], [], [], [], []
    batch, images = [], []

    def flush() -> None:
        if batch:
            scores = classifier.score(torch.cat(batch))
            distances = [None] * len(batch) if scores.distance is None else [float(d) for d in scores.distance]
            probabilities.extend(float(p) for p in scores.probabilities)
            flagged.extend(
                bool(assess_ood(image, d, threshold).flagged) for image, d in zip(images, distances, strict=True)
            )
            batch.clear()
            images.clear()

    for sample in tqdm(samples, desc="scoring", unit="film", file=sys.stderr, disable=not progress):
        try:
            image = load_image(sample.path)
            pixels = read_dataset_image(sample.path)
        except (InputError, OSError) as error:
            skipped.append([f"{CLASSES[sample.label]}/{sample.path.name}", str(error)])
            continue
        batch.append(classifier.prepare(pixels))
        images.append(image)
        files.append(f"{CLASSES[sample.label]}/{sample.path.name}")
        labels.append(int(sample.label))
        if len(batch) == batch_size:
            flush()
    flush()
    return {"files": files, "labels": labels, "probabilities": probabilities, "flagged": flagged, "skipped": skipped}


def cached_scores(cache: Path, key: str, sha256: str, samples: list[Sample], compute) -> dict:
    """The scores stored under ``key`` in ``cache`` when they were made by the same weights for the
    same films; otherwise ``compute()``, stored there."""
    stored = json.loads(cache.read_text()) if cache.is_file() else {}
    wanted = sorted(f"{CLASSES[s.label]}/{s.path.name}" for s in samples)
    entry = stored.get(key)
    if (
        entry
        and stored.get("classifier_sha256") == sha256
        and sorted(entry["files"] + [f for f, _ in entry["skipped"]]) == wanted
    ):
        print(f"{key}: {len(entry['files'])} films read from {cache}", file=sys.stderr)
        return entry
    if stored.get("classifier_sha256") != sha256:
        stored = {"classifier_sha256": sha256}
    stored[key] = compute()
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(stored) + "\n")
    return stored[key]


def arrays(scores: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.asarray(scores["probabilities"], dtype=np.float64),
        np.asarray(scores["labels"], dtype=int),
        np.asarray(scores["flagged"], dtype=bool),
    )


# --- fitting ------------------------------------------------------------------------------------


def choose_alpha(
    probabilities: np.ndarray,
    labels: np.ndarray,
    flagged: np.ndarray | None,
    groups: np.ndarray,
    alphas=ALPHAS,
    max_inconclusive: float = MAX_INCONCLUSIVE,
) -> tuple[float, dict]:
    """The smallest alpha whose held-out (:func:`cross_fitted`) validation INCONCLUSIVE share is at
    most ``max_inconclusive`` (the largest alpha if none is), and the held-out figures of every
    alpha tried. Held out rather than in sample: a new film is answered by thresholds it did not
    help to fit, and in sample the share at a given alpha is off by about the resolution of the
    class order statistics (a few films either way on 200 normal films)."""
    figures = {str(a): cross_fitted(probabilities, labels, flagged, groups, a) for a in sorted(alphas)}
    within = [a for a in sorted(alphas) if figures[str(a)]["inconclusive"] <= max_inconclusive]
    return (within[0] if within else max(alphas)), figures


def alpha_rule(alphas, max_inconclusive: float) -> str:
    return (
        f"the smallest alpha in {sorted(alphas)} whose held-out validation share of INCONCLUSIVE answers "
        f"(OOD-flagged films included; 5-fold patient-grouped cross-fitting within validation) is at most "
        f"{max_inconclusive}; the largest if none is"
    )


def cross_fitted(
    probabilities: np.ndarray,
    labels: np.ndarray,
    flagged: np.ndarray | None,
    groups: np.ndarray,
    alpha: float,
    folds: int = 5,
    repeats: int = 5,
) -> dict:
    """Held-out validation figures: the validation films split into ``folds`` patient-grouped,
    class-stratified folds; each fold answered with thresholds fitted on the others; the figures
    of the pooled answers averaged over ``repeats`` shuffles. Unlike the in-sample figures, no
    film is answered by thresholds it helped to fit."""
    p, y = np.asarray(probabilities, dtype=np.float64), np.asarray(labels).astype(int)
    flags = np.zeros(len(y), bool) if flagged is None else np.asarray(flagged, dtype=bool)
    truth = np.where(y == 1, PNEUMONIA, NORMAL)
    runs = []
    for seed in range(repeats):
        given, covered = np.empty(len(y), dtype=object), np.zeros(len(y), bool)
        for train, test in StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(p, y, groups):
            t = fit_mondrian(p[train], y[train], alpha)
            given[test] = answers(p[test], t, flags[test])
            covered[test] = np.where(y[test] == 1, 1.0 - p[test] <= t.q_pneumonia, p[test] <= t.q_normal)
        decisive = given != INCONCLUSIVE
        runs.append(
            {
                "coverage_normal": covered[y == 0].mean(),
                "coverage_pneumonia": covered[y == 1].mean(),
                "inconclusive": (~decisive).mean(),
                "decisive_accuracy": (given[decisive] == truth[decisive]).mean(),
                "normal_not_called_pneumonia": (given[y == 0] != PNEUMONIA).mean(),
            }
        )
    out = {key: float(np.mean([run[key] for run in runs])) for key in runs[0]}
    out["rule"] = (
        f"{folds}-fold patient-grouped, class-stratified cross-fitting within validation; mean of {repeats} shuffles"
    )
    return out


def refit_card(
    card: ModelCard,
    probabilities: np.ndarray,
    labels: np.ndarray,
    alpha: float,
    flagged: np.ndarray | None = None,
    extra: dict | None = None,
) -> ModelCard:
    """A copy of ``card`` with its operating points re-fitted and its conformal thresholds fitted
    from per-film validation P(pneumonia) and labels (the weights, and so their sha256, are untouched)."""
    thresholds = fit_mondrian(probabilities, labels, alpha)
    points = operating_points(probabilities, labels)
    order = [points[name]["threshold"] for name in ("screening", "balanced", "rule_in")]
    if order != sorted(order):  # guaranteed by operating_points; checked before anything is written
        raise AssertionError(f"operating points out of order: screening, balanced, rule_in = {order}")
    conformal = (
        thresholds.to_json() | {"validation": coverage(probabilities, labels, thresholds, flagged)} | (extra or {})
    )
    return replace(card, operating_points=points, conformal=conformal)


def copy_checkpoint_files(card_path: Path, card: ModelCard, out_dir: Path) -> list[str]:
    """Copy what makes the card at ``out_dir`` loadable: its weights, the validation patient ids
    and the lung segmenter (card and weights) it names. Files already identical are kept."""
    source = card_path.parent
    names = [card.weights, VAL_PATIENTS_FILE]
    segmenter = card.framing.get("segmenter") if card.framing else None
    if segmenter:
        names += [segmenter, json.loads((source / segmenter).read_text())["weights"]]
    copied = []
    for name in names:
        src, dst = source / name, out_dir / name
        if src.is_file() and (
            not dst.is_file() or dst.stat().st_size != src.stat().st_size or dst.stat().st_mtime < src.stat().st_mtime
        ):
            shutil.copy2(src, dst)
            copied.append(name)
    return copied


# --- reporting ----------------------------------------------------------------------------------


def interval(statistic, *samples: np.ndarray, n_resamples: int = 2000, seed: int = 0) -> list[float] | None:
    """Percentile bootstrap interval (95%) of ``statistic(*samples)``, films resampled together."""
    if not samples[0].size:
        return None
    return percentile_interval(samples, statistic, n_resamples, seed, paired=True)


def answer_figures(
    probabilities: np.ndarray,
    labels: np.ndarray,
    flagged: np.ndarray,
    thresholds: ConformalThresholds,
    n_resamples: int,
    seed: int,
) -> dict:
    """Decisive accuracy, INCONCLUSIVE share, normal films not called PNEUMONIA and per-class
    coverage, each with its interval."""
    shares = answer_shares(answers(probabilities, thresholds, flagged), labels, n_resamples, seed)
    normal_keep = probabilities <= thresholds.q_normal
    pneumonia_keep = 1.0 - probabilities <= thresholds.q_pneumonia
    covered = np.where(labels == 1, pneumonia_keep, normal_keep)
    return {
        "decisive_right": shares["decisive_right"],
        "inconclusive": shares["inconclusive"],
        "flagged": share_figure(flagged, n_resamples, seed),
        "normal_not_called_pneumonia": shares["normal_not_called_pneumonia"],
        "coverage_normal": share_figure(covered[labels == 0], n_resamples, seed),
        "coverage_pneumonia": share_figure(covered[labels == 1], n_resamples, seed),
        "coverage": share_figure(covered, n_resamples, seed),
    }


def point_figures(probabilities: np.ndarray, labels: np.ndarray, points: dict, n_resamples: int, seed: int) -> dict:
    """Sensitivity and specificity at each point, and the paired differences screening - balanced
    (sensitivity) and rule_in - balanced (specificity), with bootstrap intervals."""
    positive = {name: probabilities >= points[name]["threshold"] for name in OPERATING_POINTS}
    pos, neg = labels == 1, labels == 0
    out = {
        name: {
            "threshold": points[name]["threshold"],
            "sensitivity": share_figure(positive[name][pos], n_resamples, seed),
            "specificity": share_figure(~positive[name][neg], n_resamples, seed),
        }
        for name in OPERATING_POINTS
    }
    difference = lambda a, b: float(np.mean(a) - np.mean(b))  # noqa: E731
    out["screening_minus_balanced_sensitivity"] = {
        "value": difference(positive["screening"][pos], positive["balanced"][pos]) if pos.any() else None,
        "ci95": interval(
            difference,
            positive["screening"][pos].astype(float),
            positive["balanced"][pos].astype(float),
            n_resamples=n_resamples,
            seed=seed,
        ),
    }
    out["rule_in_minus_balanced_specificity"] = {
        "value": difference(~positive["rule_in"][neg], ~positive["balanced"][neg]) if neg.any() else None,
        "ci95": interval(
            difference,
            (~positive["rule_in"][neg]).astype(float),
            (~positive["balanced"][neg]).astype(float),
            n_resamples=n_resamples,
            seed=seed,
        ),
    }
    return out


def parse_alpha(value: str) -> float | str:
    if value == "auto":
        return value
    alpha = float(value)
    if not 0 < alpha < 1:
        raise argparse.ArgumentTypeError("alpha must lie in (0, 1) or be 'auto'")
    return alpha


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data", required=True, help="dataset root holding train/ (the validation patients are drawn from it)"
    )
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="model card JSON (read only)")
    parser.add_argument(
        "--alpha",
        type=parse_alpha,
        default="auto",
        help="conformal miscoverage per class, or 'auto' (chosen on validation)",
    )
    parser.add_argument(
        "--alphas",
        type=float,
        nargs="+",
        default=list(ALPHAS),
        help="the alphas 'auto' chooses from, and those reported",
    )
    parser.add_argument(
        "--max-inconclusive",
        type=float,
        default=MAX_INCONCLUSIVE,
        help="'auto': the largest held-out validation share of INCONCLUSIVE answers",
    )
    parser.add_argument(
        "--out", default=str(DEFAULT_OUT), help="where to write the re-fitted card (never checkpoints/)"
    )
    parser.add_argument(
        "--report-shift", default=None, help="a NORMAL/PNEUMONIA folder scored for evaluation only, e.g. shift_dev"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the intervals")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--rescore", action="store_true", help="score the films again even when cached")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    card_path, out = Path(args.checkpoint), Path(args.out)
    if out.resolve().parent == card_path.resolve().parent:
        raise SystemExit(
            f"Refusing to write next to {card_path}: write a candidate elsewhere (default {DEFAULT_OUT}) "
            "and copy it if it ships."
        )
    card = read_card(card_path)
    cache = out.parent / SCORES_FILE
    if args.rescore and cache.is_file():
        cache.unlink()
    classifier = None

    def scorer(samples):
        def compute():
            nonlocal classifier
            if classifier is None:
                from ..models.classifier import Classifier

                classifier = Classifier.load(card_path)
            return score_films(classifier, samples, args.batch_size)

        return compute

    try:
        val_samples = validation_samples(list_samples(Path(args.data) / "train"), card_path)
    except FileNotFoundError as error:
        raise SystemExit(str(error)) from None
    val = cached_scores(cache, "validation", card.sha256, val_samples, scorer(val_samples))
    p, y, flagged = arrays(val)

    alphas = sorted(set(args.alphas) | ({args.alpha} if args.alpha != "auto" else set()))
    groups = np.array([patient_id(name.split("/", 1)[1]) for name in val["files"]])
    chosen, held_out = choose_alpha(p, y, flagged, groups, alphas, args.max_inconclusive)
    alpha = chosen if args.alpha == "auto" else args.alpha
    by_alpha = {str(a): coverage(p, y, fit_mondrian(p, y, a), flagged) for a in alphas}
    extra = {
        "alpha_rule": alpha_rule(args.alphas, args.max_inconclusive)
        if args.alpha == "auto"
        else "given on the command line",
        "fitted_on": f"validation: {len(y)} films of the checkpoint's validation patients (DATA/train), "
        "read with read_dataset_image",
        "validation_by_alpha": by_alpha,
        "validation_cross_fitted_by_alpha": held_out,
        "validation_cross_fitted": held_out[str(alpha)],
    }
    new_card = refit_card(card, p, y, alpha, flagged, extra)
    out.parent.mkdir(parents=True, exist_ok=True)
    copied = copy_checkpoint_files(card_path, card, out.parent)
    new_card.to_json(out)
    thresholds = ConformalThresholds.from_dict(new_card.conformal)

    report = {
        "checkpoint": str(card_path),
        "out": str(out),
        "copied": copied,
        "alpha": alpha,
        "alpha_rule": extra["alpha_rule"],
        "conformal": {
            k: v
            for k, v in new_card.conformal.items()
            if k not in ("validation_by_alpha", "validation_cross_fitted_by_alpha")
        },
        "validation_by_alpha": by_alpha,
        "operating_points": {"before": card.operating_points, "after": new_card.operating_points},
        "validation": {
            "answers": answer_figures(p, y, flagged, thresholds, args.bootstrap, args.seed),
            "cross_fitted": extra["validation_cross_fitted"],
            "cross_fitted_by_alpha": held_out,
        },
    }
    if args.report_shift:
        shift_samples = list_samples(args.report_shift)
        shift = cached_scores(
            cache, "shift:" + str(Path(args.report_shift).resolve()), card.sha256, shift_samples, scorer(shift_samples)
        )
        sp, sy, sflag = arrays(shift)
        report["shift"] = {
            "data": str(args.report_shift),
            "note": "evaluation only: nothing is fitted or chosen on these films",
            "answers": answer_figures(sp, sy, sflag, thresholds, args.bootstrap, args.seed),
            "answers_by_alpha": {str(a): coverage(sp, sy, fit_mondrian(p, y, a), sflag) for a in alphas},
            "operating_points": point_figures(sp, sy, new_card.operating_points, args.bootstrap, args.seed),
            "operating_points_before": point_figures(sp, sy, card.operating_points, args.bootstrap, args.seed),
        }
    report_path = out.parent / "conformal_report.json"
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    print(summary(report))
    print(f"card: {out}\nreport: {report_path}", file=sys.stderr)
    return report


def _pct(figure: dict) -> str:
    if figure.get("value") is None:
        return "n/a"
    ci = figure.get("ci95") or [float("nan")] * 2
    text = f"{100 * figure['value']:.2f}% [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    if "k" in figure:
        exact = figure["exact_ci95"]
        text += f" ({figure['k']}/{figure['n']}; exact [{100 * exact[0]:.1f}, {100 * exact[1]:.1f}])"
    return text


def summary(report: dict) -> str:
    """The report in lines a person reads."""
    lines = [
        f"alpha {report['alpha']} ({report['alpha_rule']})",
        f"q_normal {report['conformal']['q_normal']:.4f} (NORMAL kept when p <= it), "
        f"q_pneumonia {report['conformal']['q_pneumonia']:.4f} "
        f"(PNEUMONIA kept when p >= {1 - report['conformal']['q_pneumonia']:.4f})",
    ]
    lines.append(
        "validation cross-fitted by alpha: "
        + "; ".join(
            f"{a}: inconclusive {100 * f['inconclusive']:.1f}%, decisive right {100 * f['decisive_accuracy']:.2f}%, "
            f"coverage N {100 * f['coverage_normal']:.1f}% P {100 * f['coverage_pneumonia']:.1f}%"
            for a, f in report["validation"]["cross_fitted_by_alpha"].items()
        )
    )
    lines.append(
        "validation by alpha: "
        + "; ".join(
            f"{a}: inconclusive {100 * f['inconclusive']:.1f}%, "
            f"decisive right {100 * (f['decisive_accuracy'] or 0):.2f}%"
            for a, f in report["validation_by_alpha"].items()
        )
    )
    splits = [("validation", report["validation"]["answers"])] + (
        [("shift", report["shift"]["answers"])] if "shift" in report else []
    )
    for key, label in (
        ("decisive_right", "decisive answers right (floor 97.5%, goal 99%)"),
        ("inconclusive", "INCONCLUSIVE (at most 15%, goal 10%)"),
        ("normal_not_called_pneumonia", "normal films NORMAL or INCONCLUSIVE (floor 90%, goal 95%)"),
        ("coverage_normal", "coverage NORMAL"),
        ("coverage_pneumonia", "coverage PNEUMONIA"),
        ("flagged", "OOD-flagged"),
    ):
        lines.append(f"{label}: " + " | ".join(f"{name} {_pct(figures[key])}" for name, figures in splits))
    for name in OPERATING_POINTS:
        b, a = report["operating_points"]["before"][name], report["operating_points"]["after"][name]
        lines.append(
            f"{name}: threshold {b['threshold']:.4f} -> {a['threshold']:.4f} "
            f"(validation sens {a['sensitivity']:.4f}, spec {a['specificity']:.4f})"
        )
    if "shift" in report:
        points = report["shift"]["operating_points"]
        for name in OPERATING_POINTS:
            lines.append(
                f"shift {name} (t={points[name]['threshold']:.4f}): "
                f"sensitivity {_pct(points[name]['sensitivity'])}, specificity {_pct(points[name]['specificity'])}"
            )
        for key in ("screening_minus_balanced_sensitivity", "rule_in_minus_balanced_specificity"):
            f = points[key]
            lines.append(
                f"shift {key}: {f['value']:+.4f} [{f['ci95'][0]:+.4f}, {f['ci95'][1]:+.4f}]"
                if f["ci95"]
                else f"shift {key}: {f['value']}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
