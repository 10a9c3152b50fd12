#!/usr/bin/env bash
# Set up (or refresh) .venv with everything installed and start the simulator TUI: a gateway on
# SQLite and 1,000 simulated SDK devices. Usage: bash scripts/run.sh [tidings sim options]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh "all"
exec .venv/bin/tidings sim "$@"
