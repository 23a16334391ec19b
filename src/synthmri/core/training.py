"""One training loop to build on: device, seeding, progress, logging, checkpoints, DDP.

Every plugin that trains receives a ``RunContext``. It knows the device, the
seed, where the run directory is (or that there is none, in tests), and gives
progress bars, ``log.jsonl`` lines, figures and atomic checkpoints. Under
``torchrun --nproc_per_node=N`` it wraps models in DistributedDataParallel and
only rank 0 writes files and logs.

``predict_batched`` runs a model over a tensor in batches; the supervised loop built on
these pieces is in :mod:`.supervised`.

Importing this module loads no torch (plugin modules import it at module level); the
functions import it when called.
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
from typing import TYPE_CHECKING, Any

import numpy as np

from synthmri.core.errors import ConfigError, TrainingError
from synthmri.core.files import OutputDir, safe_name

if TYPE_CHECKING:
    import torch
    from torch import nn

    from synthmri.core.tracking import Tracker

__all__ = [
    "RunContext",
    "check_finite",
    "distributed_world_size",
    "init_distributed",
    "load_checkpoint",
    "minibatches",
    "predict_batched",
    "resolve_device",
    "save_atomic",
    "seed_everything",
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
        if self._bar is not None:
            self._bar.update(self._task, advance=n, info=_info_text(info))


class _PlainProgress:
    """Progress as plain lines, for a console that is not a terminal (a pipe, a log file):
    a line when the task starts and ends, with its elapsed time, and at most one line a
    ``every`` seconds between (no hidden bars, no cursor codes)."""

    every = 60.0

    def __init__(self, console: Any, name: str, total: int) -> None:
        self._console, self.name, self._total = console, name, total
        self._done = 0
        self.start = self._last = time.perf_counter()

    def say(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self._console.print(f"{stamp} {text}", markup=False, highlight=False, soft_wrap=True)

    def advance(self, n: int = 1, **info: Any) -> None:
        """Count ``n`` steps; every ``every`` seconds, a line with the count and ``info``."""
        self._done += n
        now = time.perf_counter()
        if now - self._last >= self.every:
            self._last = now
            self.say(f"  {self.name} {self._done}/{self._total} {_info_text(info)}".rstrip())


def _info_text(info: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())


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
        tracker: Tracker | None = None,
    ) -> None:
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.device = resolve_device(device)
        self.seed = seed
        self.quiet = quiet
        self.stage = stage
        self.console = console
        self.rank, self.world_size = init_distributed(self.device)
        #: experiment tracking (MLflow, TensorBoard): every log line and figure, rank 0 only
        self.tracker = tracker if self.is_main else None
        self.figures: list[Path] = []
        self.notes: list[str] = []
        self._progress: Any = None
        self._log_file: Any = None
        #: the writer bound to the run directory: every file of the run goes through it
        self.files: OutputDir | None = None
        if self.out_dir is not None and self.is_main:
            self.files = OutputDir(self.out_dir)
            for sub in ("figures", "checkpoints"):
                self.files.mkdir(sub)

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
        if self.files is not None:
            self.files.append_text(json.dumps(line) + "\n", "log.jsonl")
        if self.tracker is not None:
            self.tracker.log_line(line)

    def note(self, message: str) -> None:
        """A message for the user (printed unless quiet) and the log."""
        self.notes.append(f"[{self.stage}] {message}" if self.stage else message)
        self.log(note=message)
        if not self.quiet and self.console is not None and self.is_main:
            from rich.markup import escape

            self.console.print(f"[yellow]note[/] {escape(self.stage)}: {escape(message)}")

    @contextlib.contextmanager
    def progress(self, total: int, description: str = "") -> Iterator[_Progress | _PlainProgress]:
        """A progress bar for ``total`` steps (silent when quiet or not rank 0); plain lines
        when the console is not a terminal."""
        if self.quiet or not self.is_main:
            yield _Progress(None, None)
            return
        from rich import get_console

        console = self.console or get_console()
        if not console.is_terminal:
            name = description or self.stage
            if self.stage and not name.startswith(self.stage):  # "classify/...: train"
                name = f"{self.stage}: {name}"
            plain = _PlainProgress(console, name, total)
            plain.say(f"start {plain.name}")
            ended = "stopped"
            try:
                yield plain
                ended = "done"
            finally:
                plain.say(f"{ended} {plain.name} in {time.perf_counter() - plain.start:.1f} s")
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
            from rich.markup import escape

            task = bar.add_task(escape(description or self.stage), total=total, info="")
            yield _Progress(bar, task)

    # -- files
    def path(self, *parts: str) -> Path | None:
        """A path inside the run directory (each part made a safe file name, parents
        created), or None without one; a path that would leave the run directory is an
        OutputError."""
        if self.files is None or not self.is_main:
            return None
        return self.files.path(*parts)

    def save_figure(self, fig: Any, name: str, caption: str | None = None) -> Path | None:
        """Save a matplotlib figure as ``figures/<stage>-<name>.png`` and close it.

        ``caption`` says what to look for in the figure; it is stored beside it
        (``<stage>-<name>.txt``) and shown under it in the report.
        """
        import matplotlib.pyplot as plt

        stem = f"{self.stage}-{name}" if self.stage else name
        target = None
        try:
            if self.files is not None and self.is_main:
                target = self.files.save_figure(fig, "figures", safe_name(stem) + ".png")
                if caption:
                    self.files.write_text(caption.strip(), "figures", safe_name(stem) + ".txt")
                self.figures.append(target)
        finally:
            plt.close(fig)
        if target is not None and self.tracker is not None:
            self.tracker.figure(target, caption)
        return target

    def save_checkpoint(self, name: str, payload: dict[str, Any]) -> Path | None:
        """Write ``checkpoints/<name>.pt`` atomically (temp file, then rename)."""
        if self.files is None or not self.is_main:
            return None
        return self.files.save_torch(payload, "checkpoints", safe_name(name) + ".pt")

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
    """``torch.save`` to a temp file beside ``target``, then rename over it (the temp file
    is removed if the write fails; OS errors are an OutputError naming ``target``)."""
    OutputDir(target.parent).save_torch(payload, target.name)


#: the largest checkpoint ``load_checkpoint`` reads
MAX_CHECKPOINT_BYTES = 8 * 1024**3


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint safely: a regular file (never a FIFO or device), read with
    ``torch.load(weights_only=True)``, holding a dict. Every failure is a one-line
    DataError naming the file (a checkpoint that needs code to load is refused)."""
    import re

    import torch

    from synthmri.core.errors import DataError
    from synthmri.core.files import check_regular

    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: checkpoint not found")
    check_regular(p, MAX_CHECKPOINT_BYTES)
    hint = "give a checkpoint written by a synthmri run (its checkpoints/*.pt)"
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc)
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found:  # torch's weights-only unpickler refused a Python object
            raise DataError(
                f"{p}: refused: it holds a Python object ({found.group(1)}) that could run "
                "code when loaded; synthmri reads only tensors and plain data",
                hint=hint,
            ) from None
        raise DataError(
            f"{p}: not a readable checkpoint (corrupt or not a torch file: {_reason(text, exc)})",
            hint=hint,
        ) from None
    if not isinstance(ckpt, dict):
        raise DataError(
            f"{p}: not a synthmri checkpoint (it holds a {type(ckpt).__name__}, not a dict)",
            hint=hint,
        )
    return ckpt


def _reason(text: str, exc: BaseException) -> str:
    """The informative line of a torch.load error (not its advice to drop weights_only)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    keep = [
        ln
        for ln in lines
        if not ln.startswith(("Weights only load failed", "Please file an issue", "Check the doc"))
    ]
    line = (keep or lines or [type(exc).__name__])[0]
    return line.removeprefix("WeightsUnpickler error:").strip()[:160] or type(exc).__name__


def _plain(v: Any) -> Any:
    import torch

    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    return v


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
