"""``diffusion`` training and sampling speed on the CPU, against a plain MONAI loop.

Two modes, each at 64 px on phantoms, batch 32, conditional (2 classes):

- ``pixel``: the UNet (``unet: cpu``: 32-64-64, attention at the lowest level, one res
  block) on 64 px slices;
- ``latent``: the autoencoder (``AutoencoderKL`` 16-32-32, 4 latent channels) on 64 px
  slices, then the same UNet on its 16 px latents.

For each: training iterations/s of the plugin (``Diffusion.fit``; the time between its
per-step log lines, so setup is left out) and of a plain MONAI loop written here with the
same network, scheduler, optimiser and batch (no synthmri code: ``DiffusionModelUNet``,
``DDPMScheduler.add_noise``, ``AdamW``, MSE on the noise; the autoencoder's loop the same
way), the ratio plugin / plain, and each one's peak RSS (every measurement runs in its own
process, ``ru_maxrss``; "base" is the RSS after importing torch and MONAI and making the
phantoms, about 1 GB of it MONAI's imports). The plugin runs with its defaults (EMA 0.999
and gradient clipping on: they are part of its step) and once more with both off
(``plugin-bare``), the fair comparison with the plain loop. Sampling: images/s of
``Diffusion.sample`` with 50 DDIM steps and classifier-free guidance (each step runs the
UNet on the conditional and the "no label" batch), decoding included in latent mode.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/diffusion_training.py            # both modes
    OMP_NUM_THREADS=1 python benchmarks/diffusion_training.py --steps 20 --pixel-steps 4
    OMP_NUM_THREADS=1 python benchmarks/diffusion_training.py --modes latent --adversarial

``--adversarial`` adds the plugin with ``ae_adversarial_weight: 0.01`` (its autoencoder's
iterations/s after the adversarial warm-up: the patch discriminator's cost).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

SIZE, BATCH = 64, 32
UNET = {"channels": [32, 64, 64], "attention_levels": [False, False, True], "num_res_blocks": 1}
AE = {"ae_channels": [16, 32, 32], "latent_channels": 4}
NORM, HEADS = 8, 32
ADVERSARIAL = 0.01  # ae_adversarial_weight of the "plugin-adversarial" row


def _data() -> Any:
    from synthmri.core.phantoms import make_phantoms

    return make_phantoms(128, SIZE, seed=0)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def plugin_train(mode: str, steps: int, bare: bool, adversarial: float = 0.0) -> dict[str, Any]:
    """Iterations/s of ``Diffusion.fit`` from the timestamps of its per-step log lines
    (with ``adversarial``, the autoencoder's steps after its adversarial warm-up only)."""
    from synthmri import RunContext, get_plugin
    from synthmri.testing import read_log

    params: dict[str, Any] = {
        "conditional": True,
        "iterations": steps,
        "batch_size": BATCH,
        "log_every": 1,
        "latent": mode == "latent",
        "ae_iterations": steps,
        **AE,
        "sample_steps": 1,
        "ae_adversarial_weight": adversarial,
    }
    if bare:
        params.update(ema=None, grad_clip=None)
    model = get_plugin("generator", "diffusion")(params)
    with tempfile.TemporaryDirectory() as tmp:
        model.grid_n = 0  # type: ignore[misc]  # no sample grid at the end
        model.fit(_data(), RunContext(tmp, device="cpu", seed=0))
        lines = read_log(tmp)
    out = {"rss_mb": _rss_mb()}
    for key in ("loss", "ae_loss") if mode == "latent" else ("loss",):
        times = [ln["time"] for ln in lines if key in ln]
        # the first step is a warm-up (and the autoencoder's first quarter without its
        # adversarial term, when it has one); the rest are timed
        first = len(times) // 4 + 1 if adversarial and key == "ae_loss" else 1
        out["unet_it_s" if key == "loss" else "ae_it_s"] = (len(times) - 1 - first) / (
            times[-1] - times[first]
        )
    return out


def plain_train(mode: str, steps: int) -> dict[str, Any]:
    """The same network, scheduler, optimiser and batch in a plain MONAI loop."""
    import torch.nn.functional as F
    from monai.networks.nets import AutoencoderKL, DiffusionModelUNet
    from monai.networks.schedulers import DDPMScheduler

    torch.manual_seed(0)
    data = _data()
    x_all = data.images * 2 - 1
    y_all = data.labels
    out: dict[str, Any] = {}
    if mode == "latent":
        ae = AutoencoderKL(
            spatial_dims=2, in_channels=1, out_channels=1, channels=AE["ae_channels"],
            attention_levels=(False, False, False), latent_channels=AE["latent_channels"],
            num_res_blocks=1, norm_num_groups=NORM, with_encoder_nonlocal_attn=False,
            with_decoder_nonlocal_attn=False,
        )  # fmt: skip
        opt = torch.optim.Adam(ae.parameters(), lr=1e-3)
        times = []
        for _ in range(steps):
            idx = torch.randint(0, len(x_all), (BATCH,))
            x = x_all[idx]
            recon, mu, sigma = ae(x)
            kl = 0.5 * (mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2) + 1e-8) - 1)
            loss = F.l1_loss(recon, x) + 1e-6 * kl.flatten(1).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()  # the plugin reads its loss every log line too
            times.append(time.time())
        out["ae_it_s"] = (len(times) - 2) / (times[-1] - times[1])
        with torch.no_grad():
            x_all = torch.cat([ae.encode(x_all[i : i + 64])[0] for i in range(0, len(x_all), 64)])
    unet = DiffusionModelUNet(
        spatial_dims=2, in_channels=x_all.shape[1], out_channels=x_all.shape[1],
        channels=UNET["channels"], attention_levels=UNET["attention_levels"],
        num_res_blocks=UNET["num_res_blocks"], norm_num_groups=NORM, num_head_channels=HEADS,
        num_class_embeds=3,
    )  # fmt: skip
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    opt = torch.optim.AdamW(unet.parameters(), lr=2e-4, foreach=True)
    times = []
    for _ in range(steps):
        idx = torch.randint(0, len(x_all), (BATCH,))
        x0, y = x_all[idx], y_all[idx]
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (BATCH,))
        loss = F.mse_loss(unet(scheduler.add_noise(x0, noise, t), t, class_labels=y), noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()
        times.append(time.time())
    out["unet_it_s"] = (len(times) - 2) / (times[-1] - times[1])
    out["rss_mb"] = _rss_mb()
    return out


def plugin_sample(mode: str, n: int) -> dict[str, Any]:
    """Images/s of ``Diffusion.sample`` (50 DDIM steps, guidance 2) after a 2-step fit."""
    from synthmri import RunContext, get_plugin

    params = {"conditional": True, "iterations": 2, "batch_size": BATCH, "ae_iterations": 2,
              "latent": mode == "latent", **AE, "sample_steps": 50}  # fmt: skip
    model = get_plugin("generator", "diffusion")(params)
    model.fit(_data(), RunContext(device="cpu", seed=0))
    start = time.perf_counter()
    model.sample(n, label=1, seed=0)
    seconds = time.perf_counter() - start
    return {"images_s": n / seconds, "seconds": seconds, "n": n, "rss_mb": _rss_mb()}


def one(what: str, mode: str, steps: int, n: int) -> dict[str, Any]:
    """One measurement (in this process)."""
    import monai.networks.nets  # noqa: F401  (imports and data in the baseline RSS)

    torch.set_num_threads(1)
    _data()
    base = _rss_mb()
    if what == "plugin":
        out = plugin_train(mode, steps, bare=False)
    elif what == "plugin-bare":
        out = plugin_train(mode, steps, bare=True)
    elif what == "plugin-adversarial":
        out = plugin_train(mode, steps, bare=False, adversarial=ADVERSARIAL)
    elif what == "plain":
        out = plain_train(mode, steps)
    else:
        out = plugin_sample(mode, n)
    return {**out, "base_rss_mb": base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed training steps (latent)")
    parser.add_argument("--pixel-steps", type=int, default=5, help="timed steps (pixel)")
    parser.add_argument("--sample", type=int, default=16, help="images sampled (latent)")
    parser.add_argument("--pixel-sample", type=int, default=4, help="images sampled (pixel)")
    parser.add_argument("--modes", default="latent,pixel")
    parser.add_argument(
        "--adversarial",
        action="store_true",
        help="latent: also the plugin with ae_adversarial_weight 0.01 (its autoencoder it/s)",
    )
    parser.add_argument("--one", nargs=2, metavar=("WHAT", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        what, mode = args.one
        steps = args.steps if mode == "latent" else args.pixel_steps
        n = args.sample if mode == "latent" else args.pixel_sample
        print(json.dumps(one(what, mode, steps + 2, n)))
        return
    rows = []
    for mode in args.modes.split(","):
        res = {}
        whats = ["plain", "plugin-bare", "plugin", "sample"]
        if args.adversarial and mode == "latent":
            whats.insert(3, "plugin-adversarial")
        for what in whats:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--one", what, mode]
            cmd += [f"--steps={args.steps}", f"--pixel-steps={args.pixel_steps}"]
            cmd += [f"--sample={args.sample}", f"--pixel-sample={args.pixel_sample}"]
            start = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            res[what] = json.loads(done.stdout.strip().splitlines()[-1])
            res[what]["wall_s"] = time.perf_counter() - start
            print(mode, what, json.dumps(res[what]), flush=True)
        rows.append((mode, res))
    print()
    print("| mode | part | plain it/s | plugin-bare it/s | plugin it/s | ratio bare/plain "
          "| ratio plugin/plain | peak RSS plain / bare / plugin (MB) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for mode, res in rows:
        parts = ["ae_it_s", "unet_it_s"] if mode == "latent" else ["unet_it_s"]
        for part in parts:
            p, b, g = res["plain"][part], res["plugin-bare"][part], res["plugin"][part]
            rss = " / ".join(f"{res[w]['rss_mb']:.0f}" for w in ("plain", "plugin-bare", "plugin"))
            rss += f" (base {res['plain']['base_rss_mb']:.0f})"
            name = "autoencoder" if part == "ae_it_s" else "UNet"
            print(f"| {mode} | {name} | {p:.3f} | {b:.3f} | {g:.3f} | {b / p:.2f} | {g / p:.2f} "
                  f"| {rss} |")  # fmt: skip
        if "plugin-adversarial" in res:
            a, plain = res["plugin-adversarial"]["ae_it_s"], res["plain"]["ae_it_s"]
            print(f"| {mode} | autoencoder, adversarial {ADVERSARIAL} | {plain:.3f} | - "
                  f"| {a:.3f} | - | {a / plain:.2f} "
                  f"| {res['plugin-adversarial']['rss_mb']:.0f} (plugin) |")  # fmt: skip
    print()
    print("| mode | sampling (50 DDIM steps, guidance 2) images/s | images | peak RSS (MB) |")
    print("|---|---|---|---|")
    for mode, res in rows:
        s = res["sample"]
        print(f"| {mode} | {s['images_s']:.3f} | {s['n']} | {s['rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
