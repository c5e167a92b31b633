"""A file sent from the browser goes up as a resumable upload (docs/protocol-ws.md §9.1):
encrypted chunk by chunk and uploaded window by window (never more than the relay's chunk size
per request), resumed from the relay's offset after connections dropped mid-way — once before a
chunk reached the relay, once after the relay stored it but before its answer came back — and
received intact by a Python ``vox`` user."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.web.support import (
    RelayProc,
    Vox,
    kit_call,
    kit_page,
    open_app,
    open_chat,
    register_in_browser,
    unique,
    wait_online,
)

CHUNK_BYTES = 65536  # the relay's max_upload_chunk_bytes in this test (its minimum)


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProc]:
    """A relay process whose upload chunks are the smallest allowed."""
    (tmp_path / "relay").mkdir()
    proc = RelayProc(
        tmp_path / "relay" / "vox-data",
        env={"VOX_LIMITS__MAX_UPLOAD_CHUNK_BYTES": str(CHUNK_BYTES)},
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def ctx(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    context.set_default_timeout(120_000)
    try:
        yield context
    finally:
        context.close()


def test_a_multi_chunk_upload_resumes_after_drops_and_arrives_intact(
    relay: RelayProc, ctx: Any, tmp_path: Path
) -> None:
    alice, bob = unique("alice"), unique("bob")
    vox = Vox(tmp_path / "bob", relay, bob).register()
    patches: list[tuple[int, int, str]] = []  # (Upload-Offset, length, what happened)
    others: list[str] = []

    def uploads(route: Any) -> None:
        req = route.request
        if req.method != "PATCH":
            others.append(f"{req.method} {req.url.rsplit('/v1/attachments/uploads', 1)[1]}")
            route.continue_()
            return
        offset, length = int(req.headers["upload-offset"]), len(req.post_data_buffer)
        if len(patches) == 2:  # the 3rd chunk: the connection drops before the relay
            patches.append((offset, length, "dropped"))
            route.abort("connectionreset")
        elif len(patches) == 4:  # the 5th: the relay stores it, its answer is lost
            stored = route.fetch()
            patches.append((offset, length, f"stored {stored.status}, answer lost"))
            route.abort("connectionreset")
        else:
            patches.append((offset, length, "ok"))
            route.continue_()

    ctx.route("**/v1/attachments/uploads**", uploads)
    one_shot: list[str] = []
    ctx.on(
        "request",
        lambda r: (
            one_shot.append(r.url)
            if r.method == "POST" and r.url.endswith("/v1/attachments")
            else None
        ),
    )
    page = open_app(ctx, relay)
    register_in_browser(page, alice)
    open_chat(page, bob)
    data = b"".join(i.to_bytes(4, "big") for i in range(150_000)) + b"tail"  # ~586 KiB
    page.get_by_test_id("attach-file").set_input_files(
        files=[{"name": "big.bin", "mimeType": "application/octet-stream", "buffer": data}]
    )
    page.wait_for_selector('[data-testid="message"][data-state="sent"] [data-testid="attachment"]')
    got = vox.receive_until(lambda g: any(m.get("attachment") for m in g))
    att = next(m["attachment"] for m in got if m.get("attachment"))
    assert att["name"] == "big.bin" and att["size"] == len(data)
    assert Path(att["path"]).read_bytes() == data

    # Chunk by chunk, never more than the relay's chunk size per request.
    assert len(patches) >= 8
    assert all(0 < length <= CHUNK_BYTES for _, length, _ in patches)
    assert one_shot == []  # not the one-shot upload
    # The dropped chunk was sent again from the same offset...
    assert patches[2][2] == "dropped" and patches[3][0] == patches[2][0]
    # ...the stored one was not: the next chunk starts where the relay's offset was.
    assert patches[4][2] == "stored 200, answer lost"
    assert patches[5][0] == patches[4][0] + patches[4][1]
    # In order, without gaps, from 0 to the end (repeats only where a chunk was lost).
    sent = [(o, n) for o, n, what in patches if what != "dropped"]
    assert [o for o, _ in sent] == [sum(n for _, n in sent[:i]) for i in range(len(sent))]
    # Resumed by asking the relay where it stands (once per drop), then finished.
    assert others[0] == "POST " and others[-1].endswith("/finish")
    assert sum(1 for o in others if o.startswith("GET ")) == 2


WINDOW = 1024 * 1024  # src/core/upload.ts: the most ciphertext held and sent per request


def open_uploads(relay: RelayProc) -> list[str]:
    """Ids of the relay's unfinished uploads (read from its SQLite file)."""
    with sqlite3.connect(relay.data_dir / "relay.sqlite3") as db:
        rows = db.execute("SELECT id FROM attachment_uploads WHERE attachment_id IS NULL")
        return [str(r[0]) for r in rows]


def test_an_upload_left_by_a_closed_tab_is_abandoned_by_the_next(
    relay: RelayProc, ctx: Any, tmp_path: Path
) -> None:
    """A tab closed in the middle of an upload leaves it on the relay (holding a slot of
    max_concurrent_uploads_per_device and its reserved bytes); the next upload from this
    browser deletes it first, then goes through."""
    alice, bob = unique("alice"), unique("bob")
    vox = Vox(tmp_path / "bob", relay, bob).register()
    seen: list[str] = []
    hang = {"on": True}

    def uploads(route: Any) -> None:
        req = route.request
        seen.append(f"{req.method} {req.url.rsplit('/v1/attachments/uploads', 1)[1]}")
        if hang["on"] and req.method == "PATCH" and req.headers["upload-offset"] != "0":
            return  # the second chunk never gets an answer: the tab is closed meanwhile
        route.continue_()

    ctx.route("**/v1/attachments/uploads**", uploads)
    page = open_app(ctx, relay)
    register_in_browser(page, alice)
    open_chat(page, bob)
    data = bytes(range(256)) * 1000
    page.get_by_test_id("attach-file").set_input_files(
        files=[{"name": "first.bin", "mimeType": "application/octet-stream", "buffer": data}]
    )
    deadline = time.monotonic() + 60
    while sum(1 for s in seen if s.startswith("PATCH")) < 2:  # the 2nd hangs
        assert time.monotonic() < deadline, seen
        page.wait_for_timeout(100)
    [left] = open_uploads(relay)
    page.close()
    hang["on"] = False
    page = open_app(ctx, relay)
    wait_online(page)
    page.get_by_test_id(f"chat-item-{bob}").click()
    page.get_by_test_id("attach-file").set_input_files(
        files=[{"name": "second.bin", "mimeType": "application/octet-stream", "buffer": data}]
    )
    page.wait_for_selector('[data-testid="message"][data-state="sent"] [data-testid="attachment"]')
    # The leftover was deleted before the new upload was created.
    after = seen[seen.index(f"DELETE /{left}") :]
    assert after[1] == "POST "
    assert open_uploads(relay) == []
    got = vox.receive_until(lambda g: any(m.get("attachment") for m in g))
    att = next(m["attachment"] for m in got if m.get("attachment"))
    assert att["name"] == "second.bin" and Path(att["path"]).read_bytes() == data


def test_the_upload_follows_the_relays_offset_and_holds_one_window(browser: Any) -> None:
    """The resume rules against a stand-in relay (through the test kit): a chunk lost on the
    way is resent, a stored one whose answer was lost is not, a 409 moves to the offset it
    names (and on from there), an offset outside the held window ends the upload, and no
    request carries more than one window however large the relay's chunk limit."""
    with kit_page(browser) as kit:
        last = 4 * CHUNK_BYTES  # where the 5th (last, partial) window starts
        got = kit_call(
            kit,
            "uploadScenario",
            300_000,
            CHUNK_BYTES,
            {"1": "offline", "3": "lost", "5": f"conflict:{last + 1000}"},
        )
        assert got["error"] == "" and got["same"] is True
        calls = got["calls"]
        assert calls[2][0] == calls[1][0]  # lost on the way: sent again
        assert calls[4][0] == calls[3][0] + calls[3][1]  # stored: not sent again
        assert calls[5][0] == last and calls[6][0] == last + 1000  # the 409's offset...
        assert calls[7][0] == last  # ...and the relay's own 409 back to where it is
        assert got["maxBody"] == CHUNK_BYTES
        outside = kit_call(kit, "uploadScenario", 300_000, CHUNK_BYTES, {"2": "conflict:0"})
        assert "outside" in outside["error"] and outside["same"] is False
        assert outside["calls"][-1] == [-1, 0]  # given up: the upload is abandoned at once
        big = kit_call(kit, "uploadScenario", 3 * WINDOW, 8 * WINDOW, {})
        assert big["error"] == "" and big["same"] is True
        assert big["maxBody"] == WINDOW
