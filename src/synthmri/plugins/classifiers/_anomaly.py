"""The base of the reconstruction-based anomaly classifiers: a model of healthy slices only,
its reconstruction error, and the same decision for every such model.

A subclass (``vae_anomaly``, ``diffusion_anomaly``, ``dae_anomaly``) provides the
reconstruction model:

- ``Params``: extends ``AnomalyParams`` (error map, decision method, calibration: see
  ``_anomaly_rules.py``) with the model's training params;
- ``_train(healthy, run)``: train the model on the normal-class training slices (an
  ``ImageSet``; the other class is never looked at);
- ``_reconstruct(x)``: reconstructions ``[N, C, S, S]`` in [0, 1] on the CPU of slices
  already resized to the training size;
- ``_is_trained()``, ``_model_state()`` (plain dict of the model's config and weights, kept
  under ``model_keys`` in the state) and ``_load_model_state(state)``.

The base does the rest: the normal-only rule (``fit``), the error maps (absolute or SSIM,
smoothed, inside the head, z-maps: ``synthmri.nn.anomaly_maps``), the choice of the map
and the thresholds on the validation part only (``recalibrate``, ``calibrate``), the four
decision methods (``score_errors``), probabilities, masks, figures, and the saved state of
the decision. The methods and the deviations from the VAE/GAN study are described in
``synthmri.plugins.classifiers.vae_anomaly``.

Importing this module loads no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel

from synthmri.core.errors import DataError, PluginError
from synthmri.core.interfaces import Classifier, ImageSet
from synthmri.core.operating_point import NORMAL_FALLBACKS, healthy_index, rates
from synthmri.plugins.classifiers import _anomaly_figures
from synthmri.plugins.classifiers._anomaly_rules import (
    METHODS,
    TIE,
    AnomalyParams,
    AnomalyScores,
    calibrated_threshold,
    class_probabilities,
    crossfit_folds,
    dbscan_clusters,
    fit_global_centroids,
    gaussian_smooth,
    global_distances,
    kmeans_clusters,
    largest_component,
    pooled,
    tumour_probability,
)
from synthmri.plugins.classifiers._base import check_val_matches, input_images

if TYPE_CHECKING:
    from pathlib import Path

    from torch import Tensor

    from synthmri.core.training import RunContext
    from synthmri.nn.anomaly_maps import PixelStats

__all__ = [
    "METHODS",
    "NORMAL_FALLBACKS",
    "AnomalyParams",
    "AnomalyScores",
    "ReconstructionAnomaly",
    "crossfit_folds",
    "gaussian_smooth",
    "largest_component",
]


class ReconstructionAnomaly(Classifier):
    """A model of healthy slices; tumours are found from its reconstruction error."""

    Params = AnomalyParams
    localises = True
    #: the keys of the state that hold the reconstruction model (``_model_state``)
    model_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: BaseModel | Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        self.class_names: list[str] = []
        self.normal_index = 0
        self.size = 0
        self.channels = 1
        self.pixel_threshold = 0.0
        self.score_threshold = 0.0
        self.score_scale = 1.0
        self.global_centroids: Tensor | None = None  # [K, cells] normal centroids only
        self.calibrated_on = ""
        self.history: dict[str, Any] = {}
        #: the error map in use (``error_measure`` / ``normalise`` resolved in ``fit``)
        measure = self.params.error_measure
        self.measure = "absolute" if measure == "auto" else measure
        self.pixel_stats: PixelStats | None = None  # healthy per-pixel error stats (zmap)
        #: the calibrated operating point on the validation part (threshold, sensitivity, ...)
        self.operating_point: dict[str, Any] = {}
        #: validation AUC of each error map tried when error_measure / normalise is auto
        self.selection: dict[str, float] = {}
        #: the scores of the calibration slices (cross-fitted), as the threshold saw them
        self.calibration_scores = np.zeros(0)

    # ------------------------------------------------------------ the model (subclasses)

    def _train(self, healthy: ImageSet, run: RunContext) -> None:
        """Train the reconstruction model on the healthy training slices."""
        raise NotImplementedError

    def _reconstruct(self, x: Tensor) -> Tensor:
        """Reconstructions of ``x`` (resized to the training size; at least one slice)."""
        raise NotImplementedError

    def _is_trained(self) -> bool:
        raise NotImplementedError

    def _model_state(self) -> dict[str, Any]:
        """The model's part of the state: one entry per ``model_keys``."""
        raise NotImplementedError

    def _load_model_state(self, state: Mapping[str, Any]) -> None:
        """Rebuild the model from its part of ``state`` (on the CPU)."""
        raise NotImplementedError

    def _check_trained(self) -> None:
        if not self._is_trained():
            raise PluginError(
                f"{self.name}: the classifier is not trained",
                hint="call fit() or load_state_dict() first",
            )

    # ------------------------------------------------------------ training

    def fit(self, train: ImageSet, val: ImageSet | None, run: RunContext) -> None:
        """Train the model on the normal training slices; choose the error map and
        calibrate the thresholds on ``val``."""
        if train.labels is None:
            raise DataError(
                f"{self.name}: the training images have no labels",
                hint="it needs to know which training slices are healthy",
            )
        names = list(train.class_names) or [str(i) for i in range(int(train.labels.max()) + 1)]
        if len(names) < 2:
            raise DataError(f"{self.name}: need at least 2 classes, got {names}")
        normal = healthy_index(names, self.params.normal_class, self.name)
        healthy = train.subset(train.labels == normal)
        if len(healthy) < 2:
            raise DataError(
                f"{self.name}: need at least 2 training slices of class {names[normal]!r}, "
                f"got {len(healthy)}"
            )
        if val is not None and len(val):
            check_val_matches(self.name, train, val, names)
        self.class_names, self.normal_index = names, normal
        self.size, self.channels = train.size, train.channels
        self._train(healthy, run)
        self.recalibrate(healthy, val, run)

    def recalibrate(self, healthy: ImageSet, val: ImageSet | None, run: RunContext) -> None:
        """Everything ``fit`` does after training the model, with the current params: choose
        the error map (``auto``) and set the thresholds on ``val`` (its healthy slices, and
        its tumour slices when it has them); ``healthy`` are the normal training slices.
        Public so that a benchmark can compare methods and options on one trained model."""
        self._check_trained()
        normal = self.normal_index
        has_val = (
            val is not None and len(val) > 0 and val.labels is not None
            and bool((val.labels == normal).any())
        )  # fmt: skip
        train_rec = None
        if self.params.method == "global_kmeans" or not has_val:
            train_rec = self.reconstruct(healthy.images)
        if has_val:
            assert val is not None and val.labels is not None
            cal_x, cal_rec = val.images, self.reconstruct(val.images)
            is_normal = (val.labels == normal).numpy()
            self.calibrated_on = "validation"
        else:
            assert train_rec is not None
            run.note(
                f"{self.name}: no healthy validation slices; thresholds come from the "
                "training slices (optimistic: expect more false positives on the test part)"
            )
            cal_x, cal_rec, is_normal = healthy.images, train_rec, np.ones(len(healthy), bool)
            self.calibrated_on = "train"
        both = bool(is_normal.any() and (~is_normal).any())
        p = self.params
        self.global_centroids = None
        measures = ["absolute", "ssim"] if p.error_measure == "auto" else [p.error_measure]
        norms = ["zmap", "none"] if p.normalise == "auto" else [p.normalise]
        if not both:  # nothing to choose by: the default deviations
            measures, norms = measures[:1], norms[:1]
        candidates = [(m, z) for m in measures for z in norms]
        groups = (val.groups if val is not None and has_val else healthy.groups) or []
        folds = crossfit_folds(groups, is_normal)

        def prepared(
            measure: str, norm: str
        ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
            """Calibration maps (cross-fitted z-maps) and, for global KMeans or without a
            validation part, the healthy training maps (else None, None)."""
            err, fg = self._prepare_maps(measure, norm, cal_x, cal_rec, is_normal, folds)
            if train_rec is None:
                return err, fg, None, None
            return err, fg, *self.error_maps(healthy.images, train_rec)

        self.selection = {}
        measure, norm = candidates[0]
        if len(candidates) > 1:
            for m, z in candidates:
                err, fg, tr_err, tr_fg = prepared(m, z)
                self.calibrate(err, fg, is_normal, train_err=tr_err, train_fg=tr_fg)
                self.selection[f"{m}/{z}"] = float(self.operating_point["val_auc"])
            best = max(self.selection, key=self.selection.get)  # type: ignore[arg-type]
            run.log(error_map_selection=self.selection, error_map=best)
            measure, norm = best.split("/")
        val_err, val_fg, train_err, train_fg = prepared(measure, norm)
        self.calibrate(val_err, val_fg, is_normal, train_err=train_err, train_fg=train_fg, run=run)
        if run.out_dir is not None and self.params.figures and self.calibrated_on == "validation":
            self._figures(val, val_err, val_fg, run)  # type: ignore[arg-type]

    def _prepare_maps(
        self,
        measure: str,
        norm: str,
        x: Tensor,
        recon: Tensor,
        is_normal: np.ndarray,
        folds: np.ndarray | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Use error map ``measure``; with ``norm == "zmap"`` fit the healthy per-pixel
        statistics on the ``is_normal`` slices of ``x`` (the calibration part; kept for new
        slices). Returns the calibration maps ``(errors, foreground)`` of ``x``: with a
        z-map and two ``folds`` (``crossfit_folds``), each slice is normalised by the
        statistics of the other fold's healthy slices, so the map choice and the thresholds
        see z-values as unseen slices get them, not those of slices that shaped the
        statistics."""
        import torch

        from synthmri.nn.anomaly_maps import pixel_stats, z_map

        self.measure, self.pixel_stats = measure, None
        raw, fg = self.error_maps(x, recon)
        if norm != "zmap":
            return raw, fg
        normal = torch.as_tensor(is_normal)

        def fit(keep: Tensor) -> PixelStats:
            p = self.params
            return pixel_stats(raw[keep], fg[keep], sigma=p.zmap_sigma, floor=p.zmap_floor)

        self.pixel_stats = fit(normal)
        if folds is None:
            return z_map(raw, self.pixel_stats) * fg, fg
        out = torch.empty_like(raw)
        for k in (0, 1):
            part = torch.as_tensor(folds == k)
            out[part] = z_map(raw[part], fit(normal & ~part)) * fg[part]
        return out, fg

    @property
    def normalisation(self) -> str:
        """``zmap`` when errors are normalised by healthy per-pixel statistics, else ``none``."""
        return "zmap" if self.pixel_stats is not None else "none"

    def calibrate(
        self,
        errors: Tensor,
        foreground: Tensor,
        is_normal: np.ndarray,
        *,
        train_err: Tensor | None = None,
        train_fg: Tensor | None = None,
        run: RunContext | None = None,
    ) -> None:
        """Set the pixel and score thresholds from calibration error maps (validation part).

        ``is_normal`` marks the healthy slices; ``train_err`` / ``train_fg`` (healthy
        training maps) are what ``global_kmeans`` clusters. Public so that benchmarks can
        switch methods without retraining the model. The operating point reached on these
        maps is kept in ``operating_point`` (and logged with ``run``).
        """
        import torch

        p = self.params
        healthy = errors[torch.as_tensor(is_normal)]
        inside = healthy[foreground[torch.as_tensor(is_normal)]]
        if inside.numel() == 0:
            inside = healthy.reshape(-1)
        self.pixel_threshold = max(
            float(np.percentile(inside.numpy().astype(np.float64), p.anomaly_threshold)), 1e-6
        )
        if p.method == "global_kmeans":
            ref_err = train_err if train_err is not None else healthy
            ref_fg = train_fg if train_fg is not None else foreground[torch.as_tensor(is_normal)]
            self._fit_global(ref_err, ref_fg)
        scores = self.calibration_scores = self.score_errors(errors, foreground).scores
        mode, self.score_threshold = self._calibrated(scores, is_normal, run)
        spread = float(np.std(scores))
        self.score_scale = spread / 2 if spread > 0 else max(abs(self.score_threshold), 1.0) * 1e-3
        reached = rates(scores, ~is_normal, self.score_threshold)
        self.operating_point = {
            "calibration": mode,
            "calibrated_on": self.calibrated_on or "given",
            "error_map": f"{self.measure}/{self.normalisation}",
            "pixel_threshold": self.pixel_threshold,
            "score_threshold": self.score_threshold,
            "val_sensitivity": reached["sensitivity"],
            "val_specificity": reached["specificity"],
            "val_auc": reached["auc"],
            "n_val_normal": reached["n_negative"],
            "n_val_tumour": reached["n_positive"],
        }
        if run is not None:
            run.log(score_scale=self.score_scale, **self.operating_point)

    def _calibrated(
        self, scores: np.ndarray, is_normal: np.ndarray, run: RunContext | None
    ) -> tuple[str, float]:
        """``(mode used, score threshold)``: the calibration mode after any fallback."""
        mode, threshold = calibrated_threshold(self.params, scores, is_normal)
        if mode != self.params.calibration and run is not None:
            run.note(
                f"{self.name}: calibration {self.params.calibration} needs normal and tumour "
                "validation slices; using target_specificity instead"
            )
        return mode, threshold

    def _fit_global(self, errors: Tensor, foreground: Tensor) -> None:
        maps = pooled(self._anomalous(errors, foreground), self.params.global_grid)
        self.global_centroids = fit_global_centroids(
            maps.numpy().astype(np.float64), self.params.global_clusters, self.params.alpha
        )

    # ------------------------------------------------------------ error maps and scores

    def _images(self, images: Tensor) -> Tensor:
        self._check_trained()
        return input_images(self.name, images, self.channels, self.size)

    def reconstruct(self, images: Tensor) -> Tensor:
        """The model's reconstructions of ``images`` (on the CPU)."""
        x = self._images(images)
        if x.shape[0] == 0:
            return x.clone()
        return self._reconstruct(x)

    def error_maps(self, images: Tensor, recon: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(errors, foreground)`` ``[N, 1, H, W]``: the error map in use (absolute
        ``|x - x_hat|`` or structural ``(1 - SSIM) / 2``, channel mean, smoothed), zero
        outside the head when ``foreground_only``, and with ``zmap`` normalisation in units
        of the healthy validation errors at each pixel; and the head mask (bool)."""
        import torch
        import torch.nn.functional as F

        from synthmri.nn.anomaly_maps import head_masks, match_intensity, ssim_error, z_map

        x = self._images(images)
        if recon is None:
            recon = self.reconstruct(x)
        p = self.params
        if p.foreground_only:
            if p.head_mask == "loader":
                fg = head_masks(x)
            else:
                fg = gaussian_smooth(x.mean(1, keepdim=True), 1.0) > p.foreground_threshold
            r = round(p.foreground_erode * self.size)
            if r > 0:  # erosion: a pixel stays head when its whole neighbourhood is head
                fg = ~(F.max_pool2d((~fg).float(), 2 * r + 1, stride=1, padding=r) > 0)
        else:
            fg = torch.ones(x.shape[0], 1, *x.shape[-2:], dtype=torch.bool)
        recon = recon.float()
        if p.match_intensity:
            recon = match_intensity(x, recon, fg)
        if self.measure == "ssim":
            raw = ssim_error(x, recon, kernel_size=p.ssim_window)
        else:
            raw = self._absolute_error(x, recon)
        err = gaussian_smooth(raw, p.smooth_sigma) * fg
        if self.pixel_stats is not None:
            err = z_map(err, self.pixel_stats) * fg
        return err, fg

    def _absolute_error(self, x: Tensor, recon: Tensor) -> Tensor:
        """The absolute error map ``[N, 1, H, W]`` (a model that predicts the map itself
        returns it here)."""
        from synthmri.nn.anomaly_maps import absolute_error

        return absolute_error(x, recon)

    def _anomalous(self, errors: Tensor, foreground: Tensor) -> Tensor:
        """Pixels above the pixel threshold inside the head, morphologically cleaned."""
        from synthmri.nn.anomaly_maps import clean_binary

        p = self.params
        binary = (errors > self.pixel_threshold) & foreground
        min_pixels = round(p.clean_min_area * errors.shape[-1] * errors.shape[-2])
        return clean_binary(binary, p.clean_radius, min_pixels)

    def score_errors(self, errors: Tensor, foreground: Tensor) -> AnomalyScores:
        """Tumour scores (higher = more anomalous) of error maps, by the chosen method."""
        errors = errors.float()
        anomalous = self._anomalous(errors, foreground)
        n, area = errors.shape[0], float(errors.shape[-1] * errors.shape[-2])
        tie = TIE * (errors / self.pixel_threshold).clamp(max=1.0).flatten(1).mean(1)
        tie = tie.double().numpy()
        method = self.params.method
        candidates = anomalous
        if n == 0:
            return AnomalyScores(np.zeros(0), anomalous, candidates)
        if method == "giaem":
            base = anomalous.flatten(1).sum(1).double().numpy() / area
        elif method == "dbscan":
            sizes, candidates = dbscan_clusters(
                errors, anomalous, self.pixel_threshold, self.params
            )
            base = sizes / area
        elif method == "kmeans":
            base, candidates = kmeans_clusters(
                errors, foreground, anomalous, self.pixel_threshold,
                self.params.kmeans_position_weight,
            )  # fmt: skip
        else:
            if self.global_centroids is None:
                raise PluginError(f"{self.name}: global_kmeans has no clusters (fit first)")
            base, candidates = global_distances(
                anomalous, self.global_centroids, self.params.global_grid
            )
        return AnomalyScores(base + tie, anomalous, candidates)

    # ------------------------------------------------------------ prediction

    def tumor_probability(self, scores: np.ndarray) -> np.ndarray:
        """``sigmoid((score - threshold) / scale)``: 0.5 at the calibrated threshold."""
        return tumour_probability(scores, self.score_threshold, self.score_scale)

    def _proba(self, scores: np.ndarray) -> Tensor:
        return class_probabilities(
            self.tumor_probability(scores), len(self.class_names), self.normal_index
        )

    def validation_score(self) -> float | None:
        """The validation AUC of the calibrated scores (None when calibrated elsewhere)."""
        op = self.operating_point
        return op.get("val_auc") if op.get("calibrated_on") == "validation" else None

    def predict_proba(self, images: Tensor) -> Tensor:
        """Class probabilities ``[N, n_classes]``: the non-normal classes share the tumour
        probability (a monotone map of the anomaly score, 0.5 at the threshold)."""
        import torch

        self._check_trained()
        if images.shape[0] == 0:
            self._images(images)
            return torch.empty(0, len(self.class_names))
        return self._proba(self.score_errors(*self.error_maps(images)).scores)

    def anomaly_scores(self, images: Tensor) -> np.ndarray:
        """The raw anomaly scores (higher = more anomalous) of ``images``."""
        return self.score_errors(*self.error_maps(images)).scores

    def predict_masks(self, images: Tensor) -> Tensor:
        """Each image's largest anomalous cluster ``[N, 1, H, W]`` (0/1; empty when the
        image is judged normal)."""
        import torch

        x = self._images(images)
        if x.shape[0] == 0:
            return torch.zeros(0, 1, self.size, self.size)
        result = self.score_errors(*self.error_maps(x))
        return self._masks(result)

    def _masks(self, result: AnomalyScores) -> Tensor:
        import torch

        masks = torch.zeros(result.candidates.shape, dtype=torch.float32)
        tumour = result.scores > self.score_threshold
        cand = result.candidates[:, 0].numpy()
        for i in np.flatnonzero(tumour):
            masks[i, 0] = torch.from_numpy(largest_component(cand[i]).astype(np.float32))
        return masks

    # ------------------------------------------------------------ figures

    def _figures(self, val: ImageSet, errors: Tensor, fg: Tensor, run: RunContext) -> None:
        """TP / FP / TN / FN examples of the validation part, and the score histogram."""
        _anomaly_figures.validation_figures(self, val, errors, fg, run)

    def case_figure(self, test: ImageSet, run: RunContext, name: str = "") -> Path | None:
        """Save, for a labelled (test) set, the best and worst cases by anomaly score against
        the label: the tumour slice with the highest and the lowest score, the normal slice
        with the lowest and the highest; per case the slice, the error map (a z-map with
        ``zmap``), the detected region and the true mask. Returns the figure's path (None
        without a run directory).

        Evaluator-free: ``predict_proba`` never sees labels or masks and has no run
        context, so the pipeline cannot draw this; ``benchmarks/anomaly_methods.py`` calls
        it on the test part after ``fit`` (which saw only train and val)."""
        return _anomaly_figures.case_figure(self, test, run, name)

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """The model's config and weights, thresholds, method, classes (empty before
        ``fit``)."""
        import torch

        if not self._is_trained():
            return {}
        state: dict[str, Any] = {
            "plugin": self.name,
            "params": self.params.model_dump(mode="json"),
            **self._model_state(),
            "class_names": list(self.class_names),
            "normal_index": self.normal_index,
            "size": self.size,
            "channels": self.channels,
            "method": self.params.method,
            "pixel_threshold": self.pixel_threshold,
            "score_threshold": self.score_threshold,
            "score_scale": self.score_scale,
            "calibrated_on": self.calibrated_on,
            "measure": self.measure,
            "operating_point": dict(self.operating_point),
            "calibration_scores": torch.from_numpy(self.calibration_scores.copy()),
        }
        if self.global_centroids is not None:
            state["global_centroids"] = self.global_centroids.clone()
        if self.pixel_stats is not None:
            state["pixel_stats"] = self.pixel_stats.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Rebuild the model and restore the calibrated decision (on the CPU)."""
        import torch

        from synthmri.nn.anomaly_maps import PixelStats

        need = (
            *self.model_keys,
            "class_names",
            "size",
            "channels",
            "pixel_threshold",
            "score_threshold",
        )
        missing = [k for k in need if k not in state]
        if missing:
            raise DataError(
                f"{self.name}: not a trained {self.name} state (missing {', '.join(missing)})"
            )
        if state.get("plugin", self.name) != self.name:
            raise DataError(f"{self.name}: the state belongs to {state['plugin']!r}")
        if "params" in state:
            self.params = self.parse_params(dict(state["params"]))
        self._load_model_state(state)
        self.class_names = list(state["class_names"])
        self.normal_index = int(state.get("normal_index", 0))
        self.size, self.channels = int(state["size"]), int(state["channels"])
        self.pixel_threshold = float(state["pixel_threshold"])
        self.score_threshold = float(state["score_threshold"])
        self.score_scale = float(state.get("score_scale", 1.0))
        self.calibrated_on = str(state.get("calibrated_on", ""))
        cent = state.get("global_centroids")
        self.global_centroids = None if cent is None else torch.as_tensor(cent).float()
        self.measure = str(state.get("measure", "absolute"))
        if self.measure not in ("absolute", "ssim"):
            raise DataError(f"{self.name}: unknown error map {self.measure!r} in the state")
        stats = state.get("pixel_stats")
        self.pixel_stats = None if stats is None else PixelStats.from_state(dict(stats))
        self.operating_point = dict(state.get("operating_point", {}))
        scores = state.get("calibration_scores", [])
        self.calibration_scores = torch.as_tensor(scores).double().numpy().reshape(-1)
