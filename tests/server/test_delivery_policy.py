"""The delivery rules (``server.delivery.policy``) on their own: recipients (device sets, the
sender's own devices) and the queue policy (depth, bytes, per-sender share)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from server.clock import ShiftedClock
from server.delivery.policy import (
    QUEUE_FULL,
    QUEUE_SHARE_FULL,
    Mismatch,
    QueueLimits,
    QueuePolicy,
    QueueUsage,
    UnknownUsers,
    _refusal,
    resolve_recipients,
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
    calls: list[int] = []

    def probe() -> int:
        calls.append(1)
        return 10

    clock = ShiftedClock()
    guard = DiskGuard(100, probe, ttl=60.0, clock=clock)
    assert guard.low() and guard.low()
    assert len(calls) == 1
    clock.advance(61)
    assert guard.low()
    assert len(calls) == 2
    assert not DiskGuard(0, probe, clock=clock).low()

    def failing() -> int:
        raise OSError("gone")

    assert not DiskGuard(100, failing, clock=clock).low()


#: alice has devices 1 and 2 (pks 11, 12), bob has 1 and 3 (pks 21, 23).
SETS = {"alice": {1: 11, 2: 12}, "bob": {1: 21, 3: 23}}


def test_a_send_to_every_device_of_the_recipient_and_the_senders_others_resolves() -> None:
    to = [[("bob", 1), ("bob", 3)], [("alice", 2)]]
    assert resolve_recipients(to, "alice", 1, SETS, durable=True) == [[21, 23], [12]]


def test_a_durable_send_must_copy_the_senders_other_devices() -> None:
    result = resolve_recipients([[("bob", 1), ("bob", 3)]], "alice", 1, SETS, durable=True)
    assert result == Mismatch(missing=[{"user": "alice", "device": 2}], stale=[])
    # An ephemeral one need not.
    assert resolve_recipients([[("bob", 1), ("bob", 3)]], "alice", 1, SETS, durable=False) == [
        [21, 23]
    ]


def test_missing_and_stale_devices_are_listed_sorted() -> None:
    result = resolve_recipients([[("bob", 3), ("bob", 2)]], "alice", 2, SETS, durable=False)
    assert result == Mismatch(
        missing=[{"user": "bob", "device": 1}], stale=[{"user": "bob", "device": 2}]
    )


def test_unknown_users_are_named_before_anything_else() -> None:
    result = resolve_recipients([[("zed", 1), ("amy", 4)]], "alice", 1, SETS, durable=True)
    assert result == UnknownUsers(["amy", "zed"])


_USERS = st.sampled_from(["alice", "bob", "carol", "zed"])
_DEVICE_IDS = st.integers(min_value=1, max_value=4)


@settings(max_examples=2000, deadline=None)
@given(
    device_sets=st.dictionaries(
        _USERS, st.dictionaries(_DEVICE_IDS, st.integers(1, 99), min_size=0, max_size=4)
    ),
    to_lists=st.lists(
        st.lists(st.tuples(_USERS, _DEVICE_IDS), max_size=5, unique=True), max_size=3
    ),
    sender_device=_DEVICE_IDS,
    durable=st.booleans(),
)
def test_the_one_pass_resolution_agrees_with_the_long_way(
    device_sets: dict[str, dict[int, int]],
    to_lists: list[list[tuple[str, int]]],
    sender_device: int,
    durable: bool,
) -> None:
    """``resolve_recipients`` decides the common case by counting; on every input it must
    give what the full comparison gives (recipients are distinct within a send)."""
    seen = [r for to in to_lists for r in to]
    if len(seen) != len(set(seen)):
        return  # refused when the frame is parsed
    device_sets.setdefault("alice", {})
    device_sets["alice"].setdefault(sender_device, 1)
    long_way = _refusal(to_lists, ("alice", sender_device), device_sets, durable)
    assert resolve_recipients(to_lists, "alice", sender_device, device_sets, durable=durable) == (
        long_way
    )
