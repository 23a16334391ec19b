"""Shared fixtures: fake installed plugin distributions, the shared data folder."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_data(name: str) -> Path:
    """A folder of ../shared/data, or skip the test with a reason when it is absent."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent (real data lives in ../shared/data beside the repository)")
    return path


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """The tests' 32 px networks gain nothing from intra-op threads, and on a shared 2-core
    machine spinning OpenMP threads made them several times slower: use one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run the CLI in-process: ``cli("plugins", "list")`` -> (exit code, stdout, stderr)."""
    from synthmri.cli import main

    def invoke(*args: str) -> tuple[int, str, str]:
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


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
