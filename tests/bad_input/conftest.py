"""The machinery of the bad-input catalogue: a case prepares its inputs under ``in/`` and
says what must happen; the runner checks the exit code, that the message is one or two
lines naming the file or field, that there is no traceback, and that nothing was written
outside ``out/`` (a snapshot of the whole test folder before and after).

Cases run the CLI in-process (the ``cli`` fixture) unless they need a process of their own
(kill -9, a FIFO that would hang the loader, ``/dev/zero``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

Result = tuple[int, str, str]

#: a run that finishes in about a second: phantoms, one tiny DCGAN stage, nothing else
MINI = """\
name: mini
seed: 0
data: {n: 16, size: 32}
generators:
  - plugin: dcgan
    classes: [tumor]
    params: {iterations: 1, batch_size: 4, ngf: 8, ndf: 8, log_every: 1}
"""


@dataclass
class Expect:
    """What a case runs (CLI ``args``, or ``call``) and what must come of it."""

    args: tuple[str, ...] = ()
    call: Callable[[], Result] | None = None
    code: int = 2
    names: tuple[str, ...] = ()  # strings the message must contain (the file, the field)
    check: Callable[[], None] | None = None  # further checks after the run


@dataclass
class Ctx:
    """A case's folders: ``inp`` (inputs, made before the snapshot), ``out`` (the only place
    anything may be written), ``outside`` (a folder with a file that must stay untouched)."""

    root: Path
    cli: Callable[..., Result]
    request: pytest.FixtureRequest
    inp: Path = field(init=False)
    out: Path = field(init=False)
    outside: Path = field(init=False)

    def __post_init__(self) -> None:
        self.inp = self.root / "in"
        self.out = self.root / "out"
        self.outside = self.root / "outside"
        for d in (self.inp, self.outside):
            d.mkdir()
        (self.outside / "target").write_text("keep me\n")

    def write(self, name: str, text: str) -> Path:
        """A text file under ``in/``."""
        path = self.inp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def recipe(self, text: str = MINI, name: str = "r.yaml") -> Path:
        """A recipe file under ``in/``."""
        return self.write(name, text)

    def phantom_folder(self, name: str = "data", n: int = 12, size: int = 32) -> Path:
        """A class-folder data set (normal/, tumor/, masks beside) under ``in/``."""
        from synthmri.core.phantoms import write_phantoms

        write_phantoms(self.inp / name, n, size, seed=3)
        return self.inp / name

    def fixture(self, name: str) -> Any:
        """Another fixture, on demand (``fake_dist`` for plugin cases, ``mini_run``)."""
        return self.request.getfixturevalue(name)

    #: the recipe of a run that finishes in about a second
    mini = MINI

    @staticmethod
    def expect(**kw: Any) -> Expect:
        """What a case runs (CLI ``args=``, or ``call=``) and must get (see ``Expect``)."""
        if "args" in kw:
            kw["args"] = tuple(kw["args"])
        return Expect(**kw)

    def start(self, *args: str) -> subprocess.Popen[str]:
        """``python -m synthmri -q ARGS`` started in a process of its own."""
        return start_cli_process(*args, cwd=self.root)

    def start_python(self, code: str, *args: str) -> subprocess.Popen[str]:
        """``python -c CODE ARGS`` started in a process of its own."""
        return start_python("-c", code, *args, cwd=self.root)

    def immutable(self, path: Path) -> Path:
        """``path`` (a folder) made immutable with ``chattr +i`` for this test, so that even
        root may not write into it (skipped with the reason where chattr is refused)."""
        path.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
            reason = done.stderr.strip() if done.returncode else ""
        except OSError as exc:
            reason = str(exc)
        if reason:
            pytest.skip(f"chattr +i refused here ({reason}): this case needs root on ext4")
        stack = self.request.getfixturevalue("_unmount")
        stack.callback(subprocess.run, ["chattr", "-i", str(path)], check=False)
        return path

    def tmpfs(self, path: Path, size_kb: int, read_only: bool = False) -> Path:
        """A small tmpfs at ``path`` for this test (skipped with the reason if none can be
        mounted); unmounted at the end of the test."""
        stack = self.request.getfixturevalue("_unmount")
        return stack.enter_context(tmpfs(path, size_kb, read_only))


def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime) of everything under ``root`` except ``skip``."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == skip or skip in here.parents:
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]  # Python's own, on import
        for name in dirnames + filenames:
            p = here / name
            if p == skip:
                continue
            st = p.lstat()
            found[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return found


def message_lines(err: str) -> list[str]:
    """The error's lines without the hint and without the box Typer draws around usage
    errors."""
    lines = []
    for raw in err.splitlines():
        text = raw.strip().strip("│").strip()
        if not text or text.startswith(("╭", "╰", "hint:")):  # Typer's box, the hint
            continue
        if text.startswith(("Usage:", "Try '")):  # usage errors: the usage line, then the error
            continue
        lines.append(text)
    return lines


def check_result(ctx: Ctx, expect: Expect, result: Result, before: dict[str, Any]) -> None:
    """The checks every case gets (module docstring)."""
    code, out, err = result
    assert code == expect.code, f"exit {code}, expected {expect.code}\n{out}\n{err}"
    assert "Traceback" not in out + err, err
    if expect.code == 2:
        lines = message_lines(err)
        assert 1 <= len(lines) <= 2, f"a message of {len(lines)} lines:\n{err}"
    for name in expect.names:
        assert name in out + err, f"{name!r} not in the message:\n{err}"
    assert snapshot(ctx.root, ctx.out) == before, "something was written outside out/"
    if ctx.out.exists():
        left = [p for p in ctx.out.rglob("*.tmp")]
        assert not left, f"temporary files left behind: {left}"
    if expect.check is not None:
        expect.check()


def start_cli_process(
    *args: str, cwd: Path | None = None, memory_gb: float | None = 6
) -> subprocess.Popen[str]:
    """Start ``python -m synthmri -q ARGS`` in a session of its own (see ``start_python``)."""
    return start_python("-m", "synthmri", "-q", *args, cwd=cwd, memory_gb=memory_gb)


def start_python(
    *args: str, cwd: Path | None = None, memory_gb: float | None = 6
) -> subprocess.Popen[str]:
    """Start ``python ARGS`` in a session of its own, its address space limited to
    ``memory_gb`` (an unbounded read fails fast instead of filling the machine)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

    def limit() -> None:
        if memory_gb is not None:
            import resource

            cap = int(memory_gb * 1024**3)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    return subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
        start_new_session=True,
        preexec_fn=limit,
    )


@contextlib.contextmanager
def tmpfs(path: Path, size_kb: int, read_only: bool = False) -> Iterator[Path]:
    """A small tmpfs mounted at ``path`` (needs root and ``mount``: else the test is skipped
    with the reason)."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size_kb}k" + (",ro" if read_only else "")
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        pytest.skip(f"cannot mount a tmpfs here ({exc}); this case needs root and mount")
    if done.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'}); "
            "this case needs root and mount"
        )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


# ------------------------------------------------------------------ fixtures


@pytest.fixture
def _unmount() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as stack:
        yield stack


@pytest.fixture(scope="session")
def mini_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of ``MINI`` (cases copy its checkpoint and stages.json)."""
    from synthmri.core.pipeline import run_recipe
    from synthmri.core.recipe import parse_recipe

    result = run_recipe(parse_recipe(MINI), out=tmp_path_factory.mktemp("mini"))
    assert result.run_dir is not None
    return result.run_dir


@pytest.fixture
def ctx(
    tmp_path: Path,
    cli: Callable[..., Result],
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> Ctx:
    """A case's folders, with the current directory moved into the test folder."""
    monkeypatch.chdir(tmp_path)
    return Ctx(tmp_path, cli, request)


@pytest.fixture
def run_case() -> Callable[[Ctx, Callable[[Ctx], Expect]], None]:
    """Prepare a case, snapshot the test folder, run it, check it (``check_result``)."""

    def run(ctx: Ctx, make: Callable[[Ctx], Expect]) -> None:
        expect = make(ctx)
        before = snapshot(ctx.root, ctx.out)
        result = expect.call() if expect.call is not None else ctx.cli(*expect.args)
        print(f"exit {result[0]}: " + " | ".join(message_lines(result[2])))  # shown by -rP
        check_result(ctx, expect, result, before)

    return run
