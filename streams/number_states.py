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

from streams.bundles import partition_for
from streams.faust_patches import StoreAccess
from streams.held import INDEX_PREFIX, index_range_end, parse_index_key

# E.164 keys start with "+": the table's number keys lie from "+" up to the next byte.
NUMBER_KEYS_START, NUMBER_KEYS_END = b"+", b","


class NumberStates:
    def __init__(self, store: StoreAccess, outputs: Any, changelog_topic: str,
                 partitions: int) -> None:
        self._store = store
        self._partitions = partitions
        self._outputs = outputs
        self._changelog_topic = changelog_topic
        # Partition -> key -> state bytes (None: deleted) written to the changelog, not
        # yet to the store; the release index's share of them also apart, so that the
        # release timer does not look through every pending state.
        self._pending: dict[int, dict[bytes, bytes | None]] = {}
        self._pending_index: dict[int, dict[bytes, bytes | None]] = {}

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

    def write(self, partition: int, changes: dict[bytes, bytes | None]) -> None:
        """Write states (None deletes the key) to the changelog now, to the store at the
        next `persist`."""
        if not changes:
            return
        send = self._outputs.send
        topic = self._changelog_topic
        index: dict[bytes, bytes | None] | None = None
        for key, value in changes.items():
            send(topic, key, value, partition)
            if key[:1] == b"\x00" and key.startswith(INDEX_PREFIX):
                if index is None:
                    index = self._pending_index.setdefault(partition, {})
                index[key] = value
        self._pending.setdefault(partition, {}).update(changes)

    def number_keys(self, partition: int, start: bytes, limit: int) -> list[bytes]:
        """Up to `limit` of the partition's stored numbers (E.164 keys) from `start` on,
        in order."""
        keys = self._store.keys_between(partition, start, NUMBER_KEYS_END, limit)
        if self._store.shares_partitions:
            keys = [key for key in keys
                    if partition_for(key, self._partitions) == partition]
        return keys

    def size(self, partition: int) -> int:
        """About how many keys the partition's table holds: RocksDB's estimate (numbers,
        release index entries, kept opt-outs); counted exactly in the memory store."""
        estimate = self._store.estimated_keys(partition)
        if estimate is not None:
            return estimate
        numbers = self.number_keys(partition, NUMBER_KEYS_START, 2**62)
        return len(numbers) + self.held_count(partition)

    def held_count(self, partition: int) -> int:
        """The messages held on the partition: its release index entries."""
        return len(self.due_index_keys(partition, 2**62, 2**62))

    def due_index_keys(self, partition: int, now_ms: int, limit: int) -> list[bytes]:
        """The partition's release index entries due at `now_ms` (at most about `limit`),
        in release order."""
        end = index_range_end(now_ms)
        stored = self._store.keys_between(partition, INDEX_PREFIX, end, limit)
        if self._store.shares_partitions:
            stored = [key for key in stored
                      if partition_for(parse_index_key(key)[1], self._partitions) == partition]
        pending = self._pending_index.get(partition)
        if not pending:
            return stored
        keys = {key for key in stored if pending.get(key, b"") is not None}
        keys.update(key for key, value in pending.items() if value is not None and key < end)
        return sorted(keys)[:limit] if len(stored) < limit else \
            sorted(k for k in keys if k <= stored[-1])

    def persist(self) -> None:
        """Write the pending states to the stores. Call it only when every changelog
        record sent so far is acknowledged."""
        offsets = self._outputs.acknowledged
        for partition, changes in self._pending.items():
            # A partition revoked meanwhile: its changelog has the states, and the
            # worker that takes it over reads them from there.
            self._store.write(partition, changes.items(), offsets.get(partition))
        self._pending.clear()
        self._pending_index.clear()
