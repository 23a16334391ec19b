"""The segmentation evaluator: Dice, IoU, HD95, detection, intervals and figures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from synthmri.core.interfaces import EvalInputs, ImageSet, Predictions
from synthmri.core.plugins import get_plugin
from synthmri.core.training import RunContext
from synthmri.plugins.evaluators.segmentation import (
    SegmentationEvaluator,
    bootstrap_ci,
    hd95_per_image,
    segmentation_scores,
)

# ------------------------------------------------------------------ a hand-computed case


def _hand_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Five 8x8 slices (probabilities, masks) with known scores:

    0: tumour 2x2, prediction shifted by one column -> Dice 0.5, IoU 1/3, HD95 1
    1: tumour 2x2, exact prediction                 -> Dice 1, IoU 1, HD95 0
    2: no tumour, empty prediction                  -> Dice 1 (correct)
    3: no tumour, 3 predicted pixels                -> Dice 0 (false positive)
    4: tumour 2x2, empty prediction                 -> Dice 0 (missed)
    """
    target = torch.zeros(5, 1, 8, 8)
    prob = torch.full((5, 1, 8, 8), 0.1)
    target[0, 0, 2:4, 2:4] = 1
    prob[0, 0, 2:4, 3:5] = 0.9
    target[1, 0, 5:7, 5:7] = 1
    prob[1, 0, 5:7, 5:7] = 0.8
    prob[3, 0, 0, 0:3] = 0.7
    target[4, 0, 1:3, 1:3] = 1
    prob[4, 0, 1:3, 1:3] = 0.4  # below the threshold
    return prob, target


def _prediction(prob: torch.Tensor, target: torch.Tensor, **kw: object) -> Predictions:
    args = dict(
        task="segment", model="unet", plugin="unet", generator=None, train_on="real",
        real_fraction=1.0, n_train=10, target=target, output=prob,
    )  # fmt: skip
    args.update(kw)
    return Predictions(**args)  # type: ignore[arg-type]


def _inputs(target: torch.Tensor, preds: list[Predictions]) -> EvalInputs:
    n = target.shape[0]
    test = ImageSet(images=torch.rand(n, 1, *target.shape[2:]), masks=target)
    return EvalInputs(train=test, val=test, test=test, predictions=preds, seed=0)


def test_scores_per_slice_match_hand_computation() -> None:
    prob, target = _hand_case()
    s = segmentation_scores(prob, target, threshold=0.5, min_pixels=2)
    assert s["dice"].tolist() == pytest.approx([0.5, 1.0, 1.0, 0.0, 0.0])
    assert s["iou"].tolist() == pytest.approx([1 / 3, 1.0, 1.0, 0.0, 0.0])
    assert s["tumor"].tolist() == [True, True, False, False, True]
    assert s["detected"].tolist() == [True, True, False, True, False]
    hd = s["hd95"].tolist()
    assert hd[:2] == pytest.approx([1.0, 0.0])
    assert all(math.isnan(v) for v in hd[2:])


def test_evaluator_row_matches_hand_computation() -> None:
    prob, target = _hand_case()
    ev = SegmentationEvaluator({"min_pixels": 2, "bootstrap": 200, "figures": False})
    rows = ev.evaluate(_inputs(target, [_prediction(prob, target)]), RunContext())["segmentation"]
    assert len(rows) == 1
    row = rows[0]
    for key in ("segmenter", "generator", "train_on", "real_fraction", "n_train", "dice",
                "dice_ci", "iou", "iou_ci", "hd95", "correct_at_0.5", "n_test", "dice_all",
                "detection_sensitivity", "detection_specificity"):  # fmt: skip
        assert key in row, key
    assert row["segmenter"] == "unet" and row["generator"] is None and row["train_on"] == "real"
    assert row["dice"] == pytest.approx((0.5 + 1 + 0) / 3, abs=1e-4)  # tumour slices only
    assert row["iou"] == pytest.approx((1 / 3 + 1 + 0) / 3, abs=1e-4)
    assert row["dice_all"] == pytest.approx((0.5 + 1 + 1 + 0 + 0) / 5, abs=1e-4)
    assert row["hd95"] == pytest.approx(0.5) and row["hd95_n"] == 2
    assert row["correct_at_0.5"] == 3 and row["n_test"] == 5 and row["n_tumor"] == 3
    assert row["detection_sensitivity"] == pytest.approx(2 / 3, abs=1e-4)
    assert row["detection_specificity"] == pytest.approx(1 / 2)
    lo, hi = row["dice_ci"]
    assert 0.0 <= lo <= row["dice"] <= hi <= 1.0 and lo < hi
    json.dumps(rows)  # plain values only


def test_evaluator_handles_no_tumour_and_no_normal_slices() -> None:
    empty = torch.zeros(3, 1, 8, 8)
    ev = SegmentationEvaluator({"figures": False})
    row = ev.evaluate(_inputs(empty, [_prediction(empty, empty)]), RunContext())["segmentation"][0]
    assert row["dice"] is None and row["dice_ci"] == [None, None] and row["hd95"] is None
    assert row["dice_all"] == 1.0 and row["correct_at_0.5"] == 3
    assert row["detection_sensitivity"] is None and row["detection_specificity"] == 1.0
    full = torch.ones(2, 1, 8, 8)
    row = ev.evaluate(_inputs(full, [_prediction(full, full)]), RunContext())["segmentation"][0]
    assert row["dice"] == 1.0 and row["hd95"] == 0.0 and row["detection_specificity"] is None


def test_hd95_tiny_known_cases() -> None:
    pred = torch.zeros(3, 1, 12, 12, dtype=torch.bool)
    truth = torch.zeros_like(pred)
    pred[0, 0, 5, 5] = truth[0, 0, 5, 9] = True  # 4 px apart
    pred[1, 0, 0, 0] = truth[1, 0, 3, 4] = True  # a 3-4-5 triangle
    truth[2, 0, 2:4, 2:4] = True  # empty prediction: undefined
    hd = hd95_per_image(pred, truth)
    assert hd[:2].tolist() == pytest.approx([4.0, 5.0])
    assert math.isnan(hd[2].item())


def test_bootstrap_ci() -> None:
    rng = np.random.default_rng(0)
    assert bootstrap_ci(np.full(7, 0.3), 100, 0.95, rng) == pytest.approx([0.3, 0.3])
    assert bootstrap_ci(np.array([]), 100, 0.95, rng) == [None, None]
    lo, hi = bootstrap_ci(np.linspace(0, 1, 50), 500, 0.95, rng)
    assert lo < 0.5 < hi


def test_dice_gain_over_real_is_paired() -> None:
    prob, target = _hand_case()
    fixed = prob.clone()
    fixed[4, 0, 1:3, 1:3] = 0.9  # the missed tumour found: Dice 0 -> 1 on slice 4
    preds = [
        _prediction(prob, target),
        _prediction(fixed, target, generator="gan", train_on="mixed"),
        _prediction(fixed, torch.flip(target, [0]), generator="gan", train_on="synthetic"),
    ]
    evaluator = SegmentationEvaluator({"figures": False})
    real, mixed, other_test = evaluator.evaluate(_inputs(target, preds), RunContext())[
        "segmentation"
    ]
    assert mixed["dice_gain"] == pytest.approx(1 / 3, abs=1e-4)  # over the 3 tumour slices
    lo, hi = mixed["dice_gain_ci"]
    assert 0 <= lo <= 1 / 3 <= hi
    assert "dice_gain" not in real and "dice_gain" not in other_test  # other test masks


def test_evaluator_rejects_mismatched_shapes() -> None:
    _, target = _hand_case()
    from synthmri.core.errors import DataError

    bad = _prediction(torch.rand(5, 1, 4, 4), target)
    with pytest.raises(DataError, match="does not match"):
        SegmentationEvaluator({"figures": False}).evaluate(_inputs(target, [bad]), RunContext())


def test_evaluator_figures(tmp_path) -> None:
    prob, target = _hand_case()
    preds = [
        _prediction(prob, target, real_fraction=f, train_on=t, generator=g)
        for t, g, f in [("real", None, 0.5), ("real", None, 1.0), ("synthetic", "dcgan", 0.0),
                        ("mixed", "dcgan", 0.5), ("mixed", "dcgan", 1.0)]
    ]  # fmt: skip
    run = RunContext(tmp_path, seed=0)
    rows = SegmentationEvaluator().evaluate(_inputs(target, preds), run)["segmentation"]
    assert len(rows) == 5
    names = [p.name for p in run.figures]
    assert any("overlay" in n for n in names) and any("fraction" in n for n in names)
    assert all(p.is_file() for p in run.figures)


def test_evaluator_is_registered() -> None:
    assert get_plugin("evaluator", "segmentation") is SegmentationEvaluator
    assert SegmentationEvaluator.requires == ("segmentation",)
