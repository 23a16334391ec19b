"""Operating points set on a validation part: thresholds per calibration mode, the rates
they reach, and the healthy class found by name."""

from __future__ import annotations

import numpy as np
import pytest

from synthmri.core.errors import DataError
from synthmri.core.operating_point import healthy_index, rates, threshold_for

POS = np.array([0.9, 0.8, 0.7, 0.6, 0.1])
NEG = np.array([0.5, 0.4, 0.3, 0.2, 0.05])
SCORES = np.concatenate([POS, NEG])
POSITIVE = np.array([True] * 5 + [False] * 5)


def test_sensitivity_keeps_the_target_share_of_positives_above() -> None:
    t = threshold_for("sensitivity", SCORES, POSITIVE, target_sensitivity=0.8)
    assert t == 0.5  # just below the 4th highest positive (0.6): the next lower score
    r = rates(SCORES, POSITIVE, t)
    assert (r["sensitivity"], r["specificity"]) == (0.8, 1.0)
    t = threshold_for("sensitivity", SCORES, POSITIVE, target_sensitivity=1.0)
    assert t == 0.05 and rates(SCORES, POSITIVE, t)["sensitivity"] == 1.0


def test_sensitivity_takes_what_costs_no_specificity() -> None:
    # separable classes: the target (0.6) is a floor, not a point to stop at
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.3, 0.2, 0.1])
    positive = np.array([True] * 5 + [False] * 3)
    t = threshold_for("sensitivity", scores, positive, target_sensitivity=0.6)
    assert t == 0.3 and rates(scores, positive, t)["sensitivity"] == 1.0
    # a lower threshold that costs specificity is not taken, even where Youden's J would
    # take it (at 0.3: 5 / 5 positives, 4 / 5 negatives, J 0.8 against 0.6 at 0.5)
    scores = np.array([0.9, 0.8, 0.7, 0.4, 0.35, 0.5, 0.3, 0.2, 0.1, 0.05])
    positive = np.array([True] * 5 + [False] * 5)
    assert threshold_for("sensitivity", scores, positive, target_sensitivity=0.6) == 0.5
    assert threshold_for("youden", scores, positive) == 0.3


def test_sensitivity_is_the_most_specific_then_the_lowest() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        scores = rng.normal(size=30).round(1)  # ties included
        positive = rng.random(30) < 0.5
        positive[:2] = [True, False]
        target = float(rng.uniform(0.5, 1.0))
        t = threshold_for("sensitivity", scores, positive, target_sensitivity=target)
        got = rates(scores, positive, t)
        assert got["sensitivity"] >= target - 1e-9
        for other in np.unique(np.concatenate([scores, [scores.min() - 1]])):
            r = rates(scores, positive, float(other))
            if r["sensitivity"] >= target - 1e-9:
                assert r["specificity"] <= got["specificity"]
                if r["specificity"] == got["specificity"]:  # then no more positives
                    assert r["sensitivity"] <= got["sensitivity"]


def test_specificity_youden_and_f1() -> None:
    t = threshold_for("specificity", SCORES, POSITIVE, target_specificity=0.8)
    assert t == 0.4 and rates(SCORES, POSITIVE, t)["specificity"] == 0.8
    # J is 0.8 at 0.5 (0.8 / 1.0) and at 0.05 (1.0 / 0.8): ties go to the higher threshold
    assert threshold_for("youden", SCORES, POSITIVE) == 0.5
    assert threshold_for("f1", SCORES, POSITIVE) in (0.05, 0.5)


def test_rates_and_missing_classes() -> None:
    r = rates(SCORES, POSITIVE, 0.55)
    assert r["auc"] == pytest.approx(21 / 25) and (r["n_positive"], r["n_negative"]) == (5, 5)
    only_neg = rates(NEG, np.zeros(5, bool), 0.3)
    assert only_neg["sensitivity"] is None and only_neg["auc"] is None
    assert only_neg["specificity"] == 0.6
    assert threshold_for("specificity", NEG, np.zeros(5, bool), target_specificity=1.0) == 0.5
    for mode in ("sensitivity", "youden", "f1"):
        with pytest.raises(ValueError, match="needs normal and tumour"):
            threshold_for(mode, NEG, np.zeros(5, bool))
    with pytest.raises(ValueError, match="unknown"):
        threshold_for("none", SCORES, POSITIVE)


def test_healthy_index_by_name_and_fallbacks() -> None:
    assert healthy_index(["normal", "tumor"], "normal", "m") == 0
    assert healthy_index(["Yes", "No"], "normal", "m") == 1
    assert healthy_index(["lesion", "control"], "Control", "m") == 1
    with pytest.raises(DataError, match="m: no healthy class 'normal'"):
        healthy_index(["a", "b"], "normal", "m")
