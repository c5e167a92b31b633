"""Issue 9, defect 6: skipped message keys age out, a forged message costs a bounded amount of
work before its tag is checked, and a replayable initial message has a stable id."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from crypto import primitives
from crypto.encoding import Reader, Writer
from crypto.envelope import InitialMessage, PqxdhPrefix, RatchetMessage, decode_message
from crypto.errors import (
    AuthenticationFailed,
    DuplicateMessage,
    TooManySkipped,
    VoxError,
)
from crypto.keys import PeerDevice, X25519PublicKey
from crypto.primitives import DeterministicRng, X25519KeyPair
from crypto.ratchet.header import Header
from crypto.ratchet.session import MAX_SKIPPED_AGE, RatchetConfig, Session, initial_digest
from tests.crypto.support import make_device, make_pair

T0 = 1_800_000_000
DAY = 24 * 3600


def _unchanged(session: Session, data: bytes, error: type[VoxError], **kw: float) -> None:
    before = session.to_bytes()
    with pytest.raises(error):
        session.decrypt(data, **kw)
    assert session.to_bytes() == before


# --- age limit --------------------------------------------------------------------------


def test_a_skipped_key_expires_after_the_age_limit() -> None:
    alice, bob, rng = make_pair(b"age")
    lost = alice.encrypt(b"late", rng)
    assert bob.decrypt(alice.encrypt(b"on time", rng), now=T0) == b"on time"
    assert bob.skipped_count == 1
    _unchanged(bob, lost, DuplicateMessage, now=T0 + MAX_SKIPPED_AGE + 1)
    assert bob.decrypt(lost, now=T0 + MAX_SKIPPED_AGE) == b"late"  # still in time


def test_a_decrypt_deletes_expired_keys_and_expire_skipped_does_it_for_idle_sessions() -> None:
    alice, bob, rng = make_pair(b"age2")
    lost = [alice.encrypt(b"lost %d" % i, rng) for i in range(3)]
    bob.decrypt(alice.encrypt(b"x", rng), now=T0)
    assert bob.skipped_count == 3
    bob.decrypt(alice.encrypt(b"y", rng), now=T0 + MAX_SKIPPED_AGE + 1)
    assert bob.skipped_count == 0
    assert Session.from_bytes(bob.to_bytes()).skipped_count == 0
    del lost
    carol, dave, rng2 = make_pair(b"age3")
    carol.encrypt(b"lost", rng2)
    dave.decrypt(carol.encrypt(b"z", rng2), now=T0)
    assert dave.expire_skipped(T0 + DAY) == 0 and dave.skipped_count == 1
    assert dave.expire_skipped(T0 + MAX_SKIPPED_AGE + 1) == 1 and dave.skipped_count == 0


def test_keys_stored_without_a_clock_start_aging_at_the_first_clock_reading() -> None:
    alice, bob, rng = make_pair(b"age4")
    lost = alice.encrypt(b"late", rng)
    bob.decrypt(alice.encrypt(b"x", rng))  # no clock: age unknown
    assert bob.expire_skipped(T0) == 0  # stamped now, not expired
    assert bob.expire_skipped(T0 + MAX_SKIPPED_AGE) == 0
    assert bob.decrypt(lost, now=T0 + MAX_SKIPPED_AGE) == b"late"


def test_the_age_limit_is_configurable_and_zero_means_none() -> None:
    alice, bob, rng = make_pair(b"age5", config=RatchetConfig(max_skipped_age=0))
    lost = alice.encrypt(b"late", rng)
    bob.decrypt(alice.encrypt(b"x", rng), now=T0)
    assert bob.decrypt(lost, now=T0 + 10 * 365 * DAY) == b"late"


def _as_version_1(state: bytes) -> bytes:
    """Rewrite a version-2 session state as version 1 (no age limit, clock or key ages),
    reading the documented layout (protocol-crypto.md §9) field by field."""
    r, w = Reader(state), Writer()
    assert r.u8() == 2
    w.u8(1).str16(r.str16("local", 32)).u32(r.u32())
    PeerDevice.read(r).write(w)
    w.bytes16(r.bytes16("ad", 1024)).u16(r.u16()).u16(r.u16())
    r.u32(), r.u64()  # dropped: max_skipped_age, clock
    w.raw(r.raw(64))  # RK, DHs
    if r.flag("remote"):
        w.u8(1).raw(r.raw(33))
    else:
        w.u8(0)
    for _ in ("sending", "receiving"):
        if r.flag("chain"):
            w.u8(1).raw(r.raw(36))
        else:
            w.u8(0)
    w.raw(r.raw(4 + 33 + 32))  # PN, base key, initial digest
    if r.flag("pending"):
        w.u8(1)
        PqxdhPrefix.read(r).write(w)
    else:
        w.u8(0)
    n_previous = r.u8()
    w.u8(n_previous).raw(r.raw(32 * n_previous))
    n_skipped = r.u16()
    w.u16(n_skipped)
    for _ in range(n_skipped):
        w.raw(r.raw(68))
        r.u64()  # dropped: stored_at
    r.end()
    return w.finish()


def test_a_version_1_state_still_loads_and_its_keys_start_aging() -> None:
    alice, bob, rng = make_pair(b"age6")
    lost = alice.encrypt(b"late", rng)
    bob.decrypt(alice.encrypt(b"x", rng))
    old = _as_version_1(bob.to_bytes())
    assert old[0] == 1
    loaded = Session.from_bytes(old)
    assert loaded.skipped_count == 1
    assert loaded.to_bytes()[0] == 2
    assert loaded.decrypt(lost, now=T0) == b"late"


# --- work bound for forged messages --------------------------------------------------------


def _forge(session_sender: Session, rng: DeterministicRng, pn: int, n: int) -> bytes:
    """A message under a fresh ratchet key with chosen pn and n (its tag cannot verify)."""
    genuine = decode_message(session_sender.encrypt(b"x", rng))
    inner = genuine.message if isinstance(genuine, InitialMessage) else genuine
    key = X25519PublicKey(X25519KeyPair.generate(rng).public)
    return RatchetMessage(Header(key, pn, n), inner.nonce, inner.ciphertext).to_bytes()


def _count_hmacs(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Count HMAC-SHA256 computations: every one in crypto/ is either OpenSSL's one-shot HMAC
    (``_hmac_digest``) or, under a 32-byte key, two one-shot SHA-256 calls (``_sha256``)."""
    calls = [0, 0]
    # (``_hmac_digest`` is imported under that name, so mypy does not see it as an attribute)
    real_hmac: Callable[[bytes, bytes, str], bytes] = vars(primitives)["_hmac_digest"]
    real_sha = primitives._sha256

    def counting_hmac(key: bytes, msg: bytes, digest: str) -> bytes:
        calls[0] += 1
        return real_hmac(key, msg, digest)

    def counting_sha(data: bytes) -> Any:
        calls[1] += 1
        return real_sha(data)

    monkeypatch.setattr(primitives, "_hmac_digest", counting_hmac)
    monkeypatch.setattr(primitives, "_sha256", counting_sha)
    return lambda: calls[0] + calls[1] // 2


def test_a_forged_dh_step_costs_at_most_max_skip_chain_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alice, bob, rng = make_pair(b"forge")
    bob.decrypt(alice.encrypt(b"a", rng))
    for _ in range(5):
        alice.encrypt(b"unsent", rng)  # bob's receiving chain will have keys to skip
    forged = _forge(alice, rng, pn=0, n=1000)
    count = _count_hmacs(monkeypatch)
    _unchanged(bob, forged, AuthenticationFailed)
    assert 1000 <= count() <= 1000 + 8  # the walk, the root KDF, the message key: no more


def test_old_and_new_chain_skips_count_together_and_are_refused_before_any_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alice, bob, rng = make_pair(b"forge2")
    bob.decrypt(alice.encrypt(b"a", rng))
    forged = _forge(alice, rng, pn=1000, n=1000)  # before: ~4,000 HMACs, then a bad tag
    count = _count_hmacs(monkeypatch)
    _unchanged(bob, forged, TooManySkipped)
    assert count() == 0
    forged = _forge(alice, rng, pn=600, n=410)  # 598 on the old chain + 410
    _unchanged(bob, forged, TooManySkipped)


def test_a_genuine_dh_step_still_keeps_the_old_and_new_chain_keys() -> None:
    alice, bob, rng = make_pair(b"forge3")
    bob.decrypt(alice.encrypt(b"a", rng))
    late_old = [alice.encrypt(b"old %d" % i, rng) for i in range(3)]
    alice.decrypt(bob.encrypt(b"turn", rng))
    late_new = alice.encrypt(b"new 0", rng)
    assert bob.decrypt(alice.encrypt(b"new 1", rng)) == b"new 1"
    assert bob.skipped_count == 4
    assert [bob.decrypt(m) for m in late_old] == [b"old 0", b"old 1", b"old 2"]
    assert bob.decrypt(late_new) == b"new 0"


# --- replay id -----------------------------------------------------------------------------


def test_the_replay_id_of_an_initial_message_is_the_digest_of_its_prefix() -> None:
    rng = DeterministicRng(b"replay")
    alice_dev, bob_dev = make_device("alice", 1, rng), make_device("bob", 2, rng, last_resort=True)
    from crypto.pqxdh import accept_session, initiate_session

    alice = initiate_session(alice_dev.local, bob_dev.bundle(one_time=False), rng=rng)
    first, second = alice.encrypt(b"1", rng), alice.encrypt(b"2", rng)
    accepted = accept_session(bob_dev.local, bob_dev.secrets(), first)
    assert accepted.consumed.one_time_prekey_id is None
    assert accepted.consumed.kem_prekey_id is None  # the last-resort KEM key: replayable
    decoded = [decode_message(first), decode_message(second)]
    assert all(isinstance(m, InitialMessage) for m in decoded)
    ids = {initial_digest(m.prefix) for m in decoded if isinstance(m, InitialMessage)}
    assert ids == {accepted.session.initial_digest} == {alice.initial_digest}
    # A replay is the same bytes: the same id, whatever the relay does.
    again = accept_session(bob_dev.local, bob_dev.secrets(), first)
    assert again.session.initial_digest == accepted.session.initial_digest
