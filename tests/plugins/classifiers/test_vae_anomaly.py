"""The ``vae_anomaly`` classifier: the four decision methods, calibration, the normal-only
rule, masks, figures and the conformance kit.

The method tests use a known answer: healthy slices are a flat disk (plus a little
noise), tumour slices the same with a bright blob. The VAE is trained (briefly) through
``fit``, but its reconstruction is replaced by the ideal healthy model of that data (the
flat disk without the blob), so what is tested is the decision, not the VAE's training
luck; ``test_real_vae_finds_blobs`` (slow) runs the whole thing with the trained VAE.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from synthmri.core.errors import DataError, PluginError
from synthmri.core.interfaces import ImageSet
from synthmri.core.plugins import get_plugin
from synthmri.core.training import RunContext
from synthmri.plugins.classifiers.vae_anomaly import (
    METHODS,
    VAEAnomaly,
    crossfit_folds,
    gaussian_smooth,
    largest_component,
)
from synthmri.testing import check_classifier

# global_kmeans on identical healthy maps (all empty) asks for no more clusters than exist
pytestmark = pytest.mark.filterwarnings("error::sklearn.exceptions.ConvergenceWarning")

SIZE = 32
TINY: dict[str, Any] = {
    "iterations": 3,
    "batch_size": 8,
    "base_channels": 8,
    "latent_dim": 8,
    "figures": False,
}

FIGURES = ("giaem", "dbscan")  # methods whose fit saves figures (matplotlib is slow here)


def blobs(n: int, seed: int, size: int = SIZE, classes: tuple[str, str] = ("normal", "tumor")):
    """Flat noisy disks (label 0) and the same with a bright Gaussian blob (label 1)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    images, masks, labels = [], [], []
    for i in range(n):
        c = size / 2 + (torch.rand(2, generator=g) * 4 - 2)
        r = size * 0.38
        head = (((yy - c[0]) ** 2 + (xx - c[1]) ** 2) < r * r).float()
        img = head * (0.45 + 0.1 * torch.rand(1, generator=g))
        img = img + head * 0.02 * torch.randn(size, size, generator=g)
        label = i % 2
        mask = torch.zeros(size, size)
        if label:
            ang = float(torch.rand(1, generator=g)) * 2 * math.pi
            rad = float(torch.rand(1, generator=g)) * r * 0.5
            by, bx = c[0] + rad * math.sin(ang), c[1] + rad * math.cos(ang)
            d2 = (yy - by) ** 2 + (xx - bx) ** 2
            img = img + 0.4 * torch.exp(-d2 / (2 * 2.5**2)) * head
            mask = (d2 < 3.5**2).float() * head
        images.append(img.clamp(0, 1))
        masks.append(mask)
        labels.append(label)
    return ImageSet(
        images=torch.stack(images)[:, None],
        labels=torch.tensor(labels),
        class_names=list(classes),
        masks=torch.stack(masks)[:, None],
    )


def ideal_healthy(self: VAEAnomaly, images: torch.Tensor) -> torch.Tensor:
    """The perfect healthy model of ``blobs``: the disk at its median level, no blob."""
    x = self._images(images)
    head = x > 0.2
    level = torch.stack([img[h].median() if h.any() else img.new_zeros(()) for img, h in
                         zip(x, head, strict=True)])  # fmt: skip
    return head * level.view(-1, 1, 1, 1)


@pytest.fixture(scope="module")
def data() -> tuple[ImageSet, ImageSet, ImageSet]:
    return blobs(40, 0), blobs(40, 1), blobs(40, 2)


@pytest.fixture(scope="module")
def fitted(
    data: tuple[ImageSet, ImageSet, ImageSet], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[VAEAnomaly, Path]]:
    """One fit per method on the blob data (ideal healthy reconstruction), with figures."""
    train, val, _ = data
    out = tmp_path_factory.mktemp("vae_anomaly_run")
    mp = pytest.MonkeyPatch()
    mp.setattr(VAEAnomaly, "reconstruct", ideal_healthy)
    models = {}
    for method in METHODS:
        torch.manual_seed(0)
        model = VAEAnomaly({**TINY, "method": method, "figures": method in FIGURES})
        model.fit(train, val, RunContext(out, seed=0, stage=f"m-{method}"))
        models[method] = model
    yield models, out  # type: ignore[misc]
    mp.undo()


@pytest.mark.parametrize("method", METHODS)
def test_each_method_separates_blobs_and_finds_them(
    method: str, fitted: tuple[dict[str, VAEAnomaly], Path], data: tuple[ImageSet, ...]
) -> None:
    models, _ = fitted
    model = models[method]
    test = data[2]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(VAEAnomaly, "reconstruct", ideal_healthy)
        proba = model.predict_proba(test.images)
        masks = model.predict_masks(test.images)
    accuracy = float((proba.argmax(1) == test.labels).float().mean())
    assert accuracy >= 0.85, f"{method}: accuracy {accuracy:.2f} on blobs vs flat disks"
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(test.labels.numpy(), proba[:, 1].numpy()) >= 0.9
    assert masks.shape == (len(test), 1, SIZE, SIZE)
    assert set(torch.unique(masks).tolist()) <= {0.0, 1.0}
    tumour = test.labels == 1
    found = (proba.argmax(1) == 1) & tumour
    overlap = (masks * test.masks).flatten(1).sum(1)
    assert bool((overlap[found] > 0).all()), f"{method}: a mask misses its blob"
    dice = (
        2 * overlap[found] / (masks[found].flatten(1).sum(1) + test.masks[found].flatten(1).sum(1))
    )
    assert float(dice.mean()) > 0.4, f"{method}: mean Dice {float(dice.mean()):.2f}"
    normal_pred = proba.argmax(1) == 0
    assert float(masks[normal_pred].sum()) == 0.0, "images judged normal get empty masks"


def test_figures_of_the_validation_part(fitted: tuple[dict[str, VAEAnomaly], Path]) -> None:
    _, out = fitted
    names = sorted(p.name for p in (out / "figures").glob("*.png"))
    for method in FIGURES:
        assert f"m-{method}-anomaly-examples.png" in names
        assert f"m-{method}-anomaly-scores.png" in names


@pytest.mark.parametrize("method", ["dbscan", "global_kmeans"])
def test_state_dict_round_trip(
    method: str, fitted: tuple[dict[str, VAEAnomaly], Path], data: tuple[ImageSet, ...]
) -> None:
    model = fitted[0][method]
    state = model.state_dict()
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    restored = VAEAnomaly()  # default params: method etc. come from the state
    restored.load_state_dict(torch.load(buf, weights_only=True))
    assert restored.params.method == method
    assert restored.score_threshold == model.score_threshold
    x = data[2].images
    assert torch.allclose(restored.predict_proba(x), model.predict_proba(x), atol=1e-6)


def test_thresholds_never_touch_test_data(
    fitted: tuple[dict[str, VAEAnomaly], Path], data: tuple[ImageSet, ...]
) -> None:
    """Predicting on test sets with very different statistics changes no threshold, and
    no calibration code runs during prediction; the thresholds are what val alone gives."""
    train, val, test = data
    for method, model in fitted[0].items():
        before = (model.pixel_threshold, model.score_threshold, model.score_scale)
        with pytest.MonkeyPatch.context() as mp:

            def forbidden(*args: Any, **kwargs: Any) -> None:
                raise AssertionError("calibration ran during prediction")

            mp.setattr(VAEAnomaly, "calibrate", forbidden)
            mp.setattr(VAEAnomaly, "_calibrated", forbidden)
            mp.setattr(VAEAnomaly, "_fit_global", forbidden)
            mp.setattr(VAEAnomaly, "reconstruct", ideal_healthy)
            bright = test.of_class("tumor").images.clamp(0, 1) ** 0.3  # all tumours, brighter
            noisy = (test.images + 0.2 * torch.rand_like(test.images)).clamp(0, 1)
            for x in (bright, noisy, test.images):
                model.predict_proba(x)
                model.predict_masks(x)
        assert (model.pixel_threshold, model.score_threshold, model.score_scale) == before
        # recalibrating from the validation part alone reproduces the thresholds
        again = copy.deepcopy(model)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(VAEAnomaly, "reconstruct", ideal_healthy)
            again.recalibrate(train.of_class("normal"), val, RunContext(seed=0))
        assert again.pixel_threshold == pytest.approx(before[0], rel=1e-6), method
        assert again.score_threshold == pytest.approx(before[1], rel=1e-6, abs=1e-12), method


def test_threshold_from_val_not_from_test_in_fit(data: tuple[ImageSet, ...]) -> None:
    """Two fits with the same train and val but test sets never shown: same thresholds;
    a different val moves them (so they do come from val)."""
    train, val, _ = data
    states = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(VAEAnomaly, "reconstruct", ideal_healthy)
        for v in (val, val, blobs(40, 7)):
            torch.manual_seed(0)
            m = VAEAnomaly(TINY)
            m.fit(train, v, RunContext(seed=0))
            states.append((m.pixel_threshold, m.score_threshold))
    assert states[0] == states[1]
    assert states[2] != states[0]


def test_trains_on_the_normal_class_only(data: tuple[ImageSet, ...]) -> None:
    train, val, _ = data
    states = []
    for part in (train, train.of_class("normal")):
        part.class_names = list(train.class_names)
        torch.manual_seed(0)
        m = VAEAnomaly({**TINY, "iterations": 4})
        m.fit(part, val, RunContext(seed=0))
        states.append(m.state_dict())
    a, b = states
    for key, value in a["vae"]["net"].items():
        assert torch.equal(value, b["vae"]["net"][key]), f"weights differ at {key}"
    assert a["pixel_threshold"] == b["pixel_threshold"]
    assert a["score_threshold"] == b["score_threshold"]


def test_normal_class_matching() -> None:
    yes_no = blobs(16, 3, classes=("yes", "no"))  # the healthy class is "no", at index 1
    m = VAEAnomaly(TINY)
    m.fit(yes_no, None, RunContext(seed=0))
    assert m.normal_index == 1 and m.calibrated_on == "train"
    proba = m.predict_proba(yes_no.images)
    assert proba.shape == (16, 2)
    upper = blobs(16, 3, classes=("Healthy", "Tumour"))
    m = VAEAnomaly(TINY)
    m.fit(upper, None, RunContext(seed=0))
    assert m.normal_index == 0
    bad = blobs(16, 3, classes=("benign", "malignant"))
    with pytest.raises(DataError, match="no healthy class 'normal'"):
        VAEAnomaly(TINY).fit(bad, None, RunContext(seed=0))
    m = VAEAnomaly({**TINY, "normal_class": "BENIGN"})
    m.fit(bad, None, RunContext(seed=0))
    assert m.normal_index == 0


def test_bad_input_is_a_clear_error(data: tuple[ImageSet, ...]) -> None:
    with pytest.raises(PluginError, match="method"):
        VAEAnomaly({"method": "optics"})
    with pytest.raises(PluginError, match="not trained"):
        VAEAnomaly().predict_proba(torch.zeros(2, 1, SIZE, SIZE))
    one_normal = data[0].subset([0, 1, 3])
    with pytest.raises(DataError, match="at least 2 training slices"):
        VAEAnomaly(TINY).fit(one_normal, None, RunContext(seed=0))


def test_calibration_modes() -> None:
    m = VAEAnomaly({"calibration": "youden"})
    scores = np.array([0.0, 0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.25])
    normal = np.array([True, True, True, True, False, False, False, False])
    assert m._calibrated(scores, normal, None)[1] == pytest.approx(0.3)
    m = VAEAnomaly({"calibration": "specificity", "target_specificity": 0.75})
    assert m._calibrated(scores, normal, None)[1] == pytest.approx(0.2)
    m = VAEAnomaly({"calibration": "none", "tumor_index": 0.42})
    assert m._calibrated(scores, normal, None)[1] == 0.42
    m = VAEAnomaly({"calibration": "f1"})  # only normals: falls back to the specificity
    assert m._calibrated(scores[:4], normal[:4], None)[1] == pytest.approx(0.3)


def test_helpers() -> None:
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1.0
    y = gaussian_smooth(x, 1.0)
    assert y.sum().item() == pytest.approx(1.0, abs=1e-5) and y[0, 0, 4, 4] < 0.5
    b = np.zeros((6, 6), bool)
    b[0, 0] = b[3:5, 3:5] = True
    assert largest_component(b).sum() == 4 and not largest_component(b)[0, 0]
    assert not largest_component(np.zeros((3, 3), bool)).any()


def test_registered_and_conformant_with_global_kmeans() -> None:
    assert get_plugin("classifier", "vae_anomaly") is VAEAnomaly
    check_classifier(VAEAnomaly, {**VAEAnomaly.quick_params, "method": "global_kmeans"})


@pytest.mark.slow
def test_real_vae_finds_blobs(data: tuple[ImageSet, ...]) -> None:
    """The whole thing with the trained VAE: it reconstructs the flat disk, not the blob."""
    train, val, test = blobs(160, 0), blobs(60, 1), blobs(60, 2)
    torch.manual_seed(0)
    m = VAEAnomaly(
        {"iterations": 400, "batch_size": 16, "base_channels": 8, "latent_dim": 16, "lr": 2e-3}
    )
    m.fit(train, val, RunContext(seed=0))
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(test.labels.numpy(), m.predict_proba(test.images)[:, 1].numpy())
    assert auc > 0.8


def test_pipeline_scores_the_unsupervised_masks(tmp_path: Path) -> None:
    """A localising classifier's masks reach the segmentation evaluator as an unsupervised
    result on the real test part, and a resumed run reuses them."""
    from synthmri.core.pipeline import run_recipe
    from synthmri.core.recipe import parse_recipe

    recipe = parse_recipe(
        "name: loc\nseed: 0\ndata: {n: 40, size: 32}\n"
        "experiments:\n  - name: t\n    train_on: [real]\n    models:\n"
        "      - plugin: vae_anomaly\n        params: {iterations: 4, batch_size: 8, "
        "base_channels: 8, latent_dim: 8, figures: false}\n"
        "evaluate: [classification, {plugin: segmentation, params: {figures: false}}]\n"
    )
    first = run_recipe(recipe, out=tmp_path)
    (row,) = first.metrics["segmentation"]
    assert row["unsupervised"] is True and row["segmenter"] == "vae_anomaly"
    assert row["n_test"] == first.metrics["data"]["n_test"] and row["n_tumor"] > 0
    (clf,) = first.metrics["classification"]
    assert 0.0 <= clf["val_score"] <= 1.0 and "val_score" not in row  # the validation AUC
    again = run_recipe(recipe, out=tmp_path, resume=first.run_dir)
    assert again.metrics["segmentation"][0]["dice_all"] == row["dice_all"]


def test_sensitivity_calibration_keeps_the_target_share_of_val_tumours() -> None:
    scores = np.array([0.0, 0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.25])
    normal = np.array([True, True, True, True, False, False, False, False])
    m = VAEAnomaly({"calibration": "sensitivity", "target_sensitivity": 0.75})
    # 3 of the 4 tumour scores (0.7, 0.6, 0.5) above: the highest such threshold is the
    # next lower validation score, 0.3 (so every normal stays normal)
    assert m._calibrated(scores, normal, None)[1] == pytest.approx(0.3)
    m = VAEAnomaly({"calibration": "sensitivity", "target_sensitivity": 1.0})
    t = m._calibrated(scores, normal, None)[1]
    assert t == pytest.approx(0.2) and (scores[~normal] > t).all()
    m = VAEAnomaly({"calibration": "sensitivity", "target_specificity": 0.75})
    assert m._calibrated(scores[:4], normal[:4], None)[1] == pytest.approx(0.2)  # fallback


def test_operating_point_and_error_map_choice_are_logged_and_kept(
    data: tuple[ImageSet, ...], tmp_path: Path
) -> None:
    from synthmri.testing import read_log, round_trip

    train, val, test = data
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(VAEAnomaly, "reconstruct", ideal_healthy)
        torch.manual_seed(0)
        m = VAEAnomaly({**TINY, "target_sensitivity": 0.8})
        m.fit(train, val, RunContext(tmp_path, seed=0, stage="op"))
        op = m.operating_point
        assert op["calibration"] == "sensitivity" and op["calibrated_on"] == "validation"
        assert op["val_sensitivity"] >= 0.8 and 0 <= op["val_specificity"] <= 1
        # auto: every candidate map was scored on val; the kept one has the best val AUC
        assert set(m.selection) == {"absolute/zmap", "absolute/none", "ssim/zmap", "ssim/none"}
        assert op["error_map"] == f"{m.measure}/{m.normalisation}"
        assert m.selection[op["error_map"]] == max(m.selection.values())
        lines = read_log(tmp_path)
        logged = [ln for ln in lines if ln.get("stage") == "op" and "val_sensitivity" in ln]
        assert logged and logged[-1]["score_threshold"] == m.score_threshold
        assert any("error_map_selection" in ln for ln in lines)
        size = next(ln for ln in lines if "vae_base_channels" in ln)
        assert (size["vae_base_channels"], size["vae_latent_dim"]) == (8, 8)  # TINY sets them
        restored = VAEAnomaly()
        restored.load_state_dict(round_trip(m.state_dict()))
        assert restored.operating_point == op
        assert restored.measure == m.measure and restored.normalisation == m.normalisation
        x = test.images
        assert torch.allclose(restored.predict_proba(x), m.predict_proba(x), atol=1e-6)


def test_auto_vae_size_on_the_cpu(data: tuple[ImageSet, ...]) -> None:
    train, val, _ = data
    m = VAEAnomaly({**TINY, "base_channels": "auto", "latent_dim": "auto", "iterations": 2})
    m.fit(train, val, RunContext(seed=0, device="cpu"))
    assert m.history["vae_size"] == {"base_channels": 8, "latent_dim": 64}
    assert m.state_dict()["vae"]["config"]["latent_dim"] == 64
    with pytest.raises(PluginError, match="latent_dim"):
        VAEAnomaly({"latent_dim": "big"})


def rim_healthy(self: VAEAnomaly, images: torch.Tensor) -> torch.Tensor:
    """The ideal healthy model of ``blobs`` that also errs, by a random amount per slice, in
    a fixed band at the top of the head (where a real VAE errs along the skull)."""
    out = ideal_healthy(self, images)
    g = torch.Generator().manual_seed(int(images.sum().item() * 1000) % 2**31)
    amount = 0.6 * torch.rand(out.shape[0], generator=g)
    out[:, :, 5:12, 8:24] += amount.view(-1, 1, 1, 1)
    return out.clamp(0, 1)


def test_z_map_ignores_a_place_where_healthy_slices_always_err(
    data: tuple[ImageSet, ...],
) -> None:
    """With a systematic healthy error of random size, the study's raw absolute error
    ranks slices by that error; the z-map (fitted on the healthy val slices) does not."""
    from sklearn.metrics import roc_auc_score

    train, val, test = data
    aucs = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(VAEAnomaly, "reconstruct", rim_healthy)
        for norm in ("none", "zmap"):
            torch.manual_seed(0)
            m = VAEAnomaly({**TINY, "normalise": norm, "error_measure": "absolute"})
            m.fit(train, val, RunContext(seed=0))
            assert m.normalisation == norm
            aucs[norm] = roc_auc_score(test.labels.numpy(), m.anomaly_scores(test.images))
    assert aucs["zmap"] >= 0.95 and aucs["zmap"] > aucs["none"] + 0.1, aucs


def test_published_maps_are_still_available(data: tuple[ImageSet, ...]) -> None:
    """The study's maps (absolute error, no z-map, intensity head mask, no clean-up) are a
    choice of params; they give the raw |x - x_hat| inside the thresholded head."""
    train, val, test = data
    published = {
        "error_measure": "absolute",
        "normalise": "none",
        "head_mask": "intensity",
        "clean_radius": 0,
        "clean_min_area": 0.0,
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(VAEAnomaly, "reconstruct", ideal_healthy)
        m = VAEAnomaly({**TINY, **published, "smooth_sigma": 0.0})
        m.fit(train, val, RunContext(seed=0))
        assert m.selection == {} and m.normalisation == "none" and m.measure == "absolute"
        x = test.images[:4]
        err, fg = m.error_maps(x)
        head = gaussian_smooth(x, 1.0) > 0.05
        assert torch.equal(fg, head)
        assert torch.allclose(err, (x - ideal_healthy(m, x)).abs() * head, atol=1e-6)


def test_case_figure_of_best_and_worst_test_cases(
    fitted: tuple[dict[str, VAEAnomaly], Path], data: tuple[ImageSet, ...], tmp_path: Path
) -> None:
    model = fitted[0]["kmeans"]
    test = data[2]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(VAEAnomaly, "reconstruct", ideal_healthy)
        path = model.case_figure(test, RunContext(tmp_path, seed=0, stage="s"))
        assert path is not None and path.name == "s-cases-kmeans.png" and path.stat().st_size
        assert (tmp_path / "figures" / "s-cases-kmeans.txt").read_text().startswith("Best")
        assert model.case_figure(test, RunContext(seed=0)) is None  # no run directory
        with pytest.raises(DataError, match="labelled"):
            model.case_figure(ImageSet(images=test.images[:2]), RunContext(seed=0))


def test_crossfit_folds_keep_groups_together_and_balance_healthy_slices() -> None:
    groups = ["a"] * 4 + ["b"] * 3 + ["c"] * 2 + ["d"] * 3
    normal = np.array([1, 1, 1, 0, 1, 1, 0, 1, 1, 0, 0, 0], bool)
    folds = crossfit_folds(groups, normal)
    assert folds is not None
    for g in set(groups):  # a patient is on one side only
        assert len({int(f) for f, h in zip(folds, groups, strict=True) if h == g}) == 1
    # healthy: a 3, b 2, c 2 -> a alone against b + c; d (no healthy slice) to the smaller side
    assert sorted(int((normal & (folds == k)).sum()) for k in (0, 1)) == [3, 4]
    # one group, or no groups: alternate healthy slices, and the others
    assert crossfit_folds(["p"] * 6, np.ones(6, bool)).tolist() == [0, 1, 0, 1, 0, 1]
    assert crossfit_folds([], np.array([1, 0, 1, 0, 1, 1], bool)).tolist() == [0, 0, 1, 1, 0, 1]
    # a fold with fewer than 2 healthy slices: no cross-fitting
    assert crossfit_folds([], np.array([1, 1, 0, 0], bool)) is None


def test_calibration_z_maps_are_cross_fitted(data: tuple[ImageSet, ...]) -> None:
    """A validation slice is normalised by the other fold's healthy statistics, never by
    statistics it shaped; the statistics kept for new slices use every healthy slice."""
    from synthmri.nn.anomaly_maps import pixel_stats, z_map

    train, val, _ = data
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(VAEAnomaly, "reconstruct", rim_healthy)
        m = VAEAnomaly({**TINY, "normalise": "zmap", "error_measure": "absolute"})
        m.fit(train, val, RunContext(seed=0))
        x = val.images.clone()
        normal = (val.labels == m.normal_index).numpy()
        first = int(np.flatnonzero(normal)[0])
        x[first, :, 14:18, 14:18] = 1.0  # a healthy slice with an outlier of its own
        rec = m.reconstruct(x)
        folds = crossfit_folds([], normal)
        assert folds is not None
        err, fg = m._prepare_maps("absolute", "zmap", x, rec, normal, folds)
        m.pixel_stats = None
        raw, _ = m.error_maps(x, rec)
        p = m.params
        keep = torch.as_tensor(normal)
        every = pixel_stats(raw[keep], fg[keep], sigma=p.zmap_sigma, floor=p.zmap_floor)
        other = keep & torch.as_tensor(folds != folds[first])
        others = pixel_stats(raw[other], fg[other], sigma=p.zmap_sigma, floor=p.zmap_floor)
    expected = z_map(raw[first : first + 1], others) * fg[first : first + 1]
    assert torch.allclose(err[first : first + 1], expected)
    in_sample = z_map(raw[first : first + 1], every) * fg[first : first + 1]
    assert float(err[first, 0, 15, 15]) > 1.3 * float(in_sample[0, 0, 15, 15])  # not damped
    m.measure = "absolute"
    m._prepare_maps("absolute", "zmap", x, rec, normal, folds)
    assert torch.allclose(m.pixel_stats.mean, every.mean) and torch.allclose(
        m.pixel_stats.std, every.std
    )
