"""The ``dae_anomaly`` classifier: a denoising autoencoder's repair under the shared anomaly
decision.

The decision methods, calibration, figures and the normal-only rule are the base's and are
tested through ``vae_anomaly``; here: the contract, the corruption (coarse, seeded), that
training removes noise, determinism under a seed, the saved state and bad params / data.
Tiny (32 px, a few steps): whether it finds tumours is measured in ``docs/results.md``.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from synthmri import ImageSet, RunContext, get_plugin
from synthmri.core.errors import DataError, PluginError
from synthmri.core.phantoms import make_phantoms
from synthmri.nn.dae import (
    Residual,
    build_dae,
    cell_sets,
    coarse_noise,
    foreign_patches,
    inpaint,
    patch_weights,
    train_dae,
)
from synthmri.plugins.classifiers.dae_anomaly import DAEAnomaly
from synthmri.testing import check_classifier, round_trip

SIZE = 32


def quick(**extra: Any) -> dict[str, Any]:
    return {**DAEAnomaly.quick_params, **extra}


@pytest.fixture(scope="module")
def data() -> tuple[ImageSet, ImageSet]:
    return make_phantoms(24, SIZE, seed=0), make_phantoms(16, SIZE, seed=1)


def fitted(data: tuple[ImageSet, ImageSet], **extra: Any) -> DAEAnomaly:
    train, val = data
    model = DAEAnomaly(quick(**extra))
    model.fit(train, val, RunContext(seed=0, device="cpu"))
    return model


def test_registered_and_conformant() -> None:
    assert get_plugin("classifier", "dae_anomaly") is DAEAnomaly
    assert DAEAnomaly.localises
    check_classifier(DAEAnomaly, quick(method="global_kmeans"))


def test_coarse_noise_is_smooth_and_seeded() -> None:
    a = coarse_noise((2, 1, 32, 32), 4, 0.2, torch.Generator().manual_seed(0))
    b = coarse_noise((2, 1, 32, 32), 4, 0.2, torch.Generator().manual_seed(0))
    fine = coarse_noise((2, 1, 32, 32), 32, 0.2, torch.Generator().manual_seed(0))
    assert a.shape == (2, 1, 32, 32) and torch.equal(a, b)
    # drawn on a 4 x 4 grid: neighbouring pixels differ far less than in pixel noise
    step = (a[..., 1:] - a[..., :-1]).abs().mean()
    assert step < 0.2 * (fine[..., 1:] - fine[..., :-1]).abs().mean()
    assert 0.05 < float(fine.std()) < 0.35


def test_foreign_patches_blend_an_ellipse_of_the_donor_inside_the_head() -> None:
    x = torch.zeros(8, 1, 32, 32)
    donors = torch.ones(8, 1, 32, 32)
    heads = torch.zeros(8, 1, 32, 32, dtype=torch.bool)
    heads[..., 4:28, 4:28] = True
    out = foreign_patches(x, heads, donors, (0.1, 0.2), torch.Generator().manual_seed(0))
    again = foreign_patches(x, heads, donors, (0.1, 0.2), torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert float(out[~heads.expand_as(out)].abs().max()) == 0.0  # nothing outside the head
    for patch in out[:, 0]:
        changed = patch > 0
        weights = patch[changed].unique()
        assert len(weights) == 1 and 0 < float(weights[0]) < 1  # one blend weight per slice
        assert 4 <= int(changed.sum()) <= int(torch.pi * 6.4 * 6.4) + 8  # semi-axes 3-6 px


def test_patch_weights_are_where_and_how_strongly_the_patch_is_blended() -> None:
    x, donors = torch.rand(6, 1, 32, 32), torch.rand(6, 1, 32, 32)
    heads = torch.zeros(6, 1, 32, 32, dtype=torch.bool)
    heads[..., 6:26, 4:28] = True
    weight = patch_weights(heads, (0.1, 0.2), torch.Generator().manual_seed(3))
    out = foreign_patches(x, heads, donors, (0.1, 0.2), torch.Generator().manual_seed(3))
    assert torch.allclose(out, x * (1 - weight) + donors * weight)
    assert float(weight[~heads].abs().max()) == 0.0 and float(weight.min()) >= 0
    assert all(0 < float(w.max()) < 1 for w in weight)  # every slice gets a patch


def test_localise_learns_where_a_patch_was_blended() -> None:
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    disc = ((yy - 15.5) ** 2 + (xx - 15.5) ** 2 < 13**2).view(1, 1, 32, 32)
    levels = torch.rand(48, 1, 1, 1, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    heads = disc.expand(48, 1, 32, 32)
    images = disc * levels  # each "head" one level: a foreign patch is a step
    healthy, new = images[:32], images[32:]
    params = SimpleNamespace(iterations=200, batch_size=8, lr=3e-3, noise_resolution=[4],
                             noise_std=0.2, corruption="patch", patch_radius=[0.15, 0.3],
                             objective="localise", log_every=40)  # fmt: skip
    torch.manual_seed(0)
    net = build_dae({"channels": [8, 16], "res_units": 1, "image_channels": 1,
                     "out_channels": 1, "out_conv": True})  # fmt: skip
    history = train_dae(net, healthy, heads[:32], params, RunContext(seed=0, device="cpu"))
    assert history["loss"][-1] < 0.6 * history["loss"][0]
    # slices it never saw, each with a patch of another blended in at full weight
    weight = (patch_weights(heads[32:], (0.15, 0.3), torch.Generator().manual_seed(9)) > 0)
    with torch.no_grad():
        pred = torch.sigmoid(net(torch.where(weight, new.roll(1, 0), new)))
    inside, outside = pred[weight].mean(), pred[~weight & heads[32:]].mean()
    assert float(inside) > 3 * float(outside)


def test_cell_sets_deal_every_cell_to_one_set() -> None:
    holes = cell_sets((2, 1, 32, 32), 8, 3, torch.Generator().manual_seed(0))
    again = cell_sets((2, 1, 32, 32), 8, 3, torch.Generator().manual_seed(0))
    assert holes.shape == (3, 2, 1, 32, 32) and holes.dtype == torch.bool
    assert torch.equal(holes, again)
    assert torch.equal(holes.sum(0), torch.ones(2, 1, 32, 32, dtype=torch.long))  # a partition
    cells = holes[:, :, :, ::4, ::4]  # one pixel per 4 x 4 cell: each cell is one set's
    assert torch.equal(holes, cells.repeat_interleave(4, -1).repeat_interleave(4, -2))
    assert all(0 < int(h.sum()) < h.numel() for h in holes)  # every set holds some cells


def test_inpaint_never_repairs_a_pixel_from_itself() -> None:
    x = torch.rand(3, 1, 32, 32) + 0.5
    # an identity net returns the input, which is 0 in the pixels it is asked to fill
    assert float(inpaint(torch.nn.Identity(), x, [8, 4], 3).abs().max()) == 0.0
    # a net that fills with a constant: every pixel is filled exactly once per grid
    out = inpaint(lambda z: torch.full_like(z, 0.25), x, [8, 4], 3)
    assert torch.allclose(out, torch.full_like(x, 0.25))

    # a slice's repair does not depend on the slices beside it
    def blur(z: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(z, 3, 1, 1)

    assert torch.allclose(inpaint(blur, x, [8, 4], 3)[1:2], inpaint(blur, x[1:2], [8, 4], 3))


def test_training_learns_to_remove_noise(data: tuple[ImageSet, ImageSet]) -> None:
    healthy = data[0].images
    heads = torch.zeros(len(healthy), 1, SIZE, SIZE, dtype=torch.bool)
    heads[..., 8:24, 8:24] = True
    params = SimpleNamespace(iterations=60, batch_size=8, lr=3e-3, noise_resolution=[4],
                             noise_std=0.2, corruption="noise", patch_radius=[0.05, 0.2],
                             inpaint_grids=[8, 4], inpaint_sets=3, log_every=20)  # fmt: skip
    torch.manual_seed(0)
    net = build_dae({"channels": [8, 16], "res_units": 1, "image_channels": 1})
    history = train_dae(net, healthy, heads, params, RunContext(seed=0, device="cpu"))
    assert history["step"] == [20, 40, 60]
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert not net.training
    for corruption in ("patch", "both", "inpaint"):
        params.corruption = corruption
        torch.manual_seed(0)
        net = build_dae({"channels": [8, 16], "res_units": 1, "image_channels": 1})
        history = train_dae(net, healthy, heads, params, RunContext(seed=0, device="cpu"))
        assert history["loss"][-1] < 0.5 * history["loss"][0], corruption


def test_residual_network_passes_the_slice_through(data: tuple[ImageSet, ImageSet]) -> None:
    config = {"channels": [8, 16], "res_units": 1, "image_channels": 1}
    assert not isinstance(build_dae(config), Residual)  # checkpoints without the key
    net = build_dae({**config, "residual": True})
    assert isinstance(net, Residual)
    for weight in net.parameters():
        torch.nn.init.zeros_(weight)  # no correction learnt yet
    x = data[0].images[:4] * torch.tensor([0.2, 0.6, 1.0, 1.4]).view(4, 1, 1, 1)
    assert torch.equal(net(x), x)  # whatever the slice's intensity (instance norms inside)


def test_out_conv_sets_the_output_level_past_the_instance_norms() -> None:
    net = build_dae({"channels": [8, 16], "res_units": 1, "image_channels": 1, "out_conv": True})
    last = list(net.modules())[-1]
    assert isinstance(last, torch.nn.Conv2d) and last.in_channels == 8
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.constant_(last.bias, 0.7)
    out = net(torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 1, 32, 32) and torch.allclose(out, torch.full_like(out, 0.7))


def test_scores_are_deterministic_under_a_seed(data: tuple[ImageSet, ImageSet]) -> None:
    torch.manual_seed(1)
    a = fitted(data)
    torch.manual_seed(2)  # the plugin seeds the network from the run's seed, not the caller's
    b = fitted(data)
    images = data[1].images
    assert np.array_equal(a.anomaly_scores(images), b.anomaly_scores(images))
    rec = a.reconstruct(images)
    assert rec.shape == images.shape and 0 <= float(rec.min()) <= float(rec.max()) <= 1


def test_restarts_keep_the_training_with_the_best_validation_auc(
    data: tuple[ImageSet, ImageSet],
) -> None:
    train, val = data
    singles = []
    for seed in (4, 5, 6):  # what each restart trains on its own
        model = DAEAnomaly(quick(iterations=2))
        model.fit(train, val, RunContext(seed=seed, device="cpu"))
        singles.append(model)
    best = max(singles, key=lambda m: m.operating_point["val_auc"])  # the first of ties
    assert best is not singles[0]  # so keeping the first would fail
    chosen = DAEAnomaly(quick(iterations=2, restarts=3))
    chosen.fit(train, val, RunContext(seed=4, device="cpu"))
    assert chosen.operating_point == best.operating_point
    assert chosen.history["restart_val_auc"] == best.operating_point["val_auc"]
    images = val.images
    assert np.array_equal(chosen.anomaly_scores(images), best.anomaly_scores(images))


def test_localise_predictions_are_the_error_maps(data: tuple[ImageSet, ImageSet]) -> None:
    model = fitted(data, objective="localise", smooth_sigma=0, foreground_only=False,
                   normalise="none")  # fmt: skip
    assert model.params.corruption == "patch" and model.params.error_measure == "absolute"
    images = data[1].images
    pred = model.reconstruct(images)
    assert pred.shape == (len(images), 1, SIZE, SIZE) and float(pred.min()) >= 0
    assert float(pred.max()) <= 1
    assert torch.equal(model.error_maps(images)[0], pred)
    assert model.selection == {}  # nothing to choose: the prediction is the map


@pytest.mark.parametrize("extra", [{"residual": True}, {"objective": "localise"}])
def test_state_round_trip(data: tuple[ImageSet, ImageSet], extra: dict[str, Any]) -> None:
    model = fitted(data, **extra)
    state = round_trip(model.state_dict())
    restored = DAEAnomaly()
    restored.load_state_dict(state)
    assert isinstance(restored.net, Residual) == bool(extra.get("residual"))
    assert restored.params.objective == model.params.objective
    images = data[1].images[:4]
    assert torch.allclose(restored.reconstruct(images), model.reconstruct(images), atol=1e-6)
    assert np.allclose(restored.anomaly_scores(images), model.anomaly_scores(images))
    with pytest.raises(DataError, match="missing dae"):
        DAEAnomaly().load_state_dict({k: v for k, v in state.items() if k != "dae"})
    broken = {**state, "dae": {**state["dae"], "weights": {}}}
    with pytest.raises(DataError, match="does not fit"):
        DAEAnomaly().load_state_dict(broken)


def test_bad_params_and_data(data: tuple[ImageSet, ImageSet]) -> None:
    with pytest.raises(PluginError, match="noise_std"):
        DAEAnomaly(quick(noise_std=0))
    with pytest.raises(PluginError, match="channels"):
        DAEAnomaly(quick(channels=[8]))
    for radius in ([0.2, 0.1], [0, 0.1], [0.1, 0.6]):
        with pytest.raises(PluginError, match="patch_radius"):
            DAEAnomaly(quick(patch_radius=radius))
    with pytest.raises(PluginError, match="corruption"):
        DAEAnomaly(quick(corruption="blur"))
    with pytest.raises(PluginError, match="inpaint_sets"):
        DAEAnomaly(quick(inpaint_sets=1))
    with pytest.raises(PluginError, match="inpaint_grids"):
        DAEAnomaly(quick(inpaint_grids=[]))
    for wrong in ({"residual": True}, {"corruption": "inpaint"}, {"corruption": "noise"},
                  {"error_measure": "ssim"}, {"match_intensity": True}):  # fmt: skip
        with pytest.raises(PluginError, match=f"localise.*{next(iter(wrong))}"):
            DAEAnomaly(quick(objective="localise", **wrong))
    with pytest.raises(PluginError, match="not trained"):
        DAEAnomaly(quick()).predict_proba(data[1].images)
    odd = make_phantoms(12, 34, seed=0)
    with pytest.raises(DataError, match="does not fit"):
        DAEAnomaly(quick(channels=[4, 8, 8])).fit(odd, None, RunContext(seed=0, device="cpu"))
