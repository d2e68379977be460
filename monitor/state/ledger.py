"""The partition ledger: which partitions this instance holds and where each stands.

The single owner of the assignment (partitions held, being restored, kept across a
rebalance), of positions (the next offset after each finished batch, with the fingerprint
of its last record) and of what may be committed. It does no I/O, so every rule is a
plain method with a test of its own. A *partition* here is a partition number ``p``: the
prediction topic's partition ``p`` and, co-partitioned, the labels topic's.

**When offsets are committed**, all decided here:

* without a state store, after every finished batch (:meth:`finished` then
  :meth:`to_commit`);
* with a store, only with a checkpoint, and only the offsets that checkpoint holds
  (:meth:`checkpoint_of`), so a partition is never committed past the state that saw it;
* before partitions are given up, what is pending (no store) or their checkpoint (store).

>>> from monitor.ingest.source import Record
>>> ledger = PartitionLedger(store=False)
>>> ledger.assign({0})
Assignment(keep=set(), restore={0}, forget=set())
>>> ledger.restored(0, {}, {})
>>> ledger.finished([Record("t", 0, 41, None, b"x")])
>>> ledger.to_commit()
{('t', 0): 42}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from monitor.ingest.source import TP, Offsets, Record, Resume, fingerprint


@dataclass(frozen=True)
class Assignment:
    """What a new assignment means for the partitions' state: ``keep`` (held until this
    rebalance: continue from memory), ``restore`` (new here: restore from the store before
    the first record) and ``forget`` (kept through the revocation, not assigned again)."""

    keep: set[int]
    restore: set[int]
    forget: set[int]


class PartitionLedger:
    def __init__(self, store: bool) -> None:
        self.store = store  # whether commits follow checkpoints
        self.owned: set[int] = set()  # partitions whose state is here and ready
        self.restoring: set[int] = set()  # assigned, state not restored yet (paused)
        self.kept: set[int] = set()  # revoked in the rebalance under way, state still here
        self.generation = 0  # bumped by every rebalance callback
        self.position: Offsets = {}  # next offsets of finished batches
        self.fingerprints: dict[TP, int] = {}  # of the last record of each finished batch
        self.pending: Offsets = {}  # finished, not committed (no store)
        self.since_checkpoint = 0  # records finished since the last checkpoint

    # -- batches -------------------------------------------------------------------------
    def usable(self, records: list[Record], generation: int) -> list[Record]:
        """The records of a fetch that may be processed: none if a rebalance happened since
        the fetch began (every partition was sought to where it resumes, so they are read
        again from there, or by their new owner), and only those of partitions held."""
        if generation != self.generation:
            return []
        owned = self.owned
        return [r for r in records if r.partition in owned]

    def finished(self, records: Sequence[Record]) -> None:
        """A batch is done (alerts handed over, rejects dead-lettered)."""
        last: dict[TP, Record] = {}
        for r in records:
            last[(r.topic, r.partition)] = r
        for tp, r in last.items():
            self.position[tp] = r.offset + 1
            self.fingerprints[tp] = fingerprint(r)
            if not self.store:
                self.pending[tp] = r.offset + 1
        self.since_checkpoint += len(records)

    def to_commit(self) -> Offsets:
        """What to commit now: without a store, everything finished and not committed."""
        return dict(self.pending) if not self.store else {}

    def committed(self, offsets: Offsets) -> None:
        for tp, o in offsets.items():
            if self.pending.get(tp) == o:
                del self.pending[tp]

    # -- checkpoints ---------------------------------------------------------------------
    def checkpoint_of(self, partition: int) -> tuple[Offsets, dict[TP, int]]:
        """The positions a checkpoint of ``partition`` records (what it may commit)."""
        offsets = {tp: o for tp, o in self.position.items() if tp[1] == partition}
        fps = {tp: f for tp, f in self.fingerprints.items() if tp in offsets}
        return offsets, fps

    def checkpointed(self) -> None:
        self.since_checkpoint = 0

    # -- rebalances ----------------------------------------------------------------------
    def revoke(self, partitions: set[int]) -> set[int]:
        """Partitions are being given up; returns those whose state is here (to checkpoint).
        Their state stays until the assignment that follows says whether it comes back."""
        held = partitions & self.owned
        self.owned -= partitions
        self.restoring -= partitions
        self.kept |= held
        self.generation += 1
        return held

    def assign(self, partitions: set[int]) -> Assignment:
        """A new assignment (after any revocation); :meth:`settled` ends it."""
        keep = partitions & (self.kept | self.owned)
        forget = self.kept - partitions
        for p in forget:
            self.forget(p)
        restore = partitions - keep
        self.kept = set()
        self.owned = set(keep)
        self.restoring = set(restore)
        return Assignment(keep, restore, forget)

    def settled(self) -> None:
        """The assignment's partitions are restored and sought (call it last, with no await
        before the seeks): whatever was fetched until now came from positions before them
        and is dropped (:meth:`usable`), even what the consumer fetched while the restores
        ran."""
        self.generation += 1

    def restored(self, partition: int, offsets: Offsets, fingerprints: dict[TP, int]) -> None:
        """The partition's state is in place: it may be consumed from ``offsets``."""
        self.restoring.discard(partition)
        self.owned.add(partition)
        for tp in [tp for tp in self.position if tp[1] == partition]:
            del self.position[tp]
            self.fingerprints.pop(tp, None)
        self.position.update(offsets)
        self.fingerprints.update({tp: f for tp, f in fingerprints.items() if tp in offsets})

    def forget(self, partition: int) -> None:
        self.position = {tp: o for tp, o in self.position.items() if tp[1] != partition}
        self.pending = {tp: o for tp, o in self.pending.items() if tp[1] != partition}
        self.fingerprints = {tp: f for tp, f in self.fingerprints.items() if tp[1] != partition}

    def resume_of(self, partition: int) -> dict[TP, Resume]:
        """Where a kept partition continues: its positions, checked against the record
        before each (a rebalance can follow a broker that came back with another log)."""
        return {
            tp: Resume(o, self.fingerprints.get(tp))
            for tp, o in self.position.items()
            if tp[1] == partition
        }
