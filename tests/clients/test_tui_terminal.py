"""`vox chat` in a real pseudo-terminal: the CLI opens the profile, the TUI draws, Ctrl+Q quits."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from clients.sdk import VoxClient
from tests.server.relay_harness import make_settings, running_relay

VOX = Path(sys.executable).with_name("vox")


def read_until(fd: int, needles: list[bytes], within: float) -> bytes:
    """Read the terminal output until every needle appeared (escape codes stripped of nothing)."""
    out = b""
    deadline = time.monotonic() + within
    while not all(n in out for n in needles):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"terminal never showed {needles}; got {out[-2000:]!r}")
        ready, _, _ = select.select([fd], [], [], min(left, 0.2))
        if ready:
            try:
                out += os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
    return out


async def test_vox_chat_runs_in_a_terminal_notifies_and_quits_cleanly(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, brand={"name": "Termchat"})
    async with running_relay(settings) as relay:
        bob = await VoxClient.register(tmp_path / "bob", relay.base_url, "bob")
        carol = await VoxClient.register(tmp_path / "carol", relay.base_url, "carol")
        dave = await VoxClient.register(tmp_path / "dave", relay.base_url, "dave")
        alice = await VoxClient.register(tmp_path / "alice", relay.base_url, "alice")
        await alice.close()  # release the profile for the subprocess
        await bob.send_text("alice", "ping from bob")
        await bob.close()

        try:
            # A message in a chat that is not open: the bell and a desktop notification that
            # names the sender, never the text.
            home = tmp_path / "alice"
            notification = b"\x1b]777;notify;Vox: carol;new message\x1b\\"
            out = await chat_while(
                home, [], lambda: carol.send_text("alice", "secret"), notification
            )
            assert b"\x1b]9;Vox: carol: new message\x1b\\" in out and b"\x07" in out
            assert b"secret" not in out
            # `vox chat --no-notify`: a new chat in the list, nothing more.
            hello = lambda: dave.send_text("alice", "hello")  # noqa: E731
            out = await chat_while(home, ["--no-notify"], hello, b"dave")
            assert b"]777;" not in out and b"]9;" not in out and b"\x07" not in out
        finally:
            await carol.close()
            await dave.close()
        # The profile was closed: it opens again at once, and Bob's message was stored.
        profile = await VoxClient.open(tmp_path / "alice", lock_timeout=0)
        try:
            assert [m.text for m in profile.history("bob")] == ["ping from bob"]
            assert [m.text for m in profile.history("dave")] == ["hello"]
        finally:
            await profile.close()


async def chat_while(
    home: Path, flags: list[str], action: Callable[[], Awaitable[object]], needle: bytes
) -> bytes:
    """``vox chat bob`` (with ``flags``) in a pseudo-terminal without ``notify-send`` on the
    PATH (desktop notifications go out as OSC 777 / OSC 9 escapes): once Bob's message shows,
    run ``action``; returns what the terminal showed after it, up to ``needle``; Ctrl+Q must
    end it with status 0."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "VOX_HOME": str(home), "PATH": str(VOX.parent)}
    env.pop("VOX_CHAT_NOTIFY", None)
    proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once; we wait in a thread
        [str(VOX), "chat", *flags, "bob"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    try:
        await asyncio.to_thread(read_until, master, [b"Termchat", b"ping", b"from", b"bob"], 30.0)
        await action()
        out = await asyncio.to_thread(read_until, master, [needle], 30.0)
        os.write(master, b"\x11")  # Ctrl+Q
        code = await asyncio.to_thread(proc.wait, 20)
        assert code == 0
        return out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
