"""Shared fixtures: fake installed plugin distributions, the shared data folder."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_data(name: str) -> Path:
    """A folder of ../shared/data, or skip the test with a reason when it is absent."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent (real data lives in ../shared/data beside the repository)")
    return path


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., str]]:
    """Install a plugin as a fake distribution: a module plus ``*.dist-info/entry_points.txt``.

    Returns a function ``install(dist_name, module_name, source, entry_name=None)``.
    """
    from synthmri.core.plugins import reset_registry

    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    added: list[str] = []

    def install(
        dist: str, module: str, source: str, entry: str | None = None, version: str = "1.2.3"
    ) -> str:
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[synthmri]\n{entry or dist} = {module}\n")
        added.append(module)
        reset_registry()
        return module

    yield install
    for module in added:
        sys.modules.pop(module, None)
    reset_registry()


@pytest.fixture
def toy_plugins(fake_dist: Callable[..., str]) -> str:
    """The plugins of tests/toy_plugins.py, installed as distribution ``synthmri-toys``."""
    source = (Path(__file__).parent / "toy_plugins.py").read_text()
    return fake_dist("synthmri-toys", "synthmri_toys", source)
