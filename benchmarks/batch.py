"""Batch throughput (films/s): the local engine vs Ray with 1 and 2 workers, with and without occlusion.

    python benchmarks/batch.py [--data FOLDER] [--count 200] [--workers 1 2] [--occlusion off fast]

Without ``--data`` the 16 images of examples/ are copied to a temporary folder until there are
``--count`` films (each copy is a distinct input). Every run is a full
:func:`xray_xai.batch.run` into a fresh output folder, overlays included, so the figures
include loading the pipeline (and starting the Ray actors): what a user of
``python -m xray_xai analyze`` waits for. Ray runs on a local runtime with all this machine's
CPUs; each worker gets CPUs / workers torch threads, and so does the local engine (1 worker).
Run it on an idle machine: other load skews the comparison. The last stdout line is one JSON
object for the default occlusion setting (fast): the local figure, the best Ray figure, its
worker count and the speedup; ``table`` has every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import ray

from xray_xai.batch import Job, expand_inputs, ray_engine, run, run_local, threads_per_worker
from xray_xai.checkpoint import DEFAULT_CHECKPOINT, DEFAULT_LUNG_CHECKPOINT
from xray_xai.pipeline import Options

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def replicate(source: Path, count: int, target: Path) -> list[str]:
    """Copies of the images under ``source`` in ``target`` until there are ``count`` films."""
    originals = expand_inputs([str(source)])
    films = []
    for i in range(count):
        original = Path(originals[i % len(originals)])
        copy = target / f"{i:05d}_{original.name}"
        shutil.copyfile(original, copy)
        films.append(str(copy))
    return films


def films_per_second(films: list[str], job: Job, workers: int | None, cpus: int) -> float:
    """Throughput of one full run: the local engine when ``workers`` is None, else Ray."""
    job = replace(job, threads=threads_per_worker(cpus, workers or 1))
    engine = run_local if workers is None else ray_engine(workers, batch_size=4)
    with tempfile.TemporaryDirectory() as out:
        summary = run(films, Path(out), job, engine, "local" if workers is None else "ray", workers or 1)
    assert summary.analysed == len(films), summary
    return summary.films_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="folder of films (default: examples/ replicated)")
    parser.add_argument("--count", type=int, default=200, help="films per run when replicating examples/")
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--lung-checkpoint", default=str(DEFAULT_LUNG_CHECKPOINT))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--occlusion", nargs="+", default=["off", "fast"], choices=["off", "fast", "fine"])
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    table: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as copies:
        films = expand_inputs([str(args.data)]) if args.data else replicate(EXAMPLES, args.count, Path(copies))
        print(f"{len(films)} films, {cpus} CPUs, checkpoint {args.checkpoint}", file=sys.stderr)
        for occlusion in args.occlusion:
            job = Job(args.checkpoint, args.lung_checkpoint, Options(occlusion=occlusion))
            table[occlusion] = {"local": films_per_second(films, job, None, cpus)}
            for workers in args.workers:
                table[occlusion][f"ray x{workers}"] = films_per_second(films, job, workers, cpus)
    ray.shutdown()
    columns = list(next(iter(table.values())))
    print(f"{'occlusion':<10}" + "".join(f"{name + ' films/s':>18}" for name in columns))
    for occlusion, row in table.items():
        print(f"{occlusion:<10}" + "".join(f"{row[name]:>18.3f}" for name in columns))
    occlusion = "fast" if "fast" in table else next(iter(table))
    headline = table[occlusion]
    best = max(args.workers, key=lambda w: headline[f"ray x{w}"])
    ray_fps = headline[f"ray x{best}"]
    print(
        json.dumps(
            {
                "local_fps": headline["local"],
                "ray_fps": ray_fps,
                "ray_workers": best,
                "speedup": round(ray_fps / headline["local"], 3),
                "occlusion": occlusion,
                "films": len(films),
                "table": table,
            }
        )
    )


if __name__ == "__main__":
    main()
