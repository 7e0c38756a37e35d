"""Latency of the app as its users see it: first answer (prediction + Grad-CAM + similar films)
and full analysis (+ occlusion and agreement).

    python benchmarks/app_latency.py [--runs 20]

Launches ``app.py`` on loopback with the committed checkpoint, then, for ``--runs`` analyses of
the example radiographs, measures side by side:

- **browser**: headless Chromium uploads the film (which analyses it by itself) and, once that
  analysis is whole, times from the click on Analyse (a re-run) until
  the Grad-CAM overlay has loaded and is shown (first answer) and until the agreement line and
  the occlusion overlay are shown (full), in the page's own clock;
- **client**: gradio_client calls the streaming UI event and ``/predict``; time until each
  message arrives (``download_files=False``: a script that wants the output files fetches them
  afterwards, one HTTP request each, which is the client's cost, not the app's).

Last stdout line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from gradio_client import Client, handle_file
from server import ROOT, browser_page, running_app, upload_and_wait


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


# Click Analyse, then poll every 5 ms (page clock) until the new Grad-CAM overlay is loaded, and
# until the agreement line, after showing "waiting", holds the final verdict with the new occlusion overlay.
BROWSER_RUN = """async () => {
  const loaded = (id, before) => { const img = document.querySelector(`#${id} img`);
    return img && img.src !== before && img.complete && img.naturalWidth > 0; };
  const src = (id) => document.querySelector(`#${id} img`)?.src ?? "";
  const [cam, occ] = [src("gradcam"), src("occlusion")];
  const agreement = () => document.querySelector("#agreement").innerText;
  const start = performance.now();
  document.querySelector("#analyse").click();
  let first = null, waiting = false;
  while (performance.now() - start < 60000) {
    await new Promise((resolve) => setTimeout(resolve, 5));
    if (first === null && loaded("gradcam", cam)) first = performance.now() - start;
    waiting = waiting || agreement().includes("waiting");
    if (first !== null && waiting && agreement().includes("Spearman") && loaded("occlusion", occ))
      return [first / 1000, (performance.now() - start) / 1000];
  }
  throw new Error("no complete analysis within 60 s");
}"""


def time_browser(url: str, paths: list[Path]) -> list[tuple[float, float]]:
    """(first answer, full) seconds per film, as shown in headless Chromium at 1400 x 900."""
    times = []
    with browser_page(url) as page:
        for path in paths:
            # A new upload is analysed by itself: time Analyse only once that analysis is whole.
            upload_and_wait(page, path)
            times.append(tuple(page.evaluate(BROWSER_RUN)))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    examples = sorted((ROOT / "examples").glob("*/*.jpeg"))
    paths = [examples[i % len(examples)] for i in range(args.runs)]
    with running_app() as (url, _):
        client = Client(url, verbose=False, download_files=False)
        time_stream(client, examples[0])  # warm-up
        first, full, predict = [], [], []
        for i, path in enumerate(paths):
            f, t = time_stream(client, path)
            first.append(f)
            full.append(t)
            start = time.perf_counter()
            client.predict(handle_file(str(path)), "balanced", api_name="/predict")
            predict.append(time.perf_counter() - start)
            print(
                f"client  run {i + 1:2d}: first answer {f:.3f}s, full {t:.3f}s, /predict {predict[-1]:.3f}s", flush=True
            )
        browser = time_browser(url, [examples[0], *paths])[1:]  # the first run warms the page up
        for i, (f, t) in enumerate(browser):
            print(f"browser run {i + 1:2d}: first answer {f:.3f}s, full {t:.3f}s", flush=True)
    pct = lambda xs, q: round(float(np.percentile(xs, q)), 3)  # noqa: E731
    browser_first, browser_full = zip(*browser, strict=True)
    print(
        json.dumps(
            {
                "runs": args.runs,
                "browser_first_answer_p50_s": pct(browser_first, 50),
                "browser_first_answer_p95_s": pct(browser_first, 95),
                "browser_full_p50_s": pct(browser_full, 50),
                "browser_full_p95_s": pct(browser_full, 95),
                "client_first_answer_p50_s": pct(first, 50),
                "client_first_answer_p95_s": pct(first, 95),
                "client_full_p50_s": pct(full, 50),
                "client_full_p95_s": pct(full, 95),
                "predict_p50_s": pct(predict, 50),
                "predict_p95_s": pct(predict, 95),
            }
        )
    )


if __name__ == "__main__":
    main()
