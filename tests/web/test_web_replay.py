"""A replayed PQXDH initial message that consumed no one-time key is refused by the browser
client (``protocol-client.md`` §5 "Replayed initial messages"): its replay id is kept in the
seen set, so even after the session it started is gone, the same bytes delivered again under
a new envelope id do not start a second session. Two engines in one Chromium page (the test
kit), a real relay that allows one bundle claim per requester and hour.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.web.support import RelayProc, kit_call, kit_on, unique


@pytest.fixture(scope="module")
def stingy_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProc]:
    r = RelayProc(
        tmp_path_factory.mktemp("relay") / "vox-data",
        env={"VOX_LIMITS__PREKEY_CLAIMS_PER_HOUR_PER_REQUESTER": "1"},
    )
    r.start()
    try:
        yield r
    finally:
        r.stop()


def test_an_initial_message_on_the_last_resort_key_cannot_start_a_second_session(
    context: Any, stingy_relay: RelayProc, tmp_path: Path
) -> None:
    page = kit_on(context, stingy_relay.url)
    kit_call(page, "engineRegister", unique("bob"), 1_800_000_000_000)
    alice = unique("alice")
    entries = kit_call(page, "lastResortReplay", alice, "only once")
    assert entries.count("only once") == 1
    assert entries[-1] == f"could not decrypt a message from {alice} (ReplayedInitialMessage)"
    assert kit_call(page, "engineInspect")["seen"] >= 2  # the envelope and the replay id


DAY = 86400_000
T0 = 1_800_000_000_000
T1 = T0 + 7 * DAY + 3600_000  # a week: signed prekey 2 replaces 1, which is kept (grace)


def guarded_then_rotated(context: Any, relay: RelayProc, old_name: bool) -> tuple[Any, Any]:
    """bob's engine (registered at T0) holds the replay id of a last-resort initial message
    (with ``old_name`` renamed to ``pqxdh:<hex>``), then rotates at T1 (keys 1 and 2 held).
    Returns the page and bob's replay ids before the rotation."""
    page = kit_on(context, relay.url)
    kit_call(page, "engineRegister", unique("bob"), T0)
    entries = kit_call(page, "lastResortReplay", unique("alice"), "only once")
    assert entries[-1].endswith("(ReplayedInitialMessage)")
    guards = kit_call(page, "engineGuards", old_name, None)
    kit_call(page, "setClock", T1)
    assert kit_call(page, "engineMaintain")["rotated"] is True
    assert kit_call(page, "engineInspect")["signed"] == [1, 2]
    assert kit_call(page, "engineGuards", False, None) == guards  # key 1 (T0) is still held
    return page, guards


def test_the_replay_id_is_forgotten_with_the_signed_prekey_it_names(
    context: Any, stingy_relay: RelayProc
) -> None:
    # Before, every `pqxdh:` replay id stayed in the seen set forever. Now it goes when the
    # signed prekey it names is deleted (a replay then fails: the key is gone).
    page, guards = guarded_then_rotated(context, stingy_relay, old_name=False)
    assert len(guards) == 1
    kit_call(page, "setClock", T1 + 14 * DAY + 60_000)  # key 1 is deleted, and its guard
    kit_call(page, "engineMaintain")
    held = kit_call(page, "engineInspect")
    assert 1 not in held["signed"]
    assert held["replayGuards"] == 0


def test_a_replay_id_of_the_old_name_goes_once_older_than_every_signed_prekey_held(
    context: Any, stingy_relay: RelayProc
) -> None:
    # Replay ids written before the signed prekey id was part of their name (`pqxdh:<hex>`)
    # used to stay forever. Now one goes once it was written more than a day before every
    # signed prekey still held was made (its own key is gone then: a replay fails anyway);
    # one written later than that stays.
    page, ((name, _),) = guarded_then_rotated(context, stingy_relay, old_name=True)
    assert name.count(":") == 1  # pqxdh:<hex>, written at T0
    kit_call(page, "setClock", T1 + 14 * DAY + 60_000)  # key 1 goes; key 2 (T1) is the oldest
    recent = ["ab" * 32, T1 - DAY + 60_000]  # written within the day's margin before key 2
    kit_call(page, "engineGuards", False, recent)
    kit_call(page, "engineMaintain")
    assert kit_call(page, "engineInspect")["signed"][0] == 2  # (and key 3, rotated now)
    assert kit_call(page, "engineGuards", False, None) == [["pqxdh:" + "ab" * 32, recent[1]]]
