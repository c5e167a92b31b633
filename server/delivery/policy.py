"""The delivery rules, pure (no I/O): who a send must address, and what a queue may hold.

**Recipients** (:func:`resolve_recipients`): every named user must exist; a send must address
exactly the current device set of every user it names, and a durable send also every other
device of the sender's own account (the sender's devices stay in sync); otherwise the answer
is ``unknown_user`` or a ``mismatch`` listing the missing and stale devices.

**Queues**: the group-commit writer (:mod:`server.delivery.writer`) reads the current
usage of the addressed queues (under their locks), asks :meth:`QueuePolicy.refusal` for each
(recipient device, payload) of a send, and records what it accepts with
:meth:`QueueUsage.add`, so that the sends of one batch count against each other.

Bounds, per recipient device (``docs/protocol-ws.md`` §4.2, ``docs/threat-model.md``):

* **depth** — at most ``max_depth`` queued envelopes (``queue_full``);
* **bytes** — at most ``max_bytes`` payload bytes (``queue_full``);
* **share per sender** — one sending account other than the recipient's own may occupy at
  most ``sender_share`` of the depth and of the bytes (``queue_share_full``). A stranger who
  floods a queue runs into their share and is refused; everyone else (friends, the owner's
  own devices) still gets through, until ``1 / sender_share`` different accounts have each
  filled their share.

**Lane fence** (:class:`LaneFence`, ``docs/protocol-ws.md`` §3.1.4): a send that names a
predecessor (``after``, a client id of the same sending device) is accepted only if that
predecessor is stored — committed earlier, or accepted earlier in the same batch; otherwise
it is refused with ``predecessor_missing`` and nothing of it is stored. A predecessor refused
in the batch (for any reason) therefore refuses its successor too, and so on down the lane.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from wire.codes import ErrorCode

__all__ = [
    "PREDECESSOR_MISSING",
    "QUEUE_FULL",
    "QUEUE_SHARE_FULL",
    "LaneFence",
    "Mismatch",
    "QueueLimits",
    "QueuePolicy",
    "QueueUsage",
    "UnknownUsers",
    "resolve_recipients",
]

#: Error codes of a refused send (``error`` frames).
QUEUE_FULL = ErrorCode.QUEUE_FULL
QUEUE_SHARE_FULL = ErrorCode.QUEUE_SHARE_FULL
PREDECESSOR_MISSING = ErrorCode.PREDECESSOR_MISSING

#: A send's identity: (sending device pk, client id).
SendKey = tuple[int, str]


class LaneFence:
    """Which sends of a batch may be stored as far as their lanes are concerned.

    Built from the (sending device pk, client id) pairs already stored (the de-duplication
    lookup, which also looks up every predecessor named in the batch); the writer then walks
    the batch's sends in order, asks :meth:`refusal` before storing one and calls
    :meth:`stored` for each one it accepts."""

    __slots__ = ("_stored",)

    def __init__(self, stored: Iterable[SendKey]) -> None:
        self._stored = set(stored)

    def refusal(self, device_pk: int, after: str | None) -> ErrorCode | None:
        """``None`` if a send of device ``device_pk`` naming predecessor ``after`` (``None``:
        no constraint) may be stored now; else ``predecessor_missing``."""
        if after is None or (device_pk, after) in self._stored:
            return None
        return PREDECESSOR_MISSING

    def stored(self, device_pk: int, client_id: str) -> None:
        """A send was accepted in this batch: its successors later in the batch may follow."""
        self._stored.add((device_pk, client_id))


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """The configured bounds of one device's queue."""

    max_depth: int
    max_bytes: int
    #: Fraction (0..1] of depth and bytes that one other account may occupy.
    sender_share: float = 1.0

    @property
    def sender_depth(self) -> int:
        """Envelopes one other account may have queued for the device."""
        return max(1, int(self.max_depth * self.sender_share))

    @property
    def sender_bytes(self) -> int:
        """Payload bytes one other account may have queued for the device."""
        return max(1, int(self.max_bytes * self.sender_share))


@dataclass(slots=True)
class QueueUsage:
    """What one device's queue holds: in total and per sending account id."""

    depth: int = 0
    bytes: int = 0
    #: sending account id → (envelopes, bytes)
    by_sender: dict[int, tuple[int, int]] = field(default_factory=dict)

    def add(self, sender: int, size: int, count: int = 1) -> None:
        """Count ``count`` envelopes of ``size`` bytes each from ``sender``."""
        self.depth += count
        self.bytes += count * size
        depth, used = self.by_sender.get(sender, (0, 0))
        self.by_sender[sender] = (depth + count, used + count * size)


class QueuePolicy:
    """Decides whether one more envelope fits a device's queue."""

    __slots__ = ("_max_bytes", "_max_depth", "_sender_bytes", "_sender_depth", "limits")

    def __init__(self, limits: QueueLimits) -> None:
        self.limits = limits
        # Asked for every (recipient device, payload) of every send: the bounds, worked out once.
        self._max_depth = limits.max_depth
        self._max_bytes = limits.max_bytes
        self._sender_depth = limits.sender_depth
        self._sender_bytes = limits.sender_bytes

    def refusal(self, usage: QueueUsage, *, sender: int, owner: int, size: int) -> ErrorCode | None:
        """``None`` if an envelope of ``size`` bytes from account ``sender`` fits the queue
        of a device of account ``owner``; else the error code that refuses it."""
        if usage.depth + 1 > self._max_depth or usage.bytes + size > self._max_bytes:
            return QUEUE_FULL
        if sender != owner:
            depth, used = usage.by_sender.get(sender, (0, 0))
            if depth + 1 > self._sender_depth or used + size > self._sender_bytes:
                return QUEUE_SHARE_FULL
        return None


@dataclass(frozen=True, slots=True)
class UnknownUsers:
    """Named users that do not exist (sorted)."""

    users: list[str]


@dataclass(frozen=True, slots=True)
class Mismatch:
    """The addressed devices differ from the current device sets."""

    #: ``{"user", "device"}`` devices that must be addressed and are not (sorted).
    missing: list[dict[str, object]]
    #: ``{"user", "device"}`` addressed devices that do not exist (sorted).
    stale: list[dict[str, object]]


def resolve_recipients(
    to_lists: Sequence[Sequence[tuple[str, int]]],
    sender_user: str,
    sender_device: int,
    device_sets: dict[str, dict[int, int]],
    *,
    durable: bool,
) -> list[list[int]] | UnknownUsers | Mismatch:
    """Map each payload's ``(user, device id)`` recipients to device pks (same shape), given
    ``device_sets`` (username → {device id: device pk} of the users that exist); or say why
    the send is refused. Recipients are distinct within a send (checked when it is parsed).

    Every send of every batch comes through here: the common case (every addressed device
    exists and every device set is covered) is decided by counting, in one pass; anything
    else is left to :func:`_refusal`, which says exactly what is wrong."""
    addressed: dict[str, set[int]] = {}
    pks: list[list[int]] = []
    for to in to_lists:
        group: list[int] = []
        for user, device_id in to:
            devices = addressed.get(user)
            if devices is None:
                addressed[user] = {device_id}
            else:
                devices.add(device_id)
            pk = device_sets.get(user, _NO_DEVICES).get(device_id)
            if pk is None:  # an unknown user or device
                return _refusal(to_lists, (sender_user, sender_device), device_sets, durable)
            group.append(pk)
        pks.append(group)
    # Every addressed device exists: the sets match if they are as large as the device sets.
    for user, devices in addressed.items():
        expected = len(device_sets[user])
        if user == sender_user:
            if sender_device in devices:
                return _refusal(to_lists, (sender_user, sender_device), device_sets, durable)
            expected -= sender_device in device_sets[user]
        if len(devices) != expected:
            return _refusal(to_lists, (sender_user, sender_device), device_sets, durable)
    if durable and sender_user not in addressed:
        own = device_sets.get(sender_user)
        if own is None or len(own) != (sender_device in own):  # other devices get a copy
            return _refusal(to_lists, (sender_user, sender_device), device_sets, durable)
    return pks


_NO_DEVICES: dict[int, int] = {}


def _refusal(
    to_lists: Sequence[Sequence[tuple[str, int]]],
    sender: tuple[str, int],
    device_sets: dict[str, dict[int, int]],
    durable: bool,
) -> list[list[int]] | UnknownUsers | Mismatch:
    """:func:`resolve_recipients` the long way (unknown users, then the sets compared);
    ``sender``: the sending (user, device id)."""
    sender_user, sender_device = sender
    unknown = sorted({user for to in to_lists for user, _ in to} - device_sets.keys())
    if unknown:
        return UnknownUsers(unknown)
    addressed: dict[str, set[int]] = {}
    for to in to_lists:
        for user, device_id in to:
            addressed.setdefault(user, set()).add(device_id)
    if durable and sender_user not in addressed:
        # The sender's other devices always get a copy.
        addressed[sender_user] = set()
    for user, devices in addressed.items():
        current = device_sets[user].keys()
        if user == sender_user:
            if devices != current - {sender_device}:
                break
        elif devices != current:
            break
    else:
        return [[device_sets[u][d] for u, d in to] for to in to_lists]
    missing: list[dict[str, object]] = []
    stale: list[dict[str, object]] = []
    for user, devices in sorted(addressed.items()):
        expected = set(device_sets.get(user, {}))
        if user == sender_user:
            expected.discard(sender_device)
        missing.extend({"user": user, "device": d} for d in sorted(expected - devices))
        stale.extend({"user": user, "device": d} for d in sorted(devices - expected))
    return Mismatch(missing, stale)
