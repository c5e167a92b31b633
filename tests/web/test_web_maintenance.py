"""The browser client's upkeep, in Chromium: skipped message keys are bounded and expire like
the Python SDK's (``protocol-crypto.md`` §6.6), and the engine's maintenance round — against a
real relay, with the clock injected through the test kit — replenishes one-time prekeys,
rotates the signed prekey and the last-resort ML-KEM prekey weekly, deletes replaced ones
after their 14-day grace period, and forgets processed envelope ids the relay can no longer
redeliver (``protocol-client.md`` §3 and §5).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.web.support import TIMEOUT_MS, RelayProc, Vox, kit_call, kit_on, kit_page, unique

DAY = 86400
LAST_RESORT = 0x8000_0000
LOW_THRESHOLD = 60  # above a fresh device's 50 keys: the first maintenance round refills


@pytest.fixture(scope="module")
def kit(browser: Any) -> Iterator[Any]:
    with kit_page(browser) as page:
        yield page


# --- skipped message keys -------------------------------------------------------------------

T0 = 1_700_000_000


def test_a_skipped_key_opens_its_message_within_30_days_and_not_after(kit: Any) -> None:
    got = kit_call(kit, "skippedExpiry", T0, T0 + 29 * DAY, T0 + 31 * DAY)
    assert got["afterM2"] == 2  # m0 and m1 skipped
    assert got["m1"] == "m1"  # 29 days late: still opens
    assert got["afterM1"] == 1
    # 31 days after it was skipped, m0's key no longer opens it; the failed decrypt
    # changed nothing, and the sweep deletes the key.
    assert got["m0"] == "DuplicateMessage"
    assert got["stateUnchanged"] == 1
    assert (got["swept"], got["afterSweep"]) == (1, 0)


def test_a_later_decrypt_deletes_expired_skipped_keys(kit: Any) -> None:
    # m1 read 31 days after m2: its own key has expired, and the commit of... nothing (it
    # fails); the sweep at that time leaves no key.
    got = kit_call(kit, "skippedExpiry", T0, T0 + 31 * DAY, T0 + 31 * DAY)
    assert got["m1"] == "DuplicateMessage"
    assert got["afterSweep"] == 0


def test_one_dh_step_may_skip_at_most_1000_keys_over_both_chains(kit: Any) -> None:
    # 599 unread on the old chain + 500 on the new one: 1099 > max_skip (each alone is below).
    assert kit_call(kit, "combinedSkipBound", 600, 500) == "TooManySkipped"
    assert kit_call(kit, "combinedSkipBound", 300, 500) == "accepted"


def test_sender_key_skipped_keys_expire_after_30_days(kit: Any) -> None:
    assert kit_call(kit, "senderKeyExpiry", T0, T0 + 29 * DAY) == {
        "skipped": 1,
        "late": "accepted",
        "afterSweep": 1,
    }
    assert kit_call(kit, "senderKeyExpiry", T0, T0 + 31 * DAY) == {
        "skipped": 1,
        "late": "DuplicateMessage",
        "afterSweep": 0,
    }


# --- the maintenance round against a real relay ------------------------------------------------


@pytest.fixture(scope="module")
def low_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProc]:
    """A relay whose low-stock threshold (60) is above a new device's 50 one-time keys."""
    r = RelayProc(
        tmp_path_factory.mktemp("relay") / "vox-data",
        env={"VOX_LIMITS__PREKEY_LOW_THRESHOLD": str(LOW_THRESHOLD)},
    )
    r.start()
    try:
        yield r
    finally:
        r.stop()


def _engine(context: Any, relay: RelayProc, user: str, clock_ms: int) -> Any:
    page = kit_on(context, relay.url)
    kit_call(page, "engineRegister", user, clock_ms)
    return page


def test_maintenance_rotates_prekeys_weekly_and_deletes_replaced_ones_after_14_days(
    context: Any, low_relay: RelayProc, tmp_path: Path
) -> None:
    user = unique("rot")
    t0 = 1_800_000_000_000  # ms; registration (and the first round, on connect)
    page = _engine(context, low_relay, user, t0)
    held = kit_call(page, "engineInspect")
    assert (held["signed"], held["lastResort"]) == ([1], [LAST_RESORT + 1])
    assert kit_call(page, "engineServed", user) == {"signed": 1, "lastResort": LAST_RESORT + 1}

    kit_call(page, "setClock", t0 + 6 * DAY * 1000)
    assert kit_call(page, "engineMaintain")["rotated"] is False

    # A week old: both keys are replaced together; the old ones stay (grace period).
    t1 = t0 + 7 * DAY * 1000 + 3600_000
    kit_call(page, "setClock", t1)
    assert kit_call(page, "engineMaintain")["rotated"] is True
    held = kit_call(page, "engineInspect")
    assert held["signed"] == [1, 2]
    assert held["lastResort"] == [LAST_RESORT + 1, LAST_RESORT + 2]
    assert held["unpublished"] is False
    assert kit_call(page, "engineServed", user) == {"signed": 2, "lastResort": LAST_RESORT + 2}

    # A `vox` user starts a session on the rotated keys: the browser decrypts it.
    bob = Vox(tmp_path / "bob", low_relay, unique("bob")).register()
    bob.send(user, "after rotation")
    page.wait_for_function(
        "(u) => window.voxTestkit.engineTexts(u).includes('after rotation')",
        arg=bob.username,
        timeout=TIMEOUT_MS,
    )

    # 13 days after key 2 replaced key 1, key 1 is still held ...
    kit_call(page, "setClock", t1 + 13 * DAY * 1000)
    assert kit_call(page, "engineMaintain")["rotated"] is True  # key 2 is a week old: key 3
    held = kit_call(page, "engineInspect")
    assert held["signed"] == [1, 2, 3]
    # ... and 14 days after, it is deleted (key 2 stays: its successor is new).
    kit_call(page, "setClock", t1 + 14 * DAY * 1000 + 60_000)
    kit_call(page, "engineMaintain")
    held = kit_call(page, "engineInspect")
    assert held["signed"] == [2, 3]
    assert held["lastResort"] == [LAST_RESORT + 2, LAST_RESORT + 3]


def test_maintenance_refills_one_time_prekeys_when_the_relay_stock_is_low(
    context: Any, low_relay: RelayProc
) -> None:
    user = unique("otk")
    page = _engine(context, low_relay, user, 1_800_000_000_000)
    # The round run on connect saw 50 <= 60 and uploaded 50 more (up to twice a batch).
    page.wait_for_function(
        "async () => { const c = await window.voxTestkit.engineCount();"
        " return c.one_time_prekeys === 100 && c.one_time_pq_prekeys === 100; }",
        timeout=TIMEOUT_MS,
    )
    assert kit_call(page, "engineMaintain")["uploaded"] == 0  # 100 > 60: nothing to do
    held = kit_call(page, "engineInspect")
    assert (held["oneTime"], held["oneTimeKem"]) == (100, 100)


def test_processed_envelope_ids_are_forgotten_after_the_relays_envelope_lifetime(
    context: Any, low_relay: RelayProc, tmp_path: Path
) -> None:
    user = unique("seen")
    t0 = 1_800_000_000_000
    page = _engine(context, low_relay, user, t0)
    bob = Vox(tmp_path / "bob", low_relay, unique("bob")).register()
    bob.send(user, "remember me")
    page.wait_for_function(
        "(u) => window.voxTestkit.engineTexts(u).includes('remember me')",
        arg=bob.username,
        timeout=TIMEOUT_MS,
    )
    seen = kit_call(page, "engineInspect")["seen"]
    assert seen >= 1
    ttl_ms = 30 * DAY * 1000  # the relay's default envelope_ttl_seconds
    kit_call(page, "setClock", t0 + ttl_ms)  # the relay could still redeliver: kept
    assert kit_call(page, "engineMaintain")["forgotten"] == 0
    kit_call(page, "setClock", t0 + ttl_ms + DAY * 1000 + 1000)  # past the TTL and a day's margin
    assert kit_call(page, "engineMaintain")["forgotten"] == seen
    assert kit_call(page, "engineInspect")["seen"] == 0
    # The message itself is kept.
    assert "remember me" in kit_call(page, "engineTexts", bob.username)
