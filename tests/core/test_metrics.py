"""The layout of metrics.json (synthmri.core.metrics): what the pipeline writes validates
against the model and dumps back identically, keys in the same order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synthmri.core.metrics import DataSummary, Metrics, Timings, brief_rows, seed_summary
from synthmri.core.pipeline import run_recipe
from synthmri.core.ranking import rank_generators
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
    "memorisation",
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
        "memorisation",
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


def test_seed_summary_gives_mean_spread_and_mean_interval_per_setting() -> None:
    rows = [
        {"classifier": "c", "generator": None, "train_on": "real", "real_fraction": 0.5,
         "seed": s, "n_train": 10 + s, "n_test": 20, "accuracy": acc, "accuracy_ci": ci,
         "plugin": "c"}
        for s, acc, ci in ((0, 0.6, [0.4, 0.8]), (1, 0.8, [0.6, 1.0]), (2, 0.7, [0.5, 0.9]))
    ]  # fmt: skip
    rows.append({**rows[0], "train_on": "mixed", "generator": "g", "accuracy": 0.9})
    summary = seed_summary(rows, "classifier")
    assert len(summary) == 2
    real = summary[0]
    assert real["n_seeds"] == 3 and real["n_train"] == 11 and real["n_test"] == 20
    assert real["accuracy"] == pytest.approx(0.7)
    assert real["accuracy_sd"] == pytest.approx(0.1)
    assert real["accuracy_range"] == [0.6, 0.8]
    assert real["accuracy_ci"] == pytest.approx([0.5, 0.9])
    assert "seed" not in real and "unsupervised" not in real and "plugin" not in real
    assert summary[1]["n_seeds"] == 1 and summary[1]["accuracy_sd"] == 0.0


def test_generators_are_ranked_by_tstr_then_mixed_gain() -> None:
    def row(train_on: str, gen: str | None, share: float, acc: float) -> dict:
        ci = [acc - 0.1, acc + 0.1]
        return {
            "classifier": "c",
            "generator": gen,
            "train_on": train_on,
            "real_fraction": share,
            "accuracy": acc,
            "accuracy_ci": ci,
        }

    metrics = {
        "classification": [
            row("real", None, 0.1, 0.60),
            row("real", None, 1.0, 0.90),
            row("synthetic", "a", 0.0, 0.70),
            row("synthetic", "b", 0.0, 0.80),
            row("mixed", "a", 0.1, 0.75)
            | {"accuracy_gain": 0.15, "accuracy_gain_ci": [0.08, 0.22]},
            row("mixed", "b", 0.1, 0.62),
            row("mixed", "a", 1.0, 0.91),
            row("mixed", "b", 1.0, 0.92),
        ],
        "image_quality": [
            {"generator": "a", "class": "x", "fid": 10.0, "recall": 0.2, "memorized_fraction": 0.0,
             "class_agreement": 0.9},
            {"generator": "a", "class": "y", "fid": 20.0, "recall": 0.4, "memorized_fraction": 0.1,
             "class_agreement": 0.3},
        ],
        "memorisation": [
            {"generator": "a", "class": "x", "closer_fraction": 0.9},
            {"generator": "a", "class": "y", "closer_fraction": 1.0},
        ],
        "generators": [
            {"generator": "a", "class_filter": None},
            {
                "generator": "b",
                "class_filter": {"x": {"acceptance": 0.9}, "y": {"acceptance": 0.6}},
            },
        ],
    }
    ranked = rank_generators(metrics)
    assert [r["generator"] for r in ranked] == ["b", "a"]
    b, a = ranked
    assert b["tstr_accuracy"] == 0.80 and b["tstr_minus_real"] == pytest.approx(-0.10)
    assert b["smallest_real_fraction"] == 0.1 and b["mixed_gain"] == pytest.approx(0.02)
    assert a["mixed_gain"] == pytest.approx(0.15) and a["fid"] == 15.0
    assert a["mixed_gain_ci"] == [0.08, 0.22] and b["mixed_gain_ci"] is None  # paired
    assert a["recall"] == pytest.approx(0.3)
    assert a["class_agreement"] == 0.3 and b["class_agreement"] is None  # the weakest class
    assert a["memorized_fraction"] == 0.1 and b["fid"] is None
    # no near-exact copies may still be samples closer to training images than real ones are
    assert a["closer_than_real"] == 1.0 and b["closer_than_real"] is None
    # a filtered entry shows its weakest class's acceptance; an unfiltered one has no column
    assert b["class_filter_kept"] == 0.6 and "class_filter_kept" not in a
    assert "tstr_val_score" not in a  # no model reported a validation score
    # with validation scores, the same comparison on the validation part
    scores = [0.5, 0.8, 0.6, 0.7, 0.65, 0.5, 0.8, 0.8]  # in the order of the rows above
    for r, v in zip(metrics["classification"], scores, strict=True):
        r["val_score"] = v
    b, a = rank_generators(metrics)
    assert a["tstr_val_score"] == 0.6 and b["tstr_val_score"] == 0.7
    assert a["mixed_val_gain"] == pytest.approx(0.15) and b["mixed_val_gain"] == 0.0
    assert rank_generators({"classification": [row("real", None, 1.0, 0.9)]}) == []
