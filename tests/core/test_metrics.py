"""The layout of metrics.json (synthmri.core.metrics): what the pipeline writes validates
against the model and dumps back identically, keys in the same order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synthmri.core.metrics import DataSummary, Metrics, Timings, brief_rows
from synthmri.core.pipeline import run_recipe
from synthmri.core.recipe import parse_recipe

RECIPE = """\
name: toy
seed: 2
data: {n: 40, size: 32}
generators: [toy_mean]
experiments:
  - models: [toy_intensity]
    train_on: [real, synthetic]
    synthetic_per_class: 8
evaluate: [toy_count]
"""

CORE_ORDER = [
    "recipe",
    "synthmri_version",
    "seed",
    "device",
    "data",
    "classification",
    "segmentation",
    "generators",
]


def _data() -> DataSummary:
    return DataSummary(
        n_train=3,
        n_val=1,
        n_test=1,
        duplicate_groups=0,
        layout="phantoms",
        classes=["normal", "tumor"],
        skipped_files=0,
        class_counts={"train": {"normal": 2, "tumor": 1}, "val": {}, "test": {}},
    )


def test_metrics_written_by_a_run_round_trip(tmp_path: Path, toy_plugins: str) -> None:
    run_dir = run_recipe(parse_recipe(RECIPE), out=tmp_path).run_dir
    assert run_dir is not None
    written = json.loads((run_dir / "metrics.json").read_text())
    assert list(written) == [*CORE_ORDER, "toy_counts", "timings", "notes"]
    again = Metrics.model_validate(written).model_dump(mode="json")
    assert again == written
    assert json.dumps(again) == json.dumps(written)  # same key order, at every level
    assert [s for s, _ in Metrics.model_validate(written).row_sections()] == [
        "classification",
        "generators",
        "toy_counts",
    ]


def test_plugin_sections_go_between_generators_and_timings() -> None:
    m = Metrics(recipe="r", synthmri_version="0", seed=0, device="cpu", data=_data())
    m.add_rows("privacy", [{"generator": "g", "x": 1.0}])
    m.add_rows("classification", [{"classifier": "c", "accuracy": 0.5}])
    m.add_rows("privacy", [{"generator": "h", "x": 2.0}])
    assert "timings" not in m.model_dump()  # not known before the run ends
    m.timings = Timings(total_s=1.5, stages={"data": 0.5})
    m.notes = ["a note"]
    dumped = m.model_dump()
    assert list(dumped) == [*CORE_ORDER, "privacy", "timings", "notes"]
    assert [r["generator"] for r in dumped["privacy"]] == ["g", "h"]
    assert dumped["classification"] == [{"classifier": "c", "accuracy": 0.5}]
    with pytest.raises(ValueError, match="core key"):
        m.add_rows("generators", [{"generator": "x"}])


def test_brief_rows_keep_the_short_table_columns() -> None:
    rows = [{"classifier": "c", "accuracy": 0.5, "loss_curve": [1, 2], "n_test": 4}]
    assert brief_rows(rows) == [{"classifier": "c", "accuracy": 0.5, "n_test": 4}]
