"""Delivery and read receipts: coalesced on their way, and owed until the relay took them.

:class:`ReceiptSender` sends at most one receipt per recipient and kind at a time: ids that
come meanwhile wait and go together in the next (up to
:data:`~clients.sdk.engine.RECEIPT_CHUNK` per receipt).

Every receipt is **owed** from the store transaction that makes it due (the burst that stored
the messages, the one that marked them read) until the relay accepted a receipt carrying its
ids: one sealed record in the store (:data:`OWED_KEY`). A receipt that could not go (the
client was offline, killed before it left, the send failed) is sent again at the next
connection (:meth:`ReceiptSender.resume`), so the sender's ticks never stay one short. A
receipt sent twice is harmless: a message's state only moves forward. Owed ids are given up
after :data:`OWED_TTL` seconds, and beyond :data:`MAX_OWED` per recipient and kind the oldest
go (``docs/protocol-client.md`` *Owed receipts*).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from clients.sdk.content import Receipt, ReceiptKind
from clients.sdk.engine import RECEIPT_CHUNK
from clients.sdk.errors import ClientError, UnknownUser
from clients.sdk.messaging import now_ms
from clients.sdk.models import SendResult
from clients.sdk.pipeline import Settled
from clients.sdk.protocol import OutgoingSend, SendReceipt
from clients.sdk.sendqueue import Fail, Queued
from clients.store.errors import StoreError
from crypto.errors import VoxError

if TYPE_CHECKING:
    from clients.sdk.core import Core

__all__ = ["MAX_OWED", "OWED_KEY", "OWED_TTL", "SETTLE_DELAY", "ReceiptSender", "SealedReceipt"]

log = logging.getLogger("vox.client")

#: The store's sealed record of the receipts owed (JSON).
OWED_KEY = "receipts-owed"
#: Seconds an owed receipt is tried again (at each connection) before it is given up.
OWED_TTL = 7 * 86400.0
#: Message ids owed to one recipient and kind at most (beyond, the oldest are given up).
MAX_OWED = 5000
#: Seconds after the relay took a receipt by which its ids leave the store's record (sooner
#: with the next burst's commit).
SETTLE_DELAY = 1.0

_Key = tuple[str, ReceiptKind]


@dataclass(frozen=True, slots=True)
class SealedReceipt:
    """A receipt encrypted in a burst's transaction (:meth:`ReceiptSender.seal`)."""

    key: _Key
    content: Receipt
    send: OutgoingSend


class ReceiptSender:
    """Sends receipts in the background and keeps what is owed (see the module docstring)."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self._waiting: dict[_Key, list[bytes]] = {}  # per key with a sender running
        self._flying: dict[_Key, Sequence[bytes]] = {}  # the ids of the receipt on its way
        #: Ids the relay took, not yet removed from the store's record (see :meth:`settle`).
        self._taken: dict[_Key, set[bytes]] = {}
        self._writing: asyncio.TimerHandle | None = None

    # --- owed ------------------------------------------------------------------------

    def owe(self, receipts: Sequence[SendReceipt]) -> None:
        """Record ``receipts`` as owed, in the caller's store transaction (one opened if
        none is); the ids taken since the last write leave the record in the same write."""
        if not receipts:
            return
        owed, now = self._owed(), time.time()
        for receipt in receipts:
            at, ids = owed.get((receipt.to, receipt.kind), (now, []))
            known = set(ids)
            ids += [i for i in receipt.ids if i not in known]
            owed[(receipt.to, receipt.kind)] = (at, ids[-MAX_OWED:])
        self._save(owed)

    def settle(self, to: str, kind: ReceiptKind, ids: Sequence[bytes]) -> None:
        """The relay took a receipt with ``ids``: no longer owed. They leave the store's record
        with the next :meth:`owe` (a burst's commit) or, when none comes, after
        :data:`SETTLE_DELAY` seconds in a commit without fsync; lost in a crash, they are
        only sent once more."""
        self._taken.setdefault((to, kind), set()).update(ids)
        if self._writing is None:
            loop = asyncio.get_running_loop()
            self._writing = loop.call_later(SETTLE_DELAY, self.write_taken)

    def write_taken(self) -> None:
        """Remove the ids taken from the store's record now (if any)."""
        if self._writing is not None:
            self._writing.cancel()
            self._writing = None
        if not self._taken:
            return
        try:
            with self.core.store.transaction(sync=False):
                self._save(self._owed())
        except StoreError:
            log.exception("could not record receipts as sent; they may be sent again")

    def resume(self) -> None:
        """On a new connection: send every owed receipt not on its way (those owed for
        longer than :data:`OWED_TTL` are given up)."""
        self.write_taken()
        try:
            owed, now = self._owed(), time.time()
            expired = [key for key, (at, _) in owed.items() if at < now - OWED_TTL]
            if expired:
                for key in expired:
                    del owed[key]
                self._save(owed)
        except StoreError:
            log.exception("could not read the owed receipts")
            return
        self.add([SendReceipt(to, kind, tuple(ids)) for (to, kind), (_, ids) in owed.items()])

    def _owed(self) -> dict[_Key, tuple[float, list[bytes]]]:
        raw = self.core.store.get_secret(OWED_KEY)
        if not raw:
            return {}
        try:
            entries = json.loads(raw)
            return {
                (str(e["to"]), ReceiptKind(int(e["kind"]))): (
                    float(e["at"]),
                    [bytes.fromhex(i) for i in e["ids"]],
                )
                for e in entries
            }
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable record of owed receipts; dropped")
            return {}

    def _save(self, owed: dict[_Key, tuple[float, list[bytes]]]) -> None:
        """Write ``owed`` without the ids taken (forgotten from memory then: rolled back,
        they are only sent once more)."""
        taken, self._taken = self._taken, {}
        for key, gone in taken.items():
            at, ids = owed.get(key, (0.0, []))
            ids = [i for i in ids if i not in gone]
            if ids:
                owed[key] = (at, ids)
            else:
                owed.pop(key, None)
        entries = [
            {"to": to, "kind": int(kind), "at": at, "ids": [i.hex() for i in ids]}
            for (to, kind), (at, ids) in owed.items()
        ]
        self.core.store.set_secret(OWED_KEY, json.dumps(entries).encode() if entries else None)

    # --- sending ---------------------------------------------------------------------

    def seal(self, receipts: list[SendReceipt]) -> tuple[list[SealedReceipt], list[SendReceipt]]:
        """In a burst's store transaction: encrypt now each receipt whose recipient and kind
        has none on its way, when that needs no I/O (device lists fresh, a session with every
        device); returns those and the receipts left to :meth:`add`."""
        sealed: list[SealedReceipt] = []
        rest: list[SendReceipt] = []
        for receipt in receipts:
            key = (receipt.to, receipt.kind)
            if key in self._waiting or any(s.key == key for s in sealed) or not self._ready(key):
                rest.append(receipt)
                continue
            content = Receipt(kind=receipt.kind, ids=receipt.ids, sent_at_ms=now_ms())
            try:
                send = self.core.protocol.encode_direct(receipt.to, content)
            except (ClientError, VoxError):  # e.g. no longer trusted: the usual path says why
                rest.append(receipt)
                continue
            sealed.append(SealedReceipt(key, content, send))
        return sealed, rest

    def _ready(self, key: _Key) -> bool:
        """Whether a receipt to ``key``'s recipient can be encrypted without I/O (what
        :func:`~clients.sdk.peers.ensure_sessions` would otherwise fetch first)."""
        core, now = self.core, time.monotonic()
        users = (key[0], core.username)
        for user in users:
            known = core.protocol.device_list(user) is not None
            if core.engine.list_due(user, now, known=known):
                return False
        return not core.protocol.missing_sessions(users)

    def add(self, receipts: list[SendReceipt], sealed: Sequence[SealedReceipt] = ()) -> None:
        """Queue ``receipts``; starts a sender for each recipient and kind not already busy.
        ``sealed`` ones go to the send builder at once (call this right after their burst's
        commit, before any await: no send is encrypted between them and their queueing, so
        frames still reach the relay in the order of their ratchet steps)."""
        for one in sealed:
            self._waiting[one.key] = []
            self._flying[one.key] = one.content.ids
            self.core.spawn(self._send_all(one.key, self._submit(one)))
        for receipt in receipts:
            key = (receipt.to, receipt.kind)
            if key in self._waiting:
                known = {*self._waiting[key], *self._flying.get(key, ())}
                self._waiting[key].extend(i for i in receipt.ids if i not in known)
            else:
                self._waiting[key] = list(receipt.ids)
                self.core.spawn(self._send_all(key))

    def _submit(self, receipt: SealedReceipt) -> asyncio.Future[Settled]:
        """Hand a sealed receipt to the send builder; its first build is the ciphertext made in
        the burst's transaction (a retry encrypts it again)."""
        core, to = self.core, receipt.key[0]
        outcome: asyncio.Future[Settled] = asyncio.get_running_loop().create_future()
        prebuilt = [receipt.send]

        def build() -> list[OutgoingSend]:
            if prebuilt:
                return [prebuilt.pop()]
            return [core.protocol.encode_direct(to, receipt.content)]

        def settle(result: Settled, _: SendResult | None, __: bool) -> None:
            if not outcome.done():
                outcome.set_result(result)

        key = f"send-{secrets.token_hex(8)}"
        core.pipeline.submit(key, {to, core.username}, build, settle)
        return outcome

    async def _send_all(self, key: _Key, sealed: asyncio.Future[Settled] | None = None) -> None:
        to, kind = key
        try:
            if sealed is not None:
                result = await sealed
                if isinstance(result, Fail | Queued) and not isinstance(result.error, UnknownUser):
                    log.info("receipt not sent (owed until the next connection): %s", result.error)
                else:  # taken (or the account is gone: nobody left to tell)
                    self.settle(to, kind, self._flying[key])
            while ids := self._waiting[key]:
                chunk, self._waiting[key] = ids[:RECEIPT_CHUNK], ids[RECEIPT_CHUNK:]
                self._flying[key] = chunk
                content = Receipt(kind=kind, ids=tuple(chunk), sent_at_ms=now_ms())
                try:
                    await self.core.send_direct(to, content)
                except ClientError as exc:
                    if not isinstance(exc, UnknownUser):  # (gone: nobody left to tell)
                        log.info("receipt not sent (owed until the next connection): %s", exc)
                        continue
                self.settle(to, kind, chunk)
        finally:
            del self._waiting[key]
            self._flying.pop(key, None)
