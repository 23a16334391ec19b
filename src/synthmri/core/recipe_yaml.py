"""The YAML dialect of recipes and ``--set`` values: ``yaml.safe_load`` where only
true/false are booleans, and ``apply_override`` for one ``--set key.path=value``."""

from __future__ import annotations

import re
from typing import Any

import yaml

from synthmri.core.errors import RecipeError

__all__ = ["RecipeLoader", "apply_override", "yaml_load"]


class RecipeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` where only true/false are booleans: ``yes``, ``no``, ``on`` and
    ``off`` stay the strings a user wrote (``classes: [yes, no]`` names the folders ``yes/``
    and ``no/``; a bool field still reads ``augment: yes`` as true)."""


RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def yaml_load(text: str) -> Any:
    """``text`` parsed with ``RecipeLoader``."""
    return yaml.load(text, Loader=RecipeLoader)


def apply_override(raw: dict[str, Any], item: str) -> tuple[str, ...]:
    """Apply one ``a.b.c=value`` (value parsed as YAML; list positions as numbers); returns
    the key path set. A key with an empty or odd part is a RecipeError naming the ``--set``."""
    if "=" not in item:
        raise RecipeError(f"--set {item!r}: expected key.path=value")
    key, value_text = item.split("=", 1)
    try:
        value = yaml_load(value_text) if value_text.strip() else None
    except yaml.YAMLError:
        value = value_text
    parts = key.strip().split(".")
    if any(not re.fullmatch(r"[A-Za-z0-9_\-]+", part) for part in parts):
        raise RecipeError(
            f"--set {item!r}: {key.strip()!r} is not a key path",
            hint="give dot-separated keys and list positions, e.g. --set data.size=64",
        )
    target: Any = raw
    for part in parts[:-1]:
        target = _step(target, part, key)
    last = parts[-1]
    if isinstance(target, list):
        target[_index(target, last, key)] = value
    elif isinstance(target, dict):
        target[last] = value
    else:
        raise RecipeError(f"--set {key}: {'.'.join(parts[:-1])} is not a section")
    return tuple(parts)


def _index(seq: list[Any], part: str, key: str) -> int:
    try:
        i = int(part)
        seq[i]
        return i
    except (ValueError, IndexError):
        raise RecipeError(
            f"--set {key}: {part!r} is not a position in a list of {len(seq)}"
        ) from None


def _step(target: Any, part: str, key: str) -> Any:
    """One key of the path: a list position, or a section (made when absent or null)."""
    if isinstance(target, list):
        return target[_index(target, part, key)]
    if isinstance(target, dict):
        if target.get(part) is None:
            target[part] = {}
        return target[part]
    raise RecipeError(f"--set {key}: cannot descend into {part!r}")
