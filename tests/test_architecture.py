"""Architecture rules (docs/architecture.md), checked on the source by walking its imports.

- ``synthmri.core`` imports nothing from ``synthmri.plugins``;
- no plugin module imports another plugin module, and the shared library ``synthmri.nn``
  and the CLI import no plugin module (they reach plugins through the registry);
- no test imports a private name;
- no module is over ``MAX_LINES`` lines, except single-plugin modules;
- every name the benchmark scripts import from synthmri exists (they run outside the
  suite, so a renamed function would otherwise break them unnoticed).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from synthmri.core.plugins import BUILTIN_MODULES

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "synthmri"
MAX_LINES = 600


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) for every import in ``path``, nested ones included;
    relative imports are resolved against the module's package."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ""
    if path.is_relative_to(SRC):
        package = _module_name(path if path.name == "__init__.py" else path.parent)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            found.append((module, [a.name for a in node.names], node.lineno))
    return found


def _targets(module: str, names: list[str]) -> set[str]:
    """The modules an import statement reaches (``from a import b`` may import module a.b)."""
    return {module} | {f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES}


def _violations(modules: list[str], forbidden: set[str]) -> list[str]:
    bad = []
    for mod in modules:
        for module, names, line in _imports(MODULES[mod]):
            hit = sorted(t for t in _targets(module, names) if t in forbidden and t != mod)
            bad += [f"{MODULES[mod].relative_to(ROOT)}:{line} imports {t}" for t in hit]
    return bad


def test_builtin_plugin_modules_exist() -> None:
    missing = [m for m in BUILTIN_MODULES if m not in MODULES]
    assert not missing, f"BUILTIN_MODULES names modules that do not exist: {missing}"


def test_core_imports_no_plugins() -> None:
    core = [m for m in MODULES if m.startswith("synthmri.core")]
    plugins = {m for m in MODULES if m.startswith("synthmri.plugins")}
    assert core
    bad = _violations(core, plugins)
    assert not bad, "\n".join(bad)


def test_no_plugin_module_imports_another() -> None:
    plugin_modules = set(BUILTIN_MODULES)
    helpers = [m for m in MODULES if m.startswith("synthmri.plugins") and m not in plugin_modules]
    bad = _violations(sorted(plugin_modules), plugin_modules) + _violations(helpers, plugin_modules)
    assert not bad, "plugins and their helpers must not import plugin modules:\n" + "\n".join(bad)


@pytest.mark.parametrize("layer", ["synthmri.nn", "synthmri.cli"])
def test_layer_reaches_plugins_only_through_the_registry(layer: str) -> None:
    modules = [m for m in MODULES if m == layer or m.startswith(layer + ".")]
    assert modules, f"{layer} has no modules"
    bad = _violations(modules, set(BUILTIN_MODULES))
    assert not bad, "\n".join(bad)


def _private(module: str, names: list[str]) -> list[str]:
    parts = module.split(".")
    if any(p.startswith("_") and not p.startswith("__") for p in parts):
        return [module]
    return [f"{module}.{n}" for n in names if n.startswith("_") and not n.startswith("__")]


def test_no_test_imports_a_private_name() -> None:
    bad = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for module, names, line in _imports(path):
            if module.split(".")[0] != "synthmri":
                continue
            bad += [f"{path.relative_to(ROOT)}:{line} imports {p}" for p in _private(module, names)]
    assert not bad, "tests must use public names:\n" + "\n".join(bad)


def test_benchmarks_import_names_that_exist() -> None:
    missing = []
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        for module, names, line in _imports(path):
            if module.split(".")[0] != "synthmri":
                continue
            found = importlib.import_module(module)
            missing += [
                f"{path.relative_to(ROOT)}:{line} imports {module}.{n}"
                for n in names
                if not hasattr(found, n) and f"{module}.{n}" not in MODULES
            ]
    assert not missing, "\n".join(missing)


def test_modules_stay_small() -> None:
    single_plugin = set(BUILTIN_MODULES)
    too_long = {
        mod: n
        for mod, path in MODULES.items()
        if mod not in single_plugin
        and (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not too_long, f"split these modules (over {MAX_LINES} lines): {too_long}"
