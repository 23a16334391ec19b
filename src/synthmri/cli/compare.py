"""``synthmri compare REAL_DIR SYNTH_DIR``: quality and privacy numbers between two folders.

For people who generated images elsewhere (like the pytorch-fid command line). Both
folders are read with ``load_images`` (class folders, or a plain folder of images: one
class). REAL_DIR is split by group into two halves A and B: A is the reference (and the
only data the ``domain`` feature extractor is trained on), B gives the real floor (the
metric between two halves of real data). Memorisation looks for each synthetic image's
nearest image in the whole of REAL_DIR, with B's distances to A as the yardstick of a
genuinely new real image.

The numbers are those of the evaluator plugins, reached through the registry:
``image_quality`` (A as the real train part, B as the real test part) and ``privacy`` (with
``include_test``, so that B is searched for copies too). Synthetic classes are matched to
real classes by name, ignoring case; unmatched synthetic classes are left out, and when no
class matches, each folder is one class ``all``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_args

import typer
from rich.markup import escape

from synthmri.cli._common import console, print_table, state_of

if TYPE_CHECKING:
    from synthmri.core.interfaces import ImageSet

__all__ = ["compare_folders", "register"]

#: the columns of a row, in order, and the evaluator each comes from
QUALITY_COLUMNS = (
    "fid",
    "fid_real_floor",
    "kid",
    "kid_std",
    "kid_real_floor",
    "precision",
    "recall",
    "class_agreement",
    "class_agreement_real",
    "mask_contrast",
    "mask_contrast_real",
    "ms_ssim_synthetic",
    "ms_ssim_real",
    "intensity_wasserstein",
    "tilt_spread",
    "size_spread",
    "brightness_spread",
)
PRIVACY_COLUMNS = ("memorized_fraction", "nn_ssim_max")
COUNT_COLUMNS = ("n_synthetic", "n_real", "n_real_floor")  # from image_quality
SYNTHETIC = "synthetic"  # the generator name the synthetic folder gets in the evaluators


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("compare")(compare)


def compare(
    ctx: typer.Context,
    real_dir: Annotated[
        Path, typer.Argument(help="Folder of real images (class folders or flat).")
    ],
    synth_dir: Annotated[Path, typer.Argument(help="Folder of synthetic images (same layouts).")],
    features: Annotated[
        str, typer.Option("--features", help="domain, inception or random.")
    ] = "domain",
    size: Annotated[int, typer.Option("--size", help="Side length images are resized to.")] = 64,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the split, subsets and training.")
    ] = 0,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
) -> None:
    """FID/KID (with the real floor), precision/recall, MS-SSIM and memorisation."""
    result = compare_folders(
        real_dir,
        synth_dir,
        features=features,
        size=size,
        seed=seed,
        device=device,
        quiet=state_of(ctx).quiet or as_json,
    )
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    from rich.table import Table

    keys = [k for k in result["rows"][0] if k != "class"] if result["rows"] else []
    table = Table(
        title=escape(f"{synth_dir} vs {real_dir} ({result['features']} features)"),
        title_justify="left",
    )
    table.add_column("metric")
    for row in result["rows"]:  # folder and class names are text, never markup
        table.add_column(escape(str(row["class"])), justify="right")
    for key in keys:
        table.add_row(key, *[_fmt(row[key]) for row in result["rows"]])
    print_table(table)
    for note in result["notes"]:
        console.print(f"[yellow]note[/] {escape(note)}")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def compare_folders(
    real_dir: str | Path,
    synth_dir: str | Path,
    *,
    features: str = "domain",
    size: int = 64,
    seed: int = 0,
    device: str = "auto",
    quiet: bool = True,
) -> dict[str, Any]:
    """The numbers ``synthmri compare`` prints, as a dict (``rows``: one per class)."""
    from synthmri.core.data import load_images, split_dataset
    from synthmri.core.errors import ConfigError, DataError
    from synthmri.core.interfaces import EvalInputs
    from synthmri.core.plugins import get_plugin
    from synthmri.core.training import RunContext

    quality_cls = get_plugin("evaluator", "image_quality")
    kinds = get_args(quality_cls.Params.model_fields["features"].annotation)
    if features not in kinds:
        raise ConfigError(f"unknown --features {features!r}; use one of {', '.join(kinds)}")
    from synthmri.core.data.options import MAX_SIZE

    if not 16 <= size <= MAX_SIZE:
        raise ConfigError(f"--size must be between 16 and {MAX_SIZE}, not {size}")
    real = load_images(real_dir, size=size).data
    synth = load_images(synth_dir, size=size).data
    if len(real) < 4:
        raise DataError(f"{real_dir}: {len(real)} real image(s); compare needs at least 4")
    if real.channels != synth.channels:
        raise DataError(f"real images have {real.channels} channels, synthetic {synth.channels}")
    half_a, empty, half_b = split_dataset(real, val=0.0, test=0.5, seed=seed)
    inputs = EvalInputs(
        train=half_a,
        val=empty,
        test=half_b,
        synthetic={SYNTHETIC: _matched_classes(real, synth)},
        seed=seed,
    )
    run = RunContext(None, device=device, seed=seed, quiet=quiet, console=console)
    quality = quality_cls({"features": features, "require_features": False})
    quality_rows = quality.evaluate(inputs, run)["image_quality"]
    # a run of its own, quiet: its notes would repeat the feature notes of the first, and
    # its copy warning is the table's memorized_fraction
    privacy = get_plugin("evaluator", "privacy")(
        {"features": features, "include_test": True, "warn_fraction": 1.0, "figure_pairs": 0}
    )
    privacy_rows = privacy.evaluate(inputs, RunContext(None, device=device, seed=seed))["privacy"]
    copies = {row["class"]: row for row in privacy_rows}
    rows = [
        {
            "class": row["class"],
            **{key: row[key] for key in QUALITY_COLUMNS},
            **{key: copies[row["class"]][key] for key in PRIVACY_COLUMNS},
            **{key: row[key] for key in COUNT_COLUMNS},
        }
        for row in quality_rows
    ]
    return {
        "real": str(real_dir),
        "synthetic": str(synth_dir),
        "features": quality_rows[0]["features"] if quality_rows else "none",
        "size": size,
        "seed": seed,
        "rows": rows,
        "notes": list(run.notes),
    }


def _matched_classes(real: ImageSet, synth: ImageSet) -> ImageSet:
    """The synthetic items of the classes that real data has too (by name, ignoring case), or
    the whole synthetic set unlabelled (one class ``all``) when no class matches."""
    import torch

    from synthmri.core.interfaces import ImageSet

    if real.labels is not None and synth.labels is not None:
        real_index = {c.lower(): i for i, c in enumerate(real.class_names)}
        keep = [
            j
            for j, c in enumerate(synth.class_names)
            if c.lower() in real_index
            and bool((real.labels == real_index[c.lower()]).any())
            and bool((synth.labels == j).any())
        ]
        if keep:
            return synth.subset(torch.isin(synth.labels, torch.tensor(keep)))
    return ImageSet(images=synth.images, sources=synth.sources, groups=synth.groups)
