"""The MONAI diffusion pieces: guidance, sampling, noising and denoising, the autoencoder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from synthmri.core.phantoms import make_phantoms
from synthmri.nn.diffusion import (
    NoiseSchedule,
    build_autoencoder,
    build_unet,
    encode_mean,
    guided_output,
    latent_scale,
    mask_dice,
    noise_and_denoise,
    train_autoencoder,
)
from synthmri.nn.tensors import join_image_mask

CONFIG = {
    "in_channels": 1,
    "channels": [8, 16],
    "attention_levels": [False, True],
    "num_res_blocks": 1,
    "norm_groups": 4,
    "head_channels": 8,
    "n_classes": 2,
}


@pytest.fixture(scope="module")
def unet() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_unet(CONFIG).eval()


def test_guidance_mixes_conditional_and_unconditional(unet: torch.nn.Module) -> None:
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([10, 500])
    y = torch.tensor([0, 1])
    with torch.no_grad():
        cond = unet(x, t, class_labels=y)
        uncond = unet(x, t, class_labels=torch.full_like(y, 2))
        assert torch.allclose(guided_output(unet, x, t, y, 1.0, 2), cond, atol=1e-5)
        assert torch.allclose(guided_output(unet, x, t, y, 0.0, 2), uncond, atol=1e-5)
        three = guided_output(unet, x, t, y, 3.0, 2)
    assert torch.allclose(three, uncond + 3.0 * (cond - uncond), atol=1e-4)


@pytest.mark.parametrize("kind,prediction", [("ddpm", "epsilon"), ("ddpm", "v"), ("rflow", "v")])
def test_loss_and_sampling(unet: torch.nn.Module, kind: str, prediction: str) -> None:
    schedule = NoiseSchedule(kind, prediction)
    torch.manual_seed(0)
    loss = schedule.loss(unet, torch.rand(4, 1, 16, 16) * 2 - 1, torch.tensor([0, 1, 2, 0]))
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    noise = torch.randn(3, 1, 16, 16)
    y = torch.tensor([0, 1, 1])
    a = schedule.sample(unet, noise, 4, y, 2.0, 2)
    assert a.shape == noise.shape and torch.isfinite(a).all()
    assert torch.equal(a, schedule.sample(unet, noise, 4, y, 2.0, 2))  # deterministic


def test_noise_and_denoise(unet: torch.nn.Module) -> None:
    schedule = NoiseSchedule("ddpm", "epsilon")
    x0 = torch.rand(2, 1, 16, 16) * 2 - 1
    y = torch.tensor([0, 1])
    # at step 0 almost no noise is added and one DDIM step removes it: about the input
    near = noise_and_denoise(unet, schedule, x0, 0, steps=50, y=y, seed=0)
    assert (near - x0).abs().max() < 0.1
    far = noise_and_denoise(unet, schedule, x0, 900, steps=50, y=y, seed=0)
    assert (far - x0).abs().mean() > 0.1  # an untrained model cannot repair heavy noise
    assert torch.equal(far, noise_and_denoise(unet, schedule, x0, 900, steps=50, y=y, seed=0))
    assert not torch.equal(far, noise_and_denoise(unet, schedule, x0, 900, steps=50, y=y, seed=1))


def test_shared_noise_makes_an_item_independent_of_its_batch(unet: torch.nn.Module) -> None:
    schedule = NoiseSchedule("ddpm", "epsilon")
    x0 = torch.rand(3, 1, 16, 16) * 2 - 1
    y = torch.tensor([0, 1, 1])
    whole = noise_and_denoise(unet, schedule, x0, 300, steps=10, y=y, seed=0, shared_noise=True)
    alone = noise_and_denoise(
        unet, schedule, x0[2:], 300, steps=10, y=y[2:], seed=0, shared_noise=True
    )
    assert torch.allclose(whole[2:], alone, atol=1e-5)
    # without it the first item's noise is the shared one
    plain = noise_and_denoise(unet, schedule, x0, 300, steps=10, y=y, seed=0)
    assert torch.allclose(plain[:1], whole[:1], atol=1e-5)


def test_autoencoder_learns_and_scales() -> None:
    torch.manual_seed(0)
    ae = build_autoencoder(
        {"in_channels": 2, "ae_channels": [8, 8, 8], "latent_channels": 3, "norm_groups": 4}
    )
    x = torch.rand(8, 2, 32, 32) * 2 - 1
    losses: list[float] = []

    def batches() -> Iterator[torch.Tensor]:
        while True:
            yield x

    train_autoencoder(ae, batches(), 20, 3e-3, 1e-6, on_step=lambda s, v: losses.append(float(v)))
    assert len(losses) == 20 and losses[-1] < losses[0]
    z = encode_mean(ae, x, batch=3)
    assert z.shape == (8, 3, 8, 8)
    assert latent_scale(z) == pytest.approx(1.0 / float(z.std()))
    assert latent_scale(torch.zeros(4)) == 1.0


def test_adversarial_term_starts_after_a_quarter_of_the_steps() -> None:
    """The patch critic joins after the warm-up (here on an image+mask input, whose image
    channel alone it judges) and changes the training from then on."""
    x = torch.rand(4, 2, 32, 32) * 2 - 1
    config = {"in_channels": 2, "ae_channels": [8, 8], "latent_channels": 2, "norm_groups": 4}

    def losses(weight: float) -> list[float]:
        torch.manual_seed(0)
        out: list[float] = []
        train_autoencoder(
            build_autoencoder(config), iter(lambda: x, None), 8, 1e-3, 1e-6,
            on_step=lambda s, v: out.append(float(v)), mask_channels=1, adversarial_weight=weight,
        )  # fmt: skip
        return out

    plain, adversarial = losses(0.0), losses(0.5)
    assert adversarial[:2] == plain[:2]  # warm-up: the same steps
    assert adversarial[2] > plain[2]  # same weights, plus the (positive) adversarial term
    assert all(a != p for a, p in zip(adversarial[3:], plain[3:], strict=True))


def test_tumour_masks_survive_the_autoencoder() -> None:
    """A tumour is ~1 % of the pixels: plain L1 learns empty masks; the mask terms do not."""
    ds = make_phantoms(64, 32, seed=0)
    x = join_image_mask(ds.images, ds.masks, True)
    g = torch.Generator().manual_seed(0)

    def batches():
        while True:
            yield x[torch.randperm(len(x), generator=g)[:16]]

    torch.manual_seed(0)
    config = {"in_channels": 2, "ae_channels": [16, 32, 32], "latent_channels": 4}
    ae = build_autoencoder({**config, "norm_groups": 8, "size": 32})
    train_autoencoder(ae, batches(), 100, 1e-3, 1e-6, mask_channels=1)
    assert mask_dice(ae.eval(), x, 1) > 0.5
