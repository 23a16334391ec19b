"""Small modules the plugins' networks are built from."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["Normalized"]


class Normalized(nn.Module):
    """Scales the input, ``(x - mean) / std``, then runs ``net`` (state-dict keys ``net.*``)."""

    def __init__(self, net: nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.net = net
        self.mean, self.std = float(mean), float(std)

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - self.mean) / self.std)
