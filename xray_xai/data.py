"""Labelled folders of radiographs, their reference lung masks, and a patient-level validation split.

A dataset folder is ``DIR/{NORMAL,PNEUMONIA}/*``. Several images can belong to one patient
(the patient is encoded in the file name), so validation patients are drawn by patient, never
by image: otherwise near-identical images sit on both sides and validation scores leak.
A mask folder has the same layout, one ``CLASS/STEM.png`` per film (0 = background, 255 = lung).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from . import CLASSES
from .imaging import IMAGE_SUFFIXES

T = TypeVar("T")

VAL_FRACTION, SPLIT_SEED = 0.15, 0  # the patient-level validation split every fitted value comes from
VAL_PATIENTS_FILE = "classifier_val_patients.json"  # its patient ids, next to the model card

_PATIENT_PATTERNS = (
    re.compile(r"^(person\d+)_"),  # person123_bacteria_4.jpeg
    re.compile(r"^(NORMAL2-IM-\d+)"),  # NORMAL2-IM-1427-0001.jpeg
    re.compile(r"^(IM-\d+)"),  # IM-0115-0001.jpeg
)


@dataclass(frozen=True)
class Sample:
    """One labelled image file."""

    path: Path
    label: int  # index into CLASSES

    @property
    def patient(self) -> str:
        return patient_id(self.path.name)


def patient_id(file_name: str) -> str:
    """Patient identifier encoded in a Kermany et al. file name (the stem if unknown)."""
    for pattern in _PATIENT_PATTERNS:
        match = pattern.match(file_name)
        if match:
            return match.group(1)
    return Path(file_name).stem


def list_samples(root: str | Path) -> list[Sample]:
    """All image files under ``root/NORMAL`` and ``root/PNEUMONIA``, sorted by class then name."""
    root = Path(root)
    missing = [name for name in CLASSES if not (root / name).is_dir()]
    if missing:
        raise FileNotFoundError(f"{root} must contain the folders {', '.join(CLASSES)}; missing: {', '.join(missing)}")
    samples = []
    for label, name in enumerate(CLASSES):
        for path in sorted((root / name).iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
                samples.append(Sample(path, label))
    return samples


def split_by_patient(
    samples: list[Sample], val_fraction: float = VAL_FRACTION, seed: int = SPLIT_SEED
) -> tuple[list[Sample], list[Sample]]:
    """Deterministic class-stratified split that keeps every patient on one side.

    Patients are grouped by the class of their images (a patient whose images carry both labels
    is grouped by their majority label) and ``val_fraction`` of each group goes to validation.
    """
    by_patient: dict[str, list[Sample]] = {}
    for sample in samples:
        by_patient.setdefault(sample.patient, []).append(sample)
    rng = np.random.default_rng(seed)
    val_patients: set[str] = set()
    for label in range(len(CLASSES)):
        group = sorted(p for p, s in by_patient.items() if round(np.mean([x.label for x in s])) == label)
        order = rng.permutation(len(group))
        n_val = int(round(val_fraction * len(group)))
        val_patients.update(group[i] for i in order[:n_val])
    train = [s for s in samples if s.patient not in val_patients]
    val = [s for s in samples if s.patient in val_patients]
    return train, val


def describe_split(val_fraction: float, seed: int | None) -> str:
    """The model card's one-line description of a :func:`split_by_patient` split."""
    return f"patient-level, class-stratified, val_fraction={val_fraction}, seed={seed}"


def split_with_patients(samples: list[Sample], val_patients: set[str]) -> tuple[list[Sample], list[Sample]]:
    """Reproduce a saved split from its validation patient ids."""
    train = [s for s in samples if s.patient not in val_patients]
    val = [s for s in samples if s.patient in val_patients]
    return train, val


def validation_samples(samples: list[Sample], checkpoint: str | Path) -> list[Sample]:
    """The samples of a checkpoint's validation patients (ids saved next to its model card)."""
    ids_path = Path(checkpoint).parent / VAL_PATIENTS_FILE
    if not ids_path.is_file():
        raise FileNotFoundError(f"The validation split needs the patient ids in {ids_path} (written by training).")
    return split_with_patients(samples, set(json.loads(ids_path.read_text())["patients"]))[1]


def seeded_subset(items: list[T], limit: int, seed: int = 0) -> list[T]:
    """A seeded random ``limit`` of the items, in their original order (all when ``limit`` is 0).

    The one way runs are cut down (``--limit``), so the same seed picks the same images everywhere.
    """
    if not limit or len(items) <= limit:
        return items
    keep = np.sort(np.random.default_rng(seed).choice(len(items), limit, replace=False))
    return [items[i] for i in keep]


def select_split(samples: list[Sample], split: str) -> list[Sample]:
    """``all`` samples, or the ``train`` / ``val`` side of the default patient-level split."""
    if split == "all":
        return samples
    train, val = split_by_patient(samples)
    return {"train": train, "val": val}[split]


def mask_path(sample: Sample, mask_dir: str | Path) -> Path:
    """Where a film's reference lung mask is: ``mask_dir/CLASS/STEM.png``."""
    return Path(mask_dir) / sample.path.parent.name / f"{sample.path.stem}.png"


def paired(samples: list[Sample], mask_dir: str | Path) -> list[tuple[Sample, Path]]:
    """Samples that have a reference mask, with its path (images without one are skipped)."""
    return [(s, mask_path(s, mask_dir)) for s in samples if mask_path(s, mask_dir).is_file()]


def read_mask(path: str | Path) -> np.ndarray:
    """A reference lung mask as a boolean array at its own resolution (True = lung)."""
    with Image.open(path) as image:
        return np.asarray(image.convert("L")) > 127
