"""The pipeline end to end with plugins the tests define: run directory, metrics, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from synthmri.core.errors import ConfigError
from synthmri.core.pipeline import load_generator, run_recipe
from synthmri.core.recipe import parse_recipe
from synthmri.core.training import load_checkpoint

RECIPE = """\
name: toy
seed: 1
data: {n: 48, size: 32}
generators:
  - plugin: toy_mean
experiments:
  - name: cls
    models: [toy_intensity]
    train_on: [real, synthetic, mixed]
    real_fraction: [0.5, 1.0]
    synthetic_per_class: 12
  - name: seg
    task: segment
    models: [toy_threshold]
    train_on: [real]
evaluate: [toy_count]
"""


def test_run_writes_the_run_directory(tmp_path: Path, toy_plugins: str) -> None:
    result = run_recipe(parse_recipe(RECIPE), out=tmp_path)
    run_dir = result.run_dir
    assert run_dir is not None and run_dir.parent == tmp_path
    for name in (
        "recipe.yaml",
        "metrics.json",
        "results.csv",
        "report.html",
        "report.md",
        "log.jsonl",
        "stages.json",
    ):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["recipe"] == "toy" and metrics["seed"] == 1
    data = metrics["data"]
    assert data["n_train"] + data["n_val"] + data["n_test"] == 48
    assert data["layout"] == "phantoms, core tumour masks"
    rows = metrics["classification"]
    # real x 2 fractions + synthetic x 1 + mixed x 2 fractions
    assert sorted((r["train_on"], r["real_fraction"]) for r in rows) == [
        ("mixed", 0.5),
        ("mixed", 1.0),
        ("real", 0.5),
        ("real", 1.0),
        ("synthetic", 0.0),
    ]
    real_half = next(r for r in rows if r["train_on"] == "real" and r["real_fraction"] == 0.5)
    real_full = next(r for r in rows if r["train_on"] == "real" and r["real_fraction"] == 1.0)
    assert real_half["n_train"] < real_full["n_train"]
    assert all(r["n_test"] == data["n_test"] for r in rows)
    synth = next(r for r in rows if r["train_on"] == "synthetic")
    assert synth["n_train"] == 24 and synth["generator"] == "toy_mean"
    assert {"total_s", "stages"} <= set(metrics["timings"])
    # per-class generators: one checkpoint per class, and PNGs per class
    assert (run_dir / "checkpoints" / "generate-toy_mean-tumor.pt").is_file()
    assert len(list((run_dir / "synthetic" / "toy_mean" / "tumor").glob("*.png"))) == 12
    assert (run_dir / "figures" / "generate-toy_mean-samples.png").is_file()
    html = (run_dir / "report.html").read_text()
    assert "data:image/png;base64" in html and "classification" in html
    assert "data (phantoms, core tumour masks): " in (run_dir / "report.md").read_text()
    # the recipe saved in the run directory reproduces the run's recipe
    assert parse_recipe((run_dir / "recipe.yaml").read_text()) == parse_recipe(RECIPE)


def test_runs_are_never_overwritten(tmp_path: Path, toy_plugins: str) -> None:
    recipe = parse_recipe(RECIPE.replace("synthetic, mixed", "synthetic"))
    first = run_recipe(recipe, out=tmp_path).run_dir
    second = run_recipe(recipe, out=tmp_path).run_dir
    assert first != second and first.is_dir() and second.is_dir()


def test_resume_reuses_unchanged_stages(tmp_path: Path, toy_plugins: str) -> None:
    first = run_recipe(parse_recipe(RECIPE), out=tmp_path)
    changed = parse_recipe(
        RECIPE.replace(
            "models: [toy_intensity]", "models: [{plugin: toy_intensity, params: {steps: 20}}]"
        )
    )
    second = run_recipe(changed, out=tmp_path, resume=first.run_dir)
    log = [json.loads(x) for x in (second.run_dir / "log.jsonl").read_text().splitlines()]
    reused = {x["stage_reused"] for x in log if "stage_reused" in x}
    assert "generate/toy_mean/tumor" in reused and "generate/toy_mean/normal" in reused
    assert not any(k.startswith("classify/") for k in reused)  # classifier params changed
    assert any(k.startswith("segment/") for k in reused)  # segmenter unchanged
    assert (
        second.metrics["classification"] != []
        and (second.run_dir / "checkpoints" / "generate-toy_mean-tumor.pt").is_file()
    )
    with pytest.raises(ConfigError):
        run_recipe(parse_recipe(RECIPE), out=tmp_path, resume=tmp_path / "nope")


def test_resume_samples_again_when_only_a_sampling_param_changed(
    tmp_path: Path, toy_plugins: str
) -> None:
    """A param the generator lists in ``sampling_params`` keeps its trained stage; the
    synthetic set, and what trains on it, are made again."""
    first = run_recipe(parse_recipe(RECIPE), out=tmp_path)
    changed = RECIPE.replace(
        "  - plugin: toy_mean\n", "  - plugin: toy_mean\n    params: {noise: 0.3}\n"
    )
    second = run_recipe(parse_recipe(changed), out=tmp_path, resume=first.run_dir)
    log = [json.loads(x) for x in (second.run_dir / "log.jsonl").read_text().splitlines()]
    reused = {x["stage_reused"] for x in log if "stage_reused" in x}
    assert {"generate/toy_mean/tumor", "generate/toy_mean/normal"} <= reused
    assert not any(k.startswith("classify/") and "synthetic" in k for k in reused)

    def spread(run: Path) -> float:
        images = [np.asarray(Image.open(p), float) for p in run.glob("synthetic/*/tumor/*.png")]
        return float(np.std(np.stack(images), axis=0).mean())

    assert spread(second.run_dir) > 2 * spread(first.run_dir)


def test_generator_checkpoint_round_trip(tmp_path: Path, toy_plugins: str) -> None:
    run_dir = run_recipe(parse_recipe(RECIPE), out=tmp_path).run_dir
    path = run_dir / "checkpoints" / "generate-toy_mean-normal.pt"
    ckpt = load_checkpoint(path)
    assert ckpt["kind"] == "generator" and ckpt["class_name"] == "normal"
    model, meta = load_generator(path)
    a, b = model.sample(4, seed=5), model.sample(4, seed=5)
    assert torch.equal(a.images, b.images) and meta["plugin"] == "toy_mean"


def test_conditional_generator_and_segmentation_from_synthetic(tmp_path, toy_plugins) -> None:
    text = RECIPE.replace(
        "  - plugin: toy_mean\n",
        "  - plugin: toy_mean\n    per_class: false\n    params: {conditional: true, "
        "emits_masks: true}\n",
    ).replace(
        "    task: segment\n    models: [toy_threshold]\n    train_on: [real]",
        "    task: segment\n    models: [toy_threshold]\n    train_on: [real, synthetic]\n"
        "    synthetic_per_class: 12",
    )
    result = run_recipe(parse_recipe(text), out=None)
    assert result.run_dir is None
    syn = [r for r in result.metrics["toy_counts"] if "generator" in r and "n" in r]
    assert syn and syn[0]["n"] == 24
    assert "segment/seg/toy_threshold/synthetic/toy_mean/0" in result.metrics["timings"]["stages"]


def test_max_train_images_limits_generator_data(tmp_path: Path, toy_plugins: str) -> None:
    text = RECIPE.replace(
        "  - plugin: toy_mean\n", "  - plugin: toy_mean\n    max_train_images: 3\n"
    )
    result = run_recipe(parse_recipe(text), out=tmp_path)
    gens = {g["generator"]: g for g in result.metrics["generators"]}
    assert gens["toy_mean"]["n_train"] == 6  # 3 per class


def test_train_fraction_shrinks_the_train_part_for_generators_and_models(
    tmp_path: Path, toy_plugins: str
) -> None:
    whole = run_recipe(parse_recipe(RECIPE), out=tmp_path / "whole").metrics
    text = RECIPE.replace(
        "data: {n: 48, size: 32}", "data: {n: 48, size: 32, split: {train_fraction: 0.25}}"
    )
    part = run_recipe(parse_recipe(text), out=tmp_path / "part").metrics
    n = part["data"]["n_train"]
    assert 0 < n < whole["data"]["n_train"] / 2
    # the held-out parts stay whole; the generator learns from the kept share only
    assert (part["data"]["n_val"], part["data"]["n_test"]) == (
        whole["data"]["n_val"],
        whole["data"]["n_test"],
    )
    assert part["generators"][0]["n_train"] == n
    real = [r for r in part["classification"] if r["train_on"] == "real"]
    assert {r["n_train"] for r in real if r["real_fraction"] == 1.0} == {n}


def test_generators_side_by_side(tmp_path: Path, toy_plugins: str) -> None:
    """With more than one generator, one figure shows real and every generator per class."""
    text = RECIPE.replace(
        "  - plugin: toy_mean\n", "  - plugin: toy_mean\n  - plugin: toy_mean\n    name: other\n"
    )
    run_dir = run_recipe(parse_recipe(text), out=tmp_path).run_dir
    assert run_dir is not None
    figures = run_dir / "figures"
    assert (figures / "generate-side-by-side.png").is_file()
    assert (figures / "generate-other-samples.png").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {g["generator"] for g in metrics["generators"]} == {"toy_mean", "other"}


def test_an_experiment_with_seeds_trains_once_per_seed_and_summarises(
    tmp_path: Path, toy_plugins: str
) -> None:
    recipe = parse_recipe(RECIPE, overrides=["experiments.0.seeds=[3, 4]"])
    metrics = run_recipe(recipe, out=tmp_path).metrics
    rows = metrics["classification"]
    assert len(rows) == 2 * 5 and {r["seed"] for r in rows} == {3, 4}
    stages = metrics["timings"]["stages"]
    assert "classify/cls/toy_intensity/real/real/0.5/seed3" in stages
    assert "classify/cls/toy_intensity/real/real/0.5/seed4" in stages
    summary = metrics["classification_summary"]
    assert len(summary) == 5 and all(s["n_seeds"] == 2 for s in summary)
    # the segmentation experiment lists no seeds: its rows carry none, and no summary
    assert all("seed" not in r for r in metrics["segmentation"])
    assert "segmentation_summary" not in metrics


WARM = """\
name: warm
seed: 0
data: {n: 24, size: 32}
generators:
  - plugin: dcgan
    warm_start: NORMAL
    # a learning rate that leaves the weights where they start
    params: {iterations: 2, batch_size: 4, ngf: 8, ndf: 8, lr: 1.0e-12}
"""


@pytest.mark.parametrize("executor", ["serial", "local"])
def test_warm_start_starts_the_other_classes_from_its_model(tmp_path: Path, executor: str) -> None:
    result = run_recipe(parse_recipe(WARM), out=tmp_path, executor=executor, workers=2)
    assert result.run_dir is not None
    ckpt = {
        c: load_checkpoint(result.run_dir / "checkpoints" / f"generate-dcgan-{c}.pt")["state"]
        for c in ("normal", "tumor")
    }
    for net in ("G", "D"):
        normal, tumour = ckpt["normal"][net], ckpt["tumor"][net]
        weights = [k for k in normal if k.endswith("weight")]
        assert weights and all(torch.allclose(normal[k], tumour[k], atol=1e-6) for k in weights)
    with pytest.raises(ConfigError, match="warm_start class 'healthy' is not one of its classes"):
        run_recipe(parse_recipe(WARM.replace("NORMAL", "healthy")), out=None)


def test_negatives_go_to_the_other_classes_models(tmp_path: Path) -> None:
    base = WARM.replace("    warm_start: NORMAL\n", "").replace("lr: 1.0e-12", "lr: 2.0e-4")
    states = {}
    for tag, recipe in [
        ("plain", base),
        ("nda", base.replace("dcgan\n", "dcgan\n    negatives: Normal\n")),
    ]:
        run_dir = run_recipe(parse_recipe(recipe), out=tmp_path / tag).run_dir
        assert run_dir is not None
        states[tag] = {
            c: load_checkpoint(run_dir / "checkpoints" / f"generate-dcgan-{c}.pt")["state"]["G"]
            for c in ("normal", "tumor")
        }
    same = [
        torch.equal(v, states["nda"]["normal"][k]) for k, v in states["plain"]["normal"].items()
    ]
    assert all(same)  # the negatives' own class trains as without them
    changed = [
        torch.equal(v, states["nda"]["tumor"][k]) for k, v in states["plain"]["tumor"].items()
    ]
    assert not all(changed)  # the tumour model's D saw normal slices among its fakes
    with pytest.raises(ConfigError, match="negatives class 'healthy' is not one of its classes"):
        run_recipe(
            parse_recipe(base.replace("dcgan\n", "dcgan\n    negatives: healthy\n")), out=None
        )
