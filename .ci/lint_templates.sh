#!/usr/bin/env bash
# Render every `synthmri plugins new` template into a temporary folder and lint the result
# with ruff (each rendered package is checked against its own pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$python" -c 'import sys; from synthmri.scaffold import render_all; render_all(sys.argv[1])' "$out"
"$python" -m ruff check --no-cache "$out"
"$python" -m ruff format --no-cache --check "$out"
