"""``synthmri export``: a finished run directory to TensorBoard (read back with TensorBoard's
own reader) and to MLflow (read back with the MLflow client)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from synthmri.core.pipeline import run_recipe
from synthmri.core.recipe import parse_recipe
from synthmri.core.tracking import metrics_of_line, result_metrics

RECIPE = """\
name: exported
seed: 2
data: {n: 40, size: 32}
experiments:
  - name: cls
    models:
      - plugin: brain_cnn
        params: {epochs: 3, batch_size: 8, augment: false}
    train_on: [real]
    real_fraction: [0.5, 1.0]
evaluate: [classification]
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    result = run_recipe(parse_recipe(RECIPE), out=tmp_path_factory.mktemp("runs"))
    assert result.run_dir is not None
    return result.run_dir


def _logged(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every metric log.jsonl holds: name -> [(step, value)]."""
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for text in (run_dir / "log.jsonl").read_text().splitlines():
        values, step, _ = metrics_of_line(json.loads(text))
        for k, v in values.items():
            series[k].append((step, v))
    return series


def test_export_tensorboard_round_trips(run_dir: Path, tmp_path: Path, cli: Any) -> None:
    pytest.importorskip(
        "tensorboard", reason="the tensorboard extra is not installed (pip install tensorboard)"
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    code, out, err = cli("export", "tensorboard", str(run_dir), str(tmp_path / "tb"))
    assert code == 0, err
    assert "exported" in out
    events = EventAccumulator(
        str(tmp_path / "tb" / run_dir.name), size_guidance={"scalars": 0, "images": 0}
    )
    events.Reload()
    tags = events.Tags()
    logged = _logged(run_dir)
    assert any(k.endswith("/train/loss") for k in logged)
    for name, points in logged.items():  # every curve of log.jsonl, step by step
        got = [(e.step, e.value) for e in events.Scalars(name)]
        assert [s for s, _ in got] == [s for s, _ in points], name
        assert [v for _, v in got] == pytest.approx([v for _, v in points]), name
    results = result_metrics(json.loads((run_dir / "metrics.json").read_text()))
    for name, value in results.items():
        assert events.Scalars(name)[0].value == pytest.approx(value), name
    figures = sorted(p.stem for p in (run_dir / "figures").glob("*.png"))
    assert figures and sorted(t.removeprefix("figures/") for t in tags["images"]) == figures
    texts = {t.split("/")[0] for t in tags["tensors"]}
    assert {"params", "tags", "report", "status"} <= texts


def test_export_mlflow_round_trips(run_dir: Path, tmp_path: Path, cli: Any) -> None:
    mlflow = pytest.importorskip(
        "mlflow", reason="the mlflow extra is not installed (pip install 'synthmri[mlflow]')"
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, out, err = cli("export", "mlflow", str(run_dir), "--uri", uri, "--experiment", "old")
    assert code == 0, err
    assert "MLflow run" in out
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("old").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["name"] == "exported"
    for name, points in _logged(run_dir).items():
        history = sorted(
            (m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)
        )
        assert [v for _, v in history] == pytest.approx([v for _, v in points]), name
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "metrics.json", "log.jsonl", "figures"} <= top


def test_export_needs_a_run_directory(tmp_path: Path, cli: Any) -> None:
    code, _, err = cli("export", "tensorboard", str(tmp_path), str(tmp_path / "tb"))
    assert code == 2 and "not a synthmri run directory" in err
    assert not (tmp_path / "tb").exists()
