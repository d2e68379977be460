#!/usr/bin/env bash
# The test command of the README and of CI: installs what the tests need, then lints,
# type-checks and runs the whole suite. Works on a fresh machine (root, Debian 12, Python 3.11).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== installing driftline with its dev extras"
python3 -m pip install --quiet --disable-pip-version-check -e '.[dev]'

echo "== ruff"
python3 -m ruff check detectors monitor sinks tests benchmarks
echo "== mypy (strict on detectors/, monitor/, sinks/)"
python3 -m mypy
echo "== pytest"
python3 -m pytest "$@"
