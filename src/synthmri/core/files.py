"""The file system, in one place: safe names, bounded reads of user files, and the writer
bound to an output folder.

- :func:`safe_name` turns any user- or file-provided name (a recipe name, a generator or
  class name, a name stored in a checkpoint) into one harmless file-name component.
- :func:`read_limited` and :func:`check_regular` read (or stat) a file a user or another
  run handed us: regular files only (a FIFO, a device or ``/dev/zero`` behind a symlink is
  refused, never opened blocking), and never more than a stated size.
- :class:`OutputDir` is the one writer: it is bound to a folder (a run directory, or a
  command's ``--out``), refuses any path that leaves it, writes atomically (temp file, then
  rename; the temp file is removed when a write fails) and turns every OS error (no space,
  read-only, no permission, a name too long) into one :class:`OutputError` line that names
  the path.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from synthmri.core.errors import DataError, OutputError

__all__ = [
    "MAX_NAME_BYTES",
    "OutputDir",
    "UnusableFile",
    "check_regular",
    "output_guard",
    "read_limited",
    "resolve_inside",
    "safe_name",
]

#: the longest component :func:`safe_name` returns, in UTF-8 bytes (file systems allow
#: 255; the rest is left for prefixes, counters and suffixes such as ``_mask.png``)
MAX_NAME_BYTES = 120

# ------------------------------------------------------------------ names


def safe_name(name: object, max_bytes: int = MAX_NAME_BYTES) -> str:
    """``name`` as one file-name component that cannot leave its folder.

    ``/`` and ``\\`` become ``-``; anything but letters, digits, ``-``, ``_`` and ``.``
    becomes ``_`` (NUL and control characters included); a leading ``.`` becomes ``_`` (so
    never ``.``, ``..`` or a hidden file); an empty name is ``_``. A name longer than
    ``max_bytes`` UTF-8 bytes is cut and given a short hash of the whole name, so two long
    names stay apart. Ordinary names (``generate-dcgan-tumor``) come back unchanged.
    """
    text = str(name)
    out = "".join(
        c if (c.isalnum() and c.isprintable()) or c in "-_." else "_"
        for c in text.replace("/", "-").replace("\\", "-")
    )
    if out.startswith("."):
        out = "_" + out[1:]
    out = out or "_"
    raw = out.encode("utf-8", "surrogatepass")
    if len(raw) > max_bytes:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        head = raw[: max(1, max_bytes - 9)].decode("utf-8", "ignore")
        out = f"{head}-{digest}"
    return out


# ------------------------------------------------------------------ reading


class UnusableFile(DataError):
    """A file that cannot be read as asked: not a regular file, too large, unreadable.

    ``path`` is the file and ``reason`` the short why (the message is ``path: reason``).
    """

    def __init__(self, path: Path, reason: str, hint: str | None = None) -> None:
        super().__init__(f"{path}: {reason}", hint=hint)
        self.path = path
        self.reason = reason


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a plain file"


def _size_text(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _check_stat(path: Path, st: os.stat_result, limit: int | None) -> int:
    if not stat.S_ISREG(st.st_mode):
        raise UnusableFile(path, f"{_kind(st.st_mode)}, not a regular file; refused")
    if limit is not None and st.st_size > limit:
        raise UnusableFile(
            path,
            f"{_size_text(st.st_size)}, over the limit of {_size_text(limit)} for this file",
        )
    return int(st.st_size)


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def check_regular(path: str | Path, limit: int | None = None) -> int:
    """The size of ``path`` after checking (``stat``, following symlinks) that it is a
    regular file of at most ``limit`` bytes; else :class:`UnusableFile`. For files a library
    opens itself (torch, nibabel)."""
    p = Path(path)
    try:
        st = os.stat(p)
    except (OSError, ValueError) as exc:
        raise UnusableFile(p, f"cannot read ({_os_reason(exc)})") from None
    return _check_stat(p, st, limit)


def read_limited(path: str | Path, limit: int) -> bytes:
    """The bytes of ``path``: opened without blocking (a FIFO never hangs), checked to be a
    regular file of at most ``limit`` bytes, read to the end; else :class:`UnusableFile`."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError) as exc:
        raise UnusableFile(p, f"cannot read ({_os_reason(exc)})") from None
    try:
        _check_stat(p, os.fstat(fd), limit)
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:  # the file grew after the check
                raise UnusableFile(p, f"more than {_size_text(limit)}; refused")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise UnusableFile(p, f"cannot read ({_os_reason(exc)})") from None
    finally:
        os.close(fd)


def resolve_inside(root: str | Path, rel: object) -> Path | None:
    """``root / rel`` for a relative path ``rel`` read from a file (``checkpoints/x.pt`` in
    an index), or None when ``rel`` is not a string, is absolute, climbs out with ``..``,
    or leads out of ``root`` through a symlink."""
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        return None
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts:
        return None
    target = Path(root) / p
    try:
        real_root, real = Path(root).resolve(), target.resolve()
    except (OSError, ValueError, RuntimeError):
        return None
    return target if real == real_root or real_root in real.parents else None


# ------------------------------------------------------------------ writing

_HINTS = {
    errno.ENOSPC: "free some space, or choose another --out",
    errno.EDQUOT: "free some space, or choose another --out",
    errno.EACCES: "choose a folder you can write to (--out)",
    errno.EPERM: "choose a folder you can write to (--out)",
    errno.EROFS: "choose a folder on a writable file system (--out)",
    errno.ENAMETOOLONG: "use a shorter name or path",
    errno.ENOTDIR: "a part of the path is a file: choose another --out",
    errno.EEXIST: "choose another --out",
}


def _output_error(path: Path, exc: BaseException) -> OutputError:
    """One line naming ``path`` for an OS error (or a path with a NUL byte)."""
    if isinstance(exc, ValueError):  # "embedded null byte"
        return OutputError(f"{path!s:.300}: cannot write (the name holds a NUL byte)")
    code = getattr(exc, "errno", None)
    return OutputError(
        f"{path!s:.300}: cannot write ({_os_reason(exc)})", hint=_HINTS.get(code or 0)
    )


@contextlib.contextmanager
def output_guard(path: str | Path) -> Iterator[None]:
    """Turn an OS error inside the block into an :class:`OutputError` naming ``path``."""
    try:
        yield
    except OutputError:
        raise
    except (OSError, ValueError) as exc:
        if isinstance(exc, ValueError) and "null" not in str(exc):
            raise
        raise _output_error(Path(path), exc) from None


def _atomic(target: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` to a temp file beside ``target``, then rename it over ``target``; the
    temp file is removed when anything fails."""
    tmp = target.with_name(f".{target.name[:200]}.{os.getpid()}.tmp")
    try:
        with output_guard(target):
            write(tmp)
            os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


class OutputDir:
    """A folder that every write goes through; no path it hands out leaves it.

    ``OutputDir(root)`` creates ``root`` (and its parents) unless it exists; with
    ``empty=True`` an existing ``root`` must be an empty folder. ``path(*parts)`` turns
    each part into a :func:`safe_name` component and checks that the result (symlinks
    resolved) is inside ``root``. The ``write_*`` / ``save_*`` methods write atomically; any
    OS error is an :class:`OutputError` naming the path.
    """

    def __init__(self, root: str | Path, *, empty: bool = False) -> None:
        self.root = Path(root)
        with output_guard(self.root):
            if self.root.exists() and not self.root.is_dir():
                raise OutputError(
                    f"{self.root}: exists and is not a folder", hint="choose another --out"
                )
            if empty and self.root.is_dir() and any(self.root.iterdir()):
                raise OutputError(
                    f"{self.root}: folder exists and is not empty; nothing was written",
                    hint="choose a new or empty --out",
                )
            self.root.mkdir(parents=True, exist_ok=True)
            self._real = self.root.resolve()

    @classmethod
    def new_run(cls, out: str | Path, name: str) -> OutputDir:
        """A run directory that did not exist before: ``<out>/<name>-<timestamp>[-k]``
        (``name`` made safe); ``out`` is created when missing."""
        parent = cls(out)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        base = f"{safe_name(name, max_bytes=MAX_NAME_BYTES - 20)}-{stamp}"
        candidate, k = base, 1
        while True:
            target = parent.root / candidate
            with output_guard(target):
                try:
                    target.mkdir(exist_ok=False)
                except FileExistsError:
                    k += 1
                    candidate = f"{base}-{k}"
                    continue
            return cls(target)

    # -- paths
    def contains(self, path: str | Path) -> bool:
        """True when ``path`` (symlinks resolved) lies inside this folder."""
        try:
            real = Path(path).resolve()
        except (OSError, ValueError, RuntimeError):
            return False
        return real == self._real or self._real in real.parents

    def path(self, *parts: str, mkdir: bool = True) -> Path:
        """``root/<safe part>/...`` (parent folders created); an OutputError if it leaves
        the folder (a symlink inside pointing out)."""
        target = self.root.joinpath(*(safe_name(p) for p in parts))
        if not self.contains(target):
            raise OutputError(f"{target}: outside the output folder {self.root}; refused")
        if mkdir and parts:
            with output_guard(target.parent):
                target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def relative(self, rel: str) -> Path | None:
        """The file ``rel`` inside this folder (see :func:`resolve_inside`), or None."""
        return resolve_inside(self.root, rel)

    # -- writes
    def mkdir(self, *parts: str) -> Path:
        """The folder ``parts`` inside, created."""
        target = self.path(*parts, mkdir=False)
        with output_guard(target):
            target.mkdir(parents=True, exist_ok=True)
        return target

    def write_bytes(self, data: bytes | memoryview, *parts: str) -> Path:
        """Write ``data`` atomically."""
        target = self.path(*parts)
        _atomic(target, lambda tmp: tmp.write_bytes(data))
        return target

    def write_text(self, text: str, *parts: str) -> Path:
        """Write UTF-8 text atomically."""
        return self.write_bytes(text.encode("utf-8"), *parts)

    def write_json(self, obj: Any, *parts: str) -> Path:
        """Write JSON (indented) atomically."""
        return self.write_text(json.dumps(obj, indent=2, default=str) + "\n", *parts)

    def append_text(self, text: str, *parts: str) -> Path:
        """Append ``text`` (a log line) to a file."""
        target = self.path(*parts)
        with output_guard(target), open(target, "a", encoding="utf-8") as fh:
            fh.write(text)
        return target

    def save_torch(self, payload: Any, *parts: str) -> Path:
        """``torch.save`` atomically. Serialised in memory first: torch reports a failed
        write (a full disk) as a RuntimeError, the file system's own error is clearer."""
        import io

        import torch

        buf = io.BytesIO()
        torch.save(payload, buf)
        return self.write_bytes(buf.getbuffer(), *parts)

    def save_figure(self, fig: Any, *parts: str, dpi: int = 100) -> Path:
        """Save a matplotlib figure as PNG atomically (the figure is not closed)."""
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        return self.write_bytes(buf.getvalue(), *parts)

    def save_png(self, array: Any, *parts: str) -> Path:
        """An 8-bit grayscale ``[H, W]`` array as PNG, atomically."""
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(array, mode="L").save(buf, format="PNG")
        return self.write_bytes(buf.getvalue(), *parts)

    def copy_in(self, src: str | Path, *parts: str) -> Path:
        """Copy the file ``src`` in, atomically."""
        target = self.path(*parts)
        _atomic(target, lambda tmp: shutil.copyfile(src, tmp))
        return target

    def copy_to(self, src: str | Path, rel: str) -> Path:
        """Copy ``src`` to the relative path ``rel`` (checked with :meth:`relative`)."""
        target = self.relative(rel)
        if target is None:
            raise OutputError(f"{rel!r}: not a path inside {self.root}; refused")
        parts = target.relative_to(self.root).parts
        return self.copy_in(src, *parts)
