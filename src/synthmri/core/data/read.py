"""Reading files: decoding a picture to one float32 channel, binarising a mask, reading a
NIfTI volume in RAS orientation; a file that cannot be used raises :class:`BadFile`.

Every file is checked before it is decoded: a regular file (a FIFO, a device, ``/dev/zero``
behind a symlink are refused without blocking), at most ``MAX_IMAGE_BYTES`` (pictures) or
``MAX_VOLUME_BYTES`` (NIfTI), at most ``MAX_PIXELS`` pixels (read from the header before the
pixels) or ``MAX_VOXELS`` voxels, at least ``MIN_SIDE`` pixels a side. A mask must be a mask:
0/1 or small labels, or 8-bit with few grey pixels (JPEG edges), not a grey-level image.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from synthmri.core.errors import DataError
from synthmri.core.files import UnusableFile, check_regular, read_limited

__all__ = [
    "MAX_IMAGE_BYTES",
    "MAX_PIXELS",
    "MAX_VOLUME_BYTES",
    "MAX_VOXELS",
    "MIN_SIDE",
    "BadFile",
    "axial_slice",
    "read_image",
    "read_mask",
    "read_volume",
]

#: the largest picture file read (bytes)
MAX_IMAGE_BYTES = 256 * 1024**2
#: the most pixels a picture may have (10 000 x 10 000)
MAX_PIXELS = 100_000_000
#: the largest NIfTI file read (bytes, compressed or not)
MAX_VOLUME_BYTES = 4 * 1024**3
#: the most voxels a volume may have (about 2 GiB as float32)
MAX_VOXELS = 512 * 1024**2
#: the shortest side a picture may have
MIN_SIDE = 8
#: share of a mask's pixels allowed between the two levels (anti-aliased or JPEG edges)
MAX_GREY_MASK_FRACTION = 0.05

_BAD_FILE_EXCEPTIONS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError)


class BadFile(Exception):
    """A file that cannot be used; ``path`` is the culprit (the image or its mask).

    ``unreadable``: the file cannot be decoded ("cannot read image (reason)"); otherwise the
    reason is a whole sentence about an inconsistency (a mask of the wrong size, no mask).
    """

    def __init__(
        self, path: Path, reason: str, unreadable: bool = True, hint: str | None = None
    ) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason
        self.unreadable = unreadable
        self.hint = hint

    def message(self) -> str:
        """The one-line error message naming the file."""
        if self.unreadable:
            return f"{self.path}: cannot read image ({self.reason})"
        return f"{self.path}: {self.reason}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not a recognised image format"
    if isinstance(exc, Image.DecompressionBombError):  # PIL's own guard, above MAX_PIXELS too
        return f"over the limit of {MAX_PIXELS // 1_000_000} M pixels"
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
        data = read_limited(path, MAX_IMAGE_BYTES)
    except UnusableFile as exc:
        raise BadFile(path, exc.reason) from None
    if not data:
        raise BadFile(path, "empty file (0 bytes)")
    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as im:
            size = im.size
            fmt = im.format or ""
            _check_pixels(path, size)
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


def _check_pixels(path: Path, size: tuple[int, int]) -> None:
    """Refuse a picture too large to decode or too small to be a slice (header size)."""
    w, h = size
    if w * h > MAX_PIXELS:
        raise BadFile(path, f"{w}x{h} pixels, over the limit of {MAX_PIXELS // 1_000_000} M pixels")
    if min(w, h) < MIN_SIDE:
        raise BadFile(path, f"only {w}x{h} pixels; a slice needs at least {MIN_SIDE} a side")


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
    top = float(arr.max()) if arr.size else 0.0
    if top > 10:  # not 0/1 or a small label map: few pixels may sit between the levels
        grey = float(((arr > 0.125 * top) & (arr < 0.875 * top)).mean())
        if grey > MAX_GREY_MASK_FRACTION:
            raise BadFile(
                image_path,
                f"its mask {path} is not a binary mask ({grey:.0%} of its pixels are grey, "
                f"not 0 or {top:g})",
                unreadable=False,
                hint="a mask is 0/255 (or 0/1, or small labels); check the mask files",
            )
    return _binarise(arr, fmt)


def read_volume(path: Path, channel: int | None) -> np.ndarray:
    """A NIfTI volume as a float32 [X, Y, Z] array reoriented to RAS (MONAI ``LoadImage``
    with the nibabel reader; the reorientation follows the affine it reports)."""
    import nibabel as nib
    from monai.transforms import LoadImage

    try:
        check_regular(path, MAX_VOLUME_BYTES)
        shape = nib.load(str(path)).shape  # the header only
        if int(np.prod(shape, dtype=np.int64)) > MAX_VOXELS:
            raise BadFile(
                path,
                f"a volume of {'x'.join(map(str, shape))} voxels, over the limit of "
                f"{MAX_VOXELS // 1024**2} M voxels",
            )
    except UnusableFile as exc:
        raise BadFile(path, exc.reason) from None
    except BadFile:
        raise
    except (*_BAD_FILE_EXCEPTIONS, nib.filebasedimages.ImageFileError) as exc:
        raise BadFile(path, _reason(exc)) from None
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
