"""Assemble trained classifiers into one deep-ensemble checkpoint and calibrate it for shift.

    python -m xray_xai.training.ensemble --data ../shared/data/chest_xray \
        --members runs/candidates/a/classifier.json runs/candidates/b/classifier.json --out checkpoints/

The members must share the architecture, the input and the validation patients (so that no
member has seen a validation film). Everything fitted here comes from the training split and
that validation split, never from a test film:

- the **temperature** of the ensemble's mean logit is fitted on the validation films *and*
  perturbed copies of them (blur, noise, exposure), so that it holds on softer, noisier or
  differently exposed films than the training batch as well (Tomani et al., CVPR 2021:
  post-hoc calibration under domain shift);
- the **operating points** come from the clean validation films, as for a single network;
- the members' convolution kernels are rounded to float16 *before* any of this is fitted, and
  stored so: the file is half the size of float32 weights and every fitted value describes it;
- the **uncertainty limit**: the standard deviation of the members' calibrated probabilities
  that only ``--uncertainty-quantile`` of validation films exceed; above it the app lowers the
  confidence band by one step;
- the **OOD statistics** are fitted on the members' pooled features side by side;
- the **explaining network** (``--explainer closest``, the default): the member whose calibrated
  probabilities on validation are closest to the ensemble's; the app draws its Grad-CAM and
  occlusion maps from that member alone, at one network's cost (``--explainer all`` averages
  the maps over every member instead).

Members trained on lung-box crops (:mod:`xray_xai.training.lung_crops`) are named with
``--lung-box``: the ensemble feeds them the lung box of each film (:mod:`xray_xai.models.framing`),
cut with the lung segmenter ``--segmenter``, which is copied next to the ensemble's card.
Everything above is then fitted on the composite model as the app serves it. Their maps would
be in the crop's frame, so the explaining network is always a whole-film member.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from ..calibration import fit_temperature, nll, operating_points, sigmoid
from ..checkpoint import DEFAULT_LUNG_CHECKPOINT, ModelCard, round_kernels
from ..cli import DATASET, data_parser, seed_parser, threads_parser
from ..data import VAL_PATIENTS_FILE, describe_split, list_samples, split_with_patients
from ..metrics import ece
from ..models.ensemble import Ensemble
from ..models.factory import load_checkpoint
from ..models.framing import LUNG_BOX_MARGIN, frame_members
from ..models.lungs import LungSegmenter
from ..models.ood import fit_feature_stats, mahalanobis
from .augment import blur_each
from .finalize import calibration_metrics, load_pixels, measure_latency, predict_logits, save_within_tolerance

# Perturbations of the validation films that the temperature must hold on: softer films
# (Gaussian blur, px at 224), noisier films and other exposures (gamma). Clean films are always included.
Perturbation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
PERTURBATIONS: dict[str, Perturbation] = {
    "blur_1px": lambda x, g: blur_each(x, torch.full((len(x),), 1.0)),
    "blur_2px": lambda x, g: blur_each(x, torch.full((len(x),), 2.0)),
    "noise_0.03": lambda x, g: (x + 0.03 * torch.randn(x.shape, generator=g)).clamp(0, 1),
    "gamma_0.7": lambda x, g: x.clamp_min(0) ** 0.7,
    "gamma_1.4": lambda x, g: x.clamp_min(0) ** 1.4,
}
UNCERTAINTY_QUANTILE = 0.95


def member_logits(model: Ensemble, features: np.ndarray) -> np.ndarray:
    """``(N, M)`` raw logits of each member from the ensemble's pooled features."""
    with torch.inference_mode():
        return model.member_logits_from_features(torch.from_numpy(features).float()).double().numpy()


def member_gaps(member_logits: np.ndarray, temperature: float) -> np.ndarray:
    """``(N, M)`` absolute differences between each member's calibrated probability and the
    ensemble's (which calibrates the mean of the members' logits)."""
    ensemble = sigmoid(member_logits.mean(axis=1) / temperature)
    return np.abs(sigmoid(member_logits / temperature) - ensemble[:, None])


def closest_member(member_logits: np.ndarray, temperature: float, excluded: Sequence[int] = ()) -> int:
    """The member whose calibrated probabilities are closest (mean absolute difference) to the
    ensemble's, among those not ``excluded``."""
    gaps = member_gaps(member_logits, temperature).mean(axis=0)
    gaps[list(excluded)] = np.inf
    return int(np.argmin(gaps))


def shared_validation_patients(cards: list[Path]) -> set[str]:
    """The validation patients of every member, which must be the same set."""
    sets = [frozenset(json.loads((card.parent / VAL_PATIENTS_FILE).read_text())["patients"]) for card in cards]
    if len(set(sets)) != 1:
        raise SystemExit(
            "The members were validated on different patients: "
            "one member's validation films were another's training films."
        )
    return set(sets[0])


def assemble(cards: list[Path]) -> tuple[Ensemble, list[ModelCard]]:
    """Load the members (each checked against its sha256) into one ensemble of whole-film networks."""
    loaded = [load_checkpoint(card) for card in cards]
    if any(card.framing for _, card, _ in loaded):
        raise SystemExit("Members must be plain networks; name the ones trained on lung-box crops with --lung-box.")
    member_cards = [card for _, card, _ in loaded]
    first = member_cards[0]
    for card in member_cards[1:]:
        if (card.arch, card.input_size, card.mean, card.std, card.classes) != (
            first.arch,
            first.input_size,
            first.mean,
            first.std,
            first.classes,
        ):
            raise SystemExit("Ensemble members must share architecture, input size, normalisation and classes.")
    ensemble = Ensemble([model for model, _, _ in loaded]).eval().to(memory_format=torch.channels_last)
    return ensemble, member_cards


def member_arguments(member_cards: list[ModelCard]) -> dict[str, Any]:
    """The members' timm arguments for the ensemble's card: shared as ``model_kwargs``, or one per
    member as ``member_kwargs`` where they differ (e.g. one member at output stride 16)."""
    kwargs = [card.model_kwargs for card in member_cards]
    if all(k == kwargs[0] for k in kwargs):
        return {"model_kwargs": kwargs[0]}
    return {"member_kwargs": kwargs}


def perturbed_logits(model: Ensemble, x_val: torch.Tensor, clean: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Ensemble logits of the validation films: ``clean`` (already computed) and each perturbed copy."""
    generator = torch.Generator().manual_seed(seed)
    out = {"clean": clean}
    for name, perturb in PERTURBATIONS.items():
        out[name] = predict_logits(model, perturb(x_val.float(), generator))
    return out


def calibration_report(
    logits: dict[str, np.ndarray], labels: np.ndarray, temperature: float
) -> dict[str, dict[str, float]]:
    """ECE and NLL per validation set (clean and each perturbation), before and after the temperature."""
    report = {}
    for name, z in logits.items():
        raw, cal = sigmoid(z), sigmoid(z / temperature)
        report[name] = {
            "auroc": float(roc_auc_score(labels, cal)),
            "ece_before": ece(raw, labels),
            "ece_after": ece(cal, labels),
            "nll_before": nll(raw, labels),
            "nll_after": nll(cal, labels),
        }
    return report


def split_seed(card: ModelCard, default: int | None = None) -> int | None:
    """The seed that chose the validation patients (a member's own ``seed`` only orders its training)."""
    return card.training.get("config", {}).get("split_seed", default)


def explainer_section(
    explainer: str, val_member_logits: np.ndarray, temperature: float, lung_box: Sequence[int] = ()
) -> dict:
    """The card's ``explanations`` entry naming the members whose maps the app shows (never a
    lung-box member: its maps are in its crop's frame)."""
    if explainer == "all":
        if lung_box:
            raise SystemExit(
                "--explainer all would average maps of lung-box members, which are in their crops' frames; use closest."
            )
        return {}
    k = closest_member(val_member_logits, temperature, excluded=lung_box)
    gap = member_gaps(val_member_logits, temperature)[:, k]
    return {
        "members": [k],
        "members_rule": "the whole-film member whose calibrated P(pneumonia) on validation is closest "
        "to the ensemble's (mean absolute difference)",
        "members_gap": {"mean": float(gap.mean()), "p95": float(np.quantile(gap, 0.95))},
    }


def lung_box_framing(
    cards: list[Path], lung_box: list[Path], segmenter: Path, out: Path
) -> tuple[dict, LungSegmenter | None]:
    """The card's ``framing`` for the members named by ``--lung-box`` ({} without any) and the
    loaded segmenter, after copying it next to the ensemble's card, where the app will load it from."""
    if not lung_box:
        return {}, None
    resolved = [card.resolve() for card in cards]
    unknown = [str(card) for card in lung_box if card.resolve() not in resolved]
    if unknown:
        raise SystemExit(f"--lung-box names cards that are not --members: {', '.join(unknown)}.")
    if len(lung_box) == len(cards):
        raise SystemExit("At least one member must see whole films: the maps the app shows come from it.")
    lung = LungSegmenter.load(segmenter)
    out.mkdir(parents=True, exist_ok=True)
    for path in (segmenter, segmenter.parent / lung.card.weights):
        if path.resolve() != (out / path.name).resolve():
            shutil.copyfile(path, out / path.name)
    framing = {
        "lung_box_members": sorted(resolved.index(card.resolve()) for card in lung_box),
        "margin": LUNG_BOX_MARGIN,
        "segmenter": segmenter.name,
        "segmenter_sha256": lung.card.sha256,
        "rule": "each film is segmented, cropped to the box of its lungs plus the margin (px at 224) "
        "and resized to the "
        "input size before these members see it; the whole film when the lung mask fails its plausibility check",
    }
    return framing, lung


def build(args: argparse.Namespace) -> ModelCard:
    cards = [Path(p) for p in args.members]
    if len(cards) < 2:
        raise SystemExit("An ensemble needs at least two members.")
    ensemble, member_cards = assemble(cards)
    # Calibrate the float16 kernels that will be stored: half the file of float32 weights, and
    # every fitted value (temperature, thresholds, OOD statistics) describes the file as shipped.
    round_kernels(ensemble)
    out = Path(args.out)
    framing, segmenter = lung_box_framing(cards, [Path(p) for p in args.lung_box], Path(args.segmenter), out)
    ensemble = frame_members(ensemble, framing, out, member_cards[0].mean, member_cards[0].std, segmenter)
    val_patients = shared_validation_patients(cards)
    train_set, val_set = split_with_patients(list_samples(Path(args.data) / "train"), val_patients)
    y_val = np.array([s.label for s in val_set])
    size = member_cards[0].input_size
    x_train = load_pixels(train_set, size, "decode train")
    x_val = load_pixels(val_set, size, "decode val")

    clean_logits, val_features = predict_logits(ensemble, x_val, features=True)
    val_member_logits = member_logits(ensemble, val_features)
    logits = perturbed_logits(ensemble, x_val, clean_logits, args.seed)
    temperature = fit_temperature(np.concatenate(list(logits.values())), np.tile(y_val, len(logits)))
    clean_p = sigmoid(logits["clean"] / temperature)
    spread = sigmoid(val_member_logits / temperature).std(axis=1)
    _, train_features = predict_logits(ensemble, x_train, features=True)
    feature_mean, feature_precision = fit_feature_stats(train_features)
    val_distance = mahalanobis(val_features, feature_mean, feature_precision)

    first = member_cards[0]
    card = ModelCard(
        arch=first.arch,
        input_size=first.input_size,
        mean=first.mean,
        std=first.std,
        classes=first.classes,
        members=len(cards),
        temperature=temperature,
        operating_points=operating_points(clean_p, y_val),
        validation={
            "n": int(len(y_val)),
            "auroc": float(roc_auc_score(y_val, clean_p)),
            **calibration_metrics(logits["clean"], y_val, temperature),
            "perturbed": calibration_report(logits, y_val, temperature),
            "members_auroc": [float(roc_auc_score(y_val, sigmoid(z))) for z in val_member_logits.T],
        },
        training={
            "command": " ".join(["python -m xray_xai.training.ensemble"] + sys.argv[1:]),
            "ensemble": "mean of the members' logits (each member's prior correction already in its bias)",
            "calibration": "one temperature for the mean logit, fitted on the clean validation films and on "
            f"copies perturbed by {', '.join(PERTURBATIONS)} (Tomani et al. 2021)",
            "members": [
                {
                    "card": str(path),
                    "sha256": card.sha256,
                    "command": card.training.get("command"),
                    "wall_time_s": card.training.get("wall_time_s"),
                }
                for path, card in zip(cards, member_cards, strict=True)
            ],
        },
        data={
            **first.data,
            "split": describe_split(first.training.get("config", {}).get("val_fraction"), split_seed(first)),
            "members_share_validation_patients": True,
        },
        ood={
            "feature": "penultimate layer (global average pool) of every member, side by side",
            "distance": "Mahalanobis, Ledoit-Wolf shrinkage, fitted on training features",
            "threshold": float(np.percentile(val_distance, 99)),
            "threshold_rule": "99th percentile of validation distances",
        },
        uncertainty={
            "measure": "standard deviation of the members' calibrated P(pneumonia)",
            "quantile": args.uncertainty_quantile,
            "threshold": float(np.quantile(spread, args.uncertainty_quantile)),
            "rule": "above the threshold (exceeded by this share of validation films) "
            "the confidence band is lowered one step",
            "validation_median": float(np.median(spread)),
        },
        explanations=explainer_section(
            args.explainer, val_member_logits, temperature, framing.get("lung_box_members", [])
        ),
        latency={"single_image_ms": measure_latency(ensemble, size), "threads": torch.get_num_threads()},
        framing=framing,
        **member_arguments(member_cards),
    )
    extras = {"ood_mean": torch.from_numpy(feature_mean), "ood_precision": torch.from_numpy(feature_precision)}
    card = save_within_tolerance(ensemble, card, out / "classifier.json", extras, x_val, clean_p)
    split = json.loads((cards[0].parent / VAL_PATIENTS_FILE).read_text())
    split["seed"] = split_seed(first, split.get("seed"))
    (out / VAL_PATIENTS_FILE).write_text(json.dumps(split, indent=1) + "\n")
    return card


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    common = [
        data_parser(DATASET, "folder with train/{NORMAL,PNEUMONIA}"),
        seed_parser("noise of the perturbed validation copies"),
        threads_parser(),
    ]
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, parents=common
    )
    parser.add_argument("--members", nargs="+", required=True, help="model cards of the trained members")
    parser.add_argument(
        "--out", default="checkpoints/", help="where the ensemble's classifier.json and weights are written"
    )
    parser.add_argument(
        "--lung-box", nargs="*", default=[], help="the members (cards among --members) trained on lung-box crops"
    )
    parser.add_argument(
        "--segmenter", default=str(DEFAULT_LUNG_CHECKPOINT), help="lung segmenter card that cuts the lung boxes"
    )
    parser.add_argument("--uncertainty-quantile", type=float, default=UNCERTAINTY_QUANTILE)
    parser.add_argument(
        "--explainer",
        choices=["closest", "all"],
        default="closest",
        help="maps from the member closest to the ensemble on validation (one network's cost), "
        "or averaged over all members",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    card = build(args)
    print(
        json.dumps(
            {
                "validation": {k: v for k, v in card.validation.items() if k != "perturbed"},
                "uncertainty": card.uncertainty,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
