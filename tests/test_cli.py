"""The ``driftline`` command as a user runs it: a real subprocess."""

from __future__ import annotations

import subprocess
import sys

import pytest


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
    "command", [[], ["demo"], ["run"], ["check-config"], ["reference"], ["reference", "build"]]
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
