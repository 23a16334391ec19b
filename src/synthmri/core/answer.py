"""The answer a report opens with: is the synthetic data worth using, and by how much?

:func:`answer` turns the result rows of ``metrics.json`` into one to three sentences per task
(classification: accuracy; segmentation: Dice), each number with its 95 % interval:

1. synthetic alone against real (TSTR against TRTR): "trained on dcgan's synthetic data
   alone, brain_cnn reaches 71 % [62, 79] on the real test part: 82 % of the 87 % [80, 92]
   it reaches trained on all the real data";
2. synthetic added to a small share of the real data against that share alone.
3. when the best synthetic set comes from a baseline (``Generator.baseline``: augment,
   lesion_paste, pca_gmm), the best learned generator's against it.

A synthetic set sampled through a class filter (``synthmri.core.class_filter``) is named as
such in the first sentence.

It says so when synthetic data is no better than always answering the majority class, when
it hurts, when a difference is within the noise of the test part, and when the run has no
real baseline to compare with. A difference is printed with its paired interval when the
evaluator gave one (``<metric>_gain_ci``: both rows scored on the same test images); for
rows without it, two overlapping intervals count as within the noise. The best synthetic
result is the one described (the tables list the others). :func:`key_figure` picks the
figure shown beside it: the metric against the real fraction when the run has several
fractions (:func:`plot_against_fraction`), else the real-against-synthetic sample grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthmri.core.artifacts import GRID_CAPTION, pyplot
from synthmri.core.files import OutputDir, safe_name

__all__ = ["Answer", "Task", "answer", "key_figure", "paired_interval", "plot_against_fraction"]


@dataclass(frozen=True)
class Task:
    """A result section and how its headline metric is named and printed."""

    section: str
    model_key: str
    metric: str
    label: str  # with its article: "an accuracy", "a Dice"
    percent: bool

    @property
    def name(self) -> str:
        """The metric's name without its article."""
        return self.label.split(" ", 1)[1]

    def value(self, v: float) -> str:
        """``71 %`` or ``0.71``."""
        return f"{100 * v:.0f} %" if self.percent else f"{v:.2f}"

    def interval(self, row: dict[str, Any]) -> str:
        """`` [62, 79]`` from ``<metric>_ci`` (empty when there is none)."""
        ci = row.get(f"{self.metric}_ci")
        if not (isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci):
            return ""
        if self.percent:
            return f" [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]"
        return f" [{ci[0]:.2f}, {ci[1]:.2f}]"

    def with_ci(self, row: dict[str, Any]) -> str:
        """The row's value and interval."""
        return self.value(row[self.metric]) + self.interval(row)

    def gap(self, d: float) -> str:
        """A difference: ``+23 points`` or ``+0.05``."""
        return f"{100 * d:+.0f} points" if self.percent else f"{d:+.2f}"

    def gap_interval(self, ci: list[float]) -> str:
        """The interval of a difference: ``[+15, +31]`` or ``[-0.02, +0.08]``."""
        if self.percent:
            return f"[{100 * ci[0]:+.0f}, {100 * ci[1]:+.0f}]"
        return f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


TASKS = (
    Task("classification", "classifier", "accuracy", "an accuracy", percent=True),
    Task("segmentation", "segmenter", "dice", "a Dice", percent=False),
)


@dataclass
class Answer:
    """The opening sentences, what they describe, and the rows behind them."""

    sentences: list[str] = field(default_factory=list)
    scope: str = ""  # which results the sentences describe, and how intervals were made
    task: Task | None = None  # the task of the first sentence (its figure is the key one)
    generator: str | None = None  # the generator the first sentence is about


def _overlap(a: dict[str, Any], b: dict[str, Any], metric: str) -> bool:
    ca, cb = a.get(f"{metric}_ci"), b.get(f"{metric}_ci")
    if not (isinstance(ca, list) and isinstance(cb, list)) or None in (*ca, *cb):
        return True  # no intervals: nothing is established
    return bool(ca[0] <= cb[1] and cb[0] <= ca[1])


def paired_interval(row: dict[str, Any], ref: dict[str, Any], metric: str) -> list[float] | None:
    """``row``'s paired interval of its difference from ``ref`` (``<metric>_gain_ci``), when
    the evaluator compared it with that row (the gain is ``row - ref``); else None."""
    gain, ci = row.get(f"{metric}_gain"), row.get(f"{metric}_gain_ci")
    if gain is None or not (isinstance(ci, list) and len(ci) == 2 and None not in ci):
        return None
    if abs(float(gain) - (float(row[metric]) - float(ref[metric]))) >= 1e-3:
        return None  # compared with another row
    return [float(ci[0]), float(ci[1])]


def _difference(row: dict[str, Any], ref: dict[str, Any], task: Task) -> tuple[bool, str]:
    """Whether ``row - ref`` is within the test part's noise, and the paired interval to print
    after the difference ("" when the row has none against ``ref``: then the rule is
    whether the two rows' own intervals overlap)."""
    ci = paired_interval(row, ref, task.metric)
    if ci is None:
        return _overlap(row, ref, task.metric), ""
    return ci[0] <= 0 <= ci[1], f" {task.gap_interval(ci)} on the same test images"


def _bounds(row: dict[str, Any], metric: str) -> tuple[float, float]:
    """The row's interval (its value at an end the row does not give)."""
    ci = row.get(f"{metric}_ci") or [None, None]
    value = float(row[metric])
    return (
        value if ci[0] is None else float(ci[0]),
        value if ci[1] is None else float(ci[1]),
    )


def _chance(metrics: dict[str, Any]) -> tuple[float, str] | None:
    """Accuracy of always answering the test part's most common class, and that class."""
    counts = (metrics.get("data") or {}).get("class_counts", {}).get("test") or {}
    total = sum(counts.values())
    if not total:
        return None
    name = max(counts, key=lambda c: counts[c])
    return counts[name] / total, name


def _share_of_real(fraction: float, metrics: dict[str, Any]) -> str:
    """ "all the" or "N % of the" (real data): ``fraction`` of the train part the run kept."""
    share = fraction * float((metrics.get("data") or {}).get("train_fraction", 1.0))
    return "all the" if share >= 1 else f"{100 * share:.0f} % of the"


def _sentences(task: Task, rows: list[dict[str, Any]], metrics: dict[str, Any]) -> Answer:
    m, key = task.metric, task.model_key
    usable = [r for r in rows if r.get(m) is not None and not r.get("unsupervised")]
    real = [r for r in usable if r.get("train_on") == "real"]
    synthetic = [r for r in usable if r.get("train_on") == "synthetic"]
    mixed = [r for r in usable if r.get("train_on") == "mixed"]
    n_test = max((int(r.get("n_test") or 0) for r in usable), default=0)
    out = Answer(task=task)

    def real_of(model: str, fraction: float | None = None) -> dict[str, Any] | None:
        found = [r for r in real if r[key] == model]
        if fraction is not None:
            found = [r for r in found if abs(float(r["real_fraction"]) - fraction) < 1e-9]
        return max(found, key=lambda r: float(r["real_fraction"]), default=None)

    if not usable:
        unsupervised = [r for r in rows if r.get(m) is not None and r.get("unsupervised")]
        if unsupervised:
            best = max(unsupervised, key=lambda r: r[m])
            out.sentences.append(
                f"Without a single training mask, {best[key]}'s anomaly maps reach "
                f"{task.label} of {task.with_ci(best)} on the real test masks."
            )
        return out
    chance = _chance(metrics) if task.percent else None
    # the model a reader would use (the best on the most real data), with its best generator
    focus = max(real, key=lambda r: (float(r["real_fraction"]), r[m]))[key] if real else None
    if focus is not None:
        synthetic = [r for r in synthetic if r[key] == focus] or synthetic
        mixed = [r for r in mixed if r[key] == focus] or mixed
    if synthetic:
        best = max(synthetic, key=lambda r: r[m])
        model, gen = best[key], best.get("generator")
        out.generator = gen
        baseline = real_of(model)
        filtered = any(
            g.get("class_filter") and g.get("generator") == gen
            for g in metrics.get("generators") or []
        )
        text = (
            f"Trained on {gen}'s synthetic data alone"
            + (" (the samples a classifier of the real train part kept)" if filtered else "")
            + f", {model} reaches {task.label} of {task.with_ci(best)} on the real test part"
        )
        if baseline is None:
            text = "There is no real-data baseline in this run to compare with. " + text
        else:
            share = best[m] / baseline[m] if baseline[m] else float("nan")
            whole = _share_of_real(float(baseline["real_fraction"]), metrics)
            relation = (
                f"{100 * share:.0f} % of the {task.with_ci(baseline)} it reaches trained on "
                f"{whole} real data"
                if best[m] < baseline[m]
                else f"at least the {task.with_ci(baseline)} it reaches trained on {whole} "
                "real data"
            )
            text += f": {relation}"
            noise, paired = _difference(best, baseline, task)
            if paired:
                text += f" ({task.gap(best[m] - baseline[m])}{paired}"
                text += "; within the noise of the test part)" if noise else ")"
            elif not noise and best[m] < baseline[m]:
                text += " (the intervals do not overlap)"
        if chance is not None:
            low = _bounds(best, m)[0]
            if low <= chance[0]:
                text += (
                    f"; that is not clearly better than always answering {chance[1]!r} "
                    f"({task.value(chance[0])})"
                )
        out.sentences.append(text + ".")
    pairs = []
    for row in mixed:
        if out.generator is not None and row.get("generator") != out.generator:
            continue
        alone = real_of(row[key], float(row["real_fraction"]))
        if alone is not None:
            pairs.append((float(row["real_fraction"]), -row[m], row, alone))
    if pairs:
        fraction, _, row, alone = min(pairs, key=lambda p: (p[0], p[1]))
        out.generator = out.generator or row.get("generator")
        d = row[m] - alone[m]
        share = _share_of_real(fraction, metrics)
        verb = "raises" if d > 0 else "lowers" if d < 0 else "leaves"
        subject = "Adding it" if synthetic else f"Adding {row.get('generator')}'s synthetic data"
        noise, paired = _difference(row, alone, task)
        text = (
            f"{subject} to {share} real data {verb} {row[key]}'s {task.name} "
            f"from {task.with_ci(alone)} to {task.with_ci(row)} ({task.gap(d)}{paired}"
        )
        if noise and paired:
            text += "; within the noise of the test part"
        elif noise:
            text += "; the intervals overlap, so this is within the noise of the test part"
        elif d < 0:
            text += "; here the synthetic data hurts"
        out.sentences.append(text + ").")
    baselines = {g.get("generator") for g in metrics.get("generators") or [] if g.get("baseline")}
    learned = [r for r in synthetic if r.get("generator") not in baselines]
    if learned and out.generator in baselines:
        other = max(learned, key=lambda r: r[m])
        lead = max(r[m] for r in synthetic if r.get("generator") == out.generator)
        out.sentences.append(
            f"The best learned generator, {other.get('generator')}, reaches "
            f"{task.with_ci(other)} alone ({task.gap(other[m] - lead)} against the baseline "
            f"{out.generator})."
        )
    if not out.sentences and real:
        best = max(real, key=lambda r: (float(r["real_fraction"]), r[m]))
        text = (
            f"Trained on real data, {best[key]} reaches {task.label} of {task.with_ci(best)} "
            "on the real test part; this run has no synthetic data to compare with"
        )
        out.sentences.append(text + ".")
    n_models = len({r[key] for r in usable})
    n_gens = len({r.get("generator") for r in usable if r.get("generator")})
    about = []
    if n_models > 1 and focus is not None:
        about.append(f"{focus} is the best of {n_models} models on real data")
    if n_gens > 1 and out.generator is not None:
        about.append(f"{out.generator} its best of {n_gens} generators")
    seeds = max((int(r.get("n_seeds") or 1) for r in usable), default=1)
    over = f"means over {seeds} training seeds; " if seeds > 1 else ""
    out.scope = (
        f"{task.section}: {'; '.join(about) + '; ' if about else ''}every result is in the "
        f"table below; {over}95 % bootstrap intervals over the {n_test} real test images."
    )
    return out


def answer(metrics: dict[str, Any]) -> Answer:
    """The opening sentences for a run's ``metrics.json`` (empty when it has no results)."""
    parts = [
        _sentences(task, result_rows(metrics, task.section), metrics)
        for task in TASKS
        if metrics.get(task.section)
    ]
    parts = [p for p in parts if p.sentences]
    if not parts:
        return Answer()
    first = parts[0]
    return Answer(
        sentences=[s for p in parts for s in p.sentences],
        scope=" ".join(p.scope for p in parts if p.scope),
        task=first.task,
        generator=first.generator,
    )


def result_rows(metrics: dict[str, Any], section: str) -> list[dict[str, Any]]:
    """A result section's rows, or, when its experiments ran several seeds, the rows of
    ``<section>_summary`` (means over seeds, with their spread)."""
    return metrics.get(f"{section}_summary") or metrics.get(section) or []


def _fractions(rows: list[dict[str, Any]], metric: str) -> list[float]:
    return sorted(
        {
            float(r["real_fraction"])
            for r in rows
            if r.get("train_on") in ("real", "mixed") and r.get(metric) is not None
        }
    )


def plot_against_fraction(rows: list[dict[str, Any]], task: Task, target: Path) -> str:
    """Draw ``task``'s metric against the share of real training data: real only, real +
    each generator (with 95 % intervals), each generator alone as a dashed line; one panel
    per model. Saves a PNG at ``target`` and returns its caption."""
    plt = pyplot()
    m, key = task.metric, task.model_key
    usable = [r for r in rows if r.get(m) is not None and not r.get("unsupervised")]
    models = list(dict.fromkeys(r[key] for r in usable))[:4]
    gens = list(dict.fromkeys(r.get("generator") for r in usable if r.get("generator")))
    colours = {g: f"C{i}" for i, g in enumerate(gens)}
    fig, axes = plt.subplots(
        1,
        len(models),
        figsize=(6.4 if len(models) == 1 else 4.2 * len(models), 4),
        squeeze=False,
        sharey=True,
    )
    scale = 100 if task.percent else 1
    for ax, model in zip(axes[0], models, strict=False):
        mine = [r for r in usable if r[key] == model]
        series = [("real only", "black", "real", None)]
        series += [(f"real + {g}", colours[g], "mixed", g) for g in gens]
        for i, (label, colour, train_on, gen) in enumerate(series):
            dodge = 1.2 * (i - (len(series) - 1) / 2)  # keep the error bars apart
            pts = sorted(
                (r for r in mine if r.get("train_on") == train_on and r.get("generator") == gen),
                key=lambda r: float(r["real_fraction"]),
            )
            if not pts:
                continue
            x = [100 * float(r["real_fraction"]) + dodge for r in pts]
            y = [scale * r[m] for r in pts]
            bounds = [_bounds(r, m) for r in pts]
            err = [
                [scale * max(0.0, r[m] - b[0]) for r, b in zip(pts, bounds, strict=True)],
                [scale * max(0.0, b[1] - r[m]) for r, b in zip(pts, bounds, strict=True)],
            ]
            ax.errorbar(x, y, yerr=err, color=colour, marker="o", ms=4, capsize=3, lw=1.4,
                        label=label)  # fmt: skip
            if all(r.get(f"{m}_sd") is not None for r in pts):  # several seeds: their spread
                sd = [scale * r[f"{m}_sd"] for r in pts]
                lower = [a - b for a, b in zip(y, sd, strict=True)]
                upper = [a + b for a, b in zip(y, sd, strict=True)]
                ax.fill_between(x, lower, upper, color=colour, alpha=0.15, lw=0)
        for r in mine:
            if r.get("train_on") == "synthetic":
                g = r.get("generator")
                ax.axhline(scale * r[m], color=colours.get(g, "grey"), ls="--", lw=1.1,
                           label=f"{g} only")  # fmt: skip
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("share of the real training set used (%)", fontsize=8)
        ax.set_xlim(0, 105)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    unit = " (%)" if task.percent else ""
    axes[0][0].set_ylabel(f"{task.name} on the real test part{unit}", fontsize=8)
    try:
        OutputDir(target.parent).save_figure(fig, target.name, dpi=100)
    finally:
        plt.close(fig)
    return (
        f"{task.name.capitalize()} on the real test part against the share of the real "
        "training set used "
        "(95 % bootstrap intervals; with several seeds: their mean, and a shaded band of "
        "one standard deviation over seeds). Look for: the coloured solid lines (real + synthetic) "
        "above the black one (real only), above all at small shares, where extra data should "
        "help most; dashed lines are synthetic data alone, and the closer they come to the "
        "black line's right end, the more of the real data's value the synthetic set carries."
    )


def key_figure(
    metrics: dict[str, Any], result: Answer, run_dir: Path, figures: list[Path]
) -> tuple[Path, str | None] | None:
    """The figure shown under the answer, and its caption: the answer's metric against the
    real fraction when there are several fractions (drawn here, into ``figures/``), else the
    real-against-synthetic sample grid of the answer's generator (caption from its file)."""
    task = result.task
    if task is not None:
        rows = result_rows(metrics, task.section)
        if len(_fractions(rows, task.metric)) >= 2:
            target = run_dir / "figures" / f"report-{task.section}-vs-real-fraction.png"
            return target, plot_against_fraction(rows, task, target)
    labels = [g["generator"] for g in metrics.get("generators") or [] if g.get("generator")]
    if result.generator in labels:
        labels.insert(0, labels.pop(labels.index(result.generator)))
    by_stem = {p.stem: p for p in figures}
    # the grids of real beside synthetic images that the pipeline draws per generator
    for stem in [safe_name(f"generate/{g}-samples") for g in labels] + ["generate-side-by-side"]:
        if stem in by_stem:  # its caption file, or (a run from before captions) the default
            found = by_stem[stem]
            return found, None if found.with_suffix(".txt").is_file() else GRID_CAPTION
    return None
