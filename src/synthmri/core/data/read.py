"""Reading files: decoding a picture to one float32 channel, binarising a mask, reading a
NIfTI volume in RAS orientation; a file that cannot be used raises :class:`BadFile`."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from synthmri.core.errors import DataError

__all__ = ["BadFile", "axial_slice", "read_image", "read_mask", "read_volume"]

_BAD_FILE_EXCEPTIONS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError)


class BadFile(Exception):
    """A file that cannot be used; ``path`` is the culprit (the image or its mask).

    ``unreadable``: the file cannot be decoded ("cannot read image (reason)"); otherwise the
    reason is a whole sentence about an inconsistency (a mask of the wrong size, no mask).
    """

    def __init__(self, path: Path, reason: str, unreadable: bool = True) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason
        self.unreadable = unreadable

    def message(self) -> str:
        """The one-line error message naming the file."""
        if self.unreadable:
            return f"{self.path}: cannot read image ({self.reason})"
        return f"{self.path}: {self.reason}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not a recognised image format"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def _to_gray(im: Image.Image, channel: int | None, path: Path) -> np.ndarray:
    """One float32 channel of a PIL image: ``channel`` of a colour image, else luminance."""
    mode = im.mode
    if mode == "1":
        im = im.convert("L")
    elif mode in ("P", "PA"):
        im = im.convert("RGBA")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"):
        im = im.convert("RGB")
    elif mode == "La":
        im = im.convert("LA")
    arr = np.asarray(im)
    if arr.ndim == 2:
        out = arr.astype(np.float32)
        return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0) if out.dtype.kind == "f" else out
    arr = arr.astype(np.float32)
    if arr.shape[2] in (2, 4):  # alpha: composite over black (the MRI background)
        arr = arr[..., :-1] * (arr[..., -1:] / 255.0)
    if arr.shape[2] == 1:
        return arr[..., 0]
    if channel is not None:
        if channel >= arr.shape[2]:
            raise DataError(
                f"{path}: has {arr.shape[2]} colour channels, channel={channel} was asked",
                hint=f"use a channel from 0 to {arr.shape[2] - 1}, or none for luminance",
            )
        return arr[..., channel]
    return arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114


def read_image(
    path: Path, channel: int | None, draft: int | None
) -> tuple[np.ndarray, str, tuple[int, int], str]:
    """Decode ``path`` to a float32 [H, W] array; also the sha256, original (W, H), format."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadFile(path, _reason(exc)) from None
    if not data:
        raise BadFile(path, "empty file (0 bytes)")
    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as im:
            size = im.size
            fmt = im.format or ""
            if draft and fmt == "JPEG":
                gray = channel is None and im.mode in ("L", "RGB")
                im.draft("L" if gray else im.mode, (draft, draft))
            im.load()
            arr = _to_gray(im, channel, path)
    except DataError:
        raise
    except (*_BAD_FILE_EXCEPTIONS, Image.DecompressionBombError) as exc:
        raise BadFile(path, _reason(exc)) from None
    if arr.size == 0:
        raise BadFile(path, "image has no pixels")
    return arr, digest, size, fmt


def _binarise(arr: np.ndarray, fmt: str) -> np.ndarray:
    """A mask as bool: 0/1 and small label maps use > 0, 8-bit masks > 127 (JPEG-safe)."""
    top = float(arr.max()) if arr.size else 0.0
    if fmt == "JPEG" or top > 255:
        return arr > (127.0 if top <= 255 else top / 2)
    return arr > 0 if top <= 10 else arr > 127


def read_mask(path: Path, image_path: Path, image_size: tuple[int, int]) -> np.ndarray:
    """The mask at ``path`` as bool; a size other than the image's is a BadFile of the image."""
    arr, _, size, fmt = read_image(path, None, None)
    if size != image_size:
        raise BadFile(
            image_path,
            f"its mask {path} is {size[0]}x{size[1]} pixels but the image is "
            f"{image_size[0]}x{image_size[1]}",
            unreadable=False,
        )
    return _binarise(arr, fmt)


def read_volume(path: Path, channel: int | None) -> np.ndarray:
    """A NIfTI volume as a float32 [X, Y, Z] array reoriented to RAS (MONAI ``LoadImage``
    with the nibabel reader; the reorientation follows the affine it reports)."""
    import nibabel as nib
    from monai.transforms import LoadImage

    try:
        vol, meta = LoadImage(reader="NibabelReader", image_only=False, ensure_channel_first=True)(
            str(path)
        )
        arr = np.asarray(torch.as_tensor(vol).numpy(), dtype=np.float32)
        if arr.ndim == 3:  # a 2D NIfTI: one slice
            arr = arr[..., None]
        if arr.ndim != 4:
            raise ValueError(f"expected a 3D volume, got shape {tuple(arr.shape)}")
        affine = np.asarray(meta.get("affine", np.eye(4)), dtype=np.float64)
        if affine.shape == (4, 4):
            ornt = nib.orientations.io_orientation(affine)
            arr = np.stack([nib.orientations.apply_orientation(a, ornt) for a in arr])
    except (*_BAD_FILE_EXCEPTIONS, RuntimeError, IndexError) as exc:
        raise BadFile(path, _reason(exc)) from None
    if channel is not None and channel >= arr.shape[0]:
        raise DataError(
            f"{path}: has {arr.shape[0]} channels, channel={channel} was asked",
            hint=f"use a channel from 0 to {arr.shape[0] - 1}",
        )
    out = np.ascontiguousarray(arr[channel or 0], dtype=np.float32)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def axial_slice(volume: np.ndarray, k: int) -> np.ndarray:
    """Axial slice ``k`` of a RAS ``[x, y, z]`` volume as an image: rows anterior (top) to
    posterior, columns patient right to left."""
    return np.ascontiguousarray(np.flipud(volume[:, :, k].T))
