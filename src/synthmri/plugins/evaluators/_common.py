"""What the evaluator plugins share: class splits, size matching, metric numbers, result
labels, bootstrap intervals (of a row's metric and of its gain over real data), and the
memorisation rule of ``privacy`` and ``image_quality``.

The gain of a synthetic or mixed result row (``<metric>_gain``, ``add_gains``) is its metric
minus that of the same model trained on real data alone, at the same real fraction (mixed)
or at the largest one of the run (synthetic alone: TSTR - TRTR), with the same seed. Both
were scored on the same test items, so its interval is a paired bootstrap of the per-item
differences: far narrower than what comparing the two rows' own intervals suggests, and
the right test of "is the difference more than the test part's noise". Every row's own
interval uses the same resamples (seeded by the run seed and the test size only), so equal
predictions get equal intervals whatever else the run holds.

The memorisation rule (``find_memorized``): a synthetic image is a memorised copy when

- its SSIM to the nearest training image is >= ``ssim_threshold`` (0.95), OR
- its feature distance to the nearest training image is below ``ratio_threshold`` (0.5)
  times the ``reference_percentile``-th (5th) percentile of the real test images'
  nearest-training distances, i.e. it is far closer to a training image than almost any
  new real image ever is, OR
- the loader's duplicate search would join it with a training image (shifted, turned,
  zoomed or mirrored, correlated inside the head at ``aligned_threshold``, 0.93): a copy
  that flips or small affine transforms hide from SSIM.

Importing this module loads no torch (nor matplotlib): they are imported inside the
functions that use them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from synthmri.core.interfaces import Predictions, StrictParams
from synthmri.core.memorisation import (  # the copy rule lives in core (the guard uses it too)
    MemorizationResult,
    find_memorized,
    nearest_distance,
    nearest_ssim,
    ssim_window,
)

if TYPE_CHECKING:
    import torch

    from synthmri.core.interfaces import ImageSet

__all__ = [
    "BootstrapParams",
    "MemorizationParams",
    "MemorizationResult",
    "add_gains",
    "bootstrap_ci",
    "by_class",
    "find_memorized",
    "match_size",
    "metric_value",
    "nearest_distance",
    "nearest_ssim",
    "result_head",
    "result_label",
    "ssim_window",
]


# ----------------------------------------------------------------------------- rows


def metric_value(x: Any, digits: int | None = 6) -> float | None:
    """``x`` as a plain float for a metric row, rounded to ``digits`` (None: unrounded);
    None when ``x`` is None, NaN or infinite (JSON has no NaN)."""
    if x is None:
        return None
    v = float(x)
    if not math.isfinite(v):
        return None
    return v if digits is None else round(v, digits)


def result_head(pred: Predictions, model_key: str) -> dict[str, Any]:
    """The columns that say which training a result row is: the model (under
    ``model_key``), generator, train_on, real_fraction, the experiment seed when the
    experiment lists seeds, n_train, and the model's validation score when it has one."""
    head: dict[str, Any] = {
        model_key: pred.model,
        "generator": pred.generator,
        "train_on": pred.train_on,
        "real_fraction": pred.real_fraction,
    }
    if pred.seed is not None:
        head["seed"] = pred.seed
    head["n_train"] = pred.n_train
    if pred.extra.get("val_score") is not None:
        head["val_score"] = metric_value(pred.extra["val_score"], 4)
    return head


def result_label(row: dict[str, Any], model_key: str) -> str:
    """A figure label of a result row: ``<model> · <train_on> <generator> (<f> real)``;
    ``model_key`` names the model column (``classifier``, ``segmenter``)."""
    text = f"{row[model_key]} · {row['train_on']}"
    if row["generator"]:
        text += f" {row['generator']}"
    if row["train_on"] != "synthetic" and row["real_fraction"] < 1:
        text += f" ({row['real_fraction']:g} real)"
    return text


class BootstrapParams(StrictParams):
    """Params of the percentile bootstrap intervals of result metrics."""

    bootstrap: int = Field(
        1000, ge=0, description="bootstrap resamples for the intervals (0: no intervals)"
    )
    confidence: float = Field(0.95, gt=0, lt=1, description="coverage of the intervals")


def bootstrap_ci(
    values: np.ndarray,
    resamples: int,
    confidence: float,
    rng: np.random.Generator,
    digits: int | None = None,
) -> list[float | None]:
    """Percentile bootstrap interval of the mean of ``values`` ([None, None] when empty)."""
    n = len(values)
    if n == 0 or resamples <= 0:
        return [None, None]
    means = values[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return [metric_value(lo, digits), metric_value(hi, digits)]


def _real_reference(rows: list[dict[str, Any]], row: dict[str, Any], model_key: str) -> int | None:
    """Index in ``rows`` of the real-data row a synthetic or mixed ``row`` is compared with:
    the same model and seed trained on real data alone, at the same real fraction (mixed) or
    at the largest one (synthetic alone); None for a real row or when there is none."""
    if row["train_on"] not in ("synthetic", "mixed"):
        return None
    found = [
        i
        for i, r in enumerate(rows)
        if r["train_on"] == "real"
        and r[model_key] == row[model_key]
        and r.get("seed") == row.get("seed")
        and (
            row["train_on"] == "synthetic"
            or abs(float(r["real_fraction"]) - float(row["real_fraction"])) < 1e-9
        )
    ]
    return max(found, key=lambda i: float(rows[i]["real_fraction"]), default=None)


def add_gains(
    rows: list[dict[str, Any]],
    values: list[np.ndarray],
    tests: list[np.ndarray],
    metric: str,
    model_key: str,
    params: BootstrapParams,
    seed: int,
    digits: int | None = None,
) -> None:
    """Add ``<metric>_gain`` and ``<metric>_gain_ci`` (module docstring) to every synthetic
    or mixed row of ``rows`` that has a real reference scored on the same test items.

    ``values[i]`` are row ``i``'s per-item scores whose mean is ``metric`` (1/0 correct for
    accuracy, per-slice Dice); ``tests[i]`` what identifies its test items (the targets)."""
    for row, v, t in zip(rows, values, tests, strict=True):
        j = _real_reference(rows, row, model_key)
        if j is None or len(v) != len(values[j]) or not np.array_equal(t, tests[j]):
            continue
        d = np.asarray(v, dtype=float) - np.asarray(values[j], dtype=float)
        rng = np.random.default_rng([seed, len(d)])
        row[f"{metric}_gain"] = metric_value(d.mean(), digits) if len(d) else None
        row[f"{metric}_gain_ci"] = bootstrap_ci(d, params.bootstrap, params.confidence, rng, digits)


# ----------------------------------------------------------------------------- image sets


def match_size(images: torch.Tensor, size: int) -> torch.Tensor:
    """``images`` resized (bilinear, antialiased) to ``size`` px when they differ."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images.float()
    import torch.nn.functional as F

    return F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True)


def by_class(data: ImageSet) -> list[tuple[str, torch.Tensor]]:
    """(class name, indices) per class present; ("all", everything) when unlabelled."""
    import torch

    if data.labels is None:
        return [("all", torch.arange(len(data)))]
    out = []
    for k in torch.unique(data.labels).tolist():
        name = data.class_names[k] if k < len(data.class_names) else str(k)
        out.append((name, (data.labels == k).nonzero().reshape(-1)))
    return out


# ----------------------------------------------------------------------------- memorisation


class MemorizationParams(StrictParams):
    """The thresholds of the memorisation rule (module docstring)."""

    ssim_threshold: float = Field(
        0.95,
        gt=0,
        le=1,
        description="SSIM to the nearest training image at or above which "
        "a synthetic image is a copy",
    )
    ratio_threshold: float = Field(
        0.5,
        ge=0,
        description="a copy also when its feature distance is below this times the "
        "reference percentile of the real test images' nearest-training distances",
    )
    reference_percentile: float = Field(
        5.0, ge=0, le=100, description="percentile of the real test distances (see above)"
    )
    max_pairs: int = Field(
        2_000_000,
        ge=1,
        description="most (synthetic, training) pairs compared by SSIM; above "
        "it, each synthetic image is compared with its nearest training images by pixel L2",
    )
    aligned_threshold: float = Field(
        0.93,
        ge=0,
        description="a copy also when, shifted, turned, zoomed or mirrored, it correlates "
        "this much inside the head with a training image: the loader's duplicate rule "
        "(data.near_duplicate_aligned); > 1: off",
    )

    def rule(self) -> dict[str, Any]:
        """The thresholds as keyword arguments of ``find_memorized``."""
        return {name: getattr(self, name) for name in MemorizationParams.model_fields}
