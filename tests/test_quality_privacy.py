"""image_quality and privacy evaluators, their metrics, and ``synthmri compare`` (32 px)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from synthmri.core.interfaces import EvalInputs, ImageSet
from synthmri.core.phantoms import make_phantoms, write_phantoms
from synthmri.core.training import RunContext
from synthmri.plugins.evaluators import _features
from synthmri.plugins.evaluators._features import FeatureParams, build_extractor
from synthmri.plugins.evaluators.image_quality import (
    ImageQualityEvaluator,
    _trace_term_cov,
    _trace_term_gram,
    frechet_distance,
    kernel_inception_distance,
    ms_ssim_diversity,
    precision_recall,
    quality_metrics,
)
from synthmri.plugins.evaluators.privacy import PrivacyEvaluator, find_memorized, nearest_ssim

SIZE = 32


@pytest.fixture(scope="module")
def parts() -> dict[str, ImageSet]:
    """Real train / test phantoms, and fresh phantoms drawn with another seed."""
    real = make_phantoms(150, SIZE, seed=0)
    return {
        "train": real.subset(range(100)),
        "test": real.subset(range(100, 150)),
        "fresh": make_phantoms(40, SIZE, seed=123),
    }


@pytest.fixture(scope="module")
def random_features(parts: dict[str, ImageSet]) -> _features.FeatureExtractor:
    ex = build_extractor(FeatureParams(features="random"), parts["train"], RunContext())
    assert ex is not None
    return ex


def _inputs(parts: dict[str, ImageSet], synthetic: dict[str, ImageSet]) -> EvalInputs:
    empty = parts["train"].subset([])
    return EvalInputs(train=parts["train"], val=empty, test=parts["test"], synthetic=synthetic)


def _like(images: torch.Tensor, template: ImageSet) -> ImageSet:
    """``images`` labelled like the first ``len(images)`` items of ``template``."""
    n = images.shape[0]
    return ImageSet(
        images=images, labels=template.labels[:n], class_names=list(template.class_names)
    )


# ----------------------------------------------------------------------------- hand checks


def test_fid_matches_hand_computation() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 6, generator=g, dtype=torch.float64)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0, 1.0], dtype=torch.float64)
    assert frechet_distance(x, x + shift) == pytest.approx(float(shift.pow(2).sum()), rel=1e-8)
    # B = 2X (X centred): |0|^2 + Tr(S + 4S - 2 (4 S^2)^1/2) = Tr(S)
    xc = x - x.mean(0)
    trace = float(torch.cov(xc.T).trace())
    assert frechet_distance(xc, 2 * xc) == pytest.approx(trace, rel=1e-6)
    # rank-deficient covariances (fewer items than dimensions) stay finite and >= 0
    few = torch.randn(5, 50, generator=g, dtype=torch.float64)
    assert 0 <= frechet_distance(few, few + 0.1) < math.inf
    # the Gram (few images) and covariance (many images) routes agree
    a = torch.randn(30, 40, generator=g, dtype=torch.float64)
    b = 1.3 * torch.randn(25, 40, generator=g, dtype=torch.float64) + 0.2
    assert _trace_term_gram(a, b) == pytest.approx(_trace_term_cov(a, b), rel=1e-6)


def test_kid_matches_hand_computation() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.randn(5, 3, generator=g, dtype=torch.float64)
    b = torch.randn(5, 3, generator=g, dtype=torch.float64) + 0.7

    def k(u: torch.Tensor, v: torch.Tensor) -> float:
        return float((u @ v / 3 + 1) ** 3)

    m = 5
    xx = sum(k(a[i], a[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(b[i], b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(a[i], b[j]) for i in range(m) for j in range(m)) / (m * m)
    kid, std = kernel_inception_distance(a, b, subsets=10, subset_size=5)
    assert kid == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    assert std == 0.0  # one subset covers both sets
    # identical distributions: unbiased MMD near 0; subsets give a spread
    big = torch.randn(600, 4, generator=g, dtype=torch.float64)
    kid0, std0 = kernel_inception_distance(big[:300], big[300:], subsets=20, subset_size=100)
    assert abs(kid0) < 0.05 and std0 > 0


def test_precision_recall_extremes() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(50, 4, generator=g, dtype=torch.float64)
    assert precision_recall(x, x) == (1.0, 1.0)
    assert precision_recall(x, x + 100) == (0.0, 0.0)
    # a collapsed set (all near one real point) is precise but has no recall
    p, r = precision_recall(x, x[:1] + 1e-3 * torch.randn(50, 4, generator=g, dtype=torch.float64))
    assert p == 1.0 and r < 0.2


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


def test_ms_ssim_works_at_32_and_64_px(parts: dict[str, ImageSet]) -> None:
    x32 = parts["train"].images[:20]
    x64 = F.interpolate(x32, size=(64, 64), mode="bilinear")
    for x in (x32, x64):
        v = ms_ssim_diversity(x, pairs=30)
        assert 0 < v < 1
        assert ms_ssim_diversity(x[:1].repeat(5, 1, 1, 1), pairs=10) == pytest.approx(1.0, abs=1e-4)


# ----------------------------------------------------------------------------- phantoms


def test_real_floor_small_against_bad_generators(
    parts: dict[str, ImageSet], random_features: _features.FeatureExtractor
) -> None:
    ex = random_features
    train, test = parts["train"].images, parts["test"].images
    noise = torch.rand(50, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    blurred = F.avg_pool2d(test, 5, stride=1, padding=2, count_include_pad=False)
    ft, fh = ex(train), ex(test)

    def metrics(images: torch.Tensor) -> dict:
        return quality_metrics(
            train,
            images,
            test,
            ref_features=ft,
            cand_features=ex(images),
            holdout_features=fh,
            kid_subsets=20,
            ms_ssim_pairs=50,
        )

    real = metrics(parts["fresh"].images)
    assert real["fid_real_floor"] == pytest.approx(metrics(test)["fid"])  # floor = test vs train
    m_noise, m_blur = metrics(noise), metrics(blurred)
    for bad in (m_noise, m_blur):
        assert bad["fid"] > 1.5 * real["fid_real_floor"]
        assert bad["kid"] > 5 * max(real["kid_real_floor"], 1e-3)
        assert bad["fid"] > 1.5 * real["fid"]
    assert m_noise["intensity_wasserstein"] > 3 * real["intensity_wasserstein"]


def test_collapsed_generator_scores_worse(
    parts: dict[str, ImageSet], random_features: _features.FeatureExtractor
) -> None:
    ex = random_features
    train, test = parts["train"].images, parts["test"].images
    g = torch.Generator().manual_seed(3)
    collapsed = (test[:1] + 0.01 * torch.randn(50, 1, SIZE, SIZE, generator=g)).clamp(0, 1)
    ft, fh = ex(train), ex(test)
    m_col = quality_metrics(
        train,
        collapsed,
        test,
        ref_features=ft,
        cand_features=ex(collapsed),
        holdout_features=fh,
        kid_subsets=10,
    )
    m_real = quality_metrics(
        train, test, test, ref_features=ft, cand_features=fh, holdout_features=fh, kid_subsets=10
    )
    assert m_col["recall"] < 0.5 * m_real["recall"]
    assert m_col["ms_ssim_synthetic"] > m_real["ms_ssim_synthetic"] + 0.2  # less diverse
    assert m_col["ms_ssim_synthetic"] > m_col["ms_ssim_real"]


def test_find_memorized_flags_copies_not_fresh_images(
    parts: dict[str, ImageSet], random_features: _features.FeatureExtractor
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


def test_privacy_evaluator_fails_a_copier_loudly(
    parts: dict[str, ImageSet], tmp_path: Path
) -> None:
    train = parts["train"]
    synthetic = {
        "copier": train.subset(range(40)),
        "fresh": parts["fresh"],
    }
    run = RunContext(tmp_path, seed=0)
    ev = PrivacyEvaluator({"features": "random"})
    rows = ev.evaluate(_inputs(parts, synthetic), run)["privacy"]
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


def test_image_quality_evaluator_rows(parts: dict[str, ImageSet]) -> None:
    train = parts["train"]
    noise = torch.rand(40, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    synthetic = {
        "fresh": parts["fresh"],
        "noise": _like(noise, parts["fresh"]),
        "copier": train.subset(range(40)),
    }
    ev = ImageQualityEvaluator({"features": "random", "ms_ssim_pairs": 40, "kid_subsets": 10})
    rows = ev.evaluate(_inputs(parts, synthetic), RunContext())["image_quality"]
    keys = {
        "generator",
        "class",
        "fid",
        "kid",
        "kid_std",
        "fid_real_floor",
        "kid_real_floor",
        "features",
        "ms_ssim_synthetic",
        "ms_ssim_real",
        "precision",
        "recall",
        "intensity_wasserstein",
        "memorized_fraction",
        "n_synthetic",
        "n_real",
    }
    by = {(r["generator"], r["class"]): r for r in rows}
    assert set(by) == {(g, c) for g in synthetic for c in ("normal", "tumor")}
    for r in rows:
        assert keys <= set(r) and r["features"] == "random"
        k = train.class_names.index(r["class"])
        assert r["n_real"] == int((train.labels == k).sum())
        assert r["n_real_floor"] == int((parts["test"].labels == k).sum())
    for c in ("normal", "tumor"):
        assert by[("noise", c)]["fid"] > 1.5 * by[("fresh", c)]["fid"]
        assert by[("copier", c)]["memorized_fraction"] == 1.0
        assert by[("fresh", c)]["memorized_fraction"] <= 0.1
    json.dumps(rows, allow_nan=False)  # plain, finite values


def test_inception_absent_skips_with_a_note(
    parts: dict[str, ImageSet], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    run = RunContext()
    ev = ImageQualityEvaluator({"features": "inception"})
    out = ev.evaluate(_inputs(parts, {"fresh": parts["fresh"]}), run)
    assert out == {"image_quality": []}
    assert any(
        "inception_v3_google-0cc3c7bd.pth" in n and str(tmp_path / "hub") in n for n in run.notes
    )


def test_domain_features_train_on_real_train_only(parts: dict[str, ImageSet]) -> None:
    from synthmri.core.errors import PluginError
    from synthmri.core.plugins import get_plugin

    try:
        get_plugin("classifier", "resnet")
    except PluginError:
        pytest.skip("the resnet classifier plugin is not available")
    _features.clear_cache()
    params = FeatureParams(features="domain", domain_epochs=1)
    train = parts["train"].subset(range(48))
    ex = build_extractor(params, train, RunContext(seed=0), seed=0)
    assert ex is not None and ex.name == "domain-resnet"
    assert ex.info["n_train"] == len(train) and ex.info["task"] == "classes"
    f = ex(parts["test"].images)
    assert f.shape == (len(parts["test"]), 512) and torch.isfinite(f).all()
    # cached: the privacy evaluator of the same run reuses the trained extractor
    assert build_extractor(params, train, RunContext(seed=0), seed=0) is ex
    # unlabelled data: a rotation pretext task
    unlabelled = ImageSet(images=parts["train"].images[:16])
    ex2 = build_extractor(params, unlabelled, RunContext(seed=0), seed=0)
    assert ex2 is not None and ex2.info["task"] == "rotation pretext"
    _features.clear_cache()


# ----------------------------------------------------------------------------- compare CLI


def _cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    from synthmri.cli import main

    monkeypatch.setattr(sys, "argv", ["synthmri", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return int(exc.value.code or 0)


def test_compare_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    real, synth, empty = tmp_path / "real", tmp_path / "synth", tmp_path / "empty"
    write_phantoms(real, 40, SIZE, seed=0)
    write_phantoms(synth, 24, SIZE, seed=5)
    empty.mkdir()
    capsys.readouterr()
    code = _cli(
        monkeypatch,
        "compare",
        str(real),
        str(synth),
        "--features",
        "random",
        "--size",
        str(SIZE),
        "--json",
    )
    out = capsys.readouterr().out
    assert code == 0
    data = json.loads(out)
    assert data["features"] == "random"
    assert {r["class"] for r in data["rows"]} == {"normal", "tumor"}
    for r in data["rows"]:
        assert r["fid"] is not None and r["fid_real_floor"] is not None
        assert 0 <= r["memorized_fraction"] <= 1 and r["n_synthetic"] == 12
    # a plain folder of images (no class folders) is one class
    flat = tmp_path / "flat"
    flat.mkdir()
    for png in synth.glob("*/*.png"):
        if not png.stem.endswith("_mask"):
            (flat / png.name).write_bytes(png.read_bytes())
    assert (
        _cli(
            monkeypatch,
            "compare",
            str(real),
            str(flat),
            "--features",
            "random",
            "--size",
            str(SIZE),
            "--json",
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["class"] for r in rows] == ["all"] and rows[0]["n_synthetic"] == 24
    assert _cli(monkeypatch, "compare", str(real), str(empty), "--features", "random") == 2
    assert "error" in capsys.readouterr().err
    assert _cli(monkeypatch, "compare", str(real), str(synth), "--features", "clip") == 2
