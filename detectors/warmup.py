"""Compile every detector's kernels once, so that numba's on-disk cache holds them (a
container image runs this at build: its first batch then takes no compile time).

    python -m detectors.warmup

>>> sorted(warm())
['adwin', 'adwin-parallel', 'categorical', 'categorical_cusum', 'cusum', 'ks', 'psi']
"""

from __future__ import annotations

import numpy as np

from .adwin import ADWIN
from .base import Detector
from .categorical import CategoricalDrift
from .cusum import CUSUM, CategoricalCUSUM
from .ks import KS
from .psi import PSI


def warm(parallel: bool = True) -> dict[str, int]:
    """Run each kernel on a small stream; returns the rows each saw. The daemon calls it
    before joining its consumer group (``parallel=False``: it never runs ADWIN's threaded
    kernel), so that no kernel is loaded inside a rebalance callback, where an answer
    slower than the session timeout costs the group a member."""
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(600, 2))
    stream = np.r_[rng.normal(size=(600, 2)), rng.normal(2.0, 1.0, size=(600, 2))]
    codes = rng.integers(0, 4, size=(600, 1)).astype(np.float64)
    runs: dict[str, Detector] = {
        "adwin": ADWIN(),
        "ks": KS(ref, window=100, stride=10),
        "psi": PSI(ref, window=100),
        "cusum": CUSUM(ref, arl=1e4),
    }
    if parallel:
        runs["adwin-parallel"] = ADWIN(parallel=True)
    seen = {}
    for name, det in runs.items():
        det.update(stream)
        seen[name] = stream.shape[0]
    cat = CategoricalDrift(codes, window=100)
    cat.update(codes)
    seen["categorical"] = codes.shape[0]
    CategoricalCUSUM(codes, arl=1e4).update(codes)
    seen["categorical_cusum"] = codes.shape[0]
    return seen


if __name__ == "__main__":
    done = warm()
    print("compiled and cached:", ", ".join(sorted(done)))
