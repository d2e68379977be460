"""Detection quality on streams with known change points: driftline's defaults beside what
users assemble from river and scipy, in one run.

Streams (reproducible from a seed, several seeds each): abrupt mean shifts of 0.25 and 0.5
sigma, a gradual drift (a ramp over 20,000 events), a variance-only change, a categorical
frequency change, one drifting feature of twenty; concept drift with stable features
(river's SEA and Agrawal generators spliced from one concept to another, the production
model knowing the first); a real dataset (the Statlog Shuttle data bundled with river:
nine integer features with heavy tails and ties) shuffled, with an injected label shift
(anomalies twice as frequent after the change); and, for false alarms, long stable streams
with realistic marginals (normal, scaled, log-normal, exponential, uniform, Poisson), the
Shuttle data shuffled, and stable data with isolated 50-100 sigma outliers.

Methods, per feature: driftline's daemon pipeline with its default detectors and alerting
(reference: the first 2,000 events; labels, where a stream has them, in each event);
``river.drift.ADWIN`` (delta 0.002), ``river.drift.PageHinkley`` and ``river.drift.KSWIN``
with their defaults (KSWIN, at ~0.5 ms a value, on the first 20,000 events of at most six
series of a stream, the drifting ones first), on the numbers, on one 0/1 indicator per
category for categorical features, and on the 0/1 errors of the production model where
there are labels; PSI over windows of 1,000
events against the same reference, alerting above 0.2; windowed ``scipy.stats.ks_2samp``
(windows of 500 every 100 events) at 0.01 with a Bonferroni correction over the features;
and the "limit" row, the CUSUM bound for a known shift at driftline's default target, one
false alarm per million events (about 2 ln(ARL) / d^2 events).

Reported per stream and method: the delay from the change to the first alert on a drifted
series (median over seeds), misses (seeds with no alert after the change), false alerts
per 100,000 stable events per series (alerts before the change or on series that do not
drift; river's signals are counted once per 1,000 events, as an alert episode would), and
CPU time per value. Writes ``results/quality.json`` and ``results/quality.md``.

    python -m benchmarks.quality            # 5 seeds
    python -m benchmarks.quality --quick    # 2 seeds, shorter stable streams
    python -m benchmarks.quality --without "river KSWIN"   # 5 seeds in minutes, not an hour
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

RESULTS = Path(__file__).parent / "results"
REF = 2000  # reference: the first events of every stream
ARL = 1_000_000  # the default target: 0.1 false alerts per 100,000 events, one per million
QUIET = 1000  # signals closer than this count as one (an alert episode's worth)


CONCEPT = -1  # the series key of the production model's errors (concept drift)
KSWIN_MAX = 20_000  # KSWIN costs ~0.5 ms a value: its first 20,000 events ...
KSWIN_SERIES = 6  # ... of at most 6 series (the drifting ones first) of a stream


@dataclass
class Stream:
    name: str
    X: np.ndarray  # (n, k) values (categorical columns: codes as floats)
    change_at: int | None
    drifting: frozenset[int]  # columns that drift, or CONCEPT
    categorical: frozenset[int] = frozenset()  # categorical columns
    shift_sigma: float | None = None  # for the CUSUM bound
    prediction: np.ndarray | None = None  # the production model's class (0/1) per event
    label: np.ndarray | None = None  # the true class per event

    @property
    def errors(self) -> np.ndarray | None:
        if self.prediction is None or self.label is None:
            return None
        return (self.prediction != self.label).astype(float)


def _normal(rng: np.random.Generator, n: int, k: int = 1) -> np.ndarray:
    return rng.normal(0.0, 1.0, (n, k))


def streams(seed: int, stable_n: int) -> list[Stream]:
    rng = np.random.default_rng(seed)
    out = []
    for d in (0.25, 0.5):
        X = _normal(rng, 20_000)
        X[10_000:] += d
        out.append(Stream(f"abrupt {d} sigma", X, 10_000, frozenset({0}), shift_sigma=d))
    X = _normal(rng, 40_000)
    X[10_000:30_000, 0] += np.linspace(0.0, 1.0, 20_000)
    X[30_000:] += 1.0
    out.append(Stream("gradual (ramp over 20k)", X, 10_000, frozenset({0})))
    X = _normal(rng, 20_000)
    X[10_000:] *= 2.0
    out.append(Stream("variance only (x2)", X, 10_000, frozenset({0})))
    p0, p1 = [0.3, 0.25, 0.2, 0.15, 0.1], [0.2, 0.25, 0.2, 0.15, 0.2]
    codes = np.r_[rng.choice(5, 10_000, p=p0), rng.choice(5, 10_000, p=p1)].astype(float)
    out.append(
        Stream("categorical frequencies", codes[:, None], 10_000, frozenset({0}), frozenset({0}))
    )
    X = _normal(rng, 20_000, 20)
    X[10_000:, 0] += 0.5
    out.append(Stream("1 of 20 features, 0.5 sigma", X, 10_000, frozenset({0}), shift_sigma=0.5))
    stable = np.column_stack(
        [
            rng.normal(0, 1, stable_n),
            rng.normal(50_000, 8_000, stable_n),
            rng.lognormal(0, 1, stable_n),
            rng.exponential(1.0, stable_n),
            rng.uniform(0, 1, stable_n),
            rng.poisson(3.0, stable_n).astype(float),
        ]
    )
    out.append(Stream("stable marginals (6 features)", stable, None, frozenset()))
    X = _normal(rng, stable_n)
    at = np.arange(2_500, stable_n, 5_000)
    X[at, 0] = rng.uniform(50, 100, at.size) * rng.choice([-1, 1], at.size)
    out.append(Stream("stable with 50-100 sigma outliers", X, None, frozenset()))
    out += concept_streams(seed) + shuttle_streams(rng, stable_n)
    return out


def concept_streams(seed: int, n: int = 20_000, noise: float = 0.1) -> list[Stream]:
    """Features that never change, labels whose relation to them does at event n / 2: the
    production model predicts the first concept; labels flip with probability ``noise``."""
    from river.datasets import synth

    rng = np.random.default_rng(1000 + seed)
    out = []
    # SEA: x0 + x1 above a threshold; variant 0 (8) -> variant 3 (9.5).
    sea = list(synth.SEA(variant=0, seed=seed).take(n))
    X = np.array([[x[0], x[1], x[2]] for x, _ in sea])
    total = X[:, 0] + X[:, 1]
    pred = (total > 8.0).astype(int)
    truth = np.where(np.arange(n) < n // 2, pred, (total > 9.5).astype(int))
    label = np.where(rng.random(n) < noise, 1 - truth, truth)
    out.append(
        Stream("concept drift: SEA 8 -> 9.5", X, n // 2, frozenset({CONCEPT}),
               prediction=pred, label=label)
    )  # fmt: skip
    # Agrawal: classification function 0 -> 2 over the same applicants.
    names = ["salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears", "loan"]
    first = list(synth.Agrawal(classification_function=0, seed=seed).take(n))
    second = list(synth.Agrawal(classification_function=2, seed=seed).take(n))
    X = np.array([[float(x[k]) for k in names] for x, _ in first])
    pred = np.array([y for _, y in first], dtype=int)
    # After the change a fifth of the applicants (at random) follow the second function.
    moved = (np.arange(n) >= n // 2) & (rng.random(n) < 0.2)
    truth = np.where(moved, np.array([y for _, y in second], dtype=int), pred)
    label = np.where(rng.random(n) < noise, 1 - truth, truth)
    cats = frozenset(names.index(c) for c in ("elevel", "car", "zipcode"))
    out.append(
        Stream("concept drift: Agrawal 0 -> 2 for 20%", X, n // 2, frozenset({CONCEPT}), cats,
               prediction=pred, label=label)
    )  # fmt: skip
    return out


def shuttle() -> tuple[np.ndarray, np.ndarray]:
    """The Statlog Shuttle data bundled with river: 9 integer features, an anomaly flag."""
    import csv
    import gzip

    import river

    path = Path(river.__file__).parent / "datasets" / "shuttle.csv.gz"
    with gzip.open(path, "rt") as f:
        rows = list(csv.reader(f))[1:]
    data = np.array(rows, dtype=float)
    return data[:, :9], data[:, 9].astype(int)


def shuttle_streams(rng: np.random.Generator, stable_n: int) -> list[Stream]:
    X, anomaly = shuttle()
    order = rng.permutation(len(X))
    stable = X[order[: min(stable_n, len(X))]]
    # An injected label shift: after event 10,000 anomalies are twice as frequent.
    normal, odd = np.flatnonzero(anomaly == 0), np.flatnonzero(anomaly == 1)
    share = odd.size / len(X)
    before = rng.choice(len(X), 10_000)
    after_odd = rng.random(20_000) < 2 * share
    after = np.where(after_odd, rng.choice(odd, 20_000), rng.choice(normal, 20_000))
    shifted = X[np.r_[before, after]]
    k = X.shape[1]
    from scipy.stats import ks_2samp

    # The features whose law differs between the classes: those the shift moves.
    moved = frozenset(j for j in range(k) if ks_2samp(X[odd, j], X[normal, j]).pvalue < 1e-6)
    return [
        Stream("real: Shuttle, anomalies x2 after 10k", shifted, 10_000, moved),
        Stream("real: Shuttle shuffled (stable)", stable, None, frozenset()),
    ]


Signals = dict[int, list[int]]  # feature -> events where the method signalled


# -- methods -------------------------------------------------------------------------------
def driftline(s: Stream) -> Signals:
    from monitor.config.schema import parse_config
    from monitor.online.pipeline import Pipeline

    k = s.X.shape[1]
    kinds = {f"f{j}": "categorical" if j in s.categorical else "numeric" for j in range(k)}
    model: dict[str, Any] = {"features": kinds}
    if s.label is not None:
        model["task"] = "classification"
    cfg = parse_config(
        {
            "kafka": {"topic": "t"},
            "defaults": {"reference": {"warmup": REF}},
            "models": {"m": model},
        },
        env={},
    )
    p = Pipeline.of(cfg)
    out: Signals = {j: [] for j in range(k)}
    out[CONCEPT] = []
    rows = s.X.tolist()
    cat = [j in s.categorical for j in range(k)]
    for i in range(0, len(rows), 5000):
        values = []
        for n, row in enumerate(rows[i : i + 5000], start=i):
            feats = {f"f{j}": (str(int(v)) if cat[j] else v) for j, v in enumerate(row)}
            event: dict[str, Any] = {"model": "m", "features": feats}
            if s.label is not None and s.prediction is not None:
                event.update(id=n, prediction=int(s.prediction[n]), label=int(s.label[n]))
            values.append(orjson.dumps(event))
        for a in asyncio.run(p.process(values)).alerts:
            if a.status != "firing" or a.start_event != a.at_event:
                continue
            if a.detector == "concept_drift":
                out[CONCEPT].append(a.start_event)
            elif a.feature is not None:
                out[int(a.feature[1:])].append(a.start_event)
    return out


def _columns(s: Stream) -> list[tuple[int, np.ndarray]]:
    """What a per-series detector is fed: each numeric column, one 0/1 indicator per
    category of a categorical column (all under the column's key), and the errors."""
    out: list[tuple[int, np.ndarray]] = []
    for j in range(s.X.shape[1]):
        col = s.X[:, j]
        if j in s.categorical:
            out += [(j, (col == c).astype(float)) for c in np.unique(col[:REF])]
        else:
            out.append((j, col))
    if s.errors is not None:
        out.append((CONCEPT, s.errors))
    return out


def _river(
    make: Callable[[], Any], limit: int | None = None, series: int | None = None
) -> Callable[[Stream], Signals]:
    def run(s: Stream) -> Signals:
        out: Signals = {}
        columns = sorted(_columns(s), key=lambda c: c[0] not in s.drifting)
        if series is not None:  # the drifting series first, then the first others
            keys = list(dict.fromkeys(j for j, _ in columns))[:series]
            columns = [c for c in columns if c[0] in keys]
        for j, col in columns:
            det, hits = make(), out.setdefault(j, [])
            for i, v in enumerate(col[:limit].tolist()):
                det.update(v)
                if det.drift_detected:
                    hits.append(i)
        return out

    run.limit = limit  # type: ignore[attr-defined]
    run.series = series  # type: ignore[attr-defined]
    return run


def psi_fixed(s: Stream, window: int = 1000, bins: int = 10) -> Signals:
    out: Signals = {}
    for j in range(s.X.shape[1]):
        ref = s.X[:REF, j]
        if j in s.categorical:
            edges = np.r_[-np.inf, np.unique(ref)[:-1] + 0.5, np.inf]
        else:
            edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)))
            edges[0], edges[-1] = -np.inf, np.inf

        def share(x: np.ndarray, edges: np.ndarray = edges) -> np.ndarray:
            h = np.histogram(x, edges)[0] / len(x)
            return np.clip(h, 1e-4, None)

        r = share(ref)
        hits = []
        for i in range(REF, s.X.shape[0] - window + 1, window):
            c = share(s.X[i : i + window, j])
            if float(np.sum((c - r) * np.log(c / r))) > 0.2:
                hits.append(i + window - 1)
        out[j] = hits
    return out


def ks_bonferroni(s: Stream, window: int = 500, stride: int = 100) -> Signals:
    from scipy.stats import ks_2samp

    alpha = 0.01 / s.X.shape[1]
    out: Signals = {}
    for j in range(s.X.shape[1]):
        ref = s.X[:REF, j]
        hits = []
        for end in range(REF + window, s.X.shape[0] + 1, stride):
            if ks_2samp(ref, s.X[end - window : end, j]).pvalue < alpha:
                hits.append(end - 1)
        out[j] = hits
    return out


def methods() -> dict[str, Callable[[Stream], Signals]]:
    from river import drift

    return {
        "driftline (defaults)": driftline,
        "river ADWIN": _river(lambda: drift.ADWIN()),
        "river PageHinkley": _river(lambda: drift.PageHinkley()),
        "river KSWIN": _river(lambda: drift.KSWIN(seed=0), KSWIN_MAX, KSWIN_SERIES),
        "PSI > 0.2, windows of 1000": psi_fixed,
        "ks_2samp, Bonferroni": ks_bonferroni,
    }


# -- scoring -------------------------------------------------------------------------------
def episodes(hits: list[int]) -> list[int]:
    """Signals closer than QUIET to the previous one count once."""
    out: list[int] = []
    for h in sorted(hits):
        if not out or h - out[-1] >= QUIET:
            out.append(h)
    return out


def score(
    s: Stream, signals: Signals, limit: int | None = None, only: bool = False
) -> dict[str, Any]:
    """``only``: score the series the method ran on (the keys of ``signals``) alone."""
    n = min(s.X.shape[0], limit or s.X.shape[0])
    keys = list(range(s.X.shape[1])) + ([CONCEPT] if s.errors is not None else [])
    if only:
        keys = [j for j in keys if j in signals]
    false, stable_events = 0, 0
    delay = None
    for j in keys:
        eps = [e for e in episodes(signals.get(j, [])) if REF <= e < n]
        if j in s.drifting and s.change_at is not None:
            false += sum(e < s.change_at for e in eps)
            stable_events += s.change_at - REF
            after = [e - s.change_at for e in eps if e >= s.change_at]
            if after:
                delay = after[0] if delay is None else min(delay, after[0])
        else:
            false += len(eps)
            stable_events += n - REF
    return {"delay": delay, "false": false, "stable_events": stable_events}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, shorter stable streams")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--without",
        action="append",
        default=[],
        metavar="METHOD",
        help="leave a method out (a prefix of its name, e.g. 'river KSWIN'); repeatable",
    )
    args = parser.parse_args()
    from detectors.warmup import warm

    warm()  # numba's kernels compiled before any clock starts
    seeds = [0, 1] if args.quick else [0, 1, 2, 3, 4]
    stable_n = 30_000 if args.quick else 100_000
    table: dict[str, dict[str, dict[str, Any]]] = {}
    shifts: dict[str, float | None] = {}
    for seed in seeds:
        for s in streams(seed, stable_n):
            shifts[s.name] = s.shift_sigma
            for name, method in methods().items():
                if any(name.startswith(w) for w in args.without):
                    continue
                limit = getattr(method, "limit", None)
                t0 = time.process_time()
                signals = method(s)
                n_series = getattr(method, "series", None) or s.X.shape[1]
                cpu = (time.process_time() - t0) / (len(s.X[:limit]) * min(n_series, s.X.shape[1]))
                r = score(s, signals, limit, only=getattr(method, "series", None) is not None)
                cell = table.setdefault(s.name, {}).setdefault(
                    name, {"delays": [], "misses": 0, "false": 0, "stable_events": 0, "cpu": []}
                )
                if s.change_at is not None:
                    if r["delay"] is None:
                        cell["misses"] += 1
                    else:
                        cell["delays"].append(r["delay"])
                cell["false"] += r["false"]
                cell["stable_events"] += r["stable_events"]
                cell["cpu"].append(cpu)
                print(f"seed {seed} {s.name:38s} {name:28s} delay {r['delay']} false {r['false']}")
    lines = [
        "# Detection quality",
        "",
        f"Measured {datetime.now(UTC).isoformat(timespec='seconds')}: seeds {seeds}, stable "
        f"streams of {stable_n:,} events (`python -m benchmarks.quality`). Delay: events "
        "from the change to the first alert on a drifted feature (median over seeds); "
        "false: alerts per 100,000 stable events per feature; CPU: microseconds per value "
        "(driftline's includes writing each event as JSON and decoding it, as the daemon "
        "does; the others get the numbers directly).",
        "",
        "| stream | method | delay | misses | false / 100k | CPU us |",
        "|---|---|---|---|---|---|",
    ]
    summary: dict[str, Any] = {}
    for stream_name, cells in table.items():
        for name, c in cells.items():
            delay = statistics.median(c["delays"]) if c["delays"] else None
            rate = 1e5 * c["false"] / c["stable_events"] if c["stable_events"] else 0.0
            cpu = 1e6 * statistics.median(c["cpu"])
            summary.setdefault(stream_name, {})[name] = {
                "delay_median": delay,
                "misses": c["misses"],
                "seeds": len(seeds),
                "false_per_100k": rate,
                "cpu_us_per_value": cpu,
            }
            shown = "-" if delay is None else f"{delay:,.0f}"
            lines.append(
                f"| {stream_name} | {name} | {shown} | {c['misses']}/{len(seeds)} | "
                f"{rate:.2f} | {cpu:.1f} |"
            )
        if shifts.get(stream_name):
            bound = 2 * math.log(ARL) / shifts[stream_name] ** 2
            summary[stream_name]["limit (CUSUM bound)"] = {"delay_median": bound}
            lines.append(
                f"| {stream_name} | limit: CUSUM, known shift, ARL 1M | {bound:,.0f} | | | |"
            )
    args.out.mkdir(parents=True, exist_ok=True)
    name = "quality-quick" if args.quick else "quality"
    (args.out / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
