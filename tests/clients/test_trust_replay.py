"""A replayed PQXDH initial message (no one-time prekey: nothing is consumed) is refused by the
SDK even after the session it started is gone — the relay (the only party that can deliver it
again under the sender's name) gets a ``DecryptFailure``, not a second session. And the SDK
gives the ratchet its clock, so skipped message keys expire (30 days)."""

from __future__ import annotations

import base64
import dataclasses
import itertools
import time
from collections.abc import Callable
from typing import Any

from clients.sdk import identity as ids
from clients.sdk import trust
from clients.sdk.content import TextContent
from clients.sdk.models import DecryptFailure, Message
from clients.sdk.protocol import ClientProtocol, DeviceBundle, Envelope
from clients.sdk.sessions import MAX_SESSIONS, REPLAY_PREFIX
from clients.store.memory import MemoryStore

_ids = itertools.count(1)


def device(
    username: str, clock: Callable[[], float] = time.time
) -> tuple[ClientProtocol, bytes, bytes, dict[str, Any]]:
    """A registered device: protocol (on ``clock``), account key, signed list, prekey upload."""
    store = MemoryStore()
    me = ids.new_identity(username, 1, None)
    signed = ids.first_device_list(me).to_bytes()
    upload = ids.registration_prekeys(store, me, batch=2)
    key = me.account_key.public_key.to_bytes()
    trust.accept_device_list(store, username, key, signed)
    return ClientProtocol(store, me, now=clock), key, signed, upload


def last_resort_bundle(proto: ClientProtocol, upload: dict[str, Any]) -> DeviceBundle:
    """The bundle a relay serves once the one-time stocks are exhausted."""

    def signed(x: dict[str, Any]) -> tuple[int, bytes, bytes]:
        return int(x["key_id"]), base64.b64decode(x["public_key"]), base64.b64decode(x["signature"])

    return DeviceBundle(
        device_id=1,
        identity_key=proto.identity.identity_key.public_key.to_bytes(),
        signed_prekey=signed(upload["signed_prekey"]),
        last_resort_prekey=signed(upload["last_resort_prekey"]),
        one_time_prekey=None,
        one_time_pq_prekey=None,
    )


def first_message(alice: ClientProtocol, bob_key: bytes, bundle: DeviceBundle, text: str) -> bytes:
    alice.accept_bundle("bob", bob_key, bundle)  # a new session (newest first)
    send = alice.encode_direct("bob", TextContent(text=text, sent_at_ms=1))
    ((data, _),) = send.payloads
    return data


def deliver(bob: ClientProtocol, data: bytes) -> list[object]:
    """The relay delivers ``data`` as from alice:1 under a fresh envelope id."""
    envelope = Envelope(next(_ids), f"env{next(_ids)}", "alice", 1, 0, data)
    return [
        e.text if isinstance(e, Message) else e.error if isinstance(e, DecryptFailure) else e
        for e in bob.receive(envelope).events
    ]


def test_a_replayed_initial_message_is_refused_after_its_session_was_evicted() -> None:
    alice, alice_key, alice_list, _ = device("alice")
    bob, bob_key, bob_list, upload = device("bob")
    alice.accept_device_list("bob", bob_key, bob_list)
    bob.accept_device_list("alice", alice_key, alice_list)
    bundle = last_resort_bundle(bob, upload)

    captured = first_message(alice, bob_key, bundle, "hello once")
    assert deliver(bob, captured) == ["hello once"]
    assert deliver(bob, captured) == ["DuplicateMessage"]  # the session still holds it
    # Alice starts newer sessions (e.g. reinstalls); bob keeps the newest four, so the first
    # session is evicted from his store.
    for n in range(MAX_SESSIONS):
        assert deliver(bob, first_message(alice, bob_key, bundle, f"session {n}")) == [
            f"session {n}"
        ]
    front = bob.sessions.peer("alice", 1)
    before = bob.store.load_session("alice", 1)
    # The relay replays the captured first message: without a record it would open a fifth
    # session again (nothing one-time was consumed). Refused, and nothing changes.
    assert deliver(bob, captured) == ["ReplayedInitialMessage"]
    assert bob.store.load_session("alice", 1) == before
    assert bob.sessions.peer("alice", 1) == front


def guards(proto: ClientProtocol) -> list[str]:
    """The replay guards in a device's seen table."""
    store = proto.store
    assert isinstance(store, MemoryStore)
    return [k for k in store._s.seen if k.startswith(REPLAY_PREFIX)]


def accepted_once() -> tuple[ClientProtocol, bytes, int]:
    """Bob, who accepted alice's initial message on his last-resort key; the message; the
    id of the signed prekey it named."""
    alice, alice_key, alice_list, _ = device("alice")
    bob, bob_key, bob_list, upload = device("bob")
    alice.accept_device_list("bob", bob_key, bob_list)
    bob.accept_device_list("alice", alice_key, alice_list)
    captured = first_message(alice, bob_key, last_resort_bundle(bob, upload), "hello once")
    assert deliver(bob, captured) == ["hello once"]
    return bob, captured, int(upload["signed_prekey"]["key_id"])


def test_replay_guards_go_with_the_signed_prekey_they_name() -> None:
    # The guard is kept while the signed prekey it names is held (a replay could still open
    # a session), and deleted with that key (a replay then fails: UnknownPrekey).
    # Before, every guard stayed in the seen table forever.
    bob, captured, spk = accepted_once()
    (guard,) = guards(bob)
    assert guard.startswith(f"pqxdh:{spk}:")

    start = time.time()
    ids.rotate_signed_prekey(bob.store, bob.identity, now=start)  # the old key is kept...
    bob.sessions.drop("alice", 1)
    assert deliver(bob, captured) == ["ReplayedInitialMessage"]  # ...so the guard is too
    assert guards(bob) == [guard]

    later = start + ids.SIGNED_PREKEY_GRACE_S + 1
    ids.rotate_signed_prekey(bob.store, bob.identity, now=later)  # the old key goes
    assert guards(bob) == []
    assert deliver(bob, captured) == ["UnknownPrekey"]  # refused all the same
    assert bob.sessions.peer("alice", 1) is None


def old_named_guard(bob: ClientProtocol) -> tuple[str, float]:
    """Rename bob's one guard as an older version wrote it (``pqxdh:<hex>``, no key id) and
    drop alice's session; returns the name and when it was written."""
    (guard,) = guards(bob)
    store = bob.store
    assert isinstance(store, MemoryStore)
    at = store._s.seen.pop(guard)
    old_name = REPLAY_PREFIX + guard.rsplit(":", 1)[1]
    store._s.seen[old_name] = at
    bob.sessions.drop("alice", 1)
    return old_name, at


def test_a_guard_written_before_the_key_id_was_in_its_name_still_counts() -> None:
    bob, captured, _ = accepted_once()
    old_named_guard(bob)
    assert deliver(bob, captured) == ["ReplayedInitialMessage"]


def test_a_guard_of_the_old_name_goes_once_older_than_every_signed_prekey_held() -> None:
    # Before, a guard written before the key id was in its name (pqxdh:<hex>) stayed forever.
    bob, captured, _ = accepted_once()
    old_name, at = old_named_guard(bob)

    start = at + ids.REPLAY_GUARD_CLOCK_MARGIN_S + 3600  # made well after the guard
    ids.rotate_signed_prekey(bob.store, bob.identity, now=start)  # the old key is kept...
    assert guards(bob) == [old_name]  # ...and so is the guard (it may name that key)
    assert deliver(bob, captured) == ["ReplayedInitialMessage"]

    later = start + ids.SIGNED_PREKEY_GRACE_S + 1
    ids.rotate_signed_prekey(bob.store, bob.identity, now=later)  # the old key goes
    assert guards(bob) == []  # every key held was made after the guard: it names none
    assert deliver(bob, captured) == ["UnknownPrekey"]  # refused all the same


def test_a_guard_of_the_old_name_written_near_a_held_key_is_kept() -> None:
    bob, _, _ = accepted_once()
    old_name, _ = old_named_guard(bob)
    store = bob.store
    assert isinstance(store, MemoryStore)
    start = time.time()
    ids.rotate_signed_prekey(bob.store, bob.identity, now=start)
    later = start + ids.SIGNED_PREKEY_GRACE_S + 1
    # written (by this device's clock) shortly before the oldest key still held was made:
    # within the margin, it may name that key
    store._s.seen[old_name] = start - 60
    ids.rotate_signed_prekey(bob.store, bob.identity, now=later)
    assert guards(bob) == [old_name]


def test_an_initial_message_with_a_one_time_prekey_is_not_recorded() -> None:
    alice, alice_key, alice_list, _ = device("alice")
    bob, bob_key, bob_list, upload = device("bob")
    alice.accept_device_list("bob", bob_key, bob_list)
    bob.accept_device_list("alice", alice_key, alice_list)
    otk = upload["one_time_prekeys"][0]
    bundle = dataclasses.replace(
        last_resort_bundle(bob, upload),
        one_time_prekey=(int(otk["key_id"]), base64.b64decode(otk["public_key"])),
    )
    data = first_message(alice, bob_key, bundle, "with a one-time prekey")
    assert deliver(bob, data) == ["with a one-time prekey"]
    bob.sessions.drop("alice", 1)
    assert deliver(bob, data) == ["UnknownPrekey"]  # the one-time prekey is gone


def test_a_message_held_back_longer_than_the_skipped_key_age_no_longer_opens() -> None:
    clock = [1_800_000_000.0]
    alice, alice_key, alice_list, _ = device("alice", lambda: clock[0])
    bob, bob_key, bob_list, upload = device("bob", lambda: clock[0])
    alice.accept_device_list("bob", bob_key, bob_list)
    bob.accept_device_list("alice", alice_key, alice_list)
    first = first_message(alice, bob_key, last_resort_bundle(bob, upload), "first")
    assert deliver(bob, first) == ["first"]
    reply = bob.encode_direct("alice", TextContent(text="ack", sent_at_ms=2))
    ((data, _),) = reply.payloads
    alice.receive(Envelope(next(_ids), f"env{next(_ids)}", "bob", 1, 0, data))
    held, late, later = (
        alice.encode_direct("bob", TextContent(text=t, sent_at_ms=3)).payloads[0][0]
        for t in ("held back", "held back too", "later")
    )
    assert deliver(bob, later) == ["later"]  # the keys of the two held back are skipped
    clock[0] += 29 * 86400
    assert deliver(bob, held) == ["held back"]  # within 30 days: still opens
    clock[0] += 2 * 86400
    assert deliver(bob, late) == ["DuplicateMessage"]  # 31 days after it was skipped: expired
