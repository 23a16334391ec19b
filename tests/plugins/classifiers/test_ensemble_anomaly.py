"""The ``ensemble_anomaly`` classifier: several anomaly classifiers, their standardised
scores averaged.

The members' maps, methods and calibration are the base's (tested through ``vae_anomaly``
and ``pca_anomaly``); here: the contract, that the members are trained as they would be
alone and their calibration scores kept through a saved state, the combination rule, the
masks, and bad params. Tiny (32 px, PCA members): whether the ensemble helps at the
recipe's size is measured in ``docs/results.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from synthmri import ImageSet, RunContext, get_plugin
from synthmri.core.errors import PluginError
from synthmri.core.operating_point import threshold_for
from synthmri.core.phantoms import make_phantoms
from synthmri.plugins.classifiers.ensemble_anomaly import SPREAD_FLOOR, EnsembleAnomaly
from synthmri.plugins.classifiers.pca_anomaly import PCAAnomaly
from synthmri.testing import check_classifier, round_trip

SIZE = 32
MEMBERS = [
    {"plugin": "pca_anomaly", "params": {"components": 4}},
    {"plugin": "pca_anomaly", "params": {"components": 8, "method": "kmeans"}},
]


@pytest.fixture(scope="module")
def data() -> tuple[ImageSet, ImageSet, ImageSet]:
    return (
        make_phantoms(80, SIZE, seed=0),
        make_phantoms(32, SIZE, seed=1),
        make_phantoms(24, SIZE, seed=2),
    )


@pytest.fixture(scope="module")
def model(data: tuple[ImageSet, ImageSet, ImageSet]) -> EnsembleAnomaly:
    train, val, _ = data
    m = EnsembleAnomaly({"members": MEMBERS})
    m.fit(train, val, RunContext(seed=0, device="cpu"))
    return m


def test_registered_and_conformant() -> None:
    assert get_plugin("classifier", "ensemble_anomaly") is EnsembleAnomaly
    assert EnsembleAnomaly.localises
    check_classifier(EnsembleAnomaly)


def test_members_are_trained_as_alone(
    data: tuple[ImageSet, ImageSet, ImageSet], model: EnsembleAnomaly
) -> None:
    train, val, test = data
    alone = PCAAnomaly({**MEMBERS[1]["params"], "figures": False})
    alone.fit(train, val, RunContext(seed=0, device="cpu"))
    member = model.members[1]
    assert member.operating_point == alone.operating_point
    assert np.array_equal(member.anomaly_scores(test.images), alone.anomaly_scores(test.images))
    # the calibration scores are the ones the member's threshold was set on
    is_normal = (val.labels == alone.normal_index).numpy()
    assert len(alone.calibration_scores) == len(val)
    want = threshold_for("sensitivity", alone.calibration_scores, ~is_normal)
    assert alone.score_threshold == pytest.approx(want)


def test_scores_are_the_mean_of_healthy_standardised_member_scores(
    data: tuple[ImageSet, ImageSet, ImageSet], model: EnsembleAnomaly
) -> None:
    _, val, test = data
    is_normal = (val.labels == model.normal_index).numpy()

    def standardised(member: Any, scores: np.ndarray) -> np.ndarray:
        healthy = member.calibration_scores[is_normal]
        spread = max(np.std(healthy), SPREAD_FLOOR * np.std(member.calibration_scores))
        return (scores - np.median(healthy)) / spread

    parts = [standardised(m, m.anomaly_scores(test.images)) for m in model.members]
    assert np.allclose(model.anomaly_scores(test.images), np.mean(parts, 0))
    # the threshold is set on the combined calibration scores, at the target sensitivity
    combined = np.mean([standardised(m, m.calibration_scores) for m in model.members], 0)
    assert model.operating_point["val_sensitivity"] >= 0.9
    want = threshold_for("sensitivity", combined, ~is_normal)
    assert model.score_threshold == pytest.approx(want)
    assert model.validation_score() == model.operating_point["val_auc"]
    assert len(model.operating_point["member_val_auc"]) == 2


def test_a_member_whose_healthy_slices_score_alike_does_not_outweigh_the_rest(
    model: EnsembleAnomaly,
) -> None:
    for member, scale in zip(model.members, model.scales, strict=True):
        assert scale >= SPREAD_FLOOR * np.std(member.calibration_scores) > 0


def test_masks_lie_on_the_tumours_and_only_where_called(
    data: tuple[ImageSet, ImageSet, ImageSet], model: EnsembleAnomaly
) -> None:
    _, _, test = data
    masks = model.predict_masks(test.images)
    assert masks.shape == (len(test), 1, SIZE, SIZE)
    called = model.predict(test.images) != model.normal_index
    assert not masks[~called].any()
    assert test.masks is not None
    truth = test.masks[called] > 0.5
    precision = (masks[called].bool() & truth).sum() / masks[called].sum()
    assert precision > 5 * truth.float().mean()  # far above the tumours' share of the slices


def test_restored_state_predicts_alike(
    data: tuple[ImageSet, ImageSet, ImageSet], model: EnsembleAnomaly
) -> None:
    _, _, test = data
    restored = EnsembleAnomaly()
    restored.load_state_dict(round_trip(model.state_dict()))
    assert [m.params.components for m in restored.members] == [4, 8]
    assert torch.equal(restored.predict_proba(test.images), model.predict_proba(test.images))
    assert np.array_equal(
        restored.members[0].calibration_scores, model.members[0].calibration_scores
    )


@pytest.mark.parametrize(
    ("members", "needle"),
    [
        ([{"plugin": "pca_anomaly"}], "at least 2"),
        ([{"plugin": "pca_anomaly"}, {"plugin": "brain_cnn"}], "not a reconstruction-based"),
        ([{"plugin": "pca_anomaly"}, {"plugin": "no_such_model"}], "no_such_model"),
        ([{"plugin": "pca_anomaly", "params": {"nope": 1}}, {"plugin": "pca_anomaly"}], "nope"),
    ],
)
def test_bad_members_are_one_line_errors(members: list[dict[str, Any]], needle: str) -> None:
    with pytest.raises(PluginError, match=needle):
        EnsembleAnomaly({"members": members})


def test_not_trained_is_a_clear_error(data: tuple[ImageSet, ImageSet, ImageSet]) -> None:
    with pytest.raises(PluginError, match="not trained"):
        EnsembleAnomaly({"members": MEMBERS}).predict_proba(data[2].images)
