"""BatchNorm statistics recomputed for a network's final (or averaged) weights."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import update_bn

__all__ = ["latent_batches", "recalibrate_bn"]


def recalibrate_bn(
    net: nn.Module,
    batches: Iterable[tuple[Any, ...]],
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
) -> None:
    """Recompute ``net``'s BatchNorm running statistics from ``batches``, then eval mode.

    ``torch.optim.swa_utils.update_bn``: the statistics are reset and averaged over all
    batches (``momentum=None``) in train mode, without gradients. A batch is the tuple of
    ``net``'s positional arguments (``(x,)``, or ``(z, y)`` for a conditional generator).
    ``batches`` is consumed lazily, so a generator that draws random inputs draws nothing
    when ``net`` has no BatchNorm.
    """
    with autocast():
        # update_bn keeps only the first item of a tuple batch: pass the tuple in a dict
        update_bn(({"args": args} for args in batches), _Batches(net))
    net.eval()


def latent_batches(
    n: int, batch: int, latent_dim: int, n_classes: int, device: torch.device
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """``n`` batches ``(z, y)`` for a generator ``G(z, y)``: z ~ N(0, I), then (when
    ``n_classes``) uniform class labels, drawn from the global torch RNG in that order."""
    for _ in range(n):
        z = torch.randn(batch, latent_dim, device=device)
        y = torch.randint(0, n_classes, (batch,), device=device) if n_classes else None
        yield z, y


class _Batches(nn.Module):
    """Calls ``net`` with the positional arguments of one batch (``{"args": (...)}``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, batch: dict[str, tuple[Any, ...]]) -> Any:
        return self.net(*batch["args"])
