"""``driftline demo``: the detectors on a replayed loan-application stream with known drift.

The stream is river's Agrawal generator (loan applications). The first events become the
reference; from ``drift_at`` on, salaries drop by a quarter, applicants are six years older
and a tenth of them report an education level the reference never had. Every numeric
feature runs ADWIN, KS and PSI; every categorical one runs the categorical test.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from detectors import ADWIN, KS, PSI, CategoricalDrift, Detector, DriftResult

NUMERIC = ["salary", "commission", "age", "hvalue", "hyears", "loan"]
CATEGORICAL = ["elevel", "car", "zipcode"]
DRIFTING = {"salary", "age", "elevel"}
# Agrawal pays no commission from a salary of 75k up, so lower salaries shift it too.
INDIRECT = {"commission"}
REFERENCE_SIZE = 5000


def loan_stream(n: int, drift_at: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(numeric, categorical)`` arrays of ``n`` applications, drifting from ``drift_at``."""
    from river.datasets import synth

    rows = [x for x, _ in synth.Agrawal(classification_function=0, seed=seed).take(n)]
    num = np.array([[r[f] for f in NUMERIC] for r in rows], dtype=np.float64)
    cat = np.array([[r[f] for f in CATEGORICAL] for r in rows], dtype=np.float64)
    rng = np.random.default_rng(seed)
    after = slice(drift_at, n)
    num[after, NUMERIC.index("salary")] *= 0.75
    num[after, NUMERIC.index("age")] += 6
    new_level = rng.random(n - drift_at) < 0.10
    cat[after, CATEGORICAL.index("elevel")][new_level] = 5  # a level the reference lacks
    col = cat[:, CATEGORICAL.index("elevel")]
    col[drift_at:][new_level] = 5
    return num, cat


@dataclass
class Tally:
    """First detection after the drift and false alarms before it, per feature/detector."""

    drift_at: int
    first: dict[tuple[str, str], int] = field(default_factory=dict)
    false_alarms: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, features: list[str], detector: str, result: DriftResult, offset: int) -> None:
        for name, rows in zip(features, result.detections, strict=True):
            for row in (rows + offset).tolist():
                key = (name, detector)
                if row < self.drift_at:
                    self.false_alarms[key] = self.false_alarms.get(key, 0) + 1
                elif key not in self.first:
                    self.first[key] = row


def _table(
    latest: dict[str, dict[str, DriftResult]], tally: Tally, seen: int, rate: float
) -> Group:
    head = Text.assemble(
        ("driftline demo", "bold"),
        f"  events {seen:,}  ",
        (f"{rate:,.0f} events/s", "cyan"),
        "  drift starts at ",
        (f"{tally.drift_at:,}", "magenta"),
    )
    table = Table(expand=False)
    for col in ("feature", "KS D (p)", "PSI / threshold", "ADWIN", "categorical chi2 (p)", "drift"):
        table.add_column(col)
    for name in NUMERIC + CATEGORICAL:
        ks = psi = adwin = cat = "-"
        if name in NUMERIC and "ks" in latest:
            j = NUMERIC.index(name)
            r = latest["ks"][name]
            ks = f"{r.score[j]:.3f} ({r.p_value[j]:.1e})"
            r = latest["psi"][name]
            psi = f"{r.score[j]:.3f} / {r.threshold[j]:.3f}"
            adwin = f"width {latest['adwin'][name].window_size[j]:,}"
        elif name in CATEGORICAL and "categorical" in latest:
            j = CATEGORICAL.index(name)
            r = latest["categorical"][name]
            cat = f"{r.score[j]:.1f} ({r.p_value[j]:.1e})"
        detected = sorted(d for (f, d) in tally.first if f == name)
        status = Text(", ".join(detected) or "stable", style="red" if detected else "green")
        table.add_row(name, ks, psi, adwin, cat, status)
    return Group(head, table)


def run_demo(
    events: int = 60_000,
    drift_at: int | None = None,
    batch: int = 1000,
    seed: int = 7,
    rate: float = 20_000.0,
    live: bool = True,
) -> int:
    if events < 2 * REFERENCE_SIZE:
        raise ValueError(f"--events must be at least {2 * REFERENCE_SIZE}")
    drift_at = events // 2 if drift_at is None else drift_at
    if not REFERENCE_SIZE < drift_at < events:
        raise ValueError(f"--drift-at must be between {REFERENCE_SIZE} and {events}")
    if batch < 1:
        raise ValueError("--batch must be at least 1")
    console = Console()
    console.print(f"Generating {events:,} loan applications (seed {seed}) ...")
    num, cat = loan_stream(events, drift_at, seed)
    ref_num, ref_cat = num[:REFERENCE_SIZE], cat[:REFERENCE_SIZE]
    detectors: dict[str, Detector] = {
        "ks": KS(ref_num, window=500, stride=100, alpha=0.001),
        "psi": PSI(ref_num, bins=10, window=1000, stride=250, alpha=0.001),
        "adwin": ADWIN(delta=0.002),
        "categorical": CategoricalDrift(ref_cat, window=1000, stride=250, alpha=0.001),
    }
    tally = Tally(drift_at)
    latest: dict[str, dict[str, DriftResult]] = {}
    start = time.perf_counter()
    seen = REFERENCE_SIZE

    def step(lo: int, hi: int) -> None:
        for name, det in detectors.items():
            features = CATEGORICAL if name == "categorical" else NUMERIC
            data = cat[lo:hi] if name == "categorical" else num[lo:hi]
            result = det.update(data)
            tally.add(features, name, result, lo)
            latest[name] = dict.fromkeys(features, result)

    screen = Live(console=console, auto_refresh=False) if live else contextlib.nullcontext()
    with screen as view:
        for lo in range(REFERENCE_SIZE, events, batch):
            hi = min(lo + batch, events)
            step(lo, hi)
            seen = hi
            elapsed = time.perf_counter() - start
            if rate > 0:
                ahead = (seen - REFERENCE_SIZE) / rate - elapsed
                if ahead > 0:
                    time.sleep(ahead)
                    elapsed += ahead
            speed = (seen - REFERENCE_SIZE) / max(elapsed, 1e-9)
            if isinstance(view, Live):
                view.update(_table(latest, tally, seen, speed), refresh=True)
    elapsed = time.perf_counter() - start
    _summary(console, tally, events - REFERENCE_SIZE, elapsed)
    return 0


def _summary(console: Console, tally: Tally, n: int, elapsed: float) -> None:
    table = Table(title="Detections after the drift point")
    for col in ("feature", "detector", "delay (events)", "should drift"):
        table.add_column(col)
    for (feature, det), row in sorted(tally.first.items(), key=lambda kv: kv[1]):
        expected = "yes" if feature in DRIFTING else "indirect" if feature in INDIRECT else "no"
        table.add_row(feature, det, f"{row - tally.drift_at:,}", expected)
    console.print(table)
    missed = sorted(DRIFTING - {f for f, _ in tally.first})
    false = sum(tally.false_alarms.values())
    console.print(
        f"{n:,} events in {elapsed:.1f} s. Drifting features detected: "
        f"{len(DRIFTING) - len(missed)}/{len(DRIFTING)}"
        + (f" (missed: {', '.join(missed)})" if missed else "")
        + f". Signals before the drift: {false}"
        + (
            f" ({', '.join(f'{f}/{d}: {c}' for (f, d), c in sorted(tally.false_alarms.items()))})"
            if false
            else ""
        )
        + "."
    )
