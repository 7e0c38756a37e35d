"""Mondrian conformal thresholds, prediction sets, answers and the card re-fit (synthetic data only)."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from xray_xai.checkpoint import ModelCard, read_card
from xray_xai.conformal import (
    INCONCLUSIVE,
    NORMAL,
    PNEUMONIA,
    ConformalThresholds,
    answer,
    answers,
    conformal_rank,
    coverage,
    fit_mondrian,
    prediction_set,
)
from xray_xai.metrics import share_figure
from xray_xai.training.conformal import choose_alpha, cross_fitted, point_figures, refit_card

unit = st.floats(0.0, 1.0, allow_nan=False)
labelled = st.integers(1, 80).flatmap(
    lambda n: st.tuples(arrays(np.float64, n, elements=unit), arrays(np.int64, n, elements=st.integers(0, 1)))
)
alphas = st.sampled_from([0.01, 0.02, 0.05, 0.1, 0.2, 0.3])


def synthetic(rng, n, prevalence=0.7, separation=2.5):
    """Calibrated-looking scores: P(pneumonia) from a logistic model with class-shifted logits."""
    labels = (rng.random(n) < prevalence).astype(int)
    probs = 1 / (1 + np.exp(-(rng.normal(0, 1.5, n) + separation * (2 * labels - 1))))
    return probs, labels


# --- thresholds ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, alpha, rank", [(19, 0.05, 19), (99, 0.1, 90), (99, 0.01, 99), (9, 0.05, 10), (200, 0.05, 191)]
)
def test_conformal_rank(n, alpha, rank):
    assert conformal_rank(n, alpha) == rank  # ceil((n + 1)(1 - alpha)), free of float rounding


def test_thresholds_are_the_class_order_statistics():
    normal = np.arange(1, 20) / 100  # nonconformity of NORMAL is p itself
    pneumonia = 1 - np.arange(1, 10) / 100
    t = fit_mondrian(np.concatenate([normal, pneumonia]), np.repeat([0, 1], [19, 9]), alpha=0.05)
    assert (t.n_normal, t.n_pneumonia) == (19, 9)
    assert t.q_normal == pytest.approx(0.19)  # rank ceil(20 * 0.95) = 19 of 19
    assert t.q_pneumonia == 1.0  # rank ceil(10 * 0.95) = 10 > 9 films: no threshold, PNEUMONIA always kept
    assert prediction_set(0.0, t) == {NORMAL, PNEUMONIA}


@settings(deadline=None, max_examples=150)
@given(labelled, alphas)
def test_in_sample_coverage_is_at_least_one_minus_alpha_per_class(data, alpha):
    """q_y is the ceil((n_y + 1)(1 - alpha))-th smallest score, so at least that share of class y is kept."""
    probs, labels = data
    t = fit_mondrian(probs, labels, alpha)
    figures = coverage(probs, labels, t)
    for y, key in ((0, "coverage_normal"), (1, "coverage_pneumonia")):
        if (labels == y).any():
            assert figures[key] >= 1 - alpha


@settings(deadline=None, max_examples=100)
@given(labelled, alphas, arrays(np.float64, 20, elements=unit))
def test_sets_match_crepes_p_values(data, alpha, test_p):
    """Independent check with crepes: y is in the set exactly when its non-smoothed
    class-conditional p-value exceeds alpha (crepes takes Mondrian bins per object, so each
    hypothesised class is one call)."""
    crepes = pytest.importorskip("crepes")
    probs, labels = data
    t = fit_mondrian(probs, labels, alpha)
    for y, name, score in ((0, NORMAL, test_p), (1, PNEUMONIA, 1 - test_p)):
        cal = probs[labels == y] if y == 0 else 1 - probs[labels == 1]
        if not cal.size:
            continue
        cc = crepes.ConformalClassifier().fit(cal)
        p_values = cc.predict_p(score, smoothing=False)
        expected = p_values > alpha
        got = np.array([name in prediction_set(p, t) for p in test_p])
        np.testing.assert_array_equal(got, expected)


def test_coverage_holds_on_exchangeable_data():
    """Marginal per-class coverage of split conformal lies in [1 - alpha, 1 - alpha + 1/(n_y + 1)].
    Averaged over 300 calibration draws (each tested on 4000 fresh films), the mean's standard
    error is about 0.001; the margin is 0.006."""
    rng = np.random.default_rng(0)
    alpha, draws = 0.1, 300
    covered = {0: [], 1: []}
    sizes = {0: [], 1: []}
    for _ in range(draws):
        cal_p, cal_y = synthetic(rng, 300)
        test_p, test_y = synthetic(rng, 4000)
        t = fit_mondrian(cal_p, cal_y, alpha)
        figures = coverage(test_p, test_y, t)
        covered[0].append(figures["coverage_normal"])
        covered[1].append(figures["coverage_pneumonia"])
        sizes[0].append(t.n_normal)
        sizes[1].append(t.n_pneumonia)
    for y in (0, 1):
        mean = float(np.mean(covered[y]))
        upper = 1 - alpha + float(np.mean(1 / (np.array(sizes[y]) + 1)))
        assert 1 - alpha - 0.006 <= mean <= upper + 0.006, (y, mean)


def test_coverage_is_per_class_not_only_overall():
    """A rare class keeps its own guarantee: overall coverage alone would let it drop."""
    rng = np.random.default_rng(1)
    alpha = 0.1
    hits = []
    for _ in range(200):
        cal_p, cal_y = synthetic(rng, 600, prevalence=0.9, separation=0.8)
        test_p, test_y = synthetic(rng, 4000, prevalence=0.9, separation=0.8)
        hits.append(coverage(test_p, test_y, fit_mondrian(cal_p, cal_y, alpha))["coverage_normal"])
    assert np.mean(hits) >= 1 - alpha - 0.01


def test_invalid_inputs():
    with pytest.raises(ValueError):
        fit_mondrian(np.array([0.5]), np.array([1]), alpha=0.0)
    with pytest.raises(ValueError):
        fit_mondrian(np.array([0.5, 0.2]), np.array([1]), alpha=0.1)


# --- answers -------------------------------------------------------------------------------------

T = ConformalThresholds(
    alpha=0.05, q_normal=0.6, q_pneumonia=0.25, n_normal=100, n_pneumonia=300
)  # NORMAL if p <= 0.6, PNEUMONIA if p >= 0.75
EMPTY = ConformalThresholds(
    alpha=0.05, q_normal=0.2, q_pneumonia=0.2, n_normal=100, n_pneumonia=300
)  # NORMAL p <= 0.2, PNEUMONIA p >= 0.8


@pytest.mark.parametrize(
    "p, thresholds, flagged, expected_set, expected",
    [
        (0.1, T, False, {NORMAL}, NORMAL),
        (0.9, T, False, {PNEUMONIA}, PNEUMONIA),
        (0.65, T, False, set(), INCONCLUSIVE),  # empty set
        (0.6, T, False, {NORMAL}, NORMAL),  # boundaries are inclusive
        (0.75, T, False, {PNEUMONIA}, PNEUMONIA),
        (0.5, EMPTY, False, set(), INCONCLUSIVE),
        (0.1, ConformalThresholds(0.05, 0.6, 0.95, 10, 10), False, {NORMAL, PNEUMONIA}, INCONCLUSIVE),  # both labels
        (0.9, T, True, {PNEUMONIA}, INCONCLUSIVE),  # flagged unlike the training films
        (0.1, T, True, {NORMAL}, INCONCLUSIVE),
    ],
)
def test_answer_rules(p, thresholds, flagged, expected_set, expected):
    assert prediction_set(p, thresholds) == expected_set
    assert answer(p, thresholds, flagged) == expected


@settings(deadline=None, max_examples=100)
@given(arrays(np.float64, st.integers(1, 30), elements=unit), st.data())
def test_vectorised_answers_match_single_answers(probs, data):
    flagged = data.draw(arrays(np.bool_, probs.shape))
    t = fit_mondrian(*synthetic(np.random.default_rng(2), 200), alpha=data.draw(alphas))
    expected = [answer(p, t, f) for p, f in zip(probs, flagged, strict=True)]
    assert list(answers(probs, t, flagged)) == expected
    assert set(expected) <= {NORMAL, PNEUMONIA, INCONCLUSIVE}


def test_coverage_figures_on_a_hand_example():
    probs = np.array([0.1, 0.65, 0.9, 0.95, 0.2, 0.9])
    labels = np.array([0, 0, 0, 1, 1, 1])
    flagged = np.array([False, False, False, False, False, True])
    f = coverage(probs, labels, T, flagged)
    # answers: NORMAL, INCONCLUSIVE (empty), PNEUMONIA (wrong), PNEUMONIA, NORMAL (wrong), INCONCLUSIVE (flagged)
    assert f["coverage_normal"] == pytest.approx(1 / 3) and f["coverage_pneumonia"] == pytest.approx(2 / 3)
    assert f["inconclusive"] == pytest.approx(2 / 6) and f["empty_set"] == pytest.approx(1 / 6)
    assert f["decisive"] == 4 and f["decisive_accuracy"] == pytest.approx(2 / 4)
    assert f["normal_not_called_pneumonia"] == pytest.approx(2 / 3)
    assert f["flagged"] == pytest.approx(1 / 6)


def test_thresholds_round_trip_through_json():
    t = fit_mondrian(*synthetic(np.random.default_rng(3), 300), alpha=0.05)
    raw = json.loads(json.dumps(t.to_json()))
    assert raw["rule"] and raw["nonconformity"]
    assert ConformalThresholds.from_dict(raw | {"validation": {}}) == t


# --- the card re-fit and the CLI's helpers ----------------------------------------------------------


def test_refit_card_orders_the_points_and_keeps_the_weights(tmp_path):
    probs, labels = synthetic(np.random.default_rng(4), 500, separation=4.0)  # nearly separable
    unordered = {
        "balanced": {"threshold": 0.7, "sensitivity": 0.96, "specificity": 0.97},
        "screening": {"threshold": 0.84, "sensitivity": 0.95, "specificity": 0.97},
        "rule_in": {"threshold": 0.13, "sensitivity": 0.99, "specificity": 0.90},
    }
    card = ModelCard(
        arch="tiny", input_size=8, mean=0.5, std=0.25, operating_points=unordered, weights="w.safetensors", sha256="abc"
    )
    new = refit_card(card, probs, labels, alpha=0.05, extra={"alpha_rule": "given"})
    points = new.operating_points
    assert points["screening"]["threshold"] <= points["balanced"]["threshold"] <= points["rule_in"]["threshold"]
    assert (new.sha256, new.weights) == (
        "abc",
        "w.safetensors",
    ) and card.operating_points == unordered  # the original is untouched
    new.to_json(tmp_path / "card.json")
    back = read_card(tmp_path / "card.json")
    assert back.operating_points == points
    assert ConformalThresholds.from_dict(back.conformal) == fit_mondrian(probs, labels, 0.05)
    assert back.conformal["alpha_rule"] == "given" and back.conformal["validation"]["coverage_normal"] >= 0.95


def test_choose_alpha_takes_the_smallest_alpha_within_the_held_out_inconclusive_limit():
    probs, labels = synthetic(np.random.default_rng(5), 800, separation=1.5)
    groups = np.arange(800) // 2  # two films per patient
    alphas = (0.01, 0.05, 0.1, 0.2)
    chosen, figures = choose_alpha(probs, labels, None, groups, alphas, max_inconclusive=0.10)
    assert figures == {str(a): cross_fitted(probs, labels, None, groups, a) for a in alphas}  # held out, not in sample
    ok = [float(a) for a, f in figures.items() if f["inconclusive"] <= 0.10]
    assert ok and chosen == min(ok)
    none_ok, _ = choose_alpha(probs, labels, np.ones(800, bool), groups, (0.01, 0.05), max_inconclusive=0.10)
    assert none_ok == 0.05  # every film flagged: nothing qualifies, the largest alpha is taken


def test_report_intervals():
    f = share_figure(np.array([1, 1, 1, 0] * 25, bool), n_resamples=500, seed=0)
    assert f["value"] == 0.75 and f["ci95"][0] < 0.75 < f["ci95"][1] and f["exact_ci95"][0] < 0.75 < f["exact_ci95"][1]
    perfect = share_figure(np.ones(50, bool), n_resamples=200, seed=0)
    assert perfect["ci95"] == [1.0, 1.0] and perfect["exact_ci95"][0] < 0.95  # the exact interval is not degenerate
    probs, labels = synthetic(np.random.default_rng(6), 300)
    from xray_xai.calibration import operating_points

    figures = point_figures(probs, labels, operating_points(probs, labels), n_resamples=200, seed=0)
    assert figures["screening_minus_balanced_sensitivity"]["value"] >= 0
    assert figures["rule_in_minus_balanced_specificity"]["value"] >= 0
