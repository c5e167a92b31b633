"""``vox daemon`` and the JSON-RPC socket: CLI commands next to a daemon and next to the TUI,
hostile or vanishing socket clients, one daemon per profile."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, Static

from clients.daemon import is_live, serving, socket_path
from clients.daemon import jsonrpc as rpc
from clients.daemon.remote import RemoteClient
from clients.sdk import Event, VoxClient
from clients.tui import ChatApp, SdkBackend
from tests.clients.kit import texts, vox, wait_for
from tests.server.relay_harness import Relay

VOX = str(Path(sys.executable).with_name("vox"))

# Many real `vox` processes: generous on a loaded machine (assert behaviour, not speed).
pytestmark = pytest.mark.timeout(600)


async def start_daemon(home: Path) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOX_")}
    proc = await asyncio.create_subprocess_exec(
        VOX, "--home", str(home), "daemon",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert b"listening on" in line, line
    return proc


async def raw(path: Path, *lines: bytes) -> list[dict[str, Any]]:
    """Send raw lines on a fresh connection; the answers, one per line sent."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    answers = []
    for line in lines:
        writer.write(line + b"\n")
        await writer.drain()
        answers.append(json.loads(await asyncio.wait_for(reader.readline(), 30)))
    writer.close()
    return answers


async def two(relay: Relay, tmp_path: Path) -> tuple[VoxClient, VoxClient, list[Event]]:
    alice = await VoxClient.register(tmp_path / "alice", relay.base_url, "alice")
    bob = await VoxClient.register(tmp_path / "bob", relay.base_url, "bob")
    got: list[Event] = []
    bob.on_event(got.append)
    await bob.connect()
    await alice.verify("bob")
    return alice, bob, got


async def test_cli_commands_talk_to_the_running_daemon_and_a_second_daemon_is_refused(
    relay: Relay, tmp_path: Path
) -> None:
    alice, bob, got = await two(relay, tmp_path)
    home = tmp_path / "alice"
    await alice.close()
    daemon = await start_daemon(home)
    try:
        path = socket_path(home)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        # The profile is held by the daemon: without it these would wait 10 s and fail.
        code, out, err = await vox(home, "send", "bob", "via the daemon")
        assert code == 0, err
        assert len(out.strip()) == 32
        code, out, err = await vox(home, "whoami")
        assert code == 0 and out.startswith("alice device 1"), err
        code, out, err = await vox(home, "status")
        assert code == 0 and "(daemon, connected)" in out and "queued: 0" in out, err
        code, out, err = await vox(home, "group", "create", "pair", "bob")
        assert code == 0, err
        code, out, err = await vox(home, "group", "send", "pair", "to the group")
        assert code == 0, err
        await wait_for(lambda: texts(got, "alice") == ["via the daemon", "to the group"])

        code, _, err = await vox(home, "daemon")  # a second daemon on the same profile
        assert code == 1 and "already running" in err, err
        assert await is_live(path)  # the first one is unharmed
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(daemon.wait(), 60) == 0
        await bob.close()
    assert not socket_path(home).exists()


async def test_malformed_requests_get_json_rpc_errors_and_the_daemon_keeps_serving(
    relay: Relay, tmp_path: Path
) -> None:
    alice, bob, _ = await two(relay, tmp_path)
    path = socket_path(tmp_path / "alice")
    try:
        async with serving(alice, tmp_path / "alice"):
            answers = await raw(
                path,
                b"not json",
                b"[1, 2]",
                b'{"jsonrpc": "1.0", "id": 3, "method": "whoami"}',
                b'{"jsonrpc": "2.0", "id": 4, "method": "no_such_method"}',
                b'{"jsonrpc": "2.0", "id": 5, "method": "send", "params": {"to": 5}}',
                b'{"jsonrpc": "2.0", "id": 6, "method": "send", "params": ["bob", "x"]}',
                b'{"jsonrpc": "2.0", "id": 7, "method": "send", '
                b'"params": {"to": "nosuchuser", "text": "x"}}',
                b'{"jsonrpc": "2.0", "id": 8, "method": "whoami"}',
            )
            codes = [a.get("error", {}).get("code") for a in answers]
            assert codes == [
                rpc.PARSE_ERROR,
                rpc.INVALID_REQUEST,
                rpc.INVALID_REQUEST,
                rpc.METHOD_NOT_FOUND,
                rpc.INVALID_PARAMS,
                rpc.INVALID_PARAMS,
                rpc.CLIENT_ERROR,
                None,
            ]
            assert [a["id"] for a in answers] == [None, None, 3, 4, 5, 6, 7, 8]
            assert answers[6]["error"]["data"]["type"] == "UnknownUser"
            assert answers[7]["result"]["username"] == "alice"
            # A line over the limit: an error, that connection closed, the daemon serving on.
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b"x" * (rpc.MAX_LINE + 10) + b"\n")
            await writer.drain()
            too_big = json.loads(await asyncio.wait_for(reader.readline(), 30))
            assert too_big["error"]["code"] == rpc.INVALID_REQUEST
            assert await asyncio.wait_for(reader.read(), 30) == b""
            writer.close()
            async with await RemoteClient.connect(path) as remote:
                assert (await remote.call("whoami"))["device_id"] == 1
    finally:
        await alice.close()
        await bob.close()


async def test_a_client_that_disconnects_mid_call_leaves_the_call_and_the_daemon_intact(
    relay: Relay, tmp_path: Path
) -> None:
    alice, bob, got = await two(relay, tmp_path)
    path = socket_path(tmp_path / "alice")
    try:
        async with serving(alice, tmp_path / "alice"):
            await alice.connect()  # as `vox daemon` does
            _, writer = await asyncio.open_unix_connection(str(path))
            request = {"jsonrpc": "2.0", "id": 1, "method": "send",
                       "params": {"to": "bob", "text": "sent by a script that died"}}  # fmt: skip
            writer.write(rpc.encode(request))
            await writer.drain()
            writer.transport.abort()  # gone before the answer
            await wait_for(lambda: texts(got, "alice") == ["sent by a script that died"])
            async with await RemoteClient.connect(path) as remote:
                messages: list[dict[str, Any]] = []

                async def listen() -> None:
                    async for event in remote.events():
                        if event["kind"] == "message":
                            messages.append(event)

                listener = asyncio.ensure_future(listen())
                await asyncio.sleep(0.2)  # subscribed
                await bob.send_text("alice", "hello daemon")
                await wait_for(lambda: [m["text"] for m in messages] == ["hello daemon"])
                listener.cancel()
                answer = await remote.call("history", conversation="bob")
                assert [m["text"] for m in answer] == ["sent by a script that died", "hello daemon"]
    finally:
        await alice.close()
        await bob.close()


async def test_cli_commands_work_while_the_tui_is_open(relay: Relay, tmp_path: Path) -> None:
    alice, bob, got = await two(relay, tmp_path)
    home = tmp_path / "alice"
    try:
        async with serving(alice, home):  # what `vox chat` does around the app
            app = ChatApp(SdkBackend(alice), open_conversation="bob")
            async with app.run_test(size=(100, 30)) as pilot:
                await pilot.pause(0.5)
                code, out, err = await vox(home, "send", "bob", "from the cli")
                assert code == 0, err
                code, out, err = await vox(home, "verify", "bob")
                assert code == 0 and "safety number with bob" in out, err
                await bob.send_text("alice", "seen by the TUI")
                await wait_for(lambda: texts(got, "alice") == ["from the cli"])
                for _ in range(200):
                    shown = [str(w.content) for w in app.query(".msg").results(Static)]
                    if any("seen by the TUI" in line for line in shown):
                        break
                    await pilot.pause(0.05)
                else:
                    raise AssertionError("the TUI did not show the message")
    finally:
        await alice.close()
        await bob.close()


async def test_the_tui_attaches_to_a_running_daemon(relay: Relay, tmp_path: Path) -> None:
    from clients.tui.daemon_backend import DaemonBackend

    alice, bob, got = await two(relay, tmp_path)
    home = tmp_path / "alice"
    try:
        await bob.send_text("alice", "before the TUI opened")
        async with serving(alice, home):
            await alice.connect()
            backend = await DaemonBackend.connect_to(socket_path(home))
            try:
                app = ChatApp(backend, open_conversation="bob")
                async with app.run_test(size=(100, 30)) as pilot:

                    def shown(needle: str) -> bool:
                        return any(
                            needle in str(w.content) for w in app.query(".msg").results(Static)
                        )

                    for _ in range(400):
                        if shown("before the TUI opened"):
                            break
                        await pilot.pause(0.05)
                    await bob.send_text("alice", "while it is open")
                    for _ in range(400):
                        if shown("while it is open"):
                            break
                        await pilot.pause(0.05)
                    assert shown("while it is open")
                    app.query_one("#input", Input).value = "typed in the attached TUI"
                    await pilot.press("enter")
                    await wait_for(lambda: texts(got, "alice") == ["typed in the attached TUI"])
            finally:
                await backend.close()
    finally:
        await alice.close()
        await bob.close()


async def test_vox_jsonrpc_serves_stdin_and_stdout_alone_or_through_the_daemon(
    relay: Relay, tmp_path: Path
) -> None:
    alice, bob, got = await two(relay, tmp_path)
    home = tmp_path / "alice"
    await alice.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOX_")}
    requests = b"".join(
        rpc.encode({"jsonrpc": "2.0", "id": n, "method": method, "params": params})
        for n, (method, params) in enumerate(
            [("whoami", {}), ("send", {"to": "bob", "text": "from a bot"}), ("nope", {})], 1
        )
    )

    async def jsonrpc() -> dict[int, dict[str, Any]]:
        proc = await asyncio.create_subprocess_exec(
            VOX, "--home", str(home), "jsonrpc", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(requests), 120)
        assert proc.returncode == 0, err
        answers = [json.loads(line) for line in out.splitlines()]
        return {a["id"]: a for a in answers}

    try:
        answers = await jsonrpc()  # holds the profile itself
        assert answers[1]["result"]["username"] == "alice"
        assert answers[2]["result"]["devices"] >= 1
        assert answers[3]["error"]["code"] == rpc.METHOD_NOT_FOUND
        daemon = await start_daemon(home)
        try:
            answers = await jsonrpc()  # passed through to the daemon
            assert answers[1]["result"]["username"] == "alice" and "result" in answers[2]
        finally:
            daemon.send_signal(signal.SIGTERM)
            await asyncio.wait_for(daemon.wait(), 60)
        await wait_for(lambda: texts(got, "alice") == ["from a bot", "from a bot"])
    finally:
        await bob.close()
