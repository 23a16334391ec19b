"""``dae_anomaly``: tumour detection without tumour labels, from a denoising autoencoder's
repair of each slice (Kascenas, Pugeault & O'Neil, MIDL 2022).

A UNet (MONAI) learns, on the normal-class training slices only, to remove coarse noise
(Gaussian noise on a coarse grid, upsampled and added inside the head:
``synthmri.nn.dae``). What it has learnt to undo is a smooth, blob-sized deviation from
healthy anatomy, so on a tumour slice (given without noise) it returns a healthy-looking
slice, and ``|x - repaired|`` shows the tumour; unlike a VAE it keeps the fine anatomy of
the slice through its skip connections, so healthy tissue leaves little error. The repaired
slice is the reconstruction that the ``vae_anomaly`` decision uses unchanged (base
``ReconstructionAnomaly``, ``_anomaly.py``): the same error maps (absolute or SSIM, z-maps,
inside the head, cleaned), the four decision methods and the calibration on the validation
part only.

Beyond the paper, ``corruption`` can also teach it foreign patches (sharp-edged deviations)
or inpainting (RIAD-style: cells of the slice removed and filled from the rest, the repair
filling every cell in turn, so no pixel is repaired from itself); ``docs/results.md`` has
what validation preferred on each data set. ``objective: localise`` trains the same UNet on
a self-supervised task instead of a repair (foreign patch interpolation, Tan et al., MELBA
2022): to predict, per pixel, the weight with which a patch of another healthy slice was
blended in; on a new slice that prediction is the error map, and the rest of the decision
is unchanged. ``out_conv`` ends the UNet with a 1 x 1 convolution from its first-level
maps: MONAI's UNet instance-normalises its last up-convolution, and with one output channel
some trainings never learnt to denoise (``docs/results.md``).

Where it deviates from the paper: a narrower UNet sized for a CPU (``channels``) and fewer
steps; Adam with a cosine decay of the learning rate; the head is the data loader's mask
(the paper's data were skull-stripped, its foreground the non-zero voxels); the paper's
median filter and connected-component post-processing are the base's Gaussian smoothing,
opening and eroded head mask.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from synthmri import hookimpl
from synthmri.core.errors import DataError
from synthmri.plugins.classifiers._anomaly import AnomalyParams, ReconstructionAnomaly

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from synthmri.core.interfaces import ImageSet
    from synthmri.core.training import RunContext

__all__ = ["DAEAnomaly", "DAEAnomalyParams"]


class DAEAnomalyParams(AnomalyParams):
    """Params of ``dae_anomaly``: the denoising autoencoder's and the decision's (shared
    with ``vae_anomaly``)."""

    iterations: int = Field(1000, ge=1, description="UNet training steps (minibatches)")
    batch_size: int = Field(16, ge=1, description="healthy slices per step")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate (cosine decay to 0)")
    channels: list[int] = Field(
        [16, 32, 64, 128], min_length=2, description="UNet channels per level (stride 2 between)"
    )
    res_units: int = Field(1, ge=0, description="residual units per UNet block")
    residual: bool = Field(
        False,
        description="learn the correction (output = input + UNet(input)) instead of the "
        "slice, so the slice's intensities reach the output past the UNet's instance norms",
    )
    out_conv: bool = Field(
        False,
        description="end the UNet at channels[0] maps and add a 1 x 1 convolution to the "
        "output, so the output is not built from one instance-normalised map (always on "
        "with objective localise)",
    )
    restarts: int = Field(
        1,
        ge=1,
        description="UNets trained (seeds: the run's, +1, ...); the one whose calibration "
        "reaches the highest validation AUC is kept (one training can fail the task)",
    )
    noise_resolution: list[Annotated[int, Field(ge=1)]] = Field(
        [16],
        min_length=1,
        description="side of the grid the noise is drawn on before upsampling (paper: 16); "
        "with several, each step draws one",
    )
    noise_std: float = Field(0.2, gt=0, description="standard deviation of the noise (paper: 0.2)")
    corruption: Literal["noise", "patch", "both", "inpaint"] = Field(
        "noise",
        description="what the UNet learns to remove: coarse noise (the paper's), foreign "
        "patches (an elliptical patch of another healthy slice blended in), both (half "
        "of each batch each), or holes (inpaint: square cells set to 0, filled from the "
        "rest; the repair fills every cell in turn, RIAD-style)",
    )
    inpaint_grids: list[Annotated[int, Field(ge=1)]] = Field(
        [16, 8, 4],
        min_length=1,
        description="inpaint: sides of the grids of cells (16 at 64 px: 4 px cells); "
        "training draws one per step, the repair averages over all",
    )
    inpaint_sets: int = Field(
        3, ge=2, description="inpaint: disjoint cell sets per slice (one is a pass's holes)"
    )
    patch_radius: tuple[float, float] = Field(
        (0.05, 0.2), description="range of a foreign patch's semi-axes, as shares of the side"
    )

    objective: Literal["repair", "localise"] = Field(
        "repair",
        description="repair: the UNet returns the clean slice and the error is |slice - "
        "repair|; localise (foreign patch interpolation, Tan et al.): it learns to predict "
        "where and how strongly a foreign patch was blended in, and its prediction is the "
        "error map (corruption patch, absolute map)",
    )
    log_every: int = Field(50, ge=1, description="steps between log.jsonl lines (host syncs)")

    @field_validator("patch_radius")
    @classmethod
    def _ordered_shares(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1] <= 0.5:
            raise ValueError(f"need 0 < low <= high <= 0.5, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _localise_predicts_the_map(self) -> DAEAnomalyParams:
        if self.objective == "repair":
            return self
        wrong = {
            "corruption": "corruption" in self.model_fields_set and self.corruption != "patch",
            "error_measure": self.error_measure == "ssim",
            "residual": self.residual,
            "match_intensity": self.match_intensity,
        }
        if any(wrong.values()):
            bad = ", ".join(k for k, v in wrong.items() if v)
            raise ValueError(
                f"objective localise predicts the error map itself: {bad} do not apply "
                "(it learns foreign patches; the map is its prediction)"
            )
        # no validate_assignment loop: the resolved values are valid by construction
        self.__dict__.update(corruption="patch", error_measure="absolute")
        return self


class DAEAnomaly(ReconstructionAnomaly):
    """A denoising autoencoder of healthy slices; tumours are found from what it repairs."""

    name: ClassVar[str] = "dae_anomaly"
    description: ClassVar[str] = (
        "Denoising autoencoder (UNet, coarse noise) on healthy slices only; "
        "repair error -> tumour (4 methods)"
    )
    Params = DAEAnomalyParams
    model_keys: ClassVar[tuple[str, ...]] = ("dae",)
    quick_params: ClassVar[dict[str, Any]] = {
        "iterations": 4,
        "batch_size": 8,
        "channels": [4, 8],
        "noise_resolution": [4],
        "log_every": 2,
        "figures": False,
    }
    recon_batch: ClassVar[int] = 64

    def __init__(self, params: BaseModel | Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        self.net: nn.Module | None = None
        self.config: dict[str, Any] = {}
        self.device: torch.device | None = None

    def fit(self, train: ImageSet, val: ImageSet | None, run: RunContext) -> None:
        """As the base's; with ``restarts`` > 1 it trains that many UNets (seeds
        ``run.seed``, ``+ 1``, ...), each calibrated on ``val``, and keeps the one with the
        highest validation AUC: one training of the same settings can fail to learn the
        task (``docs/results.md``, "dae_anomaly")."""
        import copy

        if self.params.restarts == 1:
            super().fit(train, val, run)
            return
        best: tuple[float, dict[str, Any], dict[str, Any]] | None = None
        for i in range(self.params.restarts):
            attempt = copy.copy(run)
            attempt.seed = run.seed + i
            super().fit(train, val, attempt)
            auc = self.operating_point.get("val_auc")
            if auc is None:
                run.note(f"{self.name}: no validation AUC to choose by; kept restart 0")
                return
            run.log(dae_restart=i, dae_val_auc=auc)
            if best is None or auc > best[0]:
                best = (auc, self.state_dict(), self.history)
        assert best is not None
        self.load_state_dict(best[1])
        assert self.net is not None
        self.net.to(run.device)
        self.device, self.history = run.device, {**best[2], "restart_val_auc": best[0]}

    def _train(self, healthy: ImageSet, run: RunContext) -> None:
        """Train the UNet to remove coarse noise from the healthy training slices."""
        import time

        import torch

        from synthmri.nn.anomaly_maps import head_masks
        from synthmri.nn.dae import build_dae, train_dae

        p = self.params
        down = 2 ** (len(p.channels) - 1)
        if self.size % down:
            raise DataError(
                f"{self.name}: {self.size} px does not fit the UNet's {len(p.channels)} levels",
                hint=f"use a data.size divisible by {down}",
            )
        self.config = {
            "channels": list(p.channels),
            "res_units": p.res_units,
            "residual": p.residual,
            "image_channels": self.channels,
            "out_channels": 1 if p.objective == "localise" else self.channels,
            "out_conv": p.out_conv or p.objective == "localise",
        }
        run.log(dae_channels=list(p.channels), dae_iterations=p.iterations,
                dae_healthy_slices=len(healthy), dae_device=run.device.type)  # fmt: skip
        start = time.process_time()
        torch.manual_seed(run.seed)  # the UNet's initial weights: the same seed, the same model
        self.net = build_dae(self.config)
        history = train_dae(self.net, healthy.images, head_masks(healthy.images), p, run,
                            description=self.name)  # fmt: skip
        self.device = run.device
        self.history = {**history, "train_cpu_seconds": time.process_time() - start}

    def _is_trained(self) -> bool:
        return self.net is not None

    def _reconstruct(self, x: Tensor) -> Tensor:
        """The UNet's output for each (noise-free) slice, in [0, 1] on the CPU; with
        ``corruption: inpaint``, its fill of every cell in turn (``synthmri.nn.dae.inpaint``:
        one fixed deal of the cells, so a slice's repair does not depend on its batch); with
        ``objective: localise``, its predicted patch weights ``[N, 1, H, W]``."""
        import torch

        from synthmri.nn.dae import inpaint

        assert self.net is not None
        net, p = self.net, self.params
        device = self.device or torch.device("cpu")
        net.eval()
        outs = []
        with torch.no_grad():
            for i in range(0, x.shape[0], self.recon_batch):
                batch = x[i : i + self.recon_batch].float().to(device)
                if p.corruption == "inpaint":
                    out = inpaint(net, batch, p.inpaint_grids, p.inpaint_sets)
                elif p.objective == "localise":
                    out = torch.sigmoid(net(batch).float())
                else:
                    out = net(batch)
                outs.append(out.float().clamp(0, 1).cpu())
        return torch.cat(outs)

    def _absolute_error(self, x: Tensor, recon: Tensor) -> Tensor:
        """With ``objective: localise`` the UNet's prediction (the blend weight of a foreign
        patch at each pixel) is the map; else ``|x - repair|``."""
        if self.params.objective == "localise":
            return recon
        return super()._absolute_error(x, recon)

    def _model_state(self) -> dict[str, Any]:
        from synthmri.nn.tensors import cpu_state

        assert self.net is not None
        return {"dae": {"config": dict(self.config), "weights": cpu_state(self.net)}}

    def _load_model_state(self, state: Mapping[str, Any]) -> None:
        import torch

        from synthmri.nn.dae import build_dae

        try:
            config = dict(state["dae"]["config"])
            net = build_dae(config)
            net.load_state_dict(state["dae"]["weights"])
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise DataError(f"{self.name}: state does not fit this plugin ({exc})") from None
        self.config, self.net = config, net.eval()
        self.device = torch.device("cpu")


@hookimpl
def synthmri_register_classifiers(register: Any) -> None:
    """Register ``dae_anomaly``."""
    register(DAEAnomaly)
