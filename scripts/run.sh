#!/usr/bin/env bash
# Set up (or refresh) .venv with everything installed and start the demo: an embedded gateway on
# SQLite plus one example device showing banners and its inbox. Usage: bash scripts/run.sh [args]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PY" -m venv .venv
fi
echo "==> installing tidings[all] (editable)"
.venv/bin/python -m pip install -q --disable-pip-version-check -U pip >/dev/null
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[all]"
exec .venv/bin/tidings demo "$@"
