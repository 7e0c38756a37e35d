"""Command line: ``python -m xray_xai analyze FILE [FILE ...] --out DIR``.

Runs the same pipeline as the app on each file and writes ``DIR/results.jsonl`` (one JSON
object per input, in input order) plus overlay PNGs. A file that cannot be analysed gets
``ok: false`` and a clear message; the run goes on. Exit status 0 when every input was handled.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from . import DISCLAIMER
from .calibration import OPERATING_POINTS
from .imaging import InputError
from .model import DEFAULT_CHECKPOINT, DEFAULT_LUNG_CHECKPOINT
from .pipeline import Options, Pipeline, Result
from .results import to_jsonable


def result_record(path: str, result: Result) -> dict:
    """The results.jsonl object for an analysed input."""
    analysis = result.analysis
    prediction = analysis.prediction
    return {
        "input": path,
        "ok": True,
        "error": None,
        "label": prediction.label,
        "probability": prediction.probability,
        "band": prediction.band,
        "operating_point": prediction.operating_point.name,
        "threshold": prediction.operating_point.threshold,
        "ood": {"flagged": analysis.ood.flagged, "reasons": list(analysis.ood.reasons)},
        "agreement": to_jsonable(analysis.agreement),
        "anatomy": to_jsonable(analysis.anatomy),
        "similar": to_jsonable(analysis.similar),
        "boxes": to_jsonable(analysis.boxes),
        "report": analysis.report,
        "disclaimer": DISCLAIMER,
    }


def error_record(path: str, message: str) -> dict:
    return {"input": path, "ok": False, "error": message}


def save_overlays(result: Result, out: Path, stem: str) -> list[str]:
    written = []
    for name, rgb in result.overlays().items():
        target = out / f"{stem}_{name}.png"
        Image.fromarray(np.asarray(rgb)).save(target)
        written.append(target.name)
    return written


def analyze(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m xray_xai analyze", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="images or DICOM files")
    parser.add_argument("--out", required=True, help="output folder for results.jsonl and overlays")
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--lung-checkpoint", default=str(DEFAULT_LUNG_CHECKPOINT))
    parser.add_argument("--operating-point", default="balanced", choices=OPERATING_POINTS)
    parser.add_argument("--cam-method", default="gradcam")
    parser.add_argument("--occlusion", default="fast", choices=["fast", "fine"])
    parser.add_argument("--no-occlusion", action="store_true", help="skip occlusion (faster)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pipeline = Pipeline.load(args.checkpoint, args.lung_checkpoint)
    options = Options(
        operating_point=args.operating_point,
        cam_method=args.cam_method,
        occlusion="off" if args.no_occlusion else args.occlusion,
    ).validate()
    failures = 0
    with open(out / "results.jsonl", "w") as sink:
        for index, path in enumerate(tqdm(args.files, desc="analysing", file=sys.stderr)):
            try:
                result = pipeline.analyze(path, options)
            except InputError as error:
                record = error_record(path, str(error))
            except Exception as error:  # a bug, not the user's fault: report it, keep going
                failures += 1
                record = error_record(path, f"Internal error while analysing this file ({type(error).__name__}); please report it.")
            else:
                record = result_record(path, result)
                record["overlays"] = save_overlays(result, out, f"{index:04d}_{Path(path).stem}")
            sink.write(json.dumps(record) + "\n")
            sink.flush()
    return 1 if failures else 0


COMMANDS = {"analyze": analyze}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m xray_xai {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
