"""The image_quality evaluator and its metrics (32 px); the feature extractors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from synthmri.core.interfaces import ImageSet
from synthmri.core.training import RunContext
from synthmri.plugins.evaluators.image_quality import (
    FeatureExtractor,
    FeatureParams,
    ImageQualityEvaluator,
    build_extractor,
    frechet_distance,
    geometry_spread,
    head_geometry,
    kernel_inception_distance,
    mask_contrast,
    ms_ssim_diversity,
    precision_recall,
    quality_metrics,
    trace_term_cov,
    trace_term_gram,
)

SIZE = 32


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
    assert trace_term_gram(a, b) == pytest.approx(trace_term_cov(a, b), rel=1e-6)


def test_mask_contrast_by_hand() -> None:
    images = torch.full((3, 1, 16, 16), 0.4)
    masks = torch.zeros(3, 1, 16, 16)
    masks[:, :, 6:9, 6:9] = 1  # 9 px
    images[0, :, 6:9, 6:9] = 0.9  # a lesion where the mask is: 0.5 above its ring
    images[1, :, 6:9, 6:9] = 0.2  # a darker one: 0.2 below
    masks[2] = 0
    masks[2, :, 0, 0] = 1  # a speck: left out
    assert mask_contrast(images, masks) == pytest.approx(0.35)  # the median of 0.5 and 0.2
    assert mask_contrast(images[:1], masks[:1].roll(7, dims=-1)) == pytest.approx(0.0)
    assert mask_contrast(images, None) is None
    assert mask_contrast(images[2:], masks[2:]) is None


def _ellipses(tilts: list[float], value: float = 0.6, size: int = SIZE) -> torch.Tensor:
    """Heads: ellipses (semi-axes 12 and 8 px, the long one vertical before turning) turned
    by ``tilts`` degrees, each with a dark hole (a ventricle) that the fill must close."""
    yy, xx = torch.meshgrid(
        torch.arange(size) - size / 2 + 0.5, torch.arange(size) - size / 2 + 0.5, indexing="ij"
    )
    out = []
    for t in tilts:
        c, s = math.cos(math.radians(t)), math.sin(math.radians(t))
        u, v = c * xx - s * yy, s * xx + c * yy  # v along the long axis
        head = (u / 8) ** 2 + (v / 12) ** 2 <= 1
        img = head.float() * value
        img[(u.abs() < 1.5) & (v.abs() < 3)] = 0.05
        out.append(img)
    return torch.stack(out)[:, None]


def test_head_geometry_by_hand() -> None:
    tilts = [-20.0, -10.0, 0.0, 5.0, 15.0, 25.0]
    heads = _ellipses(tilts)
    g = head_geometry(torch.cat([heads, torch.zeros(1, 1, SIZE, SIZE)]))
    turned = g[:-1, 0] * (1 if g[-2, 0] > 0 else -1)  # the sign follows the image's axes
    assert turned.tolist() == pytest.approx(tilts, abs=2.5)
    assert g[:-1, 1].tolist() == pytest.approx([math.pi * 12 * 8 / SIZE**2] * 6, rel=0.05)
    inside = [float(h[h > 0].mean()) for h in heads]  # the holes count: they are filled
    assert g[:-1, 2].tolist() == pytest.approx(inside, abs=1e-5)
    assert g[-1].isnan().all()  # no head
    # the same heads all upright: no variety of tilt; as the reference, nothing to compare to
    upright = head_geometry(_ellipses([0.0] * 6))
    assert geometry_spread(g, upright)["tilt_spread"] == pytest.approx(0.0, abs=0.05)
    assert set(geometry_spread(upright, g).values()) == {None}
    narrow, wide = (
        head_geometry(_ellipses([-5.0, 0, 0, 5])),
        head_geometry(_ellipses([-20.0, 0, 5, 20])),
    )
    assert geometry_spread(narrow, wide)["tilt_spread"] > 2


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


def test_ms_ssim_works_at_32_and_64_px(parts: dict[str, ImageSet]) -> None:
    x32 = parts["train"].images[:20]
    x64 = F.interpolate(x32, size=(64, 64), mode="bilinear")
    for x in (x32, x64):
        v = ms_ssim_diversity(x, pairs=30)
        assert 0 < v < 1
        assert ms_ssim_diversity(x[:1].repeat(5, 1, 1, 1), pairs=10) == pytest.approx(1.0, abs=1e-4)


# ----------------------------------------------------------------------------- phantoms


def test_real_floor_small_against_bad_generators(
    parts: dict[str, ImageSet], random_features: FeatureExtractor
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
    parts: dict[str, ImageSet], random_features: FeatureExtractor
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


def test_image_quality_evaluator_rows(parts: dict[str, ImageSet], make_inputs) -> None:
    train = parts["train"]
    noise = torch.rand(40, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    synthetic = {
        "fresh": parts["fresh"],
        "noise": _like(noise, parts["fresh"]),
        "copier": train.subset(range(40)),
    }
    ev = ImageQualityEvaluator({"features": "random", "ms_ssim_pairs": 40, "kid_subsets": 10})
    rows = ev.evaluate(make_inputs(synthetic), RunContext())["image_quality"]
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
        assert by[("fresh", c)]["class_agreement"] is None  # random features carry no classes
        assert by[("noise", c)]["mask_contrast"] is None  # a set without masks
    # lesions where the masks say: the fresh phantoms' tumours contrast like the real ones
    fresh, real = (
        by[("fresh", "tumor")]["mask_contrast"],
        by[("fresh", "tumor")]["mask_contrast_real"],
    )
    assert fresh > 0.1 and real > 0.1 and abs(fresh - real) < 0.5 * real
    assert by[("fresh", "normal")]["mask_contrast"] is None  # empty masks
    # new phantoms vary in pose, size and contrast like the real ones; uniform noise fills
    # the frame every time
    for c in ("normal", "tumor"):
        for key in ("tilt_spread", "size_spread", "brightness_spread"):
            assert 0.5 < by[("fresh", c)][key] < 2, (c, key)
        assert by[("noise", c)]["size_spread"] < 0.2
    json.dumps(rows, allow_nan=False)  # plain, finite values


def test_class_agreement_counts_samples_the_real_classifier_puts_in_their_class(
    parts: dict[str, ImageSet], make_inputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GAN-test: an oracle classifier that knows every real image's class calls the fresh
    phantoms right (1.0) and the same images under the other label wrong (0.0)."""
    from synthmri.plugins.evaluators import image_quality

    known = torch.cat([parts["train"].images, parts["test"].images, parts["fresh"].images])
    truth = torch.cat([parts["train"].labels, parts["test"].labels, parts["fresh"].labels])
    random = build_extractor(FeatureParams(features="random"), parts["train"], RunContext())

    def oracle(images: torch.Tensor) -> torch.Tensor:
        same = (images.flatten(1)[:, None] == known.flatten(1)[None]).all(dim=2)
        return truth[same.float().argmax(dim=1)]

    ex = FeatureExtractor(
        "oracle",
        random.fn,
        classify=lambda images: (random.fn(images), oracle(images)),
        classes=["normal", "tumor"],
    )
    monkeypatch.setattr(image_quality, "build_extractor", lambda *a, **k: ex)
    fresh = parts["fresh"]
    swapped = ImageSet(images=fresh.images, labels=1 - fresh.labels, class_names=fresh.class_names)
    ev = ImageQualityEvaluator({"ms_ssim_pairs": 10, "kid_subsets": 2})
    run = RunContext()
    rows = ev.evaluate(make_inputs({"fresh": fresh, "swapped": swapped}), run)
    assert not any("calls every real test image" in n for n in run.notes)
    by = {(r["generator"], r["class"]): r for r in rows["image_quality"]}
    for c in ("normal", "tumor"):
        assert by[("fresh", c)]["class_agreement"] == 1.0
        assert by[("swapped", c)]["class_agreement"] == 0.0
        assert by[("fresh", c)]["class_agreement_real"] == 1.0
    # a classifier that calls everything "tumor" is named as such in the run's notes
    ex.classify = lambda images: (random.fn(images), torch.ones(len(images), dtype=torch.long))
    run = RunContext()
    rows = ev.evaluate(make_inputs({"fresh": fresh}), run)["image_quality"]
    assert [r["class_agreement_real"] for r in rows] == [0.0, 1.0]
    assert any("calls every real test image 'tumor'" in n for n in run.notes)


def test_inception_absent_skips_with_a_note(
    parts: dict[str, ImageSet], make_inputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    run = RunContext()
    ev = ImageQualityEvaluator({"features": "inception"})
    inputs = make_inputs({"fresh": parts["fresh"]})
    out = ev.evaluate(inputs, run)
    assert out == {"image_quality": []}
    assert any(
        "inception_v3_google-0cc3c7bd.pth" in n and str(tmp_path / "hub") in n for n in run.notes
    )
    # require_features off: the pixel metrics still come, the feature metrics are None
    ev = ImageQualityEvaluator({"features": "inception", "require_features": False})
    rows = ev.evaluate(inputs, RunContext())["image_quality"]
    assert [r["class"] for r in rows] == ["normal", "tumor"]
    for r in rows:
        assert r["features"] == "none" and r["fid"] is None and r["precision"] is None
        assert 0 < r["ms_ssim_synthetic"] < 1 and r["intensity_wasserstein"] is not None
        assert r["memorized_fraction"] == 0.0  # the SSIM rule alone


def test_domain_features_train_on_real_train_only(parts: dict[str, ImageSet]) -> None:
    from synthmri.core.errors import PluginError
    from synthmri.core.plugins import get_plugin

    try:
        get_plugin("classifier", "resnet")
    except PluginError:
        pytest.skip("the resnet classifier plugin is not available")
    params = FeatureParams(features="domain", domain_epochs=1)
    train = parts["train"].subset(range(48))
    ex = build_extractor(params, train, RunContext(seed=0), seed=0)
    assert ex is not None and ex.name == "domain-resnet"
    assert ex.info["n_train"] == len(train) and ex.info["task"] == "classes"
    f = ex(parts["test"].images)
    assert f.shape == (len(parts["test"]), 512) and torch.isfinite(f).all()
    # cached: the privacy evaluator of the same run reuses the trained extractor
    assert build_extractor(params, train, RunContext(seed=0), seed=0) is ex
    # trained on the classes, it also predicts them (GAN-test)
    assert ex.classes == ["normal", "tumor"] and ex.classify is not None
    features, called = ex.features_and_classes(parts["test"].images)
    assert torch.equal(features, f)  # the same pass gives the same features
    assert called is not None and called.shape == (len(parts["test"]),)
    assert set(called.tolist()) <= {0, 1}
    # unlabelled data: a rotation pretext task
    unlabelled = ImageSet(images=parts["train"].images[:16])
    ex2 = build_extractor(params, unlabelled, RunContext(seed=0), seed=0)
    assert ex2 is not None and ex2.info["task"] == "rotation pretext"
    assert ex2.classify is None and ex2.classes == []
