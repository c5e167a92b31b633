"""Finding 10: one error shape and code per failure on every endpoint, strict integers, a
complete ``Allow``, a 413 the client can read, and an OpenAPI document that lists every
error response. All through a real relay on loopback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tests.server.relay_harness import TestAccount, auth_header, make_settings, running_relay

#: Every endpoint that takes a JSON body (method, path, needs a token).
JSON_ENDPOINTS = [
    ("POST", "/v1/accounts", False),
    ("POST", "/v1/auth/challenge", False),
    ("POST", "/v1/auth/token", False),
    ("PUT", "/v1/accounts/alice/devices", True),
    ("POST", "/v1/prekeys", True),
]

NOT_JSON = [
    b"{not json",
    b'{"username": "alice",',
    b"\xff\xfe{}",  # not UTF-8
    b"[" * 100_000 + b"]" * 100_000,  # nested too deeply for any parser
    b"",
]


async def test_a_body_that_is_not_json_is_malformed_json_on_every_endpoint(
    tmp_path: Path,
) -> None:
    async with running_relay(make_settings(tmp_path)) as relay, relay.client() as http:
        token = await TestAccount.new("alice").register_and_login(http)
        for method, path, needs_token in JSON_ENDPOINTS:
            headers = {"Content-Type": "application/json"}
            if needs_token:
                headers |= auth_header(token)
            for body in NOT_JSON:
                resp = await http.request(method, path, content=body, headers=headers)
                assert resp.status_code == 400, (method, path, body[:20], resp.text)
                assert resp.json()["error"] == "malformed_json", (method, path, body[:20])
                assert resp.json()["message"]


async def test_a_body_without_a_json_content_type_is_415_on_every_endpoint(
    tmp_path: Path,
) -> None:
    async with running_relay(make_settings(tmp_path)) as relay, relay.client() as http:
        token = await TestAccount.new("alice").register_and_login(http)
        for method, path, needs_token in JSON_ENDPOINTS:
            for content_type in (None, "text/plain", "application/x-www-form-urlencoded"):
                headers = auth_header(token) if needs_token else {}
                if content_type:
                    headers["Content-Type"] = content_type
                resp = await http.request(method, path, content=b'{"a": 1}', headers=headers)
                assert resp.status_code == 415, (method, path, content_type, resp.text)
                assert resp.json()["error"] == "unsupported_media_type"


async def test_booleans_and_floats_are_not_integers(tmp_path: Path) -> None:
    async with running_relay(make_settings(tmp_path)) as relay, relay.client() as http:
        alice = TestAccount.new("alice")
        token = await alice.register_and_login(http)
        for device_id in (True, 1.0, "1"):
            resp = await http.post(
                "/v1/auth/challenge", json={"username": "alice", "device_id": device_id}
            )
            assert resp.status_code == 422, (device_id, resp.text)
            assert resp.json()["error"] == "invalid_request"
        prekey = alice.one_time(alice.devices[0], 1)[0]
        for key_id in (True, 7.0):
            resp = await http.post(
                "/v1/prekeys",
                json={"one_time_prekeys": [{**prekey, "key_id": key_id}]},
                headers=auth_header(token),
            )
            assert resp.status_code == 422, (key_id, resp.text)
            assert resp.json()["error"] == "invalid_request"
        for query in ("1.0", "+1", " 1", "1e0", "true"):
            resp = await http.get(
                "/v1/prekeys/alice", params={"device_id": query}, headers=auth_header(token)
            )
            assert resp.status_code == 422, (query, resp.text)
            assert resp.json()["error"] == "invalid_request"
        # The integers themselves still work.
        resp = await http.get(
            "/v1/prekeys/alice", params={"device_id": "1"}, headers=auth_header(token)
        )
        assert resp.status_code == 200, resp.text
        resp = await http.post("/v1/auth/challenge", json={"username": "alice", "device_id": 1})
        assert resp.status_code == 200, resp.text


async def test_a_405_names_every_method_of_the_path(tmp_path: Path) -> None:
    async with running_relay(make_settings(tmp_path)) as relay, relay.client() as http:
        cases = {
            ("DELETE", "/v1/accounts/alice/devices"): {"GET", "PUT"},
            ("PATCH", "/v1/auth/token"): {"POST", "DELETE"},
            ("PUT", "/v1/accounts"): {"POST"},
            ("POST", "/v1/prekeys/count"): {"GET"},
        }
        for (method, path), allowed in cases.items():
            resp = await http.request(method, path)
            assert resp.status_code == 405, (method, path)
            assert {m.strip() for m in resp.headers["allow"].split(",")} == allowed, path
            assert resp.json()["error"] == "method_not_allowed"


async def _raw_post(port: int, path: str, body: bytes, extra: bytes = b"") -> bytes:
    """POST ``body`` on a raw socket, writing all of it, then read the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n".encode()
            + extra
            + b"\r\n"
        )
        for i in range(0, len(body), 65536):
            writer.write(body[i : i + 65536])
            await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()


async def test_a_body_over_the_limit_gets_a_413_the_client_can_read(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    limit = settings.limits.max_body_bytes
    async with running_relay(settings) as relay, relay.client() as http:
        for size in (limit + 1, 2 * limit, 3 * limit):
            # httpx writes the whole body before it reads: a reset would raise here.
            resp = await http.post(
                "/v1/accounts",
                content=b" " * size,
                headers={"Content-Type": "application/json"},
            )
            assert resp.status_code == 413, size
            assert resp.json()["error"] == "body_too_large"
            assert resp.headers["connection"] == "close"
        answer = await _raw_post(relay.port, "/v1/auth/challenge", b"x" * (2 * limit))
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413"), head
        assert json.loads(body)["error"] == "body_too_large"
        # A client that waits for "100 Continue" is answered without sending the body.
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(
            b"POST /v1/accounts HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {100 * limit}\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        answer = await asyncio.wait_for(reader.read(), timeout=30)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
        # The relay is fine afterwards.
        assert (await http.get("/healthz")).status_code == 200


def _operations(schema: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): op
        for path, ops in schema["paths"].items()
        for method, op in ops.items()
    }


async def test_the_openapi_document_lists_every_error_response(tmp_path: Path) -> None:
    async with running_relay(make_settings(tmp_path)) as relay, relay.client() as http:
        schema = (await http.get("/openapi.json")).json()
    ops = _operations(schema)
    expected = {
        ("POST", "/v1/accounts"): {400, 403, 408, 409, 413, 415, 422, 429},
        ("GET", "/v1/accounts/{username}/devices"): {401, 404, 422, 429},
        ("PUT", "/v1/accounts/{username}/devices"): {
            400,
            401,
            403,
            404,
            408,
            409,
            413,
            415,
            422,
            429,
        },
        ("POST", "/v1/auth/challenge"): {400, 403, 404, 408, 413, 415, 422, 429},
        ("POST", "/v1/auth/token"): {400, 401, 403, 408, 413, 415, 422, 429},
        ("DELETE", "/v1/auth/token"): {401, 429},
        ("POST", "/v1/prekeys"): {400, 401, 408, 409, 413, 415, 422, 429},
        ("GET", "/v1/prekeys/count"): {401, 429},
        ("GET", "/v1/prekeys/{username}"): {401, 404, 422, 429},
        ("POST", "/v1/attachments"): {400, 401, 408, 413, 429, 507},
        ("GET", "/v1/attachments/{attachment_id}"): {401, 404, 422, 429},
        ("GET", "/readyz"): {503},
    }
    for key, statuses in expected.items():
        documented = {int(s) for s in ops[key]["responses"] if s[0] in "45"}
        assert statuses <= documented, (key, statuses - documented)
    ref = {"$ref": "#/components/schemas/ErrorBody"}
    for key, op in ops.items():
        for status, response in op["responses"].items():
            if status[0] in "45":
                assert response["content"] == {"application/json": {"schema": ref}}, key
        if op.get("security"):
            assert "401" in op["responses"], key
    assert set(schema["components"]["schemas"]["ErrorBody"]["properties"]) == {
        "error",
        "message",
    }
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
