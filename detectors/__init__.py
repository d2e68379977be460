"""Drift detectors: pure, batch-first numeric kernels with no I/O.

Every detector takes a batch ``X`` of shape ``(n_events, n_series)`` (1-D for one series),
keeps independent state per series, and returns a :class:`DriftResult`.

>>> import numpy as np
>>> from detectors import ADWIN, KS, PSI, CategoricalDrift
>>> ADWIN().update(np.zeros((100, 3))).n_series
3
"""

from .adwin import ADWIN
from .base import Detector, DriftResult
from .categorical import CategoricalDrift
from .cusum import CUSUM, CategoricalCUSUM
from .ks import KS
from .psi import PSI

__all__ = [
    "ADWIN",
    "CUSUM",
    "KS",
    "PSI",
    "CategoricalCUSUM",
    "CategoricalDrift",
    "Detector",
    "DriftResult",
]
