"""The numbers' states as the cooldown agent reads and writes them, a bundle at a time.

A bundle's new states go to the changelog at once and are kept in memory, per
partition, until their changelog records are acknowledged; only then (when Faust
flushes before a commit or a revocation) are they written to the partition's store,
in one write batch with the changelog offset they reach. So the store never holds a
state its changelog lacks, and Faust's recovery after a restart reads only the
changelog's tail past that offset.
"""

from __future__ import annotations

from typing import Any

from streams.faust_patches import StoreAccess


class NumberStates:
    def __init__(self, store: StoreAccess, outputs: Any, changelog_topic: str) -> None:
        self._store = store
        self._outputs = outputs
        self._changelog_topic = changelog_topic
        # Partition -> key -> state bytes written to the changelog, not yet to the store.
        self._pending: dict[int, dict[bytes, bytes]] = {}

    def open(self, partition: int) -> bool:
        """Whether the partition's store is open (opened now if the partition is
        assigned to this worker)."""
        return self._store.open(partition)

    def read(self, partition: int, keys: list[bytes]) -> list[bytes | None]:
        pending = self._pending.get(partition)
        if not pending:
            return self._store.get_many(partition, keys)
        missing = [key for key in keys if key not in pending]
        stored = dict(zip(missing, self._store.get_many(partition, missing), strict=True)) \
            if missing else {}
        return [pending[key] if key in pending else stored[key] for key in keys]

    def write(self, partition: int, changes: dict[bytes, bytes]) -> None:
        if not changes:
            return
        send = self._outputs.send
        topic = self._changelog_topic
        for key, value in changes.items():
            send(topic, key, value, partition)
        self._pending.setdefault(partition, {}).update(changes)

    def persist(self) -> None:
        """Write the pending states to the stores. Call it only when every changelog
        record sent so far is acknowledged."""
        offsets = self._outputs.acknowledged
        for partition, changes in self._pending.items():
            # A partition revoked meanwhile: its changelog has the states, and the
            # worker that takes it over reads them from there.
            self._store.write(partition, changes.items(), offsets.get(partition))
        self._pending.clear()
