"""Name -> plugin class, per kind. Duplicate and unknown names are clear errors.

A name two providers register for one kind is blocked: asking for it is an error that
names both providers, and the pair is listed as broken, while every other plugin keeps
working (``synthmri plugins list`` included)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from synthmri.core.errors import PluginError
from synthmri.core.interfaces import KIND_BASES, KINDS, Plugin


class DuplicatePluginError(PluginError):
    """Two providers register the same name for one kind."""


@dataclass(frozen=True)
class PluginInfo:
    """One registered plugin class and where it came from."""

    kind: str
    name: str
    cls: type[Plugin]
    package: str
    version: str

    @property
    def description(self) -> str:
        """The class's one-line description."""
        return self.cls.description

    @property
    def provider(self) -> str:
        """``package version``, for messages and listings."""
        return f"{self.package} {self.version}"


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin module that failed to load or register, or a name two providers claim;
    the rest keeps working. ``kind`` is set for a blocked duplicate name."""

    name: str
    package: str
    version: str
    error: str
    kind: str | None = None


class Registry:
    """Holds every registered plugin class by kind and name."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, PluginInfo]] = {k: {} for k in KINDS}
        self._blocked: dict[str, dict[str, DuplicatePluginError]] = {k: {} for k in KINDS}
        self.broken: list[BrokenPlugin] = []

    def add(self, kind: str, cls: type, package: str, version: str) -> None:
        """Register ``cls`` under ``cls.name``; check it is a proper plugin of ``kind``."""
        base = KIND_BASES[kind]
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise PluginError(f"{package}: {cls!r} is not a {base.__name__} subclass")
        name = getattr(cls, "name", "")
        if not isinstance(name, str) or not name:
            raise PluginError(f"{package}: {cls.__name__} has no `name`")
        blocked = self._blocked[kind].get(name)
        if blocked is not None:  # a third provider of a blocked name
            self.broken.append(BrokenPlugin(name, package, version, blocked.message, kind))
            return
        existing = self._entries[kind].get(name)
        if existing is not None and existing.cls is not cls:
            error = DuplicatePluginError(
                f"duplicate {kind} name {name!r}: provided by {existing.provider} "
                f"({existing.cls.__module__}.{existing.cls.__qualname__}) "
                f"and by {package} {version} "
                f"({cls.__module__}.{cls.__qualname__})",
                hint="uninstall one of them or block one with SYNTHMRI_DISABLE_PLUGINS",
            )
            # block the name only: everything else keeps working
            del self._entries[kind][name]
            self._blocked[kind][name] = error
            self.broken.append(BrokenPlugin(name, package, version, error.message, kind))
            return
        self._entries[kind][name] = PluginInfo(kind, name, cls, package, version)

    def get(self, kind: str, name: str) -> PluginInfo:
        """The plugin ``name`` of ``kind``, or a PluginError listing the names that exist."""
        if kind not in self._entries:
            raise PluginError(f"unknown plugin kind {kind!r}; kinds: {', '.join(KINDS)}")
        entries = self._entries[kind]
        if name in entries:
            return entries[name]
        blocked = self._blocked[kind].get(name)
        if blocked is not None:
            raise blocked
        available = sorted(entries)
        listed = ", ".join(available) if available else "none installed"
        raise PluginError(f"unknown {kind} {name!r}; available: {listed}", hint=self.hint(name))

    def hint(self, name: str, kind: str | None = None) -> str | None:
        """``did you mean ...?`` with the closest name (of ``kind``, else of any kind)."""
        names = {i.name: i.kind for i in self.list(kind)}
        if kind is not None:
            close = difflib.get_close_matches(name, list(names), n=1)
            if close:
                return f"did you mean {close[0]!r}?"
            names = {i.name: i.kind for i in self.list()}  # a name of another kind?
        close = difflib.get_close_matches(name, list(names), n=1)
        if not close:
            return None
        return f"did you mean {close[0]!r} (a {names[close[0]]})?"

    def blocked(self, kind: str, name: str) -> DuplicatePluginError | None:
        """The duplicate-name error blocking ``name`` of ``kind``, if any."""
        return self._blocked.get(kind, {}).get(name)

    def list(self, kind: str | None = None) -> list[PluginInfo]:
        """All plugins (of one kind when given), sorted by kind then name."""
        kinds = [kind] if kind else list(KINDS)
        return [self._entries[k][n] for k in kinds for n in sorted(self._entries[k])]
