"""Third-party plugins for real: the example package and ``synthmri plugins new``.

The example package ``examples/synthmri-pca`` must be installed in the test
environment (CI runs ``pip install --no-deps --no-build-isolation -e examples/synthmri-pca``);
its tests here skip with that reason when it is not. The scaffold tests write a
package of each kind and run its generated test: in-process through a fake
distribution (fast), or installed with pip into this environment (slow).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from types import ModuleType

import pytest

import synthmri
from synthmri.core.errors import ConfigError, PluginError
from synthmri.core.plugins import DISABLE_ENV, get_registry, reset_registry
from synthmri.scaffold import Template, names, plugin_files, render_all, scaffold_plugin

EXAMPLE_DIST = "synthmri-pca"
EXAMPLE_DIR = Path(__file__).resolve().parents[1] / "examples" / "synthmri-pca"


def _example_version() -> str | None:
    try:
        return metadata.version(EXAMPLE_DIST)
    except metadata.PackageNotFoundError:
        return None


needs_example = pytest.mark.skipif(
    _example_version() is None,
    reason=f"{EXAMPLE_DIST} is not installed; run "
    f"`pip install --no-deps --no-build-isolation -e {EXAMPLE_DIR}`",
)


@pytest.fixture
def fresh_registry() -> Iterator[None]:
    """Rediscover plugins before and after the test (other tests install fakes)."""
    reset_registry()
    yield
    reset_registry()


# ----------------------------------------------------------------- the example package


@needs_example
def test_plugins_list_shows_the_example_package(cli, fresh_registry) -> None:
    code, out, _ = cli("plugins", "list", "--json")
    assert code == 0
    rows = {(r["kind"], r["name"]): r for r in json.loads(out)}
    version = _example_version()
    row = rows.get(("evaluator", "pca_coverage"))
    assert row is not None, f"pca_coverage not listed; broken: {get_registry().broken}"
    assert (row["package"], row["version"], row["status"]) == (EXAMPLE_DIST, version, "ok")
    assert row["description"]
    # pca_gmm moved from the example into the built-ins: listed once, as synthmri's
    assert rows[("generator", "pca_gmm")]["package"] == "synthmri"
    assert not [b for b in get_registry().broken if b.package == EXAMPLE_DIST]


RECIPE = """\
name: third-party-pca
seed: 0
data: {source: phantoms, n: 64, size: 32, split: {val: 0.15, test: 0.25}}
generators:
  - plugin: pca_gmm
    params: {n_components: 8, n_mixture: 2}
experiments:
  - name: tstr
    task: classify
    models:  # a tiny classifier from tests/toy_plugins.py: the point here is the generator
      - plugin: toy_intensity
        params: {steps: 20}
    train_on: [synthetic]
    synthetic_per_class: 16
evaluate: [classification, pca_coverage]
"""


@needs_example
def test_a_recipe_runs_with_the_example_evaluator(
    tmp_path: Path, fresh_registry, toy_plugins: str
) -> None:
    from synthmri.core.pipeline import load_generator, run_recipe
    from synthmri.core.recipe import parse_recipe

    result = run_recipe(parse_recipe(RECIPE), out=tmp_path, device="cpu")
    metrics = result.metrics
    assert [g["plugin"] for g in metrics["generators"]] == ["pca_gmm"]
    (row,) = metrics["classification"]
    assert (row["generator"], row["train_on"], row["n_train"]) == ("pca_gmm", "synthetic", 32)
    assert 0.0 <= row["accuracy"] <= 1.0 and row["n_test"] == metrics["data"]["n_test"]
    coverage = metrics["pca_coverage"]
    assert {(r["generator"], r["class"]) for r in coverage} == {
        ("pca_gmm", "normal"),
        ("pca_gmm", "tumor"),
    }
    assert all(0.0 <= r["precision"] <= 1.0 and 0.0 <= r["recall"] <= 1.0 for r in coverage)
    run_dir = result.run_dir
    assert run_dir is not None
    assert len(list((run_dir / "synthetic" / "pca_gmm" / "tumor").glob("*.png"))) == 16
    # the checkpoint the core wrote (read with weights_only=True) restores the generator
    model, payload = load_generator(run_dir / "checkpoints" / "generate-pca_gmm-tumor.pt")
    assert payload["plugin"] == "pca_gmm"
    out = model.sample(4, seed=0)
    assert tuple(out.images.shape) == (4, 1, 32, 32)


@needs_example
@pytest.mark.parametrize("blocked", [EXAMPLE_DIST, "pca"])  # distribution or entry-point name
def test_disable_env_hides_the_example(blocked: str, monkeypatch, fresh_registry) -> None:
    assert "pca_coverage" in {i.name for i in synthmri.list_plugins("evaluator")}
    monkeypatch.setenv(DISABLE_ENV, f"something-else, {blocked}")
    reset_registry()
    assert "pca_coverage" not in {i.name for i in synthmri.list_plugins("evaluator")}
    with pytest.raises(PluginError, match="unknown evaluator 'pca_coverage'"):
        synthmri.get_plugin("evaluator", "pca_coverage")
    generators = {i.name for i in synthmri.list_plugins("generator")}
    assert {"dcgan", "pca_gmm"} <= generators  # built-ins stay


# ----------------------------------------------------------------- synthmri plugins new

KIND_NAMES = {
    "generator": "tp_pixel_gauss",
    "gan": "tp_small_gan",
    "classifier": "tp_logreg",
    "segmenter": "tp_threshold",
    "evaluator": "tp_count",
}
assert set(KIND_NAMES) == set(Template), "every template is tested"


def _load_test_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"generated_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_generated_tests(package: Path) -> list[str]:
    """Call every ``test_*`` function of the package's generated tests; their names."""
    ran = []
    for path in sorted((package / "tests").glob("test_*.py")):
        module = _load_test_module(path)
        for attr in sorted(vars(module)):
            if attr.startswith("test_") and callable(getattr(module, attr)):
                getattr(module, attr)()
                ran.append(attr)
    return ran


@pytest.mark.parametrize("kind", list(KIND_NAMES))
def test_scaffolded_plugin_works_without_installing(
    kind: str, tmp_path: Path, fake_dist: Callable[..., str]
) -> None:
    """Scaffold, register the module through a fake distribution, run its own test."""
    name = KIND_NAMES[kind]
    package = scaffold_plugin(kind, name, tmp_path / "pkg")
    sub = names(kind, name)
    source = (package / "src" / sub["__MODULE__"] / "__init__.py").read_text()
    fake_dist(sub["__DIST__"], sub["__MODULE__"], source, entry=name, version="0.1.0")
    info = synthmri.core.plugins.get_plugin_info(sub["__KIND__"], name)
    assert (info.package, info.version) == (sub["__DIST__"], "0.1.0")
    assert info.cls.__name__ == sub["__CLASS__"] and info.description
    ran = _run_generated_tests(package)
    assert "test_the_hook_registers_the_class" in ran and len(ran) >= 2


def test_scaffolded_generator_imports_from_its_src_folder(tmp_path: Path, monkeypatch) -> None:
    """The package layout itself works: src/ on sys.path, then the generated test passes."""
    from synthmri.testing import check_generator

    package = scaffold_plugin("generator", "tp_src_gauss", tmp_path / "pkg")
    monkeypatch.syspath_prepend(str(package / "src"))
    try:
        module = importlib.import_module("synthmri_tp_src_gauss")
        check_generator(module.TpSrcGaussGenerator, {"temperature": 0.5})
        assert _run_generated_tests(package)
    finally:
        sys.modules.pop("synthmri_tp_src_gauss", None)


def test_scaffold_writes_the_package_files(tmp_path: Path) -> None:
    package = scaffold_plugin("classifier", "tp_files", tmp_path / "out")
    files = sorted(str(p.relative_to(package)) for p in package.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "pyproject.toml",
        "src/synthmri_tp_files/__init__.py",
        "src/synthmri_tp_files/py.typed",
        "tests/test_synthmri_tp_files.py",
    ]
    pyproject = (package / "pyproject.toml").read_text()
    assert 'name = "synthmri-tp-files"' in pyproject
    assert '[project.entry-points.synthmri]\ntp_files = "synthmri_tp_files"' in pyproject
    readme = (package / "README.md").read_text()
    assert "pip install -e ." in readme and "plugin: tp_files" in readme
    for text in plugin_files("classifier", "tp_files").values():
        assert "__NAME__" not in text and "__CLASS__" not in text  # every placeholder filled


def test_the_gan_template_writes_a_generator_on_the_gan_base(tmp_path: Path) -> None:
    sub = names("gan", "tp_files_gan")
    assert (sub["__KIND__"], sub["__CLASS__"]) == ("generator", "TpFilesGanGenerator")
    source = plugin_files("gan", "tp_files_gan")["src/synthmri_tp_files_gan/__init__.py"]
    assert "(GAN)" in source and "GANParams" in source


def test_every_rendered_template_passes_ruff(tmp_path: Path) -> None:
    """What CI runs (.ci/lint_templates.sh): every template, short and longest names."""
    if shutil.which("ruff") is None and importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    packages = render_all(tmp_path)
    assert len(packages) == 2 * len(Template)
    for args in (["check"], ["format", "--check"]):
        done = subprocess.run(
            [sys.executable, "-m", "ruff", *args, "--no-cache", str(tmp_path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["painter", "tp_x"], "'painter' is not one of"),
        (["generator", "MyGan"], "invalid plugin name 'MyGan'"),
        (["generator", "my-gan"], "invalid plugin name 'my-gan'"),
        (["generator", "1gan"], "invalid plugin name '1gan'"),
        (["generator", "class"], "invalid plugin name 'class'"),
        (["generator", "tp__x"], "invalid plugin name 'tp__x'"),
        (["generator", "dcgan"], "a generator named 'dcgan' already exists"),
    ],
)
def test_new_rejects_bad_input_with_exit_2(
    args: list[str], message: str, cli, tmp_path: Path
) -> None:
    out = tmp_path / "pkg"
    code, _, err = cli("plugins", "new", *args, "--out", str(out))
    assert code == 2
    assert message in err and "Traceback" not in err
    assert not out.exists(), "nothing may be written on an error"


def test_new_refuses_a_non_empty_folder(cli, tmp_path: Path) -> None:
    out = tmp_path / "pkg"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = cli("plugins", "new", "generator", "tp_x", "--out", str(out))
    assert code == 2 and "not empty" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    with pytest.raises(ConfigError, match="not empty"):
        scaffold_plugin("generator", "tp_x", out)
    with pytest.raises(ConfigError, match="unknown plugin kind 'painter'"):
        scaffold_plugin("painter", "tp_x", tmp_path / "other")


def test_new_writes_into_an_empty_or_default_folder(cli, tmp_path: Path, monkeypatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, _ = cli("plugins", "new", "evaluator", "tp_count", "--out", str(empty))
    assert code == 0 and "pip install -e" in out
    assert (empty / "src" / "synthmri_tp_count" / "__init__.py").is_file()
    monkeypatch.chdir(tmp_path)
    code, _, _ = cli("plugins", "new", "segmenter", "tp_seg")
    assert code == 0 and (tmp_path / "synthmri-tp-seg" / "pyproject.toml").is_file()


# ----------------------------------------------------------------- installed with pip (slow)


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=env, check=False
    )


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KIND_NAMES))
def test_scaffolded_plugin_installs_offline_and_its_test_passes(kind: str, tmp_path: Path) -> None:
    if _pip("--version").returncode != 0:
        pytest.skip("pip is not available in this environment")
    if importlib.util.find_spec("setuptools") is None:  # venvs of Python >= 3.12 lack it
        pytest.skip("setuptools is not installed here; an offline (--no-build-isolation) "
                    "install needs it: pip install setuptools")  # fmt: skip
    name = f"{KIND_NAMES[kind]}_inst"
    dist, plugin_kind = names(kind, name)["__DIST__"], names(kind, name)["__KIND__"]
    package = scaffold_plugin(kind, name, tmp_path / dist)
    # --no-index: the install must not need the network (a build needing a download fails)
    done = _pip("install", "--no-deps", "--no-build-isolation", "--no-index", "-e", str(package))
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        env = {k: v for k, v in os.environ.items() if k != DISABLE_ENV}
        listed = subprocess.run(
            [sys.executable, "-m", "synthmri", "plugins", "list", "--json", "--kind", plugin_kind],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert listed.returncode == 0, listed.stderr
        row = next(r for r in json.loads(listed.stdout) if r["name"] == name)
        assert (row["package"], row["version"], row["status"]) == (dist, "0.1.0", "ok")
        tested = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
            cwd=package,
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr[-2000:]
        assert "2 passed" in tested.stdout
    finally:
        _pip("uninstall", "-y", dist)
        reset_registry()
    assert _pip("show", dist).returncode != 0, f"{dist} is still installed"
