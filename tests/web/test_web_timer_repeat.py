"""A disappearing-timer change that arrives again changes nothing in the browser client
(``clients/web/src/core/messageops.ts``, protocol-client §2 "Operations"): a repeat of an older
change does not set the timer back over a newer one, and a change's row deleted for me stays
deleted (a ``gone:<id>`` tombstone in the encrypted store, read back after a reload). Two
engines in one Chromium page (the test kit) through a real relay; the repeats are the same
TIMER contents sent again under new client ids, as a resend or a history transcript arrives.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.web.support import RelayProc, kit_call, kit_on, unique


@pytest.mark.parametrize("forget", [False, True], ids=["older-repeat", "row-deleted-for-me"])
def test_a_timer_change_that_comes_again_changes_nothing(
    context: Any, relay: RelayProc, forget: bool
) -> None:
    # Without forget: a repeat of an older change used to set the timer back (old bundle:
    # 600, not 60). With forget (the first change's row deleted for me, the engine reloaded):
    # the row stays deleted (the old bundle could not delete it: "no message … in this
    # conversation").
    page = kit_on(context, relay.url)
    kit_call(page, "engineRegister", unique("bob"), 1_800_000_000_000)
    got = kit_call(page, "timerRepeated", unique("alice"), forget, "after the repeats")
    assert got["rows"] == (got["sent"][1:] if forget else got["sent"])  # each shown once
    assert got["timer"] == 60  # the newest change
