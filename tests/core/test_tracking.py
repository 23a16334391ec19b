"""Experiment tracking: what a run sends, against a real MLflow (a local store and a server
on 127.0.0.1) and TensorBoard event files read back; nothing is imported when it is off."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from synthmri.core.errors import RecipeError
from synthmri.core.pipeline import run_recipe
from synthmri.core.recipe import parse_recipe
from synthmri.core.tracking import (
    Tracker,
    flatten,
    git_revision,
    metrics_of_line,
    result_metrics,
)
from synthmri.core.training import RunContext

# a toy generator, a real classifier that logs a loss per epoch, and an evaluator that
# saves figures: every kind of thing a tracker receives, in a few seconds
RECIPE = """\
name: tracked
seed: 3
data: {n: 40, size: 32}
generators: [toy_mean]
experiments:
  - name: cls
    models:
      - plugin: brain_cnn
        params: {epochs: 3, batch_size: 8, augment: false}
    train_on: [real, synthetic]
    synthetic_per_class: 8
evaluate: [classification]
"""
LOSS = "classify/cls/brain_cnn/real/real/1/train/loss"
ACCURACY = "classification/brain_cnn/real/real/1/accuracy"


def _mlflow() -> Any:
    return pytest.importorskip(
        "mlflow", reason="the mlflow extra is not installed (pip install 'synthmri[mlflow]')"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _log_values(run_dir: Path, key: str) -> list[tuple[int, float]]:
    """(step or epoch, value) of ``stage/key`` as log.jsonl has them."""
    stage, _, name = key.rpartition("/train/")
    points = []
    for text in (run_dir / "log.jsonl").read_text().splitlines():
        line = json.loads(text)
        if line.get("stage") == stage and f"train/{name}" in line:
            points.append((int(line["epoch"]), float(line[f"train/{name}"])))
    return points


# ------------------------------------------------------------------ what is sent


def test_flatten_names_every_leaf() -> None:
    flat = flatten(
        {"name": "x", "data": {"size": 32, "path": None}, "gens": [{"p": {"a": 1}}], "e": []}
    )
    assert flat == {"name": "x", "data.size": "32", "data.path": "", "gens.0.p.a": "1", "e": "[]"}
    assert flatten({"fractions": [0.5, 1.0]}) == {"fractions": "[0.5, 1.0]"}


def test_log_line_metrics_take_stage_step_or_epoch() -> None:
    line = {"time": 1.5, "stage": "generate/dcgan/tumor", "step": 20, "loss_d": 0.7, "ok": True}
    assert metrics_of_line(line) == ({"generate/dcgan/tumor/loss_d": 0.7}, 20, 1.5)
    values, step, _ = metrics_of_line({"stage": "s", "epoch": 4, "train/loss": 1, "note": "x"})
    assert values == {"s/train/loss": 1.0} and step == 4
    assert metrics_of_line({"stage": "data", "n_train": 30})[:2] == ({"data/n_train": 30.0}, 0)
    assert metrics_of_line({"stage": "s", "step": 1, "v": float("nan")})[0] == {}


def test_result_rows_become_named_metrics() -> None:
    rows = [
        {"classifier": "cnn", "generator": None, "train_on": "real", "real_fraction": 1.0,
         "accuracy": 0.8, "accuracy_ci": [0.7, 0.9], "positive_class": "tumor"},
        {"classifier": "cnn", "generator": "gan", "train_on": "mixed", "real_fraction": 0.1,
         "accuracy": 0.75, "accuracy_ci": [None, None]},
    ]  # fmt: skip
    out = result_metrics({"classification": rows, "recipe": "x", "notes": ["a"]})
    assert out == {
        "classification/cnn/real/real/1/accuracy": 0.8,
        "classification/cnn/real/real/1/accuracy_ci_low": 0.7,
        "classification/cnn/real/real/1/accuracy_ci_high": 0.9,
        "classification/cnn/mixed/gan/0.1/accuracy": 0.75,
    }


def test_git_revision_of_a_checkout(tmp_path: Path) -> None:
    assert git_revision(tmp_path) is None  # not a checkout
    here = git_revision()
    if here is None:
        pytest.skip("synthmri does not run from a git checkout here")
    commit, dirty = here
    assert len(commit) == 40 and isinstance(dirty, bool)


class _Recorder(Tracker):
    """A tracker that keeps what it is sent (and can be told to fail)."""

    name = "recorder"

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail
        self.metrics: list[tuple[dict[str, float], int]] = []
        self.figures: list[tuple[str, str | None]] = []
        self.status: str | None = None

    def log_params(self, params: Mapping[str, str]) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def log_metrics(
        self, values: Mapping[str, float], step: int = 0, when: float | None = None
    ) -> None:
        if self.fail:
            raise ConnectionError("server went away")
        self.metrics.append((dict(values), step))

    def log_figure(self, path: Path, caption: str | None = None) -> None:
        self.figures.append((path.name, caption))

    def log_artifacts(self, folder: Path) -> None:
        pass

    def close(self, status: str = "FINISHED") -> None:
        self.status = status


def test_run_context_sends_log_lines_and_figures(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    tracker = _Recorder()
    run = RunContext(tmp_path, device="cpu", tracker=tracker).child("generate/x")
    run.log(step=3, loss=0.25, event="start")
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    target = run.save_figure(fig, "curve", caption="Look for a straight line.")
    assert tracker.metrics == [({"generate/x/loss": 0.25}, 3)]
    assert tracker.figures == [("generate-x-curve.png", "Look for a straight line.")]
    assert target is not None and target.with_suffix(".txt").read_text() == (
        "Look for a straight line."
    )
    # without a run directory nothing is written and nothing is sent
    bare = RunContext(device="cpu", tracker=_Recorder())
    bare.log(step=1, loss=1.0)
    assert bare.tracker is not None and not bare.tracker.metrics  # type: ignore[attr-defined]


def test_a_failing_tracker_does_not_stop_the_run(tmp_path: Path) -> None:
    tracker = _Recorder(fail=True)
    run = RunContext(tmp_path, device="cpu", tracker=tracker)
    run.log(step=1, loss=0.5)
    run.log(step=2, loss=0.4)  # switched off after the first error: no second attempt
    assert tracker.error is not None and "server went away" in tracker.error
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 2  # the log is complete
    tracker.finish(tmp_path, {"classification": []})
    assert tracker.status == "FAILED"


# ------------------------------------------------------------------ the recipe section


def test_tracking_section_is_validated() -> None:
    recipe = parse_recipe("name: t\ntracking: {backend: mlflow, uri: 'sqlite:///x.db'}\n")
    assert recipe.tracking.backend == "mlflow" and recipe.tracking.experiment is None
    assert parse_recipe("name: t\n").tracking.backend == "none"
    with pytest.raises(RecipeError, match=r"<recipe>:3: tracking\.backend"):
        parse_recipe("name: t\ntracking:\n  backend: wandb\n")
    with pytest.raises(RecipeError, match=r"tracking\.uri: .*must not be empty"):
        parse_recipe("name: t\ntracking: {backend: mlflow, uri: ' '}\n")
    with pytest.raises(RecipeError, match=r"tracking\.expriment: unknown key.*'experiment'"):
        parse_recipe("name: t\ntracking: {expriment: a}\n")


def test_unknown_track_option_is_exit_code_2(cli: Any) -> None:
    code, _, err = cli("run", "quickstart", "--track", "wandb")
    assert code == 2 and "--track 'wandb'" in err


def test_tracking_off_imports_no_tracker(tmp_path: Path) -> None:
    """A run without tracking never imports mlflow or tensorboard (a fresh interpreter)."""
    code = (
        "import sys\n"
        "from synthmri.core.pipeline import run_recipe\n"
        "from synthmri.core.recipe import parse_recipe\n"
        "r = parse_recipe('name: off\\ndata: {n: 24, size: 32}\\nexperiments:\\n"
        "  - models: [{plugin: brain_cnn, params: {epochs: 1, batch_size: 8}}]\\n"
        "    train_on: [real]\\n"
        "evaluate: [{plugin: classification, params: {figures: false}}]\\n')\n"
        f"run_recipe(r, out={str(tmp_path)!r})\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('mlflow', 'tensorboard')"
        " or m == 'torch.utils.tensorboard']\n"
        "assert not bad, bad\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]


# ------------------------------------------------------------------ MLflow


def _check_mlflow_run(client: Any, experiment: str, run_dir: Path) -> None:
    """The run as an MLflow UI shows it: params, metric curves, results, figures, files."""
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    params = run.data.params
    assert params["name"] == "tracked" and params["data.size"] == "32"
    assert params["experiments.0.models.0.plugin"] == "brain_cnn"
    assert params["experiments.0.models.0.params.epochs"] == "3"
    tags = run.data.tags
    assert tags["synthmri.version"] and tags["synthmri.recipe"] == "tracked"
    if git_revision() is not None:
        assert len(tags["mlflow.source.git.commit"]) == 40
    # a metric curve: every epoch of the training loss, as log.jsonl has it
    history = client.get_metric_history(run.info.run_id, LOSS)
    expected = _log_values(run_dir, LOSS)
    assert len(expected) == 3
    got = sorted((m.step, m.value) for m in history)
    assert [s for s, _ in got] == [s for s, _ in expected] == [0, 1, 2]
    assert [v for _, v in got] == pytest.approx([v for _, v in expected])
    # a result of metrics.json
    written = json.loads((run_dir / "metrics.json").read_text())
    real = next(r for r in written["classification"] if r["train_on"] == "real")
    assert run.data.metrics[ACCURACY] == pytest.approx(real["accuracy"])
    assert run.data.metrics[ACCURACY + "_ci_low"] == pytest.approx(real["accuracy_ci"][0])
    # figures and the run directory as artifacts
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert "figures/evaluate-classification-roc_curves.png" in figures
    assert "figures/generate-toy_mean-samples.png" in figures
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "metrics.json", "log.jsonl", "recipe.yaml", "checkpoints"} <= top
    local = client.download_artifacts(run.info.run_id, "metrics.json", str(run_dir.parent))
    assert json.loads(Path(local).read_text())["classification"] == written["classification"]


def test_mlflow_local_store(tmp_path: Path, toy_plugins: str) -> None:
    mlflow = _mlflow()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    recipe = parse_recipe(
        RECIPE + f"tracking: {{backend: mlflow, uri: '{uri}', experiment: brain}}\n"
    )
    result = run_recipe(recipe, out=tmp_path / "runs")
    assert result.run_dir is not None
    assert any(n.startswith("tracked: MLflow run") for n in result.notes)
    _check_mlflow_run(mlflow.MlflowClient(uri), "brain", result.run_dir)
    assert (tmp_path / "mlartifacts").is_dir()  # artifacts beside the database


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 (a free port), stopped with its process group."""
    _mlflow()
    port = _free_port()
    exe = Path(sys.executable).with_name("mlflow")
    if not exe.is_file():
        pytest.skip(f"no mlflow command beside {sys.executable}")
    cmd = [str(exe), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
           "--artifacts-destination", str(tmp_path / "server-artifacts")]  # fmt: skip
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True, cwd=tmp_path)  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(uri + "/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = (tmp_path / "server.log").read_text(errors="replace")[-1500:]
                    pytest.fail(f"mlflow server did not start:\n{tail}")
                time.sleep(0.5)
        yield uri
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
        log.close()


def test_mlflow_server(tmp_path: Path, toy_plugins: str, mlflow_server: str, cli: Any) -> None:
    """``synthmri run --track mlflow`` against a real tracking server."""
    mlflow = _mlflow()
    recipe = tmp_path / "tracked.yaml"
    recipe.write_text(RECIPE)
    code, _, err = cli("-q", "run", str(recipe), "--out", str(tmp_path / "runs"),
                         "--track", "mlflow", "--set", f"tracking.uri={mlflow_server}")  # fmt: skip
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    _check_mlflow_run(mlflow.MlflowClient(mlflow_server), "tracked", run_dir)


def test_mlflow_without_a_server_is_a_clear_error(tmp_path: Path, cli: Any) -> None:
    _mlflow()
    uri = f"http://127.0.0.1:{_free_port()}"
    code, _, err = cli("run", "quickstart", "--out", str(tmp_path), "--track", "mlflow",
                       "--set", f"tracking.uri={uri}")  # fmt: skip
    assert code == 2 and f"no MLflow server answers at {uri}" in err
    assert "Traceback" not in err


# ------------------------------------------------------------------ TensorBoard


def read_events(folder: Path) -> Any:
    """The TensorBoard events of ``folder``, read back with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_track_tensorboard(tmp_path: Path, toy_plugins: str) -> None:
    pytest.importorskip(
        "tensorboard", reason="the tensorboard extra is not installed (pip install tensorboard)"
    )
    recipe = parse_recipe(RECIPE + "tracking: {backend: tensorboard}\n")
    result = run_recipe(recipe, out=tmp_path)
    assert result.run_dir is not None
    events = read_events(result.run_dir / "tensorboard")
    tags = events.Tags()
    loss = [(e.step, e.value) for e in events.Scalars(LOSS)]
    expected = _log_values(result.run_dir, LOSS)
    assert [s for s, _ in loss] == [s for s, _ in expected] == [0, 1, 2]
    assert [v for _, v in loss] == pytest.approx([v for _, v in expected])
    assert ACCURACY in tags["scalars"]
    assert "figures/evaluate-classification-roc_curves" in tags["images"]
    image = events.Images("figures/evaluate-classification-roc_curves")[0]
    assert image.width > 100 and image.height > 100
    assert {"params", "tags", "report", "status"} <= {t.split("/")[0] for t in tags["tensors"]}
