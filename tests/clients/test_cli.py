"""The ``vox`` CLI as real subprocesses against a real relay on loopback."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from clients.sdk import VoxClient
from tests.clients.kit import VOX, assert_clean_error, vox
from tests.server.relay_harness import Relay

# Many real `vox` processes: generous on a loaded machine (assert behaviour, not speed).
pytestmark = pytest.mark.timeout(600)


def messages(out: str) -> list[dict[str, Any]]:
    """The messages among ``receive --json`` lines (receipts and other kinds left out)."""
    every = [json.loads(line) for line in out.splitlines()]
    return [m for m in every if m["kind"] in ("text", "file", "reply")]


async def test_a_dozen_messages_through_cli_subprocesses(relay: Relay, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for home, name in ((a, "alice"), (b, "bob")):
        code, out, err = await vox(home, "register", name, "--server", relay.base_url)
        assert code == 0, err
        assert "registered" in out

    async def chat(home: Path, peer: str, prefix: str) -> None:
        for i in range(6):  # one process per message, in order
            code, out, err = await vox(home, "send", peer, f"{prefix} {i}")
            assert code == 0, err
            assert len(out.strip()) == 32  # the message id

    await asyncio.gather(chat(a, "bob", "hello"), chat(b, "alice", "hi"))
    code, out, err = await vox(b, "receive", "--json", "--wait", "1")
    assert code == 0, err
    got = messages(out)
    assert [m["text"] for m in got] == [f"hello {i}" for i in range(6)]
    assert {m["from"] for m in got} == {"alice"} and {m["device"] for m in got} == {1}
    assert all(m["id"] and m["sent_at"] for m in got)
    code, out, err = await vox(a, "receive", "--json", "--wait", "1")
    assert code == 0, err
    assert [m["text"] for m in messages(out)] == [f"hi {i}" for i in range(6)]
    # Everything was acked: nothing arrives twice.
    code, out, _ = await vox(b, "receive", "--json", "--wait", "0.5")
    assert code == 0 and messages(out) == []  # receipts may still come


async def test_cli_errors_are_one_line_and_non_zero(relay: Relay, tmp_path: Path) -> None:
    code, _, err = await vox(tmp_path / "x", "register", "xavier", "--server", "http://127.0.0.1:9")
    assert_clean_error(code, err, "cannot reach the relay")
    code, _, err = await vox(tmp_path / "x", "register", "Bad Name!", "--server", relay.base_url)
    assert_clean_error(code, err, "invalid username")
    code, _, err = await vox(tmp_path / "nobody", "send", "bob", "hi")
    assert_clean_error(code, err, "no Vox profile")
    code, _, err = await vox(tmp_path / "a", "register", "alice", "--server", relay.base_url)
    assert code == 0, err
    code, _, err = await vox(tmp_path / "a", "send", "nobody-here", "hi")
    assert_clean_error(code, err, "unknown user 'nobody-here'")
    code, _, err = await vox(tmp_path / "a2", "register", "alice", "--server", relay.base_url)
    assert_clean_error(code, err, "409")
    code, _, err = await vox(tmp_path / "a", "register", "alice", "--server", relay.base_url)
    assert_clean_error(code, err, "already holds a Vox profile")


async def test_second_process_on_a_profile_fails_cleanly(relay: Relay, tmp_path: Path) -> None:
    home = tmp_path / "a"
    code, _, err = await vox(home, "register", "alice", "--server", relay.base_url)
    assert code == 0, err
    holder = await VoxClient.open(home)
    try:
        code, _, err = await vox(home, "--lock-timeout", "0.3", "devices")
        assert_clean_error(code, err, "in use by another vox process")
    finally:
        await holder.close()
    code, out, err = await vox(home, "devices")
    assert code == 0, err
    assert "1 (this device)" in out


async def test_verify_shows_one_safety_number_on_both_sides_and_accept_marks_verified(
    relay: Relay, tmp_path: Path
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for home, name in ((a, "alice"), (b, "bob")):
        code, _, err = await vox(home, "register", name, "--server", relay.base_url)
        assert code == 0, err
    shown = []
    for home, peer in ((a, "bob"), (b, "alice")):
        code, out, err = await vox(home, "verify", peer)
        assert code == 0, err
        head, number, status = out.strip().splitlines()
        assert head == f"safety number with {peer}:"
        assert len(number.replace(" ", "")) == 60 and number.replace(" ", "").isdigit()
        assert status == "status: trusted on first use"
        shown.append(number)
    assert shown[0] == shown[1]
    code, out, err = await vox(a, "verify", "bob", "--accept")
    assert code == 0, err
    assert out.strip().splitlines()[1:] == [shown[0], "status: verified"], out
    code, out, err = await vox(a, "verify", "bob")
    assert code == 0 and out.strip().endswith("status: verified"), err


def same_bytes(a: Path, b: Path) -> bool:
    """Whether two files have identical content."""
    return a.read_bytes() == b.read_bytes()


def corrupt(path: Path, offset: int, length: int) -> None:
    """Overwrite ``length`` bytes of ``path`` at ``offset`` with garbage."""
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(b"\xa5" * length)


async def test_corrupted_store_and_wrong_passphrase_are_clear_errors(
    relay: Relay, tmp_path: Path
) -> None:
    secret = {"VOX_PASSPHRASE": "correct horse battery staple"}
    code, _, err = await vox(
        tmp_path / "p", "register", "alice", "--server", relay.base_url, env=secret
    )
    assert code == 0, err
    code, _, err = await vox(tmp_path / "p", "devices", env={"VOX_PASSPHRASE": "wrong"})
    assert_clean_error(code, err, "wrong passphrase")
    code, _, err = await vox(tmp_path / "p", "devices")
    assert_clean_error(code, err, "passphrase")
    code, out, err = await vox(tmp_path / "p", "devices", env=secret)
    assert code == 0 and "this device" in out, err

    code, _, err = await vox(tmp_path / "c", "register", "carol", "--server", relay.base_url)
    assert code == 0, err
    db = tmp_path / "c" / "vox.db"
    corrupt(db, 0, 64)  # the SQLite header
    code, _, err = await vox(tmp_path / "c", "devices")
    assert_clean_error(code, err, "corrupted")


async def test_files_and_groups_through_the_cli(relay: Relay, tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for home, name in ((a, "alice"), (b, "bob"), (c, "carol")):
        code, _, err = await vox(home, "register", name, "--server", relay.base_url)
        assert code == 0, err
    payload = tmp_path / "report.pdf"
    payload.write_bytes(bytes(range(256)) * 4000)
    code, _, err = await vox(a, "send-file", "bob", str(payload))
    assert code == 0, err
    code, out, err = await vox(a, "group", "create", "team", "bob", "carol")
    assert code == 0, err
    group_id = out.strip()
    code, _, err = await vox(a, "group", "send", "team", "hello team")
    assert code == 0, err
    code, out, err = await vox(b, "receive", "--json", "--wait", "1")
    assert code == 0, err
    got = messages(out)
    files = [m for m in got if "attachment" in m]
    assert len(files) == 1 and files[0]["attachment"]["size"] == payload.stat().st_size
    assert same_bytes(Path(files[0]["attachment"]["path"]), payload)
    assert [m["text"] for m in got if m.get("group") == group_id] == ["hello team"]
    code, out, err = await vox(c, "receive", "--wait", "0.5")
    assert code == 0, err
    # Group messages name their group (as the "group NAME (ID8): create by ..." line does).
    assert f"alice:1 [group team ({group_id[:8]})]: hello team" in out, out
    code, out, err = await vox(c, "group", "list")
    assert code == 0 and group_id in out and "alice bob carol" in out, err
    code, out, err = await vox(a, "group", "remove", "team", "carol")
    assert code == 0 and out.strip() == "alice bob", err
    code, out, err = await vox(b, "group", "leave", "team")
    assert code == 0 and out.strip() == "left team", err
    code, out, err = await vox(b, "group", "list")
    assert code == 0 and group_id not in out, err
    code, out, err = await vox(a, "receive", "--wait", "0.5")
    assert code == 0 and "leave by bob" in out, err
    code, out, err = await vox(a, "group", "list")
    assert code == 0 and group_id in out and "bob" not in out.split(group_id, 1)[1], err


async def test_link_and_join_through_the_cli(relay: Relay, tmp_path: Path) -> None:
    a, a2, b = tmp_path / "a", tmp_path / "a2", tmp_path / "b"
    for home, name in ((a, "alice"), (b, "bob")):
        code, _, err = await vox(home, "register", name, "--server", relay.base_url)
        assert code == 0, err
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOX_")}
    link = await asyncio.create_subprocess_exec(
        VOX,
        "--home",
        str(a),
        "link",
        "--wait",
        "30",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert link.stdout is not None
    line = (await asyncio.wait_for(link.stdout.readline(), 30)).decode()
    assert "vox join" in line, line
    code_text = line.split("vox join", 1)[1].split()[0]
    code, out, err = await vox(a2, "join", code_text, "--server", relay.base_url)
    assert code == 0, err
    assert "joined as alice" in out
    rest, err_link = await asyncio.wait_for(link.communicate(), 30)
    assert link.returncode == 0, err_link.decode()
    assert "linked device" in rest.decode()
    code, out, err = await vox(a2, "devices")
    assert code == 0 and len(out.strip().splitlines()) == 2, err
    code, _, err = await vox(b, "send", "alice", "to every alice")
    assert code == 0, err
    for home in (a, a2):
        code, out, err = await vox(home, "receive", "--json", "--wait", "1")
        assert code == 0, err
        assert [m["text"] for m in messages(out)] == ["to every alice"]
    # The laptop is lost: unlink it from the first device. It is refused from then on.
    linked_id = next(
        line.split()[0] for line in (await vox(a, "devices"))[1].splitlines() if "this" not in line
    )
    code, out, err = await vox(a, "unlink", linked_id)
    assert code == 0 and out.strip() == f"removed device {linked_id}", err
    code, out, err = await vox(a, "devices")
    assert code == 0 and len(out.strip().splitlines()) == 1, err
    code, _, err = await vox(a2, "receive", "--wait", "0.5")
    assert_clean_error(code, err, "removed from the account")
    code, _, err = await vox(a, "unlink", "1")
    assert_clean_error(code, err, "cannot remove itself")
