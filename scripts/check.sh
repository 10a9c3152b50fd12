#!/usr/bin/env bash
# Set up (or refresh) the development environment and run every check: lint, format, types,
# and the whole test suite. Usage: bash scripts/check.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh "all,dev"
export PATH="$PWD/.venv/bin:$PATH"
echo "==> ruff"
ruff check .
ruff format --check .
echo "==> mypy"
scripts/typecheck.sh
echo "==> pytest"
pytest "$@"
