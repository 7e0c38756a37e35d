"""The stored model report: how the classifier behaved on validation and shift_dev films.

``checkpoints/model_report.json`` (built by ``python -m xray_xai.artifacts.model_report``) holds
every validation and shift_dev film's calibrated P(pneumonia) and confidence band for one set of
classifier weights. The Model tab draws it; each analysis quotes from it the **track record** of
its own kind of answer: how often answers with the same label and band were right on validation
(the films the thresholds were fitted on) and on shift_dev (films from another acquisition batch,
never fitted on), so that a confident answer says how confident answers fared on shifted films.
Nothing is scored at run time, and a report built for other weights is refused.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import CLASSES
from .checkpoint import PROJECT_ROOT
from .results import Prediction, TrackRecord

log = logging.getLogger(__name__)

DEFAULT_REPORT = PROJECT_ROOT / "checkpoints" / "model_report.json"
REBUILD_COMMAND = (
    "python -m xray_xai.artifacts.model_report --train ../shared/data/chest_xray/train "
    "--shift ../shared/data/chest_xray/shift_dev --checkpoint checkpoints/classifier.json --out checkpoints/"
)
SPLITS = ("validation", "shift_dev")


@dataclass(frozen=True)
class Split:
    """The stored films of one split: true labels (1 = PNEUMONIA), calibrated P(pneumonia), band."""

    files: tuple[str, ...]
    labels: np.ndarray
    probs: np.ndarray
    bands: np.ndarray

    @classmethod
    def from_json(cls, raw: dict) -> Split:
        return cls(
            tuple(raw["file"]),
            np.asarray(raw["label"], dtype=int),
            np.asarray(raw["probability"], dtype=np.float64),
            np.asarray(raw["band"]),
        )


@dataclass(frozen=True)
class ModelReport:
    """A loaded ``model_report.json`` and the folder its error sprite lives in."""

    classifier_sha256: str
    operating_points: dict[str, dict[str, float]]
    splits: dict[str, Split]
    errors: tuple[dict, ...]
    sprite: Path
    tile: int
    band_operating_point: str = "balanced"  # the operating point at which the stored bands were given

    @classmethod
    def load(cls, path: str | Path) -> ModelReport:
        path = Path(path)
        raw = json.loads(path.read_text())
        return cls(
            raw["classifier_sha256"],
            raw["operating_points"],
            {name: Split.from_json(raw["splits"][name]) for name in SPLITS},
            tuple(raw["errors"]["films"]),
            path.parent / raw["errors"]["sprite"],
            int(raw["errors"]["tile"]),
            raw.get("band_operating_point", "balanced"),
        )

    def threshold(self, point: str) -> float:
        return float(self.operating_points[point]["threshold"])


def report_problem(path: str | Path, classifier_sha256: str) -> str | None:
    """Why the report at ``path`` must not be shown for the running classifier, or ``None``."""
    path = Path(path)
    rebuild = f"Rebuild it with:\n\n```\n{REBUILD_COMMAND}\n```"
    if not path.is_file():
        return f"**No model report found** ({path.name}). {rebuild}"
    built_for = json.loads(path.read_text()).get("classifier_sha256", "")
    if built_for != classifier_sha256:
        return (
            f"**The model report is stale:** it was built for classifier weights sha256 `{built_for[:12]}…`, "
            f"but the app runs weights `{classifier_sha256[:12]}…`. Its numbers would describe another model, "
            f"so they are not shown. {rebuild}"
        )
    return None


def load_matching(path: str | Path, classifier_sha256: str) -> ModelReport | None:
    """The report at ``path`` if it exists and was built for these weights, else None (a missing
    report is silent, a stale or unreadable one is logged as a warning)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        report = ModelReport.load(path)
    except (KeyError, TypeError, ValueError) as error:
        log.warning("Track records disabled: the model report at %s cannot be read (%s).", path, error)
        return None
    if report.classifier_sha256 != classifier_sha256:
        log.warning("Track records disabled: the model report at %s was built for other classifier weights.", path)
        return None
    return report


def track_record(report: ModelReport, prediction: Prediction) -> tuple[TrackRecord, ...]:
    """For each split, the stored films that got the same answer as ``prediction`` (label and
    band) and how many of those answers were right; () at an operating point other than the one
    the stored bands were given at (their bands would not be comparable)."""
    point = report.band_operating_point
    if prediction.operating_point.name != point:
        return ()
    positive = prediction.label == CLASSES[1]
    records = []
    for name, split in report.splits.items():
        called = split.probs >= report.threshold(point)
        same = (called == positive) & (split.bands == prediction.band)
        right = int((split.labels[same] == int(positive)).sum())
        records.append(TrackRecord(name, prediction.label, prediction.band, int(same.sum()), right))
    return tuple(records)
