"""The operations bundle (``deploy/``) against driftline itself: the Prometheus rules pass
promtool's checks and unit tests, and every metric they name is one driftline exports (the
real-Prometheus test in test_e2e_delivery evaluates each expression against a scraped
daemon)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml
from prometheus_client.core import CounterMetricFamily

from monitor.serve.metrics import FAMILIES

DEPLOY = Path(__file__).parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yml"


def exported() -> set[str]:
    """Every metric name driftline's /metrics can hold."""
    return {
        f"driftline_{name}" + ("_total" if kind is CounterMetricFamily else "")
        for kind, name, *_ in FAMILIES
    }


def expressions() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule["expr"] for group in doc["groups"] for rule in group["rules"]]


def test_the_rules_pass_promtool_and_their_unit_tests() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian package 'prometheus') is needed; scripts/test.sh installs it"
    check = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = subprocess.run(
        [promtool, "test", "rules", "rules.test.yml"],
        cwd=RULES.parent,
        capture_output=True,
        text=True,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr


def test_every_metric_the_rules_name_is_exported_and_every_alert_has_a_runbook() -> None:
    named = {m for expr in expressions() for m in re.findall(r"\bdriftline_[a-z_]+", expr)}
    assert named and named <= exported(), named - exported()
    doc = yaml.safe_load(RULES.read_text())
    alerts = [r for g in doc["groups"] for r in g["rules"] if "alert" in r]
    assert len(alerts) >= 10
    assert all(r["annotations"].get("runbook") and r["annotations"].get("summary") for r in alerts)
