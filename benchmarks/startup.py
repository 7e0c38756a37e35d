"""Cold start of the app: seconds from ``python app.py`` to a served page and to answers.

    python benchmarks/startup.py [--runs 3]

Starts the app ``--runs`` times, alternating two variants side by side: as shipped (the page
built from the classifier's card and served first; the models, timm and the CAM package loaded
after launch in the background, then the warm-up) and with the CAM package and scikit-learn
imported before the app starts (as before the lazy imports). Per start it times the first HTTP
200 on ``/``, the first ``/predict`` answer (which waits for the models) and the first full
analysis (``/explain``, fast occlusion).
Last stdout line: one JSON object with medians and the ratio eager / shipped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
from gradio_client import Client, handle_file
from server import ROOT, free_port

EAGER = (
    "import pytorch_grad_cam, sklearn.covariance, runpy, sys; "
    "sys.argv = ['app.py', *sys.argv[1:]]; runpy.run_path('app.py', run_name='__main__')"
)
VARIANTS = {"shipped": ["app.py"], "eager_imports": ["-c", EAGER]}


def wait_for_page(url: str, start: float, process: subprocess.Popen, timeout_s: float = 120.0) -> float:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - start
        except OSError as error:
            if process.poll() is not None or time.perf_counter() - start > timeout_s:
                raise RuntimeError("the app did not start") from error
            time.sleep(0.05)


def one_start(variant: str, example: Path) -> dict[str, float]:
    port = free_port()
    env = {**os.environ, "CPU_CORES": os.environ.get("CPU_CORES", "2"), "GRADIO_ANALYTICS_ENABLED": "False"}
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, *VARIANTS[variant], "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        page = wait_for_page(url, start, process)
        client = Client(url, verbose=False)
        client.predict(handle_file(str(example)), "balanced", api_name="/predict")
        predict = time.perf_counter() - start
        client.predict(handle_file(str(example)), "balanced", "gradcam", "fast", api_name="/explain")
        explain = time.perf_counter() - start
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {"page_s": page, "predict_s": predict, "explain_s": explain}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    example = sorted((ROOT / "examples").glob("*/*.jpeg"))[0]
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    for i in range(args.runs):
        for name in VARIANTS:
            timing = one_start(name, example)
            runs[name].append(timing)
            print(f"run {i + 1} {name:13s} " + ", ".join(f"{k} {v:.2f}" for k, v in timing.items()), flush=True)
    median = {name: {k: round(float(np.median([r[k] for r in rs])), 2) for k in rs[0]} for name, rs in runs.items()}
    print(
        json.dumps(
            {
                "runs": args.runs,
                **{f"{name}_{k}": v for name, m in median.items() for k, v in m.items()},
                "page_ratio_eager_over_shipped": round(
                    median["eager_imports"]["page_s"] / median["shipped"]["page_s"], 2
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
