"""``vox account delete``, the passphrase prompt and ``vox passphrase change``, a failed
``register`` leaving nothing behind, ``--version``, and the revoked-device message — real
``vox`` subprocesses against a real relay on loopback."""

from __future__ import annotations

import asyncio
import os
import pty
from pathlib import Path

import pytest

from server.accounts.repository import get_device, revoke_device
from server.clock import Clock
from tests.clients.kit import VOX, assert_clean_error, vox
from tests.server.relay_harness import Relay

pytestmark = pytest.mark.timeout(600)  # chains of real `vox` processes on a loaded machine


async def vox_on_terminal(home: Path, *args: str, answers: list[str]) -> tuple[int, str, bytes]:
    """Run ``vox`` with a pseudo-terminal as stdin, typing each answer after each prompt.

    Returns (exit code, stderr, everything the terminal showed) — to check for echo.
    """
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOX_")}
    proc = await asyncio.create_subprocess_exec(
        VOX,
        "--home",
        str(home),
        *args,
        stdin=slave,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        start_new_session=True,  # no controlling terminal: getpass uses the pty on stdin
    )
    os.close(slave)
    assert proc.stderr is not None
    err = b""
    try:
        for asked, answer in enumerate(answers, start=1):
            while err.count(b": ") < asked:
                chunk = await asyncio.wait_for(proc.stderr.read(256), 60)
                assert chunk, f"vox ended before asking: {err!r}"
                err += chunk
            os.write(master, answer.encode() + b"\n")
        _, more_err = await asyncio.wait_for(proc.communicate(), 60)
        err += more_err
        os.set_blocking(master, False)
        shown = b""
        try:
            while chunk := os.read(master, 4096):
                shown += chunk
        except (BlockingIOError, OSError):
            pass
    finally:
        os.close(master)
    assert proc.returncode is not None
    return proc.returncode, err.decode(), shown


async def test_version_is_printed(tmp_path: Path) -> None:
    code, out, err = await vox(tmp_path / "v", "--version")
    assert code == 0, err
    assert out.startswith("vox ") and out.strip().split()[-1][0].isdigit()
    assert not (tmp_path / "v").exists()


async def test_a_failed_register_leaves_no_profile_directory(relay: Relay, tmp_path: Path) -> None:
    code, _, err = await vox(tmp_path / "x", "register", "xavier", "--server", "http://127.0.0.1:9")
    assert_clean_error(code, err, "cannot reach the relay")
    assert not (tmp_path / "x").exists()
    code, _, err = await vox(tmp_path / "a", "register", "alice", "--server", relay.base_url)
    assert code == 0, err
    code, _, err = await vox(tmp_path / "a2", "register", "alice", "--server", relay.base_url)
    assert_clean_error(code, err, "taken")
    assert not (tmp_path / "a2").exists()
    code, _, err = await vox(tmp_path / "a3", "register", "a1ice", "--server", relay.base_url)
    assert code != 0
    assert not (tmp_path / "a3").exists()


async def test_account_delete_asks_then_deletes_everywhere_and_removes_the_profile(
    relay: Relay, tmp_path: Path
) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for home, name in ((a, "alice"), (b, "bob"), (c, "carol")):
        code, _, err = await vox(home, "register", name, "--server", relay.base_url)
        assert code == 0, err
    code, _, err = await vox(b, "send", "alice", "hello")
    assert code == 0, err
    (a / "downloads").mkdir()
    (a / "downloads" / "kept.txt").write_text("mine")

    # No terminal and no --yes: a wrong answer deletes nothing.
    code, out, err = await vox(a, "account", "delete", stdin="bob\n")
    assert code == 1 and "not confirmed; nothing was deleted" in err, err
    assert (a / "vox.db").exists()
    code, out, err = await vox(a, "account", "delete", stdin="alice\n")
    assert code == 0, err
    assert "deleted account alice" in out and "still holds your other files" in out
    assert not (a / "vox.db").exists() and not (a / "vox.key").exists()
    assert (a / "downloads" / "kept.txt").read_text() == "mine"

    # Contacts see the account as deleted; the name is quarantined.
    code, _, err = await vox(c, "send", "alice", "are you there?")
    assert_clean_error(code, err, "the account 'alice' was deleted")
    code, _, err = await vox(b, "send", "alice", "still there?")
    assert code != 0 and "Traceback" not in err
    code, _, err = await vox(tmp_path / "new", "register", "alice", "--server", relay.base_url)
    assert_clean_error(code, err, "reserved")
    assert not (tmp_path / "new").exists()

    # --yes skips the question; an empty profile directory goes entirely.
    code, out, err = await vox(c, "account", "delete", "--yes")
    assert code == 0, err
    assert f"removed the local profile {c}" in out
    assert not c.exists()


async def test_passphrase_errors_prompt_and_change(relay: Relay, tmp_path: Path) -> None:
    p, k = tmp_path / "p", tmp_path / "k"
    secret = {"VOX_PASSPHRASE": "correct horse"}
    code, _, err = await vox(p, "register", "alice", "--server", relay.base_url, env=secret)
    assert code == 0, err
    code, _, err = await vox(k, "register", "bob", "--server", relay.base_url)
    assert code == 0, err

    code, _, err = await vox(p, "whoami", env={"VOX_PASSPHRASE": "wrong"})
    assert_clean_error(code, err, "wrong passphrase for this profile")
    code, _, err = await vox(k, "whoami", env={"VOX_PASSPHRASE": "anything"})
    assert_clean_error(code, err, "uses a key file, not a passphrase")
    code, _, err = await vox(p, "whoami", stdin="correct horse\n")  # not a terminal
    assert_clean_error(code, err, "set VOX_PASSPHRASE")

    # On a terminal it is asked for, without echo.
    code, err, shown = await vox_on_terminal(p, "whoami", answers=["correct horse"])
    assert code == 0, err
    assert "Passphrase for the profile" in err
    assert b"correct horse" not in shown

    # Change it (from the environment), then drop it for a key file.
    code, out, err = await vox(
        p, "passphrase", "change", env={**secret, "VOX_NEW_PASSPHRASE": "battery staple"}
    )
    assert code == 0 and "passphrase changed" in out, err
    code, _, err = await vox(p, "whoami", env=secret)
    assert_clean_error(code, err, "wrong passphrase")
    code, out, err = await vox(p, "whoami", env={"VOX_PASSPHRASE": "battery staple"})
    assert code == 0 and "alice" in out, err
    code, out, err = await vox(
        p, "passphrase", "change", "--remove", env={"VOX_PASSPHRASE": "battery staple"}
    )
    assert code == 0 and "removed" in out, err
    code, out, err = await vox(p, "whoami")
    assert code == 0 and "alice" in out, err

    # Typed twice on a terminal; a mismatch changes nothing.
    code, err, _ = await vox_on_terminal(k, "passphrase", "change", answers=["one1", "two2"])
    assert code == 1 and "differ" in err
    code, err, shown = await vox_on_terminal(k, "passphrase", "change", answers=["new1", "new1"])
    assert code == 0, err
    assert b"new1" not in shown
    code, out, err = await vox(k, "whoami", env={"VOX_PASSPHRASE": "new1"})
    assert code == 0 and "bob" in out, err


async def test_a_revoked_device_is_told_so_without_contradiction(
    relay: Relay, tmp_path: Path
) -> None:
    a = tmp_path / "a"
    code, _, err = await vox(a, "register", "alice", "--server", relay.base_url)
    assert code == 0, err
    async with relay.state.sessions() as session:
        device = await get_device(session, "alice", 1)
        assert device is not None
        await revoke_device(session, device.pk, Clock().now())
        await session.commit()
    code, _, err = await vox(a, "devices")
    assert_clean_error(code, err, "revoked by the relay operator")
    assert "removed from the account" not in err
