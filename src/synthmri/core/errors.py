"""One exception family. The CLI turns every ``SynthMRIError`` into one red line,
an optional hint, and exit code 2."""

from __future__ import annotations


class SynthMRIError(Exception):
    """Base of every error a user can cause and fix (bad input, bad recipe, ...)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class DataError(SynthMRIError):
    """A data file or folder is missing, corrupt, or inconsistent."""


class RecipeError(SynthMRIError):
    """A recipe is malformed: bad YAML, unknown key, wrong type, unknown plugin."""


class PluginError(SynthMRIError):
    """A plugin is unknown, duplicated, broken, or was given bad params."""


class TrainingError(SynthMRIError):
    """Training failed in a way the user should hear about (NaN loss, collapse)."""


class ConfigError(SynthMRIError):
    """An option or argument has a value that cannot be used."""


class OutputError(SynthMRIError):
    """An output file or folder cannot be written: not writable, no space, a bad name, or a
    path that would leave the output folder."""
