"""The detector registry: how the daemon builds each kind of detector from its
configuration and a model's reference.

A :class:`DetectorKind` names a detector, the type of series it watches, the pydantic model
of its parameters (the ``params.<name>`` block of a configuration) and how to build it from
those parameters and the reference values of the series it watches (one column per
series). Built-in kinds are listed in :data:`BUILTIN`; another package adds one with an
entry point in the group ``driftline.detectors`` whose object is a :class:`DetectorKind`
(see the README's "Extending driftline").

Thresholds follow one target, false alerts per event (see :meth:`DetectorKind.calibrated`):
a kind says how its threshold parameter (``alpha``, ``delta``, ``arl``) follows from the
rate it may spend, and a value set in the configuration overrides that.

>>> sorted(registry())
['adwin', 'categorical', 'categorical_cusum', 'cusum', 'ks', 'psi']
>>> ks = registry()["ks"]
>>> round(ks.calibrated(ks.params(), 1e-6).alpha, 12)  # checks every 100 events
0.0001
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

from detectors import ADWIN, CUSUM, KS, PSI, CategoricalCUSUM, CategoricalDrift, Detector

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
    # The parameter that sets the false-alarm rate, and how it follows from a rate of
    # false alerts per event: ``(params, rate) -> value``. Left unset in a configuration
    # (None), it is computed; set, it overrides the target.
    rate_param: str | None = None
    from_rate: Callable[[Any, float], float] | None = None

    def calibrated(self, params: Any, rate: float) -> Any:
        """``params`` with the rate parameter filled in from ``rate`` (false alerts per
        event this detector may raise on a series) unless it is set already."""
        if self.rate_param is None or self.from_rate is None:
            return params
        if getattr(params, self.rate_param) is not None:
            return params
        value = self.from_rate(params, rate)
        return params.model_copy(update={self.rate_param: value})

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
# Rate parameters default to None: computed from the false-alert target.
Alpha = Field(None, gt=0, lt=1, description="significance per check; default: from the target")


class PSIParams(Params):
    bins: int = Field(10, ge=2, le=100)
    window: int = Field(1000, ge=10)
    stride: int | None = Field(None, ge=1, description="events between checks; window / 10")
    threshold: Literal["adaptive", "fixed"] = "adaptive"
    alpha: float | None = Alpha
    warn: float = Field(0.1, gt=0)
    alert: float = Field(0.25, gt=0)


class KSParams(Params):
    window: int = Field(500, ge=10)
    stride: int = Field(100, ge=1)
    alpha: float | None = Alpha
    method: Literal["auto", "exact", "asymp"] = "auto"


class ADWINParams(Params):
    delta: float | None = Field(None, gt=0, lt=1, description="default: from the target")
    clock: int = Field(32, ge=1)
    max_buckets: int = Field(5, ge=1)
    min_window_length: int = Field(5, ge=1)
    grace_period: int = Field(10, ge=0)


class CategoricalParams(Params):
    window: int = Field(1000, ge=10)
    stride: int | None = Field(None, ge=1, description="events between checks; window / 10")
    alpha: float | None = Alpha
    max_categories: int = Field(1000, ge=1, description="vocabulary cap from the reference")


ARL = Field(None, gt=1, description="mean events between false alarms; default: from the target")


class CUSUMParams(Params):
    arl: float | None = ARL
    allowances: tuple[float, ...] = Field((0.125, 0.25, 0.5, 1.0), min_length=1)
    scale_allowances: tuple[float, ...] = Field((0.25, 1.0), min_length=1)


class CategoricalCUSUMParams(Params):
    arl: float | None = ARL
    allowances: tuple[float, ...] = Field((0.125, 0.25, 0.5), min_length=1)
    max_channels: int = Field(6, ge=1, le=64, description="most frequent categories watched")
    min_share: float = Field(0.01, gt=0, lt=0.5, description="smallest share watched")


def _psi(p: PSIParams, ref: np.ndarray) -> Detector:
    return PSI(ref, **p.model_dump())


def _ks(p: KSParams, ref: np.ndarray) -> Detector:
    return KS(ref, **p.model_dump())


def _adwin(p: ADWINParams, ref: np.ndarray) -> Detector:
    return ADWIN(**p.model_dump(), n_series=ref.shape[1])


def _n_categories(codes: np.ndarray) -> int:
    return max(1, int(np.nanmax(codes, initial=-1)) + 1)


def _categorical(p: CategoricalParams, codes: np.ndarray) -> Detector:
    return CategoricalDrift(
        codes,
        window=p.window,
        stride=p.stride,
        alpha=p.alpha,  # type: ignore[arg-type]  # None is rejected: plans calibrate first
        n_categories=_n_categories(codes),
    )


def _cusum(p: CUSUMParams, ref: np.ndarray) -> Detector:
    return CUSUM(ref, **p.model_dump())


def _categorical_cusum(p: CategoricalCUSUMParams, codes: np.ndarray) -> Detector:
    return CategoricalCUSUM(codes, n_categories=_n_categories(codes), **p.model_dump())


def _restore_cusum(state: State, p: CUSUMParams, ref: np.ndarray) -> Detector:
    return CUSUM.from_state(state, reference=ref)  # its thresholds come with the state


def _restore_categorical_cusum(state: State, p: Any, codes: np.ndarray) -> Detector:
    return CategoricalCUSUM.from_state(state)


def _per_check(p: Any, rate: float) -> float:
    """A test checked every ``stride`` events may spend ``rate * stride`` per check (the
    expected false alerts add up over checks, however correlated the checks are)."""
    stride: int = p.stride if p.stride is not None else max(1, p.window // 10)
    return min(0.5, rate * stride)


BUILTIN = (
    DetectorKind(
        "cusum",
        "numeric",
        CUSUMParams,
        _cusum,
        restore=_restore_cusum,
        tunable=frozenset({"arl"}),
        rate_param="arl",
        from_rate=lambda p, rate: 1.0 / rate,
    ),
    DetectorKind(
        "ks",
        "numeric",
        KSParams,
        _ks,
        tunable=frozenset({"alpha", "method"}),
        rate_param="alpha",
        from_rate=_per_check,
    ),
    DetectorKind(
        "psi",
        "numeric",
        PSIParams,
        _psi,
        tunable=frozenset({"threshold", "alpha", "warn", "alert"}),
        rate_param="alpha",
        from_rate=_per_check,
    ),
    DetectorKind(
        "adwin",
        "numeric",
        ADWINParams,
        _adwin,
        tunable=frozenset({"delta", "min_window_length", "grace_period"}),
        rate_param="delta",
        # ADWIN's bound holds per check (every ``clock`` values) for values in [0, 1]; it
        # is loose for others, tight for none: its rate is the least exact of the kinds.
        from_rate=lambda p, rate: min(0.5, rate * p.clock),
    ),
    DetectorKind(
        "categorical",
        "categorical",
        CategoricalParams,
        _categorical,
        tunable=frozenset({"alpha"}),
        rate_param="alpha",
        from_rate=_per_check,
    ),
    DetectorKind(
        "categorical_cusum",
        "categorical",
        CategoricalCUSUMParams,
        _categorical_cusum,
        restore=_restore_categorical_cusum,
        tunable=frozenset({"arl"}),
        rate_param="arl",
        from_rate=lambda p, rate: 1.0 / rate,
    ),
)


def describe_detector(name: str, params: Any) -> str:
    """A detector and the threshold it runs at, for people: ``ks (alpha 0.0001)``."""
    kind = registry()[name]
    if kind.rate_param is None or getattr(params, kind.rate_param, None) is None:
        return name
    value = getattr(params, kind.rate_param)
    return (
        f"{name} ({kind.rate_param} {value:,.0f})"
        if value >= 100
        else f"{name} ({kind.rate_param} {value:.2g})"
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
