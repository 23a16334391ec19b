"""Segmentation metrics on the real test part: Dice, IoU, HD95, detection, bootstrap CIs.

For every segmentation result the predicted probabilities are thresholded
(``threshold``) and scored per test slice with MONAI's ``DiceMetric``,
``MeanIoU`` (both with ``ignore_empty=False``) and ``compute_hausdorff_distance``
(95th percentile of the symmetric surface distances, in pixels).

Conventions for slices without tumour (empty true mask):

- an empty prediction on an empty mask is correct: Dice = IoU = 1 there, any
  predicted pixel makes it 0; an empty prediction on a tumour scores 0;
- ``dice`` / ``iou`` (with ``dice_ci`` / ``iou_ci``, percentile bootstrap over
  slices) are means over the tumour-bearing slices only (``n_tumor`` of them);
  ``dice_all`` is the mean over all ``n_test`` slices with the convention above;
- ``hd95`` is the mean over slices where both masks are non-empty
  (``hd95_n`` of them; None when there are none);
- ``correct_at_0.5`` counts the test slices with Dice >= 0.5 (convention above,
  so a normal slice with an empty prediction is correct), out of ``n_test``;
- detection: a slice is predicted to hold a tumour when at least ``min_pixels``
  pixels are above the threshold; ``detection_sensitivity`` is measured on the
  tumour slices, ``detection_specificity`` on the others (None when absent);
- synthetic and mixed rows get ``dice_gain`` over their real-data row, with a paired
  interval over the tumour slices (``_common``).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from synthmri import hookimpl
from synthmri.core.artifacts import pyplot
from synthmri.core.errors import DataError
from synthmri.core.interfaces import EvalInputs, Evaluator, Predictions
from synthmri.plugins.evaluators._common import (
    BootstrapParams,
    add_gains,
    bootstrap_ci,
    metric_value,
    result_head,
    result_label,
)

if TYPE_CHECKING:
    import torch

    from synthmri.core.training import RunContext

__all__ = ["SegmentationEvaluator", "bootstrap_ci", "hd95_per_image", "segmentation_scores"]

OVERLAY_ROWS_PER_FIGURE = 8
DIGITS = 4  # metric values are rounded to 4 decimals


def hd95_per_image(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """HD95 in pixels per image of binary masks ``[N, 1, H, W]`` (MONAI; NaN unless both
    masks are non-empty)."""
    import torch
    from monai.metrics import compute_hausdorff_distance

    n = pred.shape[0]
    out = torch.full((n,), float("nan"), dtype=torch.float64)
    both = pred.flatten(1).any(1) & target.flatten(1).any(1)
    if both.any():
        with warnings.catch_warnings():
            # MONAI 1.5+ warns about its own internal use of a deprecated argument
            warnings.simplefilter("ignore", FutureWarning)
            hd = compute_hausdorff_distance(
                pred[both].float(), target[both].float(), include_background=True, percentile=95
            )
        out[both] = hd.reshape(-1).double()
    return out


def segmentation_scores(
    prob: torch.Tensor, target: torch.Tensor, threshold: float = 0.5, min_pixels: int = 1
) -> dict[str, torch.Tensor]:
    """Per-slice scores of probabilities ``[N, 1, H, W]`` against 0/1 masks ``[N, 1, H, W]``.

    Returns ``dice``, ``iou`` (1 for an empty prediction on an empty mask), ``hd95``
    (NaN unless both are non-empty), ``tumor`` (true mask non-empty), ``detected``
    (>= ``min_pixels`` predicted pixels) and ``pred_pixels``.
    """
    from monai.metrics import DiceMetric, MeanIoU

    pred = (prob.float() > threshold).float()
    truth = (target.float() > 0.5).float()
    dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    iou = MeanIoU(include_background=True, reduction="none", ignore_empty=False)
    pred_pixels = pred.flatten(1).sum(1)
    return {
        "dice": dice(pred, truth).reshape(-1).double(),
        "iou": iou(pred, truth).reshape(-1).double(),
        "hd95": hd95_per_image(pred.bool(), truth.bool()),
        "tumor": truth.flatten(1).any(1),
        "detected": pred_pixels >= min_pixels,
        "pred_pixels": pred_pixels,
    }


class SegmentationEvaluator(Evaluator):
    """Dice, IoU, HD95, correct-at-0.5 and tumour detection with bootstrap intervals."""

    name = "segmentation"
    description = "Dice, IoU, HD95 (tumour slices, 95% bootstrap CIs), detection, overlays"
    requires = ("segmentation",)

    class Params(BootstrapParams):
        """segmentation evaluator params."""

        threshold: float = Field(0.5, gt=0, lt=1, description="probability threshold of a mask")
        min_pixels: int = Field(
            10, ge=1, description="predicted pixels for a slice to count as 'tumour detected'"
        )
        figures: bool = Field(True, description="draw overlays and the Dice-vs-fraction curve")

    def evaluate(self, inputs: EvalInputs, run: RunContext) -> dict[str, list[dict[str, Any]]]:
        """One row per segmentation result (see DESIGN.md ``segmentation``)."""
        results = [p for p in inputs.predictions if p.task == "segment"]
        rows, scores, masks = [], [], []
        for pred in results:
            row, score = self._row(pred, inputs.seed)
            rows.append(row)
            scores.append(score)
            masks.append(score["truth"].numpy())
        dice = [s["dice"][s["tumor"]].numpy() for s in scores]
        add_gains(rows, dice, masks, "dice", "segmenter", self.params, inputs.seed, DIGITS)
        if self.params.figures and rows:
            _overlay_figures(inputs, results, rows, scores, run, self.params.threshold)
            if len({r["real_fraction"] for r in rows if r["train_on"] != "synthetic"}) > 1:
                _fraction_figure(rows, run)
        return {"segmentation": rows}

    def _row(self, pred: Predictions, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
        prob, target = _arrays(pred)
        p = self.params
        s = segmentation_scores(prob, target, p.threshold, p.min_pixels)
        s["truth"] = (target > 0.5).flatten(1)  # what identifies the test masks
        tumor, detected = s["tumor"], s["detected"]
        dice_t = s["dice"][tumor].numpy()
        iou_t = s["iou"][tumor].numpy()
        hd = s["hd95"].numpy()
        hd = hd[np.isfinite(hd)]
        n, n_tumor = len(tumor), int(tumor.sum())
        n_normal = n - n_tumor
        rng = np.random.default_rng([seed, n])
        row: dict[str, Any] = {
            **result_head(pred, "segmenter"),
            "dice": metric_value(dice_t.mean(), DIGITS) if n_tumor else None,
            "dice_ci": bootstrap_ci(dice_t, p.bootstrap, p.confidence, rng, DIGITS),
            "iou": metric_value(iou_t.mean(), DIGITS) if n_tumor else None,
            "iou_ci": bootstrap_ci(iou_t, p.bootstrap, p.confidence, rng, DIGITS),
            "hd95": metric_value(hd.mean(), DIGITS) if len(hd) else None,
            "correct_at_0.5": int((s["dice"] >= 0.5).sum()),
            "n_test": n,
            "dice_all": metric_value(s["dice"].mean().item(), DIGITS) if n else None,
            "detection_sensitivity": metric_value(float((detected & tumor).sum()) / n_tumor, DIGITS)
            if n_tumor
            else None,
            "detection_specificity": metric_value(
                float((~detected & ~tumor).sum()) / n_normal, DIGITS
            )
            if n_normal
            else None,
            "n_tumor": n_tumor,
            "hd95_n": len(hd),
            "plugin": pred.plugin,
            # masks from a localising classifier (no mask was seen in training)
            "unsupervised": bool(pred.extra.get("unsupervised", False)),
        }
        return row, s


def _arrays(pred: Predictions) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities, masks), both ``[N, 1, H, W]`` float on the CPU."""
    import torch

    prob = torch.as_tensor(pred.output).detach().cpu().float()
    target = torch.as_tensor(pred.target).detach().cpu().float()
    if prob.ndim == 3:
        prob = prob.unsqueeze(1)
    if target.ndim == 3:
        target = target.unsqueeze(1)
    if prob.shape != target.shape or prob.ndim != 4 or prob.shape[1] != 1:
        raise DataError(
            f"segmentation result {pred.model!r}: output {tuple(prob.shape)} does not match "
            f"the test masks {tuple(target.shape)} (both must be [N, 1, H, W])"
        )
    if prob.numel() and not torch.isfinite(prob).all():
        raise DataError(f"segmentation result {pred.model!r}: the output has NaN or inf")
    return prob, target


def _cases(score: dict[str, Any]) -> list[tuple[str, int]]:
    """(best, median, worst) slice indices by Dice, among tumour slices when there are any."""
    import torch

    dice = score["dice"]
    pool = score["tumor"].nonzero().reshape(-1)
    if len(pool) == 0:
        pool = torch.arange(len(dice))
    if len(pool) == 0:
        return []
    order = pool[torch.argsort(dice[pool], descending=True, stable=True)]
    return [("best", int(order[0])), ("median", int(order[len(order) // 2])),
            ("worst", int(order[-1]))]  # fmt: skip


def _overlay_figures(
    inputs: EvalInputs,
    results: list[Predictions],
    rows: list[dict[str, Any]],
    scores: list[dict[str, Any]],
    run: RunContext,
    threshold: float = 0.5,
) -> None:
    """Image with true (green) and predicted (red) contours: best, median, worst per row."""
    plt = pyplot()
    from matplotlib.lines import Line2D

    images = inputs.test.images
    thr = 0.5  # contours of binary masks
    for start in range(0, len(rows), OVERLAY_ROWS_PER_FIGURE):
        chunk = list(range(start, min(len(rows), start + OVERLAY_ROWS_PER_FIGURE)))
        fig, axes = plt.subplots(len(chunk), 3, figsize=(7.2, 2.5 * len(chunk)), squeeze=False)
        for r, k in enumerate(chunk):
            prob, target = _arrays(results[k])
            pred = prob > threshold
            cases = _cases(scores[k])
            for c in range(3):
                ax = axes[r, c]
                ax.axis("off")
                if c >= len(cases):
                    continue
                what, i = cases[c]
                if len(images) == len(target):
                    ax.imshow(images[i, 0].numpy(), cmap="gray", vmin=0, vmax=1)
                else:  # no matching images: show the true mask as the background
                    ax.imshow(target[i, 0].numpy(), cmap="gray", vmin=0, vmax=1)
                if target[i, 0].any():
                    ax.contour(target[i, 0].numpy(), levels=[thr], colors="lime", linewidths=1)
                if pred[i, 0].any():
                    ax.contour(pred[i, 0].float().numpy(), levels=[thr], colors="red",
                               linewidths=1)  # fmt: skip
                title = f"{what}: Dice {float(scores[k]['dice'][i]):.2f}"
                if c == 0:
                    title = result_label(rows[k], "segmenter") + "\n" + title
                ax.set_title(title, fontsize=7)
        handles = [Line2D([], [], color="lime", label="true mask"),
                   Line2D([], [], color="red", label="predicted mask")]  # fmt: skip
        fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=7, frameon=False)
        fig.suptitle("segmentation on the real test part (best / median / worst tumour slice)",
                     fontsize=8)  # fmt: skip
        fig.tight_layout(rect=(0, 0.03, 1, 0.97))
        suffix = (
            ""
            if len(rows) <= OVERLAY_ROWS_PER_FIGURE
            else f"-{start // OVERLAY_ROWS_PER_FIGURE + 1}"
        )
        run.save_figure(
            fig,
            f"overlays{suffix}",
            caption="Predicted (red) and true (green) tumour outlines on the best, median and "
            "worst real test slice of each model. Look for: red hugging green on the median "
            "slice; on the worst slice, whether the miss is a small tumour or a false alarm.",
        )


def _fraction_figure(rows: list[dict[str, Any]], run: RunContext) -> None:
    """Augmentation under scarcity: Dice (tumour slices) against the real fraction."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    series: dict[tuple[str, str, str | None], list[dict[str, Any]]] = {}
    for row in rows:
        if row["dice"] is None:
            continue
        key = (row["segmenter"], row["train_on"], row["generator"])
        series.setdefault(key, []).append(row)
    for (seg, train_on, gen), pts in series.items():
        label = f"{seg} · {train_on}" + (f" {gen}" if gen else "")
        if train_on == "synthetic":
            for pt in pts:
                ax.axhline(pt["dice"], ls="--", lw=1, color="grey", label=label + " (no real)")
            continue
        pts = sorted(pts, key=lambda r: r["real_fraction"])
        x = [p["real_fraction"] for p in pts]
        y = [p["dice"] for p in pts]
        lo = [p["dice"] - (p["dice_ci"][0] if p["dice_ci"][0] is not None else p["dice"])
              for p in pts]  # fmt: skip
        hi = [(p["dice_ci"][1] if p["dice_ci"][1] is not None else p["dice"]) - p["dice"]
              for p in pts]  # fmt: skip
        ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, lw=1.2, label=label)
    ax.set_xlabel("fraction of the real train part used")
    ax.set_ylabel("Dice on real test tumour slices")
    ax.set_ylim(0, 1)
    ax.set_title("augmentation under scarcity (95% bootstrap CIs)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    run.save_figure(
        fig,
        "dice-vs-real-fraction",
        caption="Dice on the real test tumour slices against the share of the real training "
        "set used. Look for: real + synthetic above real alone at small shares.",
    )


@hookimpl
def synthmri_register_evaluators(register: Any) -> None:
    """Register the segmentation evaluator."""
    register(SegmentationEvaluator)
