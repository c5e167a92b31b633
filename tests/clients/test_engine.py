"""The sans-I/O client engine, without a relay: decisions on typed frames and a given clock.

Most cases run through :mod:`tests.clients.fake_relay` (a relay's delivery rules in memory);
each takes milliseconds. A few of the same paths also run through a real relay in
``test_sdk_resilience.py``.
"""

from __future__ import annotations

import math
import random

import pytest

from clients.sdk.content import PayloadKind, ReceiptKind, RelayPayload
from clients.sdk.engine import (
    Answer,
    Backoff,
    ClientEngine,
    LinkOffer,
    Process,
    Replenish,
    ack_frames,
    replenish_count,
)
from clients.sdk.errors import RelayRejected, RelayUnavailable, UnknownUser
from clients.sdk.models import Message
from clients.sdk.protocol import Envelope, SendReceipt
from clients.sdk.sendqueue import (
    LANE_WINDOW,
    Accepted,
    Fail,
    Finished,
    Queued,
    Retry,
    SendQueue,
    Transmit,
    backoff,
    classify,
)
from tests.clients.fake_relay import Device, FakeRelay
from wire.codes import ErrorCode
from wire.encoding import b64
from wire.frames import (
    AcceptedFrame,
    DeliverFrame,
    EphemeralFrame,
    ErrorFrame,
    MismatchFrame,
    PongFrame,
    PrekeysLowFrame,
    SendFrame,
    ServerFrame,
)
from wire.rest import PrekeyCounts


def texts(device: Device) -> list[str]:
    return [e.text or "" for e in device.receive() if isinstance(e, Message) and not e.outgoing]


def two() -> tuple[FakeRelay, Device, Device]:
    relay = FakeRelay()
    return relay, Device.register(relay, "alice"), Device.register(relay, "bob")


def test_a_plain_send_is_accepted_and_delivered_once() -> None:
    _, alice, bob = two()
    assert isinstance(alice.send_text("bob", "hi"), Accepted)
    assert texts(bob) == ["hi"]
    assert texts(bob) == []  # acked: gone from the queue
    assert alice.slept == []


@pytest.mark.parametrize("code", ["busy", "internal", "rate_limited", "shutting_down"])
def test_a_transient_refusal_is_retried_with_backoff_and_stored_once(code: str) -> None:
    relay, alice, bob = two()
    relay.refuse = [code, code]
    assert isinstance(alice.send_text("bob", "later"), Accepted)
    assert alice.slept == [0.2, 0.4]
    assert relay.stored == 1
    assert texts(bob) == ["later"]


def test_a_refusal_that_cannot_heal_fails_at_once_with_its_code() -> None:
    relay, alice, _ = two()
    relay.refuse = ["queue_full"]
    outcome = alice.send_text("bob", "x")
    assert isinstance(outcome, Fail) and isinstance(outcome.error, RelayRejected)
    assert outcome.error.code == "queue_full" and alice.slept == []


def test_retries_give_up_after_the_engines_attempts() -> None:
    relay, alice, _ = two()
    relay.refuse = ["busy"] * 10
    outcome = alice.send_text("bob", "x")
    assert isinstance(outcome, Fail) and isinstance(outcome.error, RelayRejected)
    assert len(alice.slept) == alice.engine.sends.max_attempts - 1
    assert relay.stored == 0


def test_a_lost_answer_is_resent_with_the_same_id_and_not_stored_twice() -> None:
    relay, alice, bob = two()
    relay.lose_answers = 1
    assert isinstance(alice.send_text("bob", "exactly once"), Accepted)
    assert alice.slept == [alice.engine.sends.answer_timeout, 0.2]  # unanswered, then backoff
    assert relay.stored == 1 and len(alice.written) == 2
    assert texts(bob) == ["exactly once"]


def test_a_send_written_into_a_dropped_connection_is_resent_after_reconnecting() -> None:
    relay, alice, bob = two()
    relay.blackhole = 1  # the frame dies with the connection
    key = alice.submit("bob", "lost on the way")
    alice.drop()
    assert key not in alice.settled  # held for a while: the shell is reconnecting
    assert alice.engine.sends.deadline() == alice.engine.sends.offline_patience
    alice.connect()
    alice.run()
    assert isinstance(alice.outcome(key), Finished) and relay.stored == 1
    assert texts(bob) == ["lost on the way"]


def test_a_send_waits_for_the_connection_then_fails_or_is_queued_if_durable() -> None:
    relay, alice, _ = two()
    alice.drop()
    plain = alice.submit("bob", "plain")
    kept = alice.submit("bob", "kept", lane="bob", durable=True)
    alice.run()
    patience = alice.engine.sends.offline_patience
    assert alice.clock == patience and relay.stored == 0
    failed = alice.outcome(plain)
    assert isinstance(failed, Finished) and isinstance(failed.outcome, Fail)
    assert isinstance(failed.outcome.error, RelayUnavailable) and not failed.outcome.written
    assert isinstance(alice.outcome(kept), Queued)
    assert alice.engine.sends.queued() == [kept]
    alice.connect()  # a durable send resumes on the next connection
    alice.run()
    assert isinstance(alice.outcome(kept), Finished) and relay.stored == 1
    announced = alice.outcome(kept)
    assert isinstance(announced, Finished) and announced.announce  # it had been reported queued


# --- per-conversation order (lanes) -------------------------------------------------------


@pytest.mark.parametrize(
    ("lane", "window", "fence"),
    [(None, 10, True), ("bob", 1, True), ("bob", 10, False), ("bob", 10, True)],
    ids=["no-lane", "lane-window-1", "lane-window-10-no-fence", "lane-window-10-fence"],
)
def test_a_refused_first_message_is_never_overtaken_by_the_next_in_its_lane(
    lane: str | None, window: int, fence: bool
) -> None:
    relay, alice, bob = two()
    alice.engine.sends.lane_window = window
    relay.fence = fence  # False: a relay that ignores ``after``
    alice.send_text("bob", "warm-up")
    relay.refuse = ["busy"]
    first = alice.submit("bob", "first", lane=lane, durable=True)
    second = alice.submit("bob", "second", lane=lane, durable=True)
    alice.run()
    received = texts(bob)
    if lane is None or not fence:  # the second overtakes the first: what the fence prevents
        assert received == ["warm-up", "second", "first"]
        return
    assert received == ["warm-up", "first", "second"]
    assert all(isinstance(alice.outcome(k), Finished) for k in (first, second))
    if window == 1:  # second written once, after first
        assert alice.written[1:] == [first, first, second]
    else:  # both on their way; second refused (predecessor_missing), resent behind first
        assert alice.written[1:] == [first, second, first, second]


def test_a_connection_drop_never_lets_a_later_message_overtake_a_lost_one() -> None:
    relay, alice, bob = two()
    alice.send_text("bob", "warm-up")
    relay.blackhole = 1
    first = alice.submit("bob", "first", lane="bob", durable=True)
    alice.drop()  # "first" was written into the dying connection
    alice.connect()  # back at once, before first's retry is due
    second = alice.submit("bob", "second", lane="bob", durable=True)
    assert alice.engine.sends.lane("bob") == [first, second]
    alice.run()
    assert texts(bob) == ["warm-up", "first", "second"]


@pytest.mark.parametrize("fence", [False, True], ids=["no-fence", "fence"])
def test_a_frame_lost_mid_window_is_never_overtaken_by_the_next_in_its_lane(fence: bool) -> None:
    relay, alice, bob = two()
    relay.fence = fence  # False: a relay that ignores ``after``
    alice.send_text("bob", "warm-up")
    relay.blackhole = 1  # "first" is lost on the way; "second", right behind it, arrives
    keys = [alice.submit("bob", t, lane="bob", durable=True) for t in ("first", "second")]
    alice.run()
    assert all(isinstance(alice.outcome(k), Finished) for k in keys)
    if not fence:
        assert texts(bob) == ["warm-up", "second", "first"]
    else:
        assert texts(bob) == ["warm-up", "first", "second"]
        assert relay.log[1:] == [(alice.address, k) for k in keys]


def test_a_window_of_a_lane_is_written_at_once_each_naming_its_predecessor() -> None:
    relay, alice, bob = two()
    alice.send_text("bob", "warm-up")
    named: list[str | None] = []
    handle = relay.handle

    def record(sender: tuple[str, int], frame: SendFrame) -> ServerFrame | None:
        named.append(frame.after)
        return handle(sender, frame)

    relay.handle = record  # type: ignore[method-assign]
    keys = [alice.submit("bob", f"m{i}", lane="bob", durable=True) for i in range(12)]
    window = alice.engine.sends.lane_window
    assert window == LANE_WINDOW > 1
    assert alice.written[1:] == keys[:window]  # all on their way before any answer
    assert named == [None, *keys[: window - 1]]
    alice.run()
    assert texts(bob) == ["warm-up", *(f"m{i}" for i in range(12))]
    assert alice.written[1:] == keys  # nothing refused, nothing written twice
    # m10 and m11 went out as m0 and m1 were accepted, each behind the one before it.
    assert named[window:] == keys[window - 1 : 11]


def test_a_relay_without_the_fence_gets_the_lane_one_send_at_a_time_without_after() -> None:
    relay, alice, bob = two()
    relay.knows_after = False  # refuses the field: bad_frame "after: Extra inputs ..."
    alice.send_text("bob", "warm-up")
    keys = [alice.submit("bob", f"m{i}", lane="bob", durable=True) for i in range(4)]
    alice.run()
    assert all(isinstance(alice.outcome(k), Finished) for k in keys)
    assert not any(isinstance(o, Queued) for k in keys for o in alice.settled[k])
    assert texts(bob) == ["warm-up", "m0", "m1", "m2", "m3"]
    assert alice.engine.sends.fence is False
    # m1..m3 went out with ``after`` once (refused), then one at a time without it.
    assert alice.written[1:] == [*keys, *keys[1:]]


def test_the_predecessor_is_the_last_frame_of_the_nearest_pending_send_of_the_lane() -> None:
    q = SendQueue(lane_window=4)
    q.connection_up(0.0)
    for key in ("a", "b", "c"):
        q.submit(key, {"bob"}, 0.0, lane="bob")
    q.submit("x", {"carol"}, 0.0, lane="carol")
    q.submit("plain", {"bob"}, 0.0)
    assert q.expect("a", 0, ["a-key-dist", "a"], 0.0) == []
    assert q.expect("b", 0, ["b"], 0.0) == []
    assert [q.predecessor(k) for k in ("a", "b", "c", "x", "plain")] == [None, "a", "b", None, None]
    q.answer(AcceptedFrame(id="a-key-dist", envelope="e" * 32, ts=1), 0.0)
    assert q.predecessor("b") == "a"  # a's message frame is still unanswered
    q.answer(AcceptedFrame(id="a", envelope="f" * 32, ts=1), 0.0)
    assert q.predecessor("b") is None and q.predecessor("c") == "b"
    # Refused for want of its predecessor: held (not an attempt) until b goes out again.
    q.expect("c", 0, ["c"], 0.0)
    assert q.answer(ErrorFrame(id="b", code="busy"), 0.0) == []
    assert q.answer(ErrorFrame(id="c", code="predecessor_missing"), 0.0) == []
    assert q.deadline() == backoff(0)  # b's retry; c waits for it
    actions = q.tick(backoff(0))
    assert [(a.key, a.attempt) for a in actions if isinstance(a, Transmit)] == [("b", 1), ("c", 0)]


def test_a_queued_head_holds_its_conversation_and_everything_resumes_in_order() -> None:
    relay, alice, bob = two()
    alice.send_text("bob", "warm-up")
    relay.refuse = ["busy"] * alice.engine.sends.max_attempts
    alice.engine.sends.requeue_after = math.inf  # resumed only by a connection
    keys = [alice.submit("bob", t, lane="bob", durable=True) for t in ("one", "two", "three")]
    alice.run()
    assert [type(alice.outcome(k)) for k in keys] == [Queued, Queued, Queued]
    other = alice.submit("bob", "another conversation", lane="group:x", durable=True)
    alice.run()
    assert isinstance(alice.outcome(other), Finished)  # other lanes are not held
    assert texts(bob) == ["warm-up", "another conversation"]
    alice.drop()
    alice.connect()
    alice.run()
    assert texts(bob) == ["one", "two", "three"]
    assert all(isinstance(alice.outcome(k), Finished) for k in keys)


def test_a_queued_conversation_is_retried_later_while_connected() -> None:
    relay, alice, bob = two()
    alice.send_text("bob", "warm-up")
    relay.refuse = ["busy"] * alice.engine.sends.max_attempts
    keys = [alice.submit("bob", t, lane="bob", durable=True) for t in ("one", "two")]
    alice.run()
    assert [type(alice.settled[k][0]) for k in keys] == [Queued, Queued]
    assert alice.clock >= alice.engine.sends.requeue_after
    assert texts(bob) == ["warm-up", "one", "two"]


def test_a_new_message_resumes_its_queued_conversation_behind_the_queued_ones() -> None:
    relay, alice, bob = two()
    alice.send_text("bob", "warm-up")
    relay.refuse = ["busy"] * alice.engine.sends.max_attempts
    alice.engine.sends.requeue_after = math.inf
    queued = alice.submit("bob", "queued", lane="bob", durable=True)
    alice.run()
    assert isinstance(alice.outcome(queued), Queued)
    alice.submit("bob", "new", lane="bob", durable=True)
    alice.run()
    assert texts(bob) == ["warm-up", "queued", "new"]


def test_a_message_refused_for_good_releases_its_lane() -> None:
    relay, alice, bob = two()
    alice.send_text("bob", "warm-up")
    relay.refuse = ["queue_full"]
    bad = alice.submit("bob", "refused", lane="bob", durable=True)
    alice.submit("bob", "next", lane="bob", durable=True)
    alice.run()
    failed = alice.outcome(bad)
    assert isinstance(failed, Finished) and isinstance(failed.outcome, Fail)
    assert texts(bob) == ["warm-up", "next"]


def test_stale_reports_and_unknown_answers_change_nothing() -> None:
    queue = SendQueue()
    queue.connection_up(0.0)
    (transmit,) = queue.submit("k", {"bob"}, 0.0)
    assert isinstance(transmit, Transmit) and transmit.attempt == 0
    assert queue.expect("k", 0, ["c1"], 0.0) == []
    assert queue.answer(AcceptedFrame(id="nobody", envelope="e", ts=1), 0.0) == []
    down = RelayUnavailable("x", "gone")
    assert queue.connection_down(1.0, down, reconnecting=True) == []  # held, not failed
    assert queue.write_failed("k", 0, down, 1.0) == []  # attempt 0 is over already
    assert queue.answer(AcceptedFrame(id="c1", envelope="e", ts=1), 1.0) == []  # forgotten
    assert len(queue) == 1


def test_a_mismatch_refreshes_the_device_list_and_reaches_a_new_device() -> None:
    relay, alice, bob = two()
    alice.send_text("bob", "warm-up")
    bob2 = Device.register(relay, "bob", bob.proto.identity.account_key, device_id=2)
    alice.clock += 1  # well within the list's TTL: only the relay's mismatch reveals bob:2
    assert isinstance(alice.send_text("bob", "to both"), Accepted)
    assert texts(bob) == ["warm-up", "to both"]
    bob2.refresh("alice")
    assert texts(bob2) == ["to both"]


def test_the_engine_decides_on_typed_answers() -> None:
    assert classify(AcceptedFrame(id="m", envelope="e", ts=7), {"bob"}, 0) == Accepted(7)
    unknown = classify(ErrorFrame(id="m", code=ErrorCode.UNKNOWN_USER, users=["zed"]), {"bob"}, 0)
    assert isinstance(unknown, Fail) and isinstance(unknown.error, UnknownUser)
    assert "zed" in str(unknown.error)
    mismatch = classify(
        MismatchFrame.model_validate(
            {
                "id": "m",
                "missing": [{"user": "bob", "device": 3}],
                "stale": [{"user": "carl", "device": 2}],
            }
        ),
        {"bob"},
        0,
    )
    assert isinstance(mismatch, Retry)
    assert mismatch.refresh == {"bob", "carl"} and mismatch.drop == (("carl", 2),)
    assert mismatch.delay == 0
    newer = classify(ErrorFrame(id="m", code="a_code_from_the_future"), {"bob"}, 0)
    assert isinstance(newer, Fail) and isinstance(newer.error, RelayRejected)


def test_a_one_shot_send_fails_at_once_when_the_relay_is_down_a_connected_one_retries() -> None:
    down = RelayUnavailable("http://x", "refused")
    one_shot = SendQueue()  # never connected: no reader re-establishes anything
    (transmit,) = one_shot.submit("k", {"bob"}, 0.0)
    assert isinstance(transmit, Transmit)
    (failed,) = one_shot.write_failed("k", 0, down, 0.0)
    assert failed == Finished("k", Fail(down, written=False))
    kept = SendQueue()
    kept.submit("k", {"bob"}, 0.0, lane="bob", durable=True)
    assert kept.write_failed("k", 0, down, 0.0) == [Queued("k", down)]
    connected = SendQueue()
    connected.connection_up(0.0)
    connected.submit("k", {"bob"}, 0.0)
    connected.expect("k", 0, ["k"], 0.0)
    assert connected.write_failed("k", 0, down, 0.0) == []  # retried after the backoff
    assert connected.deadline() == 0.2
    (again,) = connected.tick(0.2)
    assert isinstance(again, Transmit) and again.attempt == 1


def test_frames_are_routed_by_type() -> None:
    engine = ClientEngine("alice")
    deliver = DeliverFrame.model_validate(
        {"seq": 1, "envelope": "e", "from": {"user": "bob", "device": 1}, "ts": 1, "data": ""}
    )
    assert engine.route(deliver, receiving=True) == Process(deliver)
    assert engine.route(deliver, receiving=False) is None  # left unacked for a receiver
    accepted = AcceptedFrame(id="m1", envelope="e", ts=1)
    assert engine.route(accepted, receiving=False) == Answer("m1", accepted)
    low = PrekeysLowFrame(one_time_prekeys=1, one_time_pq_prekeys=1)
    assert engine.route(low, receiving=True) == Replenish()
    assert engine.route(PongFrame(id="p"), receiving=True) is None


def test_envelopes_link_offers_and_undecodable_data() -> None:
    engine = ClientEngine("alice", rng=random.Random(1))
    sender = {"user": "bob", "device": 2}
    frame = DeliverFrame.model_validate(
        {"seq": 9, "envelope": "env", "from": sender, "ts": 5, "data": b64(b"\x01\x01abc")}
    )
    assert engine.envelope(frame) == Envelope(9, "env", "bob", 2, 5, b"\x01\x01abc")
    link = RelayPayload(PayloadKind.LINK, b"sealed").to_bytes()
    offer = DeliverFrame.model_validate(
        {"seq": 10, "envelope": "e2", "from": sender, "ts": 5, "data": b64(link)}
    )
    assert engine.envelope(offer) == LinkOffer(10, b"sealed")
    bad = DeliverFrame.model_validate(
        {"seq": 11, "envelope": "e3", "from": sender, "ts": 5, "data": "not base64!"}
    )
    assert engine.envelope(bad) is None
    typing = EphemeralFrame.model_validate({"from": sender, "ts": 5, "data": b64(b"\x01\x01")})
    first, second = engine.envelope(typing), engine.envelope(typing)
    assert isinstance(first, Envelope) and isinstance(second, Envelope)
    assert first.envelope_id.startswith("eph-") and first.envelope_id != second.envelope_id


def test_receipts_are_one_per_sender_and_kind_in_chunks() -> None:
    engine = ClientEngine("alice")
    ids = [i.to_bytes(16, "big") for i in range(600)]
    engine.receipts.add(SendReceipt("bob", ReceiptKind.DELIVERED, tuple(ids[:300])))
    engine.receipts.add(SendReceipt("bob", ReceiptKind.DELIVERED, tuple(ids[300:])))
    engine.receipts.add(SendReceipt("carl", ReceiptKind.DELIVERED, (ids[0],)))
    drained = engine.receipts.drain()
    assert [(r.to, len(r.ids)) for r in drained] == [("bob", 500), ("bob", 100), ("carl", 1)]
    assert engine.receipts.drain() == []


def test_device_lists_are_refetched_after_their_ttl_on_the_given_clock() -> None:
    engine = ClientEngine("alice", device_list_ttl=60)
    assert engine.list_due("bob", 0.0, known=False)
    engine.list_checked("bob", 100.0)
    assert not engine.list_due("bob", 159.0, known=True)
    assert engine.list_due("bob", 161.0, known=True)
    assert engine.list_due("bob", 101.0, known=True, refresh=True)


def test_a_key_change_is_reported_once_until_accepted() -> None:
    engine = ClientEngine("alice")
    assert engine.report_key_change("bob") and not engine.report_key_change("bob")
    engine.key_accepted("bob")
    assert engine.report_key_change("bob")


def test_backoff_replenishment_and_ack_chunks() -> None:
    backoff = Backoff()
    assert [backoff.next() for _ in range(4)] == [0.2, 0.4, 0.8, 1.0]
    backoff.reset()
    assert backoff.next() == 0.2
    counts = PrekeyCounts(
        one_time_prekeys=5, one_time_pq_prekeys=8, low_threshold=10, max_stock=100
    )
    assert replenish_count(counts, 50) == 50
    full = PrekeyCounts(
        one_time_prekeys=60, one_time_pq_prekeys=60, low_threshold=10, max_stock=100
    )
    assert replenish_count(full, 50) == 0
    assert [len(a.seqs) for a in ack_frames(list(range(1, 2502)))] == [1000, 1000, 501]


def test_a_lane_window_pipelines_a_conversation_and_stops_it_at_a_retry() -> None:
    relay, alice, bob = two()
    alice.send_text("bob", "warm-up")
    alice.engine.sends.lane_window = 3
    relay.refuse = ["busy"]
    keys = [alice.submit("bob", f"m{i}", lane="bob", durable=True) for i in range(5)]
    assert alice.written[1:] == keys[:3]  # three on their way before any answer
    alice.run()
    # m0 was refused; m1 and m2, already on their way, named it (the fence) and were refused
    # too; all three were resent in order, then m3 and m4 as the window moved on.
    assert alice.written[1:] == [*keys[:3], *keys[:3], keys[3], keys[4]]
    assert texts(bob) == ["warm-up", "m0", "m1", "m2", "m3", "m4"]
    assert not any(isinstance(o, Queued) for k in keys for o in alice.settled[k])
