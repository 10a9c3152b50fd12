#!/usr/bin/env bash
# Type-check the whole package under strict mypy (settings in pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
MYPYPATH=src exec mypy -p tidings "$@"
