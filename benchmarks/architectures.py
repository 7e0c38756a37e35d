"""CPU latency of the candidate architectures, side by side, for the model card's choice.

    python benchmarks/architectures.py [--repeats 15]

Each candidate is a randomly initialised timm ResNet at 224 px built by
:func:`xray_xai.models.factory.create_model` (latency does not depend on the weights), run through the
app's own code paths on one normalised image with 2 torch threads: the prediction (a batch-1
forward in inference mode), the Grad-CAM map (:func:`xray_xai.explain.cam.compute_cam`, forward and
backward) and the fast occlusion preset. The candidates run interleaved within each repeat
and medians are reported, so background load affects them alike. Last stdout line: one JSON
object with milliseconds per candidate and the ratio of each to resnet18.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from xray_xai.explain.cam import compute_cam
from xray_xai.explain.occlusion import occlusion_map
from xray_xai.models.factory import create_model
from xray_xai.pipeline import OCCLUSION_PRESETS

CANDIDATES = ("resnet10t", "resnet14t", "resnet18", "resnet26")
SIZE = 224


def milliseconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - start)


@torch.inference_mode()
def predict(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    x = torch.randn(1, 1, SIZE, SIZE).contiguous(memory_format=torch.channels_last)
    models = {arch: create_model(arch).eval().to(memory_format=torch.channels_last) for arch in CANDIDATES}
    tasks = {
        "predict": lambda m: predict(m, x),
        "gradcam": lambda m: compute_cam(m, x),
        "occlusion_fast": lambda m: occlusion_map(m, x, **OCCLUSION_PRESETS["fast"], target_class=1),
    }
    times = {arch: {task: [] for task in tasks} for arch in CANDIDATES}
    for model in models.values():  # warm-up: first calls set up kernels and the folded copies
        for run in tasks.values():
            run(model)
    for repeat in range(args.repeats):
        for arch, model in models.items():
            for task, run in tasks.items():
                times[arch][task].append(milliseconds(lambda run=run, model=model: run(model)))
        print(f"repeat {repeat + 1}/{args.repeats}", file=sys.stderr, flush=True)
    median = {arch: {task: round(statistics.median(v), 1) for task, v in t.items()} for arch, t in times.items()}
    params = {arch: round(sum(p.numel() for p in m.parameters()) / 1e6, 2) for arch, m in models.items()}
    for arch in CANDIDATES:
        print(
            f"{arch:10s} {params[arch]:6.2f} M params  "
            + "  ".join(f"{k} {v:7.1f} ms" for k, v in median[arch].items())
        )
    print(
        json.dumps(
            {
                "threads": 2,
                "repeats": args.repeats,
                "params_millions": params,
                "median_ms": median,
                "ratio_to_resnet18": {
                    arch: {task: round(median[arch][task] / median["resnet18"][task], 2) for task in tasks}
                    for arch in CANDIDATES
                },
            }
        )
    )


if __name__ == "__main__":
    main()
