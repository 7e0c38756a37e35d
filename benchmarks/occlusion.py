"""Occlusion on the app's path against Captum's ``Occlusion`` and the PyTorch fp32 path, side by side.

    python benchmarks/occlusion.py [--checkpoint checkpoints/classifier.json] [--repeats 1]
    python benchmarks/occlusion.py --precision-check [--data examples]

All three explain the same model, the whole ensemble the app serves, with the blur baseline and
2 threads:
  - ``app``: ``occlusion_map(model, x, served=Classifier.serving, reframe=False)``, as
    ``Pipeline.complete`` calls it (incremental engines, the lung-box members' crops at the clean
    film's lung box, full passes through the card's runtime);
  - ``exact``: the same with every occluded copy segmented and cropped again (``reframe=True``),
    which is what Captum computes;
  - ``captum``: ``captum.attr.Occlusion`` on the torch ensemble's calibrated probability, 32 copies
    per forward pass.
They run interleaved within each repeat (medians reported), so background load hits them alike;
check ``uptime`` first: timings from a busy machine are provisional. Then the app's presets
(``xray_xai.pipeline.OCCLUSION_PRESETS``) are timed on the app's path, on the whole film and in a
typical lung box (the app's lung focus). Last stdout line: one JSON object with ``vs_captum`` and
``vs_exact`` (their time / the app's at window 16, stride 8), ``max_abs_diff`` (largest |exact -
captum| over the maps), ``app_vs_exact`` (largest |app - exact|: the windows that move the lung
box), ``fast_preset_s`` and ``fine_preset_s`` (lung focus, as the app runs them, each at the
precision the card gives it).

``--precision-check`` instead compares, for every film under ``--data`` and every preset, the
app's map in bfloat16 autocast with the float32 one (lung focus in the typical box, timed side
by side): the issue's criterion is a rank correlation >= 0.99 on every film; a preset whose bf16
maps pass may be listed in the card's ``runtime["occlusion_precision"]``. Last line: JSON with,
per preset, the lowest and median Spearman correlation, the share of films >= 0.99, the largest
|map difference| and the f32 / bf16 time ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from captum.attr import Occlusion

from xray_xai.checkpoint import DEFAULT_CHECKPOINT
from xray_xai.explain.occlusion import make_baseline, occlusion_map
from xray_xai.explain.sanity import rank_correlation
from xray_xai.imaging import load_image
from xray_xai.models.classifier import Classifier
from xray_xai.pipeline import OCCLUSION_BATCH, OCCLUSION_PRESETS

WINDOW, STRIDE = 16, 8
CAPTUM_BATCH = 32
LUNG_BOX = (20, 200, 15, 210)  # rows 20-200, cols 15-210 of a 224-px input: a typical lung box
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "PNEUMONIA"


def captum_map(model: torch.nn.Module, x: torch.Tensor, window: int, stride: int, temperature: float) -> np.ndarray:
    """Captum's occlusion of the calibrated P(pneumonia) (its map: the mean drop per pixel)."""

    def probability(batch: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(model(batch).reshape(-1) / temperature)

    with torch.inference_mode():
        attribution = Occlusion(probability).attribute(
            x,
            sliding_window_shapes=(1, window, window),
            strides=(1, stride, stride),
            baselines=make_baseline(x, "blur"),
            perturbations_per_eval=CAPTUM_BATCH,
        )
    return attribution[0, 0].numpy()


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def precision_check(classifier: Classifier, films: list[Path]) -> None:
    """bf16-autocast maps against float32 maps, per preset, on the app's path (see the docstring)."""
    kw = {"served": classifier.serving, "temperature": classifier.card.temperature, "batch_size": OCCLUSION_BATCH}
    results = {}
    for name, preset in OCCLUSION_PRESETS.items():
        rhos, diffs, seconds = [], [], {"f32": 0.0, "bf16": 0.0}
        for film in films:
            x = classifier.prepare(load_image(film).pixels)
            maps = {}
            for precision in ("f32", "bf16"):
                args = {"region": LUNG_BOX, "reframe": False, "precision": precision, **kw, **preset}
                elapsed, result = timed(lambda a=args, x=x: occlusion_map(classifier.model, x, **a))
                maps[precision], seconds[precision] = result.map, seconds[precision] + elapsed
            rhos.append(rank_correlation(maps["f32"], maps["bf16"]))
            diffs.append(float(np.abs(maps["f32"] - maps["bf16"]).max()))
            print(f"  {name} {film.name}: rank correlation {rhos[-1]:.4f}, max |diff| {diffs[-1]:.4f}", flush=True)
        results[name] = {
            **preset,
            "films": len(films),
            "min_rank_correlation": min(rhos),
            "median_rank_correlation": statistics.median(rhos),
            "share_at_least_0_99": float(np.mean(np.array(rhos) >= 0.99)),
            "max_abs_diff": max(diffs),
            "f32_over_bf16_time": seconds["f32"] / seconds["bf16"],
        }
        print(f"{name}: {json.dumps(results[name])}", flush=True)
    print(json.dumps({"runtime": classifier.served_runtime, "load_average": os.getloadavg()[0], "presets": results}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--precision-check", action="store_true", help="bf16 against float32 maps per preset")
    parser.add_argument("--data", type=Path, default=EXAMPLES.parent, help="films for --precision-check")
    args = parser.parse_args()
    torch.set_num_threads(2)
    classifier = Classifier.load(args.checkpoint)
    if args.precision_check:
        occlusion_map(classifier.model, classifier.prepare(np.zeros((224, 224), np.float32)), window=112, stride=112)
        precision_check(
            classifier, sorted(p for p in args.data.rglob("*") if p.suffix.lower() in {".jpeg", ".jpg", ".png"})
        )
        return
    model, temperature = classifier.model, classifier.card.temperature
    image = sorted(EXAMPLES.glob("*.jpeg"))[0]
    x = classifier.prepare(load_image(image).pixels)
    print(
        f"model: {args.checkpoint.name} ({classifier.card.arch} x {classifier.card.members}), image {image.name}; "
        f"served by {classifier.served_runtime}; 2 threads; load average {os.getloadavg()[0]:.2f} "
        "(provisional unless the machine is idle)",
        flush=True,
    )
    common = {"window": WINDOW, "stride": STRIDE, "temperature": temperature}
    methods = {
        "app": lambda: (
            occlusion_map(model, x, served=classifier.serving, batch_size=OCCLUSION_BATCH, reframe=False, **common).map
        ),
        "exact": lambda: occlusion_map(model, x, served=classifier.serving, batch_size=OCCLUSION_BATCH, **common).map,
        "captum": lambda: captum_map(model, x, WINDOW, STRIDE, temperature),
    }
    occlusion_map(model, x, window=112, stride=112, served=classifier.serving)  # warm-up (BatchNorm folding)
    times: dict[str, list[float]] = {name: [] for name in methods}
    max_abs_diff = app_vs_exact = 0.0
    for _ in range(args.repeats):
        maps = {}
        for name, fn in methods.items():
            seconds, maps[name] = timed(fn)
            times[name].append(seconds)
            print(f"  {name} {WINDOW}/{STRIDE}: {seconds:.2f} s", flush=True)
        max_abs_diff = max(max_abs_diff, float(np.abs(maps["exact"] - maps["captum"]).max()))
        app_vs_exact = max(app_vs_exact, float(np.abs(maps["app"] - maps["exact"]).max()))
    medians = {name: statistics.median(values) for name, values in times.items()}
    app = medians["app"]
    print(
        f"window/stride {WINDOW}/{STRIDE}, whole film: app {app:.2f} s | exact {medians['exact']:.2f} s "
        f"({medians['exact'] / app:.2f}x) | captum {medians['captum']:.2f} s ({medians['captum'] / app:.2f}x); "
        f"max |exact - captum| {max_abs_diff:.1e}, max |app - exact| {app_vs_exact:.2f}"
    )
    app_kw = {"served": classifier.serving, "temperature": temperature, "batch_size": OCCLUSION_BATCH, "reframe": False}
    card_precisions = classifier.card.runtime.get("occlusion_precision", {})
    presets = {}
    for name, preset in OCCLUSION_PRESETS.items():
        preset = {**preset, "precision": card_precisions.get(name, "f32")}
        full_t, focus_t = [], []
        for _ in range(args.repeats):
            full_t.append(timed(lambda p=preset: occlusion_map(model, x, **app_kw, **p))[0])
            focus_t.append(timed(lambda p=preset: occlusion_map(model, x, region=LUNG_BOX, **app_kw, **p))[0])
        presets[name] = {
            **preset,
            "whole_film_s": statistics.median(full_t),
            "lung_focus_s": statistics.median(focus_t),
        }
        print(
            f"app preset {name} ({preset['window']}/{preset['stride']}): "
            f"{presets[name]['whole_film_s']:.2f} s whole film, "
            f"{presets[name]['lung_focus_s']:.2f} s in lung box {LUNG_BOX}",
            flush=True,
        )
    print(
        json.dumps(
            {
                "model": f"{classifier.card.arch} x {classifier.card.members}",
                "runtime": classifier.served_runtime,
                "threads": torch.get_num_threads(),
                "load_average": os.getloadavg()[0],
                "vs_captum": medians["captum"] / app,
                "vs_exact": medians["exact"] / app,
                "app_vs_exact": app_vs_exact,
                "max_abs_diff": max_abs_diff,
                "app_s": app,
                "exact_s": medians["exact"],
                "captum_s": medians["captum"],
                "fast_preset_s": presets["fast"]["lung_focus_s"],
                "fine_preset_s": presets["fine"]["lung_focus_s"],
                "presets": presets,
            }
        )
    )


if __name__ == "__main__":
    main()
