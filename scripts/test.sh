#!/usr/bin/env bash
# The test command of the README and of CI: installs what the tests need, then lints,
# type-checks and runs the whole suite. Works on a fresh machine (root, Debian 12, Python 3.11).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# A Python whose packages the system manages (Debian's and Ubuntu's own, PEP 668) takes
# no pip installs: use (and make, once) a virtual environment in .venv instead.
PY=python3
if [ -z "${VIRTUAL_ENV:-}" ] && python3 - <<'PYEOF'
import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["stdlib"], "EXTERNALLY-MANAGED")) else 1)
PYEOF
then
  if [ ! -x .venv/bin/python ]; then
    echo "== making a virtual environment in .venv (this Python's packages are the system's)"
    if ! python3 -m venv .venv 2>/dev/null; then
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
      rm -rf .venv
      python3 -m venv .venv
    fi
  fi
  PY=.venv/bin/python
fi

echo "== installing driftline with its dev extras"
# --upgrade --upgrade-strategy eager: test against the newest versions the ranges admit,
# which is what a user's fresh install gets (not whatever this machine already had).
$PY -m pip install --quiet --disable-pip-version-check --upgrade --upgrade-strategy eager -e '.[dev]'

# Real Prometheus (and promtool) and Alertmanager from Debian: the tests start them on
# loopback ports of their own. Debian's chromium and its chromedriver: the browser tests
# drive them with selenium (nothing downloaded).
NEED=""
command -v promtool >/dev/null 2>&1 || NEED="$NEED prometheus"
command -v prometheus-alertmanager >/dev/null 2>&1 || NEED="$NEED prometheus-alertmanager"
command -v chromium >/dev/null 2>&1 || NEED="$NEED chromium"
command -v chromedriver >/dev/null 2>&1 || NEED="$NEED chromium-driver"
if [ -n "$NEED" ]; then
  echo "== installing$NEED (Debian)"
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $NEED >/dev/null
fi

echo "== ruff"
$PY -m ruff check detectors monitor sinks tests benchmarks examples
echo "== mypy (strict on detectors/, monitor/, sinks/)"
$PY -m mypy
echo "== pytest"
$PY -m pytest "$@"
