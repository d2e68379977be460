"""The detector registry: how the daemon builds each kind of detector from its
configuration and a model's reference.

A :class:`DetectorKind` names a detector, the type of series it watches, the pydantic model
of its parameters (the ``params.<name>`` block of a configuration) and how to build it from
those parameters and the reference values of the series it watches (one column per
series). Built-in kinds are listed in :data:`BUILTIN`; another package adds one with an
entry point in the group ``driftline.detectors`` whose object is a :class:`DetectorKind`
(see the README's "Extending driftline").

>>> sorted(registry())
['adwin', 'categorical', 'ks', 'psi']
>>> registry()["ks"].params().window
500
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from detectors import ADWIN, KS, PSI, CategoricalDrift, Detector

log = logging.getLogger("driftline.kinds")

GROUP = "driftline.detectors"
State = dict[str, Any]


class Params(BaseModel):
    """Base of every detector's parameter model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class DetectorKind:
    """One kind of detector. ``build(params, reference)`` makes a detector for the series
    whose reference values are the columns of ``reference`` (categorical series: their
    category codes, -1 for a value outside the vocabulary); ``restore(state, params,
    reference)`` rebuilds one from ``export_state(include_reference=False)``."""

    name: str
    series: Literal["numeric", "categorical"]
    params: type[Params]
    build: Callable[[Any, np.ndarray], Detector]
    restore: Callable[[State, Any, np.ndarray], Detector] | None = None
    # Parameters that set thresholds only (named as in the detector's exported state):
    # they may change across a restart or a reload, the detector keeping its windows.
    tunable: frozenset[str] = frozenset()

    def rebuild(self, state: State, params: Any, reference: np.ndarray) -> Detector:
        """A detector from its exported state, with ``params``' tunable values."""
        if self.tunable:
            tuned = {k: getattr(params, k) for k in self.tunable}
            state = {**state, "params": {**state["params"], **tuned}}
        if self.restore is not None:
            return self.restore(state, params, reference)
        det = self.build(params, reference)
        return type(det).from_state(state, reference=reference)

    def shaping(self, params: Any) -> dict[str, Any]:
        """The parameters that shape a detector's state (all but the tunable ones)."""
        return dict(params.model_dump(exclude=set(self.tunable)))


# -- the built-in kinds ----------------------------------------------------------------------
class PSIParams(Params):
    bins: int = Field(10, ge=2, le=100)
    window: int = Field(1000, ge=10)
    stride: int | None = Field(None, ge=1)
    threshold: Literal["adaptive", "fixed"] = "adaptive"
    alpha: float = Field(1e-5, gt=0, lt=1)
    warn: float = Field(0.1, gt=0)
    alert: float = Field(0.25, gt=0)


class KSParams(Params):
    window: int = Field(500, ge=10)
    stride: int = Field(100, ge=1)
    alpha: float = Field(1e-5, gt=0, lt=1)
    method: Literal["auto", "exact", "asymp"] = "auto"


class ADWINParams(Params):
    # river's default is 0.002; in the demo's 60,000 events that gave one false signal
    # before the drift, 0.0002 none, with the same detections after it.
    delta: float = Field(0.0002, gt=0, lt=1)
    clock: int = Field(32, ge=1)
    max_buckets: int = Field(5, ge=1)
    min_window_length: int = Field(5, ge=1)
    grace_period: int = Field(10, ge=0)


class CategoricalParams(Params):
    window: int = Field(1000, ge=10)
    stride: int | None = Field(None, ge=1)
    alpha: float = Field(1e-5, gt=0, lt=1)
    max_categories: int = Field(1000, ge=1, description="vocabulary cap from the reference")


def _psi(p: PSIParams, ref: np.ndarray) -> Detector:
    return PSI(ref, **p.model_dump())


def _ks(p: KSParams, ref: np.ndarray) -> Detector:
    return KS(ref, **p.model_dump())


def _adwin(p: ADWINParams, ref: np.ndarray) -> Detector:
    return ADWIN(**p.model_dump(), n_series=ref.shape[1])


def _categorical(p: CategoricalParams, codes: np.ndarray) -> Detector:
    n = max(1, int(np.nanmax(codes, initial=-1)) + 1)
    return CategoricalDrift(
        codes, window=p.window, stride=p.stride, alpha=p.alpha, n_categories=max(n, 1)
    )


BUILTIN = (
    DetectorKind(
        "psi",
        "numeric",
        PSIParams,
        _psi,
        tunable=frozenset({"threshold", "alpha", "warn", "alert"}),
    ),
    DetectorKind("ks", "numeric", KSParams, _ks, tunable=frozenset({"alpha", "method"})),
    DetectorKind(
        "adwin",
        "numeric",
        ADWINParams,
        _adwin,
        tunable=frozenset({"delta", "min_window_length", "grace_period"}),
    ),
    DetectorKind(
        "categorical", "categorical", CategoricalParams, _categorical, tunable=frozenset({"alpha"})
    ),
)


@cache
def registry() -> dict[str, DetectorKind]:
    """Every detector kind: the built-in ones, then those of installed plugins."""
    kinds = {k.name: k for k in BUILTIN}
    for ep in entry_points(group=GROUP):
        try:
            kind = ep.load()
        except Exception:
            log.exception("cannot load the detector plugin %s (%s)", ep.name, ep.value)
            continue
        if not isinstance(kind, DetectorKind) or kind.name in kinds:
            log.error("detector plugin %s is not a new DetectorKind; ignored", ep.name)
            continue
        kinds[kind.name] = kind
    return kinds
