"""Every check a run makes before anything trains, in one place: ``synthmri validate`` and
``run_recipe`` both call :func:`check_run`, so "ok" from ``validate`` means the run starts.

What is checked (besides the recipe schema and plugin params, which ``load_recipe`` checks):
the device exists; the data (a folder: it exists, is readable and holds images in the
layout asked for, with every mask an image+mask layout needs; phantoms: the size and
count can be drawn); every generator that declares the image sizes it supports
(``image_sizes()``, as the GAN base does) supports ``data.size``; the output folder can
be created and written (not a file, not read-only, a name the file system accepts, some
free space); ``--resume`` names a run directory.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from synthmri.core.errors import ConfigError, DataError, OutputError, RecipeError
from synthmri.core.recipe import Recipe

__all__ = ["MIN_FREE_BYTES", "check_output_folder", "check_run"]

#: the least free space an output folder must have before a run starts
MIN_FREE_BYTES = 1024 * 1024


def check_run(
    recipe: Recipe,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    device: str | None = None,
) -> None:
    """Raise the error ``run_recipe`` would raise before training, if any (see module)."""
    _check_device(device or recipe.device)
    _check_data(recipe)
    _check_generator_sizes(recipe)
    if out is not None:
        check_output_folder(out)
    if resume is not None:
        from synthmri.core.stages import check_resume_dir

        check_resume_dir(Path(resume))


def _check_device(spec: str) -> None:
    from synthmri.core.training import resolve_device

    resolve_device(spec)


def _check_data(recipe: Recipe) -> None:
    cfg = recipe.data
    if cfg.uses_folder:
        from synthmri.core.data.load import plan

        try:
            plan(cfg.path or "", cfg)
        except DataError as exc:
            raise DataError(f"data.path: {exc.message}", hint=exc.hint) from None
        return
    from synthmri.core.phantoms import check_phantom_args

    try:
        check_phantom_args(
            cfg.n, cfg.size, recipe.seed, cfg.tumor_fraction, cfg.contrast, mask=cfg.tumor_mask
        )
    except ConfigError as exc:
        raise RecipeError(f"data: {exc.message}", hint=exc.hint) from None


def _check_generator_sizes(recipe: Recipe) -> None:
    from synthmri.core.plugins import get_plugin

    size = recipe.data.size
    for i, entry in enumerate(recipe.generators):
        model = get_plugin("generator", entry.plugin)(entry.params)
        sizes = getattr(model, "image_sizes", None)
        if not callable(sizes):
            continue
        supported = tuple(sizes())
        if supported and size not in supported:
            raise RecipeError(
                f"generators.{i} ({entry.label}): {entry.plugin} makes images of "
                f"{', '.join(map(str, supported))} px, not data.size {size}",
                hint=f"set data.size to one of {', '.join(map(str, supported))}",
            )


def check_output_folder(out: str | Path) -> None:
    """Raise an OutputError unless ``out`` can be created (or exists as a folder) and be
    written: a name the file system accepts, not under a file, writable, some free space."""
    path = Path(out)
    text = str(out)
    if "\x00" in text:
        raise OutputError(f"{text!r}: cannot write (the name holds a NUL byte)")
    for part in path.parts:
        if len(os.fsencode(part)) > 255:
            raise OutputError(
                f"{text[:120]}...: cannot write (a name in the path is over 255 bytes)",
                hint="use a shorter name or path",
            )
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(
            f"{existing}: is a file, not a folder; cannot write {path}",
            hint="choose another --out",
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        ro = _read_only(existing)
        raise OutputError(
            f"{existing}: cannot write ({'read-only file system' if ro else 'permission denied'})",
            hint="choose a folder you can write to (--out)",
        )
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        raise OutputError(
            f"{existing}: cannot write (no space left on device: {free} bytes free)",
            hint="free some space, or choose another --out",
        )


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False
