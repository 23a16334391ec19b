"""Classifier throughput: the plugin's training loop vs a plain PyTorch loop, and inference.

For each model, on a fixed set of phantoms:

- ``plugin train``: images/s of ``Classifier.fit`` (``core.supervised.train_supervised``:
  AdamW, cosine schedule, loss synced once per epoch), no validation part, no augmentation
  unless ``--augment``;
- ``plain train``: images/s of a bare loop with the same network, batch size, optimizer,
  schedule and loss, in this script (both timings include building the network);
- ``ratio``: plugin / plain (1.0 = no overhead);
- ``plugin infer`` / ``plain infer``: images/s of ``predict_proba`` vs ``net(x)`` under
  ``torch.no_grad``;
- ``train/cpu-s``: plugin training images per second of process CPU time (with
  ``--threads 1`` close to what one idle core does, even on a busy shared machine).

Usage::

    python benchmarks/classifier_throughput.py                      # resnet18, brain_cnn
    python benchmarks/classifier_throughput.py --models resnet18 resnet152 mobilenet_v2 \\
        brain_cnn --size 64 --epochs 2 --threads 1
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from synthmri.core.phantoms import make_phantoms
from synthmri.core.training import RunContext, resolve_device
from synthmri.plugins.classifiers._base import NeuralClassifier
from synthmri.plugins.classifiers.brain_cnn import BrainCNN
from synthmri.plugins.classifiers.torchvision_models import MobileNetV2, ResNet


def make_model(name: str, params: dict[str, Any]) -> NeuralClassifier:
    """A classifier plugin from a benchmark model name (resnet<depth>, mobilenet_v2, ...)."""
    if name.startswith("resnet"):
        return ResNet({**params, "depth": int(name.removeprefix("resnet"))})
    if name == "mobilenet_v2":
        return MobileNetV2(params)
    if name == "brain_cnn":
        return BrainCNN(params)
    raise SystemExit(f"unknown model {name!r}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_train(
    build: Callable[[], nn.Module], x: torch.Tensor, y: torch.Tensor, epochs: int, batch: int,
    lr: float, weight_decay: float, device: torch.device,
) -> tuple[float, nn.Module]:  # fmt: skip
    """Seconds for building the network (as ``fit`` does) and ``epochs`` epochs of a bare
    AdamW + cosine + cross-entropy loop; and the trained network."""
    _sync(device)
    start = time.perf_counter()
    net = build().to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    steps = len(x) // batch
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps)
    loss_fn = nn.CrossEntropyLoss()
    x, y = x.to(device), y.to(device)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(steps):
            idx = perm[i * batch : (i + 1) * batch]
            loss = loss_fn(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    _sync(device)
    return time.perf_counter() - start, net


@torch.no_grad()
def plain_infer(net: nn.Module, x: torch.Tensor, batch: int, device: torch.device) -> float:
    """Seconds for ``net(x)`` in batches under no_grad."""
    net = net.to(device).eval()
    _sync(device)
    start = time.perf_counter()
    for i in range(0, len(x), batch):
        net(x[i : i + batch].to(device)).float().cpu()
    _sync(device)
    return time.perf_counter() - start


def bench(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Throughputs (images/s) of one model."""
    data = make_phantoms(args.n, args.size, seed=0)
    params = {"epochs": args.epochs, "batch_size": args.batch, "augment": args.augment}
    trained_images = args.epochs * (len(data) // args.batch) * args.batch

    # warm-up (allocator, kernels, lazy imports) on a few steps of each loop
    warm = make_model(name, {**params, "epochs": 1})
    warm.fit(data.subset(range(2 * args.batch)), None, RunContext(device=device, seed=0))

    def build() -> nn.Module:
        return make_model(name, params).build_network(2, 1, pretrained=False)

    plain_train(build, data.images[: 2 * args.batch], data.labels[: 2 * args.batch], 1,
                args.batch, 1e-3, 1e-4, device)  # fmt: skip

    model = make_model(name, params)
    _sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    model.fit(data, None, RunContext(device=device, seed=0))
    _sync(device)
    plugin_s = time.perf_counter() - start
    plugin_cpu_s = time.process_time() - cpu_start

    torch.manual_seed(0)
    p = model.params
    plain_s, net = plain_train(build, data.images, data.labels, args.epochs, args.batch, p.lr,
                               p.weight_decay, device)  # fmt: skip

    _sync(device)
    start = time.perf_counter()
    model.predict_proba(data.images)
    _sync(device)
    plugin_infer_s = time.perf_counter() - start
    infer_batch = max(64, 2 * args.batch)  # what predict_proba uses
    plain_infer_s = plain_infer(net, data.images, infer_batch, device)
    return {
        "plugin_train": trained_images / plugin_s,
        "plain_train": trained_images / plain_s,
        "ratio": plain_s / plugin_s,
        "plugin_train_cpu": trained_images / plugin_cpu_s,
        "plugin_infer": len(data) / plugin_infer_s,
        "plain_infer": len(data) / plain_infer_s,
    }


def main() -> None:
    """Parse arguments, run every model, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "brain_cnn"])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--n", type=int, default=256, help="training images")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--augment", action="store_true", help="plugin loop with augmentation")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"device={device} threads={torch.get_num_threads()} size={args.size} n={args.n} "
          f"epochs={args.epochs} batch={args.batch} augment={args.augment}")  # fmt: skip
    header = ("model", "plugin train", "plain train", "ratio", "plugin infer", "plain infer",
              "train/cpu-s")  # fmt: skip
    print("{:<14}{:>14}{:>13}{:>8}{:>14}{:>13}{:>13}".format(*header))
    for name in args.models:
        r = bench(name, args, device)
        if not all(math.isfinite(v) for v in r.values()):
            raise SystemExit(f"{name}: a timing was not finite")
        print(f"{name:<14}{r['plugin_train']:>14.1f}{r['plain_train']:>13.1f}{r['ratio']:>8.2f}"
              f"{r['plugin_infer']:>14.1f}{r['plain_infer']:>13.1f}"
              f"{r['plugin_train_cpu']:>13.1f}")  # fmt: skip
    print("(images/s of wall time; ratio = plugin / plain training throughput; train/cpu-s = "
          "plugin training images per second of this process's CPU time, which a busy shared "
          "machine does not deflate as much)")  # fmt: skip


if __name__ == "__main__":
    main()
