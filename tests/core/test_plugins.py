"""Plugin discovery through entry points, duplicates, unknown names, blocking, broken plugins."""

from __future__ import annotations

import pytest

import synthmri
from synthmri.core.errors import PluginError
from synthmri.core.plugins import get_registry, reset_registry


def test_entry_point_plugin_is_discovered_and_usable(toy_plugins: str) -> None:
    info = {(i.kind, i.name): i for i in synthmri.list_plugins()}
    gen = info[("generator", "toy_mean")]
    assert gen.package == "synthmri-toys" and gen.version == "1.2.3"
    cls = synthmri.get_plugin("generator", "toy_mean")
    model = cls({"noise": 0.0})
    data = synthmri.ImageSet(images=synthmri_rand(4))
    model.fit(data, synthmri.RunContext())
    out = model.sample(3, seed=1)
    assert out.images.shape == (3, 1, 8, 8)
    assert {
        ("classifier", "toy_intensity"),
        ("segmenter", "toy_threshold"),
        ("evaluator", "toy_count"),
    } <= set(info)


def synthmri_rand(n: int):
    import torch

    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def test_unknown_name_lists_available_and_closest(toy_plugins: str) -> None:
    with pytest.raises(PluginError) as exc:
        synthmri.get_plugin("generator", "toy_maen")
    assert "toy_mean" in exc.value.message
    assert exc.value.hint is not None and "toy_mean" in exc.value.hint


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(PluginError, match="unknown plugin kind"):
        synthmri.get_plugin("painter", "x")


def test_duplicate_name_names_both_providers(fake_dist, toy_plugins: str) -> None:
    fake_dist(
        "synthmri-clash",
        "synthmri_clash",
        """
        from synthmri import hookimpl
        from synthmri_toys import MeanGenerator

        class Clash(MeanGenerator):
            name = "toy_mean"

        @hookimpl
        def synthmri_register_generators(register):
            register(Clash)
    """,
    )
    registry = get_registry()  # the clash blocks its name only
    with pytest.raises(PluginError) as exc:
        synthmri.get_plugin("generator", "toy_mean")
    msg = exc.value.message
    assert "toy_mean" in msg and "synthmri-toys" in msg and "synthmri-clash" in msg
    assert synthmri.get_plugin("classifier", "toy_intensity").name == "toy_intensity"
    assert "toy_mean" not in {i.name for i in registry.list("generator")}
    [blocked] = registry.broken  # the later of the two providers, listed as broken
    assert (blocked.name, blocked.kind) == ("toy_mean", "generator")
    assert blocked.package in ("synthmri-clash", "synthmri-toys") and "duplicate" in blocked.error


def test_disable_env_blocks_external_plugins(toy_plugins: str, monkeypatch) -> None:
    monkeypatch.setenv("SYNTHMRI_DISABLE_PLUGINS", "synthmri-toys")
    reset_registry()
    assert "toy_mean" not in {i.name for i in synthmri.list_plugins("generator")}
    with pytest.raises(PluginError):
        synthmri.get_plugin("generator", "toy_mean")


def test_broken_plugin_is_reported_and_others_keep_working(fake_dist, toy_plugins) -> None:
    fake_dist("synthmri-broken", "synthmri_broken", "raise RuntimeError('boom at import')\n")
    fake_dist(
        "synthmri-badreg",
        "synthmri_badreg",
        """
        from synthmri import hookimpl

        @hookimpl
        def synthmri_register_generators(register):
            raise ValueError("boom in register")
    """,
    )
    registry = get_registry()
    broken = {b.package: b.error for b in registry.broken}
    assert "boom at import" in broken["synthmri-broken"]
    assert "boom in register" in broken["synthmri-badreg"]
    assert synthmri.get_plugin("generator", "toy_mean").name == "toy_mean"


def test_registering_a_non_plugin_is_reported(fake_dist) -> None:
    fake_dist(
        "synthmri-notaplugin",
        "synthmri_notaplugin",
        """
        from synthmri import hookimpl

        class NotAGenerator:
            name = "nope"

        @hookimpl
        def synthmri_register_generators(register):
            register(NotAGenerator)
    """,
    )
    registry = get_registry()
    assert any("not a Generator subclass" in b.error for b in registry.broken)


def test_bad_params_name_the_key(toy_plugins: str) -> None:
    cls = synthmri.get_plugin("generator", "toy_mean")
    with pytest.raises(PluginError, match="nosie"):
        cls({"nosie": 1})
    with pytest.raises(PluginError, match="noise"):
        cls({"noise": "loud"})
