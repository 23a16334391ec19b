"""``synthmri plugins new KIND NAME``: write a ready-to-install plugin package.

The package is small but real: its plugin works (a per-pixel Gaussian generator,
a small DCGAN-style GAN on synthmri's GAN base, a logistic-regression classifier on
downsampled pixels, a threshold segmenter, a counting evaluator), its test passes with
``synthmri.testing``, and it installs with ``pip install -e``. Layout (for
``NAME=my_gan``, kind generator)::

    synthmri-my-gan/
      pyproject.toml             distribution synthmri-my-gan, entry point group synthmri
      README.md
      src/synthmri_my_gan/__init__.py   the class, its Params and the @hookimpl
      src/synthmri_my_gan/py.typed
      tests/test_synthmri_my_gan.py

The templates are package data in ``templates/``: ``pyproject.toml.tmpl`` and
``README.md.tmpl`` shared by all, and per template ``plugin.py.tmpl``,
``test.py.tmpl`` and ``usage.md.tmpl`` (the README's recipe section). The
placeholders ``__NAME__``, ``__CLASS__``, ``__MODULE__``, ``__DIST__``, ``__KIND__``,
``__HOOK__`` and ``__SYNTHMRI__`` are replaced by plain text substitution. CI renders
every template and lints the result with ruff (``.ci/lint_templates.sh``).
"""

from __future__ import annotations

import keyword
import re
from enum import StrEnum
from importlib import resources
from pathlib import Path

from synthmri._version import __version__
from synthmri.core.errors import ConfigError, SynthMRIError
from synthmri.core.hookspecs import HOOK_KINDS, PluginKind

__all__ = [
    "NAME_RULE",
    "Template",
    "names",
    "plugin_files",
    "render_all",
    "scaffold_plugin",
    "validate_name",
]

NAME_RULE = re.compile(r"^[a-z][a-z0-9_]*$")
"""A plugin name: a lower-case Python identifier (letters, digits, underscores)."""


class Template(StrEnum):
    """What ``synthmri plugins new`` can write: one template per kind, plus ``gan``."""

    GENERATOR = "generator"
    GAN = "gan"  # a generator on synthmri's GAN base (synthmri.GAN)
    CLASSIFIER = "classifier"
    SEGMENTER = "segmenter"
    EVALUATOR = "evaluator"

    @property
    def kind(self) -> PluginKind:
        """The plugin kind the template writes."""
        return PluginKind.GENERATOR if self is Template.GAN else PluginKind(self.value)


def _template(kind: str) -> Template:
    try:
        return Template(kind)
    except ValueError:
        raise ConfigError(
            f"unknown plugin kind {kind!r}; kinds: {', '.join(Template)}",
            hint="e.g. `synthmri plugins new generator my_gan`",
        ) from None


def validate_name(kind: str, name: str) -> None:
    """Raise ConfigError unless ``kind`` is a template and ``name`` a valid plugin name."""
    _template(kind)
    if not NAME_RULE.match(name) or keyword.iskeyword(name) or len(name) > 40:
        raise ConfigError(
            f"invalid plugin name {name!r}: it must be a lower-case Python identifier "
            "(a-z, 0-9, _; starting with a letter; at most 40 characters; not a keyword)",
            hint=f"e.g. {_suggest(name)!r}",
        )
    if name.endswith("_") or "__" in name:
        raise ConfigError(
            f"invalid plugin name {name!r}: no trailing or doubled underscores",
            hint=f"e.g. {_suggest(name)!r}",
        )


def _suggest(name: str) -> str:
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)  # MyGan -> My_Gan
    cleaned = re.sub(r"[^a-z0-9]+", "_", snake.lower()).strip("_")
    cleaned = re.sub(r"_+", "_", cleaned)
    if not cleaned or not cleaned[0].isalpha():
        cleaned = f"my_{cleaned}".rstrip("_")
    if keyword.iskeyword(cleaned):
        cleaned = f"my_{cleaned}"
    return cleaned[:40].rstrip("_")


def names(kind: str, name: str) -> dict[str, str]:
    """The placeholders of the templates for ``kind`` (a template) / ``name``."""
    plugin_kind = _template(kind).kind
    camel = "".join(part.capitalize() for part in name.split("_"))
    major_minor = ".".join(__version__.split(".")[:2])
    hooks = {k: hook for hook, k in HOOK_KINDS.items()}
    return {
        "__NAME__": name,
        "__CLASS__": f"{camel}{plugin_kind.capitalize()}",
        "__MODULE__": f"synthmri_{name}",
        "__DIST__": f"synthmri-{name.replace('_', '-')}",
        "__KIND__": plugin_kind.value,
        "__HOOK__": hooks[plugin_kind],
        "__SYNTHMRI__": f"synthmri>={major_minor}",
    }


def _read(*parts: str) -> str:
    return resources.files(__name__).joinpath("templates", *parts).read_text(encoding="utf-8")


def plugin_files(kind: str, name: str) -> dict[str, str]:
    """Relative path -> file text of the package for a ``kind`` plugin called ``name``.

    ``kind`` is a plugin kind, or ``gan`` for a generator on synthmri's GAN base.
    """
    validate_name(kind, name)
    template = _template(kind).value
    subst = names(kind, name)

    def fill(text: str) -> str:
        for key, value in subst.items():
            text = text.replace(key, value)
        return text

    module = subst["__MODULE__"]
    readme = _read("README.md.tmpl") + "\n" + _read(template, "usage.md.tmpl")
    return {
        "pyproject.toml": fill(_read("pyproject.toml.tmpl")),
        "README.md": fill(readme),
        f"src/{module}/__init__.py": fill(_read(template, "plugin.py.tmpl")),
        f"src/{module}/py.typed": "",
        f"tests/test_{module}.py": fill(_read(template, "test.py.tmpl")),
    }


def scaffold_plugin(
    kind: str, name: str, out: str | Path | None = None, *, check_installed: bool = True
) -> Path:
    """Write the package for a new plugin and return its folder.

    ``out`` is the package folder (default ``./synthmri-<name>``); it must not exist
    or be empty. With ``check_installed`` a name an installed plugin of the same kind
    already uses is refused (installing both would be a duplicate-name error).
    Errors are ``ConfigError`` (exit code 2 in the CLI).
    """
    from synthmri.core.files import OutputDir, output_guard

    files = plugin_files(kind, name)
    subst = names(kind, name)
    target = Path(out) if out is not None else Path.cwd() / subst["__DIST__"]
    with output_guard(target):
        if target.exists() and not target.is_dir():
            raise ConfigError(f"{target} exists and is not a folder", hint="choose another --out")
        if target.is_dir() and any(target.iterdir()):
            raise ConfigError(
                f"{target} exists and is not empty; nothing was written",
                hint="choose another --out, or remove the folder first",
            )
    if check_installed:
        _refuse_taken_name(subst["__KIND__"], name)
    package = OutputDir(target)  # every file through the writer bound to the package folder
    for rel, text in files.items():
        package.write_text(text, *rel.split("/"))
    return target


def _refuse_taken_name(kind: str, name: str) -> None:
    from synthmri.core.plugins import get_registry

    try:
        taken = {info.name: info for info in get_registry().list(kind)}
    except SynthMRIError:  # a broken environment must not stop scaffolding
        return
    if name in taken:
        raise ConfigError(
            f"a {kind} named {name!r} already exists (from {taken[name].provider})",
            hint="choose another name: two plugins of one kind cannot share a name",
        )


def render_all(out: str | Path) -> list[Path]:
    """Write every template into ``out``, with a short and a longest allowed name (for CI lint)."""
    written = []
    for template in Template:
        short = f"my_{template.value}"
        longest = f"{short}_{'x' * 40}"[:40]
        for name in (short, longest):
            written.append(scaffold_plugin(template, name, Path(out) / name, check_installed=False))
    return written
