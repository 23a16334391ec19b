"""``dae_anomaly``'s training loop (``synthmri.nn.train_dae``) against a plain PyTorch loop.

Both train the same MONAI ``UNet`` (the plugin's default: channels 16-32-64-128, one residual
unit) to remove the same coarse noise (16 x 16 grid, std 0.2, inside the head) from 64 px
healthy phantoms, batch 16, Adam with cosine decay, MSE. The plain loop is written here with
no synthmri code in its step (index batches, noise, forward, loss, backward, step). Each is
timed over ``--steps`` steps after ``--warmup`` untimed ones, alternately ``--repeats`` times
(the best of each is kept: the shared CPU is noisy); the ratio is plugin / plain it/s. The
process's peak RSS is printed at the end.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/dae_training.py
    OMP_NUM_THREADS=1 python benchmarks/dae_training.py --steps 100 --repeats 3
"""

from __future__ import annotations

import argparse
import resource
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F

SIZE, BATCH, GRID, STD = 64, 16, 16, 0.2
CONFIG = {"channels": [16, 32, 64, 128], "res_units": 1, "image_channels": 1}


def plugin(images: torch.Tensor, heads: torch.Tensor, steps: int) -> float:
    """Seconds for ``steps`` steps of ``synthmri.nn.dae.train_dae``."""
    from synthmri import RunContext
    from synthmri.nn.dae import build_dae, train_dae

    params = SimpleNamespace(iterations=steps, batch_size=BATCH, lr=1e-3,
                             noise_resolution=[GRID], noise_std=STD, corruption="noise",
                             patch_radius=[0.05, 0.2], log_every=50)  # fmt: skip
    net = build_dae(CONFIG)
    run = RunContext(seed=0, device="cpu")
    start = time.perf_counter()
    train_dae(net, images, heads, params, run)
    return time.perf_counter() - start


def plain(images: torch.Tensor, heads: torch.Tensor, steps: int) -> float:
    """Seconds for ``steps`` steps of a plain loop with the same network and noise."""
    from monai.networks.nets import UNet

    net = UNet(2, 1, 1, channels=CONFIG["channels"], strides=[2, 2, 2], num_res_units=1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator().manual_seed(0)
    fg = heads.float()
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(len(images), (BATCH,), generator=gen)
        x = images[idx]
        noise = F.interpolate(torch.randn(BATCH, 1, GRID, GRID, generator=gen) * STD,
                              size=(SIZE, SIZE), mode="bilinear", align_corners=False)  # fmt: skip
        loss = F.mse_loss(net(x + noise * fg[idx]), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before each")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from synthmri.core.phantoms import make_phantoms
    from synthmri.nn.anomaly_maps import head_masks

    data = make_phantoms(256, SIZE, seed=0, tumor_fraction=0.0)
    images, heads = data.images, head_masks(data.images)
    best = {"plain": float("inf"), "plugin": float("inf")}
    for _ in range(args.repeats):
        for name, fn in (("plain", plain), ("plugin", plugin)):
            fn(images, heads, args.warmup)
            best[name] = min(best[name], fn(images, heads, args.steps))
    rates = {k: args.steps / v for k, v in best.items()}
    print(f"{SIZE} px, batch {BATCH}, {args.steps} steps, best of {args.repeats}, "
          f"{args.threads} thread(s)")  # fmt: skip
    for name, rate in rates.items():
        print(f"{name:<8}{rate:8.2f} it/s")
    print(f"plugin / plain: {rates['plugin'] / rates['plain']:.2f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the process: {peak:.0f} MB")


if __name__ == "__main__":
    main()
