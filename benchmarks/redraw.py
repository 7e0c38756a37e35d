"""Display settings: seconds from changing opacity, lung outline or boxes to the redrawn maps.

    python benchmarks/redraw.py [--runs 20]

The settings redraw the maps already computed, without the model (target: <= 100 ms). Measured
side by side on the committed checkpoint, for one analysed example film:

- **in process**: ``Handlers.redraw`` alone (drawing both overlays and writing the two JPEGs
  Gradio serves), against a full analysis of the same film, the model's cost it avoids;
- **browser**: ``app.py`` on loopback in headless Chromium; after the upload's own analysis is
  whole, alternately untick and tick "Lung outline" and time, in the page's own clock, until both
  heatmaps show new, loaded images.

Last stdout line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from server import ROOT, browser_page, running_app, upload_and_wait

from xray_xai.pipeline import Options, Pipeline
from xray_xai.ui.handlers import Handlers

# Toggle the outline checkbox, then poll every 5 ms until both heatmaps hold new, loaded images.
BROWSER_TOGGLE = """async () => {
  const src = (id) => document.querySelector(`#${id} img`)?.src ?? "";
  const loaded = (id, before) => { const img = document.querySelector(`#${id} img`);
    return img && img.src !== before && img.complete && img.naturalWidth > 0; };
  const [cam, occ] = [src("gradcam"), src("occlusion")];
  const start = performance.now();
  document.querySelector("#outline input[type=checkbox]").click();
  while (performance.now() - start < 10000) {
    await new Promise((resolve) => setTimeout(resolve, 5));
    if (loaded("gradcam", cam) && loaded("occlusion", occ)) return (performance.now() - start) / 1000;
  }
  throw new Error("the maps were not redrawn within 10 s");
}"""


def time_in_process(path: Path, runs: int) -> tuple[list[float], float]:
    """Seconds per ``Handlers.redraw`` (settings varied run to run) and for one full analysis."""
    handlers = Handlers(Pipeline.load())
    handlers.pipeline.analyze(str(path), Options())  # warm-up
    start = time.perf_counter()
    result = handlers.pipeline.analyze(str(path), Options())
    analysis_s = time.perf_counter() - start
    times = []
    for i in range(runs):
        start = time.perf_counter()
        handlers.redraw(result, 0.3 + 0.05 * (i % 8), bool(i % 2), bool(i % 3))
        times.append(time.perf_counter() - start)
    return times, analysis_s


def time_browser(url: str, path: Path, runs: int) -> list[float]:
    with browser_page(url) as page:
        upload_and_wait(page, path)
        page.evaluate(BROWSER_TOGGLE)  # warm-up
        return [page.evaluate(BROWSER_TOGGLE) for _ in range(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("CPU_CORES", "2")))
    path = sorted((ROOT / "examples").glob("PNEUMONIA/*.jpeg"))[0]
    in_process, analysis_s = time_in_process(path, args.runs)
    with running_app() as (url, _):
        browser = time_browser(url, path, args.runs)
    pct = lambda xs, q: round(float(np.percentile(xs, q)), 4)  # noqa: E731
    print(f"in process: redraw p50 {pct(in_process, 50):.4f}s, full analysis {analysis_s:.3f}s", flush=True)
    print(f"browser:    redraw p50 {pct(browser, 50):.4f}s, p95 {pct(browser, 95):.4f}s", flush=True)
    print(
        json.dumps(
            {
                "runs": args.runs,
                "film": path.name,
                "in_process_redraw_p50_s": pct(in_process, 50),
                "in_process_redraw_p95_s": pct(in_process, 95),
                "full_analysis_s": round(analysis_s, 3),
                "analysis_over_redraw": round(analysis_s / pct(in_process, 50), 1),
                "browser_redraw_p50_s": pct(browser, 50),
                "browser_redraw_p95_s": pct(browser, 95),
                "load_average_1min": round(os.getloadavg()[0], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
