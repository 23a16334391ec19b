"""One training loop to build on: device, seeding, progress, logging, checkpoints, DDP.

Every plugin that trains receives a ``RunContext``. It knows the device, the
seed, where the run directory is (or that there is none, in tests), and gives
progress bars, ``log.jsonl`` lines, figures and atomic checkpoints. Under
``torchrun --nproc_per_node=N`` it wraps models in DistributedDataParallel and
only rank 0 writes files and logs.

``train_supervised`` is the loop the classifiers and segmenters share: AdamW,
cosine schedule, optional augmentation, early stopping on the validation part;
``SupervisedParams`` are its settings, which their params extend.

Importing this module loads no torch (plugin modules import ``SupervisedParams`` at
module level); the functions import it when called.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from pydantic import Field

from synthmri.core.errors import ConfigError, TrainingError
from synthmri.core.interfaces import StrictParams
from synthmri.core.stages import safe_name

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "BatchSize",
    "Epochs",
    "LearningRate",
    "Patience",
    "RunContext",
    "SupervisedParams",
    "check_finite",
    "distributed_world_size",
    "init_distributed",
    "load_checkpoint",
    "minibatches",
    "predict_batched",
    "resolve_device",
    "save_atomic",
    "seed_everything",
    "train_supervised",
    "unwrap",
]

# ------------------------------------------------------------------ basics


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when present else CPU; ``cuda`` without a GPU is an error."""
    import torch

    if isinstance(spec, torch.device):
        return spec
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "device 'cuda' asked for, but no CUDA GPU is available",
            hint="use --device cpu or --device auto",
        )
    if spec.startswith("cuda") and distributed_world_size() > 1 and ":" not in spec:
        spec = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    try:
        return torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"unknown device {spec!r}", hint="use auto, cpu or cuda") from None


def distributed_world_size() -> int:
    """Number of processes when launched by torchrun, else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the torchrun process group once (gloo on CPU, nccl on CUDA); (rank, world)."""
    world = distributed_world_size()
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def check_finite(value: torch.Tensor | float, what: str) -> None:
    """Stop with a clear TrainingError when a logged value is NaN or infinite."""
    v = float(value)
    if not math.isfinite(v):
        raise TrainingError(
            f"{what} became {v}: training diverged",
            hint="lower the learning rate, or check the data for constant or broken images",
        )


def minibatches(
    n: int,
    batch_size: int,
    generator: torch.Generator,
    drop_last: bool = True,
    rank: int = 0,
    world: int = 1,
) -> Iterator[torch.Tensor]:
    """Endless shuffled index batches over ``n`` items (sharded by rank under DDP)."""
    import torch

    if n <= 0:
        raise ConfigError("cannot train on an empty set")
    batch_size = max(1, min(batch_size, n))
    while True:
        perm = torch.randperm(n, generator=generator)[rank::world]
        stop = len(perm) - (len(perm) % batch_size if drop_last and len(perm) >= batch_size else 0)
        for i in range(0, stop, batch_size):
            yield perm[i : i + batch_size]


# ------------------------------------------------------------------ the run


class _Progress:
    def __init__(self, bar: Any, task: Any) -> None:
        self._bar, self._task = bar, task

    def advance(self, n: int = 1, **info: Any) -> None:
        """Move the bar by ``n``; ``info`` (short values) is shown beside it."""
        if self._bar is None:
            return
        text = " ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items()
        )
        self._bar.update(self._task, advance=n, info=text)


class RunContext:
    """Where a stage runs: device, seed, run directory, progress, logs, figures, checkpoints.

    ``RunContext()`` with no directory is what tests and notebooks use: nothing
    is written, progress is silent. The pipeline makes one per run and gives each
    stage ``run.child("generate/dcgan")``.
    """

    def __init__(
        self,
        out_dir: str | Path | None = None,
        device: str | torch.device = "auto",
        seed: int = 0,
        quiet: bool = True,
        stage: str = "",
        console: Any = None,
    ) -> None:
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.device = resolve_device(device)
        self.seed = seed
        self.quiet = quiet
        self.stage = stage
        self.console = console
        self.rank, self.world_size = init_distributed(self.device)
        self.figures: list[Path] = []
        self.notes: list[str] = []
        self._progress: Any = None
        self._log_file: Any = None
        if self.out_dir is not None and self.is_main:
            for sub in ("figures", "checkpoints"):
                (self.out_dir / sub).mkdir(parents=True, exist_ok=True)

    # -- identity
    @property
    def is_main(self) -> bool:
        """True on rank 0 (the only rank that writes files and logs)."""
        return self.rank == 0

    def child(self, stage: str) -> RunContext:
        """The same run, for another stage (shares logs, figures, progress)."""
        other = copy.copy(self)
        other.stage = stage
        return other

    # -- logging
    def log(self, **values: Any) -> None:
        """Append one line to ``log.jsonl`` (stage and time added)."""
        if self.out_dir is None or not self.is_main:
            return
        line = {"time": round(time.time(), 3), "stage": self.stage}
        line.update({k: _plain(v) for k, v in values.items()})
        with open(self.out_dir / "log.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")

    def note(self, message: str) -> None:
        """A message for the user (printed unless quiet) and the log."""
        self.notes.append(f"[{self.stage}] {message}" if self.stage else message)
        self.log(note=message)
        if not self.quiet and self.console is not None and self.is_main:
            self.console.print(f"[yellow]note[/] {self.stage}: {message}")

    @contextlib.contextmanager
    def progress(self, total: int, description: str = "") -> Iterator[_Progress]:
        """A progress bar for ``total`` steps (silent when quiet or not rank 0)."""
        if self.quiet or not self.is_main:
            yield _Progress(None, None)
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            transient=True,
        )
        with bar:
            task = bar.add_task(description or self.stage, total=total, info="")
            yield _Progress(bar, task)

    # -- files
    def path(self, *parts: str) -> Path | None:
        """A path inside the run directory (parents created), or None without one."""
        if self.out_dir is None or not self.is_main:
            return None
        p = self.out_dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def save_figure(self, fig: Any, name: str) -> Path | None:
        """Save a matplotlib figure as ``figures/<stage>-<name>.png`` and close it."""
        import matplotlib.pyplot as plt

        stem = f"{self.stage}-{name}" if self.stage else name
        target = self.path("figures", safe_name(stem) + ".png")
        if target is not None:
            fig.savefig(target, dpi=100, bbox_inches="tight")
            self.figures.append(target)
        plt.close(fig)
        return target

    def save_checkpoint(self, name: str, payload: dict[str, Any]) -> Path | None:
        """Write ``checkpoints/<name>.pt`` atomically (temp file, then rename)."""
        target = self.path("checkpoints", safe_name(name) + ".pt")
        if target is None:
            return None
        save_atomic(payload, target)
        return target

    # -- speed
    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast on CUDA where supported, nothing on CPU."""
        import torch

        if self.device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move to the device (channels_last on CUDA); under torchrun wrap in DDP."""
        import torch

        model = model.to(self.device)
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=ids)
        return model

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU torch.Generator seeded from the run seed (plus ``offset``)."""
        import torch

        return torch.Generator().manual_seed(self.seed + offset)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or the module itself)."""
    return getattr(model, "module", model)


def save_atomic(payload: Any, target: Path) -> None:
    """``torch.save`` to a temp file beside ``target``, then rename over it."""
    import torch

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, target)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``); errors name the file."""
    import torch

    from synthmri.core.errors import DataError

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: checkpoint not found")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{p}: cannot read checkpoint ({type(exc).__name__}: {exc})") from None


def _plain(v: Any) -> Any:
    import torch

    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    return v


# ------------------------------------------------------------------ supervised loop

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

    def loop_settings(self) -> dict[str, Any]:
        """The keyword arguments of ``train_supervised`` these params set."""
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "patience": self.patience,
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
) -> dict[str, Any]:
    """Train ``model`` with AdamW and a cosine schedule; keep the best validation weights.

    ``score_fn(outputs, targets)`` scores the validation part (higher is better);
    training stops after ``patience`` epochs without improvement and the best
    weights are restored. ``augment(x)`` (or ``augment(x, y)`` with
    ``augment_target``) is applied to each training batch. Returns the history.
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
    steps_per_epoch = max(1, per_rank // max(1, min(batch_size, per_rank)))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    batches = minibatches(
        n, batch_size, run.generator(101), drop_last=True, rank=run.rank, world=run.world_size
    )
    history: dict[str, Any] = {"train_loss": [], "val_score": [], "best_epoch": 0}
    best_score, best_state, stale = -math.inf, None, 0
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    with run.progress(epochs, description) as bar:
        for epoch in range(epochs):
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
            run.log(epoch=epoch, **{f"{description}/{k}": v for k, v in info.items()})
            bar.advance(1, **info)
            if val_x is not None and stale >= patience:
                run.log(event="early_stop", epoch=epoch)
                break
    if best_state is not None:
        unwrap(net).load_state_dict(best_state)
    unwrap(net).eval()
    history["epochs_run"] = len(history["train_loss"])
    return history


def predict_batched(
    model: nn.Module,
    x: torch.Tensor,
    device: torch.device,
    batch_size: int = 128,
    fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Run ``model`` (or ``fn``) over ``x`` in batches in eval mode; output on the CPU."""
    import torch

    was_training = model.training
    model.eval()
    call = fn or model
    outs = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size].to(device, non_blocking=True)
            if device.type == "cuda":
                xb = xb.contiguous(memory_format=torch.channels_last)
            outs.append(call(xb).float().cpu())
    model.train(was_training)
    if not outs:
        return torch.empty(0)
    return torch.cat(outs)
