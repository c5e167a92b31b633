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


def test_the_replay_id_is_forgotten_with_the_signed_prekey_it_names(
    context: Any, stingy_relay: RelayProc
) -> None:
    # Before, every `pqxdh:` replay id stayed in the seen set forever. Now it goes when the
    # signed prekey it names is deleted (a replay then fails: the key is gone).
    day = 86400_000
    t0 = 1_800_000_000_000
    page = kit_on(context, stingy_relay.url)
    kit_call(page, "engineRegister", unique("bob"), t0)
    entries = kit_call(page, "lastResortReplay", unique("alice"), "only once")
    assert entries[-1].endswith("(ReplayedInitialMessage)")
    assert kit_call(page, "engineInspect")["replayGuards"] == 1

    t1 = t0 + 7 * day + 3600_000  # a week: signed prekey 2 replaces 1, which is kept (grace)
    kit_call(page, "setClock", t1)
    assert kit_call(page, "engineMaintain")["rotated"] is True
    held = kit_call(page, "engineInspect")
    assert (held["signed"], held["replayGuards"]) == ([1, 2], 1)

    kit_call(page, "setClock", t1 + 14 * day + 60_000)  # key 1 is deleted, and its guard
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
    day = 86400_000
    t0 = 1_800_000_000_000
    page = kit_on(context, stingy_relay.url)
    kit_call(page, "engineRegister", unique("bob"), t0)
    entries = kit_call(page, "lastResortReplay", unique("alice"), "only once")
    assert entries[-1].endswith("(ReplayedInitialMessage)")
    (old,) = kit_call(page, "engineGuards", True, None)
    assert old[0].count(":") == 1  # pqxdh:<hex>, written at t0

    t1 = t0 + 7 * day + 3600_000  # a week: signed prekey 2 replaces 1, which is kept (grace)
    kit_call(page, "setClock", t1)
    assert kit_call(page, "engineMaintain")["rotated"] is True
    assert kit_call(page, "engineInspect")["signed"] == [1, 2]
    assert kit_call(page, "engineGuards", False, None) == [old]  # key 1 (t0) is held

    t2 = t1 + 14 * day + 60_000  # key 1 is deleted; key 2 (made at t1) is the oldest held
    kit_call(page, "setClock", t2)
    recent = ["ab" * 32, t1 - day + 60_000]  # written within the day's margin before key 2
    kit_call(page, "engineGuards", False, recent)
    kit_call(page, "engineMaintain")
    assert kit_call(page, "engineInspect")["signed"][0] == 2  # (and key 3, rotated now)
    assert kit_call(page, "engineGuards", False, None) == [["pqxdh:" + "ab" * 32, recent[1]]]
