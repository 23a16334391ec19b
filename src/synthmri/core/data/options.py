"""The loader's options as one model: the recipe's ``data`` section extends it.

``load_images(path, options, **overrides)`` takes a :class:`LoadOptions` (or any subclass,
such as the recipe's ``DataConfig``); a new option is declared here once and reaches the
loader, the recipe schema and ``--set data.<option>=...`` together.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from synthmri.core.errors import ConfigError
from synthmri.core.interfaces import format_validation_error

__all__ = ["LAYOUTS", "MAX_SIZE", "Layout", "LoadOptions"]

Layout = Literal["auto", "class_folders", "image_mask", "nifti"]
#: the largest side length images are preprocessed to
MAX_SIZE = 1024
LAYOUTS: tuple[str, ...] = get_args(Layout)


class LoadOptions(BaseModel):
    """How :func:`~synthmri.core.data.load_images` reads and preprocesses a folder."""

    model_config = ConfigDict(extra="forbid")

    layout: Layout = Field("auto", description="auto, class_folders, image_mask or nifti")
    size: int = Field(
        64, ge=4, le=MAX_SIZE, description="side length in pixels after preprocessing"
    )
    channel: int | None = Field(None, ge=0, description="take this channel (else luminance)")
    crop_foreground: bool = Field(True, description="crop to the head's bounding box first")
    classes: list[str] | None = Field(None, description="class folders to use, in label order")
    on_bad_file: Literal["error", "skip"] = Field(
        "error", description="error: stop at an unreadable file; skip: list it and go on"
    )
    min_brain_fraction: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="drop slices (NIfTI) and images (every layout) with less brain than this "
        "share of pixels; 0 keeps all",
    )
    near_duplicate_threshold: float = Field(
        0.98,
        ge=0.0,
        description="thumbnail correlation that makes two images one duplicate group "
        "(> 1: byte-identical files only)",
    )
    near_duplicate_aligned: float = Field(
        0.93,
        ge=0.0,
        description="also one duplicate group: re-cropped, zoomed, slightly rotated or "
        "mirrored copies whose thumbnails, once aligned, correlate this much inside the "
        "head (> 1: off)",
    )

    @classmethod
    def build(cls, options: LoadOptions | None = None, **overrides: Any) -> LoadOptions:
        """The loader options of ``options`` (a subclass's extra fields dropped) with
        ``overrides`` applied, validated; a bad value is a ConfigError naming the field."""
        base = {} if options is None else options.model_dump(include=set(cls.model_fields))
        try:
            return cls.model_validate({**base, **overrides})
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc)) from None
