"""The plugin manager: built-in modules and installed entry points, loaded the same way.

Built-ins are the modules in ``BUILTIN_MODULES``; third-party plugins declare an
entry point in group ``synthmri`` (``[project.entry-points.synthmri]``). Both are
registered with one pluggy manager and asked for their classes through the hooks
of ``hookspecs``. ``SYNTHMRI_DISABLE_PLUGINS=name,...`` blocks external plugins
by entry-point name or distribution name. A plugin that fails to import or
register is recorded as broken (``Registry.broken``) and the others still load: any
exception counts, ``SystemExit`` from a plugin that calls ``sys.exit()`` included (only
Ctrl-C, ``KeyboardInterrupt``, goes through). A name two providers register is blocked
alone (asking for it is an error naming both).
"""

from __future__ import annotations

import importlib
import os
from importlib import metadata
from typing import Any

import pluggy

from synthmri._version import __version__
from synthmri.core import hookspecs
from synthmri.core.hookspecs import HOOK_KINDS, PROJECT
from synthmri.core.registry import BrokenPlugin, PluginInfo, Registry

ENTRY_POINT_GROUP = "synthmri"
DISABLE_ENV = "SYNTHMRI_DISABLE_PLUGINS"

BUILTIN_MODULES: tuple[str, ...] = (
    "synthmri.plugins.generators.dcgan",
    "synthmri.plugins.generators.wgan_gp",
    "synthmri.plugins.generators.oneshot_gan",
    "synthmri.plugins.generators.fastgan",
    "synthmri.plugins.generators.vae",
    "synthmri.plugins.generators.diffusion",
    "synthmri.plugins.generators.augment",
    "synthmri.plugins.generators.lesion_paste",
    "synthmri.plugins.generators.folder",
    "synthmri.plugins.generators.pca_gmm",
    "synthmri.plugins.classifiers.torchvision_models",
    "synthmri.plugins.classifiers.efficientnet",
    "synthmri.plugins.classifiers.brain_cnn",
    "synthmri.plugins.classifiers.vae_anomaly",
    "synthmri.plugins.classifiers.diffusion_anomaly",
    "synthmri.plugins.classifiers.dae_anomaly",
    "synthmri.plugins.classifiers.pca_anomaly",
    "synthmri.plugins.classifiers.ensemble_anomaly",
    "synthmri.plugins.segmenters.unet",
    "synthmri.plugins.evaluators.classification",
    "synthmri.plugins.evaluators.intensity",
    "synthmri.plugins.evaluators.segmentation",
    "synthmri.plugins.evaluators.image_quality",
    "synthmri.plugins.evaluators.privacy",
    "synthmri.plugins.evaluators.turing",
)

_registry: Registry | None = None


def disabled_names() -> set[str]:
    """Names blocked through ``SYNTHMRI_DISABLE_PLUGINS``."""
    raw = os.environ.get(DISABLE_ENV, "")
    return {part.strip() for part in raw.split(",") if part.strip()}


def _sources() -> list[tuple[str, str, str, Any]]:
    """(plugin name, package, version, loader) for built-ins then entry points."""
    version = __version__
    found: list[tuple[str, str, str, Any]] = [
        (mod, "synthmri", version, lambda mod=mod: importlib.import_module(mod))
        for mod in BUILTIN_MODULES
    ]
    blocked = disabled_names()
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        package = dist.metadata["Name"] if dist is not None else ep.value.split(":")[0]
        dist_version = dist.version if dist is not None else "?"
        if ep.name in blocked or package in blocked:
            continue
        found.append((ep.name, package, dist_version, ep.load))
    return found


def build_registry() -> Registry:
    """Load every plugin source and collect the classes it registers."""
    registry = Registry()
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    providers: dict[str, tuple[str, str]] = {}
    for name, package, version, load in _sources():
        try:
            module = load()
            pm.register(module, name=name)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a broken plugin (even sys.exit()) must not break us
            registry.broken.append(BrokenPlugin(name, package, version, _describe(exc)))
            continue
        providers[name] = (package, version)
    for hook_name, kind in HOOK_KINDS.items():
        caller = getattr(pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):  # registration order
            package, version = providers[impl.plugin_name]

            def register(
                cls: type, kind: str = kind, package: str = package, version: str = version
            ) -> None:
                registry.add(kind, cls, package, version)

            try:
                impl.function(register=register)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                registry.broken.append(
                    BrokenPlugin(impl.plugin_name, package, version, _describe(exc))
                )
    return registry


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"SystemExit: the plugin called sys.exit({exc.code!r}) while loading"
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _registry
    if _registry is None:
        _registry = build_registry()
    return _registry


def reset_registry() -> None:
    """Forget the registry so the next call rediscovers plugins (after installs, in tests)."""
    global _registry
    _registry = None
    importlib.invalidate_caches()


def get_plugin(kind: str, name: str) -> type:
    """The plugin class ``name`` of ``kind`` (generator, classifier, segmenter, evaluator)."""
    return get_registry().get(kind, name).cls


def get_plugin_info(kind: str, name: str) -> PluginInfo:
    """The registry entry (class, package, version) of a plugin."""
    return get_registry().get(kind, name)


def list_plugins(kind: str | None = None) -> list[PluginInfo]:
    """Every registered plugin (of ``kind`` when given), with its provider."""
    return get_registry().list(kind)
