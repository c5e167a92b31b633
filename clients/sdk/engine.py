"""The client engine: every protocol decision between the relay's frames and the store, sans-I/O.

The asyncio shell (:mod:`clients.sdk.client`) owns sockets, HTTP, tasks and the clock; it
feeds this engine typed :mod:`wire` frames, HTTP answers and the current time, and does what
the engine answers. Nothing here reads a clock, opens a socket or sleeps: ``now`` (monotonic
seconds) and an ``rng`` are parameters, so every decision is a fast, deterministic unit test
(``tests/clients/test_engine.py``).

What the engine decides:

* **routing** (:meth:`ClientEngine.route`): an ``accepted``/``mismatch``/``error`` frame
  answers a pending send, ``deliver``/``ephemeral`` go to in-order processing (or are left
  for the relay to redeliver when this connection does not receive), ``prekeys_low`` asks for
  a replenishment;
* **pending sends and their retries** (:attr:`ClientEngine.sends`, a
  :class:`~clients.sdk.sendqueue.SendQueue`): a state machine fed sends, written frames,
  answers, connection up/down and timer ticks, answering what to transmit and when, what
  was accepted, what failed for good and what stays queued; accepted, retried after a delay
  (``mismatch`` → refresh those users' device lists and drop stale sessions;
  ``busy``/``internal``/``rate_limited``/``shutting_down`` → back off; a lost connection →
  back off and resend with the same client id, so the relay never stores it twice) or
  failed with a typed :class:`~clients.sdk.errors.ClientError`; per-conversation order
  (lanes) across refusals, drops and restarts;
* **deliveries** (:meth:`ClientEngine.envelope`): a frame becomes an
  :class:`~clients.sdk.protocol.Envelope` or a device-linking offer; which sequence numbers
  to ack; one receipt per sender and kind per batch (:class:`ReceiptBatcher`);
* **freshness and maintenance**: when a user's device list must be refetched
  (:meth:`ClientEngine.list_due`), whether a key change is reported (once per user), how many
  one-time prekeys to upload (:func:`replenish_count`), the reconnect backoff.

Beside the engine, with the same rules (values, ``now`` and ``rng`` in; no I/O): the group
state machine (:mod:`clients.sdk.groupstate`: membership, epochs, sender-key rotation and
distribution) and the linking state machines (:mod:`clients.sdk.linkstate`: both devices of
the link-code flow). They are driven by user actions rather than by frames, so they are not
part of :class:`ClientEngine`.

A new content type (edit, reaction, ...) needs no change here: it is a
:mod:`clients.sdk.content` type, encrypted and decoded by
:class:`~clients.sdk.protocol.ClientProtocol`; the engine only moves its frames.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

from clients.sdk.content import PayloadKind, ReceiptKind, RelayPayload
from clients.sdk.protocol import Envelope, OutgoingSend, SendReceipt
from clients.sdk.sendqueue import SendAnswer, SendQueue
from crypto.errors import VoxError
from wire.encoding import WireDecodeError, b64, unb64
from wire.frames import (
    AcceptedFrame,
    AckFrame,
    DeliverFrame,
    EphemeralFrame,
    ErrorFrame,
    MismatchFrame,
    PayloadIn,
    PrekeysLowFrame,
    Recipient,
    SendFrame,
    ServerFrame,
)
from wire.rest import PrekeyCounts

__all__ = [
    "Answer",
    "Backoff",
    "ClientEngine",
    "LinkOffer",
    "Process",
    "ReceiptBatcher",
    "Replenish",
    "Routed",
    "ack_frames",
    "ack_texts",
    "replenish_count",
    "send_frame",
    "send_text",
]

MAX_ACK_SEQS = 1000  # wire.frames.AckFrame's bound
_LINK_KIND = bytes((PayloadKind.LINK,))
RECEIPT_CHUNK = 500


# --- routing of incoming frames ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """The relay answered the pending send ``client_id``."""

    client_id: str | None
    frame: SendAnswer


@dataclass(frozen=True, slots=True)
class Process:
    """A delivery to decrypt, store and ack (in arrival order)."""

    frame: DeliverFrame | EphemeralFrame


@dataclass(frozen=True, slots=True)
class Replenish:
    """The relay says our one-time prekey stock is low: upload more."""


Routed = Answer | Process | Replenish | None


# --- deliveries -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkOffer:
    """A device-linking offer (sealed): only a new device opens one
    (:class:`clients.sdk.linkstate.Joining`); a device with an engine acks and skips it."""

    seq: int | None
    sealed: bytes


# --- small state machines ----------------------------------------------------------------------


@dataclass(slots=True)
class Backoff:
    """Exponential backoff: ``initial``, doubling, at most ``cap`` seconds."""

    initial: float = 0.2
    cap: float = 1.0
    current: float = field(default=0.0)

    def next(self) -> float:
        """The next delay."""
        self.current = self.initial if self.current == 0 else min(self.current * 2, self.cap)
        return self.current

    def reset(self) -> None:
        """After a success."""
        self.current = 0.0


@dataclass(slots=True)
class ReceiptBatcher:
    """Receipts collected while processing a batch: one per sender and kind, chunked."""

    pending: dict[tuple[str, ReceiptKind], list[bytes]] = field(default_factory=dict)

    def add(self, receipt: SendReceipt) -> None:
        """Collect ``receipt``'s message ids."""
        self.pending.setdefault((receipt.to, receipt.kind), []).extend(receipt.ids)

    def drain(self) -> list[SendReceipt]:
        """Everything collected, as receipts of at most :data:`RECEIPT_CHUNK` ids."""
        pending, self.pending = self.pending, {}
        return [
            SendReceipt(to, kind, tuple(ids[i : i + RECEIPT_CHUNK]))
            for (to, kind), ids in pending.items()
            for i in range(0, len(ids), RECEIPT_CHUNK)
        ]


# --- the engine --------------------------------------------------------------------------------


class ClientEngine:
    """Decisions of one device's client; state that is not in the store.

    ``device_list_ttl``: seconds a fetched device list is trusted before a send refetches it
    (a new process always fetches once, so a changed key is noticed on the next send).
    """

    def __init__(
        self,
        username: str,
        *,
        device_list_ttl: float = 60.0,
        max_attempts: int = 5,
        rng: random.Random | None = None,
    ) -> None:
        self.username = username
        self.device_list_ttl = device_list_ttl
        #: Pending sends and their retries.
        self.sends = SendQueue(max_attempts=max_attempts)
        self.rng = rng or random.SystemRandom()
        self.receipts = ReceiptBatcher()
        self.reconnect = Backoff()
        self._lists_checked: dict[str, float] = {}
        self._reported_changes: set[str] = set()

    # --- frames in ---------------------------------------------------------------------

    def route(self, frame: ServerFrame, *, receiving: bool) -> Routed:
        """What to do with one frame from the relay."""
        if isinstance(frame, AcceptedFrame | MismatchFrame | ErrorFrame):
            return Answer(frame.id, frame)
        if isinstance(frame, DeliverFrame | EphemeralFrame):
            return Process(frame) if receiving else None  # unacked: redelivered later
        if isinstance(frame, PrekeysLowFrame):
            return Replenish()
        return None  # ready, pong

    def envelope(self, frame: DeliverFrame | EphemeralFrame) -> Envelope | LinkOffer | None:
        """The envelope of a delivery, a linking offer, or ``None`` when ``data`` is not
        base64 (acked and dropped: it can never decrypt)."""
        try:
            data = unb64(frame.data)
        except WireDecodeError:
            return None
        seq = frame.seq if isinstance(frame, DeliverFrame) else None
        if data[1:2] == _LINK_KIND:  # u8 version || u8 kind || ...
            try:
                payload = RelayPayload.from_bytes(data)
            except VoxError:
                payload = None
            if payload is not None and payload.kind is PayloadKind.LINK:
                return LinkOffer(seq, payload.data)
        envelope_id = (
            frame.envelope
            if isinstance(frame, DeliverFrame)
            else f"eph-{self.rng.getrandbits(64):016x}"
        )
        sender = frame.sender
        # seq, envelope_id, sender_user, sender_device, ts, data
        return Envelope(seq or 0, envelope_id, sender.user, sender.device, frame.ts, data)

    # --- device lists and key changes ---------------------------------------------------

    def list_due(self, username: str, now: float, *, known: bool, refresh: bool = False) -> bool:
        """Whether ``username``'s device list must be fetched before a send."""
        checked = self._lists_checked.get(username)
        return refresh or not known or checked is None or now - checked > self.device_list_ttl

    def list_checked(self, username: str, now: float) -> None:
        """``username``'s device list was fetched at ``now``."""
        self._lists_checked[username] = now

    def report_key_change(self, username: str) -> bool:
        """Whether to emit a key-change event for ``username`` (once until accepted)."""
        if username in self._reported_changes:
            return False
        self._reported_changes.add(username)
        return True

    def key_accepted(self, username: str) -> None:
        """The user accepted ``username``'s new key: report the next change again."""
        self._reported_changes.discard(username)


# --- frames out --------------------------------------------------------------------------------


def send_frame(send: OutgoingSend, after: str | None = None) -> SendFrame:
    """The ``send`` frame of an encrypted send (``after``: its lane predecessor's client id,
    :meth:`~clients.sdk.sendqueue.SendQueue.predecessor`)."""
    return SendFrame(
        id=send.client_id,
        ephemeral=send.ephemeral,
        ttl=send.ttl,
        after=None if send.ephemeral else after,
        payloads=[
            PayloadIn(data=b64(data), to=[Recipient(user=u, device=d) for u, d in to])
            for data, to in send.payloads
        ],
    )


#: ``json.dumps(value, separators=(",", ":"))`` without building an encoder for every frame.
_compact = json.JSONEncoder(separators=(",", ":")).encode


def send_text(send: OutgoingSend, after: str | None = None) -> str:
    """The JSON text of :func:`send_frame` — the same text as ``wire.frames.encode`` of it —
    written without building and dumping the pydantic models (about 3 µs instead of 80: the
    SDK sends one per message). Its values are the SDK's own (client ids it made, usernames
    and device ids from verified device lists); the relay validates every frame it reads."""
    frame: dict[str, object] = {
        "type": "send",
        "id": send.client_id,
        "payloads": [
            {"data": b64(data), "to": [{"user": u, "device": d} for u, d in to]}
            for data, to in send.payloads
        ],
        "ephemeral": send.ephemeral,
    }
    if send.ttl is not None:
        frame["ttl"] = send.ttl
    if after is not None and not send.ephemeral:
        frame["after"] = after
    return _compact(frame)


def ack_frames(seqs: list[int]) -> list[AckFrame]:
    """``ack`` frames for ``seqs`` (at most :data:`MAX_ACK_SEQS` each)."""
    return [AckFrame(seqs=seqs[i : i + MAX_ACK_SEQS]) for i in range(0, len(seqs), MAX_ACK_SEQS)]


def ack_texts(seqs: list[int]) -> list[str]:
    """The JSON texts of :func:`ack_frames` (as ``wire.frames.encode`` writes them), without
    the models."""
    return [
        _compact({"type": "ack", "seqs": seqs[i : i + MAX_ACK_SEQS]})
        for i in range(0, len(seqs), MAX_ACK_SEQS)
    ]


def replenish_count(counts: PrekeyCounts, batch: int) -> int:
    """How many one-time prekeys (of each kind) to upload given the relay's ``counts``."""
    have = min(counts.one_time_prekeys, counts.one_time_pq_prekeys)
    if have > counts.low_threshold:
        return 0
    target = min(counts.max_stock, batch * 2)
    return max(0, min(target - have, batch))
