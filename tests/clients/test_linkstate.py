"""The device-linking state machines (``clients/sdk/linkstate.py``) without a relay, a socket or
a clock: both sides driven by hand, the relay's part played by values, in milliseconds. The
whole flow through a real relay is in ``test_sdk_groups_files_devices.py`` and the CLI tests."""

from __future__ import annotations

import random

import pytest

from clients.sdk import identity as ids
from clients.sdk import linkstate as ls
from clients.sdk.content import PayloadKind, RelayPayload
from clients.sdk.errors import (
    LinkCodeExpired,
    LinkCodeMalformed,
    LinkError,
    LinkTimeout,
    LinkWrongCode,
)
from crypto.device_list import DeviceList, SignedDeviceList
from crypto.keys import DeviceAuthKey
from wire.encoding import b64
from wire.frames import AckFrame, DeliverFrame, EphemeralFrame, PongFrame

# Stand-ins for scrypt's output (the machines take the derived keys as inputs).
AUTH, OFFER_KEY = DeviceAuthKey(bytes(range(32))), bytes(range(32, 64))


def account() -> tuple[ids.LocalIdentity, SignedDeviceList]:
    """Alice's device 1 and her signed list (version 1)."""
    me = ids.new_identity("alice", 1, None)
    return me, DeviceList("alice", 1, (me.entry(),)).sign(me.account_key)


def deliver(data: bytes, seq: int = 7) -> DeliverFrame:
    return DeliverFrame.model_validate(
        {"seq": seq, "envelope": "e" * 32, "from": {"user": "alice", "device": 1}, "ts": 1,
         "data": b64(data)}
    )  # fmt: skip


def offered(rng: random.Random | None = None) -> tuple[ls.Offering, ls.OfferSend, SignedDeviceList]:
    """Alice's device 1 offers a slot; returns the flow, the offer and the published list."""
    me, signed = account()
    flow = ls.Offering("alice", 1, rng or random.Random(1))
    flow.choose_slot(signed.verify(me.account_key.public_key, username="alice"))
    published = flow.keys(AUTH, OFFER_KEY).sign(me.account_key)
    return flow, flow.published(me.account_key), published


def step_of(flow: ls.Joining) -> ls.JoinStep:
    """``flow.step`` read afresh (mypy keeps an attribute narrowed by an assert across calls)."""
    return flow.step


def joining(code: str, offer_key: bytes = OFFER_KEY) -> ls.Joining:
    flow = ls.Joining(code)
    assert flow.keys(AUTH, offer_key) == AUTH  # log in with the temporary key
    flow.logged_in(100.0, 60.0)
    return flow


def test_both_sides_from_the_code_to_a_device_of_its_own() -> None:
    offering, out, published = offered()
    assert published.device_list.version == 2
    slot = published.device_list.devices[-1]
    assert slot.auth_key == AUTH.public_key  # the temporary key the new device logs in with
    invitation = offering.sent()
    assert (invitation.device_id, invitation.list_version) == (slot.device_id, 2)
    assert out.new_device == ("alice", slot.device_id) and out.notify == ()
    assert out.client_id.startswith("link-") and len(out.client_id) == 21

    new = joining(invitation.code)
    assert (new.username, new.device_id) == ("alice", slot.device_id)
    assert new.frame(deliver(out.link_payload)) == [AckFrame(seqs=[7])]
    assert new.step is ls.JoinStep.REPLACE_LIST and new.account_key is not None
    me = ids.new_identity("alice", new.device_id, new.account_key)
    served = published.device_list
    assert served.devices[0].identity_key.to_bytes() != me.entry().identity_key.to_bytes()
    replaced = new.replace_list(
        new.account_key.public_key.to_bytes(), published.to_bytes(), me.entry()
    )
    final = replaced.verify(new.account_key.public_key, username="alice")
    assert final.version == 3 and me.entry() in final.devices and slot not in final.devices
    new.finished()
    assert step_of(new) is ls.JoinStep.DONE

    watch = ls.LinkWatch(invitation, 0.0, 30.0)
    watch.poll(0.0)
    assert watch.listed(2) == ls.Wait(ls.POLL_INTERVAL)  # still the temporary entry
    assert watch.listed(None) == ls.Wait(ls.POLL_INTERVAL)
    assert watch.listed(3) == ls.Linked(invitation.device_id)


def test_the_offer_tells_our_other_devices_but_not_ourselves() -> None:
    me, _ = account()
    three = DeviceList("alice", 4, (me.entry(), *(
        ids.new_identity("alice", d, me.account_key).entry() for d in (5, 9)
    )))  # fmt: skip
    flow = ls.Offering("alice", 1, random.Random(2))
    slot = flow.choose_slot(three)
    flow.keys(AUTH, OFFER_KEY)
    out = flow.published(me.account_key)
    assert out.notify == (5, 9) and slot.device_id not in (1, 5, 9)
    assert RelayPayload.from_bytes(out.link_payload).kind is PayloadKind.LINK


def test_the_slot_is_a_free_device_id() -> None:
    class Taken(random.Random):
        draws = iter([3, 3, 40])  # device ids 5, 5, 42

        def randrange(self, *args: int, **kw: int) -> int:  # type: ignore[override]
            return next(self.draws)

    me, _ = account()
    taken = DeviceList("alice", 2, (me.entry(), ids.new_identity("alice", 5, me.account_key)
                                    .entry()))  # fmt: skip
    assert ls.Offering("alice", 1, Taken()).choose_slot(taken).device_id == 42
    with pytest.raises(LinkError, match="unknown"):
        ls.Offering("alice", 1).choose_slot(None)


def test_a_refused_offer_and_steps_out_of_order_are_link_errors() -> None:
    flow, _, _ = offered()
    with pytest.raises(LinkError, match=r"refused the offer \(mismatch\)"):
        flow.refused("mismatch")
    fresh = ls.Offering("alice", 1)
    with pytest.raises(LinkError, match="not 'send the offer'"):
        fresh.sent()


@pytest.mark.parametrize(
    "code", ["", "alice", "alice:1", "Alice:1:AAAA", "alice:x:AAAA-AAAA-AAAA-AAAA", "alice:1:AAAA"]
)
def test_a_malformed_code(code: str) -> None:
    with pytest.raises(LinkCodeMalformed):
        ls.Joining(code)


def test_an_expired_or_used_code() -> None:
    flow = ls.Joining(ls.format_code("alice", 5, bytes(10)))
    flow.keys(AUTH, OFFER_KEY)
    with pytest.raises(LinkCodeExpired, match="expired or already used"):
        flow.login_refused()
    assert flow.step is ls.JoinStep.FAILED


def test_a_wrong_code_does_not_open_the_offer() -> None:
    offering, out, _ = offered()
    new = joining(offering.sent().code, offer_key=bytes(32))
    with pytest.raises(LinkWrongCode, match="does not decrypt"):
        new.frame(deliver(out.link_payload))
    assert new.step is ls.JoinStep.FAILED and new.account_key is None


def test_other_deliveries_are_acked_and_skipped_while_waiting() -> None:
    offering, out, _ = offered()
    new = joining(offering.sent().code)
    assert new.frame(PongFrame()) == []
    eph = EphemeralFrame.model_validate(
        {"from": {"user": "bob", "device": 1}, "ts": 1, "data": b64(b"x")}
    )
    assert new.frame(eph) == []
    other = RelayPayload(PayloadKind.PAIRWISE, b"...").to_bytes()
    assert new.frame(deliver(other, seq=3)) == [AckFrame(seqs=[3])]
    assert new.frame(deliver(b"\xff not a payload", seq=4)) == [AckFrame(seqs=[4])]
    assert new.step is ls.JoinStep.AWAIT_OFFER
    assert new.frame(deliver(out.link_payload, seq=5)) == [AckFrame(seqs=[5])]
    assert step_of(new) is ls.JoinStep.REPLACE_LIST


def test_no_offer_in_time_from_the_given_clock() -> None:
    new = joining(ls.format_code("alice", 5, bytes(10)))  # logged in at 100 for 60 s
    assert new.wait_time(130.0) == 30.0
    with pytest.raises(LinkTimeout, match="no offer arrived") as caught:
        new.wait_time(160.0)
    assert caught.value.waited == 60.0 and new.step is ls.JoinStep.FAILED


def test_the_new_device_not_joining_in_time_from_the_given_clock() -> None:
    watch = ls.LinkWatch(ls.LinkInvitation("c", 5, 2), 1000.0, 5.0)
    watch.poll(1004.9)
    with pytest.raises(LinkTimeout, match="did not join in time"):
        watch.poll(1005.0)


def test_a_relay_serving_another_account_key_or_a_bad_list_is_refused() -> None:
    offering, out, published = offered()
    code = offering.sent().code
    new = joining(code)
    new.frame(deliver(out.link_payload))
    assert new.account_key is not None
    me = ids.new_identity("alice", new.device_id, new.account_key)
    other, _ = account()
    with pytest.raises(LinkError, match="another account key"):
        new.replace_list(other.account_key.public_key.to_bytes(), published.to_bytes(), me.entry())
    new = joining(code)
    new.frame(deliver(out.link_payload))
    assert new.account_key is not None
    forged = published.device_list.sign(other.account_key).to_bytes()
    with pytest.raises(LinkError, match="does not verify"):
        new.replace_list(new.account_key.public_key.to_bytes(), forged, me.entry())


def test_the_offer_seals_the_account_key_for_one_slot() -> None:
    me, _ = account()
    sealed = ls.seal_offer(OFFER_KEY, bytes(12), "alice", 5, me.account_key)
    assert ls.open_offer(sealed, "alice", 5, OFFER_KEY) == me.account_key
    with pytest.raises(LinkWrongCode):
        ls.open_offer(sealed, "alice", 6, OFFER_KEY)  # another slot: another ad
