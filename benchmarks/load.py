"""Load test on loopback: 16 concurrent gradio clients, valid and invalid uploads mixed.

    python benchmarks/load.py [--requests 112] [--clients 16] [--max-seconds 900]

Launches ``app.py`` (committed checkpoint) on 127.0.0.1 and sends a bounded number of requests:
``/predict`` and ``/explain`` on example radiographs, and broken uploads (text, truncated JPEG,
empty file) that must come back with a clear error. Invalid uploads answered with a clear error
are expected, not failures. Last stdout line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from gradio_client import Client, handle_file
from server import ROOT, peak_rss_mb, running_app

GENERIC_ERRORS = {"", "error", "none"}


def invalid_files(folder: Path, example: Path) -> list[Path]:
    text = folder / "notes.png"
    text.write_text("not an image")
    truncated = folder / "truncated.jpeg"
    truncated.write_bytes(example.read_bytes()[:2000])
    empty = folder / "empty.dcm"
    empty.write_bytes(b"")
    return [text, truncated, empty]


def plan(n: int, examples: list[Path], invalid: list[Path]) -> list[tuple[str, Path, bool]]:
    """(endpoint, file, valid) for each request: 1 in 4 invalid, 1 in 8 a full explanation."""
    jobs = []
    for i in range(n):
        if i % 4 == 3:
            jobs.append(("/predict", invalid[i % len(invalid)], False))
        elif i % 8 == 1:
            jobs.append(("/explain", examples[i % len(examples)], True))
        else:
            jobs.append(("/predict", examples[i % len(examples)], True))
    return jobs


def send(url: str, job: tuple[str, Path, bool], deadline: float) -> tuple[float, bool]:
    """Seconds taken and whether the outcome was unexpected."""
    endpoint, path, valid = job
    if time.time() > deadline:
        return 0.0, True
    client = Client(url, verbose=False)
    args = (handle_file(str(path)), "balanced") + (("gradcam", "fast") if endpoint == "/explain" else ())
    start = time.perf_counter()
    try:
        client.predict(*args, api_name=endpoint)
        unexpected = not valid
    except Exception as error:  # the client raises on an error answer
        message = str(error).strip().lower()
        unexpected = valid or message in GENERIC_ERRORS or "traceback" in message
    return time.perf_counter() - start, unexpected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=112)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-seconds", type=float, default=900)
    args = parser.parse_args()
    examples = sorted((ROOT / "examples").glob("*/*.jpeg"))
    with tempfile.TemporaryDirectory() as tmp, running_app() as (url, process):
        jobs = plan(args.requests, examples, invalid_files(Path(tmp), examples[0]))
        deadline = time.time() + args.max_seconds
        with ThreadPoolExecutor(args.clients) as pool:
            outcomes = list(pool.map(lambda job: send(url, job, deadline), jobs))
        still_answers = not send(url, ("/predict", examples[0], True), time.time() + 60)[1]
        rss = peak_rss_mb(process.pid)
    times = [t for t, _ in outcomes]
    print(
        json.dumps(
            {
                "requests": len(jobs),
                "clients": args.clients,
                "unexpected_failures": sum(u for _, u in outcomes),
                "p50_s": round(float(np.percentile(times, 50)), 3),
                "p95_s": round(float(np.percentile(times, 95)), 3),
                "peak_rss_mb": round(rss, 1),
                "answers_afterwards": still_answers,
            }
        )
    )


if __name__ == "__main__":
    main()
