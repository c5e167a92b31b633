"""A disappearing-timer change that arrives again changes nothing in the browser client
(``clients/web/src/core/messageops.ts``, protocol-client §2 "Operations"): a repeat of an older
change does not set the timer back over a newer one, and a change's row deleted for me stays
deleted (a ``gone:<id>`` tombstone in the encrypted store, read back after a reload). Two
engines in one Chromium page (the test kit) through a real relay; the repeats are the same
TIMER contents sent again under new client ids, as a resend or a history transcript arrives.
"""

from __future__ import annotations

from typing import Any

from tests.web.support import RelayProc, kit_call, kit_on, unique


def test_a_repeat_of_an_older_timer_change_does_not_set_the_timer_back(
    context: Any, relay: RelayProc
) -> None:
    page = kit_on(context, relay.url)
    kit_call(page, "engineRegister", unique("bob"), 1_800_000_000_000)
    got = kit_call(page, "timerRepeated", unique("alice"), False, "after the repeats")
    assert got["rows"] == got["sent"]  # each change shown once
    assert got["timer"] == 60  # the newest change (the old bundle: 600, set back by a repeat)


def test_a_timer_row_deleted_for_me_stays_deleted_when_its_change_comes_again(
    context: Any, relay: RelayProc
) -> None:
    page = kit_on(context, relay.url)
    kit_call(page, "engineRegister", unique("bob"), 1_800_000_000_000)
    got = kit_call(page, "timerRepeated", unique("alice"), True, "after the repeats")
    assert got["rows"] == got["sent"][1:]  # the first change's row stays deleted
    assert got["timer"] == 60
