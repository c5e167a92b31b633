"""``/v1/push``: registering, listing and removing a device's push subscriptions; bad bodies."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.push.vapid import PAYLOAD
from tests.server.push_receiver import UserAgent, b64url
from tests.server.relay_harness import REPO, auth_header, make_settings, running_relay
from tests.server.ws_kit import delivery_app, setup_accounts

ENDPOINT = "https://push.example.com/wpush/v2/gAAAAABk-secret-token"


@asynccontextmanager
async def _relay(tmp_path: Path, **push: Any) -> AsyncIterator[tuple[httpx.AsyncClient, str, str]]:
    """A relay with push settings ``push``; yields (http client, alice's token, bob's token)."""
    settings = make_settings(tmp_path, push=push)
    async with (
        running_relay(settings, app=delivery_app(settings)) as relay,
        relay.client() as http,
    ):
        peers = await setup_accounts(http, {"alice": [1], "bob": [1]})
        yield http, peers["alice", 1].token, peers["bob", 1].token


def _body(endpoint: str = ENDPOINT, agent: UserAgent | None = None) -> dict[str, Any]:
    return (agent or UserAgent()).subscription(endpoint)


async def test_a_device_registers_lists_and_removes_its_subscriptions(tmp_path: Path) -> None:
    async with _relay(tmp_path) as (http, alice, bob):
        created = await http.post(
            "/v1/push/subscriptions", json=_body(), headers=auth_header(alice)
        )
        assert created.status_code == 201, created.text
        sub = created.json()
        assert set(sub) == {"id", "endpoint", "created_at"}
        assert len(sub["id"]) == 32 and sub["endpoint"] == ENDPOINT
        # The same endpoint again (new keys after a resubscribe): same id, 200.
        again = await http.post("/v1/push/subscriptions", json=_body(), headers=auth_header(alice))
        assert again.status_code == 200 and again.json()["id"] == sub["id"]
        other = await http.post(
            "/v1/push/subscriptions", json=_body(ENDPOINT + "-2"), headers=auth_header(alice)
        )
        assert other.status_code == 201
        listed = await http.get("/v1/push/subscriptions", headers=auth_header(alice))
        assert [s["id"] for s in listed.json()["subscriptions"]] == [sub["id"], other.json()["id"]]
        # Another device sees none of them and cannot delete them.
        assert (await http.get("/v1/push/subscriptions", headers=auth_header(bob))).json() == {
            "subscriptions": []
        }
        stolen = await http.delete(f"/v1/push/subscriptions/{sub['id']}", headers=auth_header(bob))
        assert stolen.status_code == 404 and stolen.json()["error"] == "not_found"
        gone = await http.delete(f"/v1/push/subscriptions/{sub['id']}", headers=auth_header(alice))
        assert gone.status_code == 204 and gone.content == b""
        again_gone = await http.delete(
            f"/v1/push/subscriptions/{sub['id']}", headers=auth_header(alice)
        )
        assert again_gone.status_code == 404
        cleared = await http.delete("/v1/push/subscriptions", headers=auth_header(alice))
        assert cleared.status_code == 204
        listed = await http.get("/v1/push/subscriptions", headers=auth_header(alice))
        assert listed.json() == {"subscriptions": []}


async def test_subscriptions_per_device_are_bounded(tmp_path: Path) -> None:
    async with _relay(tmp_path, max_subscriptions_per_device=2) as (http, alice, bob):
        for i in range(2):
            resp = await http.post(
                "/v1/push/subscriptions", json=_body(f"{ENDPOINT}/{i}"), headers=auth_header(alice)
            )
            assert resp.status_code == 201
        over = await http.post(
            "/v1/push/subscriptions", json=_body(f"{ENDPOINT}/x"), headers=auth_header(alice)
        )
        assert over.status_code == 409 and over.json()["error"] == "too_many_subscriptions"
        # Re-registering a known endpoint is still fine, and other devices are not affected.
        same = await http.post(
            "/v1/push/subscriptions", json=_body(f"{ENDPOINT}/0"), headers=auth_header(alice)
        )
        assert same.status_code == 200
        theirs = await http.post("/v1/push/subscriptions", json=_body(), headers=auth_header(bob))
        assert theirs.status_code == 201


def _with(**changes: Any) -> dict[str, Any]:
    body = _body()
    keys = dict(body["keys"])
    for name in ("p256dh", "auth"):
        if name in changes:
            keys[name] = changes.pop(name)
    body["keys"] = keys
    body.update(changes)
    return body


_NOT_ON_CURVE = b"\x04" + b"\x01" * 64

BAD_SUBSCRIPTIONS: list[tuple[str, dict[str, Any], int, str]] = [
    ("http endpoint", _with(endpoint="http://push.example.com/x"), 400, "bad_subscription"),
    ("ftp endpoint", _with(endpoint="ftp://push.example.com/x"), 400, "bad_subscription"),
    ("not a URL", _with(endpoint="not a url"), 400, "bad_subscription"),
    ("no host", _with(endpoint="https:///x"), 400, "bad_subscription"),
    ("user info", _with(endpoint="https://u:p@push.example.com/x"), 400, "bad_subscription"),
    ("loopback", _with(endpoint="https://127.0.0.1/x"), 400, "bad_subscription"),
    ("localhost", _with(endpoint="https://localhost:8443/x"), 400, "bad_subscription"),
    ("private", _with(endpoint="https://10.1.2.3/x"), 400, "bad_subscription"),
    ("link-local", _with(endpoint="https://[fe80::1]/x"), 400, "bad_subscription"),
    ("single label", _with(endpoint="https://intranet/x"), 400, "bad_subscription"),
    ("p256dh short", _with(p256dh=b64url(UserAgent().public_key[:64])), 400, "bad_subscription"),
    ("p256dh off curve", _with(p256dh=b64url(_NOT_ON_CURVE)), 400, "bad_subscription"),
    ("p256dh not b64", _with(p256dh="!!!!"), 400, "bad_subscription"),
    ("auth 15 bytes", _with(auth=b64url(os.urandom(15))), 400, "bad_subscription"),
    ("auth std b64", _with(auth=base64.b64encode(b"\xfb" * 16).decode()), 400, "bad_subscription"),
    ("auth empty", _with(auth=""), 400, "bad_subscription"),
    ("extra field", _with(extra=1), 422, "invalid_request"),
    ("no keys", {"endpoint": ENDPOINT}, 422, "invalid_request"),
    ("keys not object", _with(keys="x"), 422, "invalid_request"),
    (
        "endpoint too long",
        _with(endpoint="https://push.example.com/" + "a" * 1024),
        422,
        "invalid_request",
    ),
]


async def test_bad_subscription_bodies_are_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    async with _relay(tmp_path) as (http, alice, _):
        for label, body, status, code in BAD_SUBSCRIPTIONS:
            resp = await http.post("/v1/push/subscriptions", json=body, headers=auth_header(alice))
            got = (resp.status_code, resp.json().get("error"))
            assert got == (status, code), (label, resp.text)
            assert resp.json()["message"], label
        malformed = await http.post(
            "/v1/push/subscriptions",
            content=b"{not json",
            headers={**auth_header(alice), "Content-Type": "application/json"},
        )
        assert malformed.status_code == 400
        listed = await http.get("/v1/push/subscriptions", headers=auth_header(alice))
        assert listed.json() == {"subscriptions": []}


async def test_padded_base64url_keys_are_accepted(tmp_path: Path) -> None:
    agent = UserAgent()
    body = _body(agent=agent)
    body["keys"] = {
        "p256dh": base64.urlsafe_b64encode(agent.public_key).decode(),
        "auth": base64.urlsafe_b64encode(agent.auth).decode(),
    }
    async with _relay(tmp_path) as (http, alice, _):
        resp = await http.post("/v1/push/subscriptions", json=body, headers=auth_header(alice))
        assert resp.status_code == 201, resp.text


async def test_subscriptions_need_a_device_token(tmp_path: Path) -> None:
    async with _relay(tmp_path) as (http, _, _):
        for method, path in (
            ("POST", "/v1/push/subscriptions"),
            ("GET", "/v1/push/subscriptions"),
            ("DELETE", "/v1/push/subscriptions"),
        ):
            resp = await http.request(method, path, json=_body() if method == "POST" else None)
            assert resp.status_code == 401, (method, path)
        bad = await http.get("/v1/push/subscriptions", headers=auth_header("x" * 43))
        assert bad.status_code == 401


async def test_push_can_be_turned_off(tmp_path: Path) -> None:
    async with _relay(tmp_path, enabled=False) as (http, alice, _):
        vapid = await http.get("/v1/push/vapid")
        assert vapid.status_code == 404 and vapid.json()["error"] == "push_disabled"
        sub = await http.post("/v1/push/subscriptions", json=_body(), headers=auth_header(alice))
        assert sub.status_code == 404 and sub.json()["error"] == "push_disabled"
    assert not (tmp_path / "vox-data" / "vapid_private_key.pem").exists()


@pytest.mark.parametrize(
    "push",
    [
        {"urgency": "urgent"},
        {"coalesce_seconds": 0},
        {"max_subscriptions_per_device": 0},
        {"subject": "admin@example.com"},
        {"ttl_seconds": -1},
    ],
)
def test_unsafe_push_settings_are_refused(tmp_path: Path, push: dict[str, Any]) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        make_settings(tmp_path, push=push)


def _documented_push_section() -> str:
    text = (REPO / "docs" / "protocol-relay.md").read_text()
    return text.split("## Web Push", 1)[1].split("\n## ", 1)[0]


async def test_the_documented_subscription_body_and_payload_are_what_the_relay_uses(
    tmp_path: Path,
) -> None:
    section = _documented_push_section()
    body_text = section.split("### `POST /v1/push/subscriptions`", 1)[1]
    body = json.loads(body_text.split("```json", 1)[1].split("```", 1)[0])
    assert PAYLOAD.decode() in section and f"{len(PAYLOAD)} bytes" in section
    async with _relay(tmp_path) as (http, alice, _):
        resp = await http.post("/v1/push/subscriptions", json=body, headers=auth_header(alice))
        assert resp.status_code == 201, resp.text
        assert resp.json()["endpoint"] == body["endpoint"]
