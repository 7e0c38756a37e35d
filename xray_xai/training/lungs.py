"""Train the lung-segmentation model from scratch and save it as ``lungs.json`` + ``lungs.safetensors``.

    python -m xray_xai.training.lungs --data ../shared/data/chest_xray --masks ../shared/data/lung_masks \\
        --out checkpoints/

Image/mask pairs are ``DATA/train/CLASS/NAME.jpeg`` and ``MASKS/train/CLASS/NAME.png``; images
without a mask are skipped. Validation uses the classifier's patient-level split
(``split_by_patient(list_samples(DATA/train), 0.15, 0)``), so no patient is on the training side
of one model and the validation side of the other. Loss Dice + BCE, AdamW with warm-up and
cosine decay, EMA of the weights; the epoch (raw or EMA weights) with the best validation mean
Dice is kept. State is saved after every epoch under ``--work``; rerunning the same command
resumes after the last finished epoch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from timm.utils import ModelEmaV3
from tqdm import tqdm

from ..checkpoint import save_checkpoint
from ..cli import add_schedule_arguments, entry_point, training_parsers
from ..data import (
    SPLIT_SEED,
    VAL_FRACTION,
    Sample,
    describe_split,
    list_samples,
    paired,
    read_mask,
    seeded_subset,
    select_split,
)
from ..evaluation.lung_scoring import evaluate
from ..models.lungs import THRESHOLD, LungCard, LungSegmenter, build_model
from ..preprocess import normalize, to_model_size
from .augment import Augmentation, augment
from .finalize import NORMALISATION, load_pixels
from .loop import Schedule, Validation, best_weights, run_epochs, run_record


@dataclass
class LungTrainConfig:
    encoder: str = LungCard.encoder  # the network's shape defaults to the card's
    decoder_channels: tuple[int, ...] = LungCard.decoder_channels
    input_size: int = LungCard.input_size
    output_size: int = LungCard.output_size
    epochs: int = 6
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    ema_decay: float = 0.995
    max_rotation_deg: float = 8.0
    max_translation: float = 0.06
    scale_range: tuple[float, float] = (0.9, 1.1)
    brightness: float = 0.1
    contrast: float = 0.2
    seed: int = 0


def card_for(cfg: LungTrainConfig) -> LungCard:
    mean, std = NORMALISATION
    return LungCard(
        encoder=cfg.encoder,
        decoder_channels=tuple(cfg.decoder_channels),
        input_size=cfg.input_size,
        output_size=cfg.output_size,
        mean=mean,
        std=std,
    )


def load_masks(pairs: list[tuple[Sample, Path]], size: int, desc: str) -> torch.Tensor:
    """Reference masks as ``(n, 1, size, size)`` float16 in [0, 1] (soft edges after resizing)."""
    out = torch.empty((len(pairs), 1, size, size), dtype=torch.float16)
    for i, (_, path) in enumerate(tqdm(pairs, desc=desc, file=sys.stderr, leave=False)):
        out[i, 0] = torch.from_numpy(to_model_size(read_mask(path).astype(np.float32), size))
    return out


def augment_pair(images: torch.Tensor, masks: torch.Tensor, cfg: LungTrainConfig, generator: torch.Generator):
    """One random small affine applied to image and mask alike, then brightness/contrast on the image.

    Two passes of :func:`~xray_xai.training.augment.augment`: geometry only on the stacked
    (image, mask) channels, then intensity only on the image (an identity warp).
    """
    geometry = Augmentation(
        rotation_deg=cfg.max_rotation_deg, translation=cfg.max_translation, scale_range=tuple(cfg.scale_range)
    )
    intensity = Augmentation(brightness=cfg.brightness, contrast=cfg.contrast)
    warped = augment(torch.cat([images, masks], dim=1), geometry, generator)
    return augment(warped[:, :1], intensity, generator), warped[:, 1:]


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE plus soft Dice loss (per image, averaged): BCE for calibration, Dice for overlap."""
    probability = torch.sigmoid(logits)
    intersection = (probability * target).sum(dim=(1, 2, 3))
    soft_dice = (2 * intersection + 1) / (probability.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1)
    return F.binary_cross_entropy_with_logits(logits, target) + (1 - soft_dice).mean()


@torch.inference_mode()
def validation_dice(
    model: torch.nn.Module, card: LungCard, x_val: torch.Tensor, m_val: torch.Tensor, batch_size: int = 32
) -> np.ndarray:
    """Per-image Dice of the raw thresholded prediction at ``output_size`` (no clean-up)."""
    segmenter = LungSegmenter(model, card)
    scores = []
    for start in range(0, len(x_val), batch_size):
        x = normalize(x_val[start : start + batch_size].float(), card.mean, card.std)
        predicted = segmenter.probabilities(x) > THRESHOLD
        reference = m_val[start : start + batch_size, 0] > 0.5
        intersection = (predicted & reference).sum(dim=(1, 2)).double()
        total = (predicted.sum(dim=(1, 2)) + reference.sum(dim=(1, 2))).double()
        scores.append(torch.where(total > 0, 2 * intersection / total.clamp(min=1), torch.ones_like(total)))
    return torch.cat(scores).numpy()


def segment_latency_ms(segmenter: LungSegmenter, repeats: int = 30) -> float:
    """Median time of ``segment`` on one 224 x 224 image (preprocessing and clean-up included)."""
    pixels = np.random.default_rng(0).random((224, 224), dtype=np.float32)
    times = []
    for i in range(repeats + 3):
        start = time.perf_counter()
        segmenter.segment(pixels)
        if i >= 3:
            times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def train(args: argparse.Namespace) -> LungCard:
    cfg = LungTrainConfig(
        encoder=args.encoder,
        decoder_channels=tuple(args.decoder_channels),
        input_size=args.input_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
    )
    card = card_for(cfg)
    torch.manual_seed(cfg.seed)
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    # Split the full list first, then limit: the validation patients stay the classifier's.
    samples = list_samples(Path(args.data) / "train")
    mask_dir = Path(args.masks) / "train"
    train_all, val_all = select_split(samples, "train"), select_split(samples, "val")
    train_pairs = seeded_subset(paired(train_all, mask_dir), args.limit, cfg.seed)
    val_pairs = seeded_subset(paired(val_all, mask_dir), max(2, args.limit // 6) if args.limit else 0, cfg.seed)
    skipped = len(samples) - len(paired(train_all, mask_dir)) - len(paired(val_all, mask_dir))
    print(
        f"train {len(train_pairs)} image/mask pairs, val {len(val_pairs)} "
        f"({len({s.patient for s, _ in val_pairs})} patients), {skipped} images without a mask skipped",
        flush=True,
    )
    x_train = load_pixels([s for s, _ in train_pairs], cfg.input_size, "decode train")
    m_train = load_masks(train_pairs, cfg.input_size, "masks train")
    x_val = load_pixels([s for s, _ in val_pairs], cfg.input_size, "decode val")
    m_val = load_masks(val_pairs, cfg.output_size, "masks val")

    model = build_model(card).to(memory_format=torch.channels_last)
    ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def batch_loss(index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        images, masks = augment_pair(x_train[index].float(), m_train[index].float(), cfg, generator)
        x = normalize(images, card.mean, card.std).contiguous(memory_format=torch.channels_last)
        return dice_bce_loss(model(x), masks)

    def validate(candidates: dict[str, torch.nn.Module]) -> Validation:
        scores = {name: validation_dice(m, card, x_val, m_val) for name, m in candidates.items()}
        return Validation(
            {name: float(s.mean()) for name, s in scores.items()},
            {
                **{f"val_dice_{n}": float(s.mean()) for n, s in scores.items()},
                **{f"val_dice_p05_{n}": float(np.percentile(s, 5)) for n, s in scores.items()},
            },
            f"val_dice {scores['raw'].mean():.4f} (p05 {np.percentile(scores['raw'], 5):.4f})  "
            f"val_dice_ema {scores['ema'].mean():.4f} (p05 {np.percentile(scores['ema'], 5):.4f})",
        )

    meta = run_epochs(
        model,
        ema,
        optimizer,
        work=work,
        schedule=Schedule(cfg.epochs, cfg.batch_size, cfg.lr, cfg.warmup_epochs, cfg.seed),
        config=asdict(cfg),
        n_train=len(train_pairs),
        batch_loss=batch_loss,
        validate=validate,
        best_key="best_dice",
    )

    best = build_model(card)
    best.load_state_dict(best_weights(work))
    card = finalize(best, card, cfg, meta, train_pairs, val_pairs, skipped, out)
    print(
        json.dumps(
            {"validation": {k: v for k, v in card.validation.items() if k != "history"}, "latency": card.latency},
            indent=2,
        ),
        flush=True,
    )
    return card


def finalize(
    model, card: LungCard, cfg: LungTrainConfig, meta: dict, train_pairs, val_pairs, skipped: int, out: Path
) -> LungCard:
    """Save float16 weights, then score the saved checkpoint on validation through ``segment``."""
    card.training = {
        **run_record("python -m xray_xai.training.lungs", asdict(cfg), meta),
        "loss": "BCE + soft Dice (per image)",
        "optimizer": "AdamW, linear warm-up then cosine decay, EMA of weights",
        "augmentation": "same small affine on image and mask; brightness/contrast on the image",
        "selected": meta["best"],
        "history": meta["history"],
    }
    card.data = {
        "train_pairs": len(train_pairs),
        "val_pairs": len(val_pairs),
        "val_patients": len({s.patient for s, _ in val_pairs}),
        "images_without_mask_skipped": skipped,
        "split": describe_split(VAL_FRACTION, SPLIT_SEED) + " (the classifier's)",
        "masks": "V7 Labs COVID-19 X-ray dataset lung outlines (CC BY 4.0), matched to Kermany et al. 2018",
    }
    card_path = out / "lungs.json"
    save_checkpoint(model, card, card_path)
    segmenter = LungSegmenter.load(card_path)
    summary, _ = evaluate(segmenter, val_pairs, desc="score val")
    card = segmenter.card
    card.validation = {**summary, "scored": "saved float16 checkpoint through LungSegmenter.segment, at 224 x 224"}
    card.latency = {
        "segment_224_ms": segment_latency_ms(segmenter),
        "threads": torch.get_num_threads(),
        "weights_mb": round((out / card.weights).stat().st_size / 1e6, 2),
    }
    card.to_json(card_path)  # the weight file (and its sha256) is unchanged
    return card


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = LungTrainConfig()
    common = training_parsers(defaults.seed, "use only this many training pairs (smoke tests)")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, parents=common
    )
    parser.add_argument(
        "--masks", default="../shared/data/lung_masks", help="folder with train/{NORMAL,PNEUMONIA}/NAME.png"
    )
    parser.add_argument("--out", default="checkpoints/", help="where lungs.json and its weights are written")
    parser.add_argument("--work", default="runs/lungs", help="resumable training state")
    parser.add_argument("--encoder", default=defaults.encoder, help="smp encoder name ('tu-' = any timm model)")
    parser.add_argument("--decoder-channels", type=int, nargs="+", default=list(defaults.decoder_channels))
    add_schedule_arguments(parser, defaults.input_size, defaults.epochs, defaults.batch_size, defaults.lr)
    return parser.parse_args(argv)


def run(argv: list[str] | None = None) -> LungCard:
    """The command: trains (or resumes) and writes ``OUT/lungs.json`` and its weights; returns the
    card it writes."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    return train(args)


main = entry_point(run)


if __name__ == "__main__":
    main()
