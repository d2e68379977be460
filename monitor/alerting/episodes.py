"""The one alert-episode state machine, for any key (a series and detector, a model's
concept drift), counted in any unit (a model's events, its labelled pairs).

Per key: a signal while quiet **fires** an episode (unless the key is in its cooldown);
signals while firing keep it alive, and one of a higher severity **escalates** it; once
``quiet`` counts pass with no signal it is **resolved** at ``last signal + quiet``, and
the key cannot fire again for ``cooldown`` counts.

>>> e = Episodes(quiet=100, cooldown=50)
>>> e.signal("k", at=10, severity="warning", started_at=None).change    # fire
'fired'
>>> e.signal("k", at=60, severity="warning", started_at=None) is None   # stay
True
>>> e.signal("k", at=70, severity="critical", started_at=None).change   # escalate
'escalated'
>>> [(at, key) for at, key, _ in e.resolve_due(before=200)]             # resolve
[(170, 'k')]
>>> e.signal("k", at=210, severity="warning", started_at=None) is None  # cooldown
True
>>> e.signal("k", at=220, severity="warning", started_at=None).episode.start
220
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)

SEVERITY = {"warning": 0, "critical": 1}


@dataclass
class Episode:
    id: str
    start: int
    started_at: str | None
    last_signal: int
    severity: str


def episode_fields(ep: Episode) -> dict[str, Any]:
    """The fields every alert of an episode carries (for ``make_alert``)."""
    return {
        "episode_id": ep.id,
        "severity": ep.severity,
        "started_at": ep.started_at,
        "start_event": ep.start,
    }


@dataclass(frozen=True)
class Change:
    """What a signal did: ``fired`` a new episode or ``escalated`` the firing one."""

    change: str
    episode: Episode


class Episodes(Generic[K]):
    """Episodes per key (see the module doc). ``make_id(key, start)`` names a new episode."""

    def __init__(
        self,
        quiet: int,
        cooldown: int,
        make_id: Callable[[K, int], str] = lambda key, at: f"{key}@{at}",
    ) -> None:
        self.quiet = quiet
        self.cooldown = cooldown
        self.make_id = make_id
        self.open: dict[K, Episode] = {}
        self.quiet_until: dict[K, int] = {}  # cooldown: no new episode before this count

    def signal(self, key: K, *, at: int, severity: str, started_at: str | None) -> Change | None:
        ep = self.open.get(key)
        if ep is not None:
            ep.last_signal = at
            if SEVERITY[severity] > SEVERITY[ep.severity]:
                ep.severity = severity
                return Change("escalated", ep)
            return None
        if at < self.quiet_until.get(key, -1):
            return None
        ep = Episode(self.make_id(key, at), at, started_at, at, severity)
        self.open[key] = ep
        return Change("fired", ep)

    def resolve_due(self, before: int) -> Iterator[tuple[int, K, Episode]]:
        """Resolve every episode whose quiet period ended before ``before``, in order of the
        resolve point: yields ``(resolved at, key, episode)``, each episode closed only as
        it is yielded (the others due later are still open then, as they would be had the
        stream stopped at that point)."""
        due = sorted(
            (
                (ep.last_signal + self.quiet, key)
                for key, ep in self.open.items()
                if ep.last_signal + self.quiet < before
            ),
            key=lambda item: (item[0], repr(item[1])),
        )
        for at, key in due:
            ep = self.open.pop(key)
            self.quiet_until[key] = at + self.cooldown
            yield at, key, ep

    def close(self, which: Callable[[K], bool]) -> list[tuple[K, Episode]]:
        """Close the open episodes of the keys ``which`` picks, with no cooldown after
        them (a re-baseline: what fired is now normal, and a new drift may fire at once)."""
        closed = [(key, ep) for key, ep in self.open.items() if which(key)]
        for key, _ in closed:
            del self.open[key]
            self.quiet_until.pop(key, None)
        return closed

    def firing(self) -> Iterator[tuple[K, Episode]]:
        return iter(list(self.open.items()))

    def export_state(self) -> dict[str, Any]:
        return {
            "open": [(k, vars(ep).copy()) for k, ep in self.open.items()],
            "quiet_until": list(self.quiet_until.items()),
        }

    def load_state(self, state: dict[str, Any], key: Callable[[Any], K]) -> None:
        """``key`` turns a saved key (a list once encoded) back into a key."""
        self.open = {key(k): Episode(**ep) for k, ep in state["open"]}
        self.quiet_until = {key(k): at for k, at in state["quiet_until"]}
