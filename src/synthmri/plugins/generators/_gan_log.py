"""The GAN base's training log: loss means and batch diversity every ``log_every`` steps.

Importing this module loads no torch (the GAN base imports it at module level).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

    from synthmri.core.training import RunContext


class BlockLog:
    """Sums a run's step losses; every ``log_every`` steps writes their means and the
    batch diversity to ``log.jsonl`` (one host sync), stops on NaN, notes a collapse
    (sample diversity under ``collapse_ratio`` of the real batch's; 0 = never)."""

    def __init__(
        self, name: str, iterations: int, collapse_ratio: float, run: RunContext, bar: Any
    ) -> None:
        self.name, self.ratio, self.run, self.bar = name, collapse_ratio, run, bar
        self.names: list[str] = []
        self.sums: Tensor | None = None
        self.count = self.done = 0
        self.collapse_from = max(1, iterations // 5)
        self.warned = False

    def add(self, losses: Mapping[str, Tensor]) -> None:
        """Add one step's losses."""
        import torch

        values = torch.stack([v.detach().float() for v in losses.values()])
        if self.sums is None:
            self.names, self.sums = list(losses), values
        else:
            self.sums = self.sums + values
        self.count += 1

    def write(self, step: int, fake: Tensor, real: Tensor) -> None:
        """The log line after ``step`` steps (``fake``, ``real``: the last batches' images)."""
        import torch

        from synthmri.core.training import check_finite
        from synthmri.nn.tensors import batch_diversity

        assert self.sums is not None
        with torch.no_grad():
            diversity = torch.stack([batch_diversity(fake), batch_diversity(real)])
            values = torch.cat([self.sums / self.count, diversity]).tolist()  # the host sync
        means = dict(zip(self.names, values[:-2], strict=True))
        div, div_real = values[-2:]
        check_finite(means["loss_d"], f"{self.name} discriminator loss")
        check_finite(means["loss_g"], f"{self.name} generator loss")
        self.run.log(step=step, **means, diversity=div, diversity_real=div_real)
        collapsed = div < self.ratio * div_real and step >= self.collapse_from
        if collapsed and not self.warned:
            self.warned = True
            self.run.note(
                f"{self.name}: possible mode collapse at step {step}: sample diversity "
                f"{div:.3g} is under {100 * self.ratio:g} % of the real {div_real:.3g}"
            )
        self.bar.advance(step - self.done, loss_d=means["loss_d"], loss_g=means["loss_g"])
        self.done = step
        self.sums, self.count = None, 0
