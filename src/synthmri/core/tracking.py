"""Experiment tracking: a run's params, metric curves, figures and files, sent to MLflow or
TensorBoard while it runs (``synthmri run --track mlflow``, or the recipe's ``tracking:``
section), or afterwards from a finished run directory (``synthmri export``).

A :class:`Tracker` is a small interface with one implementation per backend, chosen by name
(:func:`make_tracker`). ``RunContext.log`` and ``RunContext.save_figure``, the two places
everything a run reports passes through, hand each ``log.jsonl`` line and each figure to the
run's tracker (rank 0 only); the pipeline opens it (:func:`open_tracker`) and finishes it
(:meth:`Tracker.finish`: the results of ``metrics.json`` as metrics, the run directory as
artifacts, the run's status). With tracking off nothing here runs and neither MLflow nor
TensorBoard is imported. The run directory stays the record: a tracker that fails mid-run
is switched off with a note, and ``synthmri export`` can send the run again. What is sent:

- params: the resolved recipe, flattened (``generators.0.params.iterations``);
- tags: ``synthmri.version``, ``synthmri.recipe``, ``synthmri.run_dir`` and, when synthmri
  runs from a git checkout, ``synthmri.git_commit`` (``mlflow.source.git.commit`` too) and
  ``synthmri.git_dirty``;
- metrics: every numeric value of a ``log.jsonl`` line, named ``<stage>/<key>``, at the
  line's ``step`` or ``epoch`` (0 without one), and the result rows of ``metrics.json``
  (``classification/<model>/<train_on>/<generator>/<real fraction>/accuracy``, ...);
- figures: the PNG files (MLflow: artifacts under ``figures/``, captions beside as
  ``.txt``; TensorBoard: images, captions as text);
- artifacts: the whole run directory (MLflow; TensorBoard has no file store: it gets
  ``report.md`` as text).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from synthmri._version import __version__
from synthmri.core.errors import ConfigError
from synthmri.core.files import read_limited

if TYPE_CHECKING:
    from synthmri.core.recipe import Recipe, TrackingConfig

__all__ = [
    "BACKENDS",
    "MLflowTracker",
    "TensorBoardTracker",
    "Tracker",
    "flatten",
    "git_revision",
    "make_tracker",
    "metrics_of_line",
    "open_tracker",
    "read_run_recipe",
    "replay_run",
    "result_metrics",
    "run_tags",
]

BACKENDS: tuple[str, ...] = ("mlflow", "tensorboard")
_MAX_READ = 64 * 1024**2  # the largest recipe.yaml or metrics.json read back (log.jsonl: 64x)
_SKIP = frozenset({"time", "stage", "step", "epoch"})
_BAD_KEY = re.compile(r"[^\w\-. /]")  # MLflow keys: letters, digits, _ - . space /


def _key(name: str) -> str:
    return _BAD_KEY.sub("_", name).strip("/")[:250] or "_"


# ------------------------------------------------------------------ what is sent


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """A nested mapping (lists by position) as ``{"a.b.0.c": "value"}``; values as text."""
    out: dict[str, str] = {}
    if isinstance(obj, Mapping):
        items: Iterator[tuple[str, Any]] = ((str(k), v) for k, v in obj.items())
    elif (
        isinstance(obj, (list, tuple)) and obj and any(isinstance(v, (Mapping, list)) for v in obj)
    ):
        items = ((str(i), v) for i, v in enumerate(obj))
    else:
        return {prefix or "value": "" if obj is None else _text(obj)}
    empty = True
    for k, v in items:
        empty = False
        out.update(flatten(v, f"{prefix}.{k}" if prefix else k))
    if empty and prefix:
        out[prefix] = "[]" if isinstance(obj, (list, tuple)) else "{}"
    return out


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def metrics_of_line(line: Mapping[str, Any]) -> tuple[dict[str, float], int, float | None]:
    """The numeric values of one ``log.jsonl`` line as metrics named ``<stage>/<key>``, its
    step (``step``, else ``epoch``, else 0) and its time (seconds since the epoch, or None)."""
    stage = str(line.get("stage") or "")
    raw_step = line.get("step", line.get("epoch"))
    step = int(raw_step) if _number(raw_step) is not None else 0
    values = {}
    for k, v in line.items():
        number = _number(v)
        if k in _SKIP or number is None:
            continue
        values[_key(f"{stage}/{k}" if stage else str(k))] = number
    when = _number(line.get("time"))
    return values, step, when


_ID_FIELDS = ("classifier", "segmenter", "model", "train_on", "generator", "class")


def result_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The result rows of ``metrics.json`` as metrics: ``<section>/<identity>/<metric>``,
    where the identity is the row's model, train_on, generator and real fraction (or
    whichever of these it has); intervals as ``<metric>_ci_low`` / ``_ci_high``."""
    out: dict[str, float] = {}
    for section, rows in metrics.items():
        if not isinstance(rows, list) or not all(isinstance(r, Mapping) for r in rows):
            continue
        for row in rows:
            ident = [str(row[f]) for f in _ID_FIELDS if row.get(f) is not None]
            if "train_on" in row and row.get("generator") is None:
                ident.insert(ident.index(str(row["train_on"])) + 1, "real")
            if _number(row.get("real_fraction")) is not None:
                ident.append(f"{float(row['real_fraction']):g}")
            if row.get("unsupervised"):
                ident.append("unsupervised")
            base = "/".join([section, *ident])
            for k, v in row.items():
                if k in _ID_FIELDS or k == "real_fraction":
                    continue
                number = _number(v)
                if number is not None:
                    out[_key(f"{base}/{k}")] = number
                elif k.endswith("_ci") and isinstance(v, list) and len(v) == 2:
                    for end, x in zip(("low", "high"), v, strict=True):
                        if _number(x) is not None:
                            out[_key(f"{base}/{k}_{end}")] = float(x)
    return out


def git_revision(path: str | Path | None = None) -> tuple[str, bool] | None:
    """(commit, has uncommitted changes) of the git checkout ``path`` (default: synthmri's
    own source) lies in; None outside a checkout or without git."""
    where = str(Path(path) if path is not None else Path(__file__).resolve().parent)
    # --no-optional-locks: a read that never rewrites the checkout's index
    git = ["git", "--no-optional-locks", "-C", where]
    try:
        head, dirty = (
            subprocess.run(
                [*git, *cmd], capture_output=True, text=True, timeout=5, check=True
            ).stdout.strip()
            for cmd in (["rev-parse", "HEAD"], ["status", "--porcelain", "-uno"])
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if not re.fullmatch(r"[0-9a-f]{40,64}", head):
        return None
    return head, bool(dirty)


def run_tags(recipe_name: str, run_dir: Path) -> dict[str, str]:
    """The tags of a run: synthmri's version and git revision, the recipe, the run directory."""
    tags = {
        "synthmri.version": __version__,
        "synthmri.recipe": recipe_name,
        "synthmri.run_dir": str(run_dir.resolve()),
    }
    revision = git_revision()
    if revision is not None:
        tags["synthmri.git_commit"] = tags["mlflow.source.git.commit"] = revision[0]
        tags["synthmri.git_dirty"] = str(revision[1]).lower()
    return tags


# ------------------------------------------------------------------ the interface


class Tracker(ABC):
    """Where a run's params, metrics, figures and files are sent (one per run).

    Backends implement the five ``log_*`` / ``set_tags`` methods and ``close``; the
    conveniences (``log_line``, ``finish``) are built on them. A backend error during a
    run switches the tracker off (``error`` says why) instead of stopping the run.
    """

    name: ClassVar[str] = ""

    def __init__(self) -> None:
        self.error: str | None = None
        self.sent_figures: set[str] = set()

    @abstractmethod
    def log_params(self, params: Mapping[str, str]) -> None:
        """Record the run's settings (flat names, text values)."""

    @abstractmethod
    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Record tags (version, revision, ...)."""

    @abstractmethod
    def log_metrics(
        self, values: Mapping[str, float], step: int = 0, when: float | None = None
    ) -> None:
        """Record numeric values at ``step`` (``when``: seconds since the epoch)."""

    @abstractmethod
    def log_figure(self, path: Path, caption: str | None = None) -> None:
        """Record a figure (a PNG file) and what to look for in it."""

    @abstractmethod
    def log_artifacts(self, folder: Path) -> None:
        """Record the files of ``folder`` (the run directory)."""

    @abstractmethod
    def close(self, status: str = "FINISHED") -> None:
        """End the tracked run (``FINISHED`` or ``FAILED``) and release the backend."""

    def describe(self) -> str:
        """Where the run can be seen (a URL, a folder)."""
        return self.name

    # -- conveniences
    def safely(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        """Call ``fn``; on a backend error remember it and switch the tracker off."""
        if self.error is not None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            self.error = f"{self.name} tracking stopped ({what}: {type(exc).__name__}: {first})"

    def log_line(self, line: Mapping[str, Any]) -> None:
        """Send the numeric values of one ``log.jsonl`` line (see :func:`metrics_of_line`)."""
        values, step, when = metrics_of_line(line)
        if values:
            self.safely("metrics", self.log_metrics, values, step, when)

    def figure(self, path: Path, caption: str | None = None) -> None:
        """Send a figure as the run goes (errors switch the tracker off)."""
        self.sent_figures.add(path.name)
        self.safely("figure", self.log_figure, path, caption)

    def finish(
        self, run_dir: Path | None, metrics: Mapping[str, Any] | None = None, status: str = ""
    ) -> None:
        """At the end of a run: the figures not sent yet (the report's), its results as
        metrics, its directory as artifacts, then ``close`` with ``status`` (default FINISHED,
        or FAILED after a tracking error); KILLED (an interrupted run) sends no more files."""
        if status == "KILLED":
            run_dir = None
        figures = sorted((run_dir / "figures").glob("*.png")) if run_dir is not None else []
        for png in figures:
            if png.name not in self.sent_figures:
                side = png.with_suffix(".txt")
                self.figure(png, side.read_text(encoding="utf-8") if side.is_file() else None)
        if metrics:
            self.safely("results", self.log_metrics, result_metrics(metrics), 0)
        if run_dir is not None:
            self.safely("artifacts", self.log_artifacts, run_dir)
        try:
            self.close(status or ("FAILED" if self.error else "FINISHED"))
        except Exception as exc:
            self.error = self.error or f"{self.name}: closing failed ({type(exc).__name__})"


# ------------------------------------------------------------------ MLflow


class MLflowTracker(Tracker):
    """One MLflow run, through ``mlflow.MlflowClient`` (no global active run is touched).

    ``uri``: any tracking URI (``http://127.0.0.1:5000``, ``sqlite:///mlflow.db``; None:
    ``MLFLOW_TRACKING_URI`` or MLflow's default); a local database keeps its artifacts in
    ``mlartifacts/`` beside it. Metrics go in batches (every few seconds, at each figure).
    """

    name = "mlflow"
    FLUSH_SECONDS = 5.0
    FLUSH_SIZE = 500

    def __init__(
        self,
        uri: str | None,
        experiment: str,
        run_name: str,
        tags: Mapping[str, str] | None = None,
        artifacts: bool = True,
    ) -> None:
        super().__init__()
        try:
            from mlflow import MlflowClient
            from mlflow.entities import Metric, Param, RunTag
        except ImportError:
            raise ConfigError(
                "tracking with mlflow needs the package mlflow, which is not installed",
                hint="pip install 'synthmri[mlflow]', or run without --track",
            ) from None
        self._Metric, self._Param, self._RunTag = Metric, Param, RunTag
        if uri and uri.startswith(("http://", "https://")):
            _check_server(uri)
        self.upload = artifacts
        self._pending: list[Any] = []
        self._last_flush = time.monotonic()
        try:
            self.client = MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(experiment)
            exp_id = (
                found.experiment_id
                if found is not None
                else self.client.create_experiment(experiment, _local_artifacts(uri))
            )
            run = self.client.create_run(exp_id, run_name=run_name, tags=dict(tags or {}))
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise ConfigError(
                f"MLflow at {uri or 'the default tracking URI'}: {first}",
                hint="check tracking.uri (e.g. sqlite:///mlflow.db or http://127.0.0.1:5000)",
            ) from None
        self.run_id: str = run.info.run_id

    def describe(self) -> str:
        """The run's id and where it is stored."""
        return f"MLflow run {self.run_id} at {self.client.tracking_uri}"

    def log_params(self, params: Mapping[str, str]) -> None:
        """Params in batches of 100; values cut to MLflow's 6000 characters."""
        items = [
            self._Param(_key(k), v if len(v) <= 6000 else v[:5997] + "...")
            for k, v in params.items()
        ]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Tags, as one batch."""
        self.client.log_batch(
            self.run_id, tags=[self._RunTag(k, str(v)[:5000]) for k, v in tags.items()]
        )

    def log_metrics(
        self, values: Mapping[str, float], step: int = 0, when: float | None = None
    ) -> None:
        """Queue the values; send when the queue is large or old enough."""
        stamp = int((when if when is not None else time.time()) * 1000)
        self._pending += [self._Metric(k, float(v), stamp, int(step)) for k, v in values.items()]
        if (
            len(self._pending) >= self.FLUSH_SIZE
            or time.monotonic() - self._last_flush >= self.FLUSH_SECONDS
        ):
            self.flush()

    def flush(self) -> None:
        """Send the queued metrics (batches of 1000, MLflow's limit)."""
        pending, self._pending, self._last_flush = self._pending, [], time.monotonic()
        for i in range(0, len(pending), 1000):
            self.client.log_batch(self.run_id, metrics=pending[i : i + 1000])

    def log_figure(self, path: Path, caption: str | None = None) -> None:
        """The PNG as an artifact under ``figures/`` (its caption beside, as text)."""
        self.flush()
        self.client.log_artifact(self.run_id, str(path), artifact_path="figures")
        if caption:
            self.client.log_text(self.run_id, caption, f"figures/{path.stem}.txt")

    def log_artifacts(self, folder: Path) -> None:
        """The files of the run directory (unless ``artifacts: false``)."""
        self.flush()
        if self.upload:
            self.client.log_artifacts(self.run_id, str(folder))

    def close(self, status: str = "FINISHED") -> None:
        """Send what is queued and end the run with ``status``."""
        try:
            if self.error is None:
                self.flush()
        finally:
            self.client.set_terminated(self.run_id, status)


def _check_server(uri: str, timeout: float = 5.0) -> None:
    """A ConfigError when no MLflow server answers at ``uri`` (instead of minutes of retries)."""
    import urllib.error
    import urllib.request

    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # something answers (an older server without /health, or a proxy)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError(
            f"no MLflow server answers at {uri} ({reason})",
            hint="start one (mlflow server --host 127.0.0.1 --port 5000) or fix tracking.uri",
        ) from None


def _local_artifacts(uri: str | None) -> str | None:
    """For a local SQLite store, ``mlartifacts/`` beside the database; else MLflow decides."""
    if uri and uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        return (db.resolve().parent / "mlartifacts").as_uri()
    return None


# ------------------------------------------------------------------ TensorBoard


class TensorBoardTracker(Tracker):
    """Event files for TensorBoard, written by ``torch.utils.tensorboard.SummaryWriter``
    (needs the ``tensorboard`` package: ``pip install 'synthmri[tensorboard]'``).

    Params and tags become a text table, metrics scalars, figures images (captions as
    text); TensorBoard keeps no files, so ``log_artifacts`` records ``report.md`` as text.
    """

    name = "tensorboard"

    def __init__(self, log_dir: Path) -> None:
        super().__init__()
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "tracking with tensorboard needs the package tensorboard, which is not installed",
                hint="pip install 'synthmri[tensorboard]'",
            ) from None
        self.log_dir = Path(log_dir)
        try:
            self.writer = SummaryWriter(log_dir=str(self.log_dir))
        except OSError as exc:
            raise ConfigError(f"{self.log_dir}: cannot write TensorBoard events ({exc})") from None

    def describe(self) -> str:
        """The log folder, and the command that shows it."""
        return f"TensorBoard events in {self.log_dir} (tensorboard --logdir {self.log_dir})"

    def log_params(self, params: Mapping[str, str]) -> None:
        """One markdown table of the params."""
        self.writer.add_text("params", _markdown_table(params), 0)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """One markdown table of the tags."""
        self.writer.add_text("tags", _markdown_table(tags), 0)

    def log_metrics(
        self, values: Mapping[str, float], step: int = 0, when: float | None = None
    ) -> None:
        """One scalar per value."""
        for k, v in values.items():
            self.writer.add_scalar(k, v, int(step), walltime=when)

    def log_figure(self, path: Path, caption: str | None = None) -> None:
        """The PNG as an image (RGB), its caption as text under the same name."""
        import numpy as np
        from PIL import Image

        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"))
        tag = f"figures/{path.stem}"
        self.writer.add_image(tag, array, 0, dataformats="HWC")
        if caption:
            self.writer.add_text(tag, caption, 0)

    def log_artifacts(self, folder: Path) -> None:
        """``report.md`` as text (TensorBoard has no file store)."""
        report = folder / "report.md"
        if report.is_file():
            self.writer.add_text("report", report.read_text(encoding="utf-8")[:100_000], 0)

    def close(self, status: str = "FINISHED") -> None:
        """Write the status as text and close the event file."""
        self.writer.add_text("status", status, 0)
        self.writer.flush()
        self.writer.close()


def _markdown_table(values: Mapping[str, str]) -> str:
    rows = [f"| {k} | {str(v).replace('|', '/')} |" for k, v in values.items()]
    return "\n".join(["| name | value |", "|---|---|", *rows])


# ------------------------------------------------------------------ choosing and replaying


def make_tracker(
    backend: str,
    run_dir: Path,
    recipe_name: str,
    uri: str | None = None,
    experiment: str | None = None,
    artifacts: bool = True,
) -> Tracker:
    """A tracker by name (``mlflow`` or ``tensorboard``) for the run in ``run_dir``.

    mlflow: ``uri`` is the tracking URI, ``experiment`` the experiment name (default: the
    recipe name). tensorboard: events go to ``<uri>/<run directory name>`` when ``uri``
    is given, else to ``<run_dir>/tensorboard``.
    """
    if backend == "mlflow":
        return MLflowTracker(
            uri,
            experiment or recipe_name,
            run_name=run_dir.name,
            tags=run_tags(recipe_name, run_dir),
            artifacts=artifacts,
        )
    if backend == "tensorboard":
        log_dir = Path(uri).expanduser() / run_dir.name if uri else run_dir / "tensorboard"
        tracker = TensorBoardTracker(log_dir)
        tracker.set_tags(run_tags(recipe_name, run_dir))
        return tracker
    raise ConfigError(f"unknown tracking backend {backend!r}", hint=f"use {' or '.join(BACKENDS)}")


def open_tracker(tracking: TrackingConfig, run_dir: Path | None, recipe: Recipe) -> Tracker | None:
    """The tracker a recipe's ``tracking:`` section asks for (None when it is off or the run
    writes no directory), with the resolved recipe already sent as params."""
    if run_dir is None or tracking.backend == "none":
        return None
    tracker = make_tracker(
        tracking.backend,
        run_dir,
        recipe.name,
        uri=tracking.uri,
        experiment=tracking.experiment,
        artifacts=tracking.artifacts,
    )
    tracker.safely("params", tracker.log_params, flatten(recipe.model_dump(mode="json")))
    return tracker


def read_run_recipe(run_dir: Path) -> dict[str, Any]:
    """The resolved recipe a run directory keeps (``recipe.yaml``); a DataError when
    ``run_dir`` is not a run directory."""
    import yaml

    from synthmri.core.errors import DataError

    recipe_file = run_dir / "recipe.yaml"
    if not recipe_file.is_file():
        raise DataError(
            f"{run_dir}: not a synthmri run directory (no recipe.yaml)",
            hint="give a folder written by synthmri run (runs/<recipe>-<timestamp>)",
        )
    try:
        recipe = yaml.safe_load(read_limited(recipe_file, _MAX_READ).decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DataError(f"{recipe_file}: cannot read ({type(exc).__name__})") from None
    return recipe if isinstance(recipe, dict) else {}


def replay_run(run_dir: Path, tracker: Tracker) -> int:
    """Send a finished run directory to ``tracker``: ``recipe.yaml`` as params, every
    ``log.jsonl`` line, then (:meth:`Tracker.finish`) the figures with their captions,
    ``metrics.json`` and the files; then close it. Returns the number of log lines sent."""
    tracker.safely("params", tracker.log_params, flatten(read_run_recipe(run_dir)))
    sent = 0
    log = run_dir / "log.jsonl"
    if log.is_file():
        for text in read_limited(log, 64 * _MAX_READ).decode("utf-8", "replace").splitlines():
            try:
                line = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(line, dict):
                tracker.log_line(line)
                sent += 1
    metrics = None
    if (run_dir / "metrics.json").is_file():
        try:
            metrics = json.loads(read_limited(run_dir / "metrics.json", _MAX_READ))
        except (json.JSONDecodeError, UnicodeDecodeError):
            metrics = None
    failed = (run_dir / "FAILED").exists() or not isinstance(metrics, dict)
    tracker.finish(run_dir, metrics if not failed else None, "FAILED" if failed else "")
    return sent
