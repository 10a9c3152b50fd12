# Sourced by the scripts here: create .venv if needed and install tidings with the given extras.
# Usage: . scripts/_venv.sh "all,dev"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PY" -m venv .venv
fi
echo "==> installing tidings[$1] (editable)"
.venv/bin/python -m pip install -q --disable-pip-version-check -U pip >/dev/null
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$1]"
