"""The ``fastgan`` generator plugin (32 px phantoms, narrow networks, a few seeded steps).

The conformance kit (per class, and conditional with masks) runs on it in
``tests/test_contract.py``; the networks are tested in ``tests/nn/test_fastgan.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from synthmri import ImageSet, PluginError, RunContext, get_plugin
from synthmri.core.errors import DataError
from synthmri.core.phantoms import make_phantoms
from synthmri.nn.fastgan import D_CHANNELS, DECODER_CHANNELS, G_CHANNELS
from synthmri.testing import read_log, round_trip

TINY: dict[str, Any] = {
    "iterations": 6,
    "batch_size": 8,
    "latent_dim": 16,
    "g_channels": {4: 16, 8: 16, 16: 8, 32: 8},
    "d_channels": {8: 16, 16: 8},
    "decoder_channels": {16: 8, 32: 4},
    "log_every": 3,
}


@pytest.fixture(scope="module")
def fastgan() -> type:
    return get_plugin("generator", "fastgan")


@pytest.fixture(scope="module")
def phantoms() -> ImageSet:
    return make_phantoms(32, 32, seed=0)


def test_params_defaults_are_the_networks_gpu_widths(fastgan: type) -> None:
    p = fastgan.Params()
    assert p.g_channels == G_CHANNELS
    assert p.d_channels == D_CHANNELS
    assert p.decoder_channels == DECODER_CHANNELS
    assert (p.lr, p.beta1, p.beta2, p.batch_size) == (2e-4, 0.5, 0.999, 8)  # the paper's


def test_given_widths_replace_the_defaults_at_their_resolutions(fastgan: type) -> None:
    p = fastgan.Params(g_channels={64: 16, 32: 24})
    assert p.g_channels[64] == 16 and p.g_channels[32] == 24
    assert p.g_channels[4] == G_CHANNELS[4]


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"g_channels": {48: 8}}, "no resolution 48"),
        ({"d_channels": {8: 0}}, "widths must be >= 1"),
        ({"recon_loss": "lpips"}, "recon_loss"),
        ({"decoder_chanels": {16: 8}}, "decoder_chanels"),
    ],
)
def test_bad_params_name_the_field(fastgan: type, params: dict[str, Any], needle: str) -> None:
    with pytest.raises(PluginError, match=needle):
        fastgan(params)


def test_sizes_outside_32_to_256_are_refused(fastgan: type) -> None:
    with pytest.raises(DataError, match="32, 64, 128, 256"):
        fastgan(TINY).fit(make_phantoms(8, 48, seed=0), RunContext(seed=0))


def test_fit_logs_its_losses_and_saves_grids(
    fastgan: type, phantoms: ImageSet, tmp_path: Path
) -> None:
    run = RunContext(out_dir=tmp_path, seed=0, stage="generate/fastgan")
    model = fastgan({**TINY, "sample_every": 3})
    model.fit(phantoms.of_class("tumor"), run)
    lines = [json.loads(s) for s in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [d for d in lines if "step" in d]
    assert [d["step"] for d in steps] == [3, 6]
    for key in ("loss_d", "loss_g", "loss_adv_d", "loss_recon", "d_real", "d_fake", "diversity"):
        assert all(isinstance(d[key], float) for d in steps), key
    last = steps[-1]
    assert last["loss_recon"] > 0.0
    # loss_d = hinge + recon_weight (1) * reconstruction, both averaged over the same steps
    assert last["loss_d"] == pytest.approx(last["loss_adv_d"] + last["loss_recon"], rel=1e-5)
    figures = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert any(n.endswith("fastgan-samples.png") for n in figures), figures
    assert any(n.endswith("fastgan-samples-000003.png") for n in figures), figures


def test_samples_and_round_trip(fastgan: type, phantoms: ImageSet) -> None:
    model = fastgan(TINY)
    model.fit(phantoms.of_class("normal"), RunContext(seed=0))
    out = model.sample(5, seed=2)
    assert tuple(out.images.shape) == (5, 1, 32, 32)
    assert float(out.images.min()) >= 0.0 and float(out.images.max()) <= 1.0
    state = round_trip(model.state_dict())
    assert state["config"]["g_channels"] == [16, 16, 8, 8]  # 4, 8, 16, 32 px
    assert state["config"]["d_channels"] == [16, 8]  # 8, 16 px
    restored = fastgan(TINY)
    restored.load_state_dict(state)
    assert torch.equal(restored.sample(5, seed=2).images, out.images)


def test_options_train(fastgan: type, phantoms: ImageSet) -> None:
    for extra in (
        {"recon_loss": "mse", "spectral_norm": False},
        {"recon_weight": 0.0, "diffaugment": None, "ema": None},
    ):
        model = fastgan({**TINY, "iterations": 2, **extra})
        model.fit(phantoms, RunContext(seed=0))
        assert len(model.sample(2, seed=0)) == 2


def test_adaptive_augmentation_is_driven_by_d_real(
    fastgan: type, phantoms: ImageSet, tmp_path: Path
) -> None:
    model = fastgan({**TINY, "iterations": 20, "log_every": 10, "ada_target": 0.01})
    model.fit(phantoms, RunContext(out_dir=tmp_path, seed=0))
    steps = [d for d in read_log(tmp_path) if "step" in d]
    assert [d["step"] for d in steps] == [10, 20]
    # D's logits on real slices (observe_real) move p up from 0 while sign(D(real)) > target
    assert 0.0 < steps[-1]["aug_p"] <= 1.0, steps


def test_emits_masks_reconstructs_both_channels(fastgan: type, phantoms: ImageSet) -> None:
    model = fastgan({**TINY, "emits_masks": True, "conditional": True})
    model.fit(phantoms, RunContext(seed=0))
    assert model.config["channels"] == 2 and model.config["n_classes"] == 2
    x = torch.zeros(2, 2, 32, 32)
    _, whole, part = model.D(x, torch.tensor([0, 1]), torch.tensor([0, 1]))
    assert whole.shape[1] == 2 and part.shape[1] == 2
    out = model.sample(6, label=1, seed=0)
    assert out.masks is not None and tuple(out.masks.shape) == (6, 1, 32, 32)
    assert out.labels is not None and out.labels.tolist() == [1] * 6


def test_conditional_sampling_honours_labels(fastgan: type) -> None:
    base = make_phantoms(64, 32, seed=1).images
    data = ImageSet(
        images=torch.cat([base[:32] * 0.25, 0.5 + base[32:] * 0.5]),  # dark / bright
        labels=torch.tensor([0] * 32 + [1] * 32),
        class_names=["dark", "bright"],
    )
    model = fastgan(
        {**TINY, "iterations": 120, "conditional": True, "diffaugment": None, "lr": 1e-3}
    )
    model.fit(data, RunContext(seed=0))
    m0 = float(model.sample(16, label=0, seed=5).images.mean())
    m1 = float(model.sample(16, label=1, seed=5).images.mean())
    assert m1 > m0 + 0.15, (m0, m1)
