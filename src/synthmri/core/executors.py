"""Run the stages whose inputs are ready: ``serial`` (one after another in this process),
``local`` (a process pool on this machine) or ``ray`` (Ray tasks, optional extra
``synthmri[ray]``).

The pipeline hands an executor a list of independent :class:`StageJob` s (all generator
stages, later all experiment stages) and a callback; the executor runs each job's
function and calls the callback in the parent process as each one finishes. The parent
owns the run directory: it stores results in the stage cache (``stages.json``), writes
``log.jsonl`` and shows progress. A job running in a worker gets a :class:`StageRun`, a
``RunContext`` that keeps its log lines and notes in memory (they travel back with the
result and the parent writes them); the only files a worker writes are its own stage's
figures (``figures/<stage>-*.png``, named by the stage key, so workers never share a file).

Results do not depend on the executor: every stage seeds itself from the run seed and its
key (``stage_seed``), and its inputs and result cross the process boundary as pickles.

The local pool starts its workers with ``fork`` on Linux, so plugins registered in the
parent process (a test's plugins, a notebook's) are known in the workers without being
installed. The workers are forked when the run starts, after the heavy imports
(``PRELOAD``) and before the parent runs any torch code (OpenMP threads do not survive a
fork). Other systems use ``spawn``: there a plugin must be installed (an entry point) to
be found in a worker.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import multiprocessing
import os
import pickle
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from synthmri.core.errors import ConfigError, SynthMRIError, TrainingError
from synthmri.core.machine import available_memory, cores, release_memory
from synthmri.core.training import RunContext

if TYPE_CHECKING:
    from synthmri.core.recipe import ExecutorConfig

__all__ = [
    "EXECUTORS",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "SerialExecutor",
    "StageJob",
    "StageResult",
    "StageRun",
    "check_executor",
    "default_workers",
    "executor_for",
    "make_executor",
]

EXECUTORS: tuple[str, ...] = ("serial", "local", "ray")
#: memory set aside per local worker when choosing the default number of workers
WORKER_MEMORY_BYTES = 2 * 1024**3
#: what the parent imports before forking the local pool's workers, so that each worker
#: does not import it again (seconds of CPU each); importing starts no torch threads.
#: Not MONAI: the parent's startup would pay ~2 s for it in runs that never use it (the
#: quickstart); a worker whose stage needs it imports it then
PRELOAD: tuple[str, ...] = ("torch", "torchvision")


@dataclass
class StageResult:
    """What a stage function returns: ``payload`` (plain data and tensors, stored in the
    stage cache) and, in this process only, ``live`` (the trained model, so a serial run
    need not rebuild it from its state; a worker's result crosses without it)."""

    payload: dict[str, Any]
    live: Any = None


@dataclass
class StageJob:
    """One stage to run: ``fn(*make_args(), run)`` with ``run`` the stage's RunContext.

    ``fn`` must be a module-level function (it is pickled by reference); ``make_args`` is
    called when the stage starts, so only the inputs of running stages are held. ``cost``
    (e.g. the number of training images) orders a parallel executor's queue: the costliest
    stages start first, so a long stage does not start last and run alone."""

    key: str
    fn: Callable[..., StageResult]
    make_args: Callable[[], tuple[Any, ...]]
    cost: float = 0.0


Done = Callable[[StageJob, StageResult], None]


def default_workers() -> int:
    """Workers of the local pool when none are asked for: one per core, at most one per
    ``WORKER_MEMORY_BYTES`` of available memory, at least one."""
    n = cores()
    mem = available_memory()
    if mem is not None:
        n = min(n, mem // WORKER_MEMORY_BYTES)
    return max(1, int(n))


# ------------------------------------------------------------------ the stage's context


class StageRun(RunContext):
    """The RunContext of a stage in a worker: log lines and notes are kept in memory (the
    parent writes them), progress is silent, figures are written (they are the stage's own)."""

    def __init__(self, out_dir: Path | None, device: str, seed: int, stage: str) -> None:
        super().__init__(out_dir, device=device, seed=seed, quiet=True, stage=stage)
        self.lines: list[dict[str, Any]] = []
        self.messages: list[tuple[str, str]] = []

    def log(self, **values: Any) -> None:
        """Keep one ``log.jsonl`` line (stage and time added) for the parent to write."""
        from synthmri.core.training import _plain

        line = {"time": round(time.time(), 3), "stage": self.stage}
        line.update({k: _plain(v) for k, v in values.items()})
        self.lines.append(json.loads(json.dumps(line, default=str)))

    def note(self, message: str) -> None:
        """Keep a note for the parent (which logs and prints it)."""
        self.messages.append((self.stage, message))


@dataclass
class _Spec:
    """What a worker needs to build a stage's StageRun."""

    key: str
    out_dir: str | None
    device: str
    seed: int
    threads: int | None = None


@dataclass
class _Outcome:
    """A stage's result as it comes back from a worker."""

    result: bytes | None
    lines: list[dict[str, Any]] = field(default_factory=list)
    messages: list[tuple[str, str]] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    error: bytes | None = None


def _spec(run: RunContext, key: str, threads: int | None = None) -> _Spec:
    out = str(run.out_dir) if run.out_dir is not None and run.is_main else None
    return _Spec(key, out, str(run.device), run.seed, threads)


def _in_worker(blob: bytes, spec: _Spec) -> _Outcome:
    """Run one stage in a worker process; errors come back as data, never raised."""
    release_memory()  # what the worker's previous stage left
    if spec.threads:
        import torch

        torch.set_num_threads(spec.threads)
    ctx: StageRun | None = None
    try:
        fn, args = pickle.loads(blob)
        out = Path(spec.out_dir) if spec.out_dir else None
        ctx = StageRun(out, spec.device, spec.seed, spec.key)
        result = fn(*args, ctx)
        data = pickle.dumps(StageResult(result.payload), protocol=pickle.HIGHEST_PROTOCOL)
        return _Outcome(data, ctx.lines, ctx.messages, [str(p) for p in ctx.figures])
    except BaseException as exc:
        outcome = _Outcome(None, error=_pack_error(exc))
        if ctx is not None:
            outcome.lines, outcome.messages = ctx.lines, ctx.messages
            outcome.figures = [str(p) for p in ctx.figures]
        return outcome


def _pack_error(exc: BaseException) -> bytes:
    """An exception as bytes that unpickle to the same type and message in the parent."""
    text = "".join(traceback.format_exception(exc))
    if isinstance(exc, SynthMRIError):
        with contextlib.suppress(Exception):
            return pickle.dumps(("synthmri", type(exc), exc.message, exc.hint, text))
    with contextlib.suppress(Exception):
        data = pickle.dumps(exc)
        back = pickle.loads(data)
        if type(back) is type(exc) and str(back) == str(exc):
            return pickle.dumps(("pickled", data, text))
    return pickle.dumps(("named", type(exc).__name__, str(exc), text))


def _unpack_error(data: bytes) -> BaseException:
    """The exception :func:`_pack_error` packed, with the worker's traceback as a note."""
    packed = pickle.loads(data)
    if packed[0] == "synthmri":
        _, cls, message, hint, text = packed
        exc: BaseException = cls.__new__(cls)
        Exception.__init__(exc, message)
        exc.message, exc.hint = message, hint  # type: ignore[attr-defined]
    elif packed[0] == "pickled":
        _, raw, text = packed
        exc = pickle.loads(raw)
    else:
        _, name, message, text = packed
        exc = type(name, (Exception,), {"__module__": "synthmri.worker"})(message)
    exc.add_note("in a worker process:\n" + text)
    return exc


def _replay(outcome: _Outcome, run: RunContext, key: str) -> list[Path]:
    """Write a worker's log lines and notes through the parent's run; its figures' paths."""
    for line in outcome.lines:
        if run.files is not None and run.is_main:
            run.files.append_text(json.dumps(line) + "\n", "log.jsonl")
        if run.tracker is not None:
            run.tracker.log_line(line)
    for stage, message in outcome.messages:
        run.child(stage).note(message)
    return [Path(p) for p in outcome.figures]


def _add_figures(run: RunContext, paths: list[Path]) -> None:
    """Add a worker's figures to the run (in the report; to the tracker with captions)."""
    for path in paths:
        run.figures.append(path)
        if run.tracker is not None:
            caption = path.with_suffix(".txt")
            run.tracker.figure(path, caption.read_text() if caption.is_file() else None)


# ------------------------------------------------------------------ executors


class Executor:
    """Runs independent stages; see the module docstring. Use as a context manager."""

    name = "serial"
    workers = 1

    def run(self, jobs: list[StageJob], run: RunContext, done: Done, label: str) -> None:
        """Run ``jobs``; call ``done(job, result)`` in this process as each one ends. The
        first failure is raised (after the stages already running have ended and been
        passed to ``done``, so nothing finished is lost)."""
        raise NotImplementedError

    def describe(self) -> str:
        """A short description for the log (``local, 2 workers x 1 thread``)."""
        return self.name

    def close(self) -> None:
        """Release workers (nothing for ``serial``)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SerialExecutor(Executor):
    """Today's behaviour: every stage in this process, one after another, in order."""

    def run(self, jobs: list[StageJob], run: RunContext, done: Done, label: str) -> None:
        """Run each job in order with ``run.child(key)`` as its context."""
        for job in jobs:
            done(job, job.fn(*job.make_args(), run.child(job.key)))


class LocalExecutor(Executor):
    """A process pool on this machine: ``workers`` processes, ``threads`` torch threads
    each (default: cores // workers)."""

    name = "local"

    def __init__(self, workers: int | None = None, threads: int | None = None) -> None:
        self.workers = workers or default_workers()
        if self.workers < 1:
            raise ConfigError(f"--workers {self.workers}: must be at least 1")
        self.threads = threads or max(1, cores() // self.workers)
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        self._context = multiprocessing.get_context(method)
        self._pool: ProcessPoolExecutor | None = None
        self._start()

    def describe(self) -> str:
        """``local, N workers x T threads``."""
        plural = "s" if self.threads != 1 else ""
        return f"local, {self.workers} workers x {self.threads} thread{plural}"

    def _start(self) -> None:
        for module in PRELOAD:  # imported once here, not once per worker
            with contextlib.suppress(ImportError):
                importlib.import_module(module)
        self._pool = ProcessPoolExecutor(
            self.workers,
            mp_context=self._context,
            initializer=_init_worker,
            initargs=(self.threads,),
        )
        # with fork the pool starts every worker at its first task: start them now, before
        # this process runs torch code (OpenMP threads do not survive a fork)
        self._pool.submit(os.getpid).result()

    def run(self, jobs: list[StageJob], run: RunContext, done: Done, label: str) -> None:
        """Keep every worker busy; results are handled here as they come."""
        if not jobs:
            return
        release_memory()  # this process's freed heap, while the workers fill theirs
        if self._pool is None:  # broken earlier
            self._start()
        assert self._pool is not None
        queue = sorted(jobs, key=lambda j: -j.cost)
        running: dict[Future[_Outcome], StageJob] = {}
        figures: dict[str, list[Path]] = {}
        first_error: BaseException | None = None
        try:
            with run.progress(len(jobs), f"{label} ({self.describe()})") as bar:
                while queue or running:
                    while queue and first_error is None and len(running) < self.workers:
                        job = queue.pop(0)
                        blob = pickle.dumps((job.fn, job.make_args()), pickle.HIGHEST_PROTOCOL)
                        try:  # a worker may die while stages are still being handed out
                            fut = self._pool.submit(_in_worker, blob, _spec(run, job.key))
                        except BrokenProcessPool:
                            self._died(run, list(running.values()))
                        running[fut] = job
                    if first_error is not None:
                        queue.clear()
                    if not running:
                        break
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        job = running.pop(fut)
                        try:
                            outcome = fut.result()
                        except BrokenProcessPool:
                            self._died(run, [job, *running.values()])
                        error = _finish(outcome, job, run, figures, done, bar)
                        first_error = first_error or error
        except BaseException:
            if running:  # an interrupt, or the callback failed: stop the workers now
                self._broken()
            raise
        finally:
            for job in jobs:
                _add_figures(run, figures.get(job.key, []))
        if first_error is not None:
            raise first_error

    def _died(self, run: RunContext, lost: list[StageJob]) -> NoReturn:
        """A worker died: stop the pool and say which stages were lost and how to resume."""
        self._broken()
        raise TrainingError(
            "a worker process died (killed, or out of memory) while running "
            f"{_listing([j.key for j in lost])}; finished stages are kept",
            hint=f"rerun with --resume {_run_dir(run)} to reuse them; "
            "use fewer --workers if memory ran out",
        ) from None

    def _broken(self) -> None:
        """Stop every worker (a dead one broke the pool); the next run starts a new pool."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for proc in list(getattr(pool, "_processes", {}).values()):
            with contextlib.suppress(Exception):
                proc.kill()
        pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        """Shut the pool down."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _run_dir(run: RunContext) -> str:
    return str(run.out_dir) if run.out_dir is not None else "<the run directory>"


def _listing(keys: list[str]) -> str:
    if not keys:
        return "a stage"
    shown = ", ".join(repr(k) for k in keys[:4])
    return f"one of {shown}" + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")


class RayExecutor(Executor):
    """Each stage a Ray task asking for ``cpus`` CPUs and ``gpus`` GPUs (fractions allowed),
    retried up to ``max_retries`` times when its worker dies. Joins the cluster named by
    ``RAY_ADDRESS``; else starts Ray on this machine with ``num_cpus`` CPUs (default: all).
    The run directory must be on a path every node sees (a stage writes its figures there).
    """

    name = "ray"

    def __init__(
        self,
        cpus: float = 1,
        gpus: float = 0,
        max_retries: int = 2,
        num_cpus: int | None = None,
    ) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError(
                "--executor ray needs Ray, which is not installed",
                hint="pip install 'synthmri[ray]'",
            ) from None
        self._ray = ray
        self.cpus, self.gpus, self.max_retries = cpus, gpus, max_retries
        self._owns = False
        if not ray.is_initialized():
            import logging

            options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
            if os.environ.get("RAY_ADDRESS"):
                ray.init(address=os.environ["RAY_ADDRESS"], **options)
            else:  # a local Ray: its workers see the modules this process sees
                path = os.pathsep.join(p for p in sys.path if p)
                ray.init(
                    num_cpus=num_cpus or cores(),
                    include_dashboard=False,
                    runtime_env={"env_vars": {"PYTHONPATH": path}},
                    **options,
                )
            self._owns = True
        total = int(ray.cluster_resources().get("CPU", 1))
        self.workers = max(1, int(total // max(cpus, 1e-9)))

    def describe(self) -> str:
        """``ray, N CPUs (C per stage, G GPUs per stage)``."""
        return f"ray, {self.workers} stages at once ({self.cpus:g} CPU, {self.gpus:g} GPU each)"

    def run(self, jobs: list[StageJob], run: RunContext, done: Done, label: str) -> None:
        """Submit every job as a Ray task; handle results here as they come."""
        if not jobs:
            return
        ray = self._ray
        task = ray.remote(_in_worker).options(
            num_cpus=self.cpus,
            num_gpus=self.gpus,
            max_retries=self.max_retries,
            retry_exceptions=False,
        )
        threads = max(1, int(self.cpus))
        refs = {}
        for job in sorted(jobs, key=lambda j: -j.cost):
            blob = pickle.dumps((job.fn, job.make_args()), pickle.HIGHEST_PROTOCOL)
            refs[task.remote(blob, _spec(run, job.key, threads))] = job
        figures: dict[str, list[Path]] = {}
        first_error: BaseException | None = None
        try:
            with run.progress(len(jobs), f"{label} ({self.describe()})") as bar:
                pending = list(refs)
                while pending:
                    finished, pending = ray.wait(pending, num_returns=1)
                    job = refs[finished[0]]
                    try:
                        outcome = ray.get(finished[0])
                    except ray.exceptions.RayError as exc:
                        first_error = first_error or TrainingError(
                            f"stage {job.key!r}: its Ray worker failed "
                            f"{self.max_retries + 1} times ({_first_line(exc)}); "
                            "finished stages are kept",
                            hint=f"rerun with --resume {_run_dir(run)} to reuse them",
                        )
                        continue
                    error = _finish(outcome, job, run, figures, done, bar)
                    first_error = first_error or error
        except BaseException:
            for ref in refs:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            raise
        finally:
            for job in jobs:
                _add_figures(run, figures.get(job.key, []))
        if first_error is not None:
            raise first_error

    def close(self) -> None:
        """Shut down the Ray this executor started (a joined cluster is left running)."""
        if self._owns:
            self._ray.shutdown()
            self._owns = False


def _finish(
    outcome: _Outcome,
    job: StageJob,
    run: RunContext,
    figures: dict[str, list[Path]],
    done: Done,
    bar: Any,
) -> BaseException | None:
    """A stage a worker finished: its log lines and figures replayed here, its result handed
    to ``done``; or the error it raised, returned."""
    figures[job.key] = _replay(outcome, run, job.key)
    if outcome.error is not None:
        return _unpack_error(outcome.error)
    assert outcome.result is not None
    done(job, pickle.loads(outcome.result))
    bar.advance(finished=job.key)
    return None


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


def check_executor(kind: str | Executor | None, config: ExecutorConfig | None = None) -> None:
    """A ConfigError for an unknown executor, or ``ray`` when Ray is not installed (before
    a run directory exists)."""
    if isinstance(kind, Executor):
        return
    kind = kind or (config.kind if config is not None else "serial")
    if kind not in EXECUTORS:
        raise ConfigError(f"--executor {kind!r}: unknown", hint=f"use {', '.join(EXECUTORS)}")
    if kind == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise ConfigError(
                "--executor ray needs Ray, which is not installed",
                hint="pip install 'synthmri[ray]'",
            )


def make_executor(
    config: ExecutorConfig | None = None,
    kind: str | None = None,
    workers: int | None = None,
    device: str = "cpu",
) -> Executor:
    """The executor a run asks for: ``kind`` / ``workers`` (the CLI's options) over the
    recipe's ``executor:`` section; under torchrun always ``serial``."""
    check_executor(kind, config)
    kind = kind or (config.kind if config is not None else "serial")
    workers = workers or (config.workers if config is not None else None)
    if kind == "serial" or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return SerialExecutor()
    if kind == "local":
        # forked workers cannot use CUDA once the parent has touched it, and stages on one
        # GPU gain little from sharing it: on CUDA the stages run one after another (Ray
        # spreads them over several GPUs)
        return SerialExecutor() if device.startswith("cuda") else LocalExecutor(workers)
    cpus = config.cpus_per_stage if config is not None else 1.0
    gpus = 0.0
    if device.startswith("cuda"):
        gpus = config.gpus_per_stage if config is not None else 1.0
    retries = config.max_retries if config is not None else 2
    return RayExecutor(cpus=cpus, gpus=gpus, max_retries=retries, num_cpus=workers)


@contextlib.contextmanager
def executor_for(
    config: ExecutorConfig | None, kind: str | Executor | None, workers: int | None, device: str
) -> Iterator[Executor]:
    """An executor for one run (an Executor instance given is used, not closed)."""
    if isinstance(kind, Executor):
        yield kind
        return
    executor = make_executor(config, kind, workers, device)
    try:
        yield executor
    finally:
        executor.close()
