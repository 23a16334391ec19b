"""The supervised loop classifiers and segmenters share, and the settings they all accept.

``train_supervised``: AdamW, a cosine schedule, optional augmentation, early stopping on the
validation part with the best weights kept; its budget is a number of epochs, or a number of
optimiser steps whatever the training set's size (the fair setting when real fractions are
compared). ``SupervisedParams``: those settings as plugin params, which a plugin's ``Params``
extends.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from synthmri.core.interfaces import StrictParams
from synthmri.core.training import check_finite, minibatches, predict_batched, unwrap

if TYPE_CHECKING:
    import torch
    from torch import nn

    from synthmri.core.training import RunContext

__all__ = [
    "BatchSize",
    "Epochs",
    "LearningRate",
    "Patience",
    "SupervisedParams",
    "train_supervised",
]

Epochs = Annotated[int, Field(ge=1, description="maximum number of training epochs")]
BatchSize = Annotated[int, Field(ge=1, description="images per training step")]
LearningRate = Annotated[float, Field(gt=0, description="peak AdamW learning rate (cosine decay)")]
Patience = Annotated[
    int, Field(ge=1, description="stop after this many epochs without a better validation score")
]


class SupervisedParams(StrictParams):
    """The settings of ``train_supervised`` that every supervised plugin accepts.

    A plugin's params extend this model; one that needs other defaults redeclares the
    field with the same type alias and a new default (``epochs: Epochs = 30``).
    """

    epochs: Epochs = 20
    batch_size: BatchSize = 32
    lr: LearningRate = 1e-3
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    patience: Patience = 5
    augment: bool = Field(
        True,
        description="random flip / rotation / scale / intensity on training batches (masks "
        "get the same geometry)",
    )
    steps: int | None = Field(
        None,
        ge=1,
        description="budget in optimiser steps instead of epochs: the same number of updates "
        "whatever the training set's size, so a small real share is not under-trained (the "
        "fair setting for comparing real fractions); null: epochs",
    )
    check_every: int | None = Field(
        None,
        ge=1,
        description="with `steps`: optimiser steps between validation checks (patience counts "
        "checks); null: steps / 20",
    )

    def loop_settings(self) -> dict[str, Any]:
        """The keyword arguments of ``train_supervised`` these params set."""
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "patience": self.patience,
            "steps": self.steps,
            "check_every": self.check_every,
        }


def train_supervised(
    model: nn.Module,
    run: RunContext,
    *,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    score_fn: Callable[[torch.Tensor, torch.Tensor], float] | None = None,
    val_x: torch.Tensor | None = None,
    val_y: torch.Tensor | None = None,
    epochs: int = 20,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    patience: int = 5,
    augment: Callable[..., Any] | None = None,
    augment_target: bool = False,
    description: str = "train",
    steps: int | None = None,
    check_every: int | None = None,
) -> dict[str, Any]:
    """Train ``model`` with AdamW and a cosine schedule; keep the best validation weights.

    The budget is ``epochs`` passes over the training set, or, with ``steps``, that many
    optimiser steps whatever the set's size (validation every ``check_every`` steps,
    default ``steps / 20``). ``score_fn(outputs, targets)`` scores the validation part
    (higher is better) after each epoch (or check); training stops after ``patience``
    of them without improvement and the best weights are restored. ``augment(x)`` (or
    ``augment(x, y)`` with ``augment_target``) is applied to each training batch.
    Returns the history: losses, validation scores, the best one (``best_score``; None
    without validation) and where it was reached.
    """
    import torch

    device = run.device
    net = run.prepare(model)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        params,
        lr=lr,
        weight_decay=weight_decay,
        foreach=device.type != "cuda",
        fused=device.type == "cuda" or None,
    )
    n = train_x.shape[0]
    per_rank = max(1, math.ceil(n / run.world_size))
    rounds = _rounds(per_rank, batch_size, epochs, steps, check_every)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=sum(rounds))
    batches = minibatches(
        n, batch_size, run.generator(101), drop_last=True, rank=run.rank, world=run.world_size
    )
    history: dict[str, Any] = {"train_loss": [], "val_score": [], "best_epoch": 0}
    best_score, best_state, stale = -math.inf, None, 0
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    done = 0
    with run.progress(len(rounds), description) as bar:
        for epoch, steps_per_epoch in enumerate(rounds):
            net.train()
            total = torch.zeros((), device=device)
            for _ in range(steps_per_epoch):
                idx = next(batches)
                x, y = train_x[idx], train_y[idx]
                if augment is not None:
                    if augment_target:
                        x, y = augment(x, y)
                    else:
                        x = augment(x)
                x = x.to(device, non_blocking=True).contiguous(memory_format=fmt)
                y = y.to(device, non_blocking=True)
                with run.autocast():
                    loss = loss_fn(net(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.detach()
            epoch_loss = float(total) / steps_per_epoch  # one host sync per epoch
            check_finite(epoch_loss, f"{description} loss")
            history["train_loss"].append(epoch_loss)
            info: dict[str, Any] = {"loss": epoch_loss}
            if val_x is not None and val_y is not None and len(val_x) and score_fn is not None:
                out = predict_batched(unwrap(net), val_x, device, batch_size=max(64, batch_size))
                score = float(score_fn(out, val_y))
                history["val_score"].append(score)
                info["val"] = score
                if score > best_score:
                    best_score, stale = score, 0
                    history["best_epoch"] = epoch
                    best_state = {
                        k: v.detach().clone() for k, v in unwrap(net).state_dict().items()
                    }
                else:
                    stale += 1
            done += steps_per_epoch
            where = {"epoch": epoch} if steps is None else {"step": done}
            run.log(**where, **{f"{description}/{k}": v for k, v in info.items()})
            bar.advance(1, **info)
            if val_x is not None and stale >= patience:
                run.log(event="early_stop", **where)
                break
    if best_state is not None:
        unwrap(net).load_state_dict(best_state)
    unwrap(net).eval()
    history["best_score"] = best_score if best_state is not None else None
    history["epochs_run"] = len(history["train_loss"])
    history["steps_run"] = done
    return history


def _rounds(
    n: int, batch_size: int, epochs: int, steps: int | None, check_every: int | None
) -> list[int]:
    """Optimiser steps between two validation checks, for the whole budget: ``epochs``
    passes over ``n`` items in full batches, or ``steps`` in rounds of ``check_every``."""
    if steps is None:
        return [max(1, n // max(1, min(batch_size, n)))] * epochs
    every = check_every or max(1, steps // 20)
    return [min(every, steps - start) for start in range(0, steps, every)]
