"""``synthmri plugins new KIND NAME``: write a ready-to-install plugin package.

The package is small but real: its plugin works (a per-pixel Gaussian generator,
a logistic-regression classifier on downsampled pixels, a threshold segmenter, a
counting evaluator), its test passes with ``synthmri.testing``, and it installs
with ``pip install -e``. Layout (for ``NAME=my_gan``, kind generator)::

    synthmri-my-gan/
      pyproject.toml             distribution synthmri-my-gan, entry point group synthmri
      README.md
      src/synthmri_my_gan/__init__.py   the class, its Params and the @hookimpl
      src/synthmri_my_gan/py.typed
      tests/test_synthmri_my_gan.py

The templates are Python strings in this module (no data files to ship); the
placeholders ``__NAME__``, ``__CLASS__``, ``__MODULE__``, ``__DIST__``,
``__KIND__`` and ``__SYNTHMRI__`` are replaced by plain text substitution.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

from synthmri._version import __version__
from synthmri.core.errors import ConfigError, SynthMRIError
from synthmri.core.interfaces import KINDS

__all__ = ["NAME_RULE", "names", "plugin_files", "scaffold_plugin", "validate_name"]

NAME_RULE = re.compile(r"^[a-z][a-z0-9_]*$")
"""A plugin name: a lower-case Python identifier (letters, digits, underscores)."""

_HOOKS = {
    "generator": "synthmri_register_generators",
    "classifier": "synthmri_register_classifiers",
    "segmenter": "synthmri_register_segmenters",
    "evaluator": "synthmri_register_evaluators",
}


def validate_name(kind: str, name: str) -> None:
    """Raise ConfigError unless ``kind`` is a plugin kind and ``name`` a valid plugin name."""
    if kind not in KINDS:
        raise ConfigError(
            f"unknown plugin kind {kind!r}; kinds: {', '.join(KINDS)}",
            hint="e.g. `synthmri plugins new generator my_gan`",
        )
    if not NAME_RULE.match(name) or keyword.iskeyword(name) or len(name) > 40:
        raise ConfigError(
            f"invalid plugin name {name!r}: it must be a lower-case Python identifier "
            "(a-z, 0-9, _; starting with a letter; at most 40 characters; not a keyword)",
            hint=f"e.g. {_suggest(name)!r}",
        )
    if name.endswith("_") or "__" in name:
        raise ConfigError(
            f"invalid plugin name {name!r}: no trailing or doubled underscores",
            hint=f"e.g. {_suggest(name)!r}",
        )


def _suggest(name: str) -> str:
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)  # MyGan -> My_Gan
    cleaned = re.sub(r"[^a-z0-9]+", "_", snake.lower()).strip("_")
    cleaned = re.sub(r"_+", "_", cleaned)
    if not cleaned or not cleaned[0].isalpha():
        cleaned = f"my_{cleaned}".rstrip("_")
    if keyword.iskeyword(cleaned):
        cleaned = f"my_{cleaned}"
    return cleaned[:40].rstrip("_")


def names(kind: str, name: str) -> dict[str, str]:
    """The placeholders of the templates for ``kind`` / ``name``."""
    camel = "".join(part.capitalize() for part in name.split("_"))
    major_minor = ".".join(__version__.split(".")[:2])
    return {
        "__NAME__": name,
        "__CLASS__": f"{camel}{kind.capitalize()}",
        "__MODULE__": f"synthmri_{name}",
        "__DIST__": f"synthmri-{name.replace('_', '-')}",
        "__KIND__": kind,
        "__HOOK__": _HOOKS[kind],
        "__SYNTHMRI__": f"synthmri>={major_minor}",
    }


def plugin_files(kind: str, name: str) -> dict[str, str]:
    """Relative path -> file text of the package for a ``kind`` plugin called ``name``."""
    validate_name(kind, name)
    subst = names(kind, name)

    def fill(text: str) -> str:
        for key, value in subst.items():
            text = text.replace(key, value)
        return text

    module = subst["__MODULE__"]
    return {
        "pyproject.toml": fill(_PYPROJECT),
        "README.md": fill(_README + _README_KIND[kind]),
        f"src/{module}/__init__.py": fill(_MODULES[kind]),
        f"src/{module}/py.typed": "",
        f"tests/test_{module}.py": fill(_TESTS[kind]),
    }


def scaffold_plugin(
    kind: str, name: str, out: str | Path | None = None, *, check_installed: bool = True
) -> Path:
    """Write the package for a new plugin and return its folder.

    ``out`` is the package folder (default ``./synthmri-<name>``); it must not exist
    or be empty. With ``check_installed`` a name an installed plugin of the same kind
    already uses is refused (installing both would be a duplicate-name error).
    Errors are ``ConfigError`` (exit code 2 in the CLI).
    """
    files = plugin_files(kind, name)
    target = Path(out) if out is not None else Path.cwd() / names(kind, name)["__DIST__"]
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{target} exists and is not a folder", hint="choose another --out")
    if target.is_dir() and any(target.iterdir()):
        raise ConfigError(
            f"{target} exists and is not empty; nothing was written",
            hint="choose another --out, or remove the folder first",
        )
    if check_installed:
        _refuse_taken_name(kind, name)
    for rel, text in files.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return target


def _refuse_taken_name(kind: str, name: str) -> None:
    from synthmri.core.plugins import get_registry

    try:
        taken = {info.name: info for info in get_registry().list(kind)}
    except SynthMRIError:  # a broken environment must not stop scaffolding
        return
    if name in taken:
        raise ConfigError(
            f"a {kind} named {name!r} already exists (from {taken[name].provider})",
            hint="choose another name: two plugins of one kind cannot share a name",
        )


# ---------------------------------------------------------------------------- templates

_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "__DIST__"
version = "0.1.0"
description = "The __NAME__ __KIND__ plugin for synthmri."
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["__SYNTHMRI__"]

[project.optional-dependencies]
test = ["pytest>=8"]

# synthmri discovers the plugin through this entry point (group "synthmri"):
# the module it names holds the @hookimpl that registers the class.
[project.entry-points.synthmri]
__NAME__ = "__MODULE__"

[tool.setuptools.packages.find]
where = ["src"]

[tool.setuptools.package-data]
__MODULE__ = ["py.typed"]

[tool.pytest.ini_options]
testpaths = ["tests"]

[tool.ruff]
line-length = 100
target-version = "py311"

[tool.ruff.lint]
select = ["E", "F", "W", "I", "B", "UP", "SIM", "RUF"]
"""

_README = """\
# __DIST__

The `__NAME__` __KIND__ plugin for [synthmri](https://pypi.org/project/synthmri/),
written by `synthmri plugins new __KIND__ __NAME__`.

## Install and test

```bash
pip install -e .            # registers the entry point: synthmri finds the plugin
pytest                      # the synthmri conformance checks (synthmri.testing)
synthmri plugins list --kind __KIND__      # shows __NAME__ with __DIST__ 0.1.0
synthmri plugins show __NAME__             # its params
```

If `synthmri plugins list` shows the plugin as broken, the error beside it says why
(an import error, usually). If it does not show at all, check that the entry point is
installed:
`python -c "from importlib.metadata import entry_points; print(entry_points(group='synthmri'))"`.

## Make it yours

Edit `src/__MODULE__/__init__.py`: the class, its `Params` (every field typed, with a
default and a `description`), and `quick_params` (params that make the conformance
test fast). `state_dict()` must hold only tensors and plain values (int, float, str,
list, dict): checkpoints are read with `torch.load(weights_only=True)`.

## Publish

Keep the names: distribution `__DIST__` on PyPI, module `__MODULE__`.
`python -m build` and `twine upload dist/*`.
"""

_README_KIND = {
    "generator": """
## Use it in a recipe

```yaml
generators:
  - plugin: __NAME__
    per_class: true
    params: {temperature: 1.0}
```
""",
    "classifier": """
## Use it in a recipe

```yaml
experiments:
  - name: tstr
    task: classify
    models:
      - plugin: __NAME__
        params: {pool: 8}
    train_on: [real, synthetic]
```
""",
    "segmenter": """
## Use it in a recipe

```yaml
experiments:
  - name: seg
    task: segment
    models:
      - plugin: __NAME__
    train_on: [real]
```
""",
    "evaluator": """
## Use it in a recipe

```yaml
evaluate:
  - classification
  - __NAME__
```

Its rows land in section `__NAME__` of `metrics.json`.
""",
}

_GENERATOR = '''\
"""The ``__NAME__`` generator for synthmri (written by ``synthmri plugins new``).

A per-pixel Gaussian: ``fit`` takes the mean and standard deviation of every pixel
over the training slices, ``sample`` draws each pixel independently. It is a
working starting point: replace ``fit`` and ``sample`` with your model and keep
the contract (see the synthmri plugin guide, docs/plugins.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from pydantic import Field
from synthmri import Generator, ImageSet, RunContext, StrictParams, hookimpl

__version__ = "0.1.0"
__all__ = ["__CLASS__"]


class __CLASS__(Generator):
    """Per-pixel Gaussian of the training slices (trained once per class)."""

    name: ClassVar[str] = "__NAME__"
    description: ClassVar[str] = "per-pixel Gaussian of the training slices"
    #: params that make fit() finish in seconds in synthmri.testing
    quick_params: ClassVar[dict[str, Any]] = {}

    class Params(StrictParams):
        """Params of the ``__NAME__`` generator."""

        temperature: float = Field(
            1.0, gt=0, description="scales every pixel's standard deviation when sampling"
        )
        min_std: float = Field(
            0.0, ge=0, description="lower bound of every pixel's standard deviation"
        )

    def __init__(self, params: StrictParams | Mapping[str, Any] | None = None) -> None:
        super().__init__(params)  # validates params into self.params; keep __init__ cheap
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    def fit(self, train: ImageSet, run: RunContext) -> None:
        """Mean and standard deviation of every pixel over ``train``."""
        x = train.images.to(run.device)
        self.mean = x.mean(dim=0).cpu()
        self.std = x.std(dim=0, correction=0).clamp_min(self.params.min_std).cpu()
        run.log(step=0, mean_intensity=float(self.mean.mean()), mean_std=float(self.std.mean()))

    @torch.no_grad()
    def sample(self, n: int, label: int | None = None, seed: int | None = None) -> ImageSet:
        """``n`` images in [0, 1]; the same ``seed`` gives the same images."""
        if self.mean is None or self.std is None:
            raise RuntimeError("__NAME__: call fit() or load_state_dict() before sample()")
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn((n, *self.mean.shape), generator=g)
        images = (self.mean + self.params.temperature * self.std * noise).clamp(0, 1)
        labels = None if label is None else torch.full((n,), label, dtype=torch.long)
        return ImageSet(images=images, labels=labels)

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values only: checkpoints load with weights_only=True."""
        return {"mean": self.mean, "std": self.std}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        self.mean, self.std = state["mean"], state["std"]


@hookimpl
def __HOOK__(register: Any) -> None:
    """Tell synthmri about the class."""
    register(__CLASS__)
'''

_CLASSIFIER = '''\
"""The ``__NAME__`` classifier for synthmri (written by ``synthmri plugins new``).

Logistic regression on downsampled pixels: each image is average-pooled to
``pool`` x ``pool`` pixels, standardised, and fed to one linear layer trained
with full-batch Adam. A working starting point: replace the features and the
model with yours and keep the contract (see the synthmri plugin guide).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from synthmri import Classifier, DataError, ImageSet, RunContext, StrictParams, hookimpl
from torch import nn

__version__ = "0.1.0"
__all__ = ["__CLASS__"]


class __CLASS__(Classifier):
    """Logistic regression on average-pooled pixels."""

    name: ClassVar[str] = "__NAME__"
    description: ClassVar[str] = "logistic regression on downsampled pixels"
    #: params that make fit() finish in seconds in synthmri.testing
    quick_params: ClassVar[dict[str, Any]] = {"steps": 50}

    class Params(StrictParams):
        """Params of the ``__NAME__`` classifier."""

        pool: int = Field(8, ge=1, le=64, description="images are pooled to pool x pool pixels")
        steps: int = Field(300, ge=1, description="full-batch gradient steps")
        lr: float = Field(0.05, gt=0, description="Adam learning rate")
        weight_decay: float = Field(1e-3, ge=0, description="L2 penalty on the weights")
        log_every: int = Field(50, ge=1, description="steps between log.jsonl lines")

    def __init__(self, params: StrictParams | Mapping[str, Any] | None = None) -> None:
        super().__init__(params)  # validates params into self.params; keep __init__ cheap
        self.linear: nn.Linear | None = None
        self.mu = torch.zeros(0)
        self.sd = torch.ones(0)
        self.class_names: list[str] = []

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(images.float(), self.params.pool).flatten(1)

    def fit(self, train: ImageSet, val: ImageSet | None, run: RunContext) -> None:
        """Train the linear layer on ``train`` (``val``, when given, is scored at the end)."""
        if train.labels is None:
            raise DataError("__NAME__: the training set has no labels")
        p = self.params
        self.class_names = list(train.class_names) or [
            str(i) for i in range(int(train.labels.max()) + 1)
        ]
        x = self._features(train.images)
        self.mu, self.sd = x.mean(0), x.std(0, correction=0) + 1e-6
        x = ((x - self.mu) / self.sd).to(run.device)
        y = train.labels.to(run.device)
        linear = nn.Linear(x.shape[1], len(self.class_names)).to(run.device)
        nn.init.zeros_(linear.weight)  # a convex problem: zero init is deterministic
        nn.init.zeros_(linear.bias)
        opt = torch.optim.Adam(linear.parameters(), lr=p.lr, weight_decay=p.weight_decay)
        for step in range(p.steps):
            loss = F.cross_entropy(linear(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % p.log_every == 0 or step == p.steps - 1:  # host sync only when logging
                run.log(step=step, loss=float(loss.detach()))
        self.linear = linear.cpu().eval()
        if val is not None and val.labels is not None and len(val):
            accuracy = (self.predict(val.images) == val.labels).float().mean()
            run.log(val_accuracy=float(accuracy))

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[N, n_classes]``."""
        if self.linear is None:
            raise RuntimeError("__NAME__: call fit() or load_state_dict() before predicting")
        x = (self._features(images.cpu()) - self.mu) / self.sd
        return self.linear(x).softmax(dim=1)

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values only: checkpoints load with weights_only=True."""
        assert self.linear is not None, "fit() first"
        return {
            "weight": self.linear.weight.detach().clone(),
            "bias": self.linear.bias.detach().clone(),
            "mu": self.mu,
            "sd": self.sd,
            "class_names": list(self.class_names),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Rebuild the linear layer from what ``state_dict`` returned."""
        weight = state["weight"]
        self.linear = nn.Linear(weight.shape[1], weight.shape[0]).eval()
        self.linear.load_state_dict({"weight": weight, "bias": state["bias"]})
        self.mu, self.sd = state["mu"], state["sd"]
        self.class_names = list(state["class_names"])


@hookimpl
def __HOOK__(register: Any) -> None:
    """Tell synthmri about the class."""
    register(__CLASS__)
'''

_SEGMENTER = '''\
"""The ``__NAME__`` segmenter for synthmri (written by ``synthmri plugins new``).

An intensity threshold: ``fit`` tries ``candidates`` thresholds between 0 and 1 and
keeps the one with the best Dice on the training masks; ``predict`` marks the
pixels above it (after an optional box blur). A working starting point: replace it
with your model and keep the contract (see the synthmri plugin guide).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from synthmri import DataError, ImageSet, RunContext, Segmenter, StrictParams, hookimpl

__version__ = "0.1.0"
__all__ = ["__CLASS__"]


class __CLASS__(Segmenter):
    """Tumour = pixels brighter than a threshold learned from the training masks."""

    name: ClassVar[str] = "__NAME__"
    description: ClassVar[str] = "intensity threshold chosen for the best Dice on the train masks"
    #: params that make fit() finish in seconds in synthmri.testing
    quick_params: ClassVar[dict[str, Any]] = {}

    class Params(StrictParams):
        """Params of the ``__NAME__`` segmenter."""

        candidates: int = Field(64, ge=2, le=1000, description="thresholds tried in [0, 1]")
        blur: int = Field(
            1, ge=1, le=15, description="box-blur size (odd) before thresholding; 1 = none"
        )

    def __init__(self, params: StrictParams | Mapping[str, Any] | None = None) -> None:
        super().__init__(params)  # validates params into self.params; keep __init__ cheap
        self.threshold: float | None = None

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()[:, :1]
        k = self.params.blur | 1  # odd, so the output keeps its size
        return x if k == 1 else F.avg_pool2d(x, k, stride=1, padding=k // 2)

    def fit(self, train: ImageSet, val: ImageSet | None, run: RunContext) -> None:
        """Pick the threshold with the best Dice over all training pixels."""
        if train.masks is None:
            raise DataError("__NAME__: the training set has no masks")
        x = self._prepare(train.images).to(run.device)
        m = (train.masks > 0.5).to(run.device)
        thresholds = torch.linspace(0.0, 1.0, self.params.candidates, device=run.device)
        dice = torch.zeros_like(thresholds)
        for i, t in enumerate(thresholds):
            pred = x > t
            overlap = (pred & m).sum()
            dice[i] = 2 * overlap / (pred.sum() + m.sum()).clamp_min(1)
        best = int(dice.argmax())
        self.threshold = float(thresholds[best])
        for i, value in enumerate(dice.tolist()):  # one host sync, then plain floats
            run.log(step=i, dice_at_threshold=value)
        run.log(threshold=self.threshold, train_dice=float(dice[best]))

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Tumour masks ``[N, 1, H, W]`` of 0/1."""
        if self.threshold is None:
            raise RuntimeError("__NAME__: call fit() or load_state_dict() before predicting")
        return (self._prepare(images.cpu()) > self.threshold).float()

    def state_dict(self) -> dict[str, Any]:
        """Plain values only: checkpoints load with weights_only=True."""
        return {"threshold": self.threshold}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        self.threshold = float(state["threshold"])


@hookimpl
def __HOOK__(register: Any) -> None:
    """Tell synthmri about the class."""
    register(__CLASS__)
'''

_EVALUATOR = '''\
"""The ``__NAME__`` evaluator for synthmri (written by ``synthmri plugins new``).

Counts what a run produced: per generator and class, the synthetic images, how
many carry a non-empty tumour mask, and their mean intensity beside the real
train part's. A working starting point: compute your own metrics from
``EvalInputs`` and return rows (see the synthmri plugin guide).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field
from synthmri import EvalInputs, Evaluator, ImageSet, RunContext, StrictParams, hookimpl

__version__ = "0.1.0"
__all__ = ["__CLASS__"]


class __CLASS__(Evaluator):
    """Counts synthetic images (and masks) per generator and class."""

    name: ClassVar[str] = "__NAME__"
    description: ClassVar[str] = "counts synthetic images and masks per generator and class"
    #: what the pipeline must have for this evaluator to run (else it is skipped with a note)
    requires: ClassVar[tuple[str, ...]] = ("synthetic",)

    class Params(StrictParams):
        """Params of the ``__NAME__`` evaluator."""

        per_class: bool = Field(True, description="one row per class, else one per generator")

    def evaluate(self, inputs: EvalInputs, run: RunContext) -> dict[str, list[dict[str, Any]]]:
        """Rows of section ``__NAME__`` in metrics.json."""
        rows: list[dict[str, Any]] = []
        for generator, synthetic in inputs.synthetic.items():
            for cname, part in _parts(synthetic, self.params.per_class):
                real = dict(_parts(inputs.train, self.params.per_class)).get(cname)
                rows.append({
                    "generator": generator,
                    "class": cname,
                    "n_images": len(part),
                    "n_with_mask": _with_mask(part),
                    "mean_intensity": float(part.images.mean()) if len(part) else None,
                    "mean_intensity_real": (
                        float(real.images.mean()) if real is not None and len(real) else None
                    ),
                })  # fmt: skip
        return {"__NAME__": rows}


def _parts(data: ImageSet, per_class: bool) -> list[tuple[str, ImageSet]]:
    if not per_class or data.labels is None:
        return [("all", data)]
    return [(c, data.of_class(c)) for c in data.class_names]


def _with_mask(data: ImageSet) -> int:
    if data.masks is None or len(data) == 0:
        return 0
    return int((data.masks.flatten(1).amax(dim=1) > 0.5).sum())


@hookimpl
def __HOOK__(register: Any) -> None:
    """Tell synthmri about the class."""
    register(__CLASS__)
'''

_MODULES = {
    "generator": _GENERATOR,
    "classifier": _CLASSIFIER,
    "segmenter": _SEGMENTER,
    "evaluator": _EVALUATOR,
}

_TEST_HEAD = '''\
"""Tests of the ``__NAME__`` __KIND__: the synthmri conformance kit and the hook."""

from __future__ import annotations

'''

_TEST_HOOK = """

def test_the_hook_registers_the_class() -> None:
    found: list[type] = []
    __HOOK__(found.append)
    assert found == [__CLASS__]
"""

_TESTS = {
    "generator": _TEST_HEAD
    + """\
from synthmri.testing import check_generator

from __MODULE__ import __CLASS__, __HOOK__


def test_conformance() -> None:
    check_generator(__CLASS__)
"""
    + _TEST_HOOK,
    "classifier": _TEST_HEAD
    + """\
from synthmri.testing import check_classifier

from __MODULE__ import __CLASS__, __HOOK__


def test_conformance() -> None:
    check_classifier(__CLASS__)
"""
    + _TEST_HOOK,
    "segmenter": _TEST_HEAD
    + """\
from synthmri.testing import check_segmenter

from __MODULE__ import __CLASS__, __HOOK__


def test_conformance() -> None:
    check_segmenter(__CLASS__)
"""
    + _TEST_HOOK,
    "evaluator": _TEST_HEAD
    + """\
import torch
from synthmri import EvalInputs, RunContext
from synthmri.testing import phantom_set

from __MODULE__ import __CLASS__, __HOOK__


def test_counts_the_synthetic_images() -> None:
    real = phantom_set(16, 32, seed=0)
    synthetic = phantom_set(10, 32, seed=1)
    synthetic.masks = torch.zeros_like(synthetic.masks)  # no tumour masks at all
    inputs = EvalInputs(train=real, val=real, test=real, synthetic={"gen": synthetic})
    rows = __CLASS__().evaluate(inputs, RunContext())["__NAME__"]
    assert sum(r["n_images"] for r in rows) == len(synthetic)
    assert {r["class"] for r in rows} == set(synthetic.class_names)
    assert all(r["n_with_mask"] == 0 and r["generator"] == "gen" for r in rows)
    whole = __CLASS__({"per_class": False}).evaluate(inputs, RunContext())
    assert [r["n_images"] for r in whole["__NAME__"]] == [len(synthetic)]
"""
    + _TEST_HOOK,
}
