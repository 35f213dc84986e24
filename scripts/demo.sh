#!/usr/bin/env bash
# The demo: build the example program in a scratch build tree and show what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bash examples/hello/build.sh "$work/tree"
echo "== slimmer deps $work/tree/bin/hello"
.venv/bin/slimmer deps "$work/tree/bin/hello"
echo "== every file the loader opens"
.venv/bin/slimmer deps --list "$work/tree/bin/hello"
