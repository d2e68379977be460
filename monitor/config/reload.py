"""What a new configuration changes in a running daemon, and whether it may change it live.

A reload (SIGHUP or ``POST /-/reload``) applies changes to the sinks, the alerting
parameters, the detectors' tunable parameters (thresholds: see ``DetectorKind.tunable``),
``logging.level`` and ``http.token``, and takes a reference file whose content changed. Any
other change (Kafka, the HTTP address, state, labels, events, a model's series, detectors or
the parameters that shape their state, its reference source) needs a restart: the whole
reload is refused, saying which keys, and the running configuration stays.

>>> from monitor.config.schema import parse_config
>>> doc = {"kafka": {"topic": "t"}, "models": {"m": {"features": {"x": "numeric"}}}}
>>> old = parse_config(doc, env={})
>>> new = parse_config({**doc, "alerting": {"cooldown_events": 10},
...     "kafka": {"topic": "u"}}, env={})
>>> changes(old, new)
Changes(live=['alerting'], restart=['kafka'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from monitor.config.plan import plan
from monitor.config.schema import Config

LIVE = frozenset({"sinks", "alerting", "logging"})  # whole sections that change live


@dataclass
class Changes:
    live: list[str] = field(default_factory=list)  # dotted keys applied without a restart
    restart: list[str] = field(default_factory=list)  # dotted keys that need a restart


def _dump(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def changes(old: Config, new: Config) -> Changes:
    """The keys whose values differ, split into what a reload applies and what it cannot."""
    out = Changes()
    for key in Config.model_fields:
        a, b = _dump(getattr(old, key)), _dump(getattr(new, key))
        if key == "http":
            a_token, b_token = old.http.token, new.http.token
            same_token = (a_token is None) == (b_token is None) and (
                a_token is None
                or b_token is None
                or a_token.get_secret_value() == b_token.get_secret_value()
            )
            if not same_token:
                out.live.append("http.token")
            if (old.http.host, old.http.port) != (new.http.host, new.http.port):
                out.restart.append("http")
        elif key in ("defaults", "models"):
            continue  # compared through the models' plans below
        elif a != b:
            (out.live if key in LIVE else out.restart).append(key)
    old_plans, new_plans = plan(old), plan(new)
    for name in sorted(old_plans.keys() | new_plans.keys()):
        if name not in old_plans or name not in new_plans:
            out.restart.append(f"models.{name} ({'added' if name in new_plans else 'removed'})")
            continue
        p, q = old_plans[name], new_plans[name]
        if p.fingerprint() != q.fingerprint():
            out.restart.append(f"models.{name} (its series, detectors or their windows)")
        elif [s.detectors for s in p.series] != [s.detectors for s in q.series]:
            out.live.append(f"models.{name} (detector thresholds)")
        if (p.warmup, p.reference_file is None, p.keep_recent) != (
            q.warmup,
            q.reference_file is None,
            q.keep_recent,
        ):
            out.restart.append(f"models.{name}.reference")
        elif p.reference_file != q.reference_file:
            out.live.append(f"models.{name}.reference.file")
    return out
