"""The models' states, kept by partition: which partition each model belongs to, what
each partition's checkpoint holds, restoring and dropping a partition. The online
learners' models travel with their partition's state.

A model belongs to the first partition its events come from. Producers must key events by
model (one model, one partition); events of a model read from another partition are still
processed but counted (``misrouted``) and warned about once, since in a consumer group
they may reach another instance.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from monitor.config.plan import ModelPlan
from monitor.errors import CheckpointError
from monitor.ingest.decode import ModelBatch, Rejected
from monitor.online.model_state import ModelState

log = logging.getLogger("driftline.pipeline")


class PartitionStates:
    """The models' states and the rejection counts, per partition (the worker thread
    owns them). ``learners`` (by model) export and load their own state."""

    def __init__(self, plans: Mapping[str, ModelPlan], learners: Mapping[str, Any]) -> None:
        self.plans = dict(plans)
        self.learners = dict(learners)
        self.models = {name: ModelState(p) for name, p in self.plans.items()}
        self.rejected_by: dict[int, Counter[str]] = {}  # partition -> reason -> count
        self.misrouted = 0  # events of a model read from another partition than its own
        self._warned: set[tuple[str, int]] = set()

    def count(self, rejected: Rejected, partitions: Sequence[int]) -> None:
        p = partitions[rejected.index] if rejected.index < len(partitions) else 0
        self.rejected_by.setdefault(p, Counter())[rejected.reason] += 1

    def rejected(self) -> Counter[str]:
        """Rejected records by reason, over the partitions held."""
        total: Counter[str] = Counter()
        for counts in self.rejected_by.values():
            total.update(counts)
        return total

    def claim(self, state: ModelState, batch: ModelBatch, partitions: Sequence[int]) -> None:
        """Note where a model's events come from (see the module doc)."""
        seen = (
            Counter(partitions[i] for i in batch.index) if partitions else Counter({0: len(batch)})
        )
        if state.partition is None:
            state.partition = min(seen)
        for p, n in seen.items():
            if p == state.partition:
                continue
            self.misrouted += n
            if (state.name, p) not in self._warned:
                self._warned.add((state.name, p))
                log.warning(
                    "model %s: events on partition %d, but its state lives with partition %d; "
                    "key events (and labels) by model so that each model stays on one partition",
                    state.name,
                    p,
                    state.partition,
                )

    def models_of(self, partition: int) -> list[str]:
        return sorted(m for m, s in self.models.items() if s.partition == partition)

    def export(self, partition: int) -> dict[str, Any]:
        """Plain data of everything the partition's future output depends on: its models'
        states, its learners' models and its rejection counts. The learners hand over what
        they learned so far (blocking: call it with nothing in flight)."""
        models = self.models_of(partition)
        return {
            "partition": partition,
            "models": {m: self.models[m].export_state() for m in models},
            "learners": {m: self.learners[m].export_state() for m in models if m in self.learners},
            "rejected": dict(self.rejected_by.get(partition, {})),
        }

    def restore(self, partition: int, state: Mapping[str, Any]) -> list[str]:
        """Continue the partition from :meth:`export` as if never stopped. A model whose
        saved state cannot be used (another plan, an unknown model) starts afresh, logged;
        returns the models restored."""
        self.drop(partition)
        restored = []
        for m, saved in state["models"].items():
            if m not in self.plans:
                log.error(
                    "checkpoint of partition %d holds model %s, not configured: left out",
                    partition,
                    m,
                )
                continue
            try:
                self.models[m] = ModelState.from_state(self.plans[m], saved)
            except CheckpointError as exc:
                log.error(
                    "partition %d: %s; model %s starts afresh (its reference warms up again)",
                    partition,
                    exc,
                    m,
                )
                continue
            self.models[m].partition = partition
            if m in self.learners:
                self.learners[m].load_state(state.get("learners", {}).get(m))
            restored.append(m)
        self.rejected_by[partition] = Counter(state["rejected"])
        return restored

    def drop(self, partition: int) -> list[str]:
        """Forget the partition (given up, or about to be restored): its models start
        afresh, as if never seen; returns them."""
        gone = self.models_of(partition)
        for m in gone:
            self.models[m] = ModelState(self.plans[m])
            if m in self.learners:
                self.learners[m].load_state(None)
        self.rejected_by.pop(partition, None)
        return gone
