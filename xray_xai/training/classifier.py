"""Train, calibrate and save the pneumonia classifier.

    python -m xray_xai.training.classifier --data ../shared/data/chest_xray --out checkpoints/

Every choice is made on a patient-level validation split of ``DATA/train``: the epoch (and
whether the EMA or the raw weights are kept), the temperature, the operating points and the
out-of-distribution threshold. Training state is saved after every epoch under ``--work`` and
an interrupted run resumes from its last finished epoch when started again with the same
arguments.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from timm.utils import ModelEmaV3

from .. import CLASSES
from ..calibration import fit_temperature, operating_points, sigmoid
from ..checkpoint import ModelCard
from ..cli import add_schedule_arguments, training_parsers
from ..data import (
    SPLIT_SEED,
    VAL_FRACTION,
    VAL_PATIENTS_FILE,
    describe_split,
    list_samples,
    seeded_subset,
    split_by_patient,
    validation_samples,
)
from ..models.factory import create_model, load_checkpoint
from ..models.ood import fit_feature_stats, mahalanobis
from .augment import Augmentation, augment, flatten_some, mix, photometric, warp
from .finalize import (
    NORMALISATION,
    calibration_metrics,
    load_pixels,
    measure_latency,
    predict_logits,
    save_within_tolerance,
    to_input,
)
from .guidance import MASK_DILATION, class_activation_map, dilate, load_masks, outside_share
from .loop import Schedule, Validation, best_weights, run_epochs, run_record

# A film without visible structure carries no evidence either way: its target is 50/50 after the
# prior correction (see ``soft_target``), not the training prior, so that a soft film is never
# called pneumonia for its softness.
FEATURELESS_TARGET = 0.5


@dataclass
class TrainConfig:
    """Everything that defines a classifier run. The fields stay flat: each run saves them as a
    dict and a rerun resumes only if they match (:func:`same_run`)."""

    arch: str = "resnet18"
    input_size: int = 224
    epochs: int = 8
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    ema_decay: float = 0.998
    drop_rate: float = 0.2
    val_fraction: float = VAL_FRACTION
    seed: int = 0
    max_rotation_deg: float = 10.0
    max_translation: float = 0.08
    scale_range: tuple[float, float] = (0.9, 1.1)
    aspect: float = 0.0  # height stretched against width by exp(U(-aspect, aspect))
    brightness: float = 0.1
    contrast: float = 0.2
    gamma: float = 0.0  # exposure curve: pixels ** exp(U(-gamma, gamma))
    sharpness: float = 0.0  # detail gain: blur + (1 + U(-sharpness, sharpness)) * (pixels - blur)
    blur: float = 0.0  # half of each batch is blurred with a Gaussian of sigma U(0, blur) px at 224, label kept
    noise: float = 0.0  # additive Gaussian noise of std U(0, noise), on half of each batch
    featureless: float = 0.0  # share of each batch blurred flat (sigma U(8, 16) px) with target FEATURELESS_TARGET
    mixup: float = (
        0.0  # Beta(mixup, mixup) weights for blending each film and its target with another of the batch (0 = off)
    )
    split_seed: int = SPLIT_SEED  # the validation patients; members of an ensemble share it and differ in ``seed``
    init: str = (
        ""  # start from this checkpoint's weights (a model card trained on the same split) instead of random ones
    )
    output_stride: int = 32  # 16: a dilated last stage, a 14x14 feature grid at 224 px (finer maps)
    lung_guidance: float = (
        0.0  # weight of the share of |CAM| outside the dilated lung mask (training.guidance; 0 = off)
    )
    mask_dilation: int = MASK_DILATION  # px at 224 added around each reference lung mask for the guidance
    bf16: bool = False  # forward and backward under bfloat16 autocast (validation and the saved model stay float32)

    @property
    def augmentation(self) -> Augmentation:
        """The augmentation these (flat, saved and compared) fields describe."""
        return Augmentation(
            rotation_deg=self.max_rotation_deg,
            translation=self.max_translation,
            scale_range=tuple(self.scale_range),
            aspect=self.aspect,
            brightness=self.brightness,
            contrast=self.contrast,
            gamma=self.gamma,
            sharpness=self.sharpness,
            blur=self.blur,
            noise=self.noise,
        )


def soft_target(labels: torch.Tensor, featureless: torch.Tensor) -> torch.Tensor:
    """BCE targets: the labels, and for featureless images the target whose optimum under the
    ``pos_weight``-balanced loss is a prior-corrected probability of ``FEATURELESS_TARGET``.

    With soft target t the weighted loss is minimised at logit log(pos_weight) + logit(t), and the
    prior correction later removes log(pos_weight), so t itself is the corrected probability.
    """
    return torch.where(featureless, torch.full_like(labels, FEATURELESS_TARGET), labels)


def initial_weights(card_path: str, arch: str) -> dict[str, torch.Tensor]:
    """Weights of a saved classifier to fine-tune from, with its prior correction taken back out
    of the bias (training runs on the class-balanced loss again)."""
    model, card, _ = load_checkpoint(card_path)
    if card.arch != arch:
        raise SystemExit(f"--init {card_path} is a {card.arch}, not a {arch}.")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    bias = next(k for k in state if k.endswith("bias") and k.startswith(("fc.", "head.", "classifier.")))
    state[bias] -= float(card.training.get("prior_correction", 0.0))
    return state


def same_run(saved: dict, current: dict) -> bool:
    """Whether a saved run's configuration is ``current``: options added since it was saved take
    their defaults, which reproduce it, and --epochs may change (the cosine schedule then ends at
    the new total)."""
    defaults = json.loads(json.dumps(asdict(TrainConfig())))
    return {**defaults, **saved, "epochs": None} == {**current, "epochs": None}


def train(args: argparse.Namespace) -> ModelCard:
    cfg = TrainConfig(
        arch=args.arch,
        input_size=args.input_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        brightness=args.brightness,
        contrast=args.contrast,
        gamma=args.gamma,
        sharpness=args.sharpness,
        blur=args.blur,
        noise=args.noise,
        featureless=args.featureless,
        mixup=args.mixup,
        split_seed=args.split_seed,
        init=args.init or "",
        warmup_epochs=args.warmup_epochs,
        output_stride=args.output_stride,
        lung_guidance=args.lung_guidance,
        mask_dilation=args.mask_dilation,
        bf16=args.bf16,
        max_rotation_deg=args.rotation,
        max_translation=args.translation,
        scale_range=(1 - args.scale, 1 + args.scale),
        aspect=args.aspect,
    )
    torch.manual_seed(cfg.seed)
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    samples = seeded_subset(list_samples(Path(args.data) / "train"), args.limit, cfg.seed)
    train_set, val_set = split_by_patient(samples, cfg.val_fraction, cfg.split_seed)
    y_train = np.array([s.label for s in train_set])
    y_val = np.array([s.label for s in val_set])
    print(
        f"train {len(train_set)} images ({y_train.sum()} pneumonia), "
        f"val {len(val_set)} images ({y_val.sum()} pneumonia), "
        f"{len({s.patient for s in val_set})} val patients",
        flush=True,
    )
    x_train = load_pixels(train_set, cfg.input_size, "decode train")
    x_val = load_pixels(val_set, cfg.input_size, "decode val")
    if cfg.lung_guidance > 0:
        if cfg.mixup > 0:
            raise SystemExit(
                "--lung-guidance cannot be combined with --mixup (a blend of two films has no one lung mask)."
            )
        masks, has_mask = load_masks(train_set, Path(args.lung_masks) / "train", cfg.input_size)
        masks = dilate(masks, cfg.mask_dilation).to(torch.float16)
        print(
            f"lung guidance: {int(has_mask.sum())} of {len(train_set)} training films have a reference mask", flush=True
        )

    model_kwargs = {"output_stride": cfg.output_stride} if cfg.output_stride != 32 else {}
    model = create_model(cfg.arch, drop_rate=cfg.drop_rate, **model_kwargs)
    if cfg.init:
        # Its validation patients must be ours, or validation images were in its training set.
        if {s.patient for s in validation_samples(samples, cfg.init)} != {s.patient for s in val_set}:
            raise SystemExit(
                f"--init {cfg.init} was validated on other patients; fine-tuning it would leak validation images."
            )
        model.load_state_dict(initial_weights(cfg.init, cfg.arch))
    model = model.to(memory_format=torch.channels_last)
    ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # Class imbalance: weigh positives so both classes carry equal total weight.
    pos_weight = torch.tensor((len(y_train) - y_train.sum()) / max(1, y_train.sum()), dtype=torch.float32)

    aug = cfg.augmentation

    def batch_loss(index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if cfg.lung_guidance > 0:
            warped = warp(torch.cat([x_train[index].float(), masks[index].float()], dim=1), aug, generator)
            pixels, batch_masks = photometric(warped[:, :1], aug, generator), warped[:, 1:] > 0.5
        else:
            pixels = augment(x_train[index].float(), aug, generator)
        featureless = torch.zeros(len(index), dtype=torch.bool)
        if cfg.featureless > 0:
            pixels, featureless = flatten_some(pixels, cfg.featureless, generator)
        y = soft_target(torch.from_numpy(y_train[index.numpy()]).float(), featureless)
        if cfg.mixup > 0:
            pixels, y = mix(pixels, y, cfg.mixup, generator)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            features = model.forward_features(to_input(pixels))
            logits = model.forward_head(features).squeeze(1)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y, pos_weight=pos_weight)
        if cfg.lung_guidance > 0:
            # Films with a reference mask and real structure (a film blurred flat has no evidence to place).
            guided = has_mask[index] & ~featureless
            if guided.any():
                cam = class_activation_map(features.float()[guided], model.get_classifier())
                loss = loss + cfg.lung_guidance * outside_share(cam, batch_masks[guided]).mean()
        return loss

    def validate(candidates: dict[str, torch.nn.Module]) -> Validation:
        auroc = {name: float(roc_auc_score(y_val, predict_logits(m, x_val))) for name, m in candidates.items()}
        return Validation(
            auroc,
            {"val_auroc": auroc["raw"], "val_auroc_ema": auroc["ema"]},
            f"val_auroc {auroc['raw']:.4f}  val_auroc_ema {auroc['ema']:.4f}",
        )

    meta = run_epochs(
        model,
        ema,
        optimizer,
        work=work,
        schedule=Schedule(cfg.epochs, cfg.batch_size, cfg.lr, cfg.warmup_epochs, cfg.seed),
        config=asdict(cfg),
        n_train=len(train_set),
        batch_loss=batch_loss,
        validate=validate,
        best_key="best_auroc",
        same_run=same_run,
    )

    best = create_model(cfg.arch, drop_rate=cfg.drop_rate, **model_kwargs)
    best.load_state_dict(best_weights(work))
    best.eval().to(memory_format=torch.channels_last)
    # Prior correction: the class-balanced loss trains logits that are log(pos_weight) off the
    # true log-odds; fold the exact offset into the classifier bias before temperature scaling.
    prior_correction = -math.log(float(pos_weight))
    with torch.no_grad():
        best.get_classifier().bias += prior_correction
    meta["prior_correction"] = prior_correction
    card = finalize(best, cfg, meta, x_train, x_val, y_train, y_val, val_set, out)
    print(json.dumps({"validation": card.validation, "operating_points": card.operating_points}, indent=2), flush=True)
    return card


def finalize(model, cfg, meta, x_train, x_val, y_train, y_val, val_set, out: Path) -> ModelCard:
    """Calibrate on validation, fit the OOD statistics, measure latency and write the checkpoint."""
    val_logits, val_feats = predict_logits(model, x_val, features=True)
    _, train_feats = predict_logits(model, x_train, features=True)
    temperature = fit_temperature(val_logits, y_val)
    cal_p = sigmoid(val_logits / temperature)
    feat_mean, feat_precision = fit_feature_stats(train_feats)
    val_distance = mahalanobis(val_feats, feat_mean, feat_precision)
    mean, std = NORMALISATION
    card = ModelCard(
        arch=cfg.arch,
        model_kwargs={"output_stride": cfg.output_stride} if cfg.output_stride != 32 else {},
        input_size=cfg.input_size,
        mean=mean,
        std=std,
        classes=CLASSES,
        temperature=temperature,
        operating_points=operating_points(cal_p, y_val),
        validation={
            "n": int(len(y_val)),
            "auroc": float(roc_auc_score(y_val, cal_p)),
            **calibration_metrics(val_logits, y_val, temperature),
            "selected": meta["best"],
            "history": meta["history"],
        },
        training={
            **run_record("python -m xray_xai.training.classifier", asdict(cfg), meta),
            "optimizer": "AdamW, linear warm-up then cosine decay, EMA of weights",
            "class_balance": "BCE with pos_weight = n_normal / n_pneumonia",
            "prior_correction": meta["prior_correction"],
            "prior_correction_rule": "-log(pos_weight) added to the classifier bias after training",
        },
        data={
            "train_images": int(len(y_train)),
            "train_pneumonia": int(y_train.sum()),
            "val_images": int(len(y_val)),
            "val_pneumonia": int(y_val.sum()),
            "val_patients": int(len({s.patient for s in val_set})),
            "split": describe_split(cfg.val_fraction, cfg.split_seed),
        },
        ood={
            "feature": "penultimate layer (global average pool)",
            "distance": "Mahalanobis, Ledoit-Wolf shrinkage, fitted on training features",
            "threshold": float(np.percentile(val_distance, 99)),
            "threshold_rule": "99th percentile of validation distances",
        },
        latency={"single_image_ms": measure_latency(model, cfg.input_size), "threads": torch.get_num_threads()},
    )
    extras = {"ood_mean": torch.from_numpy(feat_mean), "ood_precision": torch.from_numpy(feat_precision)}
    card = save_within_tolerance(model, card, out / "classifier.json", extras, x_val, cal_p)
    (out / VAL_PATIENTS_FILE).write_text(
        json.dumps(
            {
                "seed": cfg.split_seed,
                "val_fraction": cfg.val_fraction,
                "patients": sorted({s.patient for s in val_set}),
            },
            indent=1,
        )
        + "\n"
    )
    return card


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = TrainConfig()
    common = training_parsers(defaults.seed, "use only this many images (smoke tests)")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, parents=common
    )
    parser.add_argument("--out", default="checkpoints/", help="where classifier.json and its weights are written")
    parser.add_argument("--work", default="runs/classifier", help="resumable training state")
    parser.add_argument("--arch", default=defaults.arch)
    add_schedule_arguments(parser, defaults.input_size, defaults.epochs, defaults.batch_size, defaults.lr)
    parser.add_argument(
        "--init", default=None, help="fine-tune from this model card's weights (trained on the same validation split)"
    )
    parser.add_argument("--warmup-epochs", type=float, default=defaults.warmup_epochs)
    parser.add_argument(
        "--split-seed", type=int, default=defaults.split_seed, help="which patients are held out for validation"
    )
    parser.add_argument(
        "--brightness", type=float, default=defaults.brightness, help="augmentation: +- this shift of [0, 1] pixels"
    )
    parser.add_argument(
        "--contrast", type=float, default=defaults.contrast, help="augmentation: contrast factor in 1 +- this"
    )
    parser.add_argument(
        "--gamma", type=float, default=defaults.gamma, help="augmentation: pixels ** exp(U(-gamma, gamma))"
    )
    parser.add_argument(
        "--sharpness",
        type=float,
        default=defaults.sharpness,
        help="augmentation: detail gain in 1 +- this (blur to sharpen)",
    )
    parser.add_argument(
        "--blur",
        type=float,
        default=defaults.blur,
        help="augmentation: Gaussian blur of sigma U(0, this) px on half the batch",
    )
    parser.add_argument(
        "--noise",
        type=float,
        default=defaults.noise,
        help="augmentation: Gaussian noise of std U(0, this) on half the batch",
    )
    parser.add_argument(
        "--featureless",
        type=float,
        default=defaults.featureless,
        help="share of films blurred flat with a 50/50 target",
    )
    parser.add_argument(
        "--mixup", type=float, default=defaults.mixup, help="mixup: Beta(this, this) blend weights (0 = off)"
    )
    parser.add_argument(
        "--rotation",
        type=float,
        default=defaults.max_rotation_deg,
        help="augmentation: rotation in +- this many degrees",
    )
    parser.add_argument(
        "--translation",
        type=float,
        default=defaults.max_translation,
        help="augmentation: shift in +- this fraction of the side",
    )
    parser.add_argument(
        "--scale", type=float, default=round(1 - defaults.scale_range[0], 6), help="augmentation: zoom in 1 +- this"
    )
    parser.add_argument(
        "--aspect",
        type=float,
        default=defaults.aspect,
        help="augmentation: height stretched against width by exp(U(-this, this)); the squash of every "
        "film into a square makes the lungs' aspect ratio a label cue of the training set",
    )
    parser.add_argument(
        "--output-stride",
        type=int,
        choices=(16, 32),
        default=defaults.output_stride,
        help="16: a dilated last stage with a 14x14 feature grid (finer maps, slower)",
    )
    parser.add_argument(
        "--lung-masks",
        default="../shared/data/lung_masks",
        help="folder with train/{NORMAL,PNEUMONIA}/NAME.png lung masks",
    )
    parser.add_argument(
        "--lung-guidance",
        type=float,
        default=defaults.lung_guidance,
        help="weight of the share of |CAM| outside the dilated reference lung mask (0 = off)",
    )
    parser.add_argument(
        "--mask-dilation", type=int, default=defaults.mask_dilation, help="px at 224 added around each lung mask"
    )
    parser.add_argument(
        "--bf16", action="store_true", help="train under bfloat16 autocast (much faster on CPUs with AMX)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    train(args)


if __name__ == "__main__":
    main()
