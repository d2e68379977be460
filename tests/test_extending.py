"""The README's "Extending driftline", run as written: a detector of one's own, installed
as a plugin with one entry-point line, configured and run like the built-in ones."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import asyncio, json
import numpy as np, orjson
from monitor.config.schema import parse_config
from monitor.online.pipeline import Pipeline
from monitor.state.codec import decode, encode

cfg = parse_config({
    "kafka": {"topic": "p"},
    "defaults": {"reference": {"warmup": 1000}, "detectors": ["mean_shift"],
                 "params": {"mean_shift": {"window": 200, "z": 6}}},
    "models": {"m": {"features": {"x": "numeric"}}},
}, env={})
rng = np.random.default_rng(0)
x = np.r_[rng.normal(0, 1, 3000), rng.normal(1, 1, 1000)]
values = [orjson.dumps({"model": "m", "ts": 1.7e9 + i, "features": {"x": float(v)}})
          for i, v in enumerate(x)]
pipe = Pipeline.of(cfg)
out = asyncio.run(pipe.process(values[:2000]))
again = Pipeline.of(cfg)  # a checkpoint and a restore, through the codec
again.restore(0, decode(encode(pipe.export(0))))
out = asyncio.run(again.process(values[2000:]))
print(json.dumps([a.to_dict() for a in out.alerts if a.status == "firing"]))
"""


def test_a_detector_plugin_is_configured_and_run_like_a_built_in_one(tmp_path: Path) -> None:
    shutil.copy(ROOT / "examples" / "extending" / "driftline_meanshift.py", tmp_path)
    info = tmp_path / "driftline_meanshift-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: driftline-meanshift\nVersion: 1.0\n"
    )
    # the one registration line (in a real package: its pyproject.toml's entry point)
    (info / "entry_points.txt").write_text(
        "[driftline.detectors]\nmean_shift = driftline_meanshift:KIND\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    alerts = json.loads(out.stdout.strip().splitlines()[-1])
    assert alerts and {a["detector"] for a in alerts} == {"mean_shift"}
    first = alerts[0]
    assert 3000 <= first["start_event"] < 3400 and first["score"] >= 6


def test_an_unknown_detector_is_a_configuration_error_naming_the_known_ones() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode != 0
    assert "unknown detector 'mean_shift'" in out.stderr and "known detectors are" in out.stderr
