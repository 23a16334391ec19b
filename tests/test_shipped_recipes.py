"""Every shipped recipe runs end to end at test size, and says what it should have run.

Test size: 32 px, each plugin's ``quick_params``, 8 synthetic images per class; recipes that
need a folder get one written from phantoms in the layout they expect (class folders,
Train/Validation split folders, patient folders of image+mask pairs).

Run as a script, ``python tests/test_shipped_recipes.py [RECIPE ...]`` prints a digest of
each tiny run's ``metrics.json`` (timings left out): the same digests before and after a
change show that the change moved no number (``CHANGELOG.md`` lists them for refactors).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

import synthmri
from synthmri.core.metrics import Metrics
from synthmri.core.phantoms import write_phantoms
from synthmri.core.recipe import Recipe, shipped_recipes

SIZE = 32
PER_CLASS = 8


def _class_folders(root: Path) -> Path:
    write_phantoms(root, 64, SIZE, seed=1)
    return root


def _layout_split(root: Path) -> Path:
    for split, n, seed in (("Train", 40, 2), ("Validation", 16, 3)):
        tmp = root.parent / f"{root.name}-{split}"
        write_phantoms(tmp, n, SIZE, seed=seed)
        for name, folder in (("normal", "Normal"), ("tumor", "Tumor")):
            (root / split).mkdir(parents=True, exist_ok=True)
            shutil.move(str(tmp / name), str(root / split / folder))
    return root


def _patients(root: Path) -> Path:
    tmp = root.parent / f"{root.name}-source"
    write_phantoms(tmp, 64, SIZE, seed=4)
    images = sorted(p for p in tmp.rglob("*.png") if not p.stem.endswith("_mask"))
    for i, image in enumerate(images):
        patient = root / f"P{i % 8}"
        patient.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, patient / f"P{i % 8}_{i}.png")
        shutil.copy(image.with_name(image.stem + "_mask.png"), patient / f"P{i % 8}_{i}_mask.png")
    return root


FOLDERS = {"braingan-dcgan": _class_folders, "oneshot-gan": _layout_split, "seg-tstr": _patients}


def tiny(name: str, work: Path) -> Recipe:
    """The shipped recipe ``name`` at test size (data written under ``work`` if needed)."""
    overrides = [f"data.size={SIZE}", "data.n=64"]
    if name in FOLDERS:
        overrides.append(f"data.path={FOLDERS[name](work / name)}")
    recipe = synthmri.load_recipe(name, overrides)
    for g in recipe.generators:
        g.params.update(synthmri.get_plugin("generator", g.plugin).quick_params)
    for exp in recipe.experiments:
        exp.synthetic_per_class = PER_CLASS
        kind = "classifier" if exp.task == "classify" else "segmenter"
        for m in exp.models:
            m.params.update(synthmri.get_plugin(kind, m.plugin).quick_params)
            if m.params.get("steps"):  # a step budget: a few steps, two checks
                m.params.update(steps=4, check_every=2)
    for ev in recipe.evaluate:
        ev.params.update(synthmri.get_plugin("evaluator", ev.plugin).quick_params)
        if ev.plugin == "turing_kit":
            ev.params.update(n=4, size=SIZE)
    return recipe


def digest(metrics: dict[str, Any]) -> str:
    """A sha256 prefix of ``metrics`` without timings and training seconds."""
    kept = {k: v for k, v in metrics.items() if k != "timings"}
    kept["generators"] = [
        {k: v for k, v in g.items() if k != "train_seconds"} for g in kept["generators"]
    ]
    text = json.dumps(kept, sort_keys=True, indent=1)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.mark.parametrize("name", sorted(shipped_recipes()))
def test_shipped_recipe_runs_at_test_size(name: str, tmp_path: Path) -> None:
    recipe = tiny(name, tmp_path / "data")
    result = synthmri.run_recipe(recipe, out=str(tmp_path / "runs"))
    written = json.loads((result.run_dir / "metrics.json").read_text())
    metrics = Metrics.model_validate(written)
    assert metrics.recipe == name and metrics.data.n_test > 0
    assert [g.generator for g in metrics.generators] == [g.label for g in recipe.generators]
    for g in metrics.generators:  # baselines (augment, lesion_paste, pca_gmm) say so
        assert g.baseline == synthmri.get_plugin("generator", g.plugin).baseline
    rows: dict[str, int] = {}  # expected rows per section, over every experiment of its task
    summaries: dict[str, int] = {}
    for exp in recipe.experiments:
        generators = exp.generators or [g.label for g in recipe.generators]
        expected = len(exp.models) * len(exp.runs(generators))
        section = "classification" if exp.task == "classify" else "segmentation"
        rows[section] = rows.get(section, 0) + expected * len(exp.seeds or [None])
        if exp.seeds:
            summaries[section] = summaries.get(section, 0) + expected
    for section, expected in rows.items():
        supervised = [r for r in written[section] if not r.get("unsupervised")]
        assert len(supervised) == expected, f"{section}: {len(supervised)} rows"
    for section, expected in summaries.items():
        assert len(written[f"{section}_summary"]) == expected
    for entry in recipe.evaluate:
        assert f"evaluate/{entry.label}" in metrics.timings.stages, f"{entry.label} did not run"
    assert (result.run_dir / "report.html").is_file()


def main(names: list[str]) -> None:
    """Print each tiny run's digest (all shipped recipes when ``names`` is empty)."""
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in names or sorted(shipped_recipes()):
            result = synthmri.run_recipe(tiny(name, work / "data"), out=str(work / "runs"))
            print(name, digest(result.metrics), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
