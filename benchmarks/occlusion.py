"""Occlusion speed and exactness: ours vs Captum's ``Occlusion`` vs a naive loop, side by side.

    python benchmarks/occlusion.py [--checkpoint checkpoints/classifier.json] [--repeats 3]

Uses 2 torch threads and the committed classifier (a random resnet18 at 224 px when the
checkpoint is missing: it says so). The methods run interleaved within each repeat and the
medians are reported, so background load affects them alike. Also times the app's occlusion
presets (``xray_xai.pipeline.OCCLUSION_PRESETS``) on the full image and restricted to a
typical lung box. The last stdout line is one JSON object; ratios are their time / ours at
window 16, stride 8.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from captum.attr import Occlusion

from xray_xai.checkpoint import DEFAULT_CHECKPOINT
from xray_xai.explain.occlusion import make_baseline, occlusion_map, occlusion_map_naive
from xray_xai.imaging import load_image
from xray_xai.models.classifier import Classifier
from xray_xai.models.factory import create_model
from xray_xai.pipeline import OCCLUSION_PRESETS
from xray_xai.preprocess import preprocess

CONFIGS = ((32, 16), (16, 8))
BATCH = 32
LUNG_BOX = (
    20,
    200,
    15,
    210,
)  # rows 20-200, cols 15-210 of a 224-px input: a typical lung box
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "PNEUMONIA"  # full-resolution val images


def load(checkpoint: Path):
    """(model, temperature, input, description)."""
    if checkpoint.is_file():
        classifier = Classifier.load(checkpoint)
        model, card = classifier.model, classifier.card
        temperature, size, mean, std = (
            card.temperature,
            card.input_size,
            card.mean,
            card.std,
        )
        described = f"{checkpoint.name}: {card.arch} at {size} px"
    else:
        torch.manual_seed(0)
        model = create_model("resnet18").eval().to(memory_format=torch.channels_last)
        temperature, size, mean, std = 1.0, 224, 0.5, 0.25
        described = f"NO CHECKPOINT at {checkpoint}: random resnet18 at 224 px"
    image = sorted(EXAMPLES.glob("*.jpeg"))[0]
    described += f", image {image.name}"
    x = torch.from_numpy(preprocess(load_image(image).pixels, size, mean, std))[None, None]
    return model, temperature, x, described


def captum_map(model, x, window, stride, temperature):
    def probability(batch):
        return torch.sigmoid(model(batch).reshape(-1) / temperature)

    with torch.inference_mode():
        attribution = Occlusion(probability).attribute(
            x,
            sliding_window_shapes=(1, window, window),
            strides=(1, stride, stride),
            baselines=make_baseline(x, "blur"),
            perturbations_per_eval=BATCH,
        )
    return attribution[0, 0].numpy()


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, temperature, x, described = load(args.checkpoint)
    print(f"model: {described}; torch threads: {torch.get_num_threads()}; batch {BATCH}; repeats {args.repeats}")

    common = {"baseline": "blur", "temperature": temperature}
    methods = {
        "ours": lambda w, s: occlusion_map(model, x, window=w, stride=s, batch_size=BATCH, **common).map,
        "batched": lambda w, s: (
            occlusion_map(
                model,
                x,
                window=w,
                stride=s,
                batch_size=BATCH,
                incremental=False,
                **common,
            ).map
        ),
        "captum": lambda w, s: captum_map(model, x, w, s, temperature),
        "naive": lambda w, s: occlusion_map_naive(model, x, window=w, stride=s, **common).map,
    }
    times = {name: {f"{w}/{s}": [] for w, s in CONFIGS} for name in methods}
    max_abs_diff = 0.0
    occlusion_map(model, x, window=64, stride=64)  # warm-up
    for _ in range(args.repeats):
        for w, s in CONFIGS:
            maps = {}
            for name, fn in methods.items():
                seconds, maps[name] = timed(lambda fn=fn, w=w, s=s: fn(w, s))
                times[name][f"{w}/{s}"].append(seconds)
            max_abs_diff = max(
                max_abs_diff,
                *(float(np.abs(maps["ours"] - maps[n]).max()) for n in methods),
            )
    medians = {name: {k: statistics.median(v) for k, v in per.items()} for name, per in times.items()}
    for w, s in CONFIGS:
        key = f"{w}/{s}"
        ours = medians["ours"][key]
        print(
            f"window/stride {key}: ours {ours:.2f} s | full-network batched {medians['batched'][key]:.2f} s "
            f"({medians['batched'][key] / ours:.2f}x) | captum {medians['captum'][key]:.2f} s "
            f"({medians['captum'][key] / ours:.2f}x) | naive {medians['naive'][key]:.2f} s "
            f"({medians['naive'][key] / ours:.2f}x)"
        )
    print(f"max |ours - other| over all maps: {max_abs_diff:.2e}")

    app = {}
    for name, preset in OCCLUSION_PRESETS.items():
        full_t, region_t, diffs = [], [], []
        for _ in range(args.repeats):
            seconds, full = timed(lambda preset=preset: occlusion_map(model, x, **preset, **common))
            full_t.append(seconds)
            seconds, part = timed(lambda preset=preset: occlusion_map(model, x, **preset, region=LUNG_BOX, **common))
            region_t.append(seconds)
            y0, y1, x0, x1 = LUNG_BOX
            diffs.append(float(np.abs(full.map[y0:y1, x0:x1] - part.map[y0:y1, x0:x1]).max()))
        app[name] = {
            **preset,
            "s": statistics.median(full_t),
            "forward_passes": full.n_forward,
            "region_s": statistics.median(region_t),
            "region_forward_passes": part.n_forward,
            "region_speedup": statistics.median(full_t) / statistics.median(region_t),
            "region_max_abs_diff_inside": max(diffs),
        }
        print(
            f"app preset {name} ({preset['window']}/{preset['stride']}): {app[name]['s']:.2f} s full image "
            f"({full.n_forward} passes), {app[name]['region_s']:.2f} s in lung box {LUNG_BOX} "
            f"({app[name]['region_speedup']:.2f}x, max diff inside {max(diffs):.1e})"
        )
    ref = f"{CONFIGS[-1][0]}/{CONFIGS[-1][1]}"
    print(
        json.dumps(
            {
                "model": described,
                "threads": torch.get_num_threads(),
                "vs_captum": medians["captum"][ref] / medians["ours"][ref],
                "vs_naive": medians["naive"][ref] / medians["ours"][ref],
                "max_abs_diff": max_abs_diff,
                "ours_s": medians["ours"],
                "captum_s": medians["captum"],
                "naive_s": medians["naive"],
                "batched_s": medians["batched"],
                "vs_captum_by_setting": {k: medians["captum"][k] / medians["ours"][k] for k in medians["ours"]},
                "app": app,
            }
        )
    )


if __name__ == "__main__":
    main()
