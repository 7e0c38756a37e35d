"""Score a lung-segmentation checkpoint against reference masks.

    python -m xray_xai.evaluation.lungs --data ../shared/data/chest_xray/val \\
        --masks ../shared/data/lung_masks/val --out runs/lungs_eval_val16
    python -m xray_xai.evaluation.lungs --data ../shared/data/chest_xray/train \\
        --masks ../shared/data/lung_masks/train --split val --out runs/lungs_eval_split

``--data`` and ``--masks`` have the same ``{NORMAL,PNEUMONIA}/NAME`` layout (masks are
``NAME.png``, 0 = background, 255 = lung, at the image's own resolution). Each prediction is
resized back to its reference mask's resolution before scoring, so full-resolution uploads are
scored at full resolution. ``--split val`` scores only the patient-level validation split (the
classifier's and the lung model's validation patients). Writes ``OUT/lung_metrics.json`` and
``OUT/lung_contact_sheet.png`` (worst cases first: reference outline cyan, prediction magenta).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from ..checkpoint import DEFAULT_LUNG_CHECKPOINT, sha256_file
from ..cli import checkpoint_parser, data_parser, entry_point, threads_parser
from ..data import Sample, list_samples, paired, read_mask, select_split
from ..models.lungs import LungSegmenter
from ..preprocess import read_dataset_image
from .lung_scoring import evaluate

REFERENCE_COLOUR, PREDICTION_COLOUR = (0, 220, 255), (255, 0, 200)


def outline(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, iterations=2)


def thumbnail(pixels: np.ndarray, predicted: np.ndarray, reference: np.ndarray, cell: int) -> Image.Image:
    """Radiograph fitted into ``cell`` x ``cell`` (aspect kept) with both outlines drawn."""
    height, width = pixels.shape
    scale = cell / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    gray = np.asarray(Image.fromarray((pixels * 255).astype(np.uint8)).resize(size, Image.Resampling.BILINEAR))
    rgb = np.repeat(gray[..., None], 3, axis=2)
    for mask, colour in ((reference, REFERENCE_COLOUR), (predicted, PREDICTION_COLOUR)):
        small = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.BILINEAR)) > 127
        rgb[outline(small)] = colour
    canvas = Image.new("RGB", (cell, cell))
    canvas.paste(Image.fromarray(rgb), ((cell - size[0]) // 2, (cell - size[1]) // 2))
    return canvas


def contact_sheet(
    segmenter: LungSegmenter,
    pairs: list[tuple[Sample, Path]],
    records: list[dict],
    path: Path,
    limit: int = 32,
    cell: int = 192,
    columns: int = 8,
) -> None:
    """PNG of the ``limit`` lowest-Dice images with reference and predicted outlines."""
    order = np.argsort([r["dice"] for r in records])[:limit]
    rows = -(-len(order) // columns)
    caption, header = 16, 22
    sheet = Image.new("RGB", (columns * cell, header + rows * (cell + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 4), "reference outline: cyan   prediction: magenta   (lowest Dice first)", fill="black")
    for slot, index in enumerate(order):
        sample, mask_file = pairs[index]
        pixels = read_dataset_image(sample.path)
        reference = read_mask(mask_file)
        predicted = segmenter.segment(pixels).resized(*reference.shape)
        x, y = (slot % columns) * cell, header + (slot // columns) * (cell + caption)
        sheet.paste(thumbnail(pixels, predicted, reference, cell), (x, y))
        flag = "" if records[index]["plausible"] else " !"
        draw.text((x + 2, y + cell + 2), f"{sample.path.stem[:24]} {records[index]['dice']:.3f}{flag}", fill="black")
    sheet.save(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    common = [
        data_parser(),
        checkpoint_parser(DEFAULT_LUNG_CHECKPOINT, "lung model card (lungs.json)"),
        threads_parser(),
    ]
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, parents=common
    )
    parser.add_argument("--masks", required=True, help="folder with {NORMAL,PNEUMONIA}/NAME.png reference masks")
    parser.add_argument("--out", required=True, help="folder for lung_metrics.json and the contact sheet")
    parser.add_argument(
        "--split",
        choices=("all", "train", "val"),
        default="all",
        help="score all images, or one side of the patient-level split (val = the validation patients)",
    )
    parser.add_argument("--sheet", type=int, default=32, help="images on the contact sheet (lowest Dice first)")
    return parser.parse_args(argv)


def run(argv: list[str] | None = None) -> dict:
    """The command: writes ``OUT/lung_metrics.json`` and the contact sheet, prints the summary;
    returns what it writes to ``lung_metrics.json``."""
    import torch

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    segmenter = LungSegmenter.load(args.checkpoint)
    pairs = paired(select_split(list_samples(args.data), args.split), args.masks)
    summary, records = evaluate(segmenter, pairs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {
        **summary,
        "data": str(args.data),
        "masks": str(args.masks),
        "split": args.split,
        "checkpoint": str(args.checkpoint),
        "checkpoint_sha256": sha256_file(Path(args.checkpoint).parent / segmenter.card.weights),
        "scored_at": "each reference mask's own resolution",
        "per_image": records,
    }
    (out / "lung_metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    contact_sheet(segmenter, pairs, records, out / "lung_contact_sheet.png", limit=args.sheet)
    print(json.dumps(summary))
    return metrics


main = entry_point(run)

if __name__ == "__main__":
    main()
