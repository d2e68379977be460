"""The operations bundle (``deploy/``) against driftline itself: the Prometheus rules pass
promtool's checks and unit tests, and every metric they name is one driftline exports (the
real-Prometheus test in test_e2e_delivery evaluates each expression against a scraped
daemon)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.core import CounterMetricFamily

from monitor.serve.metrics import FAMILIES

DEPLOY = Path(__file__).parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yml"
DASHBOARD = DEPLOY / "grafana" / "driftline.json"
# What Grafana puts in a query before sending it: every model and feature, a rate window.
GRAFANA_VARIABLES = {"$model": ".*", "$feature": ".*", "$__rate_interval": "1m"}


def exported() -> set[str]:
    """Every metric name driftline's /metrics can hold."""
    return {
        f"driftline_{name}" + ("_total" if kind is CounterMetricFamily else "")
        for kind, name, *_ in FAMILIES
    }


def expressions() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule["expr"] for group in doc["groups"] for rule in group["rules"]]


def panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def dashboard_expressions() -> list[str]:
    """Every query of the dashboard, its variables filled in as Grafana would."""
    out = []
    for panel in panels():
        for target in panel["targets"]:
            expr = target["expr"]
            for name, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(name, value)
            out.append(expr)
    return out


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


def test_the_dashboard_names_only_exported_metrics_and_its_own_variables() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] == "driftline" and doc["title"] == "driftline"
    variables = {v["name"] for v in doc["templating"]["list"]}
    assert variables == {"datasource", "model", "feature"}
    raw = [t["expr"] for p in panels() for t in p["targets"]]
    used = {v for expr in raw for v in re.findall(r"\$(\w+)", expr)}
    assert used <= variables | {"__rate_interval"}, used
    named = {
        m for expr in dashboard_expressions() for m in re.findall(r"\bdriftline_[a-z_]+", expr)
    }
    assert named <= exported(), named - exported()
    titles = " ".join(p["title"].lower() for p in panels())
    for topic in ("drift score", "firing", "events", "rejected", "lag", "outbox", "checkpoint",
                  "learner", "challenger"):  # fmt: skip
        assert topic in titles, topic
    boxes = [(p["gridPos"]["x"], p["gridPos"]["y"], p["gridPos"]["w"]) for p in panels()]
    assert all(x + w <= 24 for x, _, w in boxes) and len(set(boxes)) == len(boxes)
