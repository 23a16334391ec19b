"""What the neural classifiers share (fit, predict, state, params), on resnet, mobilenet_v2
and brain_cnn."""

from __future__ import annotations

import pytest
import torch

from synthmri import get_plugin
from synthmri.core.errors import DataError, PluginError
from synthmri.core.interfaces import ImageSet
from synthmri.core.phantoms import make_phantoms
from synthmri.core.training import RunContext
from synthmri.plugins.classifiers.brain_cnn import BrainCNN
from synthmri.plugins.classifiers.torchvision_models import ResNet
from synthmri.testing import round_trip

CASES = [("resnet", {"depth": 18}), ("mobilenet_v2", {}), ("brain_cnn", {})]


@pytest.fixture(scope="module")
def phantoms() -> ImageSet:
    return make_phantoms(64, 32, seed=0)


@pytest.mark.parametrize(("name", "params"), CASES, ids=[c[0] for c in CASES])
def test_fit_predict_and_stateround_trip(name: str, params: dict, phantoms: ImageSet) -> None:
    cls = get_plugin("classifier", name)  # registered through the hook
    model = cls({**params, "epochs": 2, "batch_size": 16})
    train, val = phantoms.subset(range(48)), phantoms.subset(range(48, 64))
    model.fit(train, val, RunContext(device="cpu", seed=0))
    assert 1 <= model.history["epochs_run"] <= 2
    proba = model.predict_proba(phantoms.images)
    assert proba.shape == (64, 2)
    assert torch.allclose(proba.sum(1), torch.ones(64), atol=1e-5)
    assert bool(((proba >= 0) & (proba <= 1)).all())
    # the validation score is that of the model kept (accuracy, the default monitor)
    val_accuracy = float((model.predict(val.images) == val.labels).float().mean())
    assert model.validation_score() == pytest.approx(val_accuracy, abs=1e-5)

    state = round_trip(model.state_dict())
    assert state["class_names"] == ["normal", "tumor"] and state["size"] == 32
    assert state["n_classes"] == 2 and state["arch"] == model.arch()
    restored = cls()  # architecture comes from the state, not from the params
    restored.load_state_dict(state)
    assert torch.equal(restored.predict_proba(phantoms.images), proba)


def test_fit_without_validation(phantoms: ImageSet) -> None:
    model = BrainCNN({"epochs": 2, "batch_size": 16, "class_weights": True})
    model.fit(phantoms.subset(range(40)), None, RunContext(device="cpu"))
    assert model.history["epochs_run"] == 2 and model.history["val_score"] == []
    assert model.validation_score() is None
    assert model.predict_proba(phantoms.images[:5]).shape == (5, 2)


def test_bad_input_errors(phantoms: ImageSet) -> None:
    with pytest.raises(PluginError, match="not trained"):
        BrainCNN().predict_proba(phantoms.images[:2])
    unlabelled = ImageSet(images=phantoms.images[:8])
    with pytest.raises(DataError, match="no labels"):
        BrainCNN().fit(unlabelled, None, RunContext(device="cpu"))
    with pytest.raises(DataError, match="not a trained classifier"):
        BrainCNN().load_state_dict({})
    with pytest.raises(PluginError, match="weights"):
        ResNet({"weights": " "})


def test_params_extend_the_supervised_settings() -> None:
    p = BrainCNN.Params()
    assert (p.epochs, p.batch_size, p.lr, p.weight_decay, p.patience, p.augment) == (
        20,
        32,
        1e-3,
        1e-4,
        5,
        True,
    )
    assert (p.monitor, p.class_weights) == ("accuracy", False)
    with pytest.raises(PluginError, match="batch_size"):
        BrainCNN({"batch_size": 1})  # BatchNorm needs two images a batch


def test_calibration_sets_the_threshold_for_validation_sensitivity(phantoms: ImageSet) -> None:
    train, val = phantoms.subset(range(40)), phantoms.subset(range(40, 64))
    settings = {"epochs": 2, "batch_size": 16, "calibration": "sensitivity"}
    model = BrainCNN({**settings, "target_sensitivity": 1.0})
    model.fit(train, val, RunContext(device="cpu", seed=0))
    assert model.decision["calibration"] == "sensitivity"
    assert model.decision["val_sensitivity"] == 1.0  # every validation tumour called tumour

    # the calibrated probabilities rank the images as the softmax does, and the call at
    # 0.5 is the validation-set threshold's (the float32 softmax may swap two images whose
    # margins differ by a rounding error, so pairs closer than 1e-6 are not compared)
    calibrated = model.predict_proba(val.images)
    decision, model.decision = model.decision, {}
    base = model.predict_proba(val.images)
    model.decision = decision
    below = base[:, None, 1] < base[None, :, 1] - 1e-6
    assert bool((calibrated[:, None, 1] <= calibrated[None, :, 1])[below].all())
    assert torch.allclose(calibrated.sum(1), torch.ones(len(val)), atol=1e-6)
    tumour = val.labels == 1  # type: ignore[operator]
    assert bool((calibrated[tumour, 1] > 0.5).all())
    called_normal = float((calibrated[~tumour, 1] <= 0.5).float().mean())
    assert called_normal == pytest.approx(model.decision["val_specificity"])

    restored = BrainCNN()
    restored.load_state_dict(round_trip(model.state_dict()))
    assert restored.decision == model.decision
    assert torch.equal(restored.predict_proba(val.images), calibrated)


def test_calibration_needs_two_classes_and_both_in_validation(phantoms: ImageSet) -> None:
    three = ImageSet(
        images=phantoms.images[:12],
        labels=torch.arange(12) % 3,
        class_names=["normal", "small", "large"],
    )
    model = BrainCNN({"epochs": 1, "batch_size": 4, "calibration": "youden"})
    with pytest.raises(DataError, match="calibration youden needs two classes"):
        model.fit(three, None, RunContext(device="cpu"))
    run = RunContext(device="cpu")
    tumour_only = phantoms.subset(phantoms.labels == 1)  # type: ignore[operator]
    model.fit(phantoms.subset(range(32)), tumour_only, run)
    assert model.decision == {} and "needs healthy validation images" in run.notes[-1]
    normal_only = phantoms.subset(phantoms.labels == 0)  # type: ignore[operator]
    model.fit(phantoms.subset(range(32)), normal_only, run)
    assert model.decision["calibration"] == "specificity" and "using target_spec" in run.notes[-1]
    assert model.decision["val_specificity"] >= 0.9 and model.decision["val_sensitivity"] is None
