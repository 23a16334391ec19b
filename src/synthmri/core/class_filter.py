"""The class filter: keep the synthetic samples a real-data classifier puts in their class.

A recipe generator entry may ask for it (``class_filter: {plugin: brain_cnn, params: {...},
min_probability: 0.5}``). A classifier plugin is trained on the real TRAIN part (the real
validation part for its early stopping, as every experiment's classifier), and a sample drawn
for class ``c`` is kept when the classifier gives ``c`` at least ``min_probability``; the
generator is sampled again for the shortfall (a few rounds at most) until the class has its
count. A conditional generator whose guided samples do not always show what their label says
(a tumour-class slice without a lesion) then gives a set with less label noise. This is the
"classifier filtering" of synthetic training data (e.g. He et al., ICLR 2023, with a CLIP
model; here a classifier of the real train part, so nothing downloads).

What it changes must be read with care: the kept set carries knowledge of the real labels
through the filter, so TSTR with a filter measures generator and filter together (on 1000
phantoms it lifted a PCA + GMM baseline to the latent diffusion model's TSTR and did not
move the diffusion model's: ``docs/results.md``, "diffusion"). Results
name the entry (give it its own ``name``), ``metrics.json`` records the filter's acceptance
per class beside the real validation images' (``generators[].class_filter``), and the test
part is never seen by the filter.

Importing this module loads no torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from synthmri.core.interfaces import Classifier, ImageSet
    from synthmri.core.training import RunContext

__all__ = ["ClassFilter", "filter_class", "fit_class_filter"]


class ClassFilter(BaseModel):
    """A recipe generator entry's class filter (``class_filter:`` in the entry)."""

    model_config = ConfigDict(extra="forbid")

    plugin: str = Field("brain_cnn", description="the classifier plugin trained on real data")
    params: dict[str, Any] = Field(default_factory=dict, description="its params")
    min_probability: float = Field(
        0.5, gt=0, lt=1, description="keep a sample when its class gets at least this probability"
    )
    max_rounds: int = Field(4, ge=1, description="sampling rounds per class at most")


def fit_class_filter(
    setting: ClassFilter, train: ImageSet, val: ImageSet | None, seed: int, run: RunContext
) -> tuple[Classifier, dict[str, float]]:
    """The filter's classifier fitted on the real ``train`` part (``val`` for its early
    stopping), and the share of each class's real ``val`` images it keeps (the ceiling a
    generator's acceptance is read against; empty without ``val``)."""
    from synthmri.core.plugins import get_plugin
    from synthmri.core.training import seed_everything

    seed_everything(seed)
    run.seed = seed
    model: Classifier = get_plugin("classifier", setting.plugin)(setting.params)
    model.fit(train, val, run)
    real: dict[str, float] = {}
    if val is not None and len(val):
        keep = _kept(model, val.images, val.labels, setting.min_probability)
        for i, name in enumerate(val.class_names):
            mine = val.labels == i
            if bool(mine.any()):
                real[name] = round(float(keep[mine].float().mean()), 4)
    return model, real


def filter_class(
    draw: Callable[[int, int], ImageSet],
    n: int,
    label: int,
    classifier: Classifier,
    setting: ClassFilter,
) -> tuple[Callable[[int], ImageSet], dict[str, int]]:
    """``draw`` (round, count -> samples of class ``label``) wrapped so that each call
    returns up to ``n`` samples the ``classifier`` keeps. The first draw asks for ``n``;
    each later one for the shortfall over the acceptance seen so far (plus 10 %; ``n``
    again while nothing was kept), at most ``max_rounds`` draws, numbered ``r * max_rounds
    + k`` for ``k < max_rounds`` (so round 0 starts with the unfiltered first draw). The
    returned dict counts the samples drawn and those the classifier accepted."""
    counts = {"n_drawn": 0, "n_accepted": 0}

    def filtered(r: int) -> ImageSet:
        kept: list[ImageSet] = []
        got = drawn = 0
        for k in range(setting.max_rounds):
            want = n if got == 0 else min(n, math.ceil(1.1 * (n - got) * drawn / got))
            s = draw(r * setting.max_rounds + k, want)
            ok = _kept(classifier, s.images, s.labels, setting.min_probability)
            kept.append(s.subset(ok))
            got += int(ok.sum())
            drawn += len(s)
            if got >= n:
                break
        counts["n_drawn"] += drawn
        counts["n_accepted"] += got
        out = kept[0] if len(kept) == 1 else kept[0].concat(kept)
        return out.subset(list(range(min(n, len(out)))))

    return filtered, counts


def _kept(classifier: Classifier, images: Any, labels: Any, min_probability: float) -> Any:
    """Boolean ``[N]``: the classifier gives each image's own label at least the bar."""
    import torch

    with torch.no_grad():
        proba = classifier.predict_proba(images).float().cpu()
    return proba.gather(1, labels.view(-1, 1).cpu()).squeeze(1) >= min_probability
