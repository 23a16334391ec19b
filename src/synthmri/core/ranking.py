"""Generators ranked by what their synthetic data is worth, beside how it looks.

:func:`rank_generators` gives one row per generator of a run: the headline metric of the model
that does best on real data when trained on that generator's synthetic data alone (TSTR), its
distance to the same model trained on all the real data, and the gain from adding the
synthetic data to the smallest real share the run tried (mixed against real at that share),
both with their paired intervals where the evaluator gave them (``<metric>_gain_ci``);
then the mean FID and recall over classes and the lowest class agreement (``image_quality``:
the share of a class's samples that a classifier of the real data calls that class), the
largest memorised fraction (``privacy`` or ``image_quality``: near-exact copies) and the
largest share of samples the memorisation guard found closer to a training image than real
validation images are (``memorisation``: copies that are not exact); for an entry sampled
through a class filter, the lowest share of a class's samples it kept (``class_filter_kept``:
that entry's TSTR measures generator and filter together). When the models report a
validation score (``val_score``), the TSTR and the mixed gain on the validation part are
given too (``tstr_val_score``, ``mixed_val_gain``): what a choice between generators should
rest on. Rows are sorted by TSTR, then by the mixed gain. With several seeds the means over
seeds are used (``<section>_summary``).
"""

from __future__ import annotations

from statistics import mean
from typing import Any

from synthmri.core.answer import TASKS, Task, paired_interval, result_rows

__all__ = ["rank_generators"]


def rank_generators(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The ranking rows of a run's ``metrics.json`` (empty without synthetic results)."""
    for task in TASKS:
        rows = [
            r
            for r in result_rows(metrics, task.section)
            if r.get(task.metric) is not None and not r.get("unsupervised")
        ]
        if any(r.get("generator") for r in rows):
            return _ranked(task, rows, metrics)
    return []


def _ranked(task: Task, rows: list[dict[str, Any]], metrics: dict[str, Any]) -> list[dict]:
    m, key = task.metric, task.model_key
    real = [r for r in rows if r["train_on"] == "real"]
    if real:  # the model a reader would use: the best on the most real data
        model = max(real, key=lambda r: (float(r["real_fraction"]), r[m]))[key]
    else:
        model = rows[0][key]
    mine = [r for r in rows if r[key] == model]

    def find(train_on: str, gen: str | None, share: float | None) -> dict[str, Any] | None:
        return next(
            (
                r
                for r in mine
                if r["train_on"] == train_on
                and r.get("generator") == gen
                and (share is None or abs(float(r["real_fraction"]) - share) < 1e-9)
            ),
            None,
        )

    shares = sorted({float(r["real_fraction"]) for r in mine if r["train_on"] == "mixed"})
    smallest = shares[0] if shares else None
    full = find("real", None, 1.0)
    out = []
    for gen in dict.fromkeys(r["generator"] for r in mine if r.get("generator")):
        row: dict[str, Any] = {"generator": gen, key: model}
        tstr = find("synthetic", gen, None)
        row[f"tstr_{m}"] = None if tstr is None else tstr[m]
        row[f"tstr_{m}_ci"] = None if tstr is None else tstr.get(f"{m}_ci")
        row["tstr_minus_real"] = _gain(tstr, full, m)
        row["tstr_minus_real_ci"] = _gain_ci(tstr, full, m)
        mixed, alone = find("mixed", gen, smallest), find("real", None, smallest)
        row["smallest_real_fraction"] = smallest
        row["mixed_gain"] = _gain(mixed, alone, m)
        row["mixed_gain_ci"] = _gain_ci(mixed, alone, m)
        if any("val_score" in r for r in mine):  # the same two on the validation part
            row["tstr_val_score"] = None if tstr is None else tstr.get("val_score")
            row["mixed_val_gain"] = _gain(mixed, alone, "val_score")
        row.update(_quality(metrics, gen))
        out.append(row)
    return sorted(
        out,
        key=lambda r: (
            -(r[f"tstr_{m}"] if r[f"tstr_{m}"] is not None else -1e9),
            -(r["mixed_gain"] if r["mixed_gain"] is not None else -1e9),
        ),
    )


def _gain(a: dict[str, Any] | None, b: dict[str, Any] | None, name: str) -> float | None:
    """``a[name] - b[name]``, or None when either is missing."""
    if a is None or b is None or a.get(name) is None or b.get(name) is None:
        return None
    return float(a[name]) - float(b[name])


def _gain_ci(a: dict[str, Any] | None, b: dict[str, Any] | None, name: str) -> list[float] | None:
    """The paired interval of ``a[name] - b[name]`` (``answer.paired_interval``), or None."""
    return None if a is None or b is None else paired_interval(a, b, name)


def _quality(metrics: dict[str, Any], gen: str) -> dict[str, Any]:
    """Mean FID and recall over classes, the lowest class agreement, the largest memorised
    fraction, the largest share closer than real (the memorisation guard) and, with a class
    filter, the lowest share of a class's samples it kept, of ``gen``."""
    quality = [r for r in metrics.get("image_quality") or [] if r.get("generator") == gen]
    copies = [
        r.get("memorized_fraction")
        for section in ("privacy", "image_quality")
        for r in metrics.get(section) or []
        if r.get("generator") == gen and r.get("memorized_fraction") is not None
    ]

    def avg(name: str) -> float | None:
        values = [r[name] for r in quality if r.get(name) is not None]
        return mean(values) if values else None

    agreement = [r["class_agreement"] for r in quality if r.get("class_agreement") is not None]
    closer = [
        r["closer_fraction"]
        for r in metrics.get("memorisation") or []
        if r.get("generator") == gen and r.get("closer_fraction") is not None
    ]
    kept = [
        row["acceptance"]
        for g in metrics.get("generators") or []
        if g.get("generator") == gen
        for row in (g.get("class_filter") or {}).values()
    ]
    return {
        "fid": avg("fid"),
        "recall": avg("recall"),
        "class_agreement": min(agreement, default=None),
        "memorized_fraction": max(copies, default=None),
        "closer_than_real": max(closer, default=None),
        **({"class_filter_kept": min(kept)} if kept else {}),
    }
