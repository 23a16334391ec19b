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


def test_a_mixed_set_repeats_a_small_real_share_to_the_share_asked() -> None:
    from synthmri.core.recipe import Experiment
    from synthmri.core.stages import training_set
    from synthmri.testing import phantom_set

    train, syn = phantom_set(n=20, seed=0), phantom_set(n=40, seed=1)
    plain = Experiment(models=[{"plugin": "brain_cnn"}], synthetic_per_class=20)
    half = plain.model_copy(update={"mixed_real_share": 0.5})

    def build(exp: Experiment, train_on: str, fraction: float) -> tuple[int, int]:
        data = training_set(exp, train, {"g": syn}, train_on, "g", fraction, 0)
        real = sum(s in train.sources for s in data.sources)
        return real, len(data) - real

    assert build(plain, "mixed", 0.5) == (10, 40)  # concatenated as drawn
    assert build(half, "mixed", 0.5) == (40, 40)  # the 10 real images four times
    assert build(half, "mixed", 1.0) == (40, 40)
    assert build(half, "synthetic", 0.0) == (0, 40)  # only mixed sets change
    lots = half.model_copy(update={"synthetic_per_class": 1})
    assert build(lots, "mixed", 1.0) == (20, 2)  # a large real share is never dropped
    with pytest.raises(ValueError, match="mixed_real_share"):
        Experiment(models=[{"plugin": "brain_cnn"}], mixed_real_share=1.0)
