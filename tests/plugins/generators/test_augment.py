"""The ``augment`` baseline: real training images under classical augmentation (MONAI)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import torch

from synthmri import get_plugin
from synthmri.core.errors import ConfigError, DataError, PluginError
from synthmri.core.interfaces import EvalInputs, ImageSet
from synthmri.core.training import RunContext
from synthmri.plugins.generators.augment import Augment
from synthmri.testing import phantom_set, round_trip

#: every transform off: samples are the training images themselves
OFF: dict[str, Any] = {
    "flip_prob": 0.0,
    "affine_prob": 0.0,
    "elastic_prob": 0.0,
    "bias_prob": 0.0,
    "gamma_prob": 0.0,
    "noise_prob": 0.0,
}


def _fitted(params: dict[str, Any], data: ImageSet | None = None) -> Augment:
    model = Augment(params)
    model.fit(data if data is not None else phantom_set(12, 32).of_class("tumor"), RunContext())
    return model


def _source(sample: ImageSet, k: int) -> int:
    return int(sample.sources[k].rsplit("of=", 1)[1])


def test_registered_per_class_and_masks_follow_the_data() -> None:
    assert get_plugin("generator", "augment") is Augment
    assert not Augment.conditional
    assert Augment().emits_masks  # unset: it may emit masks (the data decides at fit)
    with_masks = _fitted({})
    assert with_masks.emits_masks and with_masks.sample(3, seed=0).masks is not None
    data = phantom_set(12, 32)
    data.masks = None
    without = _fitted({}, data)
    assert not without.emits_masks and without.sample(3, seed=0).masks is None
    assert not _fitted({"emits_masks": False}).emits_masks
    with pytest.raises(DataError, match="no masks"):
        Augment({"emits_masks": True}).fit(data, RunContext())


def test_without_transforms_samples_are_the_training_images_each_used_evenly() -> None:
    train = phantom_set(12, 32).of_class("tumor")
    model = _fitted(OFF, train)
    out = model.sample(2 * len(train) + 1, seed=4)
    uses = Counter(_source(out, k) for k in range(len(out)))
    assert set(uses) == set(range(len(train))) and set(uses.values()) <= {2, 3}
    for k in range(len(out)):
        assert torch.equal(out.images[k], train.images[_source(out, k)])
        assert torch.equal(out.masks[k], train.masks[_source(out, k)])
    few = model.sample(len(train) - 1, seed=4)
    assert len({_source(few, k) for k in range(len(few))}) == len(train) - 1  # distinct


def test_a_flip_moves_image_and_mask_together() -> None:
    train = phantom_set(12, 32).of_class("tumor")
    out = _fitted({**OFF, "flip_prob": 1.0}, train).sample(6, seed=1)
    for k in range(6):
        src = _source(out, k)
        assert torch.equal(out.images[k], train.images[src].flip(-1))
        assert torch.equal(out.masks[k], train.masks[src].flip(-1))


def test_warps_keep_masks_binary_and_aligned_with_the_image() -> None:
    # a bright square whose mask is the square itself: after the warp they still coincide
    images = torch.zeros(4, 1, 32, 32)
    images[:, :, 10:22, 8:20] = 1.0
    data = ImageSet(images=images, masks=images.clone())
    params = {**OFF, "affine_prob": 1.0, "elastic_prob": 1.0, "rotate_deg": 30.0}
    out = _fitted(params, data).sample(16, seed=2)
    assert bool(((out.masks == 0) | (out.masks == 1)).all())
    assert not torch.equal(out.masks, images[:1].expand(16, -1, -1, -1))  # it did warp
    bright = out.images > 0.5
    mask = out.masks > 0.5
    iou = (bright & mask).sum((1, 2, 3)).float() / (bright | mask).sum((1, 2, 3)).float()
    assert float(iou.min()) > 0.85


def test_intensity_transforms_change_the_image_not_the_mask() -> None:
    train = phantom_set(12, 32).of_class("tumor")
    params = {**OFF, "bias_prob": 1.0, "gamma_prob": 1.0, "noise_prob": 1.0}
    out = _fitted(params, train).sample(8, seed=3)
    for k in range(8):
        src = _source(out, k)
        assert torch.equal(out.masks[k], train.masks[src])
        assert not torch.equal(out.images[k], train.images[src])
    assert float(out.images.min()) >= 0.0 and float(out.images.max()) <= 1.0


def test_seeded_reproducible_and_restored_from_state() -> None:
    model = _fitted({})
    a = model.sample(6, label=1, seed=7)
    assert torch.equal(a.images, model.sample(6, label=1, seed=7).images)
    assert not torch.equal(a.images, model.sample(6, label=1, seed=8).images)
    assert a.labels is not None and a.labels.tolist() == [1] * 6
    restored = Augment()
    restored.load_state_dict(round_trip(model.state_dict()))
    assert torch.equal(restored.sample(6, label=1, seed=7).images, a.images)
    assert restored.sample(0, seed=1).images.shape == (0, 1, 32, 32)


def test_privacy_reports_its_copies_without_crashing() -> None:
    data = phantom_set(40, 32, seed=0)
    train, test = data.subset(range(24)), data.subset(range(24, 40))
    copies = _fitted(OFF, train.of_class("tumor")).sample(10, label=1, seed=0)
    copies.class_names = list(train.class_names)
    privacy = get_plugin("evaluator", "privacy")({"features": "random", "figure_pairs": 0})
    run = RunContext()
    inputs = EvalInputs(train=train, val=test, test=test, synthetic={"augment": copies})
    (row,) = privacy.evaluate(inputs, run)["privacy"]
    assert (row["generator"], row["class"]) == ("augment", "tumor")
    assert row["memorized_fraction"] == 1.0  # exact copies, reported as such
    assert any("memorises" in n for n in run.notes)


def test_bad_params_and_misuse_are_clear_errors() -> None:
    with pytest.raises(PluginError, match="gamma_min"):
        Augment({"gamma_min": 2.0, "gamma_max": 1.0})
    with pytest.raises(PluginError, match="flip_prob"):
        Augment({"flip_prob": 1.5})
    with pytest.raises(ConfigError, match="no training images"):
        Augment().sample(2, seed=0)
    with pytest.raises(DataError, match="no training images"):
        Augment().fit(phantom_set(4, 32).subset([]), RunContext())
