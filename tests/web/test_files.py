"""Files between the browser and `vox`: encrypted and padded in the browser, uploaded with
progress, decrypted by Python byte for byte; an image from Python shown inline after
decryption in the browser; a file deleted for everyone by its sender leaves the relay."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

from tests.web.support import (
    RelayProc,
    Vox,
    act,
    open_app,
    open_chat,
    register_in_browser,
    stored_blobs,
    unique,
    wait_blob_gone,
)


def tiny_png(width: int = 24, height: int = 16) -> bytes:
    """A valid RGB PNG (red-to-blue gradient), made with the standard library."""
    rows = b"".join(
        b"\x00"
        + b"".join(bytes((255 * x // width, 64, 255 - 255 * x // width)) for x in range(width))
        for _ in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def test_files_both_ways_with_an_inline_image(
    context: Any, relay: RelayProc, tmp_path: Path
) -> None:
    alice, bob = unique("alice"), unique("bob")
    vox = Vox(tmp_path / "bob", relay, bob).register()
    page = open_app(context, relay)
    register_in_browser(page, alice)
    open_chat(page, bob)
    # Browser → Python: 200 KiB of non-repeating bytes (several 64 KiB chunks, padded).
    data = b"".join(i.to_bytes(4, "big") for i in range(50_000)) + b"end"
    page.get_by_test_id("attach-file").set_input_files(
        files=[{"name": "report.bin", "mimeType": "application/octet-stream", "buffer": data}]
    )
    page.wait_for_selector('[data-testid="message"][data-state="sent"] [data-testid="attachment"]')
    got = vox.receive_until(lambda g: any(m.get("attachment") for m in g))
    att = next(m["attachment"] for m in got if m.get("attachment"))
    assert att["name"] == "report.bin" and att["size"] == len(data)
    assert Path(att["path"]).read_bytes() == data
    # Python → browser: an image, decrypted and shown inline.
    png = tmp_path / "picture.png"
    png.write_bytes(tiny_png())
    vox.run("send-file", alice, str(png))
    image = page.locator(
        f'[data-testid="message"][data-from="{bob}"] [data-testid="attachment-image"]'
    )
    image.wait_for()
    page.wait_for_function(
        "() => { const i = document.querySelector('[data-testid=attachment-image]');"
        " return i && i.complete && i.naturalWidth === 24; }"
    )
    assert image.get_attribute("src", timeout=5000).startswith("blob:")
    # The download button hands out the decrypted bytes.
    with page.expect_download() as info:
        page.locator(
            f'[data-testid="message"][data-from="{bob}"] [data-testid="attachment-download"]'
        ).click()
    saved = tmp_path / "downloaded.png"
    info.value.save_as(saved)
    assert saved.read_bytes() == png.read_bytes()


def test_a_file_deleted_for_everyone_is_deleted_on_the_relay(
    context: Any, relay: RelayProc, tmp_path: Path
) -> None:
    """The sender's browser deletes its file message for everyone: the DELETE content goes
    to the peer and the blob leaves the relay at once (``DELETE /v1/attachments/{id}``,
    protocol-ws §9.2) — it used to stay until it expired (30 days)."""
    alice, bob = unique("alice"), unique("bob")
    vox = Vox(tmp_path / "bob", relay, bob).register()
    page = open_app(context, relay)
    register_in_browser(page, alice)
    open_chat(page, bob)
    before = stored_blobs(relay)
    page.get_by_test_id("attach-file").set_input_files(
        files=[{"name": "plan.bin", "mimeType": "application/octet-stream", "buffer": b"p" * 5000}]
    )
    sent = page.locator(
        '[data-testid="message"][data-state="sent"]', has=page.get_by_test_id("attachment")
    )
    sent.wait_for()
    mid = str(sent.get_attribute("data-message-id"))
    vox.receive_until(lambda g: any(m.get("attachment") for m in g))
    [blob] = stored_blobs(relay) - before

    act(page, mid, "action-delete-everyone")
    vox.receive_until(
        lambda g: any(e.get("kind") == "delete" and str(e.get("target")).lower() == mid for e in g)
    )
    wait_blob_gone(page, relay, blob)
