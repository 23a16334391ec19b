"""docs/plugins.md stays true: its hook reference matches hookspecs.py and its code runs.

Conventions (stated at the top of the guide for editors): blocks fenced ```python are
executed in order in one namespace; ```python no-run and other languages are not run;
```yaml blocks with a top-level ``name`` are parsed as recipes (schema only).
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from synthmri.core import hookspecs
from synthmri.core.recipe import parse_recipe

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
HOOK_HEADING = re.compile(r"^### `(?P<name>\w+)\((?P<args>.*)\)(?: -> (?P<ret>.+?))?`\s*$")


def _text() -> str:
    if not GUIDE.is_file():
        pytest.fail(f"{GUIDE} is missing")
    return GUIDE.read_text(encoding="utf-8")


def _blocks(info: str) -> list[tuple[int, str]]:
    """(line number, code) of every fenced block whose info string is exactly ``info``."""
    text = _text()
    return [
        (text.count("\n", 0, m.start()) + 1, m.group(2))
        for m in FENCE.finditer(text)
        if m.group(1).strip() == info
    ]


def _hookspecs() -> dict[str, Any]:
    """Every function of hookspecs.py marked as a hookspec."""
    marker = f"{hookspecs.PROJECT}_spec"
    return {
        name: fn
        for name, fn in vars(hookspecs).items()
        if inspect.isfunction(fn) and hasattr(fn, marker)
    }


def _annotation(value: Any) -> str:
    if isinstance(value, str):  # postponed annotations (from __future__ import annotations)
        return value
    if isinstance(value, type):
        return value.__name__
    return repr(value).replace("typing.", "")


def signature_text(fn: Any) -> str:
    """``name(arg: Type, ...) -> Return`` as the guide writes it."""
    sig = inspect.signature(fn)
    args = []
    for p in sig.parameters.values():
        text = p.name
        if p.annotation is not inspect.Parameter.empty:
            text += f": {_annotation(p.annotation)}"
        if p.default is not inspect.Parameter.empty:
            text += f" = {p.default!r}"
        args.append(text)
    ret = ""
    if sig.return_annotation is not inspect.Signature.empty:
        ret = f" -> {_annotation(sig.return_annotation)}"
    return f"{fn.__name__}({', '.join(args)}){ret}"


def _reference() -> dict[str, tuple[str, str]]:
    """Hook name -> (documented signature, the text under its heading)."""
    text = _text()
    start = text.find("\n## Hook reference")
    assert start >= 0, "docs/plugins.md needs a '## Hook reference' section"
    end = text.find("\n## ", start + 1)
    section = text[start : end if end >= 0 else None]
    documented: dict[str, tuple[str, str]] = {}
    parts = re.split(r"(?m)^(?=### )", section)
    for part in parts[1:]:
        heading = part.splitlines()[0]
        m = HOOK_HEADING.match(heading)
        assert m, f"hook reference heading not in the form ### `hook(arg: Type) -> R`: {heading}"
        sig = f"{m['name']}({m['args']})" + (f" -> {m['ret']}" if m["ret"] else "")
        assert m["name"] not in documented, f"{m['name']} is documented twice"
        documented[m["name"]] = (sig, part)
    return documented


def test_every_hookspec_is_in_the_reference_with_its_exact_signature() -> None:
    specs = _hookspecs()
    assert specs, "found no hookspecs in synthmri.core.hookspecs"
    documented = _reference()
    missing = sorted(set(specs) - set(documented))
    assert not missing, f"hookspecs missing from docs/plugins.md's hook reference: {missing}"
    unknown = sorted(set(documented) - set(specs))
    assert not unknown, f"docs/plugins.md documents hooks that do not exist: {unknown}"
    for name, fn in specs.items():
        expected = signature_text(fn)
        doc_sig, body = documented[name]
        assert doc_sig == expected, f"docs/plugins.md has `{doc_sig}`, hookspecs.py `{expected}`"
        for arg in inspect.signature(fn).parameters:
            assert re.search(rf"(?m)^- `{arg}`:", body), (
                f"docs/plugins.md: argument `{arg}` of {name} is not described"
            )


def test_signature_text_sees_a_changed_hookspec() -> None:
    """The comparison is not vacuous: another signature gives another text."""

    def synthmri_register_generators(register: int, extra: str = "x") -> None:
        """A changed spec."""

    changed = signature_text(synthmri_register_generators)
    assert changed == "synthmri_register_generators(register: int, extra: str = 'x') -> None"
    assert changed != _reference()["synthmri_register_generators"][0]


def test_python_blocks_of_the_guide_run_in_order() -> None:
    blocks = _blocks("python")
    assert len(blocks) >= 3, "the guide should have runnable ```python examples"
    namespace: dict[str, Any] = {"__name__": "docs_plugins_md"}
    for line, code in blocks:
        try:
            # dont_inherit: run the block without this file's `from __future__` flags
            exec(compile(code, f"{GUIDE}:{line}", "exec", dont_inherit=True), namespace)
        except Exception as exc:
            pytest.fail(f"docs/plugins.md, block at line {line}: {type(exc).__name__}: {exc}")
    # the blocks really ran: the guide's generator exists in the namespace
    assert namespace["MeanPlusNoise"].name == "mean_plus_noise"


def test_no_run_blocks_at_least_compile() -> None:
    for line, code in _blocks("python no-run"):
        compile(code, f"{GUIDE}:{line}", "exec", dont_inherit=True)


def test_recipe_blocks_match_the_recipe_schema() -> None:
    checked = 0
    for line, code in _blocks("yaml"):
        raw = yaml.safe_load(code)
        if isinstance(raw, dict) and "name" in raw:
            parse_recipe(code, source=f"{GUIDE}:{line}", check_plugins=False)
            checked += 1
    assert checked >= 1, "the guide should show a recipe that uses a plugin"


def test_the_guide_covers_the_plugin_authors_topics() -> None:
    text = _text()
    for topic in (
        "StrictParams",
        "Field(",
        "quick_params",
        "emits_masks",
        "conditional",
        "weights_only",
        "synthmri.testing",
        "check_generator",
        "check_classifier",
        "check_segmenter",
        "[project.entry-points.synthmri]",
        "synthmri-<name>",
        "synthmri_<name>",
        "SYNTHMRI_DISABLE_PLUGINS",
        "synthmri plugins list",
        "entry_points(group='synthmri')",
        "synthmri plugins new",
    ):
        assert topic in text, f"docs/plugins.md does not mention {topic}"
