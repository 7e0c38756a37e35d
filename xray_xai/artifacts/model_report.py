"""Precompute the Space's "Model" tab: per-film probabilities and an error gallery.

    python -m xray_xai.artifacts.model_report --train ../shared/data/chest_xray/train \\
        --shift ../shared/data/chest_xray/shift_dev --checkpoint checkpoints/classifier.json --out checkpoints/

Every film goes through :meth:`xray_xai.pipeline.Pipeline.predict`, exactly as an upload does,
so the stored probability is the calibrated P(pneumonia) and the stored band is the one the app
shows at the balanced operating point (after any demotion the pipeline applies). Scored: the
checkpoint's validation patients of ``--train`` and every film of ``--shift``.

Writes ``OUT/model_report.json`` (per film: file, label, probability, band; the model card's
operating points; the sha256 of the weights it was built with, so the tab can tell when it is
stale) and ``OUT/model_report_errors.jpg``: one 128 px row per validation film called wrong at
the balanced point (the film, then its Grad-CAM overlay for the predicted class). No image of
``--shift`` is ever written: only its probabilities and labels.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from .. import CLASSES
from ..cli import checkpoint_parser, entry_point, threads_parser, validation_split
from ..data import Sample, list_samples
from ..models.classifier import Classifier
from ..pipeline import Options, Pipeline
from ..ui.overlay import draw_result

REPORT_NAME = "model_report.json"
SPRITE_NAME = "model_report_errors.jpg"
SCHEMA = 1
THUMBNAIL = 128
JPEG_QUALITY = 85
OPERATING_POINT = "balanced"


@dataclass(frozen=True)
class Film:
    """One scored film: ``file`` is ``CLASS/name``, ``label`` 1 for PNEUMONIA."""

    file: str
    label: int
    probability: float
    band: str


def score_films(pipeline: Pipeline, samples: list[Sample], desc: str) -> list[Film]:
    """Calibrated P(pneumonia) and balanced-point band of each film, as the app computes them."""
    films = []
    for sample in tqdm(samples, desc=desc, unit="img", file=sys.stderr):
        prediction = pipeline.predict(str(sample.path), OPERATING_POINT).prediction
        films.append(
            Film(
                f"{CLASSES[sample.label]}/{sample.path.name}",
                sample.label,
                round(prediction.probability, 6),
                prediction.band,
            )
        )
    return films


def split_record(films: list[Film]) -> dict[str, list]:
    """Column-wise JSON of a split's films."""
    return {key: [getattr(f, key) for f in films] for key in ("file", "label", "probability", "band")}


def errors(films: list[Film], threshold: float, limit: int) -> list[Film]:
    """Films called wrong at ``threshold``, at most ``limit``, the most confidently wrong first:
    by the calibrated probability of the wrong answer (P(pneumonia) for a false positive,
    P(normal) for a false negative), not by the distance to the threshold."""
    wrong = [f for f in films if (f.probability >= threshold) != bool(f.label)]
    return sorted(wrong, key=lambda f: -(1.0 - f.probability if f.label else f.probability))[:limit]


def thumbnail(pixels: np.ndarray, size: int = THUMBNAIL) -> Image.Image:
    """An RGB thumbnail of at most ``size`` px a side (grayscale [0, 1] or uint8 RGB input)."""
    array = pixels if pixels.dtype == np.uint8 else np.rint(np.clip(pixels, 0, 1) * 255).astype(np.uint8)
    image = Image.fromarray(array).convert("RGB")
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    return image


def error_tiles(pipeline: Pipeline, path: Path) -> tuple[Image.Image, Image.Image]:
    """The film and its Grad-CAM overlay (evidence for the predicted class), as thumbnails; the film
    twice when it got no map (an image that is plainly not a radiograph)."""
    result = pipeline.first_pass(str(path), Options(operating_point=OPERATING_POINT, occlusion="off"))
    overlay = draw_result(result, outline=False).get("gradcam", result.pixels)
    return thumbnail(result.pixels), thumbnail(overlay)


def sprite(rows: list[tuple[Image.Image, Image.Image]], size: int = THUMBNAIL) -> Image.Image:
    """Rows of (film, overlay) tiles, each centred in a ``size`` x ``size`` cell."""
    sheet = Image.new("RGB", (2 * size, max(1, len(rows)) * size))
    for row, tiles in enumerate(rows):
        for column, tile in enumerate(tiles):
            sheet.paste(tile, (column * size + (size - tile.width) // 2, row * size + (size - tile.height) // 2))
    return sheet


def build(
    pipeline: Pipeline, validation: list[Sample], shift: list[Sample], out: Path, max_errors: int, command: str
) -> dict:
    """Score both splits, write the error sprite and the report JSON into ``out``; return the report."""
    card = pipeline.classifier.card
    val_films = score_films(pipeline, validation, "validation")
    shift_films = score_films(pipeline, shift, "shift_dev")
    threshold = float(card.operating_points[OPERATING_POINT]["threshold"])
    wrong = errors(val_films, threshold, max_errors)
    paths = {f"{CLASSES[s.label]}/{s.path.name}": s.path for s in validation}
    out.mkdir(parents=True, exist_ok=True)
    sprite([error_tiles(pipeline, paths[f.file]) for f in wrong]).save(
        out / SPRITE_NAME, quality=JPEG_QUALITY, optimize=True
    )
    report = {
        "schema": SCHEMA,
        "classifier_sha256": card.sha256,
        "arch": card.arch,
        "members": card.members,
        "temperature": card.temperature,
        "operating_points": card.operating_points,
        "band_operating_point": OPERATING_POINT,
        "command": command,
        "splits": {"validation": split_record(val_films), "shift_dev": split_record(shift_films)},
        "errors": {"sprite": SPRITE_NAME, "tile": THUMBNAIL, "films": [asdict(f) for f in wrong]},
        "attribution": "Kermany, Zhang and Goldbaum (2018), Mendeley Data v2, doi:10.17632/rscbjbr9sj.2, CC BY 4.0",
    }
    (out / REPORT_NAME).write_text(json.dumps(report, separators=(",", ":")) + "\n")
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[checkpoint_parser(), threads_parser()],
    )
    parser.add_argument(
        "--train",
        required=True,
        help="the training folder (NORMAL/, PNEUMONIA/); only the checkpoint's validation patients are scored",
    )
    parser.add_argument(
        "--shift", required=True, help="the shift_dev folder (NORMAL/, PNEUMONIA/); scored, never imaged"
    )
    parser.add_argument("--out", required=True, help="output folder (checkpoints/ for the Space)")
    parser.add_argument("--max-errors", type=int, default=40, help="at most this many films in the error gallery")
    return parser.parse_args(argv)


def run(argv: list[str] | None = None) -> dict:
    """The command: writes the report and its error sprite, prints the film counts; returns the
    report it writes."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    validation = validation_split(list_samples(args.train), args.checkpoint)
    pipeline = Pipeline(Classifier.load(args.checkpoint))
    command = "python -m xray_xai.artifacts.model_report " + " ".join(sys.argv[1:] if argv is None else argv)
    report = build(pipeline, validation, list_samples(args.shift), Path(args.out), args.max_errors, command)
    print(
        json.dumps(
            {name: len(split["label"]) for name, split in report["splits"].items()}
            | {"errors": len(report["errors"]["films"])}
        )
    )
    return report


main = entry_point(run)

if __name__ == "__main__":
    main()
