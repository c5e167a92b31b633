"""Challenge–response login and bearer tokens, through a real relay on loopback."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from server.db.models import AuthChallenge, AuthToken
from tests.server.relay_harness import (
    Relay,
    TestAccount,
    TestDevice,
    auth_header,
    b64,
    make_settings,
    running_relay,
    table_snapshot,
)


@pytest.fixture
async def alice(http: httpx.AsyncClient) -> TestAccount:
    account = TestAccount.new("alice")
    assert (await account.register(http)).status_code == 201
    return account


def _error(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.json()["error"] == code, resp.json()
    assert resp.json()["message"]


async def _challenge(http: httpx.AsyncClient, username: str = "alice", device_id: int = 1) -> bytes:
    resp = await http.post(
        "/v1/auth/challenge", json={"username": username, "device_id": device_id}
    )
    assert resp.status_code == 200, resp.text
    return base64.b64decode(resp.json()["nonce"])


def _token_body(
    alice: TestAccount, nonce: bytes, device: TestDevice | None = None
) -> dict[str, object]:
    device = device or alice.devices[0]
    return {
        "username": alice.username,
        "device_id": 1,
        "nonce": b64(nonce),
        "signature": b64(device.sign_challenge(alice.username, nonce)),
    }


async def test_a_signed_challenge_gives_a_working_token(
    relay: Relay, http: httpx.AsyncClient, alice: TestAccount
) -> None:
    nonce = await _challenge(http)
    assert len(nonce) == 32
    resp = await http.post("/v1/auth/token", json=_token_body(alice, nonce))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["token_type"] == "Bearer" and body["device_id"] == 1
    assert len(body["token"]) == 43 and len(base64.urlsafe_b64decode(body["token"] + "=")) == 32
    ok = await http.get("/v1/prekeys/count", headers=auth_header(body["token"]))
    assert ok.status_code == 200
    # Only the SHA-256 of the token is stored.
    rows = (await table_snapshot(relay.app, ["auth_tokens"]))["auth_tokens"]
    stored = [bytes(v) for row in rows for v in row if isinstance(v, bytes | memoryview)]
    raw = base64.urlsafe_b64decode(body["token"] + "=")
    assert raw not in stored and body["token"].encode() not in stored


async def test_a_replayed_challenge_is_refused(http: httpx.AsyncClient, alice: TestAccount) -> None:
    nonce = await _challenge(http)
    body = _token_body(alice, nonce)
    assert (await http.post("/v1/auth/token", json=body)).status_code == 200
    _error(await http.post("/v1/auth/token", json=body), 401, "invalid_challenge")


async def test_a_signature_by_the_wrong_key_is_refused_and_burns_the_challenge(
    relay: Relay, http: httpx.AsyncClient, alice: TestAccount
) -> None:
    nonce = await _challenge(http)
    before = await table_snapshot(relay.app)
    _error(
        await http.post("/v1/auth/token", json=_token_body(alice, nonce, TestDevice(1))),
        401,
        "bad_signature",
    )
    assert await table_snapshot(relay.app) == before
    # The challenge was one-shot: the right signature no longer helps.
    _error(
        await http.post("/v1/auth/token", json=_token_body(alice, nonce)), 401, "invalid_challenge"
    )


async def test_a_signature_over_another_username_is_refused(
    http: httpx.AsyncClient, alice: TestAccount
) -> None:
    nonce = await _challenge(http)
    body = _token_body(alice, nonce)
    body["signature"] = b64(alice.devices[0].sign_challenge("alicf", nonce))
    _error(await http.post("/v1/auth/token", json=body), 401, "bad_signature")


async def test_a_nonce_issued_to_another_device_is_refused(
    http: httpx.AsyncClient, alice: TestAccount
) -> None:
    bob = TestAccount.new("bob")
    assert (await bob.register(http)).status_code == 201
    nonce = await _challenge(http, "bob")
    _error(
        await http.post("/v1/auth/token", json=_token_body(alice, nonce)), 401, "invalid_challenge"
    )


async def test_an_expired_challenge_is_refused(
    relay: Relay, http: httpx.AsyncClient, alice: TestAccount
) -> None:
    nonce = await _challenge(http)
    async with relay.state.sessions() as session:
        await session.execute(update(AuthChallenge).values(expires_at=1))
        await session.commit()
    _error(
        await http.post("/v1/auth/token", json=_token_body(alice, nonce)), 401, "challenge_expired"
    )


async def test_challenge_for_unknown_user_or_device_is_404(
    http: httpx.AsyncClient, alice: TestAccount
) -> None:
    for username, device_id in (("nobody", 1), ("alice", 2)):
        resp = await http.post(
            "/v1/auth/challenge", json={"username": username, "device_id": device_id}
        )
        _error(resp, 404, "unknown_device")


@pytest.mark.parametrize(
    "body",
    [
        {"username": "alice"},
        {"username": "alice", "device_id": "one"},
        {"username": "alice", "device_id": 0},
        {"username": "alice", "device_id": 2**32},
        {"username": "ALICE", "device_id": 1},
        [],
    ],
)
async def test_malformed_challenge_requests_are_422(http: httpx.AsyncClient, body: object) -> None:
    _error(await http.post("/v1/auth/challenge", json=body), 422, "invalid_request")


async def test_token_request_with_invalid_base64_is_422(
    http: httpx.AsyncClient, alice: TestAccount
) -> None:
    nonce = await _challenge(http)
    body = _token_body(alice, nonce)
    body["signature"] = "***"
    _error(await http.post("/v1/auth/token", json=body), 422, "invalid_request")
    body = _token_body(alice, nonce)
    body["nonce"] = base64.urlsafe_b64encode(b"\xfb" * 32).decode()  # URL-safe alphabet
    _error(await http.post("/v1/auth/token", json=body), 422, "invalid_request")


async def test_expired_revoked_and_forged_tokens_are_401(
    relay: Relay, http: httpx.AsyncClient, alice: TestAccount
) -> None:
    expired = await alice.login(http)
    revoked = await alice.login(http)
    live = await alice.login(http)
    async with relay.state.sessions() as session:
        await session.execute(update(AuthToken).where(AuthToken.id == 1).values(expires_at=1))
        await session.commit()
    assert (await http.delete("/v1/auth/token", headers=auth_header(revoked))).status_code == 204
    forged = base64.urlsafe_b64encode(bytes(32)).rstrip(b"=").decode()
    cases = [
        (expired, "token_expired"),
        (revoked, "token_revoked"),
        (forged, "invalid_token"),
        (live[:-1], "invalid_token"),
        ("x" * 500, "invalid_token"),
    ]
    for token, code in cases:
        resp = await http.get("/v1/prekeys/count", headers=auth_header(token))
        _error(resp, 401, code)
        assert resp.headers["www-authenticate"] == "Bearer"
    assert (await http.get("/v1/prekeys/count", headers=auth_header(live))).status_code == 200


async def test_tokens_are_accepted_only_in_the_authorization_header(
    http: httpx.AsyncClient, alice: TestAccount
) -> None:
    token = await alice.login(http)
    _error(await http.get(f"/v1/prekeys/count?token={token}"), 401, "missing_token")
    _error(await http.get(f"/v1/prekeys/count?access_token={token}"), 401, "missing_token")
    _error(
        await http.get("/v1/prekeys/count", headers={"Authorization": f"Basic {token}"}),
        401,
        "missing_token",
    )
    _error(
        await http.get("/v1/prekeys/count", headers={"Cookie": f"token={token}"}),
        401,
        "missing_token",
    )


async def test_only_the_newest_challenges_of_a_device_stay_valid(
    http: httpx.AsyncClient, alice: TestAccount
) -> None:
    nonces = [await _challenge(http) for _ in range(12)]
    _error(
        await http.post("/v1/auth/token", json=_token_body(alice, nonces[0])),
        401,
        "invalid_challenge",
    )
    assert (
        await http.post("/v1/auth/token", json=_token_body(alice, nonces[-1]))
    ).status_code == 200


async def test_the_sweeper_forgets_expired_challenges_and_tokens(
    relay: Relay, http: httpx.AsyncClient, alice: TestAccount
) -> None:
    from server.auth.maintenance import sweep_expired
    from server.clock import Clock

    await alice.login(http)
    live = await alice.login(http)
    await _challenge(http)
    async with relay.state.sessions() as session:
        await session.execute(update(AuthChallenge).values(expires_at=1))
        await session.execute(update(AuthToken).where(AuthToken.id == 1).values(expires_at=1))
        await session.commit()
    assert await sweep_expired(relay.state.sessions, Clock().now()) == (1, 1)
    assert len((await table_snapshot(relay.app, ["auth_tokens"]))["auth_tokens"]) == 1
    assert (await http.get("/v1/prekeys/count", headers=auth_header(live))).status_code == 200


def test_challenge_message_matches_the_documented_vector() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from server.auth.service import challenge_message
    from tests.server.relay_harness import REPO

    doc = (REPO / "docs" / "protocol-relay.md").read_text()
    message = challenge_message("alice", 1, bytes(range(32)))
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    signature = key.sign(message)
    compact = doc.replace(" ", "").replace("\n", "")
    assert message.hex() in compact
    assert signature.hex() in compact
    assert key.public_key().public_bytes_raw().hex() in compact


async def test_many_concurrent_logins_all_succeed_on_sqlite(tmp_path: Path) -> None:
    import asyncio

    async with running_relay(make_settings(tmp_path)) as relay:
        accounts = [TestAccount.new(f"user{i:02d}") for i in range(12)]
        limits = httpx.Limits(max_connections=50)
        async with relay.client(limits=limits) as http:
            for account in accounts:
                assert (await account.register(http)).status_code == 201

            async def login_twice(account: TestAccount) -> list[str]:
                return [await account.login(http), await account.login(http)]

            tokens = await asyncio.gather(*(login_twice(a) for a in accounts * 2))
            flat = [t for pair in tokens for t in pair]
            assert len(set(flat)) == len(flat) == 48
            counts = await asyncio.gather(
                *(http.get("/v1/prekeys/count", headers=auth_header(t)) for t in flat)
            )
            assert {r.status_code for r in counts} == {200}


async def test_well_formed_logins_skip_fastapi_and_answer_as_its_routes(
    relay: Relay, http: httpx.AsyncClient, alice: TestAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``server.auth.fastpath`` answers well-formed logins without FastAPI's dependency
    solving; its answers (success and refusals) equal the routes', which still serve any
    other request (here: the same bodies as ``application/merge-patch+json``, JSON to
    FastAPI but not the fast path's exact ``application/json``)."""
    import fastapi.routing

    solved: list[str] = []
    original = fastapi.routing.solve_dependencies  # type: ignore[attr-defined]

    async def counting(*args: object, **kwargs: object) -> object:
        solved.append(str(kwargs["request"].url.path))  # type: ignore[attr-defined]
        return await original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    device = alice.devices[0]

    async def both(path: str, body: object) -> list[tuple[int, str, dict[str, object]]]:
        answers = []
        for content_type in ("application/json", "application/merge-patch+json"):
            resp = await http.post(path, json=body, headers={"content-type": content_type})
            answers.append(
                (resp.status_code, resp.headers.get("www-authenticate", ""), resp.json())
            )
        return answers

    # Success: the fast path's answer has the route's shape (values differ: fresh nonces).
    fast, routed = await both("/v1/auth/challenge", {"username": "alice", "device_id": 1})
    assert fast[0] == routed[0] == 200 and fast[2].keys() == routed[2].keys()
    assert solved == ["/v1/auth/challenge"]  # only the merge-patch+json request
    nonces = [base64.b64decode(str(a[2]["nonce"])) for a in (fast, routed)]
    for nonce in nonces:
        fast_token = await http.post("/v1/auth/token", json=_token_body(alice, nonce))
        assert fast_token.status_code == 200, fast_token.text
        assert list(fast_token.json()) == ["token", "token_type", "expires_at", "device_id"]
    assert solved == ["/v1/auth/challenge"]
    # Refusals: the same status, code, message and headers either way.
    for path, body in [
        ("/v1/auth/challenge", {"username": "nobody", "device_id": 1}),
        ("/v1/auth/challenge", {"username": "alice", "device_id": 9}),
        ("/v1/auth/challenge", {"username": "alice", "device_id": True}),
        ("/v1/auth/challenge", {"username": "alice\n", "device_id": 1}),
        ("/v1/auth/challenge", {"username": "alice", "device_id": 1, "x": 1}),
        ("/v1/auth/token", {**_token_body(alice, b"\x00" * 32, device)}),
        ("/v1/auth/token", {**_token_body(alice, b"\x00" * 31, device)}),
        ("/v1/auth/token", {**_token_body(alice, b"\x00" * 32, device), "nonce": "AA"}),
    ]:
        fast, routed = await both(path, body)
        assert fast == routed, (path, body)
        assert fast[0] in (401, 404, 422), fast
    # A bad signature burns the challenge on either path.
    for content_type in ("application/json", "application/merge-patch+json"):
        nonce = await _challenge(http)
        bad = {**_token_body(alice, nonce), "signature": b64(b"\x01" * 64)}
        resp = await http.post("/v1/auth/token", json=bad, headers={"content-type": content_type})
        assert (resp.status_code, resp.json()["error"]) == (401, "bad_signature")
        again = await http.post("/v1/auth/token", json=_token_body(alice, nonce))
        assert (again.status_code, again.json()["error"]) == (401, "invalid_challenge")
    # The HTTP metrics label fast-path requests by their route, as before.
    text = (await http.get("/metrics")).text
    assert 'vox_http_requests_total{route="/v1/auth/challenge",status="200"} 4.0' in text
    assert 'vox_http_requests_total{route="/v1/auth/token",status="200"} 2.0' in text
    assert 'route="unmatched"' not in text
