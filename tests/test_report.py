"""The report: exact text for fixed analyses, band boundaries, the patient-side convention, hedging."""

# ruff: noqa: E501  (the exact reports are the report's own lines)

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xray_xai import DISCLAIMER
from xray_xai.checkpoint import ModelCard
from xray_xai.models.classifier import Classifier
from xray_xai.report import build_report, named_zones, percent, probability_pair, spread_text
from xray_xai.results import (
    BAND_EXPLANATION,
    Agreement,
    Analysis,
    Anatomy,
    BandReason,
    EvidenceBox,
    OODResult,
    OperatingPoint,
    Prediction,
)

ZONES = ("right upper", "right middle", "right lower", "left upper", "left middle", "left lower")
SECTIONS = ("QUICK SUMMARY", "FINDINGS", "LOCATIONS", "IMPRESSION", "EXPLANATION RELIABILITY", "DISCLAIMER")
ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("has pneumonia", "diagnosed with", "confirms", "confirmed", "definitely", "patient has")

BALANCED = OperatingPoint("balanced", 0.4821, 0.9412, 0.8876)

HIGH_PNEUMONIA = Analysis(
    prediction=Prediction("PNEUMONIA", 0.9734, 0.9734, "High", BALANCED),
    anatomy=Anatomy(
        segmentation_ok=True,
        lung_area_fraction=0.3125,
        outside_lung_share={"gradcam": 0.081, "occlusion": 0.152},
        zones={
            "gradcam": {
                "right upper": 0.05,
                "right middle": 0.18,
                "right lower": 0.42,
                "left upper": 0.04,
                "left middle": 0.09,
                "left lower": 0.139,
                "outside lungs": 0.081,
            },
            "occlusion": {
                "right upper": 0.03,
                "right middle": 0.11,
                "right lower": 0.47,
                "left upper": 0.02,
                "left middle": 0.078,
                "left lower": 0.14,
                "outside lungs": 0.152,
            },
        },
    ),
    agreement=Agreement(spearman=0.71, top20_iou=0.52, verdict="agree", grid=(7, 7)),
)

HIGH_PNEUMONIA_TEXT = """\
QUICK SUMMARY
The model's output suggests features that the model associates with pneumonia (probability of pneumonia 97.3%, High confidence); this is not a diagnosis.

FINDINGS
- Calibrated probability of pneumonia: 97.3%.
- Reported label: PNEUMONIA, with 97.3% calibrated probability (confidence band: High).
- Operating point: balanced (threshold at the validation prevalence of pneumonia, which for calibrated probabilities balances sensitivity and specificity); a probability of pneumonia of at least 48.2% falls on the PNEUMONIA side. On validation images it had sensitivity 94.1% and specificity 88.7%. Under shift: both rates hold on the validation films the threshold was fitted on, not beyond: on films from another hospital, machine or acquisition batch either can be lower.
- Confidence band = calibrated probability of the reported label: High >= 90%, Moderate 60-90%, Low < 60%. The band is then lowered when the answer deserves less trust than its probability says: one step when the ensemble's networks disagree or the evidence lies outside the lungs, to Low when the film looks unlike the training films; so a Low band can sit next to a high probability.

LOCATIONS
Heatmaps show where the model found evidence for PNEUMONIA.
Sides are the patient's: radiographs are displayed with the patient's right on the image's left.
- Both maps concentrate in the patient's right lower zone, patient's right middle zone and patient's left lower zone.
- Grad-CAM: patient's right lower zone 42.0%, patient's right middle zone 18.0%, patient's left lower zone 13.9%, other zones 18.0%; outside both lungs 8.1%.
- Occlusion: patient's right lower zone 47.0%, patient's left lower zone 14.0%, patient's right middle zone 11.0%, other zones 12.8%; outside both lungs 15.2%.
- The lungs cover 31.2% of the image, so an evenly spread map would put 68.7% of its mass outside them.

IMPRESSION
At the balanced operating point, the model's output suggests features that the model associates with pneumonia.
The model's confidence band is High; this describes the model's output, not the patient.
The model was trained only on pediatric (1-5 years) anterior-posterior (AP) chest radiographs; other patients or views are outside its scope.
This output does not establish a diagnosis; it may support, never replace, a qualified clinician's reading of the full study.

EXPLANATION RELIABILITY
- Agreement between Grad-CAM and Occlusion: agree (Spearman rank correlation 0.71, top-20% region IoU 0.52, compared on a 7x7 grid).
- Shortcut check: no warning (the heatmap mass outside the lungs is within the range seen on validation images).
- Out-of-distribution check: no warning.
- Input quality: no warnings.

DISCLAIMER
Research and education only. This tool is not a medical device and does not give a diagnosis. Its output can be wrong. Any decision about a patient must be made by a qualified clinician who has examined the patient and the full imaging study.
For any concern about a patient's health, consult a qualified clinician.
"""

LOW_NORMAL_OOD = Analysis(
    prediction=Prediction(
        "NORMAL",
        0.4512,
        0.5488,
        "Low",
        OperatingPoint("rule_in", 0.7, 0.81, 0.9),
        answer="INCONCLUSIVE",
        prediction_set=("NORMAL", "PNEUMONIA"),
    ),  # fmt: skip
    cam_method="gradcam++",
    ood=OODResult(
        flagged=True,
        reasons=("Image looks like a lateral view", "Feature distance above the 99th percentile of training images"),
        distance=41.23,
        threshold=30.5,
    ),
    input_warnings=("Image is very dark",),
    anatomy=Anatomy(
        segmentation_ok=False,
        segmentation_note="only one lung region found.",
        zones={
            "gradcam": {
                "right upper": 0.4,
                "right middle": 0.05,
                "right lower": 0.05,
                "left upper": 0.3,
                "left middle": 0.1,
                "left lower": 0.1,
            }
        },
    ),
)

LOW_NORMAL_OOD_TEXT = """\
QUICK SUMMARY
The model cannot tell reliably whether this film shows features it associates with pneumonia: its answer is INCONCLUSIVE (probability of pneumonia 45.2%), because both NORMAL and PNEUMONIA are in its conformal prediction set, so either could be right; and the film looks unlike the training films; this is not a diagnosis.

FINDINGS
- Calibrated probability of pneumonia: 45.2%.
- Answer: INCONCLUSIVE, because both NORMAL and PNEUMONIA are in its conformal prediction set, so either could be right; and the film looks unlike the training films. The probability alone falls on the NORMAL side of the threshold, with 54.8% calibrated probability (confidence band: Low); that is not reported as the answer.
- Conformal prediction set (the labels that a rule fitted on validation films cannot exclude): NORMAL and PNEUMONIA.
- Operating point: rule-in (threshold chosen for a validation specificity of at least 99% and never below balanced: fewer false alarms, more missed cases); a probability of pneumonia of at least 70.0% falls on the PNEUMONIA side. On validation images it had sensitivity 81.0% and specificity 90.0%. Under shift: as its threshold is never below balanced, on any films it raises no more false alarms than balanced does; the 99% specificity itself holds on the validation films only, and on films from another hospital, machine or acquisition batch it can raise more.
- Confidence band = calibrated probability of the reported label: High >= 90%, Moderate 60-90%, Low < 60%. The band is then lowered when the answer deserves less trust than its probability says: one step when the ensemble's networks disagree or the evidence lies outside the lungs, to Low when the film looks unlike the training films; so a Low band can sit next to a high probability.

LOCATIONS
Heatmaps show where the model found evidence for PNEUMONIA.
The lung outline could not be found reliably. Only one lung region found. The zones below are image regions (halves and thirds of the image), not lungs; patient's right = image left.
- Grad-CAM++ concentrates in the patient's right upper image region, patient's left upper image region, patient's left middle image region and patient's left lower image region.
- Grad-CAM++: patient's right upper image region 40.0%, patient's left upper image region 30.0%, patient's left middle image region 10.0%, patient's left lower image region 10.0%, other zones 10.0%.
- Occlusion has not run yet (or was switched off), so locations come from Grad-CAM++ alone.

IMPRESSION
At the rule-in operating point, the model cannot tell reliably whether this film shows features it associates with pneumonia.
Its answer is INCONCLUSIVE: treat the output as inconclusive, because both NORMAL and PNEUMONIA are in its conformal prediction set, so either could be right; and the film looks unlike the training films.
The model was trained only on pediatric (1-5 years) anterior-posterior (AP) chest radiographs, and this input looks unlike them: the result should not be relied on.
This output does not establish a diagnosis; it may support, never replace, a qualified clinician's reading of the full study.

EXPLANATION RELIABILITY
- Agreement between Grad-CAM++ and Occlusion: not available (occlusion has not run yet or was switched off).
- Shortcut check: not possible, because the lung outline could not be found reliably.
- Out-of-distribution warning: the input looks unlike the training images (feature distance 41.2, threshold 30.5).
  - Image looks like a lateral view
  - Feature distance above the 99th percentile of training images
- Input warning: Image is very dark

DISCLAIMER
Research and education only. This tool is not a medical device and does not give a diagnosis. Its output can be wrong. Any decision about a patient must be made by a qualified clinician who has examined the patient and the full imaging study.
For any concern about a patient's health, consult a qualified clinician.
"""


def section(report: str, title: str) -> str:
    """The body of one section of a report."""
    body = report.split(f"{title}\n", 1)[1]
    return body.split("\n\n", 1)[0]


def one_hot_anatomy(zone: str, segmentation_ok: bool = True) -> Anatomy:
    """Both maps with almost all their mass in one zone."""
    shares = {key: (0.85 if key == zone else 0.02) for key in ZONES}
    return Anatomy(segmentation_ok=segmentation_ok, zones={"gradcam": shares, "occlusion": dict(shares)})


def classifier_decision(probability: float) -> Prediction:
    """A Prediction made by the real Classifier.decide at a 0.5 balanced threshold."""
    card = ModelCard(
        arch="none",
        input_size=32,
        mean=0.5,
        std=0.25,
        operating_points={"balanced": {"threshold": 0.5, "sensitivity": 0.9, "specificity": 0.8}},
    )
    return Classifier(torch.nn.Identity(), card).decide(probability, "balanced")


@pytest.mark.parametrize(
    ("analysis", "expected"), [(HIGH_PNEUMONIA, HIGH_PNEUMONIA_TEXT), (LOW_NORMAL_OOD, LOW_NORMAL_OOD_TEXT)]
)
def test_exact_text_for_fixed_analyses(analysis: Analysis, expected: str) -> None:
    assert build_report(analysis) == expected


@pytest.mark.parametrize(
    ("probability", "label", "shown", "band"),
    [
        (0.5999, "PNEUMONIA", "59.9%", "Low"),
        (0.6, "PNEUMONIA", "60.0%", "Moderate"),
        (0.8999, "PNEUMONIA", "89.9%", "Moderate"),
        (0.9, "PNEUMONIA", "90.0%", "High"),
        # NORMAL: the band follows the probability of the reported label, 1 - P(pneumonia).
        (0.4001, "NORMAL", "59.9%", "Low"),
        (0.4, "NORMAL", "60.0%", "Moderate"),
        (0.1001, "NORMAL", "89.9%", "Moderate"),
        (0.1, "NORMAL", "90.0%", "High"),
    ],
)
def test_band_boundaries(probability: float, label: str, shown: str, band: str) -> None:
    prediction = classifier_decision(probability)
    assert prediction.label == label
    findings = section(build_report(Analysis(prediction)), "FINDINGS")
    assert f"Reported label: {label}, with {shown} calibrated probability (confidence band: {band})." in findings
    summary = section(build_report(Analysis(prediction)), "QUICK SUMMARY")
    assert f"{band} confidence" in summary
    assert ("the model is uncertain" in summary) == (band == "Low")


def test_band_is_the_decided_band_with_its_reasons_and_the_uncertainty() -> None:
    lowered = Prediction("NORMAL", 0.05, 0.95, "Moderate", BALANCED, uncertainty=0.08, member_probabilities=(0.01, 0.17),
                         band_reasons=(BandReason("members_disagree", "High", "Moderate", low=0.01, high=0.17, members=2, quantile=0.95),))  # fmt: skip
    report = build_report(Analysis(lowered))
    findings, summary = section(report, "FINDINGS"), section(report, "QUICK SUMMARY")
    assert "(confidence band: Moderate)" in findings and "Moderate confidence)" in summary and "High" not in summary
    assert "band was lowered" in summary
    assert "- Uncertainty: the 2 networks of the ensemble give P(pneumonia) from 1.0% to 17.0%" in findings
    assert "one standard deviation: ±8.0 points" in findings
    viewed = replace(lowered, member_views=("whole film", "lung box"))
    findings = section(build_report(Analysis(viewed)), "FINDINGS")
    assert (
        "- Uncertainty: the ensemble's networks see the whole film or only the box around the lungs; "
        "their P(pneumonia): whole film 1.0%; lung box 17.0% (spread"
    ) in findings
    assert (
        "- The 2 networks of the ensemble disagree on this film (their P(pneumonia) range from 1.0% to 17.0%)"
        in findings
    )
    three = replace(
        viewed, member_probabilities=(0.01, 0.17, 0.405), member_views=("whole film", "lung box", "lung box")
    )
    assert "their P(pneumonia): whole film 1.0%; lung box 17.0% and 40.5% (spread" in build_report(Analysis(three))
    plain = build_report(Analysis(Prediction("NORMAL", 0.05, 0.95, "High", BALANCED)))
    assert "- Uncertainty:" not in plain and "band lowered from" not in plain


@pytest.mark.parametrize(("zone", "side", "other"), [("right lower", "right", "left"), ("left upper", "left", "right")])
def test_patient_sides(zone: str, side: str, other: str) -> None:
    analysis = Analysis(HIGH_PNEUMONIA.prediction, anatomy=one_hot_anatomy(zone), agreement=HIGH_PNEUMONIA.agreement)
    lines = section(build_report(analysis), "LOCATIONS")
    concentration = next(line for line in lines.splitlines() if line.startswith("- Both maps"))
    assert concentration == f"- Both maps concentrate in the patient's {zone} zone."
    assert f"patient's {side} " in concentration and f"patient's {other} " not in concentration
    assert f"- Grad-CAM: patient's {zone} zone 85.0%, other zones 10.0%." in lines
    assert f"- Occlusion: patient's {zone} zone 85.0%" in lines


@pytest.mark.parametrize("zone", ["right lower", "left upper"])
def test_fallback_names_image_regions_with_patient_right_on_image_left(zone: str) -> None:
    anatomy = one_hot_anatomy(zone, segmentation_ok=False)
    analysis = Analysis(HIGH_PNEUMONIA.prediction, anatomy=anatomy, agreement=HIGH_PNEUMONIA.agreement)
    locations = section(build_report(analysis), "LOCATIONS")
    assert "The lung outline could not be found reliably." in locations
    assert "patient's right = image left" in locations
    assert f"- Both maps concentrate in the patient's {zone} image region." in locations
    assert "zone 85.0%" not in locations and "outside both lungs" not in locations


def test_occlusion_not_run_yet_only_when_missing() -> None:
    only_cam = Anatomy(True, zones={"gradcam": HIGH_PNEUMONIA.anatomy.zones["gradcam"]})
    missing = build_report(Analysis(HIGH_PNEUMONIA.prediction, anatomy=only_cam))
    assert "Occlusion has not run yet (or was switched off), so locations come from Grad-CAM alone." in missing
    assert "- Grad-CAM concentrates in the patient's right lower zone" in missing
    assert "Occlusion has not run yet" not in build_report(HIGH_PNEUMONIA)


def test_cam_map_is_named_after_the_cam_method_that_ran() -> None:
    report = build_report(replace(HIGH_PNEUMONIA, cam_method="hirescam"))
    assert "- HiResCAM: patient's right lower zone 42.0%" in report
    assert "Agreement between HiResCAM and Occlusion: agree" in report
    assert "Grad-CAM" not in report


def test_shortcut_warning_names_methods() -> None:
    anatomy = Anatomy(
        True, zones=HIGH_PNEUMONIA.anatomy.zones, shortcut_warning=True, shortcut_methods=("gradcam", "occlusion")
    )
    reliability = section(build_report(Analysis(HIGH_PNEUMONIA.prediction, anatomy=anatomy)), "EXPLANATION RELIABILITY")
    assert "the Grad-CAM and Occlusion mass lies outside the lungs" in reliability
    assert "may rest on something other than the lungs (markers, borders, devices, text)" in reliability


def test_percent_truncates_and_zone_ties_are_canonical() -> None:
    cases = {0.29: "29.0%", 0.8999: "89.9%", 0.99999: "99.9%", 1.0: "100.0%", 0.0: "0.0%", 1e-9: "<0.1%"}
    cases |= {0.00099: "<0.1%", 0.001: "0.1%"}
    assert [percent(x) for x in cases] == list(cases.values())
    tied = {"left lower": 0.3, "right upper": 0.3, "left upper": 0.3, "right lower": 0.1}
    assert [key for key, _ in named_zones(tied)] == ["right upper", "left upper", "left lower", "right lower"]
    spread = {key: 0.05 for key in ZONES} | {"left middle": 0.06}
    assert named_zones(spread) == [("left middle", 0.06)]


shares = st.floats(0.0, 1.0, allow_nan=False)
zone_maps = st.fixed_dictionaries({key: shares for key in ZONES}, optional={"outside lungs": shares})
analyses = st.builds(
    Analysis,
    prediction=st.builds(
        lambda p, t, sens, spec, name, members, unusual: Classifier(
            None,
            ModelCard(
                arch="none",
                input_size=8,
                mean=0.5,
                std=0.25,
                operating_points={name: {"threshold": t, "sensitivity": sens, "specificity": spec}},
                uncertainty={"threshold": 0.05},
            ),  # fmt: skip
        ).decide(p, name, members, unusual),
        shares,
        shares,
        shares,
        shares,
        st.sampled_from(["balanced", "screening", "rule_in"]),
        st.lists(shares, max_size=3),
        st.booleans(),
    ),
    ood=st.builds(
        OODResult, st.booleans(), st.lists(st.sampled_from(["Lateral view", "Unusual contrast"]), max_size=2).map(tuple)
    ),
    input_warnings=st.lists(st.sampled_from(["Image is very dark", "Image is small"]), max_size=2).map(tuple),
    cam_method=st.sampled_from(["gradcam", "gradcam++"]),
    explained_class=st.sampled_from(["PNEUMONIA", "NORMAL"]),
    anatomy=st.none()
    | st.builds(
        Anatomy,
        segmentation_ok=st.booleans(),
        segmentation_note=st.none() | st.just("no plausible lungs"),
        lung_area_fraction=st.none() | shares,
        zones=st.dictionaries(st.sampled_from(["gradcam", "occlusion"]), zone_maps, max_size=2),
        shortcut_warning=st.booleans(),
        shortcut_methods=st.lists(st.sampled_from(["gradcam", "occlusion"]), max_size=2, unique=True).map(tuple),
    ),
    agreement=st.none()
    | st.builds(
        Agreement, st.floats(-1, 1), shares, st.sampled_from(["agree", "partly agree", "disagree"]), st.just((7, 7))
    ),
)


@settings(max_examples=300, deadline=None)
@given(analyses)
def test_any_report_is_hedged_complete_and_deterministic(analysis: Analysis) -> None:
    report = build_report(analysis)
    assert report == build_report(analysis)
    assert [line for line in report.splitlines() if line in SECTIONS] == list(SECTIONS)
    assert report.rstrip().split("DISCLAIMER\n", 1)[1].startswith(DISCLAIMER)
    assert "not a medical device" in report and "consult a qualified clinician" in report
    assert "does not establish a diagnosis" in report
    assert "pediatric (1-5 years)" in report
    lowered = report.lower()
    assert not [phrase for phrase in FORBIDDEN if phrase in lowered]
    summary = section(report, "QUICK SUMMARY")
    assert "\n" not in summary and summary.count(". ") == 0
    band, inconclusive = analysis.prediction.band, analysis.prediction.answer == "INCONCLUSIVE"
    assert f"(confidence band: {band})" in report
    assert ("its answer is INCONCLUSIVE" in summary) == inconclusive
    assert (f"{band} confidence)" in summary) == (not inconclusive)
    assert ("should not be relied on" in report) == analysis.ood.flagged
    assert ("The model is uncertain" in report) == (band == "Low" and not inconclusive)
    # Every percentage the report computes has one decimal ("top-20%" is a name, the band legend
    # and the operating points' 99% targets are fixed).
    computed = re.findall(r"(?<![-\w.])[\d.]+%", report.replace(BAND_EXPLANATION, "").replace(" 99% ", " "))
    assert computed and all(re.fullmatch(r"\d{1,3}\.\d%", value) for value in computed)


def _two_zone_anatomy(cam_zone: str, occlusion_zone: str) -> Anatomy:
    """Grad-CAM mostly in ``cam_zone``, occlusion mostly in ``occlusion_zone``."""

    def shares(zone: str) -> dict[str, float]:
        return {key: (0.7 if key == zone else 0.05) for key in ZONES} | {"outside lungs": 0.05}

    return Anatomy(
        True, lung_area_fraction=0.3, zones={"gradcam": shares(cam_zone), "occlusion": shares(occlusion_zone)}
    )


@pytest.mark.parametrize(
    ("verdict", "occlusion_zone", "why"),
    [
        ("disagree", "right lower", "their agreement verdict is disagree"),
        ("disagree", "left upper", "their agreement verdict is disagree"),
        ("agree", "left upper", "their largest zones differ"),
    ],
)
def test_a_location_is_stated_only_where_the_maps_agree(verdict: str, occlusion_zone: str, why: str) -> None:
    analysis = Analysis(
        HIGH_PNEUMONIA.prediction, cam_method="gradcam++", anatomy=_two_zone_anatomy("right lower", occlusion_zone),
        agreement=Agreement(0.1, 0.06, verdict, (7, 7)),
    )  # fmt: skip
    locations = section(build_report(analysis), "LOCATIONS")
    assert "Both maps" not in locations
    assert (
        f"- The maps do not agree on one location ({why}): Grad-CAM++ points mostly to the patient's right lower zone "
        f"and Occlusion points mostly to the patient's {occlusion_zone} zone."
    ) in locations
    agreeing = replace(
        analysis, anatomy=_two_zone_anatomy("right lower", "right lower"), agreement=HIGH_PNEUMONIA.agreement
    )
    assert "- Both maps concentrate in the patient's right lower zone." in build_report(agreeing)


def test_the_shortcut_check_names_the_boxes_outside_the_lungs() -> None:
    boxes = (
        EvidenceBox("gradcam", 10, 10, 40, 40, 0.3, "right lower"),
        EvidenceBox("gradcam", 0, 0, 12, 12, 0.2, "outside lungs"),  # box 2 of the CAM map: a marker, say
        EvidenceBox("occlusion", 10, 10, 40, 40, 0.4, "right lower"),
    )
    analysis = replace(HIGH_PNEUMONIA, cam_method="layercam", boxes=boxes)
    reliability = section(build_report(analysis), "EXPLANATION RELIABILITY")
    assert "Shortcut check: no warning (" not in reliability
    assert "but box 2 of the LayerCAM map lies outside the lungs" in reliability
    warned = replace(
        analysis, anatomy=replace(HIGH_PNEUMONIA.anatomy, shortcut_warning=True, shortcut_methods=("gradcam",))
    )
    assert "Evidence outside the lungs: box 2 of the LayerCAM map." in build_report(warned)
    inside = section(build_report(replace(analysis, boxes=boxes[:1])), "EXPLANATION RELIABILITY")
    assert "- Shortcut check: no warning (the heatmap mass outside the lungs is within the range" in inside


def test_a_film_that_is_not_a_radiograph_gets_only_the_reason() -> None:
    reason = "A colour photograph, not a grey-scale radiograph."
    analysis = Analysis(
        Prediction("NORMAL", 0.52, 0.48, "Low", BALANCED, answer="INCONCLUSIVE"),
        ood=OODResult(True, (reason,), not_radiograph=True),
    )
    report = build_report(analysis)
    assert [line for line in report.splitlines() if line.isupper()] == [
        "QUICK SUMMARY",
        "WHY THERE IS NO ANSWER",
        "DISCLAIMER",
    ]
    assert f"- {reason}" in report and DISCLAIMER in report
    assert not re.search(
        r"NORMAL|PNEUMONIA|%|band|Track record|similar training", report.replace("no similar films", "")
    )


def test_inconclusive_where_the_conformal_set_excludes_the_thresholded_label() -> None:
    prediction = Prediction(
        "NORMAL", 0.2, 0.8, "Moderate", BALANCED, answer="INCONCLUSIVE", prediction_set=("PNEUMONIA",)
    )
    report = build_report(Analysis(prediction))
    assert "its conformal prediction set holds only PNEUMONIA, while the probability falls on the NORMAL side" in report
    assert "Reported label" not in report and "Moderate confidence" not in section(report, "QUICK SUMMARY")


@settings(max_examples=300, deadline=None)
@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_the_two_probabilities_add_up(probability: float, threshold: float) -> None:
    label = "PNEUMONIA" if probability >= threshold else "NORMAL"
    confidence = probability if label == "PNEUMONIA" else 1.0 - probability
    pneumonia, normal = probability_pair(
        Prediction(label, probability, confidence, "Low", replace(BALANCED, threshold=threshold))
    )
    shown = (pneumonia, normal) if label == "PNEUMONIA" else (normal, pneumonia)
    if "<0.1%" in shown:
        assert sorted(shown) == ["<0.1%", ">99.9%"] and 0 < min(probability, 1.0 - probability) < 0.001
    else:
        assert shown[0] == percent(confidence)  # the label's probability, truncated like every percentage
        assert round(float(pneumonia[:-1]) + float(normal[:-1]), 1) == 100.0


def test_one_uncertainty_format() -> None:
    assert [spread_text(x) for x in (0.2251, 0.04, 0.0004, 0.0)] == [
        "±22.5 points",
        "±4.0 points",
        "under ±0.1 points",
        "±0.0 points",
    ]


def test_operating_points_are_described_as_the_shipped_card_orders_them() -> None:
    points = json.loads((ROOT / "checkpoints" / "classifier.json").read_text())["operating_points"]
    assert points["screening"]["threshold"] <= points["balanced"]["threshold"] <= points["rule_in"]["threshold"]
    lines = {}
    for name in ("screening", "rule_in"):
        raw = points[name]
        point = OperatingPoint(name, raw["threshold"], raw["sensitivity"], raw["specificity"])
        findings = section(build_report(Analysis(Prediction("NORMAL", 0.01, 0.99, "High", point))), "FINDINGS")
        lines[name] = next(line for line in findings.splitlines() if line.startswith("- Operating point"))
    assert "validation sensitivity of at least 99% and never above balanced: fewer missed cases" in lines["screening"]
    assert "on any films it misses no more cases than balanced does" in lines["screening"]
    assert points["screening"]["sensitivity"] >= 0.99 and points["rule_in"]["specificity"] >= 0.99
    assert "validation specificity of at least 99% and never below balanced: fewer false alarms" in lines["rule_in"]
    assert "on any films it raises no more false alarms than balanced does" in lines["rule_in"]


@pytest.mark.parametrize(
    "precision,maps",
    [(None, "the heatmaps with PyTorch."), ("f32", "(occlusion in float32)"), ("bf16", "(occlusion in bfloat16)")],
)
def test_the_report_names_the_runtime_and_precision(precision, maps):
    analysis = replace(HIGH_PNEUMONIA, runtime="OpenVINO 2026.4.1 f32", occlusion_precision=precision)
    reliability = build_report(analysis).split("EXPLANATION RELIABILITY")[1].split("DISCLAIMER")[0]
    assert "- Computed with: OpenVINO 2026.4.1 f32 for the answer;" in reliability and maps in reliability
    assert "Computed with" not in build_report(HIGH_PNEUMONIA)  # not recorded: no line
