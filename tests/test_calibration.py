"""Calibration metrics (library-backed, same values as before) and ordered operating points."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from xray_xai.calibration import (
    RULE_IN_MIN_SPECIFICITY,
    SCREENING_MIN_SENSITIVITY,
    brier,
    candidate_thresholds,
    nll,
    operating_points,
    rates_at,
    sigmoid,
)
from xray_xai.checkpoint import DEFAULT_CHECKPOINT, read_card
from xray_xai.metrics import ece, reliability_bins

# --- the hand-written metrics these functions replaced, kept here as the reference ---------------


def old_sigmoid(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def old_nll(probs, labels):
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1 - 1e-12)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def old_brier(probs, labels):
    return float(np.mean((np.asarray(probs, dtype=np.float64) - np.asarray(labels)) ** 2))


unit = st.floats(0.0, 1.0, allow_nan=False)
labelled = st.integers(1, 60).flatmap(
    lambda n: st.tuples(arrays(np.float64, n, elements=unit), arrays(np.int64, n, elements=st.integers(0, 1)))
)


@settings(deadline=None)
@given(arrays(np.float64, st.integers(1, 50), elements=st.floats(-800, 800, allow_nan=False)))
def test_sigmoid_equals_the_old_formula(x):
    np.testing.assert_allclose(sigmoid(x), old_sigmoid(x), rtol=0, atol=1e-9)
    assert sigmoid(x).dtype == np.float64


@settings(deadline=None)
@given(labelled)
def test_nll_and_brier_equal_the_old_formulas(data):
    probs, labels = data
    assert nll(probs, labels) == pytest.approx(old_nll(probs, labels), abs=1e-9)
    assert brier(probs, labels) == pytest.approx(old_brier(probs, labels), abs=1e-9)


def test_nll_and_brier_on_known_values():
    assert nll([0.5, 0.5], [0, 1]) == pytest.approx(np.log(2))
    assert nll([0.0], [1]) == pytest.approx(-np.log(1e-12))  # a confident mistake stays bounded
    assert brier([0.2, 0.9], [0, 1]) == pytest.approx((0.04 + 0.01) / 2)
    assert brier([0.3, 0.3], [1, 1]) == pytest.approx(0.49)  # one class present


def test_ece_and_bins_unchanged():
    probs = np.array([0.05, 0.05, 0.95, 0.95])
    labels = np.array([0, 0, 1, 0])
    bins = reliability_bins(probs, labels, n_bins=10)
    assert [b["count"] for b in bins] == [2, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    assert bins[9]["accuracy"] == 0.5 and bins[0]["confidence"] == pytest.approx(0.05)
    assert ece(probs, labels, n_bins=10) == pytest.approx(0.5 * 0.05 + 0.5 * 0.45)


# --- operating points ----------------------------------------------------------------------------


def check_points(probs, labels):
    points = operating_points(probs, labels)
    assert set(points) == {"balanced", "screening", "rule_in"}
    s, b, r = (points[name]["threshold"] for name in ("screening", "balanced", "rule_in"))
    assert s <= b <= r
    assert b == pytest.approx(np.mean(labels))
    for point in points.values():
        sens, spec = rates_at(probs, labels, np.array([point["threshold"]]))
        np.testing.assert_equal([point["sensitivity"], point["specificity"]], [sens[0], spec[0]])
        assert point["target"] and point["rule"]
    return points


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(labelled)
def test_order_holds_for_any_scores(data):
    check_points(*data)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.floats(0.0, 0.49), st.floats(0.51, 1.0))
def test_order_holds_for_separable_scores(n_neg, n_pos, high_neg, low_pos):
    probs = np.concatenate([np.linspace(0.0, high_neg, n_neg), np.linspace(low_pos, 1.0, n_pos)])
    labels = np.repeat([0, 1], [n_neg, n_pos])
    points = check_points(probs, labels)
    # Separable: screening and rule-in still keep their full sensitivity / specificity.
    assert points["screening"]["sensitivity"] == 1.0 and points["rule_in"]["specificity"] == 1.0


@pytest.mark.parametrize(
    "probs, labels",
    [
        ([0.5] * 6, [0, 1, 0, 1, 1, 1]),  # one score for all
        ([0.0, 1.0, 1.0], [0, 1, 1]),  # the extremes
        ([0.2, 0.9, 0.4], [1, 1, 1]),  # no normal film
        ([0.2, 0.9, 0.4], [0, 0, 0]),  # no pneumonia film
        ([0.9, 0.1], [0, 1]),  # perfectly wrong
        ([0.3], [1]),
    ],
)
def test_order_holds_for_degenerate_scores(probs, labels):
    check_points(np.array(probs), np.array(labels))


def test_screening_and_rule_in_are_the_far_ends_of_their_targets():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], [300, 500])
    probs = sigmoid(rng.normal(0, 1, 800) + 3.0 * labels - 1.0)
    points = check_points(probs, labels)
    candidates = candidate_thresholds(probs)
    for name in ("screening", "rule_in"):
        assert points[name]["threshold"] in candidates and points[name]["threshold"] not in probs  # a midpoint
    t = points["screening"]["threshold"]
    assert points["screening"]["sensitivity"] >= SCREENING_MIN_SENSITIVITY
    assert rates_at(probs, labels, candidates[candidates > t][:1])[0][0] < SCREENING_MIN_SENSITIVITY  # the highest such
    t = points["rule_in"]["threshold"]
    assert points["rule_in"]["specificity"] >= RULE_IN_MIN_SPECIFICITY
    assert rates_at(probs, labels, candidates[candidates < t][-1:])[1][0] < RULE_IN_MIN_SPECIFICITY  # the lowest such


def test_nearly_separable_validation_puts_each_point_on_its_side_of_balanced():
    """The shipped card's failure: every threshold between the classes met both old targets, so
    the first one found landed anywhere (screening above balanced, rule-in below)."""
    negatives = np.concatenate([np.linspace(0.0, 0.1, 197), [0.8, 0.85, 0.95]])  # 200: at most 2 false alarms
    positives = np.concatenate([np.linspace(0.9, 1.0, 97), [0.05, 0.06]])  # 99: no miss allowed
    probs = np.concatenate([negatives, positives])
    labels = np.repeat([0, 1], [200, 99])
    points = check_points(probs, labels)
    assert points["screening"]["threshold"] < points["balanced"]["threshold"] < points["rule_in"]["threshold"]
    below = negatives[negatives < 0.05].max()
    assert points["screening"]["threshold"] == pytest.approx((below + 0.05) / 2)
    assert points["screening"]["sensitivity"] == 1.0
    assert points["rule_in"]["threshold"] == pytest.approx((0.8 + 0.85) / 2)
    assert points["rule_in"]["specificity"] == 0.99


@pytest.mark.parametrize(
    "probs, labels, screening, rule_in",
    [
        ([0.1, 0.2, 0.95, 0.96, 0.97], [0, 0, 1, 1, 1], 0.575, 0.6),  # rule-in's candidate 0.575 is below balanced 0.6
        ([0.1, 0.2, 0.3, 0.95], [0, 0, 0, 1], 0.25, 0.625),  # screening's candidate 0.625 is above balanced 0.25
    ],
)
def test_clamped_points_sit_at_balanced(probs, labels, screening, rule_in):
    points = check_points(np.array(probs), np.array(labels))
    assert points["screening"]["threshold"] == pytest.approx(screening)
    assert points["rule_in"]["threshold"] == pytest.approx(rule_in)


def test_candidate_thresholds_cover_both_extremes():
    c = candidate_thresholds(np.array([0.0, 0.5, 1.0]))
    np.testing.assert_allclose(c[:-1], [0.0, 0.25, 0.75])
    assert c[-1] > 1.0
    sens, spec = rates_at(np.array([0.0, 0.5, 1.0]), np.array([0, 1, 1]), c)
    assert sens[0] == 1.0 and spec[-1] == 1.0


def test_the_shipped_card_orders_its_points_and_states_their_targets():
    card = read_card(DEFAULT_CHECKPOINT)
    points = card.operating_points
    assert points["screening"]["threshold"] <= points["balanced"]["threshold"] <= points["rule_in"]["threshold"]
    assert points["screening"]["sensitivity"] >= 0.99 and points["rule_in"]["specificity"] >= 0.99
    assert all(points[name]["target"] and points[name]["rule"] for name in points)
    conformal = card.conformal
    assert 0 < conformal["alpha"] < 0.5 and 0 < conformal["q_normal"] < 1 and 0 < conformal["q_pneumonia"] < 1
