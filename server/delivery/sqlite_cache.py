"""What the SQLite group-commit writer remembers between its transactions: device sets, the
device pks each addressing resolved to, and queue usage.

Every batch needs the device sets of the users it names and the queue usage of the devices it
fills. On SQLite the writer's connection is the only one that writes queue rows while the
relay serves, so both can be kept from one transaction to the next and updated with what the
writer itself stores and deletes, instead of read again (the usage read is a pass over every
queued row of each target device).

Anything else that changes the database — a device list published, an account deleted, the
TTL sweep, ``vox-relay`` in another process, another writer — is seen through SQLite's
``PRAGMA data_version``, which changes on a connection when *another* connection committed:
it is read at the start of each of the writer's transactions (which hold the write lock from
``BEGIN IMMEDIATE``, so nothing else commits until they end) and any change forgets
everything. A transaction that fails forgets everything too (the usage it counted was rolled
back). PostgreSQL (several nodes, several writers) never uses this: it reads every time —
the device sets, and the queue usage from counters that triggers keep
(``delivery_queue_usage``, migration 0011; the tables exist on SQLite too, empty).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy.engine import Connection

from server.delivery.policy import QueueUsage
from server.delivery.repository import BatchReads, DeliveryRepository, DeviceSets

__all__ = ["Route", "WriterCache"]

#: How a send addresses its payloads: (sender's username, sender's device id, durable, each
#: payload's ``(user, device id)`` recipients).
Route = tuple[str, int, bool, tuple[tuple[tuple[str, int], ...], ...]]

#: Entries kept at most (each kind); past that the cache starts over (bounded memory).
_MAX_ENTRIES = 50_000


class WriterCache:
    """Device sets and queue usage valid while ``PRAGMA data_version`` stays the same."""

    __slots__ = ("_accounts", "_devices", "_usage", "_version", "hits", "misses", "routes")

    def __init__(self) -> None:
        self._version: int | None = None
        #: username → {device id: device pk}, for users that exist.
        self._devices: dict[str, dict[int, int]] = {}
        #: username → account id
        self._accounts: dict[str, int] = {}
        #: device pk → what its queue holds (updated in place by the writer).
        self._usage: dict[int, QueueUsage] = {}
        #: The device pks of every payload of an addressing that matched the device sets
        #: above (:func:`~server.delivery.policy.resolve_recipients`; read only). A
        #: conversation's sends all address the same devices: resolved once.
        self.routes: dict[Route, list[list[int]]] = {}
        #: Lookups answered from memory / from the database (tests, diagnostics).
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        """Forget everything (the next transaction reads from the database)."""
        self._version = None
        self._devices.clear()
        self._accounts.clear()
        self._usage.clear()
        self.routes.clear()

    def begin(self, conn: Connection) -> None:
        """Call first in each of the writer's transactions: forget everything if another
        connection committed since the writer's last transaction."""
        cursor: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            version = int(cursor.execute("PRAGMA data_version").fetchone()[0])
        finally:
            cursor.close()
        if version != self._version or max(len(self._usage), len(self.routes)) > _MAX_ENTRIES:
            self.clear()
            self._version = version

    def batch_reads(
        self,
        repo: DeliveryRepository,
        conn: Connection,
        acks: Sequence[tuple[int, int]],
        keys: Sequence[tuple[int, str]],
        users: Iterable[str],
    ) -> BatchReads:
        """:meth:`DeliveryRepository.batch_reads` for the device sets not known here; the
        usage of the acked rows is taken off."""
        names = set(users)
        missing = [name for name in names if name not in self._accounts]
        self.hits += len(names) - len(missing)
        self.misses += len(missing)
        if len(self._accounts) > _MAX_ENTRIES:
            self._devices.clear()
            self._accounts.clear()
            self.routes.clear()
        removed: list[tuple[int, int, int]] = []
        reads = repo.batch_reads(conn, acks, keys, missing, removed=removed)
        self.removed(removed)
        self._devices.update(reads.sets.devices)
        self._accounts.update(reads.sets.accounts)
        sets = DeviceSets({}, {})  # the dicts are shared with the cache: read only
        for name in names:
            account = self._accounts.get(name)
            if account is not None:
                sets.accounts[name] = account
                sets.devices[name] = self._devices[name]
        reads.sets = sets
        return reads

    def queue_usage(
        self, repo: DeliveryRepository, conn: Connection, device_pks: Iterable[int]
    ) -> dict[int, QueueUsage]:
        """Like :meth:`DeliveryRepository.queue_usage`; the objects are the cache's own, so
        what the writer counts into them for the rows it inserts stays counted."""
        pks = set(device_pks)
        missing = [pk for pk in pks if pk not in self._usage]
        self.hits += len(pks) - len(missing)
        if missing:
            self.misses += len(missing)
            self._usage.update(repo.queue_usage(conn, missing))
        return {pk: self._usage[pk] for pk in pks}

    def removed(self, rows: Iterable[tuple[int, int, int]]) -> None:
        """Queue rows (device pk, size, sender account id) the writer deleted."""
        for pk, size, sender in rows:
            usage = self._usage.get(pk)
            if usage is None:
                continue
            usage.depth -= 1
            usage.bytes -= size
            depth, used = usage.by_sender.get(sender, (1, size))
            if depth <= 1:
                usage.by_sender.pop(sender, None)
            else:
                usage.by_sender[sender] = (depth - 1, used - size)
