"""What the relay's delivery tables hold for devices being deleted, deleted with them.

``delivery_sends``, ``delivery_payloads`` and ``delivery_queue`` have no foreign keys (they
cost a trigger and a row lock per message on PostgreSQL; migration 0008), so the rows a
device deletion used to cascade to are deleted here, in the caller's transaction, before the
devices: the devices' queues, the sends they made (their payloads and every queue row of
those payloads, whoever the recipient), and payloads the deleted queue rows leave without a
queue row.

On PostgreSQL the deleted devices' queue locks (the advisory locks the group-commit writer
takes for a recipient before counting and filling its queue,
:data:`server.delivery.repository.QUEUE_LOCK_CLASS`) are taken first and held until the
commit: a batch that holds one commits before these deletes run (and they see its rows), and
a batch that takes one afterwards inserts nothing for a device that no longer exists (its
insert skips queue rows whose device is gone). The deleted devices' queue counters
(``delivery_queue_usage``, ``delivery_queue_removed``) go too, under the same locks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from sqlalchemy import Table, delete, exists, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models_delivery import (
    DeliveryPayload,
    DeliverySend,
    QueueCounter,
    QueueEntry,
    QueueRemoved,
)

__all__ = ["delete_device_deliveries"]

_sends = cast(Table, DeliverySend.__table__)
_payloads = cast(Table, DeliveryPayload.__table__)
_queue = cast(Table, QueueEntry.__table__)
_counters = cast(Table, QueueCounter.__table__)
_removed = cast(Table, QueueRemoved.__table__)

_LOCK = text(
    "SELECT count(pg_advisory_xact_lock(:cls, k)) FROM unnest(CAST(:keys AS INTEGER[])) AS t(k)"
)


async def delete_device_deliveries(session: AsyncSession, device_pks: Sequence[int]) -> None:
    """Delete the delivery rows of ``device_pks`` (see the module); the caller deletes the
    devices in the same transaction."""
    pks = sorted(set(device_pks))
    if not pks:
        return
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        from server.delivery.repository import QUEUE_LOCK_CLASS, queue_lock_key

        keys = sorted({queue_lock_key(pk) for pk in pks})
        await session.execute(_LOCK, {"cls": QUEUE_LOCK_CLASS, "keys": keys})
    sent = select(_sends.c.envelope_id).where(_sends.c.sender_device_pk.in_(pks))
    left = await session.execute(
        delete(_queue)
        .where(_queue.c.device_pk.in_(pks))
        .returning(_queue.c.envelope_id, _queue.c.idx)
    )
    orphaned = sorted({e for e, _ in left})
    if bind.dialect.name == "postgresql":
        # The devices' queue counters (migration 0011) and the removals just appended for
        # them by the queue's DELETE trigger: nothing will read them again (under the
        # devices' queue locks, held since the start).
        await session.execute(delete(_counters).where(_counters.c.device_pk.in_(pks)))
        await session.execute(delete(_removed).where(_removed.c.device_pk.in_(pks)))
    await session.execute(delete(_queue).where(_queue.c.envelope_id.in_(sent)))
    await session.execute(delete(_payloads).where(_payloads.c.envelope_id.in_(sent)))
    await session.execute(delete(_sends).where(_sends.c.sender_device_pk.in_(pks)))
    # Payloads of other senders that only the deleted queue rows still referenced.
    referenced = exists().where(
        _queue.c.envelope_id == _payloads.c.envelope_id, _queue.c.idx == _payloads.c.idx
    )
    for start in range(0, len(orphaned), 400):
        chunk = orphaned[start : start + 400]
        await session.execute(
            delete(_payloads).where(_payloads.c.envelope_id.in_(chunk), ~referenced)
        )
