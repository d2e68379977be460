#!/usr/bin/env bash
# The test command of the README and of CI: installs what the tests need, then lints,
# type-checks and runs the whole suite. Works on a fresh machine (root, Debian 12, Python 3.11).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== installing driftline with its dev extras"
# --upgrade --upgrade-strategy eager: test against the newest versions the ranges admit,
# which is what a user's fresh install gets (not whatever this machine already had).
python3 -m pip install --quiet --disable-pip-version-check --upgrade --upgrade-strategy eager -e '.[dev]'

# Real Prometheus (and promtool) and Alertmanager from Debian: the tests start them on
# loopback ports of their own.
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus-alertmanager >/dev/null 2>&1; then
  echo "== installing prometheus and prometheus-alertmanager (Debian)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    prometheus prometheus-alertmanager >/dev/null
fi

echo "== ruff"
python3 -m ruff check detectors monitor sinks tests benchmarks examples
echo "== mypy (strict on detectors/, monitor/, sinks/)"
python3 -m mypy
echo "== pytest"
python3 -m pytest "$@"
