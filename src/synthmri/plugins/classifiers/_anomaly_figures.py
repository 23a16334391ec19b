"""The figures of the reconstruction-based anomaly classifiers (``_anomaly.py``).

``validation_figures``: TP / FP / TN / FN examples of the validation part and the score
histogram (saved by ``fit``); ``case_figure``: the best and worst cases of a labelled set.
Each takes the classifier as its first argument (the base class's methods call them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from synthmri.core.errors import DataError

if TYPE_CHECKING:
    from pathlib import Path

    from torch import Tensor

    from synthmri.core.interfaces import ImageSet
    from synthmri.core.training import RunContext
    from synthmri.plugins.classifiers._anomaly import ReconstructionAnomaly

__all__ = ["case_figure", "validation_figures"]


def validation_figures(
    self: ReconstructionAnomaly, val: ImageSet, errors: Tensor, fg: Tensor, run: RunContext
) -> None:
    """TP / FP / TN / FN examples of the validation part, and the score histogram."""
    from synthmri.core.artifacts import pyplot

    plt = pyplot()
    assert val.labels is not None
    result = self.score_errors(errors, fg)
    masks = self._masks(result)
    truth = (val.labels != self.normal_index).numpy()
    pred = result.scores > self.score_threshold
    cases = {
        "true positive": np.flatnonzero(truth & pred),
        "false positive": np.flatnonzero(~truth & pred),
        "true negative": np.flatnonzero(~truth & ~pred),
        "false negative": np.flatnonzero(truth & ~pred),
    }
    picks = {k: int(v[np.argmax(result.scores[v])]) if k.startswith("true p") or
             k.startswith("false p") else int(v[np.argmin(result.scores[v])])
             for k, v in cases.items() if v.size}  # fmt: skip
    index = list(picks.values())
    recon = self.reconstruct(val.images[index]) if index else None
    vmax = float(errors.max()) or 1.0
    fig, axes = plt.subplots(4, 4, figsize=(8.4, 8.8), squeeze=False)
    for r, case in enumerate(cases):
        for c, title in enumerate(("slice", "reconstruction", "error", "clusters")):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
            if c == 0:
                ax.set_ylabel(case, fontsize=9)
        if case not in picks:
            axes[r, 0].text(0.5, 0.5, "none", ha="center", va="center", fontsize=9)
            continue
        i = picks[case]
        j = index.index(i)
        img = val.images[i].mean(0).numpy()
        axes[r, 0].imshow(img, cmap="gray", vmin=0, vmax=1)
        if val.masks is not None and val.masks[i].sum() > 0:
            axes[r, 0].contour(val.masks[i, 0].numpy(), [0.5], colors="lime", linewidths=0.7)
        axes[r, 1].imshow(recon[j].mean(0).numpy(), cmap="gray", vmin=0, vmax=1)  # type: ignore[index]
        axes[r, 2].imshow(errors[i, 0].numpy(), cmap="magma", vmin=0, vmax=vmax)
        axes[r, 3].imshow(img, cmap="gray", vmin=0, vmax=1)
        overlay = np.zeros((*img.shape, 4))
        overlay[result.anomalous[i, 0].numpy()] = (1.0, 0.8, 0.0, 0.6)
        overlay[masks[i, 0].numpy() > 0] = (1.0, 0.0, 0.0, 0.8)
        axes[r, 3].imshow(overlay)
        axes[r, 3].set_xlabel(f"score {result.scores[i]:.4g}", fontsize=8)
    fig.suptitle(
        f"{self.name} ({self.params.method}) on the validation part: threshold "
        f"{self.score_threshold:.4g}; yellow = anomalous pixels, red = largest cluster",
        fontsize=9,
    )
    run.save_figure(
        fig,
        "anomaly-examples",
        caption="Validation slices, their reconstruction, the reconstruction error and the "
        "pixels called anomalous. Look for: error concentrated on the tumour (red) rather "
        "than on the skull edge or everywhere.",
    )

    fig, ax = plt.subplots(figsize=(5, 3))
    bins = np.linspace(result.scores.min(), result.scores.max() + 1e-12, 40)
    ax.hist(result.scores[~truth], bins=bins, alpha=0.6, label="normal (val)")
    if truth.any():
        ax.hist(result.scores[truth], bins=bins, alpha=0.6, label="tumour (val)")
    ax.axvline(self.score_threshold, color="k", linestyle="--", label="threshold")
    ax.set_xlabel(f"anomaly score ({self.params.method})")
    ax.legend(fontsize=8)
    run.save_figure(
        fig,
        "anomaly-scores",
        caption="Anomaly scores of normal and tumour validation slices, with the threshold. "
        "Look for: two separated humps; overlap is where the detector will err.",
    )


def case_figure(
    self: ReconstructionAnomaly, test: ImageSet, run: RunContext, name: str = ""
) -> Path | None:
    """``ReconstructionAnomaly.case_figure``: the best and worst cases of ``test``."""
    from synthmri.core.artifacts import pyplot

    if test.labels is None or len(test) == 0:
        raise DataError(f"{self.name}: case_figure needs a non-empty labelled image set")
    plt = pyplot()
    x = self._images(test.images)
    errors, fg = self.error_maps(x)
    result = self.score_errors(errors, fg)
    detected = self._masks(result)
    scores = result.scores
    tumour = (test.labels != self.normal_index).numpy()
    rows: list[tuple[str, int]] = []
    for label, pool, order in (
        ("best tumour", tumour, -1),
        ("worst tumour", tumour, 1),
        ("best normal", ~tumour, 1),
        ("worst normal", ~tumour, -1),
    ):
        idx = np.flatnonzero(pool)
        if idx.size:
            rows.append((label, int(idx[np.argmin(order * scores[idx])])))
    vmax = max(float(errors.max()), 1e-6)
    unit = "z" if self.pixel_stats is not None else "error"
    fig, axes = plt.subplots(len(rows), 4, figsize=(8.4, 2.2 * len(rows)), squeeze=False)
    for r, (label, i) in enumerate(rows):
        img = x[i].mean(0).numpy()
        truth = (
            test.masks[i, 0].numpy() > 0.5 if test.masks is not None else np.zeros(img.shape, bool)
        )
        pred = detected[i, 0].numpy() > 0.5
        call = "tumour" if scores[i] > self.score_threshold else "normal"
        panels = (
            (f"slice (score {scores[i]:.3g}: {call})", None),
            (f"error map ({unit})", errors[i, 0].numpy()),
            ("detected region", pred),
            ("true mask", truth),
        )
        for c, (title, overlay) in enumerate(panels):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=7)
            if c == 1:
                im = ax.imshow(overlay, cmap="magma", vmin=0, vmax=vmax)
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
                continue
            ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            if c >= 2 and overlay is not None and overlay.any():
                rgba = np.zeros((*img.shape, 4))
                rgba[overlay] = (1.0, 0.0, 0.0, 0.55) if c == 2 else (0.0, 1.0, 0.0, 0.55)
                ax.imshow(rgba)
        axes[r, 0].set_ylabel(label, fontsize=8)
        if truth.any() and (pred.any() or truth.any()):
            dice = 2 * float((pred & truth).sum()) / float(pred.sum() + truth.sum())
            axes[r, 2].set_xlabel(f"Dice {dice:.2f}", fontsize=7)
    fig.suptitle(
        f"{self.name} ({self.params.method}, {self.measure}/{self.normalisation}): best and "
        f"worst test cases; score threshold {self.score_threshold:.3g}",
        fontsize=9,
    )
    return run.save_figure(
        fig,
        name or f"cases-{self.params.method}",
        caption="Best and worst test slices by anomaly score against the label: per slice "
        "the image, the error map, the detected region (red) and the true mask (green). "
        "Look for: a detected region on the tumour, not on the skull rim; a missed tumour "
        "whose error map is flat means the model reconstructs it (a VAE: too wide a network).",
    )
