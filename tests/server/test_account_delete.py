"""An account deletes itself: everything the relay holds for it goes, its name is quarantined.

Runs the whole relay (core, delivery, attachments, push) on loopback with real clients.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from starlette.applications import Starlette

from server.accounts.service import deletion_message
from server.clock import Clock
from server.state import relay_state
from tests.server.relay_harness import (
    TestAccount,
    auth_header,
    b64,
    make_settings,
    running_relay,
)
from tests.server.ws_kit import Peer, delivery_app, open_ws, payload

OWNED_TABLES = (
    "devices",
    "auth_tokens",
    "auth_challenges",
    "one_time_prekeys",
    "delivery_queue",
    "push_subscriptions",
    "attachments",
)


def _signature(account: TestAccount) -> dict[str, str]:
    return {"signature": b64(account.account.sign(deletion_message(account.username)))}


async def _counts(app: Starlette) -> dict[str, int]:
    async with relay_state(app).sessions() as session:
        return {
            t: int((await session.execute(text(f"SELECT count(*) FROM {t}"))).scalar_one())
            for t in OWNED_TABLES
        }


async def _delete_flow(tmp_path: Path, database_url: str | None) -> None:
    settings = make_settings(tmp_path, database_url=database_url)
    app = delivery_app(settings)
    async with running_relay(settings, app=app) as relay, relay.client() as http:
        alice = TestAccount.new("alice")
        alice_token = await alice.register_and_login(http)
        bob = TestAccount.new("bob")
        bob_token = await bob.register_and_login(http)
        before = await _counts(relay.app)
        # Bob owns an attachment, queued messages and a live socket.
        up = await http.post("/v1/attachments", content=b"x" * 5000, headers=auth_header(bob_token))
        assert up.status_code in (200, 201), up.text
        blob_id = up.json()["id"]
        blob_files = list((settings.data_dir / "attachments").rglob("*"))
        assert any(p.is_file() for p in blob_files)
        alice_peer, bob_peer = Peer("alice", 1, alice_token), Peer("bob", 1, bob_token)
        async with open_ws(relay, alice_peer) as a:
            await a.send_message("m0", [(payload(40), [bob_peer])])
            await a.expect("accepted")

        async with open_ws(relay, bob_peer) as b:
            await b.expect("deliver")
            # A bearer token alone is not enough: the account key must sign the deletion.
            resp = await http.request(
                "DELETE",
                "/v1/accounts/me",
                json={"signature": b64(b"\x00" * 64)},
                headers=auth_header(bob_token),
            )
            assert resp.status_code == 403 and resp.json()["error"] == "invalid_signature"
            wrong = await http.request(
                "DELETE", "/v1/accounts/me", json=_signature(alice), headers=auth_header(bob_token)
            )
            assert wrong.status_code == 403
            resp = await http.request(
                "DELETE", "/v1/accounts/me", json=_signature(bob), headers=auth_header(bob_token)
            )
            assert resp.status_code == 204, resp.text
            code, reason = await b.closed()
            assert code is not None and "deleted" in (reason or "")

        after = await _counts(relay.app)
        assert after["devices"] == before["devices"] - 1
        assert after["attachments"] == 0 and after["delivery_queue"] == 0
        assert after["one_time_prekeys"] < before["one_time_prekeys"]
        assert after["auth_tokens"] == before["auth_tokens"] - 1
        assert not (
            await http.get(f"/v1/attachments/{blob_id}", headers=auth_header(alice_token))
        ).is_success
        assert not any(
            p.is_file() and blob_id in p.name
            for p in (settings.data_dir / "attachments").rglob("*")
        )
        # Bob's token is dead; his contacts see the account as gone, not as unknown.
        assert (
            await http.get("/v1/prekeys/count", headers=auth_header(bob_token))
        ).status_code == 401
        gone = await http.get("/v1/accounts/bob/devices", headers=auth_header(alice_token))
        assert gone.status_code == 410 and gone.json()["error"] == "account_deleted"
        gone = await http.get("/v1/prekeys/bob", headers=auth_header(alice_token))
        assert gone.status_code == 410 and gone.json()["error"] == "account_deleted"
        unknown = await http.get("/v1/accounts/nobody/devices", headers=auth_header(alice_token))
        assert unknown.status_code == 404
        # The name and its look-alikes are quarantined; others are not.
        for name in ("bob", "b0b"):
            again = await TestAccount.new(name).register(http)
            assert again.status_code == 409 and again.json()["error"] == "username_quarantined"
            assert "30 more day" in again.json()["message"]
        assert (await TestAccount.new("carol").register(http)).status_code == 201
        async with relay.state.sessions() as session:
            row = (
                await session.execute(text("SELECT released_at FROM deleted_usernames"))
            ).scalar_one()
            assert abs(int(row) - (Clock().now() + 30 * 86400)) < 600


async def test_deleting_an_account_removes_what_it_owns_and_quarantines_its_name_on_sqlite(
    tmp_path: Path,
) -> None:
    await _delete_flow(tmp_path, None)


@pytest.mark.postgres
async def test_deleting_an_account_removes_what_it_owns_and_quarantines_its_name_on_postgresql(
    tmp_path: Path, postgres_url: str
) -> None:
    await _delete_flow(tmp_path, postgres_url)


async def test_a_name_is_free_again_after_its_quarantine(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, username_quarantine_days=0)
    async with running_relay(settings) as relay, relay.client() as http:
        dave = TestAccount.new("dave")
        token = await dave.register_and_login(http)
        resp = await http.request(
            "DELETE", "/v1/accounts/me", json=_signature(dave), headers=auth_header(token)
        )
        assert resp.status_code == 204, resp.text
        successor = TestAccount.new("dave")
        token2 = await successor.register_and_login(http)
        got = await http.get("/v1/accounts/dave/devices", headers=auth_header(token2))
        assert got.status_code == 200
        assert base64.b64decode(got.json()["account_key"]) == successor.account_key


async def test_account_deletion_needs_a_token(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with running_relay(settings) as relay, relay.client() as http:
        erin = TestAccount.new("erin")
        await erin.register_and_login(http)
        resp = await http.request("DELETE", "/v1/accounts/me", json=_signature(erin))
        assert resp.status_code == 401
        async with relay.state.sessions() as session:
            assert (await session.scalar(select(func.count()).select_from(text("accounts")))) == 1
