"""Detector kernels side by side with the reference a user would otherwise run.

Each pair runs interleaved in one process (ours, reference, ours, ...) so that the shared
machine's noise hits both alike; we report min and median times and their ratios, and check
that both sides produce identical results. Writes ``results/detectors.json`` and
``results/detectors.md``.

    python -m benchmarks.bench_detectors            # full sizes (a few minutes)
    python -m benchmarks.bench_detectors --quick    # small sizes, a smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numba
import numpy as np
import river
import scipy
from rich.console import Console
from rich.progress import Progress
from river import drift
from scipy import stats

from detectors import ADWIN, KS, PSI, CategoricalDrift

RESULTS = Path(__file__).parent / "results"


def interleave(
    pairs: dict[str, Callable[[], Any]], repeats: int, progress: Progress, label: str
) -> dict[str, list[float]]:
    """Time each callable ``repeats`` times, alternating between them."""
    times: dict[str, list[float]] = {name: [] for name in pairs}
    task = progress.add_task(label, total=repeats * len(pairs))
    for _ in range(repeats):
        for name, fn in pairs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
            progress.advance(task)
    return times


def summarise(times: dict[str, list[float]], ours: str, ref: str, units: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, ts in times.items():
        out[name] = {
            "min_s": min(ts),
            "median_s": statistics.median(ts),
            "units_per_s_median": units / statistics.median(ts),
            "runs": len(ts),
        }
    out["ratio_min"] = min(times[ref]) / min(times[ours])
    out["ratio_median"] = statistics.median(times[ref]) / statistics.median(times[ours])
    return out


ADWIN_BATCH = 10_000  # rows per update, as the daemon feeds them (results do not depend on it)


# -- ADWIN ---------------------------------------------------------------------------------
def bench_adwin(rows: int, series: int, repeats: int, progress: Progress) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    X = rng.normal(0.0, 1.0, (rows, series))
    X[rows // 2 :, ::3] += 0.5  # a third of the series shift half way
    columns = [X[:, s].tolist() for s in range(series)]
    river_hits: list[list[int]] = []

    def river_loop() -> None:
        river_hits.clear()
        for col in columns:
            det = drift.ADWIN()
            hits = []
            for i, v in enumerate(col):
                det.update(v)
                if det.drift_detected:
                    hits.append(i)
            river_hits.append(hits)

    ours_hits: dict[bool, list[list[int]]] = {}

    def ours(parallel: bool) -> Callable[[], None]:
        def run() -> None:
            det = ADWIN(parallel=parallel)
            hits: list[list[int]] = [[] for _ in range(series)]
            for lo in range(0, rows, ADWIN_BATCH):
                r = det.update(X[lo : lo + ADWIN_BATCH])
                for s, d in enumerate(r.detections):
                    hits[s].extend((d + lo).tolist())
            ours_hits[parallel] = hits

        return run

    ADWIN().update(X[:64])  # compile (or load the cache) outside the timings
    ADWIN(parallel=True).update(X[:64])
    times = interleave(
        {"driftline_serial": ours(False), "driftline_parallel": ours(True), "river": river_loop},
        repeats,
        progress,
        "ADWIN",
    )
    res = summarise(
        {"driftline_serial": times["driftline_serial"], "river": times["river"]},
        "driftline_serial",
        "river",
        rows * series,
    )
    par = summarise(
        {"driftline_parallel": times["driftline_parallel"], "river": times["river"]},
        "driftline_parallel",
        "river",
        rows * series,
    )
    res["driftline_parallel"] = par["driftline_parallel"]
    res["ratio_parallel_min"] = par["ratio_min"]
    res["ratio_parallel_median"] = par["ratio_median"]
    res["threads"] = numba.get_num_threads()
    res["identical_detections"] = ours_hits[False] == river_hits == ours_hits[True]
    res["detections"] = sum(len(h) for h in river_hits)
    res["shape"] = [rows, series]
    res["batch_rows"] = ADWIN_BATCH
    return res


# -- KS ------------------------------------------------------------------------------------
def bench_ks(rows: int, series: int, repeats: int, progress: Progress) -> dict[str, Any]:
    n_ref, window, stride, alpha, batch = 5000, 500, 50, 0.01, 1000
    rng = np.random.default_rng(1)
    ref = rng.normal(0.0, 1.0, (n_ref, series))
    X = rng.normal(0.0, 1.0, (rows, series))
    X[rows // 2 :, ::4] += 0.3
    ends = list(range(window, rows + 1, stride))
    scipy_p: list[list[float]] = []

    def scipy_loop() -> None:
        scipy_p.clear()
        for s in range(series):
            ps = []
            for end in ends:
                ps.append(float(stats.ks_2samp(ref[:, s], X[end - window : end, s]).pvalue))
            scipy_p.append(ps)

    ours_hits: list[list[int]] = []

    def ours() -> None:
        det = KS(ref, window=window, stride=stride, alpha=alpha)
        hits: list[list[int]] = [[] for _ in range(series)]
        for lo in range(0, rows, batch):
            r = det.update(X[lo : lo + batch])
            for s, d in enumerate(r.detections):
                hits[s].extend((d + lo).tolist())
        ours_hits[:] = hits

    ours()
    times = interleave({"driftline": ours, "scipy_ks_2samp": scipy_loop}, repeats, progress, "KS")
    res = summarise(times, "driftline", "scipy_ks_2samp", len(ends) * series)

    # Untimed verification: every check's p-value and decision equal scipy's.
    det = KS(ref, window=window, stride=stride, alpha=alpha)
    same_p = True
    start = 0
    for j, end in enumerate(ends):
        r = det.update(X[start:end])
        start = end
        same_p &= all(r.p_value[s] == scipy_p[s][j] for s in range(series))
    expected_hits = [
        [e - 1 for e, p in zip(ends, scipy_p[s], strict=True) if p <= alpha] for s in range(series)
    ]
    res["identical_p_values"] = bool(same_p)
    res["identical_detections"] = ours_hits == expected_hits
    res["checks"] = len(ends) * series
    res["config"] = {
        "n_ref": n_ref,
        "window": window,
        "stride": stride,
        "series": series,
        "rows": rows,
    }
    return res


# -- PSI -----------------------------------------------------------------------------------
def plain_psi_batch(
    batch: np.ndarray, edges: list[np.ndarray], ref_props: list[np.ndarray]
) -> np.ndarray:
    """What a user writes: per column, bin the batch with the reference edges, then PSI."""
    out = np.empty(batch.shape[1])
    for s in range(batch.shape[1]):
        e = edges[s]
        counts = np.bincount(np.searchsorted(e, batch[:, s], side="left"), minlength=len(e) + 1)
        p = (counts + 0.5) / (counts.sum() + 0.5 * (len(e) + 1))
        q = ref_props[s]
        out[s] = np.sum((p - q) * np.log(p / q))
    return out


def bench_psi(batches: int, series: int, repeats: int, progress: Progress) -> dict[str, Any]:
    rows, bins = 1000, 10
    rng = np.random.default_rng(2)
    ref = rng.normal(0.0, 1.0, (10_000, series))
    X = rng.normal(0.0, 1.0, (batches * rows, series))
    X[len(X) // 2 :, ::5] += 0.2
    fitted = PSI(ref, bins=bins, window=rows, stride=rows)
    state = fitted.export_state()
    edges = [state["edges"][s][np.isfinite(state["edges"][s])] for s in range(series)]
    ref_counts = state["ref_counts"]
    ref_props = [
        (ref_counts[s, : len(edges[s]) + 1] + 0.5)
        / (ref_counts[s].sum() + 0.5 * (len(edges[s]) + 1))
        for s in range(series)
    ]
    plain_scores: list[np.ndarray] = []
    our_scores: list[np.ndarray] = []

    def plain() -> None:
        plain_scores[:] = [
            plain_psi_batch(X[i * rows : (i + 1) * rows], edges, ref_props) for i in range(batches)
        ]

    def ours() -> None:
        det = PSI.from_state(state)
        our_scores[:] = [det.update(X[i * rows : (i + 1) * rows]).score for i in range(batches)]

    ours()
    times = interleave({"driftline": ours, "numpy_per_column": plain}, repeats, progress, "PSI")
    res = summarise(times, "driftline", "numpy_per_column", batches)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(our_scores, plain_scores, strict=True))
    res["max_abs_score_difference"] = diff
    res["config"] = {"batch_rows": rows, "series": series, "bins": bins, "batches": batches}
    return res


# -- state size ----------------------------------------------------------------------------
def state_bytes() -> dict[str, Any]:
    rng = np.random.default_rng(3)
    series = 20

    def per_series(state: dict[str, Any]) -> float:
        return sum(v.nbytes for v in state.values() if isinstance(v, np.ndarray)) / series

    adwin = ADWIN()
    adwin.update(rng.normal(0, 1, (1_000_000, series)))
    return {
        "adwin_after_1M_stationary_values": {
            "bytes_per_series": per_series(adwin.export_state()),
            "window": int(adwin.width.max()),
        },
        "ks_ref5000_window500": {
            "bytes_per_series": per_series(
                KS(rng.normal(0, 1, (5000, series)), window=500).export_state()
            )
        },
        "psi_bins10_window1000": {
            "bytes_per_series": per_series(
                PSI(rng.normal(0, 1, (5000, series)), window=1000).export_state()
            )
        },
        "categorical_10cats_window1000": {
            "bytes_per_series": per_series(
                CategoricalDrift(rng.integers(0, 10, (5000, series)), window=1000).export_state()
            )
        },
    }


def environment() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "scipy": scipy.__version__,
        "river": river.__version__,
        "cpu": cpu,
        "cores": numba.config.NUMBA_NUM_THREADS,
    }


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown(results: dict[str, Any]) -> str:
    a, k, p, b = results["adwin"], results["ks"], results["psi"], results["state_bytes"]
    env = results["environment"]
    kc, pc = k["config"], p["config"]
    adwin_case = (
        f"ADWIN, {a['shape'][1]} series x {a['shape'][0]:,} rows ({a['batch_rows']:,}/batch)"
    )
    ks_case = (
        f"KS, ref {kc['n_ref']}, window {kc['window']}, stride {kc['stride']}, "
        f"{kc['series']} features ({k['checks']:,} checks)"
    )
    psi_case = f"PSI, {pc['batches']} batches of {pc['batch_rows']} x {pc['series']}"
    ks_same = f"p-values {k['identical_p_values']}, detections {k['identical_detections']}"
    lines = [
        "# Detector benchmarks",
        "",
        f"Measured {env['date']} on {env['cpu']} ({env['cores']} cores), interleaved runs, "
        "min and median. Ratios are reference time / driftline time (higher is better); "
        "absolute times on this shared machine are noise.",
        "",
        _row("benchmark", "reference", "ratio (min)", "ratio (median)", "identical results"),
        _row("---", "---", "---", "---", "---"),
        _row(
            f"{adwin_case}, one thread",
            "river `drift.ADWIN` loop",
            f"{a['ratio_min']:.1f}x",
            f"{a['ratio_median']:.1f}x",
            f"{a['identical_detections']} ({a['detections']} detections)",
        ),
        _row(
            f"{adwin_case}, `parallel=True` ({a['threads']} threads)",
            "river `drift.ADWIN` loop",
            f"{a['ratio_parallel_min']:.1f}x",
            f"{a['ratio_parallel_median']:.1f}x",
            a["identical_detections"],
        ),
        _row(
            ks_case,
            "`scipy.stats.ks_2samp` per check",
            f"{k['ratio_min']:.0f}x",
            f"{k['ratio_median']:.0f}x",
            ks_same,
        ),
        _row(
            psi_case,
            "per-column numpy loop",
            f"{p['ratio_min']:.1f}x",
            f"{p['ratio_median']:.1f}x",
            f"max score difference {p['max_abs_score_difference']:.1e}",
        ),
        "",
        "Throughput (median): "
        f"ADWIN {a['driftline_serial']['units_per_s_median'] / 1e6:.1f} M values/s (one thread), "
        f"{a['driftline_parallel']['units_per_s_median'] / 1e6:.1f} M values/s (parallel), "
        f"river {a['river']['units_per_s_median'] / 1e6:.1f} M values/s; "
        f"KS {k['driftline']['units_per_s_median']:,.0f} checks/s vs scipy "
        f"{k['scipy_ks_2samp']['units_per_s_median']:,.0f} checks/s.",
        "",
        "## State per series",
        "",
        _row("detector", "bytes per series"),
        _row("---", "---"),
    ]
    lines += [_row(name, f"{row['bytes_per_series']:,.0f}") for name, row in b.items()]
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per side (default 5)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the results")
    args = parser.parse_args()
    warnings.simplefilter("ignore", RuntimeWarning)
    console = Console()
    quick = args.quick
    repeats = 2 if quick else args.repeats
    with Progress(console=console) as progress:
        results = {
            "environment": environment(),
            "adwin": bench_adwin(50_000 if quick else 1_000_000, 20, repeats, progress),
            "ks": bench_ks(2_000 if quick else 5_000, 20, repeats, progress),
            "psi": bench_psi(10 if quick else 200, 20, repeats * 2, progress),
            "state_bytes": state_bytes(),
        }
    args.out.mkdir(parents=True, exist_ok=True)
    name = "detectors-quick" if quick else "detectors"
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(markdown(results))
    console.print(markdown(results))


if __name__ == "__main__":
    main()
