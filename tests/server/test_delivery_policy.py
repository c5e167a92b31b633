"""The queue policy (``server.delivery.policy``) on its own: depth, bytes, per-sender share."""

from __future__ import annotations

from server.delivery.policy import (
    QUEUE_FULL,
    QUEUE_SHARE_FULL,
    QueueLimits,
    QueuePolicy,
    QueueUsage,
)
from server.diskguard import DiskGuard

STRANGER, FRIEND, OWNER = 7, 8, 9


def _fill(policy: QueuePolicy, usage: QueueUsage, sender: int, size: int) -> int:
    """Add envelopes from ``sender`` until the policy refuses; return how many fitted."""
    n = 0
    while policy.refusal(usage, sender=sender, owner=OWNER, size=size) is None:
        usage.add(sender, size)
        n += 1
    return n


def test_a_stranger_fills_only_their_share_and_a_friend_still_gets_through() -> None:
    policy = QueuePolicy(QueueLimits(max_depth=100, max_bytes=10**9, sender_share=0.25))
    usage = QueueUsage()
    assert _fill(policy, usage, STRANGER, 10) == 25
    assert policy.refusal(usage, sender=STRANGER, owner=OWNER, size=10) == QUEUE_SHARE_FULL
    assert policy.refusal(usage, sender=FRIEND, owner=OWNER, size=10) is None


def test_the_share_bounds_bytes_as_well_as_envelopes() -> None:
    policy = QueuePolicy(QueueLimits(max_depth=1000, max_bytes=4000, sender_share=0.5))
    usage = QueueUsage()
    assert _fill(policy, usage, STRANGER, 1000) == 2
    assert usage.by_sender[STRANGER] == (2, 2000)
    assert policy.refusal(usage, sender=FRIEND, owner=OWNER, size=1000) is None


def test_the_owners_own_devices_are_not_held_to_a_share() -> None:
    policy = QueuePolicy(QueueLimits(max_depth=10, max_bytes=10**9, sender_share=0.1))
    usage = QueueUsage()
    assert _fill(policy, usage, OWNER, 1) == 10
    assert policy.refusal(usage, sender=OWNER, owner=OWNER, size=1) == QUEUE_FULL


def test_a_full_queue_is_reported_as_full_even_past_a_share() -> None:
    policy = QueuePolicy(QueueLimits(max_depth=4, max_bytes=10**9, sender_share=0.5))
    usage = QueueUsage()
    for sender in (1, 1, 2, 2):
        usage.add(sender, 1)
    assert policy.refusal(usage, sender=1, owner=OWNER, size=1) == QUEUE_FULL
    assert policy.refusal(usage, sender=3, owner=OWNER, size=1) == QUEUE_FULL


def test_limits_give_every_sender_at_least_one_envelope_and_byte() -> None:
    limits = QueueLimits(max_depth=3, max_bytes=3, sender_share=0.01)
    assert (limits.sender_depth, limits.sender_bytes) == (1, 1)


def test_the_disk_guard_caches_its_probe_and_never_refuses_when_off() -> None:
    now = [0.0]
    calls: list[int] = []

    def probe() -> int:
        calls.append(1)
        return 10

    guard = DiskGuard(100, probe, ttl=1.0, clock=lambda: now[0])
    assert guard.low() and guard.low()
    assert len(calls) == 1
    now[0] = 1.5
    assert guard.low()
    assert len(calls) == 2
    assert not DiskGuard(0, probe).low()

    def failing() -> int:
        raise OSError("gone")

    assert not DiskGuard(100, failing).low()
