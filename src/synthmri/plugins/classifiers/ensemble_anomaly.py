"""``ensemble_anomaly``: tumour detection without tumour labels from several healthy
models at once.

Each member is a reconstruction-based anomaly classifier (``pca_anomaly``, ``dae_anomaly``,
``vae_anomaly``, ``diffusion_anomaly``, or a third-party one built on the same base), found
through the registry and trained and calibrated exactly as it would be alone. A linear
model of healthy slices and a denoising autoencoder need not err on the same slices, so
their evidence can add up (``docs/results.md``: it does on phantoms; a member that fails
everywhere pulls the average down):

- **score**: each member's tumour score in units of its healthy calibration slices' scores
  (minus their median, over their standard deviation, at least ``SPREAD_FLOOR`` of the
  spread over all its calibration slices; the calibration scores are the member's own,
  cross-fitted where it uses z-maps), averaged over the members; the threshold is then set
  on the same slices by the calibration mode (default: at least 90 % validation
  sensitivity);
- **masks**: on a slice called tumour, the largest connected region where the members'
  error maps, each in units of its own pixel threshold, average above 1 (inside every
  member's head mask, cleaned by an opening and a minimum area like the members' maps).

The validation part chooses nothing beyond what the members choose and the threshold.
Where this is not the VAE/GAN study: the study scored one model at a time.

Importing this module loads no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, Field

from synthmri import hookimpl
from synthmri.core.errors import DataError, PluginError
from synthmri.core.interfaces import Classifier, StrictParams
from synthmri.core.operating_point import (
    Calibration,
    HealthyClass,
    TargetSensitivity,
    TargetSpecificity,
    rates,
)
from synthmri.plugins.classifiers._anomaly import ReconstructionAnomaly, largest_component
from synthmri.plugins.classifiers._anomaly_rules import (
    calibrated_threshold,
    class_probabilities,
    tumour_probability,
)

if TYPE_CHECKING:
    from torch import Tensor

    from synthmri.core.interfaces import ImageSet
    from synthmri.core.training import RunContext

__all__ = ["EnsembleAnomaly", "EnsembleAnomalyParams", "Member"]

#: a member's healthy score spread counts as at least this share of its spread over all
#: calibration slices (0.19-0.28 on the phantoms' validation parts, so it does not bind there)
SPREAD_FLOOR = 0.05


class Member(StrictParams):
    """One member of the ensemble: an anomaly classifier plugin and its params."""

    plugin: str = Field(description="a reconstruction-based anomaly classifier plugin")
    params: dict[str, Any] = Field(default_factory=dict, description="its params")


class EnsembleAnomalyParams(StrictParams):
    """Params of ``ensemble_anomaly``: the members and the ensemble's calibration."""

    members: list[Member] = Field(
        default_factory=lambda: [Member(plugin="pca_anomaly"), Member(plugin="dae_anomaly")],
        min_length=2,
        description="the anomaly classifiers combined (two or more; default: pca_anomaly "
        "and dae_anomaly, each with its own defaults; their normal_class is the ensemble's "
        "and their figures are off unless set)",
    )
    normal_class: HealthyClass = "normal"
    calibration: Calibration = Field(
        "sensitivity",
        description="how the combined score's threshold is set on the calibration slices "
        "(as in vae_anomaly)",
    )
    target_sensitivity: TargetSensitivity = 0.9
    target_specificity: TargetSpecificity = 0.9
    tumor_index: float = Field(
        0.0, description="the combined score's threshold with calibration none"
    )
    clean_radius: int = Field(1, ge=0, description="masks: opening radius in pixels (0 = off)")
    clean_min_area: float = Field(
        0.001, ge=0, lt=1, description="masks: smaller regions (share of the image) dropped"
    )


class EnsembleAnomaly(Classifier):
    """Several healthy models; their standardised tumour scores averaged."""

    name: ClassVar[str] = "ensemble_anomaly"
    description: ClassVar[str] = (
        "several anomaly classifiers (e.g. PCA + DAE), their healthy-standardised scores "
        "averaged; masks from their mean error map"
    )
    Params = EnsembleAnomalyParams
    localises = True
    quick_params: ClassVar[dict[str, Any]] = {
        "members": [
            {"plugin": "pca_anomaly", "params": {"components": 4, "figures": False}},
            {"plugin": "pca_anomaly", "params": {"components": 2, "figures": False}},
        ]
    }

    def __init__(self, params: BaseModel | Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        self.members = [self._member(spec) for spec in self.params.members]
        self.class_names: list[str] = []
        self.normal_index = 0
        self.centres = np.zeros(len(self.members))  # healthy median score per member
        self.scales = np.ones(len(self.members))  # healthy score spread per member
        self.score_threshold = 0.0
        self.score_scale = 1.0
        self.operating_point: dict[str, Any] = {}

    def _member(self, spec: Member) -> ReconstructionAnomaly:
        from synthmri.core.plugins import get_plugin

        cls = get_plugin("classifier", spec.plugin)
        if not (isinstance(cls, type) and issubclass(cls, ReconstructionAnomaly)):
            raise PluginError(
                f"{self.name}: member {spec.plugin!r} is not a reconstruction-based anomaly "
                "classifier",
                hint="members are plugins such as pca_anomaly, dae_anomaly or vae_anomaly",
            )
        params = {"figures": False, **spec.params, "normal_class": self.params.normal_class}
        return cls(params)

    def fit(self, train: ImageSet, val: ImageSet | None, run: RunContext) -> None:
        """Fit and calibrate every member, then standardise their calibration scores and
        set the combined score's threshold on the same slices."""
        for member in self.members:
            member.fit(train, val, run)
        first = self.members[0]
        self.class_names, self.normal_index = list(first.class_names), first.normal_index
        is_normal = self._calibration_labels(val, len(first.calibration_scores))
        healthy = [m.calibration_scores[is_normal] for m in self.members]
        self.centres = np.array([float(np.median(h)) for h in healthy])
        spreads = np.array([np.std(h) for h in healthy])
        overall = np.array([np.std(m.calibration_scores) for m in self.members])
        # a member whose healthy slices all score alike must not outweigh the others
        self.scales = np.maximum(spreads, SPREAD_FLOOR * overall).clip(min=1e-12)
        scores = self._combined([m.calibration_scores for m in self.members])
        mode, self.score_threshold = calibrated_threshold(self.params, scores, is_normal)
        spread = float(np.std(scores))
        self.score_scale = spread / 2 if spread > 0 else 1e-3
        reached = rates(scores, ~is_normal, self.score_threshold)
        self.operating_point = {
            "calibration": mode,
            "calibrated_on": first.calibrated_on,
            "score_threshold": self.score_threshold,
            "val_sensitivity": reached["sensitivity"],
            "val_specificity": reached["specificity"],
            "val_auc": reached["auc"],
            "member_val_auc": [m.operating_point.get("val_auc") for m in self.members],
            "member_healthy_spread": [float(r) for r in spreads / np.maximum(overall, 1e-12)],
        }
        run.log(**{f"ensemble_{k}": v for k, v in self.operating_point.items()})

    def _calibration_labels(self, val: ImageSet | None, n: int) -> np.ndarray:
        """Which calibration slices are healthy: the validation part's labels where the
        members calibrated there, else all (their healthy training slices)."""
        calibrated = {m.calibrated_on for m in self.members}
        if len(calibrated) != 1:
            raise DataError(f"{self.name}: the members calibrated on different slices")
        if calibrated == {"validation"}:
            assert val is not None and val.labels is not None
            is_normal = (val.labels == self.normal_index).numpy()
        else:
            is_normal = np.ones(n, bool)
        if any(len(m.calibration_scores) != len(is_normal) for m in self.members):
            raise DataError(f"{self.name}: the members calibrated on different slices")
        return is_normal

    def _combined(self, member_scores: list[np.ndarray]) -> np.ndarray:
        stacked = np.stack([np.asarray(s, np.float64) for s in member_scores])
        return ((stacked - self.centres[:, None]) / self.scales[:, None]).mean(0)

    def _check_trained(self) -> None:
        if not self.class_names:
            raise PluginError(f"{self.name}: not trained (call fit or load_state_dict first)")

    def anomaly_scores(self, images: Tensor) -> np.ndarray:
        """The combined anomaly scores (higher = more anomalous) of ``images``."""
        self._check_trained()
        return self._combined([m.anomaly_scores(images) for m in self.members])

    def predict_proba(self, images: Tensor) -> Tensor:
        """Class probabilities ``[N, n_classes]``: ``sigmoid((score - threshold) / scale)``
        is the tumour probability, shared by the non-normal classes."""
        tumour = tumour_probability(
            self.anomaly_scores(images), self.score_threshold, self.score_scale
        )
        return class_probabilities(tumour, len(self.class_names), self.normal_index)

    def predict_masks(self, images: Tensor) -> Tensor:
        """On each slice called tumour, the largest region where the members' error maps
        (each over its pixel threshold) average above 1; empty elsewhere."""
        import torch

        from synthmri.nn.anomaly_maps import clean_binary

        self._check_trained()
        maps = [m.error_maps(images) for m in self.members]
        scores = [m.score_errors(*mp).scores for m, mp in zip(self.members, maps, strict=True)]
        called = self._combined(scores) > self.score_threshold
        units = [err / m.pixel_threshold for m, (err, _) in zip(self.members, maps, strict=True)]
        head = torch.stack([fg for _, fg in maps]).all(0)
        binary = (torch.stack(units).mean(0) > 1.0) & head
        h, w = binary.shape[-2:]
        p = self.params
        cand = clean_binary(binary, p.clean_radius, round(p.clean_min_area * h * w))[:, 0].numpy()
        masks = torch.zeros(binary.shape, dtype=torch.float32)
        for i in np.flatnonzero(called):
            masks[i, 0] = torch.from_numpy(largest_component(cand[i]).astype(np.float32))
        return masks

    def validation_score(self) -> float | None:
        """The validation AUC of the combined scores (None when calibrated elsewhere)."""
        op = self.operating_point
        return op.get("val_auc") if op.get("calibrated_on") == "validation" else None

    def state_dict(self) -> dict[str, Any]:
        """The members' states and the ensemble's standardisation and threshold."""
        if not self.class_names:
            return {}
        return {
            "plugin": self.name,
            "params": self.params.model_dump(mode="json"),
            "members": [m.state_dict() for m in self.members],
            "class_names": list(self.class_names),
            "normal_index": self.normal_index,
            "centres": [float(c) for c in self.centres],
            "scales": [float(s) for s in self.scales],
            "score_threshold": self.score_threshold,
            "score_scale": self.score_scale,
            "operating_point": dict(self.operating_point),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Rebuild the members and restore the combined decision."""
        need = ("members", "class_names", "centres", "scales", "score_threshold")
        missing = [k for k in need if k not in state]
        if missing:
            raise DataError(
                f"{self.name}: not a trained {self.name} state (missing {', '.join(missing)})"
            )
        if "params" in state:
            self.params = self.parse_params(dict(state["params"]))
            self.members = [self._member(spec) for spec in self.params.members]
        if len(state["members"]) != len(self.members):
            raise DataError(
                f"{self.name}: the state has {len(state['members'])} members, the params "
                f"{len(self.members)}"
            )
        for member, member_state in zip(self.members, state["members"], strict=True):
            member.load_state_dict(member_state)
        self.class_names = list(state["class_names"])
        self.normal_index = int(state.get("normal_index", 0))
        self.centres = np.asarray(state["centres"], np.float64)
        self.scales = np.asarray(state["scales"], np.float64)
        self.score_threshold = float(state["score_threshold"])
        self.score_scale = float(state.get("score_scale", 1.0))
        self.operating_point = dict(state.get("operating_point", {}))


@hookimpl
def synthmri_register_classifiers(register: Any) -> None:
    """Register ``ensemble_anomaly``."""
    register(EnsembleAnomaly)
