"""The catalogue's faults: cases that need a process of their own (kill -9, a FIFO that
would hang the loader, ``/dev/zero`` that would fill memory) or a small file system (disk
full, read-only), or a folder even root cannot write to. Each is checked like every
catalogue case (``conftest.check_result``); a case the machine cannot host is skipped with
the reason (a tmpfs needs root and ``mount``; ``chattr`` needs root on ext4)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from synthmri.testing import read_log

Case = Callable[[Any], Any]
CASES: dict[str, Case] = {}


def case(name: str) -> Callable[[Case], Case]:
    """Register a fault case."""

    def add(fn: Case) -> Case:
        assert name not in CASES, name
        CASES[name] = fn
        return fn

    return add


def _kit_args(ctx: Any, data: Path) -> tuple[str, ...]:
    """``turing make`` on ``data``: the loader reads every file, nothing trains."""
    kit = str(ctx.out / "kit")
    return ("turing", "make", "--real", str(data), "--synthetic", str(data), "--out", kit,
            "--n", "4", "--size", "32")  # fmt: skip


# runs CLI commands one after another in one process (one import of torch and MONAI) and
# prints their exit codes and output as JSON
_SEVERAL = """
import contextlib, io, json, sys
from synthmri.cli import main
results = []
for args in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    results.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(results))
"""


@case("data: a FIFO named x.png, and x.png a symlink to /dev/zero (no hang, bounded read)")
def _(ctx: Any) -> Any:
    fifo = ctx.phantom_folder("fifo")
    os.mkfifo(fifo / "tumor" / "x.png")
    zero = ctx.phantom_folder("zero")
    (zero / "tumor" / "x.png").symlink_to("/dev/zero")

    def call() -> tuple[int, str, str]:
        commands = [list(_kit_args(ctx, fifo)), list(_kit_args(ctx, zero))]
        proc = ctx.start_python(_SEVERAL, json.dumps(commands))
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("the loader hung (killed after 120 s)")
        assert proc.returncode == 0, err
        results = json.loads(out.splitlines()[-1])
        assert [code for code, _, _ in results] == [2, 2], results
        return 2, "", "".join(e for _, _, e in results)

    names = (str(fifo / "tumor" / "x.png"), "FIFO", str(zero / "tumor" / "x.png"), "device")
    return ctx.expect(call=call, names=names)


_TWO_STAGES = """\
name: killed
seed: 0
data: {n: 16, size: 32}
generators:
  - plugin: dcgan
    name: fast
    classes: [tumor]
    params: {iterations: 1, batch_size: 4, ngf: 8, ndf: 8}
  - plugin: dcgan
    name: slow
    classes: [tumor]
    params: {iterations: ITERATIONS, batch_size: 4, ngf: 8, ndf: 8}
"""


@case("kill -9 during a run, then --resume reuses the finished stage")
def _(ctx: Any) -> Any:
    first = ctx.recipe(_TWO_STAGES.replace("ITERATIONS", "1000000"), "first.yaml")
    again = ctx.recipe(_TWO_STAGES.replace("ITERATIONS", "1"), "again.yaml")

    def call() -> tuple[int, str, str]:
        proc = ctx.start("run", str(first), "--out", str(ctx.out / "killed"))
        deadline = time.monotonic() + 120
        index = None
        while time.monotonic() < deadline and proc.poll() is None:
            found = list((ctx.out / "killed").glob("*/stages.json"))
            if found and "generate/fast" in found[0].read_text():
                index = found[0]
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        assert index is not None, "the first stage never finished"
        assert "generate/slow" not in json.loads(index.read_text())
        return ctx.cli(
            "-q", "run", str(again), "--out", str(ctx.out), "--resume", str(index.parent)
        )

    def check() -> None:
        resumed = [p for p in ctx.out.iterdir() if p.name.startswith("killed-")]
        [run_dir] = resumed
        reused = [r["stage_reused"] for r in read_log(run_dir) if "stage_reused" in r]
        assert reused == ["generate/fast/tumor"] and (run_dir / "metrics.json").is_file()

    return ctx.expect(call=call, code=0, check=check)


@case("disk full during a run: one line, no temp file left, the run marked FAILED")
def _(ctx: Any) -> Any:
    ctx.tmpfs(ctx.out, 1400)
    # a checkpoint of several MB cannot fit in what is left
    text = ctx.mini.replace("ngf: 8, ndf: 8", "ngf: 64, ndf: 64")

    def check() -> None:
        [run_dir] = [p for p in ctx.out.iterdir() if p.is_dir() and p.name.startswith("mini-")]
        assert (run_dir / "FAILED").read_text().startswith("OutputError")
        assert not list(run_dir.rglob(".*.tmp"))

    args = ("-q", "run", str(ctx.recipe(text)), "--out", str(ctx.out))
    return ctx.expect(args=args, names=("no space left on device", ".pt"), check=check)


@case("disk full before a run: refused before any directory is made")
def _(ctx: Any) -> Any:
    ctx.tmpfs(ctx.out, 256)
    (ctx.out / "filler").write_bytes(b"\0" * (200 * 1024))

    def check() -> None:
        assert [p.name for p in ctx.out.iterdir()] == ["filler"]

    args = ("run", str(ctx.recipe()), "--out", str(ctx.out))
    return ctx.expect(args=args, names=("no space left", str(ctx.out)), check=check)


@case("disk full while writing phantoms: one line, no temp file left")
def _(ctx: Any) -> Any:
    ctx.tmpfs(ctx.out, 160)
    args = ("phantoms", "--out", str(ctx.out / "p"), "--n", "400", "--size", "64")
    return ctx.expect(args=args, names=("no space left on device",))


@case("read-only file system as --out")
def _(ctx: Any) -> Any:
    ctx.tmpfs(ctx.out, 64, read_only=True)
    args = ("run", str(ctx.recipe()), "--out", str(ctx.out / "runs"))
    return ctx.expect(args=args, names=("read-only file system", str(ctx.out)))


@case("read-only file system as generate --out")
def _(ctx: Any) -> Any:
    ctx.tmpfs(ctx.out, 64, read_only=True)
    ckpt = ctx.write("c.pt", "x")
    args = ("generate", str(ckpt), "--out", str(ctx.out / "gen"))
    return ctx.expect(args=args, names=("read-only file system",))


@case("no permission to write --out")
def _(ctx: Any) -> Any:
    locked = ctx.immutable(ctx.out / "locked")
    args = ("run", str(ctx.recipe()), "--out", str(locked / "runs"))
    return ctx.expect(args=args, names=("permission denied", str(locked)))


@case("no permission to write the phantoms folder")
def _(ctx: Any) -> Any:
    locked = ctx.immutable(ctx.out / "locked")
    args = ("phantoms", "--out", str(locked / "p"), "--n", "4", "--size", "32")
    return ctx.expect(args=args, names=(str(locked),))


@pytest.mark.parametrize("name", list(CASES))
def test_fault(name: str, ctx: Any, run_case: Callable[[Any, Case], None]) -> None:
    run_case(ctx, CASES[name])
