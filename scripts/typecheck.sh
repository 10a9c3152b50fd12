#!/usr/bin/env bash
# mypy cannot follow setuptools' package-dir mapping, so give it a tree of links shaped like the
# installed `tidings` package and check that.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=build/typecheck
rm -rf "$tree" && mkdir -p "$tree/tidings"
for f in tidings/*.py; do ln -s "../../../$f" "$tree/tidings/"; done
for pkg in protocol server client_sdk simulator; do ln -s "../../../$pkg" "$tree/tidings/$pkg"; done
MYPYPATH="$tree" exec mypy -p tidings "$@"
