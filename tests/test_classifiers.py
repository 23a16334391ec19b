"""The built-in classifiers: resnet, mobilenet_v2 (torchvision) and brain_cnn."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import torch

from synthmri import get_plugin
from synthmri.core.errors import ConfigError, DataError, PluginError
from synthmri.core.interfaces import ImageSet
from synthmri.core.phantoms import make_phantoms
from synthmri.core.training import RunContext
from synthmri.plugins.classifiers.brain_cnn import BrainCNN
from synthmri.plugins.classifiers.torchvision_models import MobileNetV2, ResNet
from synthmri.testing import check_classifier

CASES = [("resnet", {"depth": 18}), ("mobilenet_v2", {}), ("brain_cnn", {})]
RESNET18_FILE = "resnet18-f37072fd.pth"


@pytest.fixture(scope="module")
def phantoms() -> ImageSet:
    return make_phantoms(64, 32, seed=0)


def _round_trip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize(("name", "params"), CASES, ids=[c[0] for c in CASES])
def test_fit_predict_and_state_round_trip(name: str, params: dict, phantoms: ImageSet) -> None:
    cls = get_plugin("classifier", name)  # registered through the hook
    model = cls({**params, "epochs": 2, "batch_size": 16})
    train, val = phantoms.subset(range(48)), phantoms.subset(range(48, 64))
    model.fit(train, val, RunContext(device="cpu", seed=0))
    assert 1 <= model.history["epochs_run"] <= 2
    proba = model.predict_proba(phantoms.images)
    assert proba.shape == (64, 2)
    assert torch.allclose(proba.sum(1), torch.ones(64), atol=1e-5)
    assert bool(((proba >= 0) & (proba <= 1)).all())

    state = _round_trip(model.state_dict())
    assert state["class_names"] == ["normal", "tumor"] and state["size"] == 32
    assert state["n_classes"] == 2 and state["arch"] == model.arch()
    restored = cls()  # architecture comes from the state, not from the params
    restored.load_state_dict(state)
    assert torch.equal(restored.predict_proba(phantoms.images), proba)


def test_fit_without_validation(phantoms: ImageSet) -> None:
    model = BrainCNN({"epochs": 2, "batch_size": 16, "class_weights": True})
    model.fit(phantoms.subset(range(40)), None, RunContext(device="cpu"))
    assert model.history["epochs_run"] == 2 and model.history["val_score"] == []
    assert model.predict_proba(phantoms.images[:5]).shape == (5, 2)


def test_brain_cnn_learns_bright_vs_dark() -> None:
    g = torch.Generator().manual_seed(0)
    n = 96
    labels = torch.arange(n) % 2
    level = torch.where(labels == 1, 0.7, 0.3).view(-1, 1, 1, 1)
    images = (level + 0.1 * torch.randn(n, 1, 32, 32, generator=g)).clamp(0, 1)
    data = ImageSet(images=images, labels=labels, class_names=["dark", "bright"])
    train, test = data.subset(range(64)), data.subset(range(64, n))
    model = BrainCNN({"epochs": 6, "batch_size": 16, "augment": False})
    model.fit(train, test, RunContext(device="cpu", seed=1))
    accuracy = float((model.predict(test.images) == test.labels).float().mean())
    assert accuracy > 0.8, accuracy


def test_resnet_depth_from_params() -> None:
    assert ResNet({"depth": 50}).arch() == "resnet50"
    with pytest.raises(PluginError, match="depth"):
        ResNet({"depth": 19})


def _hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the torch hub cache at ``tmp_path/torch/hub``; returns its checkpoints folder."""
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # no earlier set_dir in the way
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    assert Path(torch.hub.get_dir()) / "checkpoints" == folder
    return folder


def test_imagenet_weights_from_local_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision

    folder = _hub(tmp_path, monkeypatch)
    folder.mkdir(parents=True)
    reference = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(reference, folder / RESNET18_FILE)

    model = ResNet({"weights": "imagenet"})
    assert model.weights_file() == folder / RESNET18_FILE
    net = model.build_network(2, 1, pretrained=True).net
    expected_stem = reference["conv1.weight"].sum(1, keepdim=True)  # RGB kernels summed
    assert torch.allclose(net.conv1.weight, expected_stem)
    assert torch.equal(net.layer3[1].conv2.weight, reference["layer3.1.conv2.weight"])
    assert net.fc.weight.shape == (2, 512)  # a new head for the data set's classes


def test_imagenet_weights_absent_names_file_and_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, phantoms: ImageSet
) -> None:
    folder = _hub(tmp_path, monkeypatch)
    model = ResNet({"weights": "imagenet", "epochs": 1})
    with pytest.raises(ConfigError, match=re.escape(RESNET18_FILE)) as info:
        model.fit(phantoms.subset(range(8)), None, RunContext(device="cpu"))
    assert str(folder) in info.value.message + (info.value.hint or "")
    assert not folder.exists()  # nothing was downloaded


def test_weights_path(tmp_path: Path, phantoms: ImageSet) -> None:
    import torchvision

    good = tmp_path / "mobilenet.pth"
    reference = torchvision.models.mobilenet_v2(weights=None).state_dict()
    torch.save(reference, good)
    net = MobileNetV2({"weights": str(good)}).build_network(3, 1, pretrained=True).net
    assert torch.allclose(net.features[0][0].weight, reference["features.0.0.weight"].sum(1, True))

    run = RunContext(device="cpu")
    train = phantoms.subset(range(8))
    missing = tmp_path / "absent.pth"
    with pytest.raises(ConfigError, match=r"absent\.pth"):
        ResNet({"weights": str(missing)}).fit(train, None, run)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match=r"garbage\.pth"):
        ResNet({"weights": str(garbage)}).fit(train, None, run)
    # a resnet18 state dict does not fit resnet34
    resnet18 = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet18)
    with pytest.raises(ConfigError, match=r"resnet18\.pth does not fit resnet34"):
        ResNet({"weights": str(resnet18), "depth": 34}).fit(train, None, run)


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


@pytest.mark.parametrize("cls", [ResNet, MobileNetV2, BrainCNN], ids=lambda c: c.name)
def test_conformance(cls: type) -> None:
    check_classifier(cls)
