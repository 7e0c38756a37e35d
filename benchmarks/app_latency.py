"""Latency of the app as a client sees it: first answer (prediction + Grad-CAM) and full analysis.

    python benchmarks/app_latency.py [--runs 20]

Launches ``app.py`` on loopback with the committed checkpoint, then times ``--runs`` analyses of
the example radiographs through gradio_client (the streaming UI event: its first and last
outputs) and ``/predict``. Last stdout line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from gradio_client import Client, handle_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server import ROOT, running_app  # noqa: E402


def time_stream(client: Client, path: Path) -> tuple[float, float]:
    """Seconds to the first streamed output and to the last one."""
    start = time.perf_counter()
    job = client.submit(handle_file(str(path)), "balanced", "gradcam", "fast", 0.45, True, True, api_name="/ui_analyze")
    first = None
    while not job.done():
        if first is None and job.outputs():
            first = time.perf_counter() - start
        time.sleep(0.005)
    job.result()
    total = time.perf_counter() - start
    return (first if first is not None else total), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    examples = sorted((ROOT / "examples").glob("*/*.jpeg"))
    with running_app() as (url, _):
        client = Client(url, verbose=False)
        time_stream(client, examples[0])  # warm-up
        first, full, predict = [], [], []
        for i in range(args.runs):
            path = examples[i % len(examples)]
            f, t = time_stream(client, path)
            first.append(f)
            full.append(t)
            start = time.perf_counter()
            client.predict(handle_file(str(path)), "balanced", api_name="/predict")
            predict.append(time.perf_counter() - start)
            print(f"run {i + 1:2d}: first answer {f:.3f}s, full {t:.3f}s, /predict {predict[-1]:.3f}s", flush=True)
    pct = lambda xs, q: round(float(np.percentile(xs, q)), 3)  # noqa: E731
    print(json.dumps({
        "runs": args.runs,
        "first_answer_p50_s": pct(first, 50), "first_answer_p95_s": pct(first, 95),
        "full_p50_s": pct(full, 50), "full_p95_s": pct(full, 95),
        "predict_p50_s": pct(predict, 50), "predict_p95_s": pct(predict, 95),
    }))


if __name__ == "__main__":
    main()
