"""The ``diffusion`` generator plugin (32 px phantoms, tiny UNets, a few seeded steps).

The conformance kit runs on it per class and conditional with masks in
``tests/test_contract.py``; here: latent mode, rectified flow, v prediction, checkpoints,
logs, and bad params / data. The MONAI pieces are tested in ``tests/nn/test_diffusion.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from synthmri import ImageSet, PluginError, RunContext, get_plugin
from synthmri.core.errors import DataError
from synthmri.core.phantoms import make_phantoms
from synthmri.testing import check_generator, read_log, round_trip


@pytest.fixture(scope="module")
def diffusion() -> type:
    return get_plugin("generator", "diffusion")


@pytest.fixture(scope="module")
def phantoms() -> ImageSet:
    return make_phantoms(24, 32, seed=0)


def quick(cls: type, **extra: Any) -> dict[str, Any]:
    return {**cls.quick_params, **extra}


@pytest.mark.parametrize(
    "extra",
    [
        {"latent": True, "conditional": True, "emits_masks": True},
        {"latent": True, "prediction": "v"},
        {"scheduler": "rflow", "conditional": True, "guidance": 3.0},
        {"conditional": True, "guidance": 1.0, "ema": None, "grad_clip": None},
    ],
    ids=["latent-cond-masks", "latent-v", "rflow-cfg", "plain-cond"],
)
def test_contract_in_every_mode(diffusion: type, extra: dict[str, Any]) -> None:
    check_generator(diffusion, quick(diffusion, **extra))


def test_latent_mode_diffuses_small_latents(diffusion: type, phantoms: ImageSet) -> None:
    model = diffusion(quick(diffusion, latent=True, emits_masks=True, conditional=True))
    model.fit(phantoms, RunContext(seed=0))
    state = round_trip(model.state_dict())
    cfg = state["config"]
    # 32 px through three autoencoder levels: 8 px latents of latent_channels channels
    assert cfg["latent"] and cfg["in_channels"] == 4 and cfg["data_channels"] == 2
    assert cfg["latent_scale"] > 0 and state["ae"] is not None
    out = model.sample(6, label=0, seed=1)
    assert out.images.shape == (6, 1, 32, 32) and out.masks is not None
    assert set(out.masks.unique().tolist()) <= {0.0, 1.0}
    assert out.labels is not None and bool((out.labels == 0).all())


def test_seeds_and_labels_change_samples(diffusion: type, phantoms: ImageSet) -> None:
    model = diffusion(quick(diffusion, conditional=True, iterations=4))
    model.fit(phantoms, RunContext(seed=0))
    a, b = model.sample(3, label=1, seed=5), model.sample(3, label=1, seed=6)
    assert not torch.equal(a.images, b.images)
    c = model.sample(3, label=0, seed=5)
    assert not torch.equal(a.images, c.images)  # the class embedding steers the sampler
    mixed = model.sample(8, seed=2)  # random classes, reproducible
    assert torch.equal(mixed.labels, model.sample(8, seed=2).labels)


def test_training_logs_and_grid(diffusion: type, phantoms: ImageSet, tmp_path: Path) -> None:
    model = diffusion(quick(diffusion, iterations=4, log_every=2, latent=True))
    run = RunContext(tmp_path, seed=0, stage="generate/diffusion")
    model.fit(phantoms, run)
    lines = read_log(tmp_path)
    assert [ln["step"] for ln in lines if "loss" in ln] == [2, 4]
    assert [ln["step"] for ln in lines if "ae_loss" in ln] == [2, 3]
    assert all(ln.get("loss", 1.0) > 0 for ln in lines)
    assert (tmp_path / "figures" / "generate-diffusion-samples.png").is_file()


def test_bad_params_name_the_field(diffusion: type) -> None:
    with pytest.raises(PluginError, match="norm_groups"):
        diffusion({"norm_groups": 5})
    with pytest.raises(PluginError, match="attention_levels"):
        diffusion({"channels": [16, 32], "attention_levels": [False, False, True]})
    with pytest.raises(PluginError, match="scheduler"):
        diffusion({"scheduler": "ddim"})
    assert diffusion({"unet": "gpu128"}).params.unet_size()["channels"] == [64, 128, 256, 256]


def test_bad_data_is_a_clear_error(diffusion: type) -> None:
    model = diffusion(quick(diffusion, latent=True, ae_channels=[8, 8, 8, 8]))
    odd = make_phantoms(8, 36, seed=0)  # 36 px: not divisible by 8 (AE) x 2 (UNet)
    with pytest.raises(DataError, match="36 px"):
        model.fit(odd, RunContext(seed=0))
    cond = diffusion(quick(diffusion, conditional=True))
    unlabelled = ImageSet(images=torch.rand(8, 1, 32, 32))
    with pytest.raises(DataError, match="labelled"):
        cond.fit(unlabelled, RunContext(seed=0))
    with pytest.raises(Exception, match="before fit"):
        diffusion().sample(2, seed=0)


def test_checkpoint_from_another_plugin_is_refused(diffusion: type) -> None:
    with pytest.raises(DataError, match="checkpoint"):
        diffusion().load_state_dict({"config": {"in_channels": 1}})


DDP_RECIPE = """\
name: ddp-diffusion
data: {n: 32, size: 32}
generators:
  - plugin: diffusion
    per_class: false
    params:
      conditional: true
      latent: true
      iterations: 4
      batch_size: 8
      channels: [8, 16]
      attention_levels: [false, true]
      norm_groups: 4
      head_channels: 8
      ae_channels: [8, 8, 8]
      ae_iterations: 4
      sample_steps: 3
      log_every: 2
experiments:
  - models:
      - plugin: brain_cnn
        params: {epochs: 1, batch_size: 8}
    train_on: [synthetic]
    synthetic_per_class: 4
"""


@pytest.mark.slow
def test_two_cpu_processes_under_torchrun(tmp_path: Path) -> None:
    """DDP (gloo) wraps the autoencoder and the UNet; rank 0 alone writes the run."""
    import json
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    recipe = tmp_path / "ddp.yaml"
    recipe.write_text(DDP_RECIPE)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={port}", "-m", "synthmri", "--quiet", "run", str(recipe),
           "--out", str(tmp_path / "runs"), "--device", "cpu"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {r["class"] for r in metrics["memorisation"]} == {"normal", "tumor"}
    lines = [ln for ln in read_log(run_dir) if ln.get("stage") == "generate/diffusion"]
    # rank 0 alone logs: each step once
    assert [ln["step"] for ln in lines if "ae_loss" in ln] == [2, 4]
    assert [ln["step"] for ln in lines if "loss" in ln] == [2, 4]
