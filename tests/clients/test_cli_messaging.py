"""``vox`` edit, delete, react, reply, disappear, history, search and TARGET forms as real
subprocesses against a real relay; ``receive --json`` prints every kind with a ``kind``."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.clients.kit import VOX, assert_clean_error, vox
from tests.server.relay_harness import Relay


async def vox_stdin(home: Path, stdin: str, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOX_")}
    proc = await asyncio.create_subprocess_exec(
        VOX, "--home", str(home), *args, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def ok(home: Path, *args: str) -> str:
    code, out, err = await vox(home, *args)
    assert code == 0, err
    return out


async def received(home: Path) -> list[dict[str, Any]]:
    """What ``receive --json`` prints, delivery/read receipts left out."""
    code, out, err = await vox(home, "receive", "--json", "--wait", "1")
    assert code == 0 and err == "", err
    every = [json.loads(line) for line in out.splitlines()]
    assert all("kind" in m for m in every)
    return [m for m in every if m["kind"] != "receipt"]


@pytest.mark.timeout(600)  # ~25 vox processes; each takes seconds on a loaded machine
async def test_edit_reply_react_delete_disappear_search(relay: Relay, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for home, name in ((a, "alice"), (b, "bob")):
        await ok(home, "register", name, "--server", relay.base_url)
    mid = (await ok(a, "send", "bob", "lunch at noon?")).strip()
    [first] = await received(b)
    assert (first["kind"], first["id"], first["text"]) == ("text", mid, "lunch at noon?")

    code, out, err = await vox_stdin(b, "yes, see you\n", "send", "alice", "-", "--reply-to", mid)
    assert code == 0, err
    reply_id = out.strip()
    await ok(a, "edit", "bob", mid, "lunch at one?")
    await ok(a, "react", "bob", mid, "👍")
    got = await received(a)
    assert [(m["kind"], m["id"]) for m in got] == [("reply", reply_id)]
    assert got[0]["text"] == "yes, see you"
    assert got[0]["reply_to"] == {"id": mid, "author": "alice", "excerpt": "lunch at noon?"}
    got = await received(b)
    assert [m["kind"] for m in got] == ["edit", "reaction"]
    assert (got[0]["target"], got[0]["text"]) == (mid, "lunch at one?")
    assert (got[1]["target"], got[1]["emoji"], got[1]["from"]) == (mid, "👍", "alice")

    history = (await ok(b, "history", "alice")).splitlines()
    assert history[0].startswith(mid) and "lunch at one? (edited)" in history[0]
    assert "👍" in history[0] and history[1].startswith(reply_id)
    found = (await ok(a, "search", "LUNCH", "--chat", "bob")).splitlines()
    assert len(found) == 1 and mid in found[0]
    assert (await ok(a, "search", "noon")) == ""  # the edited-away text is not found

    await ok(a, "delete", "bob", mid)
    got = await received(b)
    assert [(m["kind"], m["target"]) for m in got] == [("delete", mid)]
    assert "[deleted]" in (await ok(b, "history", "alice")).splitlines()[0]
    await ok(b, "delete", "alice", reply_id, "--for-me")
    assert reply_id not in await ok(b, "history", "alice")

    assert "to 1 hour" in await ok(b, "disappear", "alice", "1h")
    got = await received(a)
    assert [(m["kind"], m["seconds"]) for m in got] == [("timer", 3600)]
    sent = (await ok(a, "send", "bob", "vanishing")).strip()
    [message] = await received(b)
    assert (message["id"], message["expires_in"]) == (sent, 3600)


@pytest.mark.timeout(300)
async def test_bad_input_is_refused_clearly(relay: Relay, tmp_path: Path) -> None:
    a = tmp_path / "a"
    await ok(a, "register", "alice", "--server", relay.base_url)
    code, _, err = await vox(a, "send", "bob", "  ")
    assert code == 2 and "empty message" in err
    code, _, err = await vox_stdin(a, "", "send", "bob", "-")
    assert code == 2 and "empty message" in err
    code, _, err = await vox(a, "disappear", "bob", "5s")
    assert code == 2 and "bad duration" in err
    code, _, err = await vox(a, "edit", "alice", "00" * 16, "x")
    assert_clean_error(code, err, "no message")
    code, _, err = await vox(a, "send-file", "group:nosuch", str(Path(__file__)))
    assert_clean_error(code, err, "unknown group 'nosuch'")


@pytest.mark.timeout(400)
async def test_group_targets_by_name_for_text_files_and_operations(
    relay: Relay, tmp_path: Path
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for home, name in ((a, "alice"), (b, "bob")):
        await ok(home, "register", name, "--server", relay.base_url)
    group_id = (await ok(a, "group", "create", "friends", "bob")).strip()
    await received(b)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8 not really a jpeg")
    mid = (await ok(a, "send", "group:friends", "hello friends")).strip()
    await ok(a, "send-file", "group:friends", str(photo))  # crashed with ValueError before
    await ok(a, "group", "send-file", "friends", str(photo))
    await ok(a, "react", f"group:{group_id}", mid, "🎉")
    got = await received(b)
    assert [m["kind"] for m in got] == ["text", "file", "file", "reaction"]
    assert {m["group"] for m in got if m["kind"] != "reaction"} == {group_id}
    assert got[3]["conversation"] == f"group:{group_id}"
    assert "🎉" in (await ok(b, "history", "group:friends")).splitlines()[0]
