"""``synthmri compare REAL_DIR SYNTH_DIR``: quality and privacy numbers between two folders.

For people who generated images elsewhere (like the pytorch-fid command line). Both
folders are read with ``load_images`` (class folders, or a plain folder of images: one
class). REAL_DIR is split by group into two halves A and B: A is the reference (and the
only data the ``domain`` feature extractor is trained on), B gives the real floor (the
metric between two halves of real data). Memorisation looks for each synthetic image's
nearest image in the whole of REAL_DIR, with B's distances to A as the yardstick of a
genuinely new real image.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import typer

from synthmri.cli._common import console, state

__all__ = ["compare_folders", "register"]


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("compare")(compare)


def compare(
    real_dir: Path = typer.Argument(..., help="Folder of real images (class folders or flat)."),
    synth_dir: Path = typer.Argument(..., help="Folder of synthetic images (same layouts)."),
    features: str = typer.Option("domain", "--features", help="domain, inception or random."),
    size: int = typer.Option(64, "--size", help="Side length images are resized to."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split, subsets and training."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
) -> None:
    """FID/KID (with the real floor), precision/recall, MS-SSIM and memorisation."""
    result = compare_folders(
        real_dir,
        synth_dir,
        features=features,
        size=size,
        seed=seed,
        device=device,
        quiet=state.quiet or as_json,
    )
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    from rich.table import Table

    keys = [k for k in result["rows"][0] if k != "class"] if result["rows"] else []
    table = Table(
        title=f"{synth_dir} vs {real_dir} ({result['features']} features)", title_justify="left"
    )
    table.add_column("metric")
    for row in result["rows"]:
        table.add_column(str(row["class"]), justify="right")
    for key in keys:
        table.add_row(key, *[_fmt(row[key]) for row in result["rows"]])
    console.print(table)
    for note in result["notes"]:
        console.print(f"[yellow]note[/] {note}")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _classes(real: Any, synth: Any) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(class, real indices, synthetic indices): matched by name, else one class ``all``."""
    if real.labels is not None and synth.labels is not None:
        r_names = {c.lower(): i for i, c in enumerate(real.class_names)}
        out = []
        for j, c in enumerate(synth.class_names):
            if c.lower() in r_names:
                out.append(
                    (
                        c,
                        (real.labels == r_names[c.lower()]).nonzero().reshape(-1),
                        (synth.labels == j).nonzero().reshape(-1),
                    )
                )
        out = [o for o in out if len(o[1]) and len(o[2])]
        if out:
            return out
    return [("all", torch.arange(len(real)), torch.arange(len(synth)))]


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
    from synthmri.core.training import RunContext
    from synthmri.plugins.evaluators._features import FEATURE_KINDS, FeatureParams, build_extractor
    from synthmri.plugins.evaluators.image_quality import quality_metrics
    from synthmri.plugins.evaluators.privacy import PrivacyEvaluator, find_memorized

    if features not in FEATURE_KINDS:
        raise ConfigError(f"unknown --features {features!r}; use one of {', '.join(FEATURE_KINDS)}")
    if size < 16:
        raise ConfigError(f"--size must be at least 16, not {size}")
    real = load_images(real_dir, size=size).data
    synth = load_images(synth_dir, size=size).data
    if len(real) < 4:
        raise DataError(f"{real_dir}: {len(real)} real image(s); compare needs at least 4")
    if real.channels != synth.channels:
        raise DataError(f"real images have {real.channels} channels, synthetic {synth.channels}")
    half_a, _, half_b = split_dataset(real, val=0.0, test=0.5, seed=seed)
    run = RunContext(None, device=device, seed=seed, quiet=quiet, console=console)
    extractor = build_extractor(FeatureParams(features=features), half_a, run, seed=seed)
    fa = fb = fs = None
    if extractor is not None:
        fa, fb, fs = extractor(half_a.images), extractor(half_b.images), extractor(synth.images)
    priv = PrivacyEvaluator.Params()
    ref = None
    if fa is not None and fb is not None:
        # the yardstick of a genuinely new real image: how close half B comes to half A
        ref = torch.cdist(fb, fa, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values
    mem = find_memorized(
        synth.images,
        torch.cat([half_a.images, half_b.images]),
        synthetic_features=fs,
        train_features=None if fa is None else torch.cat([fa, fb]),
        reference_distance=ref,
        ssim_threshold=priv.ssim_threshold,
        ratio_threshold=priv.ratio_threshold,
        reference_percentile=priv.reference_percentile,
        max_pairs=priv.max_pairs,
        device=run.device,
    )
    rows = []
    for cname, ridx, sidx in _classes(real, synth):
        a_idx = _subset_of(half_a, real, ridx)
        b_idx = _subset_of(half_b, real, ridx)
        metrics = quality_metrics(
            half_a.images[a_idx],
            synth.images[sidx],
            half_b.images[b_idx],
            ref_features=None if fa is None else fa[a_idx],
            cand_features=None if fs is None else fs[sidx],
            holdout_features=None if fb is None else fb[b_idx],
            seed=seed,
            device=run.device,
        )
        order = (
            "fid",
            "fid_real_floor",
            "kid",
            "kid_std",
            "kid_real_floor",
            "precision",
            "recall",
            "ms_ssim_synthetic",
            "ms_ssim_real",
            "intensity_wasserstein",
        )
        rows.append(
            {
                "class": cname,
                **{key: metrics[key] for key in order},
                "memorized_fraction": round(float(mem.memorized[sidx].float().mean()), 6),
                "nn_ssim_max": round(float(mem.nn_ssim[sidx].max()), 6),
                "n_synthetic": len(sidx),
                "n_real": len(a_idx),
                "n_real_floor": len(b_idx),
            }
        )
    return {
        "real": str(real_dir),
        "synthetic": str(synth_dir),
        "features": extractor.name if extractor is not None else "none",
        "size": size,
        "seed": seed,
        "rows": rows,
        "notes": list(run.notes),
    }


def _subset_of(part: Any, full: Any, idx: torch.Tensor) -> torch.Tensor:
    """Indices into ``part`` of the items of ``full[idx]`` (matched by source)."""
    wanted = {full.sources[i] for i in idx.tolist()}
    return torch.tensor([i for i, s in enumerate(part.sources) if s in wanted], dtype=torch.long)
