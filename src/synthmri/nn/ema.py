"""An exponential moving average (EMA) of a network's weights, for sampling.

Written out rather than on ``torch.optim.swa_utils.AveragedModel``: the numbers would be
the same (an ``AveragedModel`` updated once at construction, with a ``multi_avg_fn`` that
lerps by ``1 - min(decay, (1 + k) / (10 + k))`` at ``k = num_averaged``), but
``AveragedModel.update_parameters`` reads its ``n_averaged`` counter on the host and
copies it to the parameters' device on every call (``bool(n_averaged == 0)``,
``n_averaged.to(device)``), which on CUDA is a host-device synchronisation per training
step. The GAN loops here have one host sync per ``log_every`` steps; this EMA keeps the
count in Python and adds none.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

__all__ = ["EMA"]


class EMA:
    """Exponential moving average of a module's parameters (buffers are copied).

    The average starts as a copy of ``model``; early on the decay is warmed up
    (``min(decay, (1 + k) / (10 + k))`` after ``k`` updates) so the random initial
    weights do not linger. ``module`` is the averaged copy, in eval mode, without grads.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.module: nn.Module = copy.deepcopy(_unwrap(model)).eval()
        self.module.requires_grad_(False)
        self._params = list(self.module.parameters())
        self._float_buffers, self._other_buffers = _split_buffers(self.module)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights (and copy its buffers)."""
        src = _unwrap(model)
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self._params, [p.detach() for p in src.parameters()], 1.0 - decay)
        float_buffers, other_buffers = _split_buffers(src)
        if float_buffers:
            torch._foreach_copy_(self._float_buffers, float_buffers)
        for dst, s in zip(self._other_buffers, other_buffers, strict=True):
            dst.copy_(s)


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def _split_buffers(module: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
    floats, others = [], []
    for b in module.buffers():
        (floats if b.is_floating_point() else others).append(b)
    return floats, others
