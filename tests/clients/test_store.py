"""Contract tests: the in-memory and the SQLite store behave the same."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.store import (
    Contact,
    ConversationSummary,
    DeliveryState,
    Direction,
    Group,
    MemoryStore,
    OutboxEntry,
    PeerIdentity,
    PrekeyKind,
    PrekeyRecord,
    Profile,
    SqliteStore,
    Store,
    StoredMessage,
    TrustState,
    group_conversation,
)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store = MemoryStore() if request.param == "memory" else SqliteStore.open(tmp_path / "p")
    try:
        yield s
    finally:
        s.close()


def msg(
    mid: str,
    conversation: str = "bob",
    *,
    direction: Direction = Direction.IN,
    sent_at: float = 1.0,
    text: str | None = "hi",
    state: DeliveryState = DeliveryState.RECEIVED,
) -> StoredMessage:
    sender = conversation if direction is Direction.IN else "alice"
    return StoredMessage(
        mid, conversation, direction, sender, 1, sent_at, sent_at + 0.5, text, None, state
    )


def test_profile_round_trips(store: Store) -> None:
    assert store.load_profile() is None
    p = Profile("http://127.0.0.1:1", "alice", 7, b"\x01" * 32, b"\x02" * 32, b"\x03" * 32, 5.0)
    store.save_profile(p)
    assert store.load_profile() == p


def test_profile_repr_hides_keys() -> None:
    p = Profile("u", "alice", 1, b"\xaa" * 32, b"\xbb" * 32, b"\xcc" * 32)
    assert "aa" not in repr(p) and "170" not in repr(p) and "alice" in repr(p)


def test_one_time_prekeys_are_deleted_when_consumed(store: Store) -> None:
    store.put_prekeys(
        PrekeyRecord(PrekeyKind.ONE_TIME_X25519, i, bytes([i]) * 32, 1.0) for i in (1, 2, 3)
    )
    store.put_prekeys([PrekeyRecord(PrekeyKind.ONE_TIME_KEM, 2, b"kem2", 1.0)])
    got = store.consume_prekey(PrekeyKind.ONE_TIME_X25519, 2)
    assert got is not None and got.secret == b"\x02" * 32
    assert store.consume_prekey(PrekeyKind.ONE_TIME_X25519, 2) is None
    assert [r.key_id for r in store.list_prekeys(PrekeyKind.ONE_TIME_X25519)] == [1, 3]
    assert store.get_prekey(PrekeyKind.ONE_TIME_KEM, 2) is not None  # other kind untouched
    assert store.next_prekey_id(PrekeyKind.ONE_TIME_X25519) == 4


def test_prekey_ids_are_never_reused_after_deletion(store: Store) -> None:
    assert store.next_prekey_id(PrekeyKind.SIGNED) == 1
    store.put_prekeys([PrekeyRecord(PrekeyKind.SIGNED, 9, b"s9", 2.0)])
    store.delete_prekey(PrekeyKind.SIGNED, 9)
    assert store.get_prekey(PrekeyKind.SIGNED, 9) is None
    assert store.next_prekey_id(PrekeyKind.SIGNED) == 10


def test_sessions_are_kept_per_peer_device(store: Store) -> None:
    store.store_session("bob", 2, b"s-b2")
    store.store_session("bob", 1, b"s-b1")
    store.store_session("carol", 1, b"s-c1")
    store.store_session("bob", 2, b"s-b2-advanced")
    assert store.load_session("bob", 2) == b"s-b2-advanced"
    assert store.session_devices("bob") == [1, 2]
    store.delete_session("bob", 1)
    assert store.load_session("bob", 1) is None
    assert store.session_devices("bob") == [2]


def test_peer_trust_and_device_list_round_trip(store: Store) -> None:
    peer = PeerIdentity("bob", b"\x02" + b"k" * 32, TrustState.TOFU, None, 3, b"list", 9.0)
    store.put_peer(peer)
    assert store.get_peer("bob") == peer
    changed = PeerIdentity(
        "bob", b"\x02" + b"n" * 32, TrustState.CHANGED, peer.account_key, 4, b"list2", 10.0
    )
    store.put_peer(changed)
    assert store.get_peer("bob") == changed
    assert [p.username for p in store.list_peers()] == ["bob"]
    assert store.get_peer("nobody") is None


def test_contacts(store: Store) -> None:
    store.put_contact(Contact("carol", "Carol", 2.0))
    store.put_contact(Contact("bob", "", 1.0))
    assert [c.username for c in store.list_contacts()] == ["bob", "carol"]
    store.delete_contact("bob")
    assert store.list_contacts() == [Contact("carol", "Carol", 2.0)]


def test_groups_and_sender_keys(store: Store) -> None:
    g = Group("g1", "Friends", ("alice", "bob", "carol"), "alice", 1.0)
    store.put_group(g)
    assert store.get_group("g1") == g
    store.store_own_sender_key("g1", b"own")
    store.store_sender_key("g1", "bob", 1, b"bob1")
    store.store_sender_key("g1", "carol", 1, b"carol1")
    assert store.load_own_sender_key("g1") == b"own"
    assert store.load_sender_key("g1", "bob", 1) == b"bob1"
    store.delete_sender_keys("g1", "bob")
    assert store.load_sender_key("g1", "bob", 1) is None
    assert store.load_sender_key("g1", "carol", 1) == b"carol1"
    store.put_group(Group("g0", "Alpha", ("alice",), "alice", 2.0))
    assert [x.group_id for x in store.list_groups()] == ["g0", "g1"]
    store.delete_group("g1")
    assert store.get_group("g1") is None
    assert store.load_own_sender_key("g1") is None
    assert store.load_sender_key("g1", "carol", 1) is None


def test_sender_keys_of_devices_off_the_list_are_pruned_in_every_group(store: Store) -> None:
    for group_id in ("g1", "g2"):
        for device_id in (1, 2, 3):
            store.store_sender_key(group_id, "bob", device_id, b"bob%d" % device_id)
        store.store_sender_key(group_id, "carol", 2, b"carol2")
    assert store.prune_device_sender_keys("bob", [1, 3]) == 2
    for group_id in ("g1", "g2"):
        assert store.load_sender_key(group_id, "bob", 2) is None
        assert store.load_sender_key(group_id, "bob", 1) == b"bob1"
        assert store.load_sender_key(group_id, "bob", 3) == b"bob3"
        assert store.load_sender_key(group_id, "carol", 2) == b"carol2"
    assert store.prune_device_sender_keys("bob", [1, 3]) == 0


def test_messages_are_stored_once_and_listed_in_order(store: Store) -> None:
    assert store.add_message(msg("m2", sent_at=2.0, text="second"))
    assert store.add_message(msg("m1", sent_at=1.0, text="first"))
    assert not store.add_message(msg("m1", sent_at=1.0, text="duplicate"))
    store.add_message(msg("m3", "carol", sent_at=3.0))
    hist = store.history("bob")
    assert [m.text for m in hist] == ["first", "second"]
    assert [m.message_id for m in store.history("bob", limit=1)] == ["m2"]
    assert [m.message_id for m in store.history("bob", before=2.0)] == ["m1"]
    assert store.get_message("m1") == msg("m1", sent_at=1.0, text="first")


def test_attachment_metadata_round_trips(store: Store) -> None:
    meta: dict[str, object] = {"name": "a.txt", "size": 3, "key": "AAAA", "digest": "BBBB"}
    m = StoredMessage("a1", "bob", Direction.IN, "bob", 2, 1.0, 1.0, None, meta)
    store.add_message(m)
    assert store.get_message("a1") == m
    saved = {**meta, "path": "/home/alice/a.txt"}
    assert store.update_attachment("a1", saved)
    got = store.get_message("a1")
    assert got is not None and got.attachment == saved and got.state is m.state
    assert not store.update_attachment("missing", saved)


def test_delivery_state_only_moves_forward(store: Store) -> None:
    store.add_message(msg("o1", direction=Direction.OUT, state=DeliveryState.PENDING))
    assert store.update_message_state("o1", DeliveryState.SENT)
    assert store.update_message_state("o1", DeliveryState.READ)
    assert not store.update_message_state("o1", DeliveryState.DELIVERED)  # late receipt
    got = store.get_message("o1")
    assert got is not None and got.state is DeliveryState.READ
    assert not store.update_message_state("missing", DeliveryState.READ)


def test_a_receipt_moves_only_our_own_messages(store: Store) -> None:
    store.add_message(msg("o1", direction=Direction.OUT, state=DeliveryState.SENT))
    store.add_message(msg("i1"))  # received: a receipt naming it changes nothing
    out = Direction.OUT
    assert not store.update_message_state("i1", DeliveryState.DELIVERED, direction=out)
    assert store.update_message_state("o1", DeliveryState.DELIVERED, direction=out)
    assert not store.update_message_state("o1", DeliveryState.DELIVERED, direction=out)
    states = {m.message_id: m.state for m in store.history("bob")}
    assert states == {"o1": DeliveryState.DELIVERED, "i1": DeliveryState.RECEIVED}


def test_a_receipt_moves_all_its_own_messages_at_once(store: Store) -> None:
    for mid, state in (("o1", DeliveryState.SENT), ("o2", DeliveryState.READ), ("o3", None)):
        if state is not None:
            store.add_message(msg(mid, direction=Direction.OUT, state=state))
    store.add_message(msg("i1"))
    out = Direction.OUT
    ids = ["o1", "o2", "o3", "i1", "o1", "missing"]
    assert store.update_message_states(ids, DeliveryState.DELIVERED, direction=out) == 1
    states = {m.message_id: m.state for m in store.history("bob")}
    assert states == {
        "o1": DeliveryState.DELIVERED,
        "o2": DeliveryState.READ,  # never backwards
        "i1": DeliveryState.RECEIVED,  # not ours
    }
    assert store.update_message_states(["o1", "o2"], DeliveryState.READ) == 1


def test_unread_counts_and_mark_read(store: Store) -> None:
    store.add_message(msg("b1", sent_at=1.0))
    store.add_message(msg("b2", sent_at=2.0))
    store.add_message(msg("o1", direction=Direction.OUT, sent_at=3.0, state=DeliveryState.SENT))
    store.add_message(msg("g1", group_conversation("g"), sent_at=4.0))
    assert store.conversations() == [
        ConversationSummary("group:g", 4.0, 1, 1),
        ConversationSummary("bob", 3.0, 2, 3),
    ]
    read = store.mark_conversation_read("bob")
    assert [m.message_id for m in read] == ["b1", "b2"]
    assert all(m.state is DeliveryState.READ for m in read)
    assert store.mark_conversation_read("bob") == []
    assert [c.unread for c in store.conversations()] == [1, 0]


def test_outbox_keeps_pending_sends_until_removed(store: Store) -> None:
    store.outbox_put(OutboxEntry("c2", "bob", b"payload2", 2.0))
    store.outbox_put(OutboxEntry("c1", "bob", b"payload1", 1.0))
    store.outbox_attempted("c1")
    pending = store.outbox_pending()
    assert [(e.message_id, e.attempts, e.payload) for e in pending] == [
        ("c1", 1, b"payload1"),
        ("c2", 0, b"payload2"),
    ]
    store.outbox_remove("c1")
    assert [e.message_id for e in store.outbox_pending()] == ["c2"]


def test_seen_ids_deduplicate_and_prune(store: Store) -> None:
    assert store.mark_seen("x", 1.0)
    assert not store.mark_seen("x", 2.0)
    assert store.is_seen("x") and not store.is_seen("y")
    store.mark_seen("y", 5.0)
    assert store.prune_seen(older_than=3.0) == 1
    assert not store.is_seen("x") and store.is_seen("y")


def test_seen_ids_prune_by_prefix(store: Store) -> None:
    store.mark_seen("env:a", 1.0)
    store.mark_seen("pqxdh:a", 1.0)
    store.mark_seen("env:b", 9.0)
    assert store.prune_seen(older_than=5.0, prefix="env:") == 1
    assert store.is_seen("pqxdh:a") and store.is_seen("env:b") and not store.is_seen("env:a")


def test_settings_and_secrets_are_separate(store: Store) -> None:
    store.set_setting("brand", '{"name": "Vox"}')
    store.set_secret("token", b"bearer-123")
    assert store.get_setting("brand") == '{"name": "Vox"}'
    assert store.get_secret("token") == b"bearer-123"
    assert store.get_setting("token") is None and store.get_secret("brand") is None
    store.set_secret("token", None)
    store.set_setting("brand", None)
    assert store.get_secret("token") is None and store.get_setting("brand") is None


def test_transaction_commits_everything_together(store: Store) -> None:
    with store.transaction():
        store.add_message(msg("m1"))
        store.store_session("bob", 1, b"advanced")
        with store.transaction():  # nested joins the outer one
            store.mark_seen("m1", 1.0)
    assert store.get_message("m1") is not None
    assert store.load_session("bob", 1) == b"advanced"
    assert store.is_seen("m1")


def test_a_rolled_back_peer_session_or_setting_is_not_read_back(store: Store) -> None:
    peer = PeerIdentity("bob", b"\x02" + b"k" * 32)
    store.put_peer(peer)
    store.store_session("bob", 1, b"before")
    store.set_setting("timer:bob", "60")
    assert store.get_peer("carol") is None and store.load_session("bob", 2) is None  # read once
    with pytest.raises(RuntimeError), store.transaction():
        store.put_peer(PeerIdentity("bob", b"\x02" + b"x" * 32, TrustState.CHANGED))
        store.put_peer(PeerIdentity("carol", b"\x02" + b"c" * 32))
        store.store_session("bob", 1, b"after")
        store.store_session("bob", 2, b"new")
        store.delete_session("bob", 1)
        store.set_setting("timer:bob", None)
        assert store.get_peer("carol") is not None and store.load_session("bob", 1) is None
        raise RuntimeError("halfway")
    assert store.get_peer("bob") == peer and store.get_peer("carol") is None
    assert store.load_session("bob", 1) == b"before" and store.load_session("bob", 2) is None
    assert store.get_setting("timer:bob") == "60"


def test_an_unsynced_commit_is_read_back_and_flush_can_run_in_any_thread(store: Store) -> None:
    with store.transaction(sync=False):
        store.add_message(msg("m1"))
    worker = threading.Thread(target=store.flush)
    worker.start()
    store.add_message(msg("m2"))  # meanwhile
    worker.join()
    store.flush()
    assert [m.message_id for m in store.history("bob")] == ["m1", "m2"]


def test_failed_transaction_rolls_everything_back(store: Store) -> None:
    store.store_session("bob", 1, b"before")
    with pytest.raises(RuntimeError), store.transaction():
        store.add_message(msg("m1"))
        store.store_session("bob", 1, b"after")
        store.mark_seen("m1", 1.0)
        store.consume_prekey(PrekeyKind.ONE_TIME_X25519, 1)
        raise RuntimeError("decrypt failed halfway")
    assert store.get_message("m1") is None
    assert store.load_session("bob", 1) == b"before"
    assert not store.is_seen("m1")


def test_forget_message_deletes_and_remembers_until_pruned(store: Store) -> None:
    store.add_message(msg("a"))
    assert store.forget_message("a", 1.0) and store.get_message("a") is None
    assert store.is_gone("a") and not store.is_gone("b") and not store.is_seen("a")
    assert not store.forget_message("b", 9.0) and store.is_gone("b")  # remembered anyway
    assert store.prune_seen(older_than=5.0, prefix="gone:") == 1
    assert not store.is_gone("a") and store.is_gone("b")


def test_add_messages_answers_as_add_message_one_by_one(store: Store) -> None:
    # A received burst's chat messages are stored by one call (one statement in SQLite).
    assert store.add_message(msg("old", text="stored before"))
    with store.transaction():
        added = store.add_messages(
            [
                msg("a", text="first copy"),
                msg("old", text="again"),
                msg("a", text="second copy"),
                msg("b", text="bee"),
            ]
        )
    assert added == [True, False, False, True]
    stored, old = store.get_message("a"), store.get_message("old")
    assert stored is not None and stored.text == "first copy"  # the first copy is kept
    assert old is not None and old.text == "stored before"
    assert [m.message_id for m in store.search_messages("copy")] == ["a"]
    assert store.search_messages("second") == []
    assert store.search_messages("again") == []
    assert [m.message_id for m in store.search_messages("bee")] == ["b"]
    assert store.add_messages([]) == []
