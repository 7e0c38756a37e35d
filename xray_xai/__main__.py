"""Command line: ``python -m xray_xai analyze INPUT [INPUT ...] --out DIR [--engine ray]``.

Runs the same pipeline as the app on each input (a file, a folder searched recursively, or a
.txt/.csv manifest of paths) and writes ``DIR/results.jsonl`` (one JSON object per input, in
input order), ``DIR/results.parquet``, ``DIR/summary.json`` and overlay PNGs. A file that cannot
be analysed gets ``ok: false`` and a clear message; the run goes on. Running again with the same
``--out`` skips the inputs already there. ``--engine ray`` spreads the work over Ray workers (a
local runtime, or the cluster at ``--address``) and writes the same rows. Exit status 0 when
every input was handled without an internal error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from .batch import Job, expand_inputs, ray_engine, run, run_local, threads_per_worker
from .calibration import OPERATING_POINTS
from .checkpoint import DEFAULT_CHECKPOINT, DEFAULT_LUNG_CHECKPOINT
from .explain.cam import CAM_METHODS
from .pipeline import Options


@contextmanager
def ray_runtime(address: str | None) -> Iterator[float]:
    """Join the cluster at ``address``, or start a local runtime, unless this process is already
    connected; yields the cluster's CPU count and shuts down only what it started."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=address or "local", include_dashboard=False)
    try:
        yield ray.cluster_resources().get("CPU", 1.0)
    finally:
        if started:
            ray.shutdown()


def analyze(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xray_xai analyze", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="images, DICOM files, folders or .txt/.csv manifests of paths"
    )
    parser.add_argument(
        "--out", required=True, help="output folder for results.jsonl, results.parquet, summary.json and overlays"
    )
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--lung-checkpoint", default=str(DEFAULT_LUNG_CHECKPOINT))
    parser.add_argument("--operating-point", default="balanced", choices=OPERATING_POINTS)
    parser.add_argument("--cam-method", default="gradcam", choices=list(CAM_METHODS))
    parser.add_argument("--occlusion", default="fast", choices=["fast", "fine", "off"])
    parser.add_argument("--no-overlays", action="store_true", help="do not write overlay PNGs")
    parser.add_argument(
        "--engine", default="local", choices=["local", "ray"], help="local: in this process; ray: Ray workers"
    )
    parser.add_argument("--address", help="Ray cluster to join, e.g. HEAD_IP:6379 (default: start a local Ray runtime)")
    parser.add_argument(
        "--workers", type=int, help="Ray workers, each loading the pipeline once (default: one per CPU)"
    )
    parser.add_argument("--batch-size", type=int, default=4, help="films per Ray batch (default: 4)")
    parser.add_argument("--threads", type=int, help="torch threads per worker (default: CPUs / workers)")
    args = parser.parse_args(argv)
    if args.engine == "local" and (args.address or args.workers):
        parser.error("--address and --workers need --engine ray")
    options = Options(
        operating_point=args.operating_point,
        cam_method=args.cam_method,
        occlusion=args.occlusion,
    ).validate()
    job = Job(args.checkpoint, args.lung_checkpoint, options, overlays=not args.no_overlays)
    inputs = expand_inputs(args.inputs)
    if args.engine == "local":
        job = replace(job, threads=args.threads or threads_per_worker(os.cpu_count() or 1, 1))
        summary = run(inputs, Path(args.out), job, run_local)
    else:
        with ray_runtime(args.address) as cpus:
            workers = args.workers or max(1, int(cpus))
            if workers > cpus:
                parser.error(f"--workers {workers} is more than the {cpus:g} CPUs of the Ray runtime")
            job = replace(job, threads=args.threads or threads_per_worker(cpus, workers))
            summary = run(inputs, Path(args.out), job, ray_engine(workers, args.batch_size), "ray", workers)
    print(summary.describe())
    return 1 if summary.internal_errors else 0


COMMANDS = {"analyze": analyze}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m xray_xai {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
