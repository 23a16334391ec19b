"""``synthmri compare``: quality and privacy numbers between two folders (32 px)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from synthmri.core.phantoms import write_phantoms

SIZE = 32
Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real phantoms (40, class folders) and synthetic ones (24) drawn with another seed."""
    root = tmp_path_factory.mktemp("compare")
    real, synth = root / "real", root / "synth"
    write_phantoms(real, 40, SIZE, seed=0)
    write_phantoms(synth, 24, SIZE, seed=5)
    return {"root": root, "real": real, "synth": synth}


def _compare(cli: Cli, real: Path, synth: Path, *extra: str) -> dict:
    code, out, err = cli(
        "compare", str(real), str(synth), "--features", "random", "--size", str(SIZE), "--json",
        *extra,
    )  # fmt: skip
    assert code == 0, err
    return json.loads(out)


def test_compare_cli(cli: Cli, folders: dict[str, Path]) -> None:
    real, synth = folders["real"], folders["synth"]
    data = _compare(cli, real, synth)
    assert data["features"] == "random"
    assert {r["class"] for r in data["rows"]} == {"normal", "tumor"}
    for r in data["rows"]:
        assert r["fid"] is not None and r["fid_real_floor"] is not None
        assert 0 <= r["memorized_fraction"] <= 1 and r["n_synthetic"] == 12
    # a plain folder of images (no class folders) is one class
    flat = folders["root"] / "flat"
    flat.mkdir()
    for png in synth.glob("*/*.png"):
        if not png.stem.endswith("_mask"):
            (flat / png.name).write_bytes(png.read_bytes())
    rows = _compare(cli, real, flat)["rows"]
    assert [r["class"] for r in rows] == ["all"] and rows[0]["n_synthetic"] == 24
    empty = folders["root"] / "empty"
    empty.mkdir()
    code, _, err = cli("compare", str(real), str(empty), "--features", "random")
    assert code == 2 and "error" in err
    code, _, err = cli("compare", str(real), str(synth), "--features", "clip")
    assert code == 2 and "clip" in err and "domain, inception, random" in err


def test_compare_matches_classes_by_name(cli: Cli, folders: dict[str, Path]) -> None:
    real, synth, root = folders["real"], folders["synth"], folders["root"]
    # names match ignoring case; a synthetic class the real data lacks is left out
    partial = root / "partial"
    shutil.copytree(synth / "tumor", partial / "TUMOR")
    shutil.copytree(synth / "normal", partial / "other")
    rows = _compare(cli, real, partial)["rows"]
    assert [(r["class"], r["n_synthetic"]) for r in rows] == [("TUMOR", 12)]
    # no class matches: both folders are one class
    renamed = root / "renamed"
    shutil.copytree(synth / "normal", renamed / "a")
    shutil.copytree(synth / "tumor", renamed / "b")
    rows = _compare(cli, real, renamed)["rows"]
    assert [(r["class"], r["n_synthetic"]) for r in rows] == [("all", 24)]


def test_compare_flags_copies_of_any_real_image(cli: Cli, folders: dict[str, Path]) -> None:
    """Memorisation searches the whole real folder, both halves of the split."""
    data = _compare(cli, folders["real"], folders["real"])
    assert [r["memorized_fraction"] for r in data["rows"]] == [1.0, 1.0]
    assert all(r["nn_ssim_max"] == 1.0 for r in data["rows"])
