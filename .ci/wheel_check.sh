#!/usr/bin/env bash
# Build the wheel, install it into a fresh venv outside the checkout, and run the shipped
# quick-start recipe from there (tiny), so the wheel is known to carry its recipes and
# templates. The fresh venv reuses the CI venv's dependencies (torch, MONAI, ...) through a
# .pth file instead of installing them again; synthmri itself comes from the wheel only.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/tree"  # build from a copy: setuptools leaves build/ behind in the tree it builds
cp -r pyproject.toml README.md src "$work/tree/"
.venv/bin/pip wheel -q --no-deps -w "$work/dist" "$work/tree"
python3 -m venv "$work/venv"
deps=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
own=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$deps" > "$own/ci-deps.pth"
"$work/venv/bin/pip" install -q --no-deps "$work"/dist/synthmri-*.whl
cd "$work"
where=$("$work/venv/bin/python" -c 'import synthmri, pathlib; print(pathlib.Path(synthmri.__file__).parent)')
case "$where" in "$repo"*) echo "synthmri was imported from the checkout ($where), not the wheel"; exit 1;; esac
"$work/venv/bin/synthmri" recipes list | grep -q quickstart
"$work/venv/bin/synthmri" --quiet run quickstart --out "$work/runs" \
  --set data.n=48 --set data.size=32 --set generators.0.params.iterations=3 \
  --set generators.0.params.ngf=8 --set generators.0.params.ndf=8 \
  --set experiments.0.models.0.params.epochs=1 --set experiments.0.models.1.params.epochs=1 \
  --set experiments.0.synthetic_per_class=8 >/dev/null
test -s "$work"/runs/quickstart-*/metrics.json
echo "wheel: installed outside the checkout, recipes found, quickstart ran"
