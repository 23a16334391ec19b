"""The GAN base (``synthmri.GAN``): the plugin guide's example GAN, params, the shared loop."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from synthmri import GAN, GANParams, RunContext
from synthmri.core.errors import ConfigError, DataError, PluginError
from synthmri.core.interfaces import ImageSet
from synthmri.core.phantoms import make_phantoms
from synthmri.core.plugins import get_plugin
from synthmri.nn.diffaugment import resolve_policy
from synthmri.testing import check_generator

GUIDE = Path(__file__).resolve().parents[3] / "docs" / "plugins.md"
FENCE = re.compile(r"^```python\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)


def guide_example() -> str:
    """The code block of docs/plugins.md that defines the example GAN."""
    blocks = [b for b in FENCE.findall(GUIDE.read_text(encoding="utf-8")) if "(GAN):" in b]
    assert len(blocks) == 1, "docs/plugins.md should have one GAN example"
    return blocks[0]


@pytest.fixture(scope="module")
def example() -> type[GAN]:
    namespace: dict[str, Any] = {}
    exec(compile(guide_example(), str(GUIDE), "exec"), namespace)
    classes = [v for v in namespace.values() if isinstance(v, type) and issubclass(v, GAN)]
    (cls,) = [c for c in classes if c is not GAN]
    found: list[type] = []
    namespace["synthmri_register_generators"](found.append)
    assert found == [cls]
    return cls


def test_the_guide_example_is_short() -> None:
    assert len(guide_example().splitlines()) <= 100


def test_the_guide_example_passes_the_conformance_kit(example: type[GAN]) -> None:
    check_generator(example)
    check_generator(example, {**example.quick_params, "conditional": True, "emits_masks": True})


def test_the_base_logs_grids_and_round_trips(example: type[GAN], tmp_path: Path) -> None:
    params = {**example.quick_params, "iterations": 4, "log_every": 2, "sample_every": 2}
    model = example(params)
    run = RunContext(out_dir=tmp_path, seed=0, stage="generate/hinge")
    model.fit(make_phantoms(16, 32, seed=0).of_class("tumor"), run)
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "step" in x]
    assert [x["step"] for x in steps] == [2, 4]
    for key in ("loss_d", "loss_g", "diversity", "diversity_real"):
        assert all(isinstance(x[key], float) for x in steps), key
    figures = {p.name for p in (tmp_path / "figures").iterdir()}
    assert {"generate-hinge-samples.png", "generate-hinge-samples-000002.png"} <= figures
    assert model.G_ema is not None and not model.G_ema.training
    restored = example(params)
    restored.load_state_dict(model.state_dict())
    assert torch.equal(restored.sample(3, seed=1).images, model.sample(3, seed=1).images)
    assert model.sample(3, seed=1).sources[0] == "hinge_gan:seed=1:0"


def test_the_base_checks_the_data(example: type[GAN]) -> None:
    with pytest.raises(DataError, match="empty"):
        example().fit(ImageSet(images=torch.zeros(0, 1, 32, 32)), RunContext())
    with pytest.raises(DataError, match="NaN"):
        example().fit(ImageSet(images=torch.full((4, 1, 32, 32), float("nan"))), RunContext())
    with pytest.raises(DataError, match="32, 64, 128, 256 px"):
        example().fit(ImageSet(images=torch.rand(4, 1, 40, 40)), RunContext())
    model = example({**example.quick_params, "iterations": 1, "conditional": True})
    with pytest.raises(DataError, match="labelled"):
        model.fit(ImageSet(images=torch.rand(4, 1, 32, 32)), RunContext())
    model.fit(make_phantoms(8, 32, seed=0), RunContext())
    with pytest.raises(ConfigError, match="cannot sample"):
        model.sample(-1)
    with pytest.raises(ConfigError, match="out of range"):
        model.sample(2, label=2)


def test_diffaugment_policy() -> None:
    assert resolve_policy("auto", 300) == "color,translation,cutout"
    assert resolve_policy("auto", 5000) == ""
    assert resolve_policy(None, 10) == "" and resolve_policy("", 10) == ""
    assert resolve_policy("translation", 5000) == "translation"
    assert GANParams(diffaugment="off").diffaugment == ""
    with pytest.raises(ValueError, match="zoom"):
        GANParams(diffaugment="zoom")
    with pytest.raises(ConfigError, match="zoom"):
        resolve_policy("zoom", 10)


def test_start_from_begins_at_the_given_weights() -> None:
    dcgan = get_plugin("generator", "dcgan")
    data = make_phantoms(16, 32, seed=0)
    params = {**dcgan.quick_params, "iterations": 2}
    first = dcgan(params)
    first.fit(data.of_class("normal"), RunContext(seed=0))
    still = {**params, "lr": 1e-12}  # the weights stay where they start
    warm, cold = dcgan(still), dcgan(still)
    warm.start_from(first.state_dict())
    for model in (warm, cold):
        model.fit(data.of_class("tumor"), RunContext(seed=1))
    for net in ("G", "D"):
        a, w, c = (m.state_dict()[net] for m in (first, warm, cold))
        weights = [k for k in a if k.endswith("weight")]
        assert all(torch.allclose(w[k], a[k], atol=1e-6) for k in weights)
        assert not all(torch.allclose(c[k], a[k], atol=1e-6) for k in weights)
    wider = dcgan({**params, "ngf": 16})
    wider.start_from(first.state_dict())
    with pytest.raises(DataError, match="the model to start from does not fit"):
        wider.fit(data.of_class("tumor"), RunContext(seed=1))


def test_freeze_d_keeps_the_first_layers_of_a_warm_started_d() -> None:
    dcgan = get_plugin("generator", "dcgan")
    data = make_phantoms(16, 32, seed=0)
    params = {**dcgan.quick_params, "iterations": 2, "freeze_d": 1}
    first = dcgan({**params, "freeze_d": 0})
    first.fit(data.of_class("normal"), RunContext(seed=0))
    warm, cold = dcgan(params), dcgan(params)
    warm.start_from(first.state_dict())
    for model in (warm, cold):
        model.fit(data.of_class("tumor"), RunContext(seed=1))
    start = first.state_dict()["D"]
    convs = [k for k in start if k.endswith("weight") and start[k].dim() == 4]
    kept = [torch.equal(warm.state_dict()["D"][k], start[k]) for k in convs]
    assert kept[0] and not any(kept[1:])  # only the first layer stays as it started
    assert all(p.requires_grad for p in cold.D.parameters())  # from scratch: no effect
    deep = dcgan({**params, "freeze_d": 9})
    deep.start_from(first.state_dict())
    with pytest.raises(ConfigError, match="freeze_d: 9 layers, but the network has 4"):
        deep.fit(data.of_class("tumor"), RunContext(seed=1))


def test_negatives_take_their_share_of_ds_fake_batch() -> None:
    dcgan = get_plugin("generator", "dcgan")
    mixed: list[torch.Tensor] = []

    class Recorded(dcgan):  # type: ignore[misc, valid-type]
        def train_step(self, t: Any) -> Any:
            mixed.append(t.fakes_for_d(torch.full((8, 1, 32, 32), 7.0)))
            return super().train_step(t)

    data = make_phantoms(24, 32, seed=0)
    normal = data.of_class("normal")
    model = Recorded({**dcgan.quick_params, "iterations": 2, "negative_share": 0.25})
    model.use_negatives(normal)
    model.fit(data.of_class("tumor"), RunContext(seed=0))
    negatives = normal.images * 2 - 1  # as the GAN sees them, in [-1, 1]
    for batch in mixed:
        assert bool((batch[2:] == 7).all())  # a quarter of 8: two negatives, then the fakes
        assert all(any(torch.equal(x, n) for n in negatives) for x in batch[:2])
    model.fit(data.of_class("tumor"), RunContext(seed=0))  # negatives are for one fit only
    assert bool((mixed[-1] == 7).all())
    model.use_negatives(make_phantoms(8, 64, seed=1))
    with pytest.raises(DataError, match=r"negatives are \(1, 64, 64\)"):
        model.fit(data.of_class("tumor"), RunContext(seed=0))


def test_mask_mismatch_pairs_real_slices_with_other_samples_masks() -> None:
    dcgan = get_plugin("generator", "dcgan")
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    class Recorded(dcgan):  # type: ignore[misc, valid-type]
        def train_step(self, t: Any) -> Any:
            real, _ = t.batch()
            seen.append((real, t.fakes_for_d(torch.full_like(real, 7.0), real)))
            return super().train_step(t)

    params = {"iterations": 3, "batch_size": 8, "conditional": True, "mask_conditioned": True}
    model = Recorded({**dcgan.quick_params, **params, "mask_mismatch": 0.5})
    model.fit(make_phantoms(32, 32, seed=0), RunContext(seed=0))
    swapped = 0
    for real, batch in seen:
        assert batch.shape == real.shape and bool((batch[:4] == 7).all())  # half stay fakes
        for i in range(4, 8):
            other = real[4 + (i - 5) % 4, 1:]  # the previous mask of the four, in a ring
            if torch.equal(other, real[i, 1:]):  # the same mask (both empty): a fake kept
                assert bool((batch[i] == 7).all())
            else:
                assert torch.equal(batch[i], torch.cat([real[i, :1], other]))
                swapped += 1
    assert swapped > 0


def test_a_gan_that_ignores_negatives_is_stopped(example: type[GAN]) -> None:
    class Careless(example):  # type: ignore[misc, valid-type]
        def train_step(self, t: Any) -> Any:
            t.fakes_for_d = lambda fake: fake  # skips the base's mixing
            return super().train_step(t)

    data = make_phantoms(16, 32, seed=0)
    model = Careless({**example.quick_params, "iterations": 2})
    model.use_negatives(data.of_class("normal"))
    with pytest.raises(PluginError, match="train_step ignores the negatives"):
        model.fit(data.of_class("tumor"), RunContext(seed=0))
