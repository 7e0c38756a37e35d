"""How faithful the explanation maps are, and how much of them falls on the lungs.

    python -m xray_xai.evaluation.faithfulness --data DIR --masks MASKDIR --out OUT [--limit N]
    python -m xray_xai.evaluation.faithfulness --data ../shared/data/chest_xray/train --split val \\
        --masks ../shared/data/lung_masks/train --out outputs/faithfulness_val --limit 40

Deletion and insertion (RISE, Petsiuk et al. 2018): the model-input pixels are ranked by a
saliency map and changed ``--step`` (224) at a time, most salient first. Deletion replaces them
by the occlusion baseline (a heavily blurred copy by default, the same perturbation the
occlusion maps are made with); insertion starts from the blurred image and puts the original
pixels back. The score is the calibrated probability of the explained class, which is the
image's labelled class. A faithful map makes the deletion curve fall fast (low AUC) and the
insertion curve rise fast (high AUC). Two seeded random maps are the references: ``random``
(independent noise per pixel) and ``random_smooth`` (noise on a coarse grid, upsampled like a
CAM). Pixel noise changes pixels scattered over the whole film, which restores (insertion) or
keeps (deletion) its texture everywhere after a few steps, so both its curves stay near the
clean probability; a map of regions, even a random one, changes whole regions at a time. The
smooth map is the reference at the maps' own scale.

``--maps`` chooses what is scored: any of the app's CAM methods (``gradcam``, ``hirescam``,
``gradcam++``, ``layercam``) and ``occlusion`` (default: Grad-CAM and occlusion), always next to
the seeded random maps.

Lung figures use reference masks in ``MASKDIR`` (same ``CLASS/NAME.png`` layout as ``DIR``,
255 = lung, resized to the model input with nearest neighbour): the share of each map's
positive mass inside the lungs (as :func:`xray_xai.explain.anatomy.zone_shares` computes it for the
app's shortcut warning) and whether the map's peak is inside. Chance level is the lung-area
fraction. Images without a mask count for deletion/insertion only.

``--split val`` keeps only the classifier's validation patients (the ids saved next to the
checkpoint by training), so run it on ``DATA/train``. The maps are made as the app makes them:
CAMs of the explaining network named in the card, occlusion of the whole ensemble (its calibrated
probability, lung-box members re-framing every occluded copy). Occlusion covers the whole image
(``--window``/``--stride``, default 32/16), or, with ``--lung-focus``, only the box the app
occludes: both lungs plus a margin, found by the app's lung segmenter on each film (the whole
film where its mask fails the plausibility check). Use ``--window 48 --stride 24`` with it for
the app's fast preset, i.e. the occlusion map as the app shows it.

Sanity check (``--sanity``, on by default): every map is made again on a copy of the explaining
network whose head and last stage are re-initialised (:func:`xray_xai.explain.sanity.randomized_top`,
the model-parameter randomisation test of Adebayo et al. 2018); ``randomization_rank_correlation``
is the mean Spearman correlation of the real and randomised maps. A map that explains the model
scores far below 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm import tqdm  # noqa: E402

from .. import CLASSES  # noqa: E402
from ..checkpoint import DEFAULT_LUNG_CHECKPOINT  # noqa: E402
from ..cli import (  # noqa: E402
    checkpoint_parser,
    data_parser,
    entry_point,
    limit_parser,
    seed_parser,
    select,
    split_parser,
    threads_parser,
)
from ..data import Sample, list_samples, mask_path, seeded_subset  # noqa: E402
from ..explain.anatomy import zone_shares  # noqa: E402
from ..explain.cam import CAM_METHODS, compute_cam  # noqa: E402
from ..explain.occlusion import BASELINES, make_baseline, occlusion_map  # noqa: E402
from ..explain.sanity import randomized_top, rank_correlation  # noqa: E402
from ..imaging import InputError, load_image  # noqa: E402
from ..models.classifier import Classifier, explaining_model  # noqa: E402
from ..models.lungs import LungSegmenter  # noqa: E402
from ..pipeline import occlusion_region  # noqa: E402
from ..results import OUTSIDE_KEY, Region  # noqa: E402

MAPS = (*CAM_METHODS, "occlusion")  # what --maps can score; the random references are always scored too
REFERENCES = ("random", "random_smooth")
RANDOM_GRID = 7  # cells per side of the smooth random map: the CAM grid of a 224 px ResNet
STEP_PIXELS = 224  # pixels changed per step, as in RISE
ScoreFn = Callable[[torch.Tensor], np.ndarray]


@dataclass(frozen=True)
class Curve:
    """Score of the explained class after each step of a deletion or insertion."""

    fraction: np.ndarray  # share of the pixels changed, 0 ... 1
    score: np.ndarray

    @property
    def auc(self) -> float:
        return float(np.trapezoid(self.score, self.fraction))


def rank_pixels(saliency: np.ndarray, seed: int | tuple[int, ...] = 0) -> np.ndarray:
    """Rank of every pixel (0 = most salient), ties broken in a seeded random order, not raster order."""
    flat = np.nan_to_num(np.asarray(saliency, dtype=np.float64)).ravel()
    tiebreak = np.random.default_rng(seed).permutation(flat.size)
    order = np.lexsort((tiebreak, -flat))
    ranks = np.empty(flat.size, dtype=np.int64)
    ranks[order] = np.arange(flat.size)
    return ranks


def step_counts(total: int, step: int) -> np.ndarray:
    """Number of pixels changed after each step: 0, step, 2 * step, ..., total."""
    return np.append(np.arange(0, total, step), total)


def perturbation_curve(
    score_fn: ScoreFn,
    start: torch.Tensor,
    finish: torch.Tensor,
    saliency: np.ndarray,
    step: int = STEP_PIXELS,
    batch_size: int = 32,
    seed: int | tuple[int, ...] = 0,
) -> Curve:
    """Scores while the pixels of ``start`` become those of ``finish``, ``step`` at a time, most salient first.

    ``start`` and ``finish`` are ``(1, 1, S, S)`` model inputs; ``saliency`` is ``(S, S)``.
    Deletion is ``(image, baseline)``, insertion ``(blurred, image)``.
    """
    if tuple(np.shape(saliency)) != tuple(start.shape[-2:]):
        raise ValueError(f"saliency map {np.shape(saliency)} does not match the input {tuple(start.shape[-2:])}")
    total = int(np.prod(start.shape[-2:]))
    ranks = torch.from_numpy(rank_pixels(saliency, seed))
    counts = step_counts(total, step)
    first, last = start.reshape(1, total), finish.reshape(1, total)
    scores = []
    for begin in range(0, len(counts), batch_size):
        changed = ranks[None, :] < torch.from_numpy(counts[begin : begin + batch_size])[:, None]
        batch = torch.where(changed, last, first).reshape(-1, *start.shape[1:])
        scores.append(np.asarray(score_fn(batch.contiguous(memory_format=torch.channels_last)), dtype=np.float64))
    return Curve(counts / total, np.concatenate(scores))


def lung_figures(saliency: np.ndarray, lungs: np.ndarray) -> tuple[float | None, bool | None]:
    """Share of the map's positive mass inside the lungs and whether its peak lies inside.

    ``None`` where undefined: the share for a map without positive mass, the peak for a flat map.
    """
    saliency = np.nan_to_num(np.asarray(saliency, dtype=np.float64))
    peak_inside = bool(lungs.flat[int(np.argmax(saliency))]) if saliency.max() > saliency.min() else None
    share = 1.0 - zone_shares(saliency, lungs)[OUTSIDE_KEY] if (saliency > 0).any() else None
    return share, peak_inside


def read_mask(path: Path, size: int) -> np.ndarray:
    """A reference lung mask (255 = lung) squashed to the model input with nearest neighbour."""
    with Image.open(path) as image:
        return np.asarray(image.convert("L").resize((size, size), Image.Resampling.NEAREST)) > 127


def class_score_fn(classifier: Classifier, target_class: int) -> ScoreFn:
    """Calibrated probability of ``target_class`` (1 = PNEUMONIA, 0 = NORMAL) for a batch."""

    def score(batch: torch.Tensor) -> np.ndarray:
        p = classifier.probabilities(batch)
        return p if target_class == 1 else 1.0 - p

    return score


def explanation_maps(
    classifier: Classifier,
    x: torch.Tensor,
    target_class: int,
    args: argparse.Namespace,
    seed: tuple[int, ...],
    region: Region | None = None,
    randomized: torch.nn.Module | None = None,
) -> dict[str, np.ndarray]:
    """The maps named by ``--maps`` (CAM methods by name, "occlusion") and the seeded random maps,
    made as the app makes them: CAMs of the explaining network, occlusion of the whole model
    (through the served runtime). With ``randomized`` (a copy of the whole model), that copy's maps."""
    size = classifier.input_size
    model = classifier.model if randomized is None else randomized
    explainer = (
        classifier.explainer
        if randomized is None
        else explaining_model(randomized, classifier.card.explanations.get("members"))
    )
    maps = {
        method: compute_cam(explainer, x, method=method, target_class=target_class)
        for method in args.maps
        if method in CAM_METHODS
    }
    if "occlusion" in args.maps:
        maps["occlusion"] = occlusion_map(
            model,
            x,
            window=args.window,
            stride=args.stride,
            baseline=args.baseline,
            batch_size=args.batch_size,
            target_class=target_class,
            temperature=classifier.card.temperature,
            region=region,
            served=classifier.serving if randomized is None else None,
            reframe=False,  # as the app: lung-box members keep the clean film's box
        ).map
    return {**maps, **random_maps(size, seed)}


def random_maps(size: int, seed: int | tuple[int, ...]) -> dict[str, np.ndarray]:
    """The references (see :data:`REFERENCES`): noise per pixel, and noise on a
    ``RANDOM_GRID``-square grid upsampled bilinearly to ``size`` (as CAMs are)."""
    rng = np.random.default_rng(seed)
    pixels = rng.random((size, size), dtype=np.float32)
    grid = torch.from_numpy(rng.random((1, 1, RANDOM_GRID, RANDOM_GRID), dtype=np.float32))
    smooth = F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()
    return {"random": pixels, "random_smooth": smooth}


def select_samples(args: argparse.Namespace) -> list[Sample]:
    """Images of the requested classes (and split), a seeded random subset of ``--limit`` of them."""
    samples = select(list_samples(args.data), args.split, args.checkpoint)
    return seeded_subset([s for s in samples if CLASSES[s.label] in args.classes], args.limit, args.seed)


def evaluate_image(
    classifier: Classifier,
    sample: Sample,
    args: argparse.Namespace,
    index: int,
    segmenter: LungSegmenter | None = None,
    randomized: torch.nn.Module | None = None,
) -> tuple[dict, dict[str, Curve]]:
    """Per-method deletion/insertion curves and lung figures for one image; with a ``segmenter``
    the occlusion covers only the box the app would occlude; with ``randomized`` (a copy of the
    model with randomised top layers) the rank correlation of its maps with the real ones."""
    pixels = load_image(sample.path).pixels
    x = classifier.prepare(pixels)
    target = sample.label
    seed = (args.seed, index)  # random map and tie-breaking, reproducible per image
    region = occlusion_region(segmenter.segment(pixels)) if segmenter is not None else None
    maps = explanation_maps(classifier, x, target, args, seed, region)
    sanity = (
        explanation_maps(classifier, x, target, args, seed, region, randomized=randomized)
        if randomized is not None
        else {}
    )
    score_fn = class_score_fn(classifier, target)
    removed, blurred = make_baseline(x, args.baseline), make_baseline(x, "blur")
    mask_file = mask_path(sample, args.masks)
    lungs = read_mask(mask_file, classifier.input_size) if mask_file.is_file() else None
    record = {
        "file": f"{CLASSES[sample.label]}/{sample.path.name}",
        "explained_class": CLASSES[target],
        "probability": float(score_fn(x)[0]),
        "lung_area_fraction": None if lungs is None else float(lungs.mean()),
        "occlusion_region": None if region is None else list(region),
    }
    curves = {}
    kw = {"step": args.step, "batch_size": args.batch_size, "seed": seed}
    for method, saliency in maps.items():
        deletion = perturbation_curve(score_fn, x, removed, saliency, **kw)
        insertion = perturbation_curve(score_fn, blurred, x, saliency, **kw)
        inside, peak = lung_figures(saliency, lungs) if lungs is not None else (None, None)
        record[method] = {
            "deletion_auc": deletion.auc,
            "insertion_auc": insertion.auc,
            "inside_lung_fraction": inside,
            "peak_in_lung": peak,
        }
        if method in sanity and method not in REFERENCES:
            record[method]["randomization_rank_correlation"] = rank_correlation(saliency, sanity[method])
        curves[method] = (deletion, insertion)
    # Where the curves end and start: if these are close to ``probability`` the test cannot discriminate.
    record["probability_deleted"] = float(deletion.score[-1])
    record["probability_blurred"] = float(insertion.score[0])
    return record, curves


def _mean(values: list) -> float | None:
    values = [float(v) for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarize(records: list[dict], maps: list[str]) -> dict:
    """Means per map (``maps`` and the random references), the 95th percentile of the
    outside-lung share, and paired wins over each reference."""
    methods = {}
    for method in [*maps, *REFERENCES]:
        rows = [r[method] for r in records]
        inside = [r["inside_lung_fraction"] for r in rows if r["inside_lung_fraction"] is not None]
        summary = {
            "deletion_auc": _mean([r["deletion_auc"] for r in rows]),
            "insertion_auc": _mean([r["insertion_auc"] for r in rows]),
            "inside_lung_fraction": _mean(inside),
            "peak_in_lung_rate": _mean([r["peak_in_lung"] for r in rows]),
            "outside_lung_share_p95": float(np.percentile(1.0 - np.array(inside), 95)) if inside else None,
            "n_lung": len(inside),
        }
        if method not in REFERENCES:
            correlations = [r.get("randomization_rank_correlation") for r in rows]
            summary["randomization_rank_correlation"] = _mean(correlations)
            for reference in REFERENCES:
                summary[f"vs_{reference}"] = {
                    "deletion_lower_rate": _mean(
                        [r[method]["deletion_auc"] < r[reference]["deletion_auc"] for r in records]
                    ),
                    "insertion_higher_rate": _mean(
                        [r[method]["insertion_auc"] > r[reference]["insertion_auc"] for r in records]
                    ),
                }
        summary["per_image"] = [{"file": r["file"], **r[method]} for r in records]
        methods[method] = summary
    return methods


def plot_curves(
    path: Path, fraction: np.ndarray, mean_curves: dict[str, dict[str, np.ndarray]], methods: dict, n: int
) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    for ax, kind in zip(axes, ("deletion", "insertion"), strict=True):
        for method, curves in mean_curves.items():
            ax.plot(fraction, curves[kind], label=f"{method} (AUC {methods[method][f'{kind}_auc']:.3f})")
        ax.set(
            xlabel="fraction of pixels " + ("removed" if kind == "deletion" else "inserted"),
            title=f"{kind} (mean of {n} images)",
            ylim=(0, 1.02),
        )
        ax.legend(fontsize=8)
    axes[0].set_ylabel("calibrated P(explained class)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    common = [
        data_parser(),
        checkpoint_parser(),
        split_parser(),
        limit_parser(),
        seed_parser("subset, random maps and tie-breaking"),
        threads_parser(),
    ]
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, parents=common
    )
    parser.add_argument("--masks", required=True, help="reference lung masks, CLASS/NAME.png (255 = lung)")
    parser.add_argument("--out", required=True, help="output folder for faithfulness.json and the plot")
    parser.add_argument(
        "--classes", nargs="+", choices=CLASSES, default=["PNEUMONIA"], help="which labelled classes to explain"
    )
    parser.add_argument("--window", type=int, default=32, help="occlusion window (model-input px)")
    parser.add_argument("--stride", type=int, default=16, help="occlusion stride (model-input px)")
    parser.add_argument(
        "--maps", nargs="+", choices=MAPS, default=["gradcam", "occlusion"],
        help="maps to score: CAM methods by name and/or occlusion (the seeded random maps are always scored)",
    )  # fmt: skip
    parser.add_argument(
        "--lung-focus", action="store_true", help="occlude only the box around the lungs, as the app does"
    )
    parser.add_argument(
        "--lung-checkpoint", default=str(DEFAULT_LUNG_CHECKPOINT), help="lung segmenter card used by --lung-focus"
    )
    parser.add_argument("--baseline", choices=BASELINES, default="blur", help="occlusion and deletion baseline")
    parser.add_argument("--step", type=int, default=STEP_PIXELS, help="pixels changed per deletion/insertion step")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--sanity", action=argparse.BooleanOptionalAction, default=True,
        help="model-parameter randomisation test: each map again with the head and last stage re-initialised",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.maps = list(dict.fromkeys(args.maps))  # each map once, in the order given
    if args.lung_focus and "occlusion" not in args.maps:
        parser.error("--lung-focus restricts the occlusion map: add occlusion to --maps")
    return args


def run(argv: list[str] | None = None) -> dict:
    """The command: writes ``OUT/faithfulness.json`` and the curves, prints a summary; returns what
    it writes to ``faithfulness.json``."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    segmenter = LungSegmenter.load(args.lung_checkpoint) if args.lung_focus else None
    classifier = Classifier.load(args.checkpoint, segmenter=segmenter)
    randomized = randomized_top(classifier.model, seed=args.seed) if args.sanity else None
    samples = select_samples(args)
    if not samples:
        raise SystemExit(f"No {'/'.join(args.classes)} images selected under {args.data}.")
    records, failures, sums = [], [], {}
    for index, sample in enumerate(tqdm(samples, desc="faithfulness", unit="img", file=sys.stderr)):
        try:
            record, curves = evaluate_image(classifier, sample, args, index, segmenter, randomized)
        except InputError as error:
            failures.append({"file": f"{CLASSES[sample.label]}/{sample.path.name}", "reason": str(error)})
            continue
        records.append(record)
        for method, (deletion, insertion) in curves.items():
            acc = sums.setdefault(method, {"deletion": 0.0, "insertion": 0.0})
            acc["deletion"] = acc["deletion"] + deletion.score
            acc["insertion"] = acc["insertion"] + insertion.score
    if not records:
        raise SystemExit("None of the selected images could be read.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mean_curves = {m: {k: v / len(records) for k, v in c.items()} for m, c in sums.items()}
    total = classifier.input_size**2
    fraction = step_counts(total, args.step) / total
    methods = summarize(records, args.maps)
    areas = [r["lung_area_fraction"] for r in records if r["lung_area_fraction"] is not None]
    result = {
        "n": len(records),
        "n_with_mask": len(areas),
        "lung_area_fraction": _mean(areas),
        "probability": {  # mean P(explained class): clean, all pixels deleted, blurred (insertion start)
            name: _mean([r[key] for r in records])
            for name, key in (
                ("clean", "probability"),
                ("deleted", "probability_deleted"),
                ("blurred", "probability_blurred"),
            )
        },
        "chance_level": "a map spread at random puts lung_area_fraction of its mass inside the lungs",
        "methods": methods,
        "settings": {
            "data": str(Path(args.data).resolve()),
            "masks": str(Path(args.masks).resolve()),
            "split": args.split,
            "classes": args.classes,
            "explained_class": "the image's labelled class",
            "score": "calibrated probability of the explained class",
            "step_pixels": args.step,
            "deletion_baseline": args.baseline,
            "insertion_start": "blur",
            "occlusion": {
                "window": args.window,
                "stride": args.stride,
                "baseline": args.baseline,
                "region": "the app's lung box" if args.lung_focus else "whole image",
            }
            if "occlusion" in args.maps
            else None,
            "maps": [*args.maps, *REFERENCES],
            "sanity": "Spearman correlation of each map with the same map of a copy whose head and last stage "
            "are re-initialised (Adebayo et al. 2018)"
            if args.sanity
            else None,
            "cams": "xray_xai.explain.cam.compute_cam(method=NAME) on the classifier's explaining network(s)",
            "occlusion_model": "the whole model (every member), as the app",
            "seed": args.seed,
            "checkpoint": str(Path(args.checkpoint).resolve()),
            "checkpoint_sha256": classifier.card.sha256,
            "lung_segmenter_sha256": segmenter.card.sha256 if segmenter is not None else None,
        },
        "mean_curves": {
            "fraction": fraction.tolist(),
            **{m: {k: v.tolist() for k, v in c.items()} for m, c in mean_curves.items()},
        },
        "probabilities": {r["file"]: r["probability"] for r in records},
        "occlusion_regions": {r["file"]: r["occlusion_region"] for r in records},  # (y0, y1, x0, x1); null: whole image
        "failed": {"count": len(failures), "files": failures},
    }
    plot_curves(out / "faithfulness_curves.png", fraction, mean_curves, methods, len(records))
    (out / "faithfulness.json").write_text(json.dumps(result, indent=2) + "\n")
    brief = {m: {k: v for k, v in s.items() if k not in ("per_image",)} for m, s in methods.items()}
    print(
        json.dumps(
            {
                "n": result["n"],
                "lung_area_fraction": result["lung_area_fraction"],
                "probability": result["probability"],
                "methods": brief,
            }
        )
    )
    return result


main = entry_point(run)

if __name__ == "__main__":
    main()
