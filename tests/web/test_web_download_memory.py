"""A downloaded attachment is not held whole in the page's memory (``Engine.openFile``): its
plaintext, decrypted chunk by chunk as it arrives, moves into a ``Blob`` under construction every
``BLOB_FOLD_BYTES`` (1 MiB) — the browser's blob storage, not the page's heap, holds the file —
and that ``Blob`` is handed out only once the whole file verified. A 3 MiB file from `vox`,
downloaded in Chromium with the page's ``Blob`` constructor counting the bytes it is given
from the page's own arrays at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.web.support import RelayProc, Vox, open_chat, register_in_browser, unique

FOLD = 1 << 20  # engine.ts BLOB_FOLD_BYTES
CHUNK = 65536

# Before the app loads: the most bytes of ArrayBuffers / typed arrays any one ``new Blob(...)``
# was given (what the page held in its own memory to make it).
COUNT_BLOB_BYTES = """(() => {
  const Original = window.Blob;
  window.voxBlobMost = 0;
  window.Blob = class extends Original {
    constructor(parts, options) {
      let n = 0;
      for (const p of parts ?? []) {
        if (ArrayBuffer.isView(p) || p instanceof ArrayBuffer) n += p.byteLength;
      }
      window.voxBlobMost = Math.max(window.voxBlobMost, n);
      super(parts, options);
    }
  };
})()"""


def test_a_downloaded_file_is_never_held_whole_in_the_pages_memory(
    context: Any, relay: RelayProc, tmp_path: Path
) -> None:
    alice, bob = unique("alice"), unique("bob")
    vox = Vox(tmp_path / "bob", relay, bob).register()
    context.add_init_script(COUNT_BLOB_BYTES)
    page = context.new_page()
    page.goto(relay.url + "/")
    register_in_browser(page, alice)
    open_chat(page, bob)
    data = b"".join(i.to_bytes(4, "big") for i in range(3 * FOLD // 4)) + b"tail"
    sent = tmp_path / "big.bin"
    sent.write_bytes(data)
    vox.run("send-file", alice, str(sent))
    page.get_by_test_id(f"chat-item-{bob}").click()
    download = page.locator(
        f'[data-testid="message"][data-from="{bob}"] [data-testid="attachment-download"]'
    )
    with page.expect_download() as info:
        download.click()
    saved = tmp_path / "downloaded.bin"
    info.value.save_as(saved)
    assert saved.read_bytes() == data
    most = page.evaluate("window.voxBlobMost")
    assert 0 < most <= FOLD + CHUNK, most  # the old code made one Blob of all 3 MiB
