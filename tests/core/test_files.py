"""Safe names, bounded reads and the writer bound to a folder (synthmri.core.files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from synthmri.core.errors import OutputError
from synthmri.core.files import (
    MAX_NAME_BYTES,
    OutputDir,
    UnusableFile,
    check_regular,
    read_limited,
    resolve_inside,
    safe_name,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("generate-dcgan-tumor", "generate-dcgan-tumor"),
        ("../../x", "_.-..-x"),
        ("/abs/dir/syn", "-abs-dir-syn"),
        ("..", "_."),
        (".hidden", "_hidden"),
        ("", "_"),
        ("a\x00b\nc", "a_b_c"),
        ("C:\\win\\x", "C_-win-x"),
        ("tumör 1", "tumör_1"),
    ],
)
def test_safe_name_is_one_harmless_component(name: str, expected: str) -> None:
    assert safe_name(name) == expected


def test_safe_name_cuts_long_names_and_keeps_them_apart() -> None:
    a, b = safe_name("é" * 300 + "a"), safe_name("é" * 300 + "b")
    assert a != b
    assert len(a.encode()) <= MAX_NAME_BYTES and len(b.encode()) <= MAX_NAME_BYTES


def test_output_dir_writes_atomically_inside_itself(tmp_path: Path) -> None:
    out = OutputDir(tmp_path / "run")
    path = out.write_text("hello", "sub", "../../escape.txt")
    assert path.parent == tmp_path / "run" / "sub" and path.read_text() == "hello"
    assert not (tmp_path / "escape.txt").exists()
    assert [p.name for p in (tmp_path / "run" / "sub").iterdir()] == [path.name]  # no temp file


def test_output_dir_refuses_a_symlink_that_leads_out(tmp_path: Path) -> None:
    out = OutputDir(tmp_path / "run")
    (tmp_path / "run" / "link").symlink_to(tmp_path)
    with pytest.raises(OutputError, match="outside"):
        out.write_text("x", "link", "pwned.txt")
    assert not (tmp_path / "pwned.txt").exists()


def test_a_failed_write_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = OutputDir(tmp_path / "run")

    def full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)  # the temp file is written, the rename fails
    with pytest.raises(OutputError, match=r"f\.json: cannot write \(no space left on device\)"):
        out.write_json({"a": 1}, "f.json")
    assert list((tmp_path / "run").iterdir()) == []


def test_output_dir_errors_name_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        OutputDir(blocker)
    with pytest.raises(OutputError, match=str(blocker)):
        OutputDir(blocker / "sub")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(OutputError, match="not empty"):
        OutputDir(tmp_path / "full", empty=True)
    with pytest.raises(OutputError, match="name too long"):
        OutputDir(tmp_path / ("b" * 300))


def test_new_run_dirs_are_fresh_and_inside(tmp_path: Path) -> None:
    dirs = [OutputDir.new_run(tmp_path, "../../x").root for _ in range(2)]
    assert dirs[0] != dirs[1] and all(d.parent == tmp_path for d in dirs)


def test_reads_refuse_what_is_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    with pytest.raises(UnusableFile, match="FIFO"):
        read_limited(fifo, 100)  # opened without blocking
    with pytest.raises(UnusableFile, match="device"):
        check_regular("/dev/zero")
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 2000)
    with pytest.raises(UnusableFile, match="limit"):
        read_limited(big, 1000)
    assert read_limited(big, 2000) == b"x" * 2000
    with pytest.raises(UnusableFile, match="cannot read"):
        read_limited(tmp_path / "missing", 10)


def test_resolve_inside_accepts_only_relative_paths_that_stay(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    assert resolve_inside(tmp_path, "checkpoints/a.pt") == tmp_path / "checkpoints" / "a.pt"
    (tmp_path / "checkpoints" / "out").symlink_to("/")
    for bad in ("../x", "/etc/passwd", "a/../../x", "", 3, "checkpoints/out/etc/passwd"):
        assert resolve_inside(tmp_path, bad) is None, bad
