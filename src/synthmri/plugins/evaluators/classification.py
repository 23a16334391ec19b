"""Classification metrics on the real test part, with bootstrap confidence intervals.

For every classification result: accuracy, precision, recall (sensitivity),
specificity, F1 and ROC AUC. Binary tasks score the tumour class (the class named
tumor / tumour / yes / abnormal / positive, else the last class); more classes give
macro averages and the one-vs-rest AUC. Every metric gets a percentile bootstrap
interval from ``bootstrap`` resamples of the test items, computed for all resamples
at once: a resample is a row of item multiplicities, so confusion counts are one
matrix product and the AUC is the Mann-Whitney statistic over score-sorted weights.
Synthetic and mixed rows also get ``accuracy_gain`` over their real-data row, with a
paired interval (``_common``).
"""

from __future__ import annotations

import math
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
    metric_value,
    result_head,
    result_label,
)

if TYPE_CHECKING:
    from synthmri.core.training import RunContext

__all__ = [
    "METRICS",
    "POSITIVE_NAMES",
    "ClassificationEvaluator",
    "bootstrap_weights",
    "classification_metrics",
    "positive_class",
]

METRICS: tuple[str, ...] = ("accuracy", "precision", "recall", "specificity", "f1", "auc")
POSITIVE_NAMES = frozenset({"tumor", "tumour", "yes", "abnormal", "positive"})


def positive_class(class_names: list[str], n_classes: int) -> int:
    """Index of the tumour class: a name in ``POSITIVE_NAMES``, else the last class."""
    for i, name in enumerate(class_names[:n_classes]):
        if name.strip().lower() in POSITIVE_NAMES:
            return i
    return n_classes - 1


def bootstrap_weights(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``[resamples, n]`` multiplicities of each item in each bootstrap resample."""
    idx = rng.integers(0, n, size=(resamples, n))
    flat = idx + np.arange(resamples)[:, None] * n
    return np.bincount(flat.ravel(), minlength=resamples * n).reshape(resamples, n).astype(float)


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den`` is 0 (scikit-learn's zero_division result)."""
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _weighted_auc(weights: np.ndarray, score: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """ROC AUC per row of item ``weights`` ``[B, N]`` (NaN where a row lacks a class).

    Mann-Whitney: sum over positives of the negative weight scored below them, plus
    half the negative weight tied with them, over (positive weight x negative weight).
    """
    order = np.argsort(score, kind="stable")
    s = score[order]
    w = weights[:, order]
    pos = positive[order].astype(float)
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # groups of tied scores
    w_pos = np.add.reduceat(w * pos, starts, axis=1)
    w_neg = np.add.reduceat(w * (1.0 - pos), starts, axis=1)
    below = np.cumsum(w_neg, axis=1) - w_neg
    u = (w_pos * (below + 0.5 * w_neg)).sum(axis=1)
    n_pos, n_neg = w_pos.sum(axis=1), w_neg.sum(axis=1)
    den = n_pos * n_neg
    return np.where(den > 0, u / np.where(den > 0, den, 1.0), np.nan)


def classification_metrics(
    target: np.ndarray, proba: np.ndarray, weights: np.ndarray, positive: int | None
) -> dict[str, np.ndarray]:
    """Every metric of ``METRICS`` for each row of item ``weights`` ``[B, N]``.

    ``positive`` is the positive class of a binary task, or None for macro averages
    over the classes present (AUC: one-vs-rest over all classes). One row of ones gives
    the plain (point) estimate.
    """
    n, k = proba.shape
    pred = proba.argmax(axis=1)
    cells = np.zeros((n, k * k))
    cells[np.arange(n), target * k + pred] = 1.0
    conf = (weights @ cells).reshape(-1, k, k)  # [B, true, predicted]
    total = conf.sum(axis=(1, 2))
    tp = np.diagonal(conf, axis1=1, axis2=2)  # [B, K]
    fn = conf.sum(axis=2) - tp
    fp = conf.sum(axis=1) - tp
    tn = total[:, None] - tp - fn - fp
    per_class = {
        "precision": _div(tp, tp + fp),
        "recall": _div(tp, tp + fn),
        "specificity": _div(tn, tn + fp),
        "f1": _div(2 * tp, 2 * tp + fp + fn),
    }
    out = {"accuracy": _div(tp.sum(axis=1), total)}
    if positive is not None:
        out.update({m: v[:, positive] for m, v in per_class.items()})
        out["auc"] = _weighted_auc(weights, proba[:, positive], target == positive)
    else:
        # macro over the classes present in the targets or predictions (scikit-learn's rule)
        present = (tp + fn + fp) > 0
        count = present.sum(axis=1)
        out.update({m: _div((v * present).sum(axis=1), count) for m, v in per_class.items()})
        aucs = np.stack([_weighted_auc(weights, proba[:, c], target == c) for c in range(k)])
        out["auc"] = aucs.mean(axis=0)  # NaN when a resample lacks a class
    return out


class ClassificationEvaluator(Evaluator):
    """Accuracy, precision, recall, specificity, F1 and ROC AUC with bootstrap intervals."""

    name = "classification"
    description = "accuracy, precision, recall, specificity, F1, ROC AUC with 95% bootstrap CIs"
    requires = ("classification",)

    class Params(BootstrapParams):
        """classification evaluator params."""

        figures: bool = Field(True, description="draw the confusion-matrix and ROC figures")

    def evaluate(self, inputs: EvalInputs, run: RunContext) -> dict[str, list[dict[str, Any]]]:
        """One row per classification result (see DESIGN.md ``classification``)."""
        results = [p for p in inputs.predictions if p.task == "classify"]
        rows, curves, targets, correct = [], [], [], []
        for pred in results:
            target, proba = _arrays(pred)
            row, curve = self._row(pred, target, proba, inputs.seed)
            rows.append(row)
            curves.append(curve)
            targets.append(target)
            correct.append((proba.argmax(axis=1) == target).astype(float))
        add_gains(rows, correct, targets, "accuracy", "classifier", self.params, inputs.seed)
        if self.params.figures and rows:
            _confusion_figure(rows, curves, run)
            _roc_figure(rows, curves, run)
        return {"classification": rows}

    def _row(
        self, pred: Predictions, target: np.ndarray, proba: np.ndarray, seed: int
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        n, k = proba.shape
        names = list(pred.class_names)[:k]
        names += [str(c) for c in range(len(names), k)]
        positive = positive_class(names, k) if k == 2 else None
        point = classification_metrics(target, proba, np.ones((1, n)), positive)
        row: dict[str, Any] = {**result_head(pred, "classifier"), "n_test": n}
        row.update({m: metric_value(point[m][0], digits=None) for m in METRICS})
        b = self.params.bootstrap
        if b > 0 and n > 0:
            rng = np.random.default_rng([seed, n])
            boot = classification_metrics(target, proba, bootstrap_weights(n, b, rng), positive)
            tail = 100 * (1 - self.params.confidence) / 2
            for m in METRICS:
                vals = boot[m][np.isfinite(boot[m])]
                if len(vals) == 0 or row[m] is None:
                    row[f"{m}_ci"] = [None, None]
                else:
                    lo, hi = np.percentile(vals, [tail, 100 - tail])
                    row[f"{m}_ci"] = [float(lo), float(hi)]
        else:
            row.update({f"{m}_ci": [None, None] for m in METRICS})
        row["plugin"] = pred.plugin
        row["positive_class"] = names[positive] if positive is not None else None
        conf = np.zeros((k, k), dtype=int)
        np.add.at(conf, (target, proba.argmax(axis=1)), 1)
        curve = {"confusion": conf, "names": names, "roc": _roc_points(target, proba, positive)}
        return row, curve


def _arrays(pred: Predictions) -> tuple[np.ndarray, np.ndarray]:
    """(labels [N], probabilities [N, K]) as numpy; a 1-D output is P(positive class)."""
    import torch

    target = torch.as_tensor(pred.target).detach().cpu().long().reshape(-1).numpy()
    proba = torch.as_tensor(pred.output).detach().cpu().double()
    if proba.ndim == 1:
        proba = torch.stack([1 - proba, proba], dim=1)
    k = max(len(pred.class_names), 2)
    if proba.ndim != 2 or proba.shape[0] != len(target) or proba.shape[1] < k:
        raise DataError(
            f"classification result {pred.model!r}: output {tuple(proba.shape)} does not "
            f"match {len(target)} test labels and {k} classes"
        )
    if len(target) and (target.min() < 0 or target.max() >= proba.shape[1]):
        raise DataError(f"classification result {pred.model!r}: a test label is out of range")
    return target, proba.numpy()


def _roc_points(
    target: np.ndarray, proba: np.ndarray, positive: int | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """(fpr, tpr) of the positive class, or the macro average of one-vs-rest curves."""
    from sklearn.metrics import roc_curve

    classes = [positive] if positive is not None else list(range(proba.shape[1]))
    grid = np.linspace(0, 1, 201)
    tprs = []
    for c in classes:
        y = target == c
        if y.all() or not y.any():
            return None
        fpr, tpr, _ = roc_curve(y, proba[:, c])
        if positive is not None:
            return fpr, tpr
        tprs.append(np.interp(grid, fpr, tpr))
    return grid, np.mean(tprs, axis=0)


def _confusion_figure(rows: list[dict], curves: list[dict], run: RunContext) -> None:
    plt = pyplot()
    n = len(rows)
    cols = min(4, n)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(2.8 * cols, 2.7 * nrows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    for ax, row, curve in zip(axes.ravel(), rows, curves, strict=False):
        conf, names = curve["confusion"], curve["names"]
        ax.imshow(conf, cmap="Blues", vmin=0)
        top = conf.max() if conf.size else 0
        for (t, p), v in np.ndenumerate(conf):
            ax.text(p, t, str(v), ha="center", va="center", fontsize=8,
                    color="white" if v > top / 2 else "black")  # fmt: skip
        ticks = range(len(names))
        ax.set_xticks(ticks, names, fontsize=7, rotation=30)
        ax.set_yticks(ticks, names, fontsize=7)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
        acc = row["accuracy"]
        label = result_label(row, "classifier")
        ax.set_title(label + (f"\nacc {acc:.3f}" if acc is not None else ""), fontsize=7)
    fig.suptitle("confusion matrices on the real test part", fontsize=9)
    fig.tight_layout()
    run.save_figure(
        fig,
        "confusion_matrices",
        caption="Counts of true against predicted class on the real test part, one matrix per "
        "model and training set. Look for: a heavy diagonal; a full column means the model "
        "calls (nearly) everything that class, whatever its accuracy says.",
    )


def _roc_figure(rows: list[dict], curves: list[dict], run: RunContext) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    for row, curve in zip(rows, curves, strict=True):
        if curve["roc"] is None:
            continue
        fpr, tpr = curve["roc"]
        auc = row["auc"]
        label = result_label(row, "classifier") + (f" (AUC {auc:.3f})" if auc else "")
        ax.plot(fpr, tpr, lw=1.2, label=label)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    macro = any(r["positive_class"] is None for r in rows)
    ax.set_title("ROC on the real test part" + (" (macro one-vs-rest)" if macro else ""))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(fontsize=6, loc="lower right")
    run.save_figure(
        fig,
        "roc_curves",
        caption="ROC curves on the real test part. Look for: curves toward the top left (AUC "
        "near 1); a curve along the diagonal ranks the test images no better than chance.",
    )


@hookimpl
def synthmri_register_evaluators(register: Any) -> None:
    """Register the classification evaluator."""
    register(ClassificationEvaluator)
