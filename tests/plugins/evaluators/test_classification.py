"""The classification evaluator: metrics against scikit-learn, bootstrap intervals, figures."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from synthmri import get_plugin
from synthmri.core.interfaces import EvalInputs, ImageSet, Predictions
from synthmri.core.phantoms import make_phantoms
from synthmri.core.training import RunContext
from synthmri.plugins.evaluators.classification import (
    METRICS,
    ClassificationEvaluator,
    positive_class,
)


@pytest.fixture(scope="module")
def small() -> ImageSet:
    return make_phantoms(12, 32, seed=0)


def _example(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and informative-but-imperfect probabilities, rounded so some scores tie."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.2
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    p = np.round(p, 2)
    p[:, -1] = 1 - p[:, :-1].sum(1)
    return y, p


def _pred(y: np.ndarray, p: np.ndarray, names: list[str], **kw: object) -> Predictions:
    base = dict(task="classify", model="resnet", plugin="resnet", generator="dcgan",
                train_on="mixed", real_fraction=0.5, n_train=123)  # fmt: skip
    base.update(kw)
    return Predictions(target=torch.from_numpy(y), output=torch.from_numpy(p).float(),
                       class_names=names, **base)  # type: ignore[arg-type]  # fmt: skip


def _evaluate(preds: list[Predictions], data: ImageSet, out: Path | None = None, **params):
    inputs = EvalInputs(train=data, val=data, test=data, predictions=preds, seed=0)
    run = RunContext(out, device="cpu")
    return ClassificationEvaluator(params).evaluate(inputs, run)["classification"], run


def test_binary_metrics_equal_scikit_learn(small: ImageSet, tmp_path: Path) -> None:
    y, p = _example(240, 2, seed=1)
    p32 = torch.from_numpy(p).float().double().numpy()  # what the evaluator sees
    rows, run = _evaluate([_pred(y, p, ["normal", "tumor"])], small, tmp_path)
    (row,) = rows
    pred = p32.argmax(1)
    assert row["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert row["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert row["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert row["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert row["auc"] == pytest.approx(skm.roc_auc_score(y, p32[:, 1]))
    tn = int(((y == 0) & (pred == 0)).sum())  # specificity by hand
    fp = int(((y == 0) & (pred == 1)).sum())
    assert row["specificity"] == pytest.approx(tn / (tn + fp))
    assert row["positive_class"] == "tumor"
    expected_keys = {"classifier", "generator", "train_on", "real_fraction", "n_train", "n_test"}
    assert expected_keys <= set(row)
    assert (row["classifier"], row["generator"], row["train_on"]) == ("resnet", "dcgan", "mixed")
    assert (row["real_fraction"], row["n_train"], row["n_test"]) == (0.5, 123, 240)
    for m in METRICS:
        lo, hi = row[f"{m}_ci"]
        assert lo <= row[m] <= hi, m
        assert hi - lo > 0, m
    names = [f.name for f in run.figures]
    assert any("confusion" in n for n in names) and any("roc" in n for n in names)
    assert all(f.is_file() for f in run.figures)


def test_positive_class_is_the_tumour_class(small: ImageSet) -> None:
    assert positive_class(["yes", "no"], 2) == 0
    assert positive_class(["Normal", "Tumour"], 2) == 1
    assert positive_class(["healthy", "sick"], 2) == 1  # else the last class
    y, p = _example(150, 2, seed=2)
    p32 = torch.from_numpy(p).float().double().numpy()
    (row,), _ = _evaluate([_pred(y, p, ["yes", "no"])], small, figures=False)
    pred = p32.argmax(1)
    assert row["positive_class"] == "yes"
    assert row["precision"] == pytest.approx(skm.precision_score(y, pred, pos_label=0))
    assert row["recall"] == pytest.approx(skm.recall_score(y, pred, pos_label=0))
    assert row["specificity"] == pytest.approx(skm.recall_score(y, pred, pos_label=1))
    assert row["auc"] == pytest.approx(skm.roc_auc_score(y == 0, p32[:, 0]))


def test_multiclass_macro_metrics_equal_scikit_learn(small: ImageSet) -> None:
    y, p = _example(300, 3, seed=3)
    p32 = torch.from_numpy(p).float().double().numpy()
    (row,), _ = _evaluate([_pred(y, p, ["glioma", "meningioma", "pituitary"])], small,
                          figures=False)  # fmt: skip
    pred = p32.argmax(1)
    assert row["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert row["precision"] == pytest.approx(skm.precision_score(y, pred, average="macro"))
    assert row["recall"] == pytest.approx(skm.recall_score(y, pred, average="macro"))
    assert row["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert row["auc"] == pytest.approx(skm.roc_auc_score(y, p32, multi_class="ovr"))
    cm = skm.confusion_matrix(y, pred)
    spec = [
        (cm.sum() - cm[c].sum() - cm[:, c].sum() + cm[c, c]) / (cm.sum() - cm[c].sum())
        for c in range(3)
    ]
    assert row["specificity"] == pytest.approx(np.mean(spec))
    assert row["positive_class"] is None


def test_bootstrap_is_seeded_and_fast(small: ImageSet) -> None:
    y, p = _example(300, 2, seed=4)
    preds = [_pred(y, p, ["normal", "tumor"])]
    start = time.perf_counter()
    (a,), _ = _evaluate(preds, small, figures=False)
    elapsed = time.perf_counter() - start
    (b,), _ = _evaluate(preds, small, figures=False)
    assert a == b
    assert elapsed < 1.0, f"1000 resamples of 300 items took {elapsed:.2f} s"
    (c,), _ = _evaluate(preds, small, figures=False, bootstrap=0)
    assert c["auc"] == a["auc"] and c["auc_ci"] == [None, None]


def test_gain_over_real_has_a_paired_interval(small: ImageSet) -> None:
    y, p = _example(240, 2, seed=5)
    better = p.copy()
    wrong = np.flatnonzero(p.argmax(1) != y)[:15]  # 15 errors of the real row put right
    better[wrong] = better[wrong][:, ::-1]
    names = ["normal", "tumor"]
    preds = [
        _pred(y, p, names, generator=None, train_on="real"),  # 0.5 real
        _pred(y, p, names, model="other", generator=None, train_on="real"),  # same predictions
        _pred(y, better, names, generator="gan", train_on="mixed"),  # 0.5 real + gan
        _pred(y, better, names, generator="gan", train_on="mixed", real_fraction=0.2),
        _pred(y, p, names, generator=None, train_on="real", real_fraction=1.0),
        _pred(y, better, names, generator="gan", train_on="synthetic", real_fraction=0.0),
    ]
    rows, _ = _evaluate(preds, small, figures=False)
    real, other, mixed, lone_mixed, full, synthetic = rows
    assert real["accuracy_ci"] == other["accuracy_ci"]  # the same resamples for every row
    assert "accuracy_gain" not in real and "accuracy_gain" not in lone_mixed  # no reference
    assert mixed["accuracy_gain"] == pytest.approx(15 / 240)
    assert mixed["accuracy_gain"] == pytest.approx(mixed["accuracy"] - real["accuracy"])
    lo, hi = mixed["accuracy_gain_ci"]
    assert 0 < lo < 15 / 240 < hi  # only gains: paired, the interval excludes 0 ...
    assert real["accuracy_ci"][1] > mixed["accuracy_ci"][0]  # ... where the rows' overlap
    # alone, the synthetic set is compared with the largest real fraction (TSTR - TRTR)
    assert synthetic["accuracy_gain"] == pytest.approx(synthetic["accuracy"] - full["accuracy"])
    seeded = [_pred(y, p, names, generator=None, train_on="real", seed=0),
              _pred(y, better, names, generator="gan", seed=1)]  # fmt: skip
    rows, _ = _evaluate(seeded, small, figures=False)
    assert "accuracy_gain" not in rows[1]  # another seed's real row is no reference


def test_undefined_auc_is_none(small: ImageSet) -> None:
    y = np.ones(20, dtype=np.int64)  # a test part with one class only
    p = np.tile([0.3, 0.7], (20, 1))
    (row,), _ = _evaluate([_pred(y, p, ["normal", "tumor"])], small, figures=False)
    assert row["auc"] is None and row["auc_ci"] == [None, None]
    assert row["recall"] == 1.0 and row["accuracy"] == 1.0


def test_evaluator_is_registered() -> None:
    assert get_plugin("evaluator", "classification") is ClassificationEvaluator
    assert ClassificationEvaluator.requires == ("classification",)
