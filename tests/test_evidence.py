"""Evidence boxes: regions, upload coordinates, zones, drawing and the pipeline's JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.tiny import lung_mask, make_tiny_checkpoint, synthetic_radiograph
from xray_xai.explain.anatomy import image_zone_masks
from xray_xai.explain.evidence import MAX_BOXES, evidence_boxes, to_upload, zone_regions
from xray_xai.models.classifier import Classifier
from xray_xai.models.lungs import LungMask
from xray_xai.pipeline import Options, Pipeline, Result
from xray_xai.results import Analysis, EvidenceBox, OperatingPoint, Prediction
from xray_xai.ui.overlay import BOX_COLOR, draw_boxes, draw_result

S = 32


def blob(cy: float, cx: float, sigma: float, peak: float = 1.0) -> np.ndarray:
    yy, xx = np.mgrid[0:S, 0:S]
    return peak * np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)))


def test_map_pixels_map_to_the_squashed_upload():
    # 32 px map over a 64 x 96 upload: rows scale by 2, columns by 3; ends are exclusive.
    assert to_upload(slice(2, 5), slice(10, 12), (32, 32), (64, 96)) == (30, 4, 36, 10)
    assert to_upload(slice(0, 32), slice(0, 32), (32, 32), (50, 70)) == (0, 0, 70, 50)
    # non-integer scale: the box still covers every upload pixel of the region
    assert to_upload(slice(1, 2), slice(1, 2), (3, 3), (10, 10)) == (3, 3, 7, 7)


def test_strongest_region_first_in_upload_coordinates():
    heat = blob(8, 24, 2.0, 1.0) + blob(22, 8, 3.0, 0.9)  # the wider blob holds more mass
    boxes = evidence_boxes(heat, "occlusion", (320, 160), image_zone_masks((S, S)))
    assert len(boxes) == 2 and [b.method for b in boxes] == ["occlusion", "occlusion"]
    big, small = boxes
    assert big.score > small.score > 0 and big.score + small.score <= 1
    # centres (in upload pixels) near the blob centres: row * 10, column * 5 (+ half a map pixel)
    assert (big.x0 + big.x1) / 2 == pytest.approx(8.5 * 5, abs=5) and (big.y0 + big.y1) / 2 == pytest.approx(
        22.5 * 10, abs=10
    )
    assert (small.x0 + small.x1) / 2 == pytest.approx(24.5 * 5, abs=5) and (small.y0 + small.y1) / 2 == pytest.approx(
        8.5 * 10, abs=10
    )
    assert big.zone == "right lower" and small.zone == "left upper"  # image left = patient's right


def test_at_most_three_boxes_and_none_for_an_empty_map():
    heat = sum(blob(6 + 10 * (i // 3), 5 + 11 * (i % 3), 1.5, 1.0 - 0.05 * i) for i in range(6))
    boxes = evidence_boxes(heat, "gradcam", (S, S), image_zone_masks((S, S)))
    assert len(boxes) == MAX_BOXES
    assert [b.score for b in boxes] == sorted((b.score for b in boxes), reverse=True)
    assert evidence_boxes(np.zeros((S, S)), "gradcam", (S, S), image_zone_masks((S, S))) == ()
    assert evidence_boxes(-blob(10, 10, 3), "gradcam", (S, S), image_zone_masks((S, S))) == ()


def test_zones_come_from_the_lung_mask_when_it_is_plausible():
    mask = lung_mask(S, S) > 0
    lung = LungMask(mask, mask.astype(np.float32), ok=True)
    zones = zone_regions(lung, (S, S))
    assert "outside lungs" in zones
    inside = evidence_boxes(blob(21, 9.6, 1.5), "gradcam", (S, S), zones)[0]  # image-left lung, low
    corner = evidence_boxes(blob(1, 16, 1.5), "gradcam", (S, S), zones)[0]  # top centre, between the lungs
    assert inside.zone == "right lower" and corner.zone == "outside lungs"
    fallback = zone_regions(LungMask(mask, mask.astype(np.float32), ok=False, note="implausible"), (S, S))
    assert "outside lungs" not in fallback


def test_boxes_are_drawn_on_a_downscaled_overlay_and_can_be_switched_off():
    box = EvidenceBox("gradcam", 40, 20, 120, 100, 0.4, "right lower")
    point = OperatingPoint("balanced", 0.5, 0.9, 0.9)
    analysis = Analysis(
        Prediction("PNEUMONIA", 0.9, 0.9, "High", point),
        boxes=(box, EvidenceBox("occlusion", 0, 0, 10, 10, 0.2, "left upper")),
    )
    result = Result(
        analysis,
        np.full((100, 100), 0.5, np.float32),
        {"gradcam": np.zeros((S, S), np.float32)},
        upload_shape=(200, 200),
    )
    plain = draw_result(result, boxes=False)["gradcam"]
    drawn = draw_result(result)["gradcam"]
    assert (plain == np.rint(0.5 * 255)).all()
    # the box at half scale: x 20..59, y 10..49; its left edge is green, its inside untouched
    assert tuple(drawn[30, 20]) == BOX_COLOR and tuple(drawn[10, 40]) == BOX_COLOR
    assert (drawn[35:45, 30:50] == plain[35:45, 30:50]).all()
    assert tuple(drawn[2, 2]) != BOX_COLOR  # the occlusion box is not drawn on the Grad-CAM overlay
    before = plain.copy()
    draw_boxes(plain, (box,), (200, 200))
    assert (plain == before).all()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Pipeline:
    return Pipeline(Classifier.load(make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), arch="resnet18", size=64)))


def test_pipeline_lists_boxes_of_both_maps_in_upload_pixels(pipeline, tmp_path):
    path = tmp_path / "chest.png"
    Image.fromarray(synthetic_radiograph(np.random.default_rng(0), 240, 300, 1)).save(path)
    first = pipeline.first_pass(path, Options(explain="pneumonia"))
    assert {b.method for b in first.analysis.boxes} == {"gradcam"}
    result = pipeline.complete(first, Options(explain="pneumonia"))
    boxes = result.analysis.boxes
    assert {b.method for b in boxes} == {"gradcam", "occlusion"}
    for method in ("gradcam", "occlusion"):
        assert 1 <= sum(b.method == method for b in boxes) <= MAX_BOXES
    for b in boxes:
        assert 0 <= b.x0 < b.x1 <= 300 and 0 <= b.y0 < b.y1 <= 240 and 0 < b.score <= 1
    payload = json.loads(json.dumps(result.to_json()))
    assert set(payload["boxes"][0]) == {"method", "x0", "y0", "x1", "y1", "score", "zone"}
