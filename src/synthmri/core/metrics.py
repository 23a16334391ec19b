"""The layout of ``metrics.json``: its sections and the columns shown in short tables."""

from __future__ import annotations

from typing import Any

__all__ = ["BRIEF_COLUMNS", "brief_rows"]

BRIEF_COLUMNS: tuple[str, ...] = (
    "classifier",
    "segmenter",
    "generator",
    "train_on",
    "real_fraction",
    "n_train",
    "accuracy",
    "accuracy_ci",
    "precision",
    "recall",
    "specificity",
    "f1",
    "f1_ci",
    "auc",
    "dice",
    "dice_ci",
    "iou",
    "hd95",
    "correct_at_0.5",
    "n_test",
)


def brief_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Result rows cut to the columns a terminal summary shows (``BRIEF_COLUMNS``)."""
    return [{k: r[k] for k in BRIEF_COLUMNS if k in r} for r in rows]
