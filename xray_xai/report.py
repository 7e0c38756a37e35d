"""The plain-text report: a deterministic, hedged reading of one :class:`~xray_xai.results.Analysis`.

Pure functions from the result schema to text; no styling (that is the app's job). The
wording is deliberately hedged: the report describes what the *model* output, never states
a diagnosis, and always ends with the disclaimer. The app's badge, probability panel and
captions take their words and numbers from the helpers here (:func:`probability_pair`,
:func:`spread_text`, :func:`answer_reason`, :func:`band_reason_text`, :func:`method_name`), so
that the page and the report never say different things.
"""

from __future__ import annotations

import math

from . import DISCLAIMER
from .conformal import INCONCLUSIVE
from .results import (
    BAND_EXPLANATION,
    OUTSIDE_KEY,
    RULE_IN_MIN_SPECIFICITY,
    SCREENING_MIN_SENSITIVITY,
    ZONE_KEYS,
    Agreement,
    Analysis,
    Anatomy,
    BandReason,
    EvidenceBox,
    MapsSource,
    OODResult,
    Prediction,
    SimilarCase,
    TrackRecord,
)

TRAINING_DATA = "pediatric (1-5 years) anterior-posterior (AP) chest radiographs"
ELSEWHERE = "films from another hospital, machine or acquisition batch"

# Operating points: (human name, how its threshold was chosen, what holds under shift and what
# does not). Screening <= balanced <= rule-in by construction (calibration.operating_points):
# that order holds on any films, the validation rates only on validation films.
OPERATING_POINT_NAMES = {
    "balanced": (
        "balanced",
        "threshold at the validation prevalence of pneumonia, which for calibrated probabilities balances "
        "sensitivity and specificity",
        f"both rates hold on the validation films the threshold was fitted on, not beyond: on {ELSEWHERE} either "
        "can be lower",
    ),
    "screening": (
        "screening",
        f"threshold chosen for a validation sensitivity of at least {SCREENING_MIN_SENSITIVITY:.0%} and never above "
        "balanced: fewer missed cases, more false alarms",
        "as its threshold is never above balanced, on any films it misses no more cases than balanced does; the "
        f"{SCREENING_MIN_SENSITIVITY:.0%} sensitivity itself holds on the validation films only, and on {ELSEWHERE} "
        "it can miss more",
    ),
    "rule_in": (
        "rule-in",
        f"threshold chosen for a validation specificity of at least {RULE_IN_MIN_SPECIFICITY:.0%} and never below "
        "balanced: fewer false alarms, more missed cases",
        "as its threshold is never below balanced, on any films it raises no more false alarms than balanced does; "
        f"the {RULE_IN_MIN_SPECIFICITY:.0%} specificity itself holds on the validation films only, and on {ELSEWHERE} "
        "it can raise more",
    ),
}
BAND_LOWERING = (
    "The band is then lowered when the answer deserves less trust than its probability says: one step when the "
    "ensemble's networks disagree or the evidence lies outside the lungs, to Low when the film looks unlike the "
    "training films; so a Low band can sit next to a high probability."
)
BAND_LEGEND = f"{BAND_EXPLANATION} {BAND_LOWERING}"
METHOD_NAMES = {
    "gradcam": "Grad-CAM",
    "hirescam": "HiResCAM",
    "gradcam++": "Grad-CAM++",
    "layercam": "LayerCAM",
    "occlusion": "Occlusion",
}
AGREEING = ("agree", "partly agree")  # agreement verdicts under which one location is stated for both maps

MIN_NAMED_SHARE = 0.10  # zones holding at least this share of a map are named


def percent(value: float) -> str:
    """``0.8734 -> "87.3%"``, truncated rather than rounded: the one percentage format of the
    report, the app and the API's text.

    Truncation keeps a displayed value from crossing a boundary the value has not reached
    (0.8999 shows as 89.9%, not as a "Moderate" 90.0%), and never shows 100.0% for p < 1;
    a positive value below 0.1% shows as "<0.1%", never as 0.0%.
    """
    if not math.isfinite(value):
        return "n/a"
    if 0 < value < 0.001:
        return "<0.1%"
    return f"{math.floor(round(value * 1000, 6)) / 10:.1f}%"


def probability_pair(prediction: Prediction) -> tuple[str, str]:
    """P(pneumonia) and P(normal) as shown everywhere, adding up to 100.0%.

    The probability of the thresholded label is :func:`percent`-truncated and the other one is
    100.0% minus it; where the other is below 0.1% the pair reads ">99.9%" and "<0.1%"."""
    confidence = prediction.confidence
    if not math.isfinite(confidence):
        return "n/a", "n/a"
    if 0 < 1 - confidence < 0.001:
        shown, other = ">99.9%", "<0.1%"
    else:
        shown = percent(confidence)
        tenths = math.floor(round(confidence * 1000, 6))
        other = f"{(1000 - tenths) / 10:.1f}%" if shown != "<0.1%" else ">99.9%"
    return (shown, other) if prediction.label == "PNEUMONIA" else (other, shown)


def spread_text(uncertainty: float) -> str:
    """The ensemble's spread in percentage points, the one format of the page and the report:
    ``0.2251 -> "±22.5 points"`` (truncated like :func:`percent`)."""
    if not math.isfinite(uncertainty):
        return "n/a"
    if 0 < uncertainty < 0.001:
        return "under ±0.1 points"
    return f"±{math.floor(round(uncertainty * 1000, 6)) / 10:.1f} points"


def operating_point_name(name: str) -> str:
    """Human name of an operating point: ``"rule_in" -> "rule-in"``."""
    return OPERATING_POINT_NAMES.get(name, (name.replace("_", "-"), "", ""))[0]


def method_name(key: str, cam_method: str = "gradcam") -> str:
    """Display name of a map; the "gradcam" key holds whichever CAM method ran (``cam_method``)."""
    name = cam_method if key == "gradcam" else key
    return METHOD_NAMES.get(name, name)


def zone_label(key: str, segmentation_ok: bool) -> str:
    """``"right lower" -> "patient's right lower zone"`` (or "... image region" without lungs)."""
    return f"patient's {key} {'zone' if segmentation_ok else 'image region'}"


def ranked_zones(shares: dict[str, float]) -> list[tuple[str, float]]:
    """Lung zones by decreasing share, ties in canonical order; "outside lungs" excluded."""
    present = [(key, shares[key]) for key in ZONE_KEYS if key in shares]
    return sorted(present, key=lambda item: (-item[1], ZONE_KEYS.index(item[0])))


def named_zones(shares: dict[str, float]) -> list[tuple[str, float]]:
    """The zones where a map concentrates: every zone >= MIN_NAMED_SHARE, at least the top one."""
    ranked = ranked_zones(shares)
    return [item for item in ranked if item[1] >= MIN_NAMED_SHARE] or ranked[:1]


def _methods(anatomy: Anatomy) -> list[str]:
    """Methods with zone shares, the CAM method(s) first and occlusion last."""
    return sorted(anatomy.zones, key=lambda m: (m == "occlusion", m))


def _join(labels: list[str]) -> str:
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


# ---------------------------------------------------------------------------------------------
# The answer


def is_inconclusive(prediction: Prediction) -> bool:
    return prediction.answer == INCONCLUSIVE


def answer_reasons(prediction: Prediction, ood: OODResult = OODResult()) -> list[str]:
    """Why the answer is INCONCLUSIVE, as clauses ([] for a decisive answer): the conformal set
    (when the card has one) is not the thresholded label alone, or the film looks unlike the
    training films (the OOD check flagged it)."""
    if ood.not_radiograph:
        return ["the image does not look like a chest radiograph"]
    if not is_inconclusive(prediction):
        return []
    reasons = []
    labels = prediction.prediction_set
    if len(labels) > 1:
        reasons.append("both NORMAL and PNEUMONIA are in its conformal prediction set, so either could be right")
    elif labels and labels != (prediction.label,):
        reasons.append(
            f"its conformal prediction set holds only {labels[0]}, while the probability falls on the "
            f"{prediction.label} side of this operating point's threshold"
        )
    if ood.flagged or any(r.kind == "unusual_input" for r in prediction.band_reasons):
        reasons.append("the film looks unlike the training films")
    return reasons or ["the reliability checks did not allow an answer"]


def answer_reason(prediction: Prediction, ood: OODResult = OODResult()) -> str:
    """:func:`answer_reasons` as one clause ("" for a decisive answer)."""
    return "; and ".join(answer_reasons(prediction, ood))


# ---------------------------------------------------------------------------------------------
# LOCATIONS


def _method_line(method: str, anatomy: Anatomy, cam_method: str) -> str:
    shares = anatomy.zones[method]
    named, ranked = named_zones(shares), ranked_zones(shares)
    parts = [f"{zone_label(key, anatomy.segmentation_ok)} {percent(share)}" for key, share in named]
    if len(named) < len(ranked):
        parts.append(f"other zones {percent(sum(share for _, share in ranked[len(named) :]))}")
    line = f"- {method_name(method, cam_method)}: " + ", ".join(parts)
    outside = shares.get(OUTSIDE_KEY, anatomy.outside_lung_share.get(method))
    if anatomy.segmentation_ok and outside is not None:
        line += f"; outside both lungs {percent(outside)}"
    return line + "."


def maps_agree_on_location(analysis: Analysis) -> bool:
    """Whether one location may be stated for both maps: their agreement verdict is agree or
    partly agree AND their largest zones are the same."""
    anatomy, agreement = analysis.anatomy, analysis.agreement
    if anatomy is None or agreement is None or agreement.verdict not in AGREEING:
        return False
    tops = {ranked_zones(anatomy.zones[m])[0][0] for m in _methods(anatomy) if ranked_zones(anatomy.zones[m])}
    return len(tops) == 1


def _concentration_line(analysis: Analysis) -> str:
    """Where the maps concentrate: one location only where they agree, else where each one points."""
    anatomy, cam_method = analysis.anatomy, analysis.cam_method
    methods = _methods(anatomy)
    ok = anatomy.segmentation_ok
    if len(methods) == 1:
        keys = [key for key, _ in named_zones(anatomy.zones[methods[0]])]
        return (
            f"- {method_name(methods[0], cam_method)} concentrates in the "
            + _join([zone_label(k, ok) for k in keys])
            + "."
        )
    if maps_agree_on_location(analysis):
        common = set.intersection(*(set(key for key, _ in named_zones(anatomy.zones[m])) for m in methods))
        mean = {key: sum(anatomy.zones[m][key] for m in methods) / len(methods) for key in common}
        keys = [key for key, _ in ranked_zones(mean)]
        return "- Both maps concentrate in the " + _join([zone_label(k, ok) for k in keys]) + "."
    tops = [
        (method_name(m, cam_method), ranked_zones(anatomy.zones[m])[0][0])
        for m in methods
        if ranked_zones(anatomy.zones[m])
    ]
    where = _join([f"{name} points mostly to the {zone_label(key, ok)}" for name, key in tops])
    if analysis.agreement is None:
        why = "their agreement was not measured"
    elif analysis.agreement.verdict not in AGREEING:
        why = f"their agreement verdict is {analysis.agreement.verdict}"
    else:
        why = "their largest zones differ"
    return f"- The maps do not agree on one location ({why}): {where}."


def format_locations(analysis: Analysis) -> list[str]:
    """Lines of the LOCATIONS section: where the heatmaps concentrate, by the patient's side and zone."""
    anatomy = analysis.anatomy
    lines = [f"Heatmaps show where the model found evidence for {analysis.explained_class}."]
    if anatomy is None or not anatomy.zones:
        return lines + ["Locations are not available: the lung analysis did not run for this image."]
    if anatomy.segmentation_ok:
        lines.append("Sides are the patient's: radiographs are displayed with the patient's right on the image's left.")
    else:
        note = (anatomy.segmentation_note or "").strip()
        note = f" {note[:1].upper()}{note[1:].rstrip('.')}." if note else ""
        lines.append(
            f"The lung outline could not be found reliably.{note} The zones below are image regions "
            "(halves and thirds of the image), not lungs; patient's right = image left."
        )
    methods = _methods(anatomy)
    lines.append(_concentration_line(analysis))
    lines += [_method_line(m, anatomy, analysis.cam_method) for m in methods]
    if analysis.agreement is None and "occlusion" not in anatomy.zones:
        lines.append(
            "- Occlusion has not run yet (or was switched off), so locations come from "
            f"{method_name(methods[0], analysis.cam_method)} alone."
        )
    if anatomy.segmentation_ok and anatomy.lung_area_fraction is not None:
        lines.append(
            f"- The lungs cover {percent(anatomy.lung_area_fraction)} of the image, so an evenly spread map "
            f"would put {percent(1 - anatomy.lung_area_fraction)} of its mass outside them."
        )
    return lines


# ---------------------------------------------------------------------------------------------
# QUICK SUMMARY, FINDINGS, IMPRESSION


def _finding(analysis: Analysis) -> str:
    if is_inconclusive(analysis.prediction):
        return "the model cannot tell reliably whether this film shows features it associates with pneumonia"
    if analysis.prediction.label == "PNEUMONIA":
        return "the model's output suggests features that the model associates with pneumonia"
    return "the model's output does not reach its threshold for features it associates with pneumonia"


def summary_sentence(analysis: Analysis) -> str:
    """The one-sentence quick summary."""
    prediction = analysis.prediction
    band = prediction.band
    finding = _finding(analysis)
    pneumonia, _ = probability_pair(prediction)
    if is_inconclusive(prediction):
        clauses = [
            f"{finding[0].upper()}{finding[1:]}: its answer is INCONCLUSIVE (probability of pneumonia {pneumonia}), "
            f"because {answer_reason(prediction, analysis.ood)}"
        ]
    else:
        clauses = [f"{finding[0].upper()}{finding[1:]} (probability of pneumonia {pneumonia}, {band} confidence)"]
    if analysis.ood.flagged and not is_inconclusive(prediction):
        clauses.append("the input looks unlike the training images, so this result should not be relied on")
    elif band == "Low" and not is_inconclusive(prediction):
        clauses.append("the model is uncertain")
    elif prediction.band_reasons and not is_inconclusive(prediction):
        clauses.append(
            "the confidence band was lowered because the answer deserves less trust than its probability suggests"
        )
    clauses.append("this is not a diagnosis")
    return "; ".join(clauses) + "."


def _operating_point_line(prediction: Prediction) -> str:
    point = prediction.operating_point
    _, description, guarantee = OPERATING_POINT_NAMES.get(point.name, ("", "", ""))
    line = (
        f"- Operating point: {operating_point_name(point.name)}"
        + (f" ({description})" if description else "")
        + f"; a probability of pneumonia of at least {percent(point.threshold)} falls on the PNEUMONIA side. "
        f"On validation images it had sensitivity {percent(point.sensitivity)} "
        f"and specificity {percent(point.specificity)}"
    )
    return line + (f". Under shift: {guarantee}." if guarantee else ".")


def _answer_lines(analysis: Analysis) -> list[str]:
    prediction = analysis.prediction
    pair = probability_pair(prediction)
    confidence = pair[0] if prediction.label == "PNEUMONIA" else pair[1]
    if not is_inconclusive(prediction):
        return [
            f"- Reported label: {prediction.label}, with {confidence} calibrated probability "
            f"(confidence band: {prediction.band})."
        ]
    lines = [
        f"- Answer: INCONCLUSIVE, because {answer_reason(prediction, analysis.ood)}. "
        "The probability alone falls on the "
        f"{prediction.label} side of the threshold, with {confidence} calibrated probability (confidence band: "
        f"{prediction.band}); that is not reported as the answer."
    ]
    return lines


def _conformal_line(prediction: Prediction) -> list[str]:
    if not prediction.prediction_set:
        return []
    return [
        "- Conformal prediction set (the labels that a rule fitted on validation films cannot exclude): "
        + _join(list(prediction.prediction_set))
        + "."
    ]


def format_findings(analysis: Analysis) -> list[str]:
    prediction = analysis.prediction
    pneumonia, _ = probability_pair(prediction)
    return [
        f"- Calibrated probability of pneumonia: {pneumonia}.",
        *_answer_lines(analysis),
        *_conformal_line(prediction),
        *_uncertainty_lines(prediction, analysis.cam_method),
        _operating_point_line(prediction),
        f"- {BAND_LEGEND}",
        *_track_record_lines(analysis.track_record, is_inconclusive(prediction)),
    ]


# How each split of the stored model report is named in the track-record line.
TRACK_RECORD_SPLITS = {
    "validation": "validation films from the training batch",
    "shift_dev": "shift_dev films from another acquisition batch (never used for fitting)",
}


def _track_record_lines(records: tuple[TrackRecord, ...], inconclusive: bool = False) -> list[str]:
    """How often answers like this one were right on the stored labelled films, split by split."""
    if not records:
        return []
    parts = []
    for record in records:
        where = TRACK_RECORD_SPLITS.get(record.split, f"{record.split} films")
        if record.n:
            parts.append(f"right for {record.correct} of {record.n} ({percent(record.correct / record.n)}) {where}")
        else:
            parts.append(f"never given to {where}")
    first = records[0]
    if inconclusive:
        return [
            f"- Track record of films scored like this one ({first.label} side of the threshold, {first.band} band; "
            "this film's answer is INCONCLUSIVE): that label was " + "; ".join(parts) + "."
        ]
    return [f"- Track record of this kind of answer ({first.label}, {first.band} band): " + "; ".join(parts) + "."]


def _uncertainty_lines(prediction: Prediction, cam_method: str = "gradcam") -> list[str]:
    """The ensemble's spread and, in plain words, why the band is lower than the probability alone gives."""
    lines = []
    if prediction.uncertainty is not None:
        members = prediction.member_probabilities
        if prediction.member_views:
            by_view: dict[str, list[str]] = {}
            for view, p in zip(prediction.member_views, members, strict=True):
                by_view.setdefault(view, []).append(percent(p))
            views = "; ".join(f"{view} {_join(values)}" for view, values in by_view.items())
            given = (
                "the ensemble's networks see the whole film or only the box around the lungs; "
                f"their P(pneumonia): {views}"
            )
        else:
            given = (
                f"the {len(members)} networks of the ensemble give P(pneumonia) "
                f"from {percent(min(members))} to {percent(max(members))}"
            )
        lines.append(
            f"- Uncertainty: {given} (spread, one standard deviation: "
            f"{spread_text(prediction.uncertainty)}); the larger the spread, the less the answer can be trusted."
        )
    lines += [f"- {band_reason_text(reason, cam_method)}" for reason in prediction.band_reasons]
    return lines


def band_reason_short(reason: BandReason, cam_method: str = "gradcam") -> str:
    """A few words for a lowered band (the badge)."""
    if reason.kind == "members_disagree":
        return "the ensemble's networks disagree"
    if reason.kind == "unusual_input":
        return "the film looks unlike the training films"
    if reason.kind == "evidence_outside_lungs":
        return f"the {method_name(reason.method or 'gradcam', cam_method)} evidence lies outside the lungs"
    raise ValueError(f"unknown band reason {reason.kind!r}")


def band_reason_text(reason: BandReason, cam_method: str = "gradcam") -> str:
    """One sentence for a lowered band."""
    lowered = f"band lowered from {reason.from_band} to {reason.to_band}."
    if reason.kind == "members_disagree":
        return (
            f"The {reason.members} networks of the ensemble disagree on this film (their P(pneumonia) range from "
            f"{percent(reason.low)} to {percent(reason.high)}), "
            f"more than on {percent(reason.quantile)} of validation films: {lowered}"
        )
    if reason.kind == "unusual_input":
        return f"The film looks unlike the training films (see the input check): {lowered}"
    if reason.kind == "evidence_outside_lungs":
        where = "mostly outside the lungs" if (reason.share or 0.0) >= 0.5 else "outside the lungs more than usual"
        return (
            f"The evidence for this answer lies {where} ({percent(reason.share)} of the "
            f"{method_name(reason.method or 'gradcam', cam_method)} map lies outside them, "
            f"more than on 95% of validation films: limit {percent(reason.limit)}): {lowered}"
        )
    raise ValueError(f"unknown band reason {reason.kind!r}")


def maps_source_text(source: MapsSource) -> str:
    """Which networks the maps come from, in words: the CAM from the card's explaining members,
    the occlusion map always from the whole ensemble (it works on the input)."""
    occlusion = "the occlusion map explains the whole ensemble's probability"
    if len(source.members) == source.total:
        return f"the CAM averaged over the ensemble's {source.total} networks; {occlusion}"
    names = ", ".join(str(i + 1) for i in source.members)
    framed = ", ".join(str(i + 1) for i in source.lung_box_members)
    lung_box = (
        f"; network {framed} sees only the box around the lungs, so its CAM would not be in the film's frame"
        if framed
        else ""
    )
    framing = " (lung-box networks framed as on the unoccluded film)" if framed else ""
    return (
        f"the CAM from network {names} of the ensemble's {source.total}, the one whose answers are closest to the "
        f"ensemble's on validation (one network keeps the first answer fast){lung_box}; {occlusion}{framing}"
    )


def format_impression(analysis: Analysis) -> list[str]:
    prediction = analysis.prediction
    band = prediction.band
    lines = [f"At the {operating_point_name(prediction.operating_point.name)} operating point, {_finding(analysis)}."]
    if is_inconclusive(prediction):
        lines.append(
            "Its answer is INCONCLUSIVE: treat the output as inconclusive, "
            f"because {answer_reason(prediction, analysis.ood)}."
        )
    elif band == "Low":
        lines.append("The model is uncertain about this image (Low confidence band); treat its output as inconclusive.")
    else:
        lines.append(f"The model's confidence band is {band}; this describes the model's output, not the patient.")
    if analysis.ood.flagged:
        lines.append(
            f"The model was trained only on {TRAINING_DATA}, and this input looks unlike them: "
            "the result should not be relied on."
        )
    else:
        lines.append(f"The model was trained only on {TRAINING_DATA}; other patients or views are outside its scope.")
    lines.append(
        "This output does not establish a diagnosis; it may support, never replace, "
        "a qualified clinician's reading of the full study."
    )
    return lines


# ---------------------------------------------------------------------------------------------
# EXPLANATION RELIABILITY


def _agreement_line(agreement: Agreement | None, cam_method: str) -> str:
    pair = f"{method_name('gradcam', cam_method)} and {method_name('occlusion')}"
    if agreement is None:
        return f"- Agreement between {pair}: not available (occlusion has not run yet or was switched off)."
    rows, cols = agreement.grid
    line = (
        f"- Agreement between {pair}: {agreement.verdict} (Spearman rank correlation "
        f"{agreement.spearman:.2f}, top-20% region IoU {agreement.top20_iou:.2f}, compared on a {rows}x{cols} grid)."
    )
    if agreement.verdict != "agree":
        line += " Where the methods differ, read both heatmaps with caution."
    return line


def outside_boxes(boxes: tuple[EvidenceBox, ...], cam_method: str = "gradcam") -> str:
    """The evidence boxes whose zone is "outside lungs", by their number on their map (the rank
    drawn on the overlay): ``"box 2 of the Grad-CAM map"``; "" when there are none."""
    parts = []
    for method in ("gradcam", "occlusion"):
        ranks = [
            rank
            for rank, box in enumerate((b for b in boxes if b.method == method), start=1)
            if box.zone == OUTSIDE_KEY
        ]
        if ranks:
            noun = "box" if len(ranks) == 1 else "boxes"
            parts.append(f"{noun} {_join([str(r) for r in ranks])} of the {method_name(method, cam_method)} map")
    return _join(parts) if parts else ""


def _shortcut_line(anatomy: Anatomy | None, cam_method: str, boxes: tuple[EvidenceBox, ...] = ()) -> str:
    if anatomy is None:
        return "- Shortcut check: not available (the lung analysis did not run)."
    outside = outside_boxes(boxes, cam_method) if anatomy.segmentation_ok else ""
    verb = "lie" if (" and " in outside or "boxes" in outside) else "lies"
    if anatomy.shortcut_warning:
        methods = (
            _join([method_name(m, cam_method) for m in anatomy.shortcut_methods])
            if anatomy.shortcut_methods
            else "heatmap"
        )
        line = (
            f"- Warning: an unusually large share of the {methods} mass lies outside the lungs, so the explanation "
            "may rest on something other than the lungs (markers, borders, devices, text)."
        )
        return line + (f" Evidence outside the lungs: {outside}." if outside else "")
    if not anatomy.segmentation_ok:
        return "- Shortcut check: not possible, because the lung outline could not be found reliably."
    if outside:
        return (
            f"- Shortcut check: no warning overall (the heatmap mass outside the lungs is within the range seen on "
            f"validation images), but {outside} {verb} outside the lungs: look at what that box shows."
        )
    return (
        "- Shortcut check: no warning (the heatmap mass outside the lungs is within the range seen on validation "
        "images)."
    )


def label_counts(cases: tuple[SimilarCase, ...]) -> dict[str, int]:
    """How many neighbours carry each label, most frequent first (ties by label name)."""
    counts: dict[str, int] = {}
    for case in cases:
        counts[case.label] = counts.get(case.label, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def majority_label(cases: tuple[SimilarCase, ...]) -> str | None:
    """The label carried by more than half of the neighbours, or None (no neighbours, or no majority)."""
    counts = label_counts(cases)
    label, count = next(iter(counts.items()), (None, 0))
    return label if count * 2 > len(cases) else None


def _counts_phrase(cases: tuple[SimilarCase, ...]) -> str:
    """``"5 are labelled PNEUMONIA and 1 NORMAL"`` / ``"all 6 are labelled NORMAL"``."""
    counts = list(label_counts(cases).items())
    if len(counts) == 1:
        return f"all {len(cases)} are labelled {counts[0][0]}"
    (first, n_first), *rest = counts
    return f"{n_first} {'is' if n_first == 1 else 'are'} labelled {first} and " + _join(
        [f"{n} {label}" for label, n in rest]
    )


def format_similar(cases: tuple[SimilarCase, ...]) -> list[str]:
    """Lines of the SIMILAR CASES section: how many of the nearest training films carry each label."""
    low, high = min(c.similarity for c in cases), max(c.similarity for c in cases)
    return [
        f"- Of the {len(cases)} training films that the model represents most similarly to this image "
        f"(feature similarity {low:.2f} to {high:.2f}), {_counts_phrase(cases)} in the dataset.",
        "- These labels belong to other children's films, not to this image: resemblance in the model's features "
        "may hint at, but does not establish, a shared finding.",
    ]


def _similar_line(analysis: Analysis) -> str | None:
    """A caution when most similar training films carry the other label than the reported one."""
    majority = majority_label(analysis.similar)
    if majority is None or majority == analysis.prediction.label or is_inconclusive(analysis.prediction):
        return None
    n = label_counts(analysis.similar)[majority]
    return (
        f"- Similar cases disagree: most of the {len(analysis.similar)} most similar training films ({n} of "
        f"{len(analysis.similar)}) are labelled {majority}, unlike the reported {analysis.prediction.label}; "
        "read this result with extra caution."
    )


def format_reliability(analysis: Analysis) -> list[str]:
    lines = [f"- Heatmaps: {maps_source_text(analysis.maps_source)}."] if analysis.maps_source else []
    lines += [
        _agreement_line(analysis.agreement, analysis.cam_method),
        _shortcut_line(analysis.anatomy, analysis.cam_method, analysis.boxes),
    ]
    similar = _similar_line(analysis)
    if similar is not None:
        lines.append(similar)
    ood = analysis.ood
    if ood.flagged:
        measured = ""
        if ood.distance is not None and ood.threshold is not None:
            measured = f" (feature distance {ood.distance:.1f}, threshold {ood.threshold:.1f})"
        lines.append(f"- Out-of-distribution warning: the input looks unlike the training images{measured}.")
        lines += [f"  - {reason}" for reason in ood.reasons]
    else:
        lines.append("- Out-of-distribution check: no warning.")
    if analysis.input_warnings:
        lines += [f"- Input warning: {warning}" for warning in analysis.input_warnings]
    else:
        lines.append("- Input quality: no warnings.")
    computed = _computed_line(analysis)
    return lines + ([computed] if computed else [])


def _computed_line(analysis: Analysis) -> str | None:
    """Which runtime and precision computed the answer and the maps (None when not recorded)."""
    if not analysis.runtime:
        return None
    maps = "the heatmaps with PyTorch"
    if analysis.occlusion_precision is not None:
        precision = "bfloat16" if analysis.occlusion_precision == "bf16" else "float32"
        maps += f" (occlusion in {precision})"
    return f"- Computed with: {analysis.runtime} for the answer; {maps}."


def not_radiograph_summary() -> str:
    return (
        "This image does not look like a chest radiograph, so the model gives no answer, no heatmaps and no "
        "similar films; this is not a diagnosis."
    )


def format_no_answer(analysis: Analysis) -> list[str]:
    """Why a film that is plainly not a chest radiograph gets no answer."""
    lines = [f"- {reason}" for reason in analysis.ood.reasons] or [
        "- The input check found it unlike a chest radiograph."
    ]
    lines += [f"- Input warning: {warning}" for warning in analysis.input_warnings]
    lines.append(
        f"- The model was trained only on {TRAINING_DATA}; upload a frontal chest radiograph to get an answer."
    )
    return lines


DISCLAIMER_LINES = [DISCLAIMER, "For any concern about a patient's health, consult a qualified clinician."]


def build_report(analysis: Analysis) -> str:
    """The full plain-text report for one analysis (deterministic: same input, same text).

    A film that is plainly not a chest radiograph (``analysis.ood.not_radiograph``) gets only
    the reason and the disclaimer."""
    if analysis.ood.not_radiograph:
        sections = [
            ("QUICK SUMMARY", [not_radiograph_summary()]),
            ("WHY THERE IS NO ANSWER", format_no_answer(analysis)),
            ("DISCLAIMER", DISCLAIMER_LINES),
        ]
        return "\n\n".join(f"{title}\n" + "\n".join(lines) for title, lines in sections) + "\n"
    sections = [
        ("QUICK SUMMARY", [summary_sentence(analysis)]),
        ("FINDINGS", format_findings(analysis)),
        ("LOCATIONS", format_locations(analysis)),
        *([("SIMILAR CASES", format_similar(analysis.similar))] if analysis.similar else []),
        ("IMPRESSION", format_impression(analysis)),
        ("EXPLANATION RELIABILITY", format_reliability(analysis)),
        ("DISCLAIMER", DISCLAIMER_LINES),
    ]
    return "\n\n".join(f"{title}\n" + "\n".join(lines) for title, lines in sections) + "\n"
