"""Operating points: where a binary decision ``score > threshold`` is set on a validation part.

In this field the costly error is the missed tumour, so a classifier's threshold is set for
a target sensitivity (recall) rather than left at "the likelier class". What the anomaly
classifiers and the supervised classifiers share: the healthy class found by name
(``healthy_index``), the threshold of a calibration mode (``threshold_for``: a target
sensitivity, a target specificity, Youden's J or F1) and the rates it reaches (``rates``).
Higher scores mean "tumour" (the positive class).

Numpy and scikit-learn only (no torch).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from synthmri.core.errors import DataError

__all__ = [
    "NORMAL_FALLBACKS",
    "Calibration",
    "HealthyClass",
    "TargetSensitivity",
    "TargetSpecificity",
    "healthy_index",
    "rates",
    "threshold_for",
]

Calibration = Literal["none", "sensitivity", "specificity", "youden", "f1"]
"""How a threshold is set on the validation part (``none``: not calibrated)."""
HealthyClass = Annotated[
    str,
    Field(
        description="the healthy class (case-insensitive); if absent, a class named "
        "no / healthy / normal is used"
    ),
]
TargetSensitivity = Annotated[
    float,
    Field(gt=0, le=1, description="calibration sensitivity: share of val tumours called tumour"),
]
TargetSpecificity = Annotated[
    float,
    Field(gt=0, le=1, description="calibration specificity: share of val normals kept normal"),
]

NORMAL_FALLBACKS: tuple[str, ...] = ("no", "healthy", "normal")
"""Class names taken as the healthy class when the wanted name matches none."""


def healthy_index(class_names: list[str], wanted: str, name: str) -> int:
    """The index of the healthy class: ``wanted`` or a ``NORMAL_FALLBACKS`` name
    (case-insensitive); a one-line ``DataError`` naming ``name`` when none is there."""
    lowered = [c.lower() for c in class_names]
    for candidate in (wanted.lower(), *NORMAL_FALLBACKS):
        if candidate in lowered:
            return lowered.index(candidate)
    raise DataError(
        f"{name}: no healthy class {wanted!r} among the classes {class_names}",
        hint="set params.normal_class to the name of the class without tumours",
    )


def threshold_for(
    mode: str,
    scores: np.ndarray,
    positive: np.ndarray,
    *,
    target_sensitivity: float = 0.9,
    target_specificity: float = 0.9,
) -> float:
    """The threshold of calibration ``mode`` on validation ``scores`` (``positive`` marks
    the tumour slices); ``score > threshold`` is called tumour.

    ``sensitivity``: of the thresholds that call at least ``target_sensitivity`` of the
    positives positive, those with the highest specificity, and of these the lowest: the
    highest validation score left uncalled, lowered past positives while that calls no
    further negative (a perfect ranking gets every positive, not just the target's share);
    ``specificity``: the lowest that keeps ``target_specificity`` of the negatives at or
    below it; ``youden`` / ``f1``: the threshold with the largest J or F1 (ties: the
    higher). Thresholds are validation scores (or just below the lowest), so each mode's
    boundary case favours its target. Each mode needs the classes it counts (``ValueError``
    otherwise; sensitivity, Youden and F1 need both).
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    negative_scores, positive_scores = scores[~positive], scores[positive]
    if mode == "specificity":
        if negative_scores.size == 0:
            raise ValueError("calibration specificity needs negative (normal) scores")
        k = max(0, math.ceil(target_specificity * negative_scores.size - 1e-9) - 1)
        return float(np.sort(negative_scores)[k])
    if mode not in ("sensitivity", "youden", "f1"):
        raise ValueError(f"unknown calibration mode {mode!r}")
    if positive_scores.size == 0 or negative_scores.size == 0:
        raise ValueError(f"calibration {mode} needs normal and tumour scores")
    candidates = np.unique(scores)
    if mode == "sensitivity":  # also "call everything": just below the lowest score
        lowest = candidates[0] - max(abs(float(candidates[0])), 1.0) * 1e-9
        candidates = np.concatenate([[lowest], candidates])
    pred = scores[None, :] > candidates[:, None]  # [T, N]: positive above each threshold
    tp = (pred & positive).sum(1)
    fp = (pred & ~positive).sum(1)
    fn = positive.sum() - tp
    if mode == "sensitivity":
        enough = tp >= target_sensitivity * positive.sum() - 1e-9
        fp = np.where(enough, fp, np.iinfo(np.int64).max)
        return float(candidates[np.flatnonzero(fp == fp.min())[0]])
    if mode == "youden":
        value = tp / positive.sum() - fp / (~positive).sum()
    else:
        value = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    best = np.flatnonzero(value >= value.max() - 1e-12)[-1]
    return float(candidates[best])


def rates(scores: np.ndarray, positive: np.ndarray, threshold: float) -> dict[str, Any]:
    """Sensitivity, specificity and ROC AUC of ``score > threshold`` (None where a class
    is missing), and the number of positives and negatives."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    called = scores > threshold
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    auc = None
    if n_pos and n_neg:
        from sklearn.metrics import roc_auc_score

        auc = float(roc_auc_score(positive, scores))
    return {
        "sensitivity": float(called[positive].mean()) if n_pos else None,
        "specificity": float((~called[~positive]).mean()) if n_neg else None,
        "auc": auc,
        "n_positive": n_pos,
        "n_negative": n_neg,
    }
