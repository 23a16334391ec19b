"""The YAML dialect of recipes and ``--set`` values: ``yaml.safe_load`` where only
true/false are booleans."""

from __future__ import annotations

import re
from typing import Any

import yaml

__all__ = ["RecipeLoader", "yaml_load"]


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
