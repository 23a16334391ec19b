"""``synthmri generate``: PNGs from a trained generator checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synthmri.cli._common import console, state_of

#: the most images one ``generate`` writes (more: call it again with another --seed)
MAX_IMAGES = 10_000


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("generate")(generate)


def generate(
    ctx: typer.Context,
    checkpoint: Annotated[Path, typer.Argument(help="checkpoints/generate-*.pt from a run.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write into (new or empty).")],
    n: Annotated[int, typer.Option("-n", "--n", help="Number of images (see --label).")] = 16,
    label: Annotated[
        str | None,
        typer.Option(
            "--label",
            help="Class name (conditional models; unset: N of each class, each from the same "
            "seed, so a conditional model draws the same noise for every class).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            "-s",
            help="Sampling param: name=value (repeat), e.g. guidance=3 or sample_steps=50 "
            "for diffusion (`synthmri plugins show` lists a generator's).",
        ),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Sample N images from a trained generator and write them as PNG (masks beside)."""
    import torch

    from synthmri.core.artifacts import write_image_set
    from synthmri.core.errors import ConfigError
    from synthmri.core.files import OutputDir
    from synthmri.core.interfaces import ImageSet
    from synthmri.core.pipeline import load_generator
    from synthmri.core.preflight import check_output_folder
    from synthmri.core.recipe_yaml import apply_override
    from synthmri.core.training import resolve_device

    if not 1 <= n <= MAX_IMAGES:
        raise ConfigError(f"-n must be between 1 and {MAX_IMAGES}, not {n}")
    check_output_folder(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(
            f"{out}: folder exists and is not empty", hint="choose a new or empty --out"
        )
    params: dict[str, object] = {}
    for item in overrides or []:
        if len(apply_override(params, item)) != 1:
            raise ConfigError(f"--set {item!r}: give a param name, not a key path")
    where = resolve_device(device)
    model, ckpt = load_generator(checkpoint, params)
    model.to(where)
    names: list[str] = list(ckpt.get("class_names") or [])
    cname = ckpt.get("class_name")
    indices: list[int | None] = [None]  # an unconditional model: its own class, if any
    if label is not None:
        if label not in names:
            raise ConfigError(f"--label {label!r}: not one of {', '.join(names) or 'no classes'}")
        if cname is not None and label != cname:
            raise ConfigError(f"--label {label!r}: this checkpoint was trained on {cname!r} only")
        indices = [names.index(label)]
    elif cname is None and model.conditional:
        indices = list(range(len(names)))  # N of each class
    target, paths = OutputDir(out), []
    for index in indices:
        sampled = model.sample(n, label=index if cname is None else None, seed=seed)
        fill = index if index is not None else (names.index(cname) if cname in names else None)
        data = ImageSet(
            images=sampled.images,
            masks=sampled.masks,
            labels=None if fill is None else torch.full((n,), fill),
            class_names=names if fill is not None else [],
        )
        # names from the checkpoint (its name, its classes) become safe file names
        paths += write_image_set(data, target, prefix=ckpt.get("name") or "synthetic")
    if not state_of(ctx).quiet:
        console.print(f"wrote {len(paths)} images to {out}", markup=False)
