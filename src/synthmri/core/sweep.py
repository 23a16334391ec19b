"""Sweeps: one recipe over seeds and a grid of settings, and the summary over seeds.

Every combination of the grid values runs once per seed (``--set``-style overrides of the
recipe), each in its own run directory under one sweep folder
``<out>/<recipe>-sweep-<timestamp>/runs/``. Runs are made one after another, each running
its own independent stages on the chosen executor; a stage whose hash matches a stage of an
earlier run of the sweep (the same data split and generator config, say) is copied from
it, not run again. The sweep folder gets ``sweep.json`` (every run and, per combination,
the mean, standard deviation and range over seeds of every metric row), ``summary.csv``
and ``summary.md``. ``synthmri sweep`` is the command line over :func:`run_sweep`.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthmri.core.errors import ConfigError

if TYPE_CHECKING:
    from synthmri.core.recipe import Recipe

__all__ = ["combinations", "run_sweep", "summarise"]

#: row sections not summarised (training times, not results)
_SKIPPED = ("generators",)


def run_sweep(
    recipe: str | Path,
    seeds: list[int],
    axes: list[tuple[str, list[str]]],
    overrides: list[str] | None = None,
    out: str | Path = "runs",
    resume: Path | None = None,
    executor: str | None = None,
    workers: int | None = None,
    device: str | None = None,
    quiet: bool = True,
    console: Any = None,
    announce: Callable[[int, int, str, int], None] | None = None,
) -> Path:
    """Run ``recipe`` for every seed and every combination of ``axes`` (``(key, values)``);
    write ``sweep.json``, ``summary.csv`` and ``summary.md``; the sweep folder.
    ``announce(i, n, label, seed)`` is called before each run."""
    from synthmri.core.executors import check_executor, executor_for
    from synthmri.core.files import OutputDir
    from synthmri.core.pipeline import run_recipe
    from synthmri.core.preflight import check_run
    from synthmri.core.recipe import load_recipe

    # every run's recipe is read and checked before anything runs
    planned: list[tuple[dict[str, str], int, Recipe]] = []
    for settings in combinations(axes):
        for seed in seeds:
            sets = [*(overrides or []), *(f"{k}={v}" for k, v in settings.items()), f"seed={seed}"]
            rec = load_recipe(recipe, sets)
            if device:
                rec.device = device
            planned.append((settings, seed, rec))
    first = planned[0][2]
    check_run(first, out=out, device=device)
    check_executor(executor, first.executor)
    shared: list[Path] = []
    if resume is not None:
        if not (resume / "sweep.json").is_file():
            raise ConfigError(f"{resume}: not a sweep folder (no sweep.json)")
        shared = sorted(p for p in (resume / "runs").glob("*") if (p / "stages.json").is_file())
    folder = OutputDir.new_run(out, f"{first.name}-sweep")
    runs_dir = folder.mkdir("runs")
    started = time.perf_counter()
    record: dict[str, Any] = {
        "recipe": first.name,
        "seeds": seeds,
        "grid": {key: values for key, values in axes},
        "set": list(overrides or []),
        "combinations": [],
    }
    by_combo: dict[str, dict[str, Any]] = {}
    with executor_for(first.executor, executor, workers, device or first.device) as pool:
        record["executor"] = pool.describe()
        for i, (settings, seed, rec) in enumerate(planned, 1):
            label = _label(settings)
            if announce is not None:
                announce(i, len(planned), label, seed)
            combo = by_combo.setdefault(label, {"settings": settings, "runs": []})
            if combo not in record["combinations"]:
                record["combinations"].append(combo)
            try:
                result = run_recipe(
                    rec,
                    out=runs_dir,
                    quiet=quiet,
                    console=console,
                    executor=pool,
                    share=list(shared),
                )
            except BaseException:
                record["total_s"] = round(time.perf_counter() - started, 1)
                folder.write_json(record, "sweep.json")  # what finished stays described
                raise
            assert result.run_dir is not None
            shared.append(result.run_dir)
            combo["runs"].append(_run_entry(result.run_dir, folder.root, seed, result.metrics))
    for combo in record["combinations"]:
        runs = [folder.root / r["run_dir"] / "metrics.json" for r in combo["runs"]]
        combo["summary"] = summarise([json.loads(p.read_text()) for p in runs])
    record["total_s"] = round(time.perf_counter() - started, 1)
    folder.write_json(record, "sweep.json")
    folder.write_text(_csv(record), "summary.csv")
    folder.write_text(_markdown(record), "summary.md")
    return folder.root


def combinations(axes: list[tuple[str, list[str]]]) -> list[dict[str, str]]:
    """Every combination of the grid's values (one empty combination for no grid)."""
    keys = [k for k, _ in axes]
    products = itertools.product(*(values for _, values in axes))
    return [dict(zip(keys, values, strict=True)) for values in products]


def _label(settings: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items()) or "recipe"


def _run_entry(run_dir: Path, root: Path, seed: int, metrics: dict[str, Any]) -> dict[str, Any]:
    lines = (run_dir / "log.jsonl").read_text(encoding="utf-8").splitlines()
    reused = sum('"stage_reused"' in line for line in lines)
    return {
        "seed": seed,
        "run_dir": run_dir.relative_to(root).as_posix(),
        "reused_stages": reused,
        "total_s": (metrics.get("timings") or {}).get("total_s"),
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per row section of the runs' ``metrics.json``: the rows of the same setting over the
    runs (seeds), with ``n_seeds`` and per metric the mean, ``<m>_sd`` and ``<m>_range``
    (``seed_summary`` for the result sections)."""
    from synthmri.core.metrics import MODEL_KEYS, seed_summary

    sections: dict[str, list[dict[str, Any]]] = {}
    for metrics in runs:
        for name, rows in metrics.items():
            if (
                name in _SKIPPED
                or name.endswith("_summary")
                or not isinstance(rows, list)
                or not all(isinstance(r, dict) for r in rows)
            ):
                continue
            sections.setdefault(name, []).extend(rows)
    out = {}
    for name, rows in sections.items():
        if not rows:
            continue
        if name in MODEL_KEYS:
            out[name] = seed_summary(rows, MODEL_KEYS[name])
        else:
            out[name] = _generic_summary(rows)
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _generic_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows grouped by their non-numeric values; numbers averaged over the group."""
    import numpy as np

    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        key = json.dumps(
            {k: v for k, v in r.items() if k != "seed" and not _is_number(v)},
            sort_keys=True,
            default=str,
        )
        groups.setdefault(key, []).append(r)
    out = []
    for key, members in groups.items():
        row: dict[str, Any] = {k: v for k, v in json.loads(key).items() if not isinstance(v, list)}
        row["n_seeds"] = len(members)
        for name, value in members[0].items():
            values = [m.get(name) for m in members]
            if name == "seed" or not _is_number(value) or not all(_is_number(v) for v in values):
                continue
            row[name] = float(np.mean(values))
            row[f"{name}_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            row[f"{name}_range"] = [float(min(values)), float(max(values))]
        out.append(row)
    return out


def _csv(record: dict[str, Any]) -> str:
    """One line per combination and summary row (the combination's settings first)."""
    lines, fields = [], ["section"]
    keys = list(record["grid"])
    for combo in record["combinations"]:
        for section, rows in combo.get("summary", {}).items():
            for row in rows:
                flat = {k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()}
                lines.append({**combo["settings"], "section": section, **flat})
                fields += [k for k in flat if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*keys, *fields], lineterminator="\n")
    writer.writeheader()
    writer.writerows(lines)
    return buf.getvalue()


def _markdown(record: dict[str, Any]) -> str:
    """Per combination and result section, a table of mean ± sd over the seeds."""
    from synthmri.core.metrics import BRIEF_COLUMNS

    text = [
        f"# Sweep of {record['recipe']}",
        "",
        f"Seeds {', '.join(map(str, record['seeds']))}; executor {record['executor']}; "
        f"{record['total_s']} s. Each cell: mean ± standard deviation over the seeds.",
    ]
    for combo in record["combinations"]:
        text += ["", f"## {_label(combo['settings'])}"]
        for section, rows in combo.get("summary", {}).items():
            cols = [c for c in BRIEF_COLUMNS if any(c in r for r in rows) and not c.endswith("_ci")]
            cols = cols or [c for c in rows[0] if not c.endswith(("_sd", "_range"))]
            if "n_seeds" not in cols:
                cols.insert(min(len(cols), 4), "n_seeds")
            text += ["", f"### {section}", "", "| " + " | ".join(cols) + " |"]
            text.append("|" + "---|" * len(cols))
            for r in rows:
                text.append("| " + " | ".join(_cell(r, c) for c in cols) + " |")
    return "\n".join(text) + "\n"


def _cell(row: dict[str, Any], col: str) -> str:
    value = row.get(col)
    if _is_number(value) and isinstance(value, float) and f"{col}_sd" in row:
        return f"{value:.3f} ± {row[f'{col}_sd']:.3f}"
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else str(value)
