"""The ``folder`` generator: a synthetic set from disk, scored like any generator; its
folder's sha256 is part of the stage key, so ``--resume`` rereads a changed folder."""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

from synthmri import get_plugin
from synthmri.core.data import load_images
from synthmri.core.errors import ConfigError, DataError
from synthmri.core.phantoms import make_phantoms, write_phantoms
from synthmri.core.pipeline import load_generator, run_recipe
from synthmri.core.recipe import parse_recipe
from synthmri.core.training import RunContext
from synthmri.plugins.generators.folder import Folder, folder_digest
from synthmri.testing import read_log, round_trip


@pytest.fixture
def synthetic(tmp_path: Path) -> Path:
    """Class folders (upper-case names) of 48 px phantoms with masks beside."""
    root = tmp_path / "synthetic"
    write_phantoms(root, 20, 48, seed=9)
    (root / "normal").rename(root / "NORMAL")
    (root / "tumor").rename(root / "Tumor")
    return root


@pytest.fixture(scope="module")
def train() -> object:
    return make_phantoms(16, 32, seed=0)


def test_registered_conditional() -> None:
    assert get_plugin("generator", "folder") is Folder
    assert Folder.conditional


def test_reads_the_folder_at_the_run_size_with_classes_matched(
    synthetic: Path, train, tmp_path: Path
) -> None:
    model = Folder({"path": str(synthetic)})
    run = RunContext(tmp_path / "run", seed=0)
    model.fit(train, run)
    digest, n_files = folder_digest(synthetic)
    assert n_files == 40  # 20 images and their masks
    state = model.state_dict()
    assert state["path"] == str(synthetic.resolve()) and state["sha256"] == digest
    assert model.cache_key() == digest and model.emits_masks
    assert any(digest in note and str(synthetic.resolve()) in note for note in run.notes)
    assert any(r.get("folder_sha256") == digest for r in read_log(tmp_path / "run"))
    out = model.sample(5, label=1, seed=3)
    assert out.images.shape == (5, 1, 32, 32) and out.labels.tolist() == [1] * 5
    assert out.masks is not None and out.masks.sum() > 0  # tumour masks from the folder
    assert all(s.startswith("folder:Tumor/") for s in out.sources)
    assert torch.equal(out.images, model.sample(5, label=1, seed=3).images)
    restored = Folder({"path": str(synthetic)})
    restored.load_state_dict(round_trip(state))
    assert torch.equal(restored.sample(5, label=1, seed=3).images, out.images)


def test_warns_when_the_real_data_are_phantoms_made_in_memory(
    synthetic: Path, train, tmp_path: Path
) -> None:
    """In-memory phantoms skip the loader's crop and rescaling; read from files they do not."""
    on_disk = tmp_path / "real"
    write_phantoms(on_disk, 16, 32, seed=0)
    for data, warned in ((train, True), (load_images(on_disk).data, False)):
        run = RunContext(seed=0)
        Folder({"path": str(synthetic)}).fit(data, run)
        assert any("synthmri phantoms --out" in note for note in run.notes) is warned


def test_draws_distinct_images_then_repeats_evenly_with_a_warning(
    synthetic: Path, train, caplog: pytest.LogCaptureFixture
) -> None:
    model = Folder({"path": str(synthetic)})
    model.fit(train, RunContext())
    count = len(list((synthetic / "NORMAL").glob("*[0-9].png")))
    few = model.sample(count, label=0, seed=1)
    assert len(set(few.sources)) == count
    with caplog.at_level(logging.WARNING):
        many = model.sample(2 * count + 1, label=0, seed=1)
    assert set(Counter(many.sources).values()) <= {2, 3}
    assert "images repeat" in caplog.text


def test_masks_are_optional(synthetic: Path, train) -> None:
    for mask in synthetic.rglob("*_mask.png"):
        mask.unlink()
    model = Folder({"path": str(synthetic)})
    model.fit(train, RunContext())
    assert not model.emits_masks and model.sample(2, label=0, seed=0).masks is None
    with pytest.raises(DataError, match="no <stem>_mask files"):
        Folder({"path": str(synthetic), "emits_masks": True}).fit(train, RunContext())


def test_trained_per_class_it_reads_that_class(synthetic: Path, train) -> None:
    model = Folder({"path": str(synthetic)})
    model.fit(train.of_class("tumor"), RunContext())
    out = model.sample(4, seed=0)  # per class: label None, the class it was trained on
    assert out.labels.tolist() == [1] * 4
    with pytest.raises(DataError, match="no images of 'normal'"):
        model.sample(2, label=0, seed=0)


def test_bad_folders_are_clear_errors(synthetic: Path, train, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"params\.path is not set"):
        Folder().fit(train, RunContext())
    with pytest.raises(DataError, match="no such folder"):
        Folder({"path": str(tmp_path / "nope")}).cache_key()
    shutil.rmtree(synthetic / "NORMAL")
    with pytest.raises(DataError, match=r"has no class 'normal'.*Tumor"):
        Folder({"path": str(synthetic)}).fit(train, RunContext())
    flat = tmp_path / "flat"
    flat.mkdir()
    for image in (synthetic / "Tumor").glob("*.png"):
        shutil.copy(image, flat / image.name)
    with pytest.raises(DataError, match="no class folders"):
        Folder({"path": str(flat)}).fit(train, RunContext())


def test_the_digest_follows_the_content(synthetic: Path) -> None:
    before = folder_digest(synthetic)[0]
    assert folder_digest(synthetic)[0] == before
    (synthetic / "notes.txt").write_text("not an image: not read, not hashed")
    assert folder_digest(synthetic)[0] == before
    first = sorted((synthetic / "Tumor").glob("*[0-9].png"))[0]
    Image.new("L", (48, 48), 0).save(first)
    assert folder_digest(synthetic)[0] != before


RECIPE = """\
name: byo
seed: 0
data: {n: 48, size: 32}
generators:
  - plugin: folder
    per_class: false
    params: {path: PATH}
experiments:
  - name: tstr
    models: [{plugin: brain_cnn, params: {epochs: 1, batch_size: 16}}]
    train_on: [synthetic]
    synthetic_per_class: 8
evaluate: [classification, {plugin: privacy, params: {features: random, figure_pairs: 0}}]
"""


def _reused(run_dir: Path) -> set[str]:
    return {r["stage_reused"] for r in read_log(run_dir) if "stage_reused" in r}


def test_resume_rereads_a_folder_whose_content_changed(synthetic: Path, tmp_path: Path) -> None:
    recipe = parse_recipe(RECIPE.replace("PATH", str(synthetic)))
    first = run_recipe(recipe, out=tmp_path / "runs", device="cpu")
    rows = first.metrics["privacy"]
    assert {r["generator"] for r in rows} == {"folder"}
    (row,) = first.metrics["classification"]
    assert (row["generator"], row["train_on"], row["n_train"]) == ("folder", "synthetic", 16)
    model, payload = load_generator(first.run_dir / "checkpoints" / "generate-folder.pt")
    assert payload["state"]["sha256"] == folder_digest(synthetic)[0]
    # unchanged folder: the generator stage is reused
    again = run_recipe(recipe, out=tmp_path / "runs", resume=first.run_dir, device="cpu")
    assert {"generate/folder", "classify/tstr/brain_cnn/synthetic/folder/0"} <= _reused(
        again.run_dir
    )
    # one image changed: the stage is redone, and so is everything trained on its samples
    first_image = sorted((synthetic / "Tumor").glob("*[0-9].png"))[0]
    Image.new("L", (48, 48), 0).save(first_image)
    changed = run_recipe(recipe, out=tmp_path / "runs", resume=again.run_dir, device="cpu")
    reused = _reused(changed.run_dir)
    assert "generate/folder" not in reused and not any(k.startswith("classify/") for k in reused)
    stages = json.loads((changed.run_dir / "stages.json").read_text())
    assert (
        stages["generate/folder"]["hash"]
        != json.loads((first.run_dir / "stages.json").read_text())["generate/folder"]["hash"]
    )
    assert model.state_dict()["sha256"] != folder_digest(synthetic)[0]
