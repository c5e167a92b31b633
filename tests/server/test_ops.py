"""Config, health, readiness, metrics, body limits, error shape and secret-free logs."""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import AsyncIterator, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.logs import JsonFormatter
from tests.server.relay_harness import (
    TestAccount,
    auth_header,
    b64,
    make_settings,
    running_relay,
    table_snapshot,
)


async def test_config_serves_brand_policy_and_limits(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        registration="invite",
        brand={
            "name": "Acme Chat",
            "primary_color": "#112233",
            "logo_url": "https://a.example/l.png",
        },
        limits={"max_recipients": 50},
    )
    async with running_relay(settings) as relay, relay.client() as http:
        body = (await http.get("/v1/config")).json()
    assert body["protocol_version"] == 1
    assert body["registration"] == "invite"
    assert body["brand"]["name"] == "Acme Chat"
    assert body["brand"]["primary_color"] == "#112233"
    assert body["brand"]["logo_url"] == "https://a.example/l.png"
    assert body["limits"]["max_recipients"] == 50
    assert body["limits"]["max_attachment_bytes"] == 100 * 1024 * 1024
    assert body["limits"]["envelope_ttl_seconds"] == 30 * 86400


async def test_health_and_readiness_on_sqlite(http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    assert (await http.get("/readyz")).json() == {"status": "ready", "checks": {"database": "ok"}}


@pytest.mark.redis
async def test_readiness_checks_redis_when_configured(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url=redis_url)
    async with running_relay(settings) as relay, relay.client() as http:
        resp = await http.get("/readyz")
    assert resp.status_code == 200
    assert resp.json()["checks"] == {"database": "ok", "redis": "ok"}


async def test_readiness_is_degraded_not_unavailable_when_redis_is_unreachable(
    tmp_path: Path,
) -> None:
    # A load balancer keeps the node (200); the body tells monitoring it is degraded.
    settings = make_settings(tmp_path, redis_url="redis://127.0.0.1:1/0")
    async with running_relay(settings) as relay, relay.client() as http:
        resp = await http.get("/readyz")
        assert resp.status_code == 200
        assert resp.json()["status"] == "degraded"
        assert resp.json()["checks"]["database"] == "ok"
        assert resp.json()["checks"]["redis"].startswith("error:")
        assert (await http.get("/healthz")).status_code == 200


async def test_each_app_has_its_own_metrics(tmp_path: Path) -> None:
    async with (
        running_relay(make_settings(tmp_path / "a")) as a,
        running_relay(make_settings(tmp_path / "b")) as b,
        a.client() as http_a,
        b.client() as http_b,
    ):
        await TestAccount.new("alice").register_and_login(http_a)
        text_a = (await http_a.get("/metrics")).text
        text_b = (await http_b.get("/metrics")).text
    assert "vox_accounts_registered_total 1.0" in text_a
    assert "vox_tokens_issued_total 1.0" in text_a
    assert "vox_fanout_dropped_signals_total 0.0" in text_a
    assert "vox_accounts_registered_total 0.0" in text_b
    assert 'vox_http_requests_total{route="/v1/accounts",status="201"} 1.0' in text_a


async def test_oversized_bodies_are_refused_with_413(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, limits={"max_body_bytes": 32768, "prekey_batch_max": 5})
    async with running_relay(settings) as relay, relay.client() as http:
        before = await table_snapshot(relay.app)
        body = TestAccount.new("alice").register_body(one_time=0, one_time_pq=30)
        resp = await http.post("/v1/accounts", json=body)
        assert resp.status_code == 413
        assert resp.json()["error"] == "body_too_large"

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(40):
                yield b" " * 1024

        resp = await http.post(
            "/v1/accounts", content=chunks(), headers={"content-type": "application/json"}
        )
        assert resp.status_code == 413
        assert resp.json()["error"] == "body_too_large"
        assert await table_snapshot(relay.app) == before


async def test_unknown_paths_and_methods_get_json_errors(http: httpx.AsyncClient) -> None:
    resp = await http.get("/v1/nothing-here")
    assert resp.status_code == 404 and resp.json()["error"] == "not_found"
    resp = await http.delete("/v1/config")
    assert resp.status_code == 405 and resp.json()["error"] == "method_not_allowed"


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


async def test_logs_never_contain_tokens_keys_or_nonces(
    tmp_path: Path, captured_logs: io.StringIO
) -> None:
    settings = make_settings(tmp_path, access_log=True, log_level="debug")
    async with running_relay(settings) as relay, relay.client() as http:
        alice = TestAccount.new("alice")
        body = alice.register_body()
        assert (await http.post("/v1/accounts", json=body)).status_code == 201
        ch = await http.post("/v1/auth/challenge", json={"username": "alice", "device_id": 1})
        nonce = ch.json()["nonce"]
        token = await alice.login(http)
        bob = TestAccount.new("bob")
        bob_body = bob.register_body()
        await http.post("/v1/accounts", json=bob_body)
        bundle = await http.get("/v1/prekeys/bob", headers=auth_header(token))
        await http.get("/v1/prekeys/bob", headers={"Authorization": "Bearer " + "A" * 43})
        await http.get("/v1/prekeys/count", headers=auth_header(token + "x"))
        await http.delete("/v1/auth/token", headers=auth_header(token))
    text = captured_logs.getvalue()
    assert "account_registered" in text  # logging did happen
    assert "GET /v1/prekeys/bob" in text  # access log too
    secrets = [token, nonce, b64(alice.account_key), body["device_list"]]
    secrets += [body["prekeys"]["signed_prekey"]["public_key"]]
    secrets += [k["public_key"] for k in bob_body["prekeys"]["one_time_prekeys"]]
    secrets += [bundle.json()["devices"][0]["identity_key"]]
    secrets += [base64.urlsafe_b64decode(token + "=").hex()]
    for secret in secrets:
        assert secret not in text


def test_a_test_that_reconfigures_logging_leaves_no_trace() -> None:
    # The autouse fixture (tests.logging_state) undoes configure_logging and uvicorn's own
    # dictConfig; before it, the access-log capture above missed uvicorn.access records
    # whenever a push test (which runs both) had run earlier in the same process.
    import logging.config

    from uvicorn.config import LOGGING_CONFIG

    from server.logs import configure_logging
    from tests.logging_state import preserved_logging

    names = ["", "uvicorn", "uvicorn.access", "uvicorn.error", "httpx", "websockets"]

    def state() -> list[tuple[object, ...]]:
        out: list[tuple[object, ...]] = []
        for name in names:
            lg = logging.getLogger(name)
            own = [h for h in lg.handlers if type(h).__module__ != "_pytest.logging"]
            out.append((lg.level, lg.propagate, lg.disabled, own))
        return out

    before = state()
    with preserved_logging():
        configure_logging("debug", stream=io.StringIO())
        logging.config.dictConfig(LOGGING_CONFIG)
        logging.getLogger("uvicorn.access").propagate = False
        assert state() != before
    assert state() == before


async def test_rest_requests_are_rate_limited_per_ip(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, limits={"requests_per_minute_per_ip": 5})
    async with running_relay(settings) as relay, relay.client() as http:
        body = {"username": "alice", "device_id": 1}
        codes = [(await http.post("/v1/auth/challenge", json=body)).status_code for _ in range(5)]
        assert codes == [404] * 5
        resp = await http.post("/v1/auth/challenge", json=body)
        assert resp.status_code == 429
        assert resp.json()["error"] == "rate_limited"
        assert int(resp.headers["retry-after"]) >= 1
        # Health, config and metrics are not counted.
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/v1/config")).status_code == 200


async def test_unexpected_errors_are_a_json_500_without_details(
    tmp_path: Path, captured_logs: io.StringIO
) -> None:
    from server.app import create_app

    app = create_app(make_settings(tmp_path))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret-detail-123")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://relay") as http:
        resp = await http.get("/boom")
    assert resp.status_code == 500
    assert resp.json() == {"error": "internal", "message": "internal server error"}
    assert "internal_error" in captured_logs.getvalue()
    assert "secret-detail-123" not in captured_logs.getvalue()


async def test_rate_limit_follows_x_forwarded_for_from_a_trusted_proxy(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, forwarded_allow_ips="127.0.0.1", limits={"requests_per_minute_per_ip": 3}
    )
    body = {"username": "alice", "device_id": 1}
    async with running_relay(settings) as relay, relay.client() as http:
        first = {"X-Forwarded-For": "203.0.113.7"}
        second = {"X-Forwarded-For": "198.51.100.9"}
        for _ in range(3):
            resp = await http.post("/v1/auth/challenge", json=body, headers=first)
            assert resp.status_code == 404
        assert (await http.post("/v1/auth/challenge", json=body, headers=first)).status_code == 429
        assert (await http.post("/v1/auth/challenge", json=body, headers=second)).status_code == 404


async def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, forwarded_allow_ips="192.0.2.1", limits={"requests_per_minute_per_ip": 3}
    )
    body = {"username": "alice", "device_id": 1}
    async with running_relay(settings) as relay, relay.client() as http:
        for i in range(3):
            spoof = {"X-Forwarded-For": f"203.0.113.{i}"}
            assert (
                await http.post("/v1/auth/challenge", json=body, headers=spoof)
            ).status_code == 404
        spoof = {"X-Forwarded-For": "203.0.113.99"}
        assert (await http.post("/v1/auth/challenge", json=body, headers=spoof)).status_code == 429


async def test_openapi_describes_every_core_endpoint_with_base64_fields(
    http: httpx.AsyncClient,
) -> None:
    spec = (await http.get("/openapi.json")).json()
    for path in (
        "/v1/accounts",
        "/v1/accounts/{username}/devices",
        "/v1/auth/challenge",
        "/v1/auth/token",
        "/v1/prekeys",
        "/v1/prekeys/count",
        "/v1/prekeys/{username}",
        "/v1/config",
    ):
        assert path in spec["paths"], path
    nonce = spec["components"]["schemas"]["TokenIn"]["properties"]["nonce"]
    assert (nonce["type"], nonce["format"], nonce["contentEncoding"]) == (
        "string",
        "byte",
        "base64",
    )


async def test_an_invalid_content_length_is_a_400(tmp_path: Path) -> None:
    from server.app import create_app

    app = create_app(make_settings(tmp_path))
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/auth/challenge",
        "raw_path": b"/v1/auth/challenge",
        "query_string": b"",
        "headers": [(b"content-length", b"12abc"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 400
    assert b'"error": "bad_request"' in sent[1]["body"]


def test_debug_logging_never_enables_frame_logging_of_the_websocket_library() -> None:
    import io
    import logging

    from server.logs import configure_logging

    configure_logging("debug", stream=io.StringIO())
    try:
        assert logging.getLogger().isEnabledFor(logging.DEBUG)
        for name in ("uvicorn.error", "websockets", "websockets.server"):
            assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
    finally:
        configure_logging("info", stream=None)
