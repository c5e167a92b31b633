"""A message deleted for me is remembered: a copy of the same message that arrives again later — the
sender's resend under a new client id, a history transcript, a redelivery — is not stored
again (``clients/web/src/core/messageops.ts``: a ``gone:<id>`` tombstone in the encrypted
store). Two engines in one Chromium page (the test kit) through a real relay; the receiver is
reloaded from its store between the delete and the second copy.
"""

from __future__ import annotations

from typing import Any

from tests.web.support import RelayProc, kit_call, kit_on, unique


def test_a_message_deleted_for_me_stays_deleted_when_a_copy_arrives_again(
    context: Any, relay: RelayProc
) -> None:
    page = kit_on(context, relay.url)
    kit_call(page, "engineRegister", unique("bob"), 1_800_000_000_000)
    alice = unique("alice")
    entries = kit_call(page, "deleteForMeRedelivered", alice, "delete me here", "after it")
    assert entries == ["after it"], entries
