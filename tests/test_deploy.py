"""The operations bundle (``deploy/``) against driftline itself: the Prometheus rules pass
promtool's checks and unit tests, and every metric they name is one driftline exports (the
real-Prometheus test in test_e2e_delivery evaluates each expression against a scraped
daemon)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
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


# -- the container image and the Kubernetes example -------------------------------------------
def manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def kind(name: str) -> list[dict[str, Any]]:
    return [d for d in manifests() if d["kind"] == name]


def dockerfile() -> dict[str, str]:
    """The Dockerfile's last value of each instruction (continuation lines joined)."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out[word] = rest.strip()
    return out


def test_the_kubernetes_example_matches_the_command_the_configuration_and_the_image() -> None:
    from monitor.cli import build_parser
    from monitor.config.schema import parse_config
    from monitor.serve.http import build_app

    (deployment,) = kind("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (sidecar,) = [c for c in pod["containers"] if c["name"] == "driftline"]
    args = build_parser().parse_args(sidecar["args"])  # the command takes its arguments
    assert args.command == "run"
    mounts = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_map = volumes["config"]["configMap"]["name"]
    (cm,) = [c for c in kind("ConfigMap") if c["metadata"]["name"] == config_map]
    (key,) = cm["data"]
    assert str(args.config) == f"{mounts['config']}/{key}"
    env = {e["name"]: "x" for e in sidecar["env"]}
    config = parse_config(yaml.safe_load(cm["data"][key]), env=env)  # valid, every ${VAR} set
    assert config.state.path is not None and str(config.state.path) == mounts["state"]
    assert "state" in volumes and volumes["state"].get("persistentVolumeClaim")
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert ports["http-metrics"] == config.http.port and config.http.host == "0.0.0.0"
    routes = {r.resource.canonical for r in build_app(lambda: None, registry=None).router.routes()}  # type: ignore[arg-type]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        get = sidecar[probe]["httpGet"]
        assert get["port"] == "http-metrics" and get["path"] in routes, probe
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert sidecar["securityContext"]["runAsUser"] != 0
    # the Service and the ServiceMonitor reach that port's /metrics
    (service,) = kind("Service")
    (sport,) = service["spec"]["ports"]
    assert sport["targetPort"] == "http-metrics"
    assert (
        service["spec"]["selector"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    (monitor,) = kind("ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == sport["name"] and endpoint["path"] in routes
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    # the image: its user, port, volume and default command are the same
    docker = dockerfile()
    assert docker["USER"] == str(sidecar["securityContext"]["runAsUser"])
    assert docker["EXPOSE"] == str(config.http.port)
    assert json.loads(docker["VOLUME"]) == [mounts["state"]]
    assert json.loads(docker["ENTRYPOINT"]) == ["driftline"]
    assert json.loads(docker["CMD"]) == sidecar["args"]
    assert "python -m detectors.warmup" in docker["RUN"]
    copied = {
        line.split()[1]
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY")
    }
    assert {"detectors", "monitor", "sinks", "pyproject.toml"} <= copied


def test_the_image_build_warms_every_kernel() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "detectors.warmup"], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    assert "adwin, adwin-parallel, categorical, categorical_cusum, cusum, ks, psi" in out.stdout
