"""The intensity evaluator: real vs synthetic pixel-intensity distributions."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthmri import get_plugin
from synthmri.core.interfaces import EvalInputs, ImageSet
from synthmri.core.phantoms import make_phantoms
from synthmri.core.training import RunContext
from synthmri.plugins.evaluators.intensity import IntensityEvaluator


def test_evaluator_is_registered() -> None:
    assert get_plugin("evaluator", "intensity") is IntensityEvaluator
    assert IntensityEvaluator.requires == ("synthetic",)


def _intensity(train: ImageSet, test: ImageSet, synthetic: dict[str, ImageSet], out: Path):
    inputs = EvalInputs(train=train, val=test, test=test, synthetic=synthetic, seed=0)
    run = RunContext(out, device="cpu")
    rows = IntensityEvaluator().evaluate(inputs, run)["intensity"]
    return {(r["generator"], r["class"]): r for r in rows}, run


def test_intensity_identical_and_different_sets(tmp_path: Path) -> None:
    data = make_phantoms(24, 32, seed=0)
    train, test = data.subset(range(12)), data.subset(range(12, 24))
    darker = ImageSet(images=train.images * 0.6, labels=train.labels,
                      class_names=train.class_names)  # fmt: skip
    rows, run = _intensity(train, test, {"copy": train, "darker": darker}, tmp_path)
    assert set(rows) == {(g, c) for g in ("copy", "darker") for c in ("normal", "tumor")}
    for cname in ("normal", "tumor"):
        same, other = rows[("copy", cname)], rows[("darker", cname)]
        assert same["wasserstein"] == pytest.approx(0.0, abs=1e-9)
        assert same["histogram_intersection"] == pytest.approx(1.0)
        assert other["wasserstein"] > 0.05
        assert other["histogram_intersection"] < 0.9
        floor = same["wasserstein_real_floor"]
        assert 0 < floor < other["wasserstein"]  # two real samples are closer than a bad fake
        assert 0 < same["intersection_real_floor"] <= 1
    assert any("histogram" in f.name and f.is_file() for f in run.figures)
