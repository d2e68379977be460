"""The ``driftline`` command as a user runs it: a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_version() -> None:
    out = run("--version")
    assert out.returncode == 0
    assert out.stdout.startswith("driftline ")


def test_no_command_prints_help_and_exits_2() -> None:
    out = run()
    assert out.returncode == 2
    assert "demo" in out.stdout


@pytest.mark.parametrize(
    "command",
    [
        *([], ["demo"], ["run"], ["check-config"], ["reference"]),
        *(["reference", "build"], ["reference", "accept"]),
    ],
)
def test_help(command: list[str]) -> None:
    out = run(*command, "--help")
    assert out.returncode == 0
    assert "usage: driftline" in out.stdout


@pytest.mark.e2e
def test_demo_runs_the_daemon_end_to_end_and_catches_every_drifting_feature() -> None:
    out = run("demo", "--events", "20000", "--rate", "0", "--no-live")
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "Drifting features caught: 3/3" in text
    assert "3 malformed records dead-lettered" in text


def test_demo_rejects_bad_arguments_with_exit_2() -> None:
    out = run("demo", "--events", "100")
    assert out.returncode == 2
    assert "--events must be at least" in out.stderr


def model_config(tmp_path: Path, reference: str) -> Path:
    path = tmp_path / "c.yaml"
    doc = {
        "kafka": {"topic": "p"},
        "models": {
            "credit-v1": {
                "features": {"salary": "numeric", "age": "numeric", "elevel": "categorical"},
                "reference": {"file": reference},
            }
        },
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def test_reference_build_refuses_a_column_that_cannot_be_monitored(tmp_path: Path) -> None:
    data = tmp_path / "train.csv"
    rows = [f"${50000 + i},{20 + i % 40},{i % 5}" for i in range(300)]
    data.write_text("salary,age,elevel\n" + "\n".join(rows) + "\n")
    out_file = tmp_path / "ref.json"
    config = model_config(tmp_path, str(out_file))
    out = run("reference", "build", "-c", str(config), "-m", "credit-v1", "-i", str(data))
    assert out.returncode == 2  # -o missing: usage
    out = run(
        "reference", "build", "-c", str(config), "-m", "credit-v1", "-i", str(data),
        "-o", str(out_file),
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "salary: only 0 usable reference values of 300" in out.stderr
    assert "300 of the wrong type (e.g. '$50000')" in out.stderr
    assert "age" not in out.stderr.split("salary")[0]  # only salary is named
    assert not out_file.exists()


def test_check_config_opens_every_reference_file_and_lists_what_is_not_monitored(
    tmp_path: Path,
) -> None:
    ref = tmp_path / "ref.json"
    config = model_config(tmp_path, str(ref))
    missing = run("check-config", str(config))
    assert missing.returncode == 2
    assert f"models.credit-v1.reference.file: cannot read reference file {ref}" in missing.stderr
    ref.write_text('{"format": "driftline-reference", "version": 1, "model": "other"}')
    other = run("check-config", str(config))
    assert other.returncode == 2 and "made for model 'other'" in other.stderr
    series = {
        "salary": {"type": "numeric", "values": [None] * 100},
        "age": {"type": "numeric", "values": [float(i) for i in range(100)]},
    }
    doc = {"format": "driftline-reference", "version": 1, "model": "credit-v1"}
    ref.write_text(json.dumps({**doc, "series": series}))
    incomplete = run("check-config", str(config))
    assert incomplete.returncode == 2 and "lacks series ['elevel']" in incomplete.stderr
    series["elevel"] = {"type": "categorical", "values": ["1"] * 100}
    ref.write_text(json.dumps({**doc, "series": series}))
    ok = run("check-config", str(config))
    assert ok.returncode == 0, ok.stderr
    assert "salary (numeric): NOT monitored: only 0 usable reference values of 100" in ok.stdout
    assert (
        "age (numeric): cusum (arl 3,000,000), ks (alpha 3.3e-05), psi (alpha 3.3e-05)" in ok.stdout
    )
    assert "target: 0.1 false alerts per 100,000 events per series" in ok.stdout
    assert "warning: 1 configured series will not be monitored" in ok.stdout


def test_reference_accept_says_what_to_do_when_the_daemon_is_not_there() -> None:
    out = run("reference", "accept", "--url", "http://127.0.0.1:9", "--model", "m", "--recent", "5")
    assert out.returncode == 1 and "cannot reach http://127.0.0.1:9" in out.stderr
    bad = run("reference", "accept", "--url", "http://x", "--model", "m", "--next", "0")
    assert bad.returncode == 2 and "positive number" in bad.stderr
