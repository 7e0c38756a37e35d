"""The result schema shared by the pipeline, the report, the app, the CLI and the JSON export.

Plain frozen dataclasses: producers fill them, consumers only read them, and
:func:`to_jsonable` turns any of them into the JSON the app offers for download.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

# Confidence bands on the calibrated probability of the reported label: (lower bound, name).
BANDS: tuple[tuple[float, str], ...] = ((0.90, "High"), (0.60, "Moderate"), (0.0, "Low"))
# The validation targets the screening and rule-in operating points are fitted for
# (xray_xai.calibration.operating_points) and that the report states.
SCREENING_MIN_SENSITIVITY = 0.99
RULE_IN_MIN_SPECIFICITY = 0.99
BAND_EXPLANATION = (
    "Confidence band = calibrated probability of the reported label: High >= 90%, Moderate 60-90%, Low < 60%."
)


# Zone keys of ``Anatomy.zones``. Sides are the PATIENT's, in image order (the patient's right
# is on the image's left); ZONE_KEYS is the canonical order, which also breaks ties in the report.
SIDES = ("right", "left")
LEVELS = ("upper", "middle", "lower")
ZONE_KEYS = tuple(f"{side} {level}" for side in SIDES for level in LEVELS)
OUTSIDE_KEY = "outside lungs"

Region = tuple[int, int, int, int]  # a box (y0, y1, x0, x1), half-open, in model-input pixels


def confidence_band(confidence: float) -> str:
    """Band name for the calibrated probability of the reported label."""
    for lower, name in BANDS:
        if confidence >= lower:
            return name
    return BANDS[-1][1]


@dataclass(frozen=True)
class OperatingPoint:
    """A named decision threshold on P(pneumonia) and its validation performance."""

    name: str  # "balanced" | "screening" | "rule_in"
    threshold: float
    sensitivity: float
    specificity: float


@dataclass(frozen=True)
class BandReason:
    """Why the confidence band is lower than the probability alone would give (worded by the report)."""

    kind: str  # "members_disagree" | "unusual_input" | "evidence_outside_lungs"
    from_band: str
    to_band: str
    # members_disagree: the members' lowest and highest P(pneumonia), how many there are, and the
    # share of validation films whose spread stays under the limit.
    low: float | None = None
    high: float | None = None
    members: int | None = None
    quantile: float | None = None
    # evidence_outside_lungs: which map, its share outside the lungs and the validation-fitted limit.
    method: str | None = None
    share: float | None = None
    limit: float | None = None


@dataclass(frozen=True)
class MapsSource:
    """Which networks of an ensemble the maps come from (0-based member indices)."""

    members: tuple[int, ...]
    total: int
    lung_box_members: tuple[
        int, ...
    ] = ()  # members that see only the lung box (their maps are not in the film's frame)


@dataclass(frozen=True)
class Prediction:
    label: str  # "PNEUMONIA" if probability >= operating_point.threshold else "NORMAL"
    probability: float  # calibrated P(pneumonia)
    confidence: float  # calibrated probability of the reported label
    band: str  # "High" | "Moderate" | "Low", after any demotion for uncertainty or unusual input
    operating_point: OperatingPoint
    # Spread (standard deviation) of the ensemble members' calibrated P(pneumonia); None for a single network.
    uncertainty: float | None = None
    member_probabilities: tuple[float, ...] = ()
    # What each member sees ("whole film" or "lung box"), when the members see the film differently; else ().
    member_views: tuple[str, ...] = ()
    # Why the band is lower than the probability alone would give, in the order the steps were taken.
    band_reasons: tuple[BandReason, ...] = ()
    # The answer shown to a person: ``label`` when the conformal prediction set (fitted on validation)
    # is that label alone and the film looks like the training films, else "INCONCLUSIVE".
    answer: str = ""
    prediction_set: tuple[str, ...] = ()  # the conformal prediction set, () when the card has none

    def __post_init__(self) -> None:
        if not self.answer:
            object.__setattr__(self, "answer", self.label)


@dataclass(frozen=True)
class TrackRecord:
    """How often stored answers like the current one (same label, same band, at the operating
    point the stored bands were given at) were right on one labelled split."""

    split: str  # "validation" or "shift_dev"
    label: str
    band: str
    n: int
    correct: int


@dataclass(frozen=True)
class OODResult:
    """Whether the input looks unlike the training data (pediatric frontal chest radiographs)."""

    flagged: bool = False
    reasons: tuple[str, ...] = ()
    distance: float | None = None  # Mahalanobis distance in feature space
    threshold: float | None = None
    not_radiograph: bool = False  # plainly not a chest radiograph (colour photo, document, noise): no answer at all


@dataclass(frozen=True)
class Agreement:
    """How far Grad-CAM and occlusion point at the same regions."""

    spearman: float
    top20_iou: float
    verdict: str  # "agree" | "partly agree" | "disagree"
    grid: tuple[int, int]  # resolution at which the maps were compared


@dataclass(frozen=True)
class Anatomy:
    """Where the heatmaps fall relative to the lungs.

    ``zones`` maps a method name ("gradcam", "occlusion") to shares of that map's mass by
    zone key: "right upper", "right middle", "right lower", "left upper", "left middle",
    "left lower" and "outside lungs" ("right" and "left" are the PATIENT's sides: the
    patient's right is on the image's left). When the lung segmentation is unavailable or
    implausible (``segmentation_ok`` False) the same keys name image regions instead (image
    halves and thirds) and "outside lungs" is absent.
    """

    segmentation_ok: bool
    segmentation_note: str | None = None
    lung_area_fraction: float | None = None
    outside_lung_share: dict[str, float] = field(default_factory=dict)
    zones: dict[str, dict[str, float]] = field(default_factory=dict)
    shortcut_warning: bool = False
    shortcut_methods: tuple[str, ...] = ()


@dataclass(frozen=True)
class SimilarCase:
    """A training film near the upload in the classifier's feature space."""

    id: str  # the dataset's file name
    label: str  # the dataset's label of that film, not a finding about the upload
    similarity: float  # cosine similarity of standardised features, in [-1, 1]


@dataclass(frozen=True)
class EvidenceBox:
    """One of a map's strongest regions, in the upload's own pixels (``x1``, ``y1`` exclusive)."""

    method: str  # the map: "gradcam" (whichever CAM method ran) or "occlusion"
    x0: int
    y0: int
    x1: int
    y1: int
    score: float  # share of the map's positive mass inside this region
    zone: str  # an Anatomy zone key ("right lower", "outside lungs", ...) holding most of that mass


@dataclass(frozen=True)
class Analysis:
    """Everything one analysis produced, minus the images."""

    prediction: Prediction
    ood: OODResult = OODResult()
    input_warnings: tuple[str, ...] = ()
    cam_method: str = "gradcam"
    explained_class: str = "PNEUMONIA"  # the class whose evidence the maps show
    maps_source: MapsSource | None = None  # which networks of an ensemble the maps come from (None: one network)
    anatomy: Anatomy | None = None
    agreement: Agreement | None = None  # None until occlusion has run
    similar: tuple[SimilarCase, ...] = ()  # nearest training films, most similar first; () without an index
    track_record: tuple[TrackRecord, ...] = ()  # how answers like this one fared per split; () without a model report
    boxes: tuple[EvidenceBox, ...] = ()  # strongest regions of each map, strongest first per map
    runtime: str = ""  # what scored the film, e.g. "OpenVINO 2026.4.1 f32" ("": not recorded)
    occlusion_precision: str | None = None  # the occlusion map's torch precision, "f32" or "bf16"; None until it ran
    report: str = ""


def to_jsonable(value: Any) -> Any:
    """Dataclasses, tuples and numpy scalars -> plain JSON types."""
    if is_dataclass(value):
        return to_jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value
