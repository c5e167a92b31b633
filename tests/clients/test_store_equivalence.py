"""Stateful property test: random operation sequences give the same results on both stores."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from clients.store import (
    DeliveryState,
    Direction,
    MemoryStore,
    OutboxEntry,
    PrekeyKind,
    PrekeyRecord,
    SqliteStore,
    Store,
    StoredMessage,
)

USERS = st.sampled_from(["bob", "carol"])
DEVICES = st.integers(1, 3)
IDS = st.sampled_from([f"m{i}" for i in range(8)])
CONVERSATIONS = st.sampled_from(["bob", "carol", "group:g1"])
STATES = st.sampled_from(list(DeliveryState))
BLOBS = st.binary(max_size=40)
KINDS = st.sampled_from(list(PrekeyKind))


class Rollback(Exception):
    pass


class BothStores(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp())
        self.stores: list[Store] = [MemoryStore(), SqliteStore.open(self.dir / "p")]

    def teardown(self) -> None:
        for store in self.stores:
            store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def same(self, results: list[object]) -> None:
        assert results[0] == results[1], results

    @rule(user=USERS, device=DEVICES, state=BLOBS)
    def store_session(self, user: str, device: int, state: bytes) -> None:
        for s in self.stores:
            s.store_session(user, device, state)

    @rule(user=USERS, device=DEVICES)
    def delete_session(self, user: str, device: int) -> None:
        for s in self.stores:
            s.delete_session(user, device)

    @rule(
        mid=IDS,
        conv=CONVERSATIONS,
        out=st.booleans(),
        state=STATES,
        at=st.integers(0, 5),
        text=st.text(max_size=10),
    )
    def add_message(
        self, mid: str, conv: str, out: bool, state: DeliveryState, at: int, text: str
    ) -> None:
        direction = Direction.OUT if out else Direction.IN
        m = StoredMessage(mid, conv, direction, "me" if out else conv, 1, at, at, text, None, state)
        self.same([s.add_message(m) for s in self.stores])

    @rule(mids=st.lists(IDS, max_size=6), text=st.text(max_size=10))
    def add_messages(self, mids: list[str], text: str) -> None:
        # A received burst's messages: ids repeated in the list or stored already are not added.
        batch = [
            StoredMessage(m, "bob", Direction.IN, "bob", 1, i, i, f"{text} {i}")
            for i, m in enumerate(mids)
        ]
        self.same([s.add_messages(batch) for s in self.stores])

    @rule(mid=IDS, state=STATES)
    def update_state(self, mid: str, state: DeliveryState) -> None:
        self.same([s.update_message_state(mid, state) for s in self.stores])

    @rule(mids=st.lists(IDS, max_size=5), state=STATES, out=st.none() | st.booleans())
    def update_states(self, mids: list[str], state: DeliveryState, out: bool | None) -> None:
        direction = None if out is None else Direction.OUT if out else Direction.IN
        self.same([s.update_message_states(mids, state, direction=direction) for s in self.stores])

    @rule(conv=CONVERSATIONS)
    def mark_read(self, conv: str) -> None:
        self.same([[m.message_id for m in s.mark_conversation_read(conv)] for s in self.stores])

    @rule(mid=IDS, at=st.integers(0, 9))
    def mark_seen(self, mid: str, at: int) -> None:
        self.same([s.mark_seen(mid, at) for s in self.stores])

    @rule(at=st.integers(0, 10))
    def prune_seen(self, at: int) -> None:
        self.same([s.prune_seen(at) for s in self.stores])

    @rule(mid=IDS, at=st.integers(0, 9), commit=st.booleans())
    def forget_message(self, mid: str, at: int, commit: bool) -> None:
        results: list[object] = []
        for s in self.stores:
            try:
                with s.transaction():
                    results.append(s.forget_message(mid, at))
                    if not commit:
                        raise Rollback
            except Rollback:
                pass
        self.same(results)

    @rule(at=st.integers(0, 10))
    def prune_gone(self, at: int) -> None:
        self.same([s.prune_seen(at, prefix="gone:") for s in self.stores])

    @rule(kind=KINDS, key_id=st.integers(1, 5), secret=BLOBS)
    def put_prekey(self, kind: PrekeyKind, key_id: int, secret: bytes) -> None:
        for s in self.stores:
            s.put_prekeys([PrekeyRecord(kind, key_id, secret, 1.0)])

    @rule(kind=KINDS, key_id=st.integers(1, 5))
    def consume_prekey(self, kind: PrekeyKind, key_id: int) -> None:
        self.same([s.consume_prekey(kind, key_id) for s in self.stores])

    @rule(mid=IDS, conv=CONVERSATIONS, payload=BLOBS, at=st.integers(0, 5))
    def outbox_put(self, mid: str, conv: str, payload: bytes, at: int) -> None:
        for s in self.stores:
            s.outbox_put(OutboxEntry(mid, conv, payload, at))

    @rule(mid=IDS)
    def outbox_progress(self, mid: str) -> None:
        for s in self.stores:
            s.outbox_attempted(mid)
            if mid.endswith(("1", "3")):
                s.outbox_remove(mid)

    @rule(key=st.sampled_from(["token", "other"]), value=st.none() | BLOBS)
    def set_secret(self, key: str, value: bytes | None) -> None:
        for s in self.stores:
            s.set_secret(key, value)

    @rule(user=USERS, state=BLOBS, mid=IDS)
    def failed_transaction(self, user: str, state: bytes, mid: str) -> None:
        for s in self.stores:
            try:
                with s.transaction():
                    s.store_session(user, 1, state)
                    s.mark_seen(mid, 0)
                    s.add_message(StoredMessage(mid, user, Direction.IN, user, 1, 0, 0, "x"))
                    raise Rollback
            except Rollback:
                pass

    @rule(
        ops=st.lists(st.tuples(USERS, DEVICES, st.none() | BLOBS), min_size=1, max_size=6),
        commit=st.booleans(),
    )
    def session_burst(self, ops: list[tuple[str, int, bytes | None]], commit: bool) -> None:
        # Several writes and deletes in one transaction (the SQLite store writes each session
        # once, at the commit), reading the sessions back in between.
        for s in self.stores:
            try:
                with s.transaction():
                    for user, device, state in ops:
                        if state is None:
                            s.delete_session(user, device)
                        else:
                            s.store_session(user, device, state)
                    if not commit:
                        raise Rollback
            except Rollback:
                pass
        self.same([[s.session_devices(u) for u in ("bob", "carol")] for s in self.stores])

    @invariant()
    def observably_equal(self) -> None:
        def view(s: Store) -> object:
            return (
                {
                    u: [(d, s.load_session(u, d)) for d in s.session_devices(u)]
                    for u in ("bob", "carol")
                },
                {c: s.history(c, limit=100) for c in ("bob", "carol", "group:g1")},
                s.conversations(),
                [(e.message_id, e.payload, e.attempts) for e in s.outbox_pending()],
                [e.message_id for e in s.outbox_pending(conversation="bob")],
                [m for m in (f"m{i}" for i in range(8)) if s.is_seen(m)],
                [m for m in (f"m{i}" for i in range(8)) if s.is_gone(m)],
                {k: (s.list_prekeys(k), s.next_prekey_id(k)) for k in PrekeyKind},
                (s.get_secret("token"), s.get_secret("other")),
            )

        self.same([view(s) for s in self.stores])


BothStores.TestCase.settings = settings(max_examples=25, stateful_step_count=20, deadline=None)
test_memory_and_sqlite_stores_agree_on_every_operation_sequence = BothStores.TestCase
