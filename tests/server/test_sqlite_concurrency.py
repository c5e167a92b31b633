"""SQLite under concurrency, through a real relay on loopback.

On SQLite a transaction that reads and then writes fails at once with "database is locked"
when another connection committed in between (it cannot wait: its snapshot is stale). Every
such transaction must start with ``BEGIN IMMEDIATE`` (``server.db.engine.write_lock`` /
``write_transaction``). Two checks:

* an audit of every statement the relay's engine runs during a workload that touches every
  write path: no deferred transaction writes after it has read;
* a burst of concurrent registrations, challenges, logins, attachment uploads and expiry
  sweeps: every response is 2xx, never 500, and no sweep fails.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from server.auth.maintenance import sweep_expired
from server.db.engine import IMMEDIATE
from server.state import relay_state
from tests.server.relay_harness import TestAccount, auth_header, b64
from tests.server.ws_kit import open_ws, payload, world

FAR_FUTURE = 2**40
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def _kind(statement: str) -> str | None:
    words = statement.lstrip().split(None, 1)
    first = words[0].upper() if words else ""
    if first in ("SELECT", "WITH"):
        upper = statement.upper()
        if first == "WITH" and any(f" {w} " in f" {upper} " for w in _WRITES):
            return "write"
        return "read"
    if first in _WRITES:
        return "write"
    return None  # BEGIN, PRAGMA, COMMIT, ...


@dataclass
class Audit:
    """What :func:`audit_read_then_write` saw."""

    violations: list[str] = field(default_factory=list)
    #: Transactions begun, by kind ("BEGIN IMMEDIATE" / "BEGIN").
    begun: Counter[str] = field(default_factory=Counter)


@contextmanager
def audit_read_then_write(engine: AsyncEngine) -> Iterator[Audit]:
    """Record every statement that writes in a deferred transaction after a read.

    (The delivery writer's own SQLite engine always begins ``IMMEDIATE``; it is not audited.)
    """
    sync = engine.sync_engine
    audit = Audit()
    violations = audit.violations

    def on_begin(conn: Connection) -> None:
        immediate = bool(conn.get_execution_options().get(IMMEDIATE))
        audit.begun["BEGIN IMMEDIATE" if immediate else "BEGIN"] += 1
        conn.info["vox_audit"] = {"immediate": immediate, "read": None}

    def on_execute(
        conn: Connection, _cursor: Any, statement: str, _params: Any, _ctx: Any, _many: bool
    ) -> None:
        state = conn.info.get("vox_audit")
        kind = _kind(statement)
        if state is None or kind is None or state["immediate"]:
            return
        if kind == "read" and state["read"] is None:
            state["read"] = " ".join(statement.split())[:90]
        elif kind == "write" and state["read"] is not None:
            write = " ".join(statement.split())[:90]
            violations.append(f"{state['read']}  ...then...  {write}")

    def on_end(conn: Connection) -> None:
        conn.info.pop("vox_audit", None)

    event.listen(sync, "begin", on_begin)
    event.listen(sync, "before_cursor_execute", on_execute)
    event.listen(sync, "commit", on_end)
    event.listen(sync, "rollback", on_end)
    try:
        yield audit
    finally:
        event.remove(sync, "begin", on_begin)
        event.remove(sync, "before_cursor_execute", on_execute)
        event.remove(sync, "commit", on_end)
        event.remove(sync, "rollback", on_end)


async def test_no_sqlite_transaction_reads_then_writes_without_the_write_lock(
    tmp_path: Path,
) -> None:
    async with world(tmp_path, {"alice": [1], "bob": [1]}) as w, w.relay.client() as http:
        app = w.relay.app
        with audit_read_then_write(relay_state(app).engine) as audit:
            # Accounts and auth: register, challenge, token, device list, logout.
            carol = TestAccount.new("carol", [1, 2])
            second = carol.devices[1]
            carol.devices = carol.devices[:1]
            token = await carol.register_and_login(http)
            published = await carol.publish_devices(http, token, [*carol.devices, second])
            assert published.status_code == 200
            token2 = await carol.login(http, 2)
            assert (
                await http.delete("/v1/auth/token", headers=auth_header(token2))
            ).status_code == 204
            # Prekeys: upload, count, claim.
            upload = {"one_time_prekeys": carol.one_time(carol.devices[0], 3)}
            resp = await http.post("/v1/prekeys", json=upload, headers=auth_header(token))
            assert resp.status_code == 204, resp.text
            assert (
                await http.get("/v1/prekeys/count", headers=auth_header(token))
            ).status_code == 200
            bob = auth_header(w["bob", 1].token)
            assert (await http.get("/v1/prekeys/carol", headers=bob)).status_code == 200
            # Attachments: upload, download, expiry sweep (with something to delete).
            blob = (await http.post("/v1/attachments", content=b"a" * 100, headers=bob)).json()
            assert (await http.get(f"/v1/attachments/{blob['id']}", headers=bob)).status_code == 200
            assert await relay_state(app).attachments.sweep(now=FAR_FUTURE) == 1
            # Messages: send, deliver, ack; envelope and auth expiry sweeps.
            alice, bob_peer = w["alice", 1], w["bob", 1]
            async with open_ws(w.relay, alice) as a, open_ws(w.relay, bob_peer) as b:
                await a.send_message("m1", [(payload(), [bob_peer])])
                await a.expect("accepted")
                await b.send({"type": "ack", "seqs": [(await b.expect("deliver"))["seq"]]})
                await relay_state(app).delivery.drained()
            await relay_state(app).delivery.sweep(FAR_FUTURE * 1000)
            await sweep_expired(relay_state(app).sessions, FAR_FUTURE)
        assert audit.violations == []
        # The audit saw both kinds of transaction (it is not vacuous).
        assert audit.begun["BEGIN IMMEDIATE"] >= 8 and audit.begun["BEGIN"] >= 5, audit.begun


async def test_concurrent_logins_registrations_and_sweeps_never_fail_on_sqlite(
    tmp_path: Path,
) -> None:
    # Rate limits far above the burst, so a 429 cannot hide anything.
    limits = {"requests_per_minute_per_ip": 1_000_000}
    async with world(tmp_path, {"alice": [1]}, limits=limits) as w:
        app = w.relay.app
        async with w.relay.client(limits=httpx.Limits(max_connections=200)) as http:
            members = [TestAccount.new(f"member{i:02d}") for i in range(10)]
            for member in members:
                assert (await member.register(http)).status_code == 201
            newcomers = [TestAccount.new(f"newcomer{i:02d}") for i in range(40)]
            uploader = auth_header(w["alice", 1].token)
            statuses: list[tuple[str, int]] = []
            sweep_errors: list[str] = []

            async def login(account: TestAccount) -> None:
                body = {"username": account.username, "device_id": 1}
                challenge = await http.post("/v1/auth/challenge", json=body)
                statuses.append(("challenge", challenge.status_code))
                if challenge.status_code != 200:
                    return
                nonce = base64.b64decode(challenge.json()["nonce"])
                signature = account.devices[0].sign_challenge(account.username, nonce)
                token = await http.post(
                    "/v1/auth/token",
                    json={**body, "nonce": b64(nonce), "signature": b64(signature)},
                )
                statuses.append(("token", token.status_code))

            async def register(account: TestAccount) -> None:
                statuses.append(("register", (await account.register(http)).status_code))

            async def upload() -> None:
                for _ in range(5):
                    resp = await http.post(
                        "/v1/attachments", content=os.urandom(64), headers=uploader
                    )
                    statuses.append(("upload", resp.status_code))

            async def sweep() -> None:
                for _ in range(40):
                    try:
                        await relay_state(app).attachments.sweep(now=FAR_FUTURE)
                    except Exception as exc:  # the defect: "database is locked"
                        sweep_errors.append(repr(exc)[:120])
                    await asyncio.sleep(0)

            for _round in range(2):
                await asyncio.gather(
                    *(login(members[i % len(members)]) for i in range(50)),
                    *(register(a) for a in newcomers[_round * 20 : _round * 20 + 20]),
                    *(upload() for _ in range(8)),
                    sweep(),
                )
        expected = {"challenge": 200, "token": 200, "register": 201, "upload": 201}
        wrong = [(what, code) for what, code in statuses if code != expected[what]]
        assert wrong == [] and sweep_errors == []
        assert len(statuses) == 2 * (50 * 2 + 20 + 8 * 5)
