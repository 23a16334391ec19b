"""The privacy evaluator and the memorisation rule it shares with image_quality (32 px)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from synthmri.core.interfaces import ImageSet
from synthmri.core.training import RunContext
from synthmri.plugins.evaluators.image_quality import FeatureExtractor
from synthmri.plugins.evaluators.privacy import PrivacyEvaluator, find_memorized, nearest_ssim


def test_ssim_matches_monai_and_pair_guard(parts: dict[str, ImageSet]) -> None:
    from monai.metrics import SSIMMetric

    q, pool = parts["fresh"].images[:6], parts["train"].images
    best, idx = nearest_ssim(q, pool)
    metric = SSIMMetric(spatial_dims=2, data_range=1.0, win_size=7, reduction="none")
    assert torch.allclose(best, metric(q, pool[idx]).reshape(-1), atol=1e-5)
    # brute-force check of the argmax for one query
    one = metric(q[:1].expand(len(pool), -1, -1, -1), pool).reshape(-1)
    assert int(idx[0]) == int(one.argmax())
    # the max_pairs guard (L2 pre-selection) still finds exact copies
    copies = pool[[3, 50, 77]]
    best_g, idx_g = nearest_ssim(copies, pool, max_pairs=30)
    assert idx_g.tolist() == [3, 50, 77] and torch.allclose(best_g, torch.ones(3))


def test_find_memorized_flags_copies_not_fresh_images(
    parts: dict[str, ImageSet], random_features: FeatureExtractor
) -> None:
    ex = random_features
    train, test, fresh = parts["train"].images, parts["test"].images, parts["fresh"].images
    ft, fh = ex(train), ex(test)
    copies = train[:40]
    res_copy = find_memorized(
        copies, train, synthetic_features=ex(copies), train_features=ft, reference_features=fh
    )
    res_new = find_memorized(
        fresh, train, synthetic_features=ex(fresh), train_features=ft, reference_features=fh
    )
    assert res_copy.fraction == 1.0
    assert res_new.fraction <= 0.05
    assert float(res_copy.ratio.max()) == 0.0
    assert float(res_new.ratio.median()) > 0.5
    # SSIM rule alone (no features) still catches copies
    assert find_memorized(copies, train).fraction == 1.0


def test_aligned_rule_flags_mirrored_copies(
    parts: dict[str, ImageSet], make_inputs, tmp_path: Path
) -> None:
    train, fresh = parts["train"].images, parts["fresh"].images
    mirrored = train[:40].flip(3)
    # SSIM sees a mirrored copy as another image
    assert find_memorized(mirrored, train, aligned_threshold=2.0).fraction == 0.0
    res = find_memorized(mirrored, train, aligned_threshold=0.93)
    assert res.fraction == 1.0 and res.nn_aligned_index.tolist() == list(range(40))
    assert find_memorized(fresh, train, aligned_threshold=0.93).fraction == 0.0
    # the evaluator applies it by default and says how many it flagged
    synthetic = {"mirror": replace(parts["train"].subset(range(40)), images=mirrored)}
    rows = PrivacyEvaluator({"features": "random"}).evaluate(
        make_inputs(synthetic), RunContext(tmp_path, seed=0)
    )["privacy"]
    assert all(r["memorized_fraction"] == 1.0 == r["aligned_copy_fraction"] for r in rows)


def test_closest_pairs_show_aligned_copies_beside_their_original(
    parts: dict[str, ImageSet], make_inputs, tmp_path: Path
) -> None:
    # a mirrored copy is far from everything by SSIM: the figure shows it beside the
    # training image the aligned comparison matched, marked as a copy
    shown: list = []

    class Capture(RunContext):
        def save_figure(self, fig, name, caption=None):  # type: ignore[no-untyped-def]
            shown.append(fig)
            return super().save_figure(fig, name, caption)

    train = parts["train"]
    mirrored = replace(train.subset(range(4)), images=train.images[:4].flip(3))
    synthetic = {"mirror": mirrored, "fresh": parts["fresh"].subset(range(4))}
    PrivacyEvaluator({"features": "random", "figure_pairs": 4}).evaluate(
        make_inputs(synthetic), Capture(tmp_path, seed=0)
    )
    titles = [[ax.get_title() for ax in fig.axes[:4]] for fig in shown]
    assert all(t.startswith("aligned") and t.endswith("COPY") for t in titles[0])
    assert not any(t.endswith("COPY") for t in titles[1])
    # the bottom row is the matched original: the mirror of the top row's image
    for j, ax in enumerate(shown[0].axes[4:8]):
        original = torch.as_tensor(ax.get_images()[0].get_array())
        top = torch.as_tensor(shown[0].axes[j].get_images()[0].get_array())
        assert torch.allclose(original, top.flip(1))


def test_privacy_evaluator_fails_a_copier_loudly(
    parts: dict[str, ImageSet], make_inputs, tmp_path: Path
) -> None:
    train = parts["train"]
    synthetic = {
        "copier": train.subset(range(40)),
        "fresh": parts["fresh"],
    }
    run = RunContext(tmp_path, seed=0)
    ev = PrivacyEvaluator({"features": "random"})
    rows = ev.evaluate(make_inputs(synthetic), run)["privacy"]
    assert {r["generator"] for r in rows} == {"copier", "fresh"}
    keys = {
        "generator",
        "class",
        "memorized_fraction",
        "nn_ssim_mean",
        "nn_ssim_max",
        "nn_distance_ratio_median",
        "n_synthetic",
    }
    for r in rows:
        assert keys <= set(r)
        if r["generator"] == "copier":
            assert r["memorized_fraction"] == 1.0 and r["nn_ssim_max"] == pytest.approx(1.0)
        else:
            assert r["memorized_fraction"] <= 0.05 and r["nn_ssim_max"] < 0.95
    assert sum(r["n_synthetic"] for r in rows if r["generator"] == "copier") == 40
    warnings = [n for n in run.notes if "WARNING" in n]
    assert len(warnings) == 1 and "copier" in warnings[0]
    figures = [p.name for p in run.figures]
    assert any("privacy" in f and "copier" in f for f in figures)
    assert all(p.is_file() for p in run.figures)


def test_include_test_flags_copies_of_test_images(parts: dict[str, ImageSet], make_inputs) -> None:
    test_copier = {"test_copier": parts["test"].subset(range(20))}
    inputs = make_inputs(test_copier)
    params = {"features": "random", "figure_pairs": 0}
    only_train = PrivacyEvaluator(params).evaluate(inputs, RunContext())["privacy"]
    with_test = PrivacyEvaluator({**params, "include_test": True}).evaluate(inputs, RunContext())
    assert all(r["memorized_fraction"] <= 0.1 for r in only_train)
    for r in with_test["privacy"]:
        assert r["memorized_fraction"] == 1.0 and r["nn_ssim_max"] == pytest.approx(1.0)
