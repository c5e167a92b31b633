"""A stand-in push service for the Web Push tests (no tests here).

:func:`push_receiver` runs a small real HTTP server (uvicorn on a free loopback port) that
plays an RFC 8030 push service: it accepts ``POST /push/<name>``, checks the VAPID
``Authorization`` (RFC 8292: ES256 JWT signature against the relay's public key, ``aud``,
``exp``, ``sub``), decrypts the RFC 8291 ``aes128gcm`` body with the private key of the
subscription it generated (its own HKDF/AES-GCM code, independent of the relay's library) and
records what it got. ``receiver.respond(name, 410, ...)`` scripts the answers.

:class:`UserAgent` is the browser side of one subscription: a P-256 key pair and an auth
secret, and the ``PushSubscription.toJSON()`` body to register.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = [
    "PushReceiver",
    "Received",
    "UserAgent",
    "b64url",
    "push_receiver",
    "push_receiver_thread",
    "unb64url",
]


def b64url(data: bytes) -> str:
    """Base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    """Base64url, padding optional."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class UserAgent:
    """A browser's push subscription keys (RFC 8291 section 2)."""

    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    @property
    def public_key(self) -> bytes:
        """``p256dh``: the uncompressed P-256 point (65 bytes)."""
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    def subscription(self, endpoint: str) -> dict[str, Any]:
        """The ``PushSubscription.toJSON()`` body for ``endpoint``."""
        return {
            "endpoint": endpoint,
            "expirationTime": None,
            "keys": {"p256dh": b64url(self.public_key), "auth": b64url(self.auth)},
        }

    def decrypt(self, body: bytes) -> bytes:
        """Decrypt an RFC 8291 ``aes128gcm`` message (one record)."""
        salt, rs, idlen = body[:16], int.from_bytes(body[16:20], "big"), body[20]
        sender_public = body[21 : 21 + idlen]
        ciphertext = body[21 + idlen :]
        assert idlen == 65 and rs >= 18 and len(ciphertext) <= rs, (idlen, rs, len(ciphertext))
        peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), sender_public)
        ecdh = self.private_key.exchange(ec.ECDH(), peer)
        key_info = b"WebPush: info\x00" + self.public_key + sender_public
        ikm = HKDF(hashes.SHA256(), 32, salt=self.auth, info=key_info).derive(ecdh)
        cek = HKDF(hashes.SHA256(), 16, salt=salt, info=b"Content-Encoding: aes128gcm\x00")
        nonce = HKDF(hashes.SHA256(), 12, salt=salt, info=b"Content-Encoding: nonce\x00")
        padded = AESGCM(cek.derive(ikm)).decrypt(nonce.derive(ikm), ciphertext, None)
        stripped = padded.rstrip(b"\x00")
        assert stripped.endswith(b"\x02"), "last record must end with the 0x02 delimiter"
        return stripped[:-1]


@dataclass
class Received:
    """One push request as the receiver saw it."""

    name: str
    headers: dict[str, str]
    body: bytes
    claims: dict[str, Any]
    vapid_key: str
    status: int


def _verify_vapid(
    header: str, expected_key: str | None, audience: str
) -> tuple[dict[str, Any], str]:
    """Check ``vapid t=<jwt>, k=<key>``; return (claims, key). Raises AssertionError."""
    scheme, _, params = header.partition(" ")
    assert scheme.lower() == "vapid", header[:20]
    parts = dict(p.strip().split("=", 1) for p in params.split(","))
    token, key = parts["t"], parts["k"]
    if expected_key is not None:
        assert key == expected_key, "k is not the relay's VAPID public key"
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(key))
    signing_input, _, sig_text = token.rpartition(".")
    header_text, _, claims_text = signing_input.partition(".")
    assert json.loads(unb64url(header_text)) == {"typ": "JWT", "alg": "ES256"}
    sig = unb64url(sig_text)
    assert len(sig) == 64
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        public.verify(der, signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise AssertionError("VAPID JWT signature does not verify") from None
    claims: dict[str, Any] = json.loads(unb64url(claims_text))
    assert claims["aud"] == audience, claims
    now = time.time()
    assert now < claims["exp"] <= now + 24 * 3600 + 60, claims
    assert str(claims["sub"]).startswith(("mailto:", "https://")), claims
    return claims, key


@dataclass
class PushReceiver:
    """The running stand-in push service."""

    port: int
    #: The relay's VAPID public key (base64url), checked against every request's ``k``.
    vapid_key: str | None = None
    agents: dict[str, UserAgent] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _answers: dict[str, list[int]] = field(default_factory=dict)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT`` (the VAPID audience the relay must use)."""
        return f"http://127.0.0.1:{self.port}"

    def endpoint(self, name: str) -> str:
        """A fresh subscription's endpoint URL; its keys are in ``agents[name]``."""
        self.agents.setdefault(name, UserAgent())
        return f"{self.origin}/push/{name}"

    def subscription(self, name: str) -> dict[str, Any]:
        """The registration body of subscription ``name``."""
        return self.agents.setdefault(name, UserAgent()).subscription(self.endpoint(name))

    def respond(self, name: str, *statuses: int) -> None:
        """Answer the next pushes to ``name`` with these statuses (then 201)."""
        self._answers.setdefault(name, []).extend(statuses)

    def pushes(self, name: str) -> list[Received]:
        """Requests received for ``name``."""
        return [r for r in self.received if r.name == name]

    async def wait_for(self, name: str, count: int = 1, wait: float = 30.0) -> list[Received]:
        """Wait until ``name`` has received ``count`` requests."""
        deadline = time.monotonic() + wait
        while len(self.pushes(name)) < count:
            assert time.monotonic() < deadline, f"{name}: {len(self.pushes(name))} pushes"
            self._arrived.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), 0.2)
        return self.pushes(name)

    async def handle(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = await request.body()
        answers = self._answers.get(name)
        status = answers.pop(0) if answers else 201
        try:
            assert name in self.agents, f"unknown subscription {name}"
            # The audience is this service's origin as the relay addressed it (its Host).
            audience = f"http://{request.headers.get('host', '')}"
            claims, key = _verify_vapid(
                request.headers.get("authorization", ""), self.vapid_key, audience
            )
            assert request.headers.get("content-encoding") == "aes128gcm"
            plaintext = self.agents[name].decrypt(body)
        except Exception as exc:
            self.errors.append(f"{name}: {exc.__class__.__name__}: {exc}")
            self._arrived.set()
            return Response(status_code=400)
        self.received.append(Received(name, dict(request.headers), plaintext, claims, key, status))
        self._arrived.set()
        headers = {"Retry-After": "0"} if status in (429, 503) else {}
        return Response(status_code=status, headers=headers)


@asynccontextmanager
async def push_receiver() -> AsyncIterator[PushReceiver]:
    """Run a :class:`PushReceiver` on a free 127.0.0.1 port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    receiver = PushReceiver(port=sock.getsockname()[1])
    app = Starlette(routes=[Route("/push/{name}", receiver.handle, methods=["POST"])])
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield receiver
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, timeout=15)
        finally:
            sock.close()


@contextmanager
def push_receiver_thread() -> Iterator[PushReceiver]:
    """:func:`push_receiver` on an event loop in a thread of its own, for synchronous tests
    (the browser tests drive Playwright's sync API). Read ``pushes()`` from the test's thread;
    ``wait_for`` belongs to the receiver's loop."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="push-receiver", daemon=True)
    thread.start()
    running = push_receiver()
    try:
        receiver = asyncio.run_coroutine_threadsafe(running.__aenter__(), loop).result(30)
        try:
            yield receiver
        finally:
            asyncio.run_coroutine_threadsafe(running.__aexit__(None, None, None), loop).result(30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
