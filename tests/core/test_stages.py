"""Stage keys, the stage cache and the run directory (synthmri.core.stages)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from synthmri.core.errors import ConfigError
from synthmri.core.stages import StageCache, content_hash, new_run_dir, stage_seed
from synthmri.core.training import RunContext


def test_content_hash_and_stage_seed_are_stable() -> None:
    t = torch.arange(6.0)
    assert content_hash({"a": 1, "b": [2]}, t) == content_hash({"b": [2], "a": 1}, t.clone())
    assert content_hash({"a": 1}) != content_hash({"a": 2})
    assert stage_seed(0, "generate/x") == stage_seed(0, "generate/x")
    assert stage_seed(0, "generate/x") != stage_seed(1, "generate/x")
    assert 0 <= stage_seed(123, "k") < 2**31


def test_new_run_dir_never_reuses_a_directory(tmp_path: Path) -> None:
    dirs = [new_run_dir(tmp_path, "toy") for _ in range(3)]
    assert len(set(dirs)) == 3 and all(d.is_dir() and d.parent == tmp_path for d in dirs)
    assert all(d.name.startswith("toy-") for d in dirs)


def _stored_run(tmp_path: Path) -> Path:
    first = new_run_dir(tmp_path, "a")
    cache = StageCache(first, None)
    run = RunContext(first, device="cpu", seed=0)
    cache.store("generate/x", "h1", run, "generate-x", {"state": {"w": torch.ones(2)}})
    assert cache.lookup("generate/x", "h1") is None  # nothing to resume from
    return first


def test_stage_cache_reuses_a_matching_stage_and_copies_it(tmp_path: Path) -> None:
    first = _stored_run(tmp_path)
    index = json.loads((first / "stages.json").read_text())
    assert index == {"generate/x": {"hash": "h1", "file": "checkpoints/generate-x.pt"}}

    second = new_run_dir(tmp_path, "b")
    cache = StageCache(second, first)
    hit = cache.lookup("generate/x", "h1")
    assert hit is not None and torch.equal(hit["state"]["w"], torch.ones(2))
    assert (second / "checkpoints" / "generate-x.pt").is_file()
    assert json.loads((second / "stages.json").read_text()) == index


def test_stage_cache_misses_on_another_hash_key_or_lost_file(tmp_path: Path) -> None:
    first = _stored_run(tmp_path)
    cache = StageCache(None, first)  # resume without writing
    assert cache.lookup("generate/x", "other") is None
    assert cache.lookup("generate/y", "h1") is None
    assert cache.lookup("generate/x", "h1") is not None
    (first / "checkpoints" / "generate-x.pt").unlink()
    assert cache.lookup("generate/x", "h1") is None


def test_stage_cache_refuses_a_folder_that_is_no_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no stages\.json"):
        StageCache(None, tmp_path)
