"""Day-two operations against the real ``driftline`` command and a real broker (Tansu):
logs a machine can parse, re-baselining by HTTP and by the CLI, a rebuilt reference file
across a restart, and reloading the configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitor.demo.broker import EmbeddedBroker, free_port

from .conftest import daemon_config, loan_events, produce
from .test_e2e_faults import cli, wait_status
from .test_e2e_kafka import output_of, write_config

pytestmark = pytest.mark.e2e


def test_json_logs_are_one_object_per_line_and_name_each_rejected_record(
    broker: EmbeddedBroker, topic: str, tmp_path: Path
) -> None:
    good = loan_events(1500, drift_at=None, seed=3)
    bad = [
        b'{not json, "ssn": "SECRET-PAYLOAD"}',
        b'{"model": "nobody", "features": {}}',
        b'{"model": "credit-v1", "ssn": "SECRET-PAYLOAD"}',
    ]
    produce(broker.bootstrap, topic, good[:700] + bad + good[700:])
    port = free_port()
    doc = daemon_config(broker.bootstrap, topic, logging={"format": "json"})
    doc["http"]["port"] = port
    config = write_config(tmp_path, doc)
    with cli(config):
        wait_status(port, lambda s: s["models"]["credit-v1"]["events"] == 1500)
    lines = [json.loads(line) for line in output_of(config).splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= set(x) for x in lines)
    rejected = {x["reason"]: x for x in lines if "reason" in x}
    assert set(rejected) == {"bad_json", "unknown_model", "missing_features"}
    assert rejected["bad_json"]["topic"] == topic
    assert rejected["bad_json"]["partition"] == 0
    assert rejected["bad_json"]["offset"] == 700
    assert rejected["missing_features"]["offset"] == 702
    assert rejected["missing_features"]["model"] == "credit-v1"
    assert rejected["unknown_model"]["model"] is None  # not a configured model: not a label
    assert "SECRET-PAYLOAD" not in output_of(config)  # never the payload
