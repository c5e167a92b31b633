"""Envelope ids grow with time (docs/protocol-ws.md §3.1): the first 12 of their 32 hex
characters are the ``ts`` they were accepted with, so the relay's indexes keyed by them
(sends, payloads, the queue's payload index) are appended to instead of written all over."""

from __future__ import annotations

import re
from pathlib import Path

from server.delivery.writer import _envelope_ids
from tests.server.ws_kit import open_ws, payload, world

HEX_ID = re.compile(r"[0-9a-f]{32}")


def test_a_batchs_ids_share_its_time_and_differ_in_their_random_part() -> None:
    ids = _envelope_ids(1_795_738_026_286, 500)
    assert all(HEX_ID.fullmatch(i) for i in ids)
    assert {i[:12] for i in ids} == {"01a21a53c12e"}
    assert len(set(ids)) == 500
    assert _envelope_ids(1_795_738_026_286, 0) == []


async def test_accepted_envelope_ids_begin_with_their_ts_and_sort_in_acceptance_order(
    tmp_path: Path,
) -> None:
    async with world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        alice, bob = w["alice", 1], w["bob", 1]
        answers = []
        async with open_ws(w.relay, alice) as a, open_ws(w.relay, bob) as b:
            for n in range(3):  # one batch each: every send waits for the previous answer
                await a.send_message(f"m{n}", [(payload(), [bob])])
                answers.append(await a.expect("accepted"))
                assert (await b.expect("deliver"))["envelope"] == answers[-1]["envelope"]
        envelopes = [answer["envelope"] for answer in answers]
        assert all(HEX_ID.fullmatch(e) for e in envelopes)
        assert [int(e[:12], 16) for e in envelopes] == [answer["ts"] for answer in answers]
        assert envelopes == sorted(envelopes)
