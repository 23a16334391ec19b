"""The command line: exit codes, JSON output, errors without tracebacks, a torch-free start."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthmri.core.errors import SynthMRIError

# Runs the CLI with a meta-path probe that reports the first import of torch and the
# synthmri source line that asked for it.
TORCH_PROBE = """
import sys, traceback

class Probe:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            ours = [f for f in traceback.extract_stack() if "synthmri" in f.filename]
            where = f"{ours[-1].filename}:{ours[-1].lineno}" if ours else "?"
            print(f"TORCH IMPORTED BY {where}", file=sys.stderr)
        return None

sys.meta_path.insert(0, Probe())
from synthmri.cli import main
main(sys.argv[1:])
"""


def run_probed(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``synthmri ARGS`` in a fresh interpreter under the torch probe."""
    return subprocess.run(
        [sys.executable, "-c", TORCH_PROBE, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_version_and_module_entry_point() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "synthmri", "--version"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and done.stdout.startswith("synthmri ")


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["plugins", "new", "--help"]])
def test_help_and_version_import_no_torch(args: list[str]) -> None:
    done = run_probed(*args)
    assert done.returncode == 0, done.stderr
    assert "TORCH IMPORTED BY" not in done.stderr, done.stderr


def test_plugins_list_imports_no_torch() -> None:
    # the example third-party plugin may import torch: block it, keep the built-ins
    done = run_probed("plugins", "list", env={"SYNTHMRI_DISABLE_PLUGINS": "synthmri-pca"})
    assert done.returncode == 0, done.stderr
    assert "dcgan" in done.stdout and "broken" not in done.stdout
    assert "TORCH IMPORTED BY" not in done.stderr, done.stderr


@pytest.mark.parametrize(
    "args", [["plugins", "list", "--kind", "painter"], ["plugins", "new", "painter", "x"]]
)
def test_a_bad_kind_is_a_usage_error(cli, args: list[str]) -> None:
    code, _, err = cli(*args)
    assert code == 2 and "Traceback" not in err
    assert "painter" in err and "generator" in err and "evaluator" in err


def test_plugins_list_filters_by_kind(cli, toy_plugins: str) -> None:
    code, out, _ = cli("plugins", "list", "--json", "--kind", "segmenter")
    assert code == 0
    rows = [r for r in json.loads(out) if r["status"] == "ok"]
    assert rows and {r["kind"] for r in rows} == {"segmenter"}
    assert "toy_threshold" in {r["name"] for r in rows}


def test_debug_shows_the_error_itself(cli) -> None:
    code, _, err = cli("recipes", "show", "quikstart")
    assert code == 2 and "error:" in err
    with pytest.raises(SynthMRIError, match="quikstart"):
        cli("--debug", "recipes", "show", "quikstart")


def test_plugins_list_json_is_valid(cli, toy_plugins: str) -> None:
    code, out, _ = cli("plugins", "list", "--json")
    assert code == 0
    rows = json.loads(out)
    toy = next(r for r in rows if r["name"] == "toy_mean")
    assert toy == {
        "name": "toy_mean",
        "kind": "generator",
        "description": toy["description"],
        "package": "synthmri-toys",
        "version": "1.2.3",
        "status": "ok",
    }


def test_plugins_show_lists_params(cli, toy_plugins: str) -> None:
    code, out, _ = cli("plugins", "show", "toy_mean")
    assert code == 0 and "noise" in out and "synthmri-toys" in out
    code, _, err = cli("plugins", "show", "toy_maen")
    assert code == 2 and "toy_mean" in err
    code, out, _ = cli("plugins", "show", "ensemble_anomaly")  # a default from a factory
    assert code == 0 and "dae_anomaly" in out and "Undefined" not in out


RECIPE = """\
name: clitoy
data: {n: 32, size: 32}
generators: [{plugin: toy_mean}]
experiments:
  - models: [toy_intensity]
    train_on: [real, synthetic]
    synthetic_per_class: 8
evaluate: [toy_count]
"""


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        (("data: {n: 32, size: 32}", "data: {n: 32, size: 32, colour: 1}"), "data.colour"),
        (("size: 32}", "size: thirty}"), "data.size"),
        (("plugin: toy_mean", "plugin: toy_nope"), "generators.0.plugin"),
        (("name: clitoy", "name: [clitoy"), "invalid YAML"),
    ],
)
def test_validate_errors_exit_2_without_traceback(
    cli, tmp_path: Path, toy_plugins: str, change: tuple[str, str], expect: str
) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.replace(*change))
    code, _, err = cli("validate", str(path))
    assert code == 2
    assert expect in err and "Traceback" not in err
    assert str(path) in err.replace("\n", "")


def test_validate_ok_and_set(cli, tmp_path: Path, toy_plugins: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE)
    code, out, _ = cli("validate", str(path), "--set", "data.size=64")
    assert code == 0 and "ok" in out
    code, _, err = cli("validate", str(path), "--set", "data.size=tiny")
    assert code == 2 and "data.size" in err


def test_run_prints_table_and_report(cli, tmp_path: Path, toy_plugins: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE)
    code, out, err = cli("--quiet", "run", str(path), "--out", str(tmp_path / "runs"))
    assert code == 0, err
    assert "classification" in out and "report.html" in out
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "report.html").is_file()


def test_run_piped_prints_plain_progress_and_whole_table(
    cli, tmp_path: Path, toy_plugins: str
) -> None:
    """Captured stdout is not a terminal: progress comes as plain start/done lines with the
    elapsed time (no hidden bars), and no cell of the results table is cut to 80 columns."""
    path = tmp_path / "r.yaml"
    long = "a-generator-label-far-too-long-for-eighty-columns"  # widens the table past 80
    path.write_text(RECIPE.replace("[{plugin: toy_mean}]", f"[{{plugin: toy_mean, name: {long}}}]"))
    code, out, err = cli("run", str(path), "--out", str(tmp_path / "runs"))
    assert code == 0, err
    assert re.search(rf"^\d\d:\d\d:\d\d start sample {long}$", out, re.M), out
    assert re.search(rf"^\d\d:\d\d:\d\d done sample {long} in \d+\.\d s$", out, re.M), out
    assert "\x1b[" not in out and "…" not in out
    assert max(len(line) for line in out.splitlines()) > 80
    assert re.search(rf"│ +{long} │ +synthetic │", out), out  # the long cell whole, one line
    report = next(Path(tmp_path / "runs").iterdir()) / "report.html"
    assert f"report: {report}\n" in out  # the path on one line, whatever its length


def test_run_on_missing_folder_exits_2(cli, tmp_path: Path, toy_plugins: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE)
    code, _, err = cli(
        "run",
        str(path),
        "--set",
        f"data.path={tmp_path / 'nope'}",
        "--out",
        str(tmp_path / "runs"),
    )
    assert code == 2 and "nope" in err and "Traceback" not in err


def test_recipes_list_and_show(cli) -> None:
    code, out, _ = cli("recipes", "list")
    assert code == 0 and "quickstart" in out
    code, out, _ = cli("recipes", "show", "quickstart")
    assert code == 0 and "name: quickstart" in out
    code, _, err = cli("recipes", "show", "quikstart")
    assert code == 2 and "quickstart" in err


def test_phantoms_command_writes_class_folders(cli, tmp_path: Path) -> None:
    out_dir = tmp_path / "ph"
    code, _, err = cli("phantoms", "--out", str(out_dir), "--n", "6", "--size", "32")
    assert code == 0, err
    assert {p.name for p in out_dir.iterdir()} == {"normal", "tumor"}
    assert list(out_dir.glob("*/*_mask.png"))
    code, _, err = cli("phantoms", "--out", str(out_dir), "--n", "6")
    assert code == 2 and str(out_dir) in err  # never overwrites
    code, _, err = cli("phantoms", "--out", str(tmp_path / "m"), "--n", "6", "--mask", "oedema")
    assert code == 2 and "oedema" in err and not (tmp_path / "m").exists()


def test_phantoms_command_writes_whole_tumour_masks(cli, tmp_path: Path) -> None:
    area = {}
    for mask in ("core", "whole"):
        out_dir = tmp_path / mask
        args = ("phantoms", "--out", str(out_dir), "--n", "6", "--size", "32", "--mask", mask)
        assert cli(*args)[0] == 0
        area[mask] = sum(
            int((np.asarray(Image.open(p)) > 127).sum()) for p in out_dir.glob("tumor/*_mask.png")
        )
    assert area["whole"] > area["core"] > 0


def test_generate_from_checkpoint(cli, tmp_path: Path, toy_plugins: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE)
    assert cli("-q", "run", str(path), "--out", str(tmp_path / "runs"))[0] == 0
    ckpt = next((tmp_path / "runs").glob("*/checkpoints/generate-toy_mean-tumor.pt"))
    out_dir = tmp_path / "gen"
    code, _, err = cli("generate", str(ckpt), "-n", "5", "--out", str(out_dir))
    assert code == 0, err
    assert len(list(out_dir.glob("tumor/*.png"))) == 5
    code, _, err = cli("generate", str(ckpt), "-n", "5", "--out", str(out_dir))
    assert code == 2 and "not empty" in err
    code, _, err = cli("generate", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "x"))
    assert code == 2 and "r.yaml" in err


def test_generate_from_a_conditional_checkpoint(cli, tmp_path: Path, toy_plugins: str) -> None:
    """Without ``--label`` a conditional model writes N of each class; with it, one class."""
    path = tmp_path / "r.yaml"
    path.write_text(
        RECIPE.replace(
            "[{plugin: toy_mean}]",
            "[{plugin: toy_mean, per_class: false, params: {conditional: true}}]",
        )
    )
    assert cli("-q", "run", str(path), "--out", str(tmp_path / "runs"))[0] == 0
    ckpt = str(next((tmp_path / "runs").glob("*/checkpoints/generate-toy_mean.pt")))
    code, _, err = cli("generate", ckpt, "-n", "3", "--out", str(tmp_path / "all"))
    assert code == 0, err
    counts = {d.name: len(list(d.glob("*.png"))) for d in (tmp_path / "all").iterdir()}
    assert counts == {"normal": 3, "tumor": 3}
    one = tmp_path / "one"
    args = ("-n", "2", "--label", "tumor", "--device", "cpu", "--out", str(one))
    code, _, err = cli("generate", ckpt, *args)
    assert code == 0, err
    assert [d.name for d in one.iterdir()] == ["tumor"] and len(list(one.glob("*/*.png"))) == 2


def test_generate_overrides_a_sampling_param(cli, tmp_path: Path, toy_plugins: str) -> None:
    """``--set name=value`` replaces the checkpoint's param when sampling; a bad one is a
    one-line error."""
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE)
    assert cli("-q", "run", str(path), "--out", str(tmp_path / "runs"))[0] == 0
    ckpt = str(next((tmp_path / "runs").glob("*/checkpoints/generate-toy_mean-tumor.pt")))

    def spread(*args: str) -> float:
        out_dir = tmp_path / f"gen{len(list(tmp_path.iterdir()))}"
        code, _, err = cli("generate", ckpt, "-n", "4", "--out", str(out_dir), *args)
        assert code == 0, err
        images = [np.asarray(Image.open(p), dtype=float) for p in out_dir.glob("tumor/*.png")]
        return float(np.std(np.stack(images), axis=0).max())

    assert spread() > 0 and spread("--set", "noise=0") == 0
    code, out, _ = cli("plugins", "show", "toy_mean")
    assert code == 0 and "sampling params" in out and "noise" in out
    for bad, named in (("noise=-1", "noise"), ("a.b=1", "a.b"), ("color=2", "not a sampling")):
        code, _, err = cli("generate", ckpt, "--out", str(tmp_path / "bad"), "--set", bad)
        assert code == 2 and named in err and "Traceback" not in err
