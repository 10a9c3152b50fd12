#!/usr/bin/env bash
# Set up (or refresh) the development environment and run every check: lint, format, types,
# and the whole test suite. Usage: bash scripts/check.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PY" -m venv .venv
fi
echo "==> installing tidings[all,dev] (editable)"
.venv/bin/python -m pip install -q --disable-pip-version-check -U pip >/dev/null
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[all,dev]"
export PATH="$PWD/.venv/bin:$PATH"
echo "==> ruff"
ruff check .
ruff format --check .
echo "==> mypy"
scripts/typecheck.sh
echo "==> pytest"
pytest "$@"
