"""Networks of the evaluators' feature extractors (``plugins/evaluators/_features``)."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RandomCNN"]


class RandomCNN(nn.Module):
    """Four random conv layers, ReLU, global average and max pooling (512-d).

    A sanity baseline for feature-based metrics: never trained; ``reseed`` gives it fixed
    He-normal weights drawn from a seeded generator.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        widths = (channels, 32, 64, 128, 256)
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, 3, stride=1 if i == 0 else 2, padding=1)
            for i, (a, b) in enumerate(itertools.pairwise(widths))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[N, C, H, W]`` in [0, 1] -> features ``[N, 512]``."""
        x = (x - 0.5) / 0.25
        for conv in self.convs:
            x = F.relu(conv(x))
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)

    @torch.no_grad()
    def reseed(self, seed: int) -> RandomCNN:
        """He-normal weights from a generator seeded with ``seed``, zero biases; returns self."""
        g = torch.Generator().manual_seed(seed)
        for conv in self.convs:
            fan_in = conv.in_channels * 9
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            conv.bias.zero_()
        return self
