"""The bad-input catalogue: what a careless user, a broken file or an attacker can hand the
CLI, and what must come of it (issue 18). Every case: the exit code (2, or the documented
outcome), a one- or two-line message naming the file or field, no traceback, nothing written
outside the output folder (``conftest.check_result``). Cases that need a process of their own
or a small file system are in ``test_faults.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from synthmri.testing import read_log

#: a case: prepares its inputs in a ``conftest.Ctx`` and returns its ``conftest.Expect``
Case = Callable[[Any], Any]
CASES: dict[str, Case] = {}


def case(name: str) -> Callable[[Case], Case]:
    """Register a catalogue case."""

    def add(fn: Case) -> Case:
        assert name not in CASES, name
        CASES[name] = fn
        return fn

    return add


def _run_dirs(ctx: Any) -> list[Path]:
    return sorted(p for p in ctx.out.iterdir() if p.is_dir()) if ctx.out.exists() else []


def _no_run_dir(ctx: Any) -> Callable[[], None]:
    def check() -> None:
        assert _run_dirs(ctx) == [], "a run directory was left behind"

    return check


def _validate(ctx: Any, *sets: str, recipe: str = "quickstart") -> Any:
    args = ["validate", recipe, "--out", str(ctx.out)]
    for s in sets:
        args += ["--set", s]
    return ctx.expect(args=tuple(args))


# ------------------------------------------------------------------ recipes: validate == run


@case("validate: size 33 for dcgan")
def _(ctx: Any) -> Any:
    e = _validate(ctx, "data.size=33")
    e.names = ("data.size", "33")
    return e


@case("validate: split fractions sum over 1")
def _(ctx: Any) -> Any:
    e = _validate(ctx, "data.split.val=0.6", "data.split.test=0.6")
    e.names = ("data.split", "val + test")
    return e


@case("validate: device banana")
def _(ctx: Any) -> Any:
    e = _validate(ctx, "device=banana")
    e.names = ("device", "banana")
    return e


@case("validate: contrast xyz")
def _(ctx: Any) -> Any:
    e = _validate(ctx, "data.contrast=xyz")
    e.names = ("data.contrast",)
    return e


@case("validate: tumor_mask oedema")
def _(ctx: Any) -> Any:
    e = _validate(ctx, "data.tumor_mask=oedema")
    e.names = ("data.tumor_mask",)
    return e


@case("validate: data.path does not exist")
def _(ctx: Any) -> Any:
    e = _validate(ctx, "data.source=auto", f"data.path={ctx.inp / 'nowhere'}")
    e.names = ("data.path", str(ctx.inp / "nowhere"))
    return e


@case("validate: data.path is a file")
def _(ctx: Any) -> Any:
    f = ctx.write("file.txt", "x")
    e = _validate(ctx, "data.source=auto", f"data.path={f}")
    e.names = ("data.path", "not a folder")
    return e


@case("validate: data.path with source phantoms")
def _(ctx: Any) -> Any:
    e = _validate(ctx, f"data.path={ctx.phantom_folder()}")
    e.names = ("data.source=folder",)
    return e


@case("run: data.path with source phantoms (no silent switch, no run dir)")
def _(ctx: Any) -> Any:
    data = ctx.phantom_folder()
    args = ("run", "quickstart", "--out", str(ctx.out), "--set", f"data.path={data}")
    return ctx.expect(args=args, names=("source",), check=_no_run_dir(ctx))


@case("run: device banana (no empty run dir)")
def _(ctx: Any) -> Any:
    args = ("run", str(ctx.recipe()), "--out", str(ctx.out), "--device", "banana")
    return ctx.expect(args=args, names=("banana",), check=_no_run_dir(ctx))


@case("validate: --out is a file")
def _(ctx: Any) -> Any:
    f = ctx.write("file.txt", "x")
    return ctx.expect(args=("validate", "quickstart", "--out", str(f)), names=(str(f),))


@case("validate: --out under a file")
def _(ctx: Any) -> Any:
    f = ctx.write("file.txt", "x")
    return ctx.expect(args=("validate", "quickstart", "--out", str(f / "sub")), names=(str(f),))


@case("--set a..b=1 names the --set")
def _(ctx: Any) -> Any:
    return ctx.expect(args=("validate", "quickstart", "--set", "a..b=1"), names=("--set", "a..b"))


@case("--set with a bad value points at the --set, not line 1")
def _(ctx: Any) -> Any:
    e = _validate(ctx, "data.size=8")
    e.names = ("--set data.size=8", "data.size")
    return e


@case("--set with a bad plugin param points at the --set")
def _(ctx: Any) -> Any:
    e = _validate(ctx, "generators.0.params.ngf=-1")
    e.names = ("--set generators.0.params.ngf=-1", "ngf")
    return e


@case("--set without =")
def _(ctx: Any) -> Any:
    return ctx.expect(args=("validate", "quickstart", "--set", "data.size"), names=("--set",))


@case("classes: [yes, no] are the folder names (documented outcome)")
def _(ctx: Any) -> Any:
    data = ctx.inp / "yn"
    ctx.phantom_folder("yn")
    (data / "normal").rename(data / "no")
    (data / "tumor").rename(data / "yes")
    text = ctx.mini.replace(
        "data: {n: 16, size: 32}", f"data: {{path: {data}, classes: [yes, no]}}"
    )
    text = text.replace("classes: [tumor]", "classes: [yes]")
    return ctx.expect(args=("validate", str(ctx.recipe(text)), "--out", str(ctx.out)), code=0)


@case("classes: [true, false] gets a hint to quote them")
def _(ctx: Any) -> Any:
    text = ctx.mini.replace("data: {n: 16, size: 32}", "data: {n: 16, size: 32, classes: [true]}")
    return ctx.expect(args=("validate", str(ctx.recipe(text))), names=("data.classes", "quote"))


@case("recipe: YAML python tag")
def _(ctx: Any) -> Any:
    path = ctx.recipe("name: !!python/object/apply:os.system ['touch pwned']\n")
    return ctx.expect(args=("validate", str(path)), names=(str(path), "invalid YAML"))


@case("recipe: not a mapping")
def _(ctx: Any) -> Any:
    path = ctx.recipe("- a\n- b\n")
    return ctx.expect(args=("validate", str(path)), names=(str(path),))


@case("recipe: not UTF-8")
def _(ctx: Any) -> Any:
    path = ctx.inp / "bin.yaml"
    path.write_bytes(b"name: \xff\xfe\x00x\n")
    return ctx.expect(args=("validate", str(path)), names=(str(path),))


@case("recipe: a FIFO named r.yaml (no hang)")
def _(ctx: Any) -> Any:
    path = ctx.inp / "fifo.yaml"
    os.mkfifo(path)
    return ctx.expect(args=("validate", str(path)), names=(str(path),))


@case("recipe: over 4 MiB")
def _(ctx: Any) -> Any:
    path = ctx.recipe("name: big\ndescription: '" + "x" * (5 * 1024 * 1024) + "'\n", "big.yaml")
    return ctx.expect(args=("validate", str(path)), names=(str(path), "limit"))


@case("recipe: unknown plugin, with the closest name")
def _(ctx: Any) -> Any:
    path = ctx.recipe(ctx.mini.replace("plugin: dcgan", "plugin: dcgam"))
    return ctx.expect(args=("validate", str(path)), names=("dcgam", "dcgan"))


@case("recipe name ../../x stays inside --out (documented outcome)")
def _(ctx: Any) -> Any:
    path = ctx.recipe(ctx.mini.replace("name: mini", "name: ../../x"))

    def check() -> None:
        [run_dir] = _run_dirs(ctx)
        assert (run_dir / "metrics.json").is_file()

    return ctx.expect(args=("-q", "run", str(path), "--out", str(ctx.out)), code=0, check=check)


@case("recipe name an absolute path stays inside --out (documented outcome)")
def _(ctx: Any) -> Any:
    path = ctx.recipe(ctx.mini.replace("name: mini", f"name: {ctx.outside / 'x'}"))
    check = lambda: len(_run_dirs(ctx)) == 1 or pytest.fail("no run dir")  # noqa: E731
    return ctx.expect(args=("-q", "run", str(path), "--out", str(ctx.out)), code=0, check=check)


@case("generator name an absolute path stays inside the run (documented outcome)")
def _(ctx: Any) -> Any:
    text = ctx.mini.replace(
        "  - plugin: dcgan\n", f"  - plugin: dcgan\n    name: {ctx.outside}/syn\n"
    )
    path = ctx.recipe(text)

    def check() -> None:
        [run_dir] = _run_dirs(ctx)
        assert list((run_dir / "synthetic").glob("*syn*/tumor/*.png"))

    return ctx.expect(args=("-q", "run", str(path), "--out", str(ctx.out)), code=0, check=check)


@case("error text with rich markup characters is printed as text")
def _(ctx: Any) -> Any:
    e = _validate(ctx, "data.source=auto", f"data.path={ctx.inp}/x[/]y[bold]")
    e.names = ("x[/]y[bold]",)
    return e


# ------------------------------------------------------------------ data files


def _loader_case(ctx: Any, *names: str) -> Any:
    """``turing make`` reads both folders with the loader (nothing trains): a quick probe."""
    args = ("turing", "make", "--real", str(ctx.inp / "data"), "--synthetic")
    args += (str(ctx.inp / "data"), "--out", str(ctx.out / "kit"), "--n", "4", "--size", "32")
    return ctx.expect(args=args, names=names)


@case("data: empty image file")
def _(ctx: Any) -> Any:
    bad = ctx.phantom_folder() / "tumor" / "empty.png"
    bad.write_bytes(b"")
    return _loader_case(ctx, str(bad), "empty")


@case("data: corrupt PNG")
def _(ctx: Any) -> Any:
    bad = ctx.phantom_folder() / "tumor" / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    return _loader_case(ctx, str(bad))


@case("data: a 1x1 image")
def _(ctx: Any) -> Any:
    bad = ctx.phantom_folder() / "tumor" / "dot.png"
    Image.new("L", (1, 1), 200).save(bad)
    return _loader_case(ctx, str(bad), "1x1")


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (nothing behind it: never decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))


@case("data: a PNG header claiming 60000x60000 pixels (not allocated)")
def _(ctx: Any) -> Any:
    bad = ctx.phantom_folder() / "tumor" / "bomb.png"
    bad.write_bytes(_png_header(60000, 60000))
    return _loader_case(ctx, str(bad), "limit")


@case("data: a non-binary mask")
def _(ctx: Any) -> Any:
    data = ctx.phantom_folder()
    image = sorted((data / "tumor").glob("*[0-9].png"))[0]
    noise = (np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8)
    Image.fromarray(noise, mode="L").save(image.with_name(image.stem + "_mask.png"))
    return _loader_case(ctx, str(image), "not a binary mask")


@case("data: a mask of the wrong size")
def _(ctx: Any) -> Any:
    data = ctx.phantom_folder()
    image = sorted((data / "tumor").glob("*[0-9].png"))[0]
    Image.new("L", (20, 20), 0).save(image.with_name(image.stem + "_mask.png"))
    return _loader_case(ctx, str(image), "20x20")


@case("data: a class folder with no images")
def _(ctx: Any) -> Any:
    (ctx.inp / "data" / "yes").mkdir(parents=True)
    (ctx.inp / "data" / "yes" / "notes.txt").write_text("x")
    return _loader_case(ctx, str(ctx.inp / "data"), "no images")


@case("data: a class named in classes has no folder")
def _(ctx: Any) -> Any:
    data = ctx.phantom_folder()
    text = ctx.mini.replace(
        "data: {n: 16, size: 32}", f"data: {{path: {data}, classes: [tumor, yes]}}"
    )
    return ctx.expect(args=("validate", str(ctx.recipe(text))), names=("yes", "data.path"))


@case("data: a corrupt NIfTI volume")
def _(ctx: Any) -> Any:
    (ctx.inp / "data").mkdir()
    bad = ctx.inp / "data" / "vol.nii"
    bad.write_bytes(os.urandom(600))
    return _loader_case(ctx, str(bad))


def _patients(ctx: Any, drop_mask: bool) -> Path:
    """A patient-folder image+mask set (LGG layout): P<k>/P<k>_<i>.png and masks beside."""
    src = ctx.phantom_folder("src", n=16)
    root = ctx.inp / "patients"
    images = sorted(p for p in src.rglob("*.png") if not p.stem.endswith("_mask"))
    for i, image in enumerate(images):
        folder = root / f"P{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, folder / f"P{i % 4}_{i}.png")
        shutil.copy(image.with_name(image.stem + "_mask.png"), folder / f"P{i % 4}_{i}_mask.png")
    shutil.rmtree(src)
    if drop_mask:
        (root / "P1" / "P1_5_mask.png").unlink()
    return root


@case("data: an image without its mask in a patient layout (no layout switch)")
def _(ctx: Any) -> Any:
    root = _patients(ctx, drop_mask=True)
    text = ctx.mini.replace("data: {n: 16, size: 32}", f"data: {{path: {root}, size: 32}}")
    text = text.replace("classes: [tumor]", "classes: [normal]")
    return ctx.expect(args=("validate", str(ctx.recipe(text))), names=("P1_5.png", "no mask"))


@case("data: an image without its mask, on_bad_file skip (documented outcome)")
def _(ctx: Any) -> Any:
    from synthmri.core.data import load_images

    root = _patients(ctx, drop_mask=True)

    def check() -> None:
        res = load_images(root, size=32, on_bad_file="skip")
        assert res.layout == "image_mask" and len(res.skipped) == 1
        assert res.data.class_names == ["normal", "tumor"]

    text = ctx.mini.replace("data: {n: 16, size: 32}", f"data: {{path: {root}, on_bad_file: skip}}")
    text = text.replace("classes: [tumor]", "classes: [normal]")
    return ctx.expect(
        args=("validate", str(ctx.recipe(text)), "--out", str(ctx.out)), code=0, check=check
    )


@case("data: near-empty slices are dropped and counted in the log (documented outcome)")
def _(ctx: Any) -> Any:
    data = ctx.phantom_folder(n=16)
    for k in range(3):
        Image.new("L", (32, 32), 0).save(data / "normal" / f"black_{k}.png")
    text = ctx.mini.replace("data: {n: 16, size: 32}", f"data: {{path: {data}, size: 32}}")

    def check() -> None:
        [run_dir] = _run_dirs(ctx)
        logged = [r["dropped_slices"] for r in read_log(run_dir) if "dropped_slices" in r]
        assert logged == [3]

    args = ("-q", "run", str(ctx.recipe(text)), "--out", str(ctx.out))
    return ctx.expect(args=args, code=0, check=check)


@case("phantoms: --size 100000")
def _(ctx: Any) -> Any:
    return ctx.expect(
        args=("phantoms", "--out", str(ctx.out / "p"), "--size", "100000"), names=("size",)
    )


@case("phantoms: --n 0")
def _(ctx: Any) -> Any:
    return ctx.expect(args=("phantoms", "--out", str(ctx.out / "p"), "--n", "0"), names=("n ",))


@case("phantoms: n x size x size over the memory limit")
def _(ctx: Any) -> Any:
    args = ("phantoms", "--out", str(ctx.out / "p"), "--n", "100000", "--size", "1024")
    return ctx.expect(args=args, names=("limit",))


@case("compare: --size 100000")
def _(ctx: Any) -> Any:
    data = str(ctx.phantom_folder())
    return ctx.expect(args=("compare", data, data, "--size", "100000"), names=("--size",))


@case("compare: a folder that does not exist")
def _(ctx: Any) -> Any:
    return ctx.expect(
        args=("compare", str(ctx.inp / "no"), str(ctx.inp)), names=(str(ctx.inp / "no"),)
    )


@case("turing make: --size 100000")
def _(ctx: Any) -> Any:
    e = _loader_case(ctx, "--size")
    e.args = (*e.args[:-1], "100000")
    return e


# ------------------------------------------------------------------ outputs


@case("run: --out is a file")
def _(ctx: Any) -> Any:
    f = ctx.write("file.txt", "x")
    return ctx.expect(args=("run", str(ctx.recipe()), "--out", str(f)), names=(str(f),))


@case("run: --out holds a NUL byte")
def _(ctx: Any) -> Any:
    return ctx.expect(
        args=("run", str(ctx.recipe()), "--out", f"{ctx.out}/a\x00b"), names=("--out", "null byte")
    )


@case("run: --out with a name over 255 bytes")
def _(ctx: Any) -> Any:
    long = ctx.out / ("x" * 300)
    return ctx.expect(args=("run", str(ctx.recipe()), "--out", str(long)), names=("255",))


@case("generate: --out is a file")
def _(ctx: Any) -> Any:
    f = ctx.write("file.txt", "x")
    ckpt = ctx.write("c.pt", "x")
    return ctx.expect(args=("generate", str(ckpt), "--out", str(f)), names=(str(f),))


@case("phantoms: --out is a file")
def _(ctx: Any) -> Any:
    f = ctx.write("file.txt", "x")
    return ctx.expect(
        args=("phantoms", "--out", str(f), "--n", "4", "--size", "32"), names=(str(f),)
    )


@case("phantoms: --out holds a NUL byte")
def _(ctx: Any) -> Any:
    args = ("phantoms", "--out", f"{ctx.out}/a\x00b", "--n", "4", "--size", "32")
    return ctx.expect(args=args, names=("--out", "null byte"))


@case("turing make: --out is a file")
def _(ctx: Any) -> Any:
    f = ctx.write("file.txt", "x")
    e = _loader_case(ctx, str(f))
    ctx.phantom_folder()
    e.args = tuple(str(f) if a == str(ctx.out / "kit") else a for a in e.args)
    return e


@case("turing score: --out under a file")
def _(ctx: Any) -> Any:
    key = ctx.write("key.json", json.dumps({"images": [{"image": "a.png", "truth": "real"}]}))
    answers = ctx.write("answers.json", json.dumps([{"image": "a.png", "answer": "real"}]))
    f = ctx.write("file.txt", "x")
    args = ("turing", "score", str(answers), str(key), "--out", str(f / "s.json"))
    return ctx.expect(args=args, names=(str(f),))


@case("plugins new: --out not empty")
def _(ctx: Any) -> Any:
    ctx.write("pkg/x.txt", "x")
    args = ("plugins", "new", "generator", "my_gen", "--out", str(ctx.inp / "pkg"))
    return ctx.expect(args=args, names=("not empty",))


@case("generate: -n 0")
def _(ctx: Any) -> Any:
    return ctx.expect(
        args=("generate", str(ctx.write("c.pt", "x")), "-n", "0", "--out", str(ctx.out)),
        names=("-n",),
    )


@case("generate: -n 10**9")
def _(ctx: Any) -> Any:
    args = ("generate", str(ctx.write("c.pt", "x")), "-n", str(10**9), "--out", str(ctx.out))
    return ctx.expect(args=args, names=("-n",))


# ------------------------------------------------------------------ checkpoints


def _checkpoint(ctx: Any, mini_run: Path, **changes: object) -> Path:
    """The mini run's generator checkpoint with ``changes`` (None removes a key)."""
    ckpt = torch.load(next((mini_run / "checkpoints").glob("generate-*.pt")), weights_only=True)
    for k, v in changes.items():
        if v is None:
            ckpt.pop(k, None)
        else:
            ckpt[k] = v
    path = ctx.inp / "g.pt"
    torch.save(ckpt, path)
    return path


def _generate(ctx: Any, ckpt: Path, *names: str, code: int = 2) -> Any:
    args = ("generate", str(ckpt), "-n", "3", "--out", str(ctx.out / "gen"))
    return ctx.expect(args=args, names=names, code=code)


@case("checkpoint: not a dict")
def _(ctx: Any) -> Any:
    path = ctx.inp / "list.pt"
    torch.save([1, 2, 3], path)
    return _generate(ctx, path, str(path), "not a synthmri checkpoint")


@case("checkpoint: missing keys")
def _(ctx: Any) -> Any:
    path = ctx.inp / "keys.pt"
    torch.save({"kind": "generator", "plugin": "dcgan"}, path)
    return _generate(ctx, path, str(path), "params")


@case("checkpoint: crafted to run code on load (refused, one line)")
def _(ctx: Any) -> Any:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return os.system, (f"touch {ctx.outside / 'pwned'}",)

    path = ctx.inp / "evil.pt"
    torch.save({"kind": "generator", "x": Evil()}, path)

    def check() -> None:
        assert not (ctx.outside / "pwned").exists()

    e = _generate(ctx, path, str(path), "refused")
    e.check = check
    return e


@case("checkpoint: random bytes")
def _(ctx: Any) -> Any:
    path = ctx.inp / "noise.pt"
    path.write_bytes(os.urandom(4096))
    return _generate(ctx, path, str(path), "not a readable checkpoint")


@case("checkpoint: truncated")
def _(ctx: Any) -> Any:
    full = _checkpoint(ctx, ctx.fixture("mini_run"))
    data = full.read_bytes()
    full.write_bytes(data[: len(data) // 2])
    return _generate(ctx, full, str(full))


@case("checkpoint: a FIFO (no hang)")
def _(ctx: Any) -> Any:
    path = ctx.inp / "fifo.pt"
    os.mkfifo(path)
    return _generate(ctx, path, str(path), "FIFO")


@case("checkpoint: a symlink to /dev/zero")
def _(ctx: Any) -> Any:
    path = ctx.inp / "zero.pt"
    path.symlink_to("/dev/zero")
    return _generate(ctx, path, str(path), "device")


@case("checkpoint: unknown plugin")
def _(ctx: Any) -> Any:
    path = _checkpoint(ctx, ctx.fixture("mini_run"), plugin="nosuchgan")
    return _generate(ctx, path, str(path), "nosuchgan")


@case("checkpoint: a state that does not fit")
def _(ctx: Any) -> Any:
    path = _checkpoint(ctx, ctx.fixture("mini_run"), state={"weights": torch.zeros(3)})
    return _generate(ctx, path, str(path), "does not fit")


@case("checkpoint: params the plugin refuses")
def _(ctx: Any) -> Any:
    path = _checkpoint(ctx, ctx.fixture("mini_run"), params={"ngf": -4})
    return _generate(ctx, path, str(path), "ngf")


@case("generate: --set a param that does not act when sampling")
def _(ctx: Any) -> Any:
    path = _checkpoint(ctx, ctx.fixture("mini_run"))
    args = ("generate", str(path), "--set", "ngf=16", "--out", str(ctx.out / "gen"))
    return ctx.expect(args=args, names=("ngf", "not a sampling param"))


@case("checkpoint: name ../../x and class names with paths stay inside --out")
def _(ctx: Any) -> Any:
    path = _checkpoint(
        ctx,
        ctx.fixture("mini_run"),
        name="../../x",
        class_name=f"{ctx.outside}/evil",
        class_names=["normal", f"{ctx.outside}/evil"],
    )

    def check() -> None:
        files = list((ctx.out / "gen").rglob("*.png"))
        assert len(files) == 3 and all(ctx.out / "gen" in p.parents for p in files)

    e = _generate(ctx, path, code=0)
    e.check = check
    return e


@case("generate: --label not a class of the checkpoint")
def _(ctx: Any) -> Any:
    e = _generate(ctx, _checkpoint(ctx, ctx.fixture("mini_run")), "--label", "zebra")
    e.args = (*e.args, "--label", "zebra")
    return e


# ------------------------------------------------------------------ --resume


def _resume(ctx: Any, run_dir: Path, code: int = 0, *names: str) -> Any:
    args = ("run", str(ctx.recipe()), "--out", str(ctx.out), "--resume", str(run_dir))
    return ctx.expect(args=args, code=code, names=names)


def _copy_run(ctx: Any) -> Path:
    src = ctx.fixture("mini_run")
    dst = ctx.inp / "old-run"
    shutil.copytree(src, dst)
    return dst


def _redone(ctx: Any) -> Callable[[], None]:
    """The stage was trained again (not reused) and the new run holds a good checkpoint."""

    def check() -> None:
        from synthmri.core.training import load_checkpoint

        [run_dir] = _run_dirs(ctx)
        log = read_log(run_dir)
        assert not any("stage_reused" in r for r in log)
        assert any("note" in r and "redo" in r["note"] for r in log)
        load_checkpoint(next((run_dir / "checkpoints").glob("generate-*.pt")))

    return check


@case("--resume: no such directory")
def _(ctx: Any) -> Any:
    e = _resume(ctx, ctx.inp / "nope", 2, str(ctx.inp / "nope"))
    e.check = _no_run_dir(ctx)
    return e


@case("--resume: a folder that is no run")
def _(ctx: Any) -> Any:
    return _resume(ctx, ctx.inp, 2, "stages.json")


@case("--resume: truncated stages.json (stages redone, with a warning)")
def _(ctx: Any) -> Any:
    old = _copy_run(ctx)
    index = old / "stages.json"
    index.write_text(index.read_text()[:20])
    e = _resume(ctx, old, 0, "malformed")
    e.check = _redone(ctx)
    return e


@case("--resume: stages.json not a mapping")
def _(ctx: Any) -> Any:
    old = _copy_run(ctx)
    (old / "stages.json").write_text("[1, 2]")
    e = _resume(ctx, old, 0, "malformed")
    e.check = _redone(ctx)
    return e


@case("--resume: a stages.json entry pointing outside the run (never followed)")
def _(ctx: Any) -> Any:
    old = _copy_run(ctx)
    index = json.loads((old / "stages.json").read_text())
    for i, entry in enumerate(index.values()):
        entry["file"] = "../../outside/target" if i % 2 == 0 else str(ctx.outside / "target")
    (old / "stages.json").write_text(json.dumps(index))
    e = _resume(ctx, old, 0, "outside")
    e.check = _redone(ctx)
    return e


@case("--resume: a corrupt checkpoint is redone, not copied")
def _(ctx: Any) -> Any:
    old = _copy_run(ctx)
    for ckpt in (old / "checkpoints").glob("*.pt"):
        ckpt.write_bytes(b"corrupt")
    e = _resume(ctx, old, 0, "redo")
    e.check = _redone(ctx)
    return e


@case("--resume: reuses a good stage (documented outcome)")
def _(ctx: Any) -> Any:
    old = _copy_run(ctx)

    def check() -> None:
        [run_dir] = _run_dirs(ctx)
        assert any("stage_reused" in r for r in read_log(run_dir))

    e = _resume(ctx, old, 0)
    e.check = check
    return e


# ------------------------------------------------------------------ plugins


def _plugin(ctx: Any, source: str) -> None:
    ctx.fixture("fake_dist")("synthmri-bad", "synthmri_bad", source)


@case("plugin: sys.exit() at import (listed as broken)")
def _(ctx: Any) -> Any:
    _plugin(ctx, "import sys\nsys.exit(3)\n")
    return ctx.expect(args=("plugins", "list"), code=0, names=("broken", "sys.exit"))


@case("plugin: sys.exit() at import does not stop validate")
def _(ctx: Any) -> Any:
    _plugin(ctx, "import sys\nsys.exit(0)\n")
    return ctx.expect(args=("validate", "quickstart", "--out", str(ctx.out)), code=0, names=("ok",))


@case("plugin: a BaseException at import")
def _(ctx: Any) -> Any:
    _plugin(ctx, "raise GeneratorExit('odd')\n")
    return ctx.expect(args=("plugins", "list"), code=0, names=("GeneratorExit",))


@case("plugin: sys.exit() inside its register hook")
def _(ctx: Any) -> Any:
    _plugin(
        ctx,
        """
        import sys
        from synthmri import hookimpl

        @hookimpl
        def synthmri_register_generators(register):
            sys.exit(1)
        """,
    )
    return ctx.expect(args=("plugins", "list"), code=0, names=("SystemExit",))


_DUPLICATE = """
from synthmri import hookimpl
from synthmri.plugins.generators.dcgan import DCGAN

class Other(DCGAN):
    name = "dcgan"

@hookimpl
def synthmri_register_generators(register):
    register(Other)
"""


@case("plugin: a second dcgan; plugins list still works")
def _(ctx: Any) -> Any:
    _plugin(ctx, _DUPLICATE)
    return ctx.expect(args=("plugins", "list"), code=0, names=("duplicate", "synthmri-bad"))


@case("plugin: a second dcgan blocks only recipes that use dcgan")
def _(ctx: Any) -> Any:
    _plugin(ctx, _DUPLICATE)
    return ctx.expect(args=("validate", "quickstart"), names=("dcgan", "synthmri-bad", "synthmri "))


@case("plugin: a second dcgan does not block other names")
def _(ctx: Any) -> Any:
    _plugin(ctx, _DUPLICATE)
    text = ctx.mini.replace("plugin: dcgan", "plugin: wgan_gp").replace(", log_every: 1", "")
    args = ("validate", str(ctx.recipe(text)), "--out", str(ctx.out))
    return ctx.expect(args=args, code=0)


@case("plugin: markup in its description is shown as text")
def _(ctx: Any) -> Any:
    _plugin(
        ctx,
        """
        from synthmri import Evaluator, hookimpl

        class Odd(Evaluator):
            name = "odd[/]"
            description = "[/b]x["

            def evaluate(self, inputs, run):
                return {}

        @hookimpl
        def synthmri_register_evaluators(register):
            register(Odd)
        """,
    )
    return ctx.expect(args=("plugins", "list"), code=0, names=("[/b]x[", "odd[/]"))


@case("plugins show resnett suggests resnet")
def _(ctx: Any) -> Any:
    return ctx.expect(args=("plugins", "show", "resnett"), names=("resnett", "'resnet'"))


@case("plugins list --kind bogus")
def _(ctx: Any) -> Any:
    return ctx.expect(args=("plugins", "list", "--kind", "bogus"), names=("--kind",))


# ------------------------------------------------------------------ the runner


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name: str, ctx: Any, run_case: Callable[[Any, Case], None]) -> None:
    run_case(ctx, CASES[name])


def test_the_catalogue_is_wide() -> None:
    """Issue 18 asks for at least 60 cases (test_faults.py has more)."""
    assert len(CASES) >= 60
