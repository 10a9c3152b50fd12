#!/usr/bin/env bash
# Set up (or refresh) .venv with everything installed and start the demo: an embedded gateway on
# SQLite plus one example device showing banners and its inbox. Usage: bash scripts/run.sh [args]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh "all"
exec .venv/bin/tidings demo "$@"
