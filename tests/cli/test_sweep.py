"""``synthmri sweep``: every seed x grid combination, shared stages, the summary over seeds."""

from __future__ import annotations

import importlib.util
import json
import statistics
from pathlib import Path

import pytest

from synthmri.core.sweep import combinations, summarise

RECIPE = """\
name: toy
data: {n: 48, size: 32}
generators:
  - plugin: toy_mean
experiments:
  - name: cls
    models: [{plugin: toy_intensity, params: {steps: 60}}]
    train_on: [real, synthetic]
    synthetic_per_class: 12
evaluate: [toy_count]
"""

STEPS = "experiments.0.models.0.params.steps"


def _sweep(tmp_path: Path, cli, *args: str, out: str = "sweeps") -> tuple[Path, dict]:
    recipe = tmp_path / "toy.yaml"
    recipe.write_text(RECIPE)
    code, _, err = cli("-q", "sweep", str(recipe), *args, "--out", str(tmp_path / out))
    assert code == 0, err
    (folder,) = (tmp_path / out).iterdir()
    return folder, json.loads((folder / "sweep.json").read_text())


def test_sweep_runs_every_combination_and_summarises_over_seeds(tmp_path: Path, toy_plugins, cli):
    folder, record = _sweep(tmp_path, cli, "--seeds", "0,1", "--grid", f"{STEPS}=20,40")
    assert record["seeds"] == [0, 1] and record["grid"] == {STEPS: ["20", "40"]}
    assert [c["settings"] for c in record["combinations"]] == [{STEPS: "20"}, {STEPS: "40"}]
    for combo in record["combinations"]:
        runs = combo["runs"]
        assert [r["seed"] for r in runs] == [0, 1]
        metrics = [json.loads((folder / r["run_dir"] / "metrics.json").read_text()) for r in runs]
        assert [m["seed"] for m in metrics] == [0, 1]
        rows = combo["summary"]["classification"]
        assert {(r["train_on"], r["n_seeds"]) for r in rows} == {("real", 2), ("synthetic", 2)}
        real = next(r for r in rows if r["train_on"] == "real")
        accs = [
            next(x for x in m["classification"] if x["train_on"] == "real")["accuracy"]
            for m in metrics
        ]
        assert real["accuracy"] == statistics.mean(accs)
        assert abs(real["accuracy_sd"] - statistics.stdev(accs)) < 1e-12
        counts = combo["summary"]["toy_counts"]  # a plugin's own section, summarised too
        assert any(r.get("generator") == "toy_mean" and r["n_seeds"] == 2 for r in counts)
    # the second combination shares the generator stages (same seed, same data) of the first
    first, second = record["combinations"]
    assert all(r["reused_stages"] == 0 for r in first["runs"])
    assert all(r["reused_stages"] == 2 for r in second["runs"])  # tumor and normal
    csv_lines = (folder / "summary.csv").read_text().splitlines()
    assert csv_lines[0].startswith(f"{STEPS},section,classifier")
    assert len(csv_lines) > 1 + 4
    markdown = (folder / "summary.md").read_text()
    assert f"## {STEPS}=40" in markdown and " ± " in markdown


def test_sweep_on_the_local_pool_gives_the_serial_summary(tmp_path: Path, toy_plugins, cli):
    args = ("--seeds", "0,1", "--grid", f"{STEPS}=20")
    _, serial = _sweep(tmp_path, cli, *args, out="serial")
    _, local = _sweep(tmp_path, cli, *args, "--executor", "local", out="local")
    assert local["executor"].startswith("local")
    summaries = [r["combinations"][0]["summary"] for r in (serial, local)]
    assert summaries[0] == summaries[1]


@pytest.mark.xdist_group("ray")
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed")
def test_sweep_on_ray_gives_the_serial_summary(tmp_path: Path, toy_plugins, cli):
    args = ("--seeds", "0,1")
    _, serial = _sweep(tmp_path, cli, *args, out="serial")
    _, on_ray = _sweep(tmp_path, cli, *args, "--executor", "ray", "--workers", "2", out="ray")
    assert on_ray["executor"].startswith("ray")
    assert on_ray["combinations"][0]["summary"] == serial["combinations"][0]["summary"]


def test_sweep_bad_input_is_one_line(tmp_path: Path, toy_plugins, cli) -> None:
    recipe = tmp_path / "toy.yaml"
    recipe.write_text(RECIPE)
    for args, says in (
        (("--seeds", "0,x"), "--seeds"),
        (("--grid", "nokey"), "--grid"),
        (("--grid", "data.nope=1,2"), "nope"),
    ):
        code, _, err = cli("-q", "sweep", str(recipe), "--out", str(tmp_path / "o"), *args)
        assert code == 2 and "Traceback" not in err and says in err.splitlines()[0]
    assert not (tmp_path / "o").exists()  # nothing ran, nothing written


def test_summary_helpers() -> None:
    assert combinations([]) == [{}]
    assert combinations([("a", ["1", "2"]), ("b", ["x"])]) == [
        {"a": "1", "b": "x"},
        {"a": "2", "b": "x"},
    ]
    runs = [
        {"quality": [{"generator": "g", "fid": 1.0, "seed": 0}], "generators": [{"x": 1}]},
        {"quality": [{"generator": "g", "fid": 3.0, "seed": 1}], "generators": [{"x": 2}]},
    ]
    summary = summarise(runs)
    assert list(summary) == ["quality"]  # training times are not summarised
    (row,) = summary["quality"]
    assert row["n_seeds"] == 2 and row["fid"] == 2.0 and row["fid_range"] == [1.0, 3.0]
    assert abs(row["fid_sd"] - statistics.stdev([1.0, 3.0])) < 1e-12
