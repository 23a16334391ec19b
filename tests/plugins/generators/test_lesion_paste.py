"""The ``lesion_paste`` baseline: real lesions pasted inside the brain of healthy slices."""

from __future__ import annotations

import pytest
import torch
from scipy import ndimage

from synthmri import get_plugin
from synthmri.core.errors import ConfigError, DataError, PluginError
from synthmri.core.interfaces import ImageSet
from synthmri.core.phantoms import make_phantoms
from synthmri.core.training import RunContext
from synthmri.plugins.generators.lesion_paste import LesionPaste, brain_mask
from synthmri.testing import round_trip


def _field(name: str, source: str) -> int:
    return int(source.split(f"{name}=", 1)[1].split(":", 1)[0])


@pytest.fixture(scope="module")
def phantoms() -> ImageSet:
    return make_phantoms(48, 64, seed=3)


@pytest.fixture(scope="module")
def fitted(phantoms: ImageSet) -> LesionPaste:
    model = LesionPaste({"augment_base": False})
    model.fit(phantoms, RunContext(seed=0))
    return model


def _disc_slices(
    n: int,
    brain: float,
    lesion: float | None,
    radius: int = 12,
    lesion_radius: int = 3,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` 32 px slices: a textured disc (brain ~``brain``) on black, with a lesion of
    ``lesion`` intensity at a random place inside it (and its mask) unless None."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    head = ((yy - 16) ** 2 + (xx - 16) ** 2) <= radius**2
    images = torch.zeros(n, 1, 32, 32)
    masks = torch.zeros(n, 1, 32, 32)
    for i in range(n):
        images[i, 0] = head * (brain + 0.1 * torch.rand(32, 32, generator=g))
        if lesion is not None:
            cy, cx = (16 + torch.randint(-4, 5, (2,), generator=g)).tolist()
            spot = ((yy - cy) ** 2 + (xx - cx) ** 2) <= lesion_radius**2
            images[i, 0][spot] = lesion
            masks[i, 0] = spot.float()
    return images, masks


def _two_class_set(*parts: tuple[torch.Tensor, torch.Tensor, int]) -> ImageSet:
    return ImageSet(
        images=torch.cat([p[0] for p in parts]),
        masks=torch.cat([p[1] for p in parts]),
        labels=torch.cat([torch.full((len(p[0]),), p[2]) for p in parts]),
        class_names=["normal", "tumor"],
    )


def test_registered_conditional_with_masks() -> None:
    assert get_plugin("generator", "lesion_paste") is LesionPaste
    assert LesionPaste.conditional and LesionPaste.emits_masks


def test_brain_mask_lies_inside_the_head(phantoms: ImageSet) -> None:
    for i in range(4):
        image = phantoms.images[i, 0].numpy()
        head, brain = brain_mask(image, 0.15)
        assert brain.sum() > 0.3 * head.sum() and not (brain & ~head).any()
        assert image[head].mean() > 3 * image[~head].mean()  # the head is the bright part


def test_tumour_samples_are_healthy_slices_with_a_pasted_lesion(
    fitted: LesionPaste, phantoms: ImageSet
) -> None:
    out = fitted.sample(24, label=1, seed=5)
    assert out.labels is not None and out.labels.tolist() == [1] * 24
    assert out.masks is not None and bool(((out.masks == 0) | (out.masks == 1)).all())
    state = fitted.state_dict()
    base, brains = state["healthy_images"], state["healthy_brains"]
    reach = 12  # beyond the carved margin (4) and the blend (1 + 3 sigma): untouched
    for k, source in enumerate(out.sources):
        assert "at_donor_position" not in source
        t = _field("healthy", source)
        mask = out.masks[k, 0].bool()
        assert mask.sum() >= 3
        assert not (mask & ~brains[t].bool()).any(), "the lesion lies inside the brain"
        far = torch.from_numpy(ndimage.distance_transform_edt(~mask.numpy()) > reach)
        assert torch.allclose(out.images[k, 0][far], base[t, 0][far])
        assert not torch.allclose(out.images[k, 0][mask], base[t, 0][mask])


def test_healthy_samples_are_the_healthy_slices_with_empty_masks(
    fitted: LesionPaste, phantoms: ImageSet
) -> None:
    out = fitted.sample(10, label=0, seed=2)
    assert out.labels.tolist() == [0] * 10 and float(out.masks.sum()) == 0.0
    healthy = fitted.state_dict()["healthy_images"]
    for k, source in enumerate(out.sources):
        assert torch.equal(out.images[k], healthy[_field("healthy", source)])


def test_the_base_augmentation_varies_both_classes_alike(phantoms: ImageSet) -> None:
    model = LesionPaste()  # augment_base: true
    model.fit(phantoms, RunContext(seed=0))
    base = model.state_dict()["healthy_images"]
    healthy = model.sample(12, label=0, seed=2)
    assert float(healthy.masks.sum()) == 0.0
    for k, source in enumerate(healthy.sources):
        assert not torch.equal(healthy.images[k], base[_field("healthy", source)])
    tumour = model.sample(12, label=1, seed=2)
    for k in range(12):  # the lesion lies inside the warped head, its mask stays binary
        head, _ = brain_mask(tumour.images[k, 0].numpy(), 0.0)
        mask = tumour.masks[k, 0].bool().numpy()
        assert mask.sum() >= 3 and (mask & ~head).sum() <= 0.05 * mask.sum()
    assert bool(((tumour.masks == 0) | (tumour.masks == 1)).all())


def test_seeded_and_restored_from_state(fitted: LesionPaste) -> None:
    a = fitted.sample(6, label=1, seed=11)
    assert torch.equal(a.images, fitted.sample(6, label=1, seed=11).images)
    assert not torch.equal(a.images, fitted.sample(6, label=1, seed=12).images)
    restored = LesionPaste({"augment_base": False})
    restored.load_state_dict(round_trip(fitted.state_dict()))
    b = restored.sample(6, label=1, seed=11)
    assert torch.equal(b.images, a.images) and torch.equal(b.masks, a.masks)
    assert fitted.sample(3, seed=1).masks.sum() > 0  # label None: tumour samples


def test_intensities_are_matched_to_the_target_brain() -> None:
    # healthy brains ~0.35, donor brains ~0.75 with lesions at 0.95 (0.2 above their brain)
    data = _two_class_set(
        (*_disc_slices(8, 0.3, None, seed=1), 0), (*_disc_slices(8, 0.7, 0.95), 1)
    )
    means = {}
    for match in (True, False):
        params = {"match_intensity": match, "rotate": False, "scale": 0.0, "augment_base": False}
        model = LesionPaste(params)
        model.fit(data, RunContext())
        out = model.sample(12, label=1, seed=0)
        means[match] = float(out.images[out.masks.bool()].mean())
    assert means[False] == pytest.approx(0.95, abs=0.01)
    # the lesion keeps its contrast to the brain, in units of the brain's spread: ~0.55
    assert 0.45 < means[True] < 0.65


def test_the_carved_margin_carries_the_lesion_surroundings(phantoms: ImageSet) -> None:
    changed = {}
    for context in (0.0, 4.0):
        params = {"context": context, "blend_sigma": 0.0, "augment_base": False}
        model = LesionPaste(params)
        model.fit(phantoms, RunContext())
        out = model.sample(16, label=1, seed=0)
        base = model.state_dict()["healthy_images"]
        diff = sum(
            int((out.images[k, 0] != base[_field("healthy", s), 0]).sum())
            for k, s in enumerate(out.sources)
        )
        changed[context] = diff / float(out.masks.sum())
    assert changed[0.0] <= 1.0  # no margin, no blur: only the mask's pixels change
    assert changed[4.0] > 1.5  # the donor's surroundings (oedema) come along


def test_the_donor_is_chosen_by_brain_contrast() -> None:
    dark, dark_masks = _disc_slices(6, 0.3, 0.9, seed=2)  # donors 0-5: brain like the targets
    bright, bright_masks = _disc_slices(6, 0.7, 0.1, seed=3)  # donors 6-11: another contrast
    data = _two_class_set(
        (*_disc_slices(6, 0.3, None, seed=4), 0),
        (torch.cat([dark, bright]), torch.cat([dark_masks, bright_masks]), 1),
    )
    model = LesionPaste({"donor_candidates": 64, "augment_base": False})
    model.fit(data, RunContext())
    donors = {_field("donor", s) for s in model.sample(20, label=1, seed=0).sources}
    assert donors and max(donors) < 6


def test_a_lesion_too_large_is_pasted_at_its_donor_position() -> None:
    small_heads = _disc_slices(4, 0.3, None, radius=5, seed=5)
    big_lesions = _disc_slices(4, 0.3, 0.9, radius=14, lesion_radius=8, seed=6)
    model = LesionPaste({"max_tries": 3, "augment_base": False})
    model.fit(_two_class_set((*small_heads, 0), (*big_lesions, 1)), RunContext())
    out = model.sample(4, label=1, seed=0)
    assert all("at_donor_position" in s for s in out.sources)
    for k, source in enumerate(out.sources):  # the mask is the donor's own, exactly
        assert torch.equal(out.masks[k], big_lesions[1][_field("donor", source)])


def test_data_it_cannot_use_is_a_clear_error(phantoms: ImageSet) -> None:
    no_masks = phantoms.subset(range(len(phantoms)))
    no_masks.masks = None
    with pytest.raises(DataError, match="no tumour masks") as info:
        LesionPaste().fit(no_masks, RunContext())
    assert "generators=[augment, pca_gmm]" in (info.value.hint or "")
    with pytest.raises(DataError, match="only class 'tumor'") as info:  # trained per class
        LesionPaste().fit(phantoms.of_class("tumor"), RunContext())
    assert "per_class: false" in (info.value.hint or "")
    three = ImageSet(
        images=phantoms.images,
        masks=phantoms.masks,
        labels=torch.arange(len(phantoms)) % 3,
        class_names=["a", "b", "c"],
    )
    with pytest.raises(ConfigError, match="cannot tell the healthy class"):
        LesionPaste().fit(three, RunContext())
    with pytest.raises(DataError, match="no class 'glioma'"):
        LesionPaste({"tumor_class": "glioma"}).fit(phantoms, RunContext())
    with pytest.raises(PluginError, match="scale"):
        LesionPaste({"scale": 0.9})
    with pytest.raises(ConfigError, match="not fitted"):
        LesionPaste().sample(2, label=1, seed=0)


def test_named_classes_are_matched_ignoring_case(phantoms: ImageSet) -> None:
    model = LesionPaste({"tumor_class": "TUMOR", "healthy_class": "Normal"})
    model.fit(phantoms, RunContext())
    assert model.sample(2, label=1, seed=0).masks.sum() > 0
    with pytest.raises(DataError, match="not class 5"):
        model.sample(2, label=5, seed=0)
