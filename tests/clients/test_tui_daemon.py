"""`vox chat` attached to a running `vox daemon` (:class:`DaemonBackend`) is the same window as
with the profile opened directly: it shows `offline` / `back online` when the daemon's relay
connection drops and returns, `/save` writes under the profile's `downloads`, and the message
commands work over JSON-RPC. A real relay process, a real daemon socket, Textual's pilot."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Static

from clients.daemon import Daemon, socket_path
from clients.sdk import VoxClient
from clients.sdk.errors import ClientError
from clients.tui import ChatApp
from clients.tui.daemon_backend import DaemonBackend
from clients.tui.rows import dom_id
from tests.clients.kit import RelayProcess
from tests.clients.test_tui import shown, status, type_line, until


async def test_the_attached_tui_shows_offline_saves_to_downloads_and_reacts(
    tmp_path: Path,
) -> None:
    proc = RelayProcess(tmp_path / "relay", tmp_path / "relay.log")
    await proc.start()
    home = tmp_path / "alice"
    alice = await VoxClient.register(home, proc.base_url, "alice")
    bob = await VoxClient.register(tmp_path / "bob", proc.base_url, "bob")
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"minutes\n" * 500)
    try:
        daemon = Daemon(alice, socket_path(home))
        await daemon.start()
        running = True
        try:
            await alice.connect()
            backend = await DaemonBackend.connect_to(socket_path(home))
            try:
                assert backend.home == home and backend.device_id == alice.device_id
                app = ChatApp(backend, open_conversation="bob")
                async with app.run_test(size=(110, 26)) as pilot:
                    sent = await bob.send_file("alice", notes)
                    await until(pilot, lambda: shown(app, "bob: 📎 notes.txt (3.9 KiB)"))
                    await type_line(pilot, "/save")
                    saved = home / "downloads" / "notes.txt"
                    await until(pilot, lambda: saved.is_file())
                    assert saved.read_bytes() == notes.read_bytes()
                    await type_line(pilot, f"/react {sent.id[:6]} 🎉")
                    row = app.query_one(f"#{dom_id(sent.id)}", Static)
                    await until(pilot, lambda: str(row.content).endswith("🎉"))

                    proc.stop()
                    await until(pilot, lambda: status(app).startswith("offline"), within=60)
                    await proc.start()
                    await until(pilot, lambda: status(app) == "back online", within=90)
                    await bob.send_text("alice", "after the drop")
                    await until(pilot, lambda: shown(app, "after the drop"), within=60)

                    # The daemon goes away: said once, not "offline" forever.
                    await daemon.close()
                    running = False
                    await until(pilot, lambda: "the vox daemon stopped" in status(app))
                    await pilot.pause(1.5)  # several connection polls later
                    assert status(app).startswith("disconnected: the vox daemon stopped")
                    with pytest.raises(ClientError, match="the vox daemon closed the connection"):
                        await backend.api.status()  # an SDK error, at once (no OSError, no hang)
            finally:
                await backend.close()
        finally:
            if running:
                await daemon.close()
    finally:
        await alice.close()
        await bob.close()
        proc.stop()
