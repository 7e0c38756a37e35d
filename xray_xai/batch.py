"""Batch analysis of many films, the same rows whichever engine runs them.

Engine-independent parts of ``python -m xray_xai analyze``: input expansion (files, folders,
manifests), the result row, resume from an earlier ``results.jsonl``, writing (rows appended as
they complete, then rewritten in input order, plus a Parquet copy) and the summary.

Two engines produce :class:`Outcome` objects from ``(index, path)`` items:

- :func:`run_local`: one in-process :class:`Analyzer`.
- :func:`ray_engine`: a Ray Data ``map_batches`` over a fixed pool of :class:`Analyzer` actors;
  each actor loads the pipeline once. Input paths must be readable at the same path on every
  node (rows and overlay PNGs travel back to the driver, which alone writes ``--out``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from . import DISCLAIMER
from .conformal import INCONCLUSIVE
from .imaging import IMAGE_SUFFIXES, InputError
from .pipeline import Options, Pipeline, Result
from .report import band_reason_text
from .results import to_jsonable
from .ui.overlay import draw_result

MANIFEST_SUFFIXES = frozenset({".txt", ".csv"})
MANIFEST_COLUMNS = ("path", "input", "file")  # a CSV column with one of these names holds the paths
INTERNAL_ERROR = "Internal error while analysing this file"
RESULTS, PARQUET, SUMMARY = "results.jsonl", "results.parquet", "summary.json"
# Every row's fields, in order (docs/usage.md): an error row has them all, null where nothing was computed.
ROW_FIELDS = (
    "input", "ok", "error", "answer", "label", "probability", "band", "band_reasons", "uncertainty",
    "member_probabilities", "member_views", "operating_point", "threshold", "prediction_set", "ood", "agreement",
    "anatomy", "similar", "track_record", "boxes", "overlays", "report", "disclaimer",
)  # fmt: skip

Item = tuple[int, str]  # (position in the input list, path)


@dataclass(frozen=True)
class Job:
    """What every worker needs to analyse films the same way."""

    checkpoint: str
    lung_checkpoint: str
    options: Options = Options()
    overlays: bool = True
    threads: int = 1  # torch threads per worker


@dataclass(frozen=True)
class Outcome:
    """One analysed input: its results.jsonl row and the overlay PNGs to write next to it."""

    index: int
    row: dict
    images: dict[str, bytes] = field(default_factory=dict)  # file name -> PNG bytes


@dataclass(frozen=True)
class Summary:
    inputs: int
    ok: int
    errors: int
    inconclusive: int  # ok rows whose answer is INCONCLUSIVE
    ood_flagged: int
    shortcut_warnings: int
    analysed: int  # in this run; the others were already in results.jsonl
    internal_errors: int  # in this run
    seconds: float
    films_per_second: float
    engine: str
    workers: int
    threads_per_worker: int

    def describe(self) -> str:
        """One line for people."""
        return (
            f"{self.inputs} films: {self.ok} ok, {plural(self.errors, 'error')}, "
            f"{self.inconclusive} INCONCLUSIVE, {self.ood_flagged} flagged out-of-distribution, "
            f"{self.shortcut_warnings} with a shortcut warning; {self.analysed} analysed in {self.seconds:.1f} s "
            f"({self.films_per_second:.2f} films/s, {self.engine}, {self.workers} x {self.threads_per_worker} threads)"
        )


# ---------------------------------------------------------------------------------------------
# Inputs


def expand_inputs(inputs: Iterable[str]) -> list[str]:
    """Files as given, folders recursively (image and DICOM files, sorted), manifests line by line;
    duplicates dropped, first occurrence kept."""
    paths: list[str] = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            paths.extend(str(p) for p in sorted(path.rglob("*")) if _is_image_file(p))
        elif path.suffix.lower() in MANIFEST_SUFFIXES and path.is_file():
            paths.extend(read_manifest(path))
        else:
            paths.append(given)
    return list(dict.fromkeys(paths))


def _is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def read_manifest(path: Path) -> list[str]:
    """Paths listed in a text file (one a line, ``#`` comments) or a CSV (a ``path``/``input``/``file``
    column, else the first); relative paths are relative to the manifest's folder."""
    text = path.read_text()
    if path.suffix.lower() == ".csv":
        rows = list(csv.reader(io.StringIO(text)))
        header = [cell.strip().lower() for cell in rows[0]] if rows else []
        named = next((header.index(name) for name in MANIFEST_COLUMNS if name in header), None)
        column = 0 if named is None else named
        entries = [row[column] for row in rows[0 if named is None else 1 :] if len(row) > column]
    else:
        entries = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return [str(path.parent / entry.strip()) for entry in entries if entry.strip()]


# ---------------------------------------------------------------------------------------------
# Rows


def plural(count: int, noun: str) -> str:
    """``plural(1, "error") -> "1 error"``, ``plural(2, "error") -> "2 errors"``."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


def result_record(path: str, result: Result) -> dict:
    """The results.jsonl object for an analysed input (the fields of :data:`ROW_FIELDS` but
    ``overlays``): ``answer`` is what to show (PNEUMONIA, NORMAL or INCONCLUSIVE), ``label`` the
    thresholded label behind it; an image that is plainly not a radiograph has no label,
    probability or band (null)."""
    analysis = result.analysis
    prediction = analysis.prediction
    decided = not analysis.ood.not_radiograph
    return {
        "input": path,
        "ok": True,
        "error": None,
        "answer": prediction.answer,
        "label": prediction.label if decided else None,
        "probability": prediction.probability if decided else None,
        "band": prediction.band if decided else None,
        "band_reasons": [band_reason_text(r, analysis.cam_method) for r in prediction.band_reasons],
        "uncertainty": prediction.uncertainty,
        "member_probabilities": list(prediction.member_probabilities),
        "member_views": list(prediction.member_views),
        "operating_point": prediction.operating_point.name,
        "threshold": prediction.operating_point.threshold,
        "prediction_set": list(prediction.prediction_set),
        "ood": to_jsonable(analysis.ood),
        "agreement": to_jsonable(analysis.agreement),
        "anatomy": to_jsonable(analysis.anatomy),
        "similar": to_jsonable(analysis.similar),
        "track_record": to_jsonable(analysis.track_record),
        "boxes": to_jsonable(analysis.boxes),
        "report": analysis.report,
        "disclaimer": DISCLAIMER,
    }


def error_record(path: str, message: str) -> dict:
    """The row of an input that could not be analysed: every field of :data:`ROW_FIELDS`, null
    (or empty) where nothing was computed, with the plain-language ``error``."""
    empty = {"band_reasons": [], "member_probabilities": [], "member_views": [], "prediction_set": [], "similar": [],
             "track_record": [], "boxes": [], "overlays": []}  # fmt: skip
    return {
        **dict.fromkeys(ROW_FIELDS),
        **empty,
        "input": path,
        "ok": False,
        "error": message,
        "disclaimer": DISCLAIMER,
    }


def overlay_pngs(result: Result, stem: str) -> dict[str, bytes]:
    """The overlays of a result as PNG files ``{stem}_{map}.png``."""
    images = {}
    for name, rgb in draw_result(result).items():
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(rgb)).save(buffer, format="PNG")
        images[f"{stem}_{name}.png"] = buffer.getvalue()
    return images


class Analyzer:
    """A loaded pipeline that turns items into outcomes; also the Ray Data actor class."""

    def __init__(self, job: Job) -> None:
        torch.set_num_threads(job.threads)
        self.job = job
        self.pipeline = Pipeline.load(job.checkpoint, job.lung_checkpoint)

    def analyze(self, index: int, path: str) -> Outcome:
        """One input; a file that cannot be analysed becomes an error row, never an exception."""
        try:
            result = self.pipeline.analyze(path, self.job.options)
        except InputError as error:
            return Outcome(index, error_record(path, str(error)))
        except Exception as error:  # a bug, not the user's fault: report it, keep going
            return Outcome(index, error_record(path, f"{INTERNAL_ERROR} ({type(error).__name__}); please report it."))
        images = overlay_pngs(result, f"{index:04d}_{Path(path).stem}") if self.job.overlays else {}
        row = {**result_record(path, result), "overlays": list(images)}
        return Outcome(index, {key: row[key] for key in ROW_FIELDS}, images)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Ray Data batch ``{"index", "path"}`` -> ``{"outcome"}`` (pickled :class:`Outcome`)."""
        outcomes = [
            pickle.dumps(self.analyze(int(i), str(p))) for i, p in zip(batch["index"], batch["path"], strict=True)
        ]
        return {"outcome": np.array(outcomes, dtype=object)}


# ---------------------------------------------------------------------------------------------
# Engines

Engine = Callable[[Job, Sequence[Item]], Iterator[Outcome]]


def run_local(job: Job, items: Sequence[Item]) -> Iterator[Outcome]:
    """Analyse the items one after the other in this process."""
    if not items:
        return
    analyzer = Analyzer(job)
    for index, path in items:
        yield analyzer.analyze(index, path)


def ray_engine(workers: int, batch_size: int) -> Engine:
    """An engine running ``workers`` :class:`Analyzer` actors on the connected Ray runtime."""

    def run(job: Job, items: Sequence[Item]) -> Iterator[Outcome]:
        if not items:
            return
        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = False  # the run's own bar counts films
        dataset = ray.data.from_items(
            [{"index": index, "path": path} for index, path in items],
            override_num_blocks=-(-len(items) // batch_size),
        )
        analysed = dataset.map_batches(
            Analyzer,
            fn_constructor_kwargs={"job": job},
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=job.threads,
        )
        for row in analysed.iter_rows():
            yield pickle.loads(row["outcome"])

    return run


def threads_per_worker(cpus: float, workers: int) -> int:
    """Torch threads per worker so that workers x threads fit the CPUs."""
    return max(1, int(cpus) // workers)


# ---------------------------------------------------------------------------------------------
# Writing, resume and summary


def read_rows(path: Path) -> list[dict]:
    """Rows of an existing results.jsonl (none if absent); a line cut by a crash is dropped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def order_rows(inputs: Sequence[str], rows: Iterable[dict]) -> list[dict]:
    """One row per input in input order, then rows of earlier runs for other inputs."""
    by_input = {row["input"]: row for row in rows}
    wanted = set(inputs)
    return [by_input[p] for p in inputs if p in by_input] + [r for p, r in by_input.items() if p not in wanted]


def write_parquet(rows: Sequence[dict], path: Path) -> None:
    """The rows as a Parquet table: one column per key, nested values (lists and objects such as
    ood, agreement, anatomy, similar, track_record, boxes) as JSON text, missing keys (error rows) as null."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = list(dict.fromkeys(key for row in rows for key in row))
    table = pa.Table.from_pylist([{key: _flat(row.get(key)) for key in columns} for row in rows])
    pq.write_table(table, path)


def _flat(value):
    return json.dumps(value) if isinstance(value, (dict, list)) else value


def summarize(
    rows: Sequence[dict], fresh: Sequence[dict], seconds: float, engine: str, workers: int, threads: int
) -> Summary:
    """Counts over all rows, throughput over the rows analysed in this run."""
    ok = [row for row in rows if row["ok"]]
    return Summary(
        inputs=len(rows),
        ok=len(ok),
        errors=len(rows) - len(ok),
        inconclusive=sum(row.get("answer") == INCONCLUSIVE for row in ok),
        ood_flagged=sum(row["ood"]["flagged"] for row in ok),
        shortcut_warnings=sum(bool(row["anatomy"] and row["anatomy"]["shortcut_warning"]) for row in ok),
        analysed=len(fresh),
        internal_errors=sum(not row["ok"] and row["error"].startswith(INTERNAL_ERROR) for row in fresh),
        seconds=round(seconds, 3),
        films_per_second=round(len(fresh) / seconds, 3) if seconds > 0 else 0.0,
        engine=engine,
        workers=workers,
        threads_per_worker=threads,
    )


def run(
    inputs: Sequence[str], out: Path, job: Job, engine: Engine, engine_name: str = "local", workers: int = 1
) -> Summary:
    """Analyse the inputs not yet in ``out/results.jsonl``, appending rows as they complete; then
    rewrite results.jsonl in input order, write results.parquet and summary.json."""
    out.mkdir(parents=True, exist_ok=True)
    results = out / RESULTS
    previous = read_rows(results)
    _write_jsonl(previous, results)  # drop a line cut by a crash before appending after it
    done = {row["input"] for row in previous}
    todo = [(index, path) for index, path in enumerate(inputs) if path not in done]
    fresh: list[dict] = []
    start = time.perf_counter()
    with (
        open(results, "a") as sink,
        tqdm(total=len(inputs), initial=len(inputs) - len(todo), desc="analysing", unit="film", file=sys.stderr) as bar,
    ):
        for outcome in engine(job, todo):
            for name, png in outcome.images.items():
                (out / name).write_bytes(png)
            sink.write(json.dumps(outcome.row) + "\n")
            sink.flush()
            fresh.append(outcome.row)
            bar.update()
    seconds = time.perf_counter() - start
    rows = order_rows(inputs, previous + fresh)
    _write_jsonl(rows, results)
    write_parquet(rows, out / PARQUET)
    summary = summarize(rows, fresh, seconds, engine_name, workers, job.threads)
    (out / SUMMARY).write_text(json.dumps(asdict(summary), indent=2) + "\n")
    return summary


def _write_jsonl(rows: Sequence[dict], path: Path) -> None:
    """Replace ``path`` atomically, so that a crash leaves the appended rows intact."""
    partial = path.with_suffix(".jsonl.tmp")
    partial.write_text("".join(json.dumps(row) + "\n" for row in rows))
    os.replace(partial, path)
