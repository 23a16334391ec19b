"""Executors: the same results under serial, local (a process pool) and Ray; --resume,
failing stages and killed workers under each."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from synthmri.core.errors import ConfigError, TrainingError
from synthmri.core.executors import LocalExecutor, default_workers, make_executor
from synthmri.core.pipeline import run_recipe
from synthmri.core.recipe import parse_recipe

RECIPE = """\
name: toy
seed: 3
data: {{n: 48, size: 32}}
generators:
  - plugin: toy_mean
experiments:
  - name: cls
    models:
      - toy_intensity
      - {{plugin: toy_flaky, params: {{marker: "{marker}", fail: {fail}}}}}
    train_on: [real, synthetic, mixed]
    real_fraction: [0.5, 1.0]
    synthetic_per_class: 12
  - name: seg
    task: segment
    models: [toy_threshold]
    train_on: [real]
evaluate: [toy_count]
"""

#: a classifier that kills its own process the first time it trains (when ``marker`` does
#: not exist yet), or fails with a TrainingError (``fail: true``); otherwise toy_intensity
FLAKY = """
import os
from pathlib import Path

from pydantic import Field

from synthmri import StrictParams, TrainingError, hookimpl
from synthmri_toys import MeanIntensityClassifier


class FlakyClassifier(MeanIntensityClassifier):
    name = "toy_flaky"
    description = "Dies on its first try."

    class Params(StrictParams):
        steps: int = Field(60, ge=1, description="gradient steps")
        marker: str = Field("", description="a file: absent means die (and create it)")
        fail: bool = Field(False, description="raise a TrainingError instead")

    def fit(self, train, val, run):
        if self.params.fail:
            raise TrainingError("toy_flaky failed on purpose", hint="it always does")
        marker = Path(self.params.marker)
        if not marker.exists():
            marker.touch()
            os.kill(os.getpid(), 9)
        super().fit(train, val, run)


@hookimpl
def synthmri_register_classifiers(register):
    register(FlakyClassifier)
"""


@pytest.fixture
def flaky(toy_plugins: str, fake_dist: Callable[..., str]) -> str:
    """The toy plugins and toy_flaky, installed as distributions."""
    return fake_dist("synthmri-flaky", "synthmri_flaky", FLAKY)


def _recipe(marker: Path, fail: bool = False) -> Any:
    return parse_recipe(RECIPE.format(marker=marker, fail=str(fail).lower()))


def _results(run_dir: Path) -> dict[str, Any]:
    """metrics.json without what may differ between two runs of the same study."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.pop("timings")
    for row in metrics["generators"]:
        row.pop("train_seconds")
    return metrics


def _reused(run_dir: Path) -> set[str]:
    lines = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    return {x["stage_reused"] for x in lines if "stage_reused" in x}


def test_local_pool_gives_the_serial_results(tmp_path: Path, flaky: str) -> None:
    marker = tmp_path / "marker"
    marker.touch()  # toy_flaky behaves
    serial = run_recipe(_recipe(marker), out=tmp_path / "serial", executor="serial").run_dir
    with LocalExecutor(workers=2, threads=1) as pool:
        local = run_recipe(_recipe(marker), out=tmp_path / "local", executor=pool).run_dir
        assert _results(local) == _results(serial)
        stages = json.loads((serial / "stages.json").read_text())
        assert json.loads((local / "stages.json").read_text()).keys() == stages.keys()
        # the workers' log lines and figures reach the parent's run directory
        lines = (local / "log.jsonl").read_text().splitlines()
        assert any('"stage": "classify/cls/toy_intensity/real/real/0.5"' in x for x in lines)
        assert {p.name for p in (local / "figures").iterdir()} == {
            p.name for p in (serial / "figures").iterdir()
        }
        # --resume under the pool: every stage reused, the same results
        again = run_recipe(_recipe(marker), out=tmp_path / "local", resume=local, executor=pool)
        assert _reused(again.run_dir) == set(stages)
        assert _results(again.run_dir) == _results(serial)


def test_resume_of_a_local_run_under_serial(tmp_path: Path, flaky: str) -> None:
    marker = tmp_path / "marker"
    marker.touch()
    first = run_recipe(_recipe(marker), out=tmp_path, executor="local", workers=2).run_dir
    second = run_recipe(_recipe(marker), out=tmp_path, resume=first, executor="serial").run_dir
    assert _reused(second) == set(json.loads((first / "stages.json").read_text()))
    assert _results(second) == _results(first)


def test_a_failing_stage_in_a_worker_fails_as_in_serial(tmp_path: Path, flaky: str, cli) -> None:
    recipe = tmp_path / "toy.yaml"
    recipe.write_text(RECIPE.format(marker=tmp_path / "marker", fail="true"))
    failed = {}
    for kind in ("serial", "local"):
        out = tmp_path / kind
        code, _, err = cli("-q", "run", str(recipe), "--out", str(out), "--executor", kind)
        assert code == 2 and "Traceback" not in err
        assert err.splitlines()[0] == "error: toy_flaky failed on purpose"
        (run_dir,) = out.iterdir()
        failed[kind] = (run_dir / "FAILED").read_text()
        # the generators trained before the failure are kept for --resume
        assert "generate/toy_mean/tumor" in json.loads((run_dir / "stages.json").read_text())
    assert failed["local"] == failed["serial"] == "TrainingError: toy_flaky failed on purpose\n"


def test_a_killed_worker_is_a_clear_error_and_resume_finishes(tmp_path: Path, flaky: str) -> None:
    marker = tmp_path / "marker"  # absent: toy_flaky kills its worker on its first try
    recipe = _recipe(marker)
    with pytest.raises(TrainingError, match="a worker process died") as info:
        run_recipe(recipe, out=tmp_path / "runs", executor="local", workers=2)
    assert marker.exists()
    (first,) = (tmp_path / "runs").iterdir()
    assert info.value.hint is not None and f"--resume {first}" in info.value.hint
    assert (first / "FAILED").read_text().startswith("TrainingError: a worker process died")
    kept = set(json.loads((first / "stages.json").read_text()))
    assert {"generate/toy_mean/tumor", "generate/toy_mean/normal"} <= kept
    resumed = run_recipe(recipe, out=tmp_path / "runs", resume=first, executor="local", workers=2)
    assert kept <= _reused(resumed.run_dir)
    serial = run_recipe(recipe, out=tmp_path / "serial", executor="serial")
    assert _results(resumed.run_dir) == _results(serial.run_dir)


def test_executor_choice(tmp_path: Path, flaky: str) -> None:
    assert default_workers() >= 1
    assert make_executor(kind="serial").describe() == "serial"
    # forked workers cannot use CUDA after the parent: a local pool on CUDA runs serially
    assert make_executor(kind="local", device="cuda").describe() == "serial"
    assert make_executor(kind="local", device="cuda:1").describe() == "serial"
    with pytest.raises(ConfigError, match="unknown"):
        make_executor(kind="threads")
    recipe = _recipe(tmp_path / "m")
    with pytest.raises(ConfigError, match="unknown"):
        run_recipe(recipe, out=tmp_path / "runs", executor="threads")
    assert not (tmp_path / "runs").exists()  # refused before a run directory exists
    bad = RECIPE.replace("seed: 3", "seed: 3\nexecutor: {{kind: local, workers: 0}}")
    with pytest.raises(Exception, match="workers"):
        parse_recipe(bad.format(marker="m", fail="false"), check_plugins=False)


needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="Ray is not installed (extra synthmri[ray])"
)


@needs_ray
@pytest.mark.xdist_group("ray")  # one local Ray cluster at a time
def test_ray_gives_the_serial_results_and_retries_a_killed_worker(
    tmp_path: Path, flaky: str
) -> None:
    from synthmri.core.executors import RayExecutor

    done = tmp_path / "done"
    done.touch()
    serial = run_recipe(_recipe(done), out=tmp_path / "serial", executor="serial").run_dir
    fresh = tmp_path / "fresh"  # absent: toy_flaky kills its Ray worker once, Ray retries
    with RayExecutor(cpus=1, max_retries=2, num_cpus=2) as pool:
        ray_run = run_recipe(_recipe(fresh), out=tmp_path / "ray", executor=pool).run_dir
        assert fresh.exists()  # the first try did die
        assert _results(ray_run) == _results(serial)
        again = run_recipe(_recipe(fresh), out=tmp_path / "ray", resume=ray_run, executor=pool)
        assert _reused(again.run_dir) == set(json.loads((ray_run / "stages.json").read_text()))
