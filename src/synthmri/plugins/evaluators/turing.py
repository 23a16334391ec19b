"""The visual Turing test: can a physician tell real slices from synthetic ones?

- ``make_kit(real, synthetic, out, n=50)`` writes a blinded set: ``n/2`` real and ``n/2``
  synthetic images, shuffled, renamed ``img_001.png`` ..., all resized and min-max
  normalised the same way and saved as 8-bit grayscale PNG (so nothing in the files
  gives the answer away). The rater's material goes to ``OUT/rater/`` (the images and a
  self-contained ``index.html``); the answer key to ``OUT/key.json``, OUTSIDE the rater's
  folder: send only ``rater/`` to the rater.
- ``score_answers(answers, key)`` gives the published table: real as real, real as
  synthetic, synthetic as real, synthetic as synthetic, accuracy, a two-sided exact
  binomial test against chance (50 %) and the 95 % Clopper-Pearson interval.
- The ``turing_kit`` evaluator writes a kit per generator into a run directory
  (``turing/<generator>/``), from the real TEST part and that generator's images.
  ``synthmri turing make|score`` reach ``make_kit`` and ``score_answers`` through it
  (``TuringKitEvaluator.make_kit``, ``TuringKitEvaluator.score_answers``).

The rater's page (``render_page``) is one self-contained HTML file, the package-data
template ``turing_page.html`` filled with the blinded images as inline base64 PNGs: it works
from ``file://``, can be mailed as one file and uses no network. The rater sees one image at
a time, answers Real or Synthetic (buttons, or keys R / S), moves with the arrow keys (or
Back / Next), can change any answer, sees progress, and downloads the answers as
``answers.json`` (``[{"image": "img_001.png", "answer": "real"}, ...]``) and
``answers.csv``. Answers are also kept in the browser's localStorage, so closing the tab
loses nothing.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import Field

from synthmri import hookimpl
from synthmri.core.errors import ConfigError, DataError
from synthmri.core.interfaces import EvalInputs, Evaluator, StrictParams

if TYPE_CHECKING:
    import torch

    from synthmri.core.training import RunContext

__all__ = [
    "ANSWERS",
    "TuringKitEvaluator",
    "TuringScore",
    "load_answers",
    "load_key",
    "make_kit",
    "render_page",
    "score_answers",
]

ANSWERS = ("real", "synthetic")
KEY_VERSION = 1
#: the largest side length of a kit's images
MAX_KIT_SIZE = 1024
PAGE_TEMPLATE = "turing_page.html"  # package data beside this module


# ----------------------------------------------------------------------------- make


def _prepare(images: torch.Tensor, size: int) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N, size, size]`` gray in [0, 1]: resized, min-max per image."""
    import torch.nn.functional as F

    x = images.float()
    if x.shape[1] != 1:
        x = x.mean(dim=1, keepdim=True)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    x = (x - lo) / (hi - lo).clamp(min=1e-8)
    return x[:, 0].clamp(0, 1)


def _png(image: torch.Tensor) -> bytes:
    import torch
    from PIL import Image

    arr = (image * 255).round().to(torch.uint8).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def make_kit(
    real: torch.Tensor,
    synthetic: torch.Tensor,
    out: str | Path,
    *,
    n: int = 50,
    seed: int = 0,
    size: int = 128,
    real_sources: list[str] | None = None,
    synthetic_sources: list[str] | None = None,
    title: str = "Visual Turing test",
) -> Path:
    """Write a blinded kit to ``out`` (``rater/`` + ``key.json``); returns the key's path.

    ``n // 2`` real and ``n - n // 2`` synthetic images are drawn at random (seeded) from
    ``real`` and ``synthetic`` (``[N, C, H, W]`` in [0, 1]). Refuses to write into a
    ``rater/`` folder that already has files.
    """
    import torch

    from synthmri.core.files import OutputDir, output_guard

    if n < 2:
        raise ConfigError(f"--n must be at least 2, not {n}")
    if not 8 <= size <= MAX_KIT_SIZE:
        raise ConfigError(f"--size must be between 8 and {MAX_KIT_SIZE}, not {size}")
    n_real, n_syn = n // 2, n - n // 2
    for what, data, need in (("real", real, n_real), ("synthetic", synthetic, n_syn)):
        if data.ndim != 4:
            raise DataError(f"{what} images must be [N, C, H, W], got {tuple(data.shape)}")
        if data.shape[0] < need:
            raise DataError(
                f"{data.shape[0]} {what} image(s), but a kit of {n} needs {need}",
                hint="use a smaller --n or give more images",
            )
    out = Path(out)
    rater = out / "rater"
    with output_guard(rater):
        if rater.exists() and (not rater.is_dir() or any(rater.iterdir())):
            raise ConfigError(
                f"{rater} already holds a kit; refusing to overwrite it", hint="give a new --out"
            )
    rng = np.random.default_rng(seed)
    pick_real = rng.choice(real.shape[0], n_real, replace=False)
    pick_syn = rng.choice(synthetic.shape[0], n_syn, replace=False)
    items = [("real", int(i)) for i in pick_real] + [("synthetic", int(i)) for i in pick_syn]
    order = rng.permutation(len(items))
    items = [items[i] for i in order]
    prepared = {
        "real": _prepare(real[torch.as_tensor(pick_real)], size),
        "synthetic": _prepare(synthetic[torch.as_tensor(pick_syn)], size),
    }
    position = {("real", int(i)): k for k, i in enumerate(pick_real)}
    position.update({("synthetic", int(i)): k for k, i in enumerate(pick_syn)})
    sources = {"real": real_sources, "synthetic": synthetic_sources}
    width = max(3, len(str(n)))
    kit = OutputDir(out)  # every file of the kit goes through it (atomic, errors as one line)
    kit.mkdir("rater")
    pages: list[tuple[str, bytes]] = []
    entries = []
    for k, (truth, idx) in enumerate(items, start=1):
        name = f"img_{k:0{width}d}.png"
        png = _png(prepared[truth][position[(truth, idx)]])
        kit.write_bytes(png, "rater", name)
        pages.append((name, png))
        src = sources[truth]
        entries.append(
            {"image": name, "truth": truth, "source": src[idx] if src else f"{truth}:{idx}"}
        )
    kit_id = hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:12]
    kit.write_text(render_page(pages, title, kit_id), "rater", "index.html")
    key = {
        "version": KEY_VERSION,
        "kit_id": kit_id,
        "n": n,
        "n_real": n_real,
        "n_synthetic": n_syn,
        "seed": seed,
        "size": size,
        "images": entries,
    }
    return kit.write_text(json.dumps(key, indent=1), "key.json")


def render_page(images: list[tuple[str, bytes]], title: str, kit_id: str) -> str:
    """The rater page (module docstring) for ``(file name, PNG bytes)`` pairs, in that order."""
    data = {
        "id": kit_id,
        "images": [
            {"name": name, "src": "data:image/png;base64," + base64.b64encode(png).decode()}
            for name, png in images
        ],
    }
    payload = json.dumps(data).replace("</", "<\\/")
    template = resources.files(__package__).joinpath(PAGE_TEMPLATE).read_text(encoding="utf-8")
    return template.replace("__TITLE__", html.escape(title)).replace("__DATA__", payload)


# ----------------------------------------------------------------------------- score


@dataclass
class TuringScore:
    """The published table of a visual Turing test, with the test against chance."""

    real_as_real: int
    real_as_synthetic: int
    synthetic_as_real: int
    synthetic_as_synthetic: int
    n: int  # answered images
    n_unanswered: int
    accuracy: float
    accuracy_ci: list[float]  # 95 % Clopper-Pearson
    p_value: float  # two-sided exact binomial test against 50 %

    def as_dict(self) -> dict[str, Any]:
        """Plain values, for JSON."""
        return asdict(self)


def load_key(path: str | Path) -> dict[str, str]:
    """Image name -> truth (``real``/``synthetic``) from a ``key.json``."""
    data = _read_json(path, "key")
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or not images:
        raise DataError(
            f"{path}: not a Turing key (no 'images' list)",
            hint="give the key.json that `synthmri turing make` wrote",
        )
    key: dict[str, str] = {}
    for entry in images:
        if (
            not isinstance(entry, dict)
            or entry.get("truth") not in ANSWERS
            or not isinstance(entry.get("image"), str)
        ):
            raise DataError(f"{path}: bad key entry {entry!r}")
        key[entry["image"]] = entry["truth"]
    return key


def load_answers(path: str | Path) -> dict[str, str | None]:
    """Image name -> answer from ``answers.json`` (a list, or ``{"answers": [...]}``) or
    ``answers.csv`` (columns image, answer); an empty answer is None (unanswered)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: answers file not found")
    if p.suffix.lower() == ".csv":
        try:
            reader = csv.DictReader(io.StringIO(_read_text(p)))
            rows = list(reader)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"{p}: cannot read answers CSV ({exc})") from None
        if reader.fieldnames is None or not {"image", "answer"} <= set(reader.fieldnames):
            raise DataError(f"{p}: the answers CSV needs the columns image,answer")
    else:
        data = _read_json(p, "answers")
        rows = data.get("answers") if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise DataError(f"{p}: answers must be a list of {{image, answer}} objects")
    answers: dict[str, str | None] = {}
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("image"), str):
            raise DataError(f"{p}: bad answer entry {row!r}")
        value = row.get("answer")
        value = value.strip().lower() if isinstance(value, str) else value
        if value in ("", None):
            value = None
        elif value not in ANSWERS:
            raise DataError(
                f"{p}: answer {row.get('answer')!r} for {row['image']} is not real or synthetic"
            )
        answers[row["image"]] = value
    return answers


def _read_json(path: str | Path, what: str) -> Any:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: {what} file not found")
    try:
        return json.loads(_read_text(p))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{p}: not a valid JSON {what} file ({exc})") from None


def _read_text(path: Path) -> str:
    """A key or answers file as text: a regular file of at most 64 MiB."""
    from synthmri.core.files import read_limited

    return read_limited(path, 64 * 1024**2).decode("utf-8")


def score_answers(answers: str | Path, key: str | Path) -> TuringScore:
    """Score a rater's answers against the key (unanswered images are counted apart)."""
    truth = load_key(key)
    given = load_answers(answers)
    unknown = sorted(set(given) - set(truth))
    if unknown:
        raise DataError(
            f"{answers}: {len(unknown)} answer(s) for images not in the key (first: {unknown[0]})",
            hint="answers and key must come from the same kit",
        )
    counts = {(t, a): 0 for t in ANSWERS for a in ANSWERS}
    for image, t in truth.items():
        a = given.get(image)
        if a is not None:
            counts[(t, a)] += 1
    n = sum(counts.values())
    if n == 0:
        raise DataError(f"{answers}: no image is answered")
    correct = counts[("real", "real")] + counts[("synthetic", "synthetic")]
    from scipy.stats import binomtest

    test = binomtest(correct, n, 0.5, alternative="two-sided")
    ci = test.proportion_ci(confidence_level=0.95, method="exact")
    return TuringScore(
        real_as_real=counts[("real", "real")],
        real_as_synthetic=counts[("real", "synthetic")],
        synthetic_as_real=counts[("synthetic", "real")],
        synthetic_as_synthetic=counts[("synthetic", "synthetic")],
        n=n,
        n_unanswered=len(truth) - n,
        accuracy=correct / n,
        accuracy_ci=[float(ci.low), float(ci.high)],
        p_value=float(test.pvalue),
    )


# ----------------------------------------------------------------------------- evaluator


class TuringKitEvaluator(Evaluator):
    """Writes a blinded visual Turing test kit per generator into the run directory."""

    name: ClassVar[str] = "turing_kit"
    description: ClassVar[str] = (
        "visual Turing test kit per generator (real test vs synthetic; key kept apart)"
    )
    requires: ClassVar[tuple[str, ...]] = ("synthetic",)

    #: the kit's two jobs outside a run (``synthmri turing make|score``) and its size limit
    make_kit = staticmethod(make_kit)
    score_answers = staticmethod(score_answers)
    MAX_KIT_SIZE: ClassVar[int] = MAX_KIT_SIZE

    class Params(StrictParams):
        """Params of the Turing kit."""

        n: int = Field(50, ge=2, description="images per kit (half real, half synthetic)")
        size: int = Field(128, ge=8, le=MAX_KIT_SIZE, description="side length of the kit's images")
        generators: list[str] | None = Field(None, description="kits for these (default: all)")

    def evaluate(self, inputs: EvalInputs, run: RunContext) -> dict[str, list[dict[str, Any]]]:
        """Write ``turing/<generator>/{rater/, key.json}``; no metric rows."""
        p = self.params
        files = run.files if run.is_main else None  # the writer bound to the run directory
        if files is None:
            run.note("turing_kit: no run directory, nothing written")
            return {}
        base = files.mkdir("turing")
        real = inputs.test if len(inputs.test) else inputs.train
        wanted = p.generators or list(inputs.synthetic)
        for gen in wanted:
            syn = inputs.synthetic.get(gen)
            if syn is None or len(syn) == 0:
                run.note(f"turing_kit: no synthetic images of {gen!r}; no kit")
                continue
            n = min(p.n, 2 * min(len(real), len(syn)))
            if n < 2:
                continue
            if n < p.n:
                run.note(f"turing_kit: {gen}: only {n} images in the kit (asked for {p.n})")
            key = make_kit(
                real.images,
                syn.images,
                base / _folder(gen),
                n=n,
                seed=inputs.seed,
                size=p.size,
                real_sources=real.sources,
                synthetic_sources=syn.sources,
                title=f"Visual Turing test ({n} images)",
            )
            run.log(turing_kit=str(key.parent), generator=gen, n=n)
        files.write_text(
            "Visual Turing test kits, one folder per generator.\n"
            "Send ONLY the rater/ folder to a rater (open rater/index.html in a browser).\n"
            "key.json beside it is the answer key: keep it.\n"
            "Score with: synthmri turing score answers.json key.json\n",
            "turing",
            "README.txt",
        )
        return {}


def _folder(generator: str) -> str:
    """The kit folder of a generator: its name as one file-name component."""
    from synthmri.core.files import safe_name

    # "/" becomes "_" here (safe_name would make it "-"), as kit folders always had it
    return safe_name(generator.replace("/", "_")) or "generator"


@hookimpl
def synthmri_register_evaluators(register: Any) -> None:
    """Register the Turing kit evaluator."""
    register(TuringKitEvaluator)
