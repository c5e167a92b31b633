"""Reusable harness: a real relay on loopback, plus test identities that talk to it.

Start a relay (in-process uvicorn on a free 127.0.0.1 port, migrations applied)::

    from tests.server.relay_harness import make_settings, running_relay

    async def test_something(tmp_path: Path) -> None:
        settings = make_settings(tmp_path)                      # SQLite in tmp_path
        # settings = make_settings(tmp_path, database_url=postgres_url)   # PostgreSQL
        async with running_relay(settings) as relay:
            async with relay.client() as http:                  # httpx.AsyncClient
                alice = TestAccount.new("alice")
                token = await alice.register_and_login(http)
            relay.ws_url                                        # "ws://127.0.0.1:PORT/v1/ws"

``running_relay(settings, app=...)`` accepts an app you built yourself (e.g. after
registering extra routers); ``relay.app`` is the live FastAPI app and ``relay.state`` its
:class:`~server.state.RelayState` (``relay.state.sessions``, ``.delivery``, ``.hub``... inside the
block).

Or as a subprocess, exactly like an operator (``vox-relay serve``)::

    async with relay_process(["serve", "--port", str(port)], env=...) as proc: ...

Test identities use real Ed25519 keys (device list and challenge signatures); prekey
public keys are random bytes of the right typed shape (the relay treats them as opaque).

``table_snapshot(relay.app)`` returns every row of the core tables, to assert that a
rejected request changed nothing; ``auth_header(token)`` builds the ``Authorization``
header; ``free_port()`` (a race-free port for a subprocess server, :mod:`tests.ports`) and
``make_settings(..., limits={...})`` help with the rest.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from fastapi import FastAPI

from server.app import create_app
from server.db.engine import create_engine
from server.db.migrate import upgrade
from server.edge.serve import uvicorn_config
from server.settings import Settings, load_settings
from server.state import RelayState, relay_state
from tests.ports import free_port

__all__ = [
    "Relay",
    "TestAccount",
    "TestDevice",
    "b64",
    "free_port",
    "make_settings",
    "migrate",
    "relay_process",
    "running_relay",
]

REPO = Path(__file__).resolve().parents[2]


def b64(data: bytes) -> str:
    """Standard base64 with padding (the REST API's binary encoding)."""
    return base64.b64encode(data).decode("ascii")


def make_settings(tmp_path: Path, *, database_url: str | None = None, **overrides: Any) -> Settings:
    """Settings for a test relay: data in ``tmp_path``, no environment, generous IP rate."""
    base: dict[str, Any] = {
        "data_dir": tmp_path / "vox-data",
        "database_url": database_url,
        "log_json": True,
        "access_log": False,
    }
    limits = dict(overrides.pop("limits", {}))
    limits.setdefault("requests_per_minute_per_ip", 100_000)
    # Every test client shares 127.0.0.1: per-address caps generous unless a test sets them.
    for name, value in (
        ("max_unauthenticated_connections_per_address", 100_000),
        ("max_authenticated_connections_per_address", 100_000),
        ("ws_connects_per_minute_per_address", 100_000),
        ("ws_connects_per_minute_per_device", 100_000),
        ("challenges_per_minute_per_address", 100_000),
        ("registrations_per_hour_per_ip", 100_000),
    ):
        limits.setdefault(name, value)
    base["limits"] = limits
    base.update(overrides)
    return load_settings(environ={}, **base)


async def migrate(settings: Settings) -> None:
    """Apply all migrations to the settings' database.

    A new SQLite database (the default ``relay.sqlite3`` in the data dir) is a copy of one
    migrated once per test process: running the migrations costs 0.3-0.8 s, a copy a
    millisecond, and hundreds of tests start a relay."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    target = settings.data_dir / "relay.sqlite3"
    if settings.database_url is None and not target.exists():
        shutil.copyfile(await _migrated_sqlite(), target)
        return
    await _upgrade(settings.effective_database_url)


async def _upgrade(url: str) -> None:
    engine = create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


_migrated: dict[int, Path] = {}  # per process (by pid): a forked child makes its own


async def _migrated_sqlite() -> Path:
    """A freshly migrated SQLite file, made on first use in this process."""
    if os.getpid() not in _migrated:
        directory = Path(tempfile.mkdtemp(prefix="vox-test-migrated-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        path = directory / "relay.sqlite3"
        await _upgrade(f"sqlite+aiosqlite:///{path}")
        # The engine closed its last connection: the WAL is checkpointed into the file.
        assert not path.with_name(path.name + "-wal").exists(), "template left a WAL behind"
        _migrated[os.getpid()] = path
    return _migrated[os.getpid()]


@dataclass
class Relay:
    """A relay running on loopback."""

    app: FastAPI
    settings: Settings
    port: int
    server: uvicorn.Server

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:PORT/v1/ws``."""
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    @property
    def state(self) -> RelayState:
        """The app's shared state (database, hub, delivery service, clock...)."""
        return relay_state(self.app)

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An HTTP client for this relay (use as ``async with``)."""
        return httpx.AsyncClient(base_url=self.base_url, timeout=30, **kwargs)


@asynccontextmanager
async def running_relay(
    settings: Settings, *, app: FastAPI | None = None, run_migrations: bool = True
) -> AsyncIterator[Relay]:
    """Run ``create_app(settings)`` (or ``app``) under uvicorn on a free loopback port."""
    if run_migrations:
        await migrate(settings)
    app = app or create_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn_config(app, settings, host="127.0.0.1", port=port)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("relay exited during startup")
            await asyncio.sleep(0.01)
        yield Relay(app=app, settings=settings, port=port, server=server)
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, timeout=15)
        finally:
            sock.close()


@asynccontextmanager
async def relay_process(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    port: int,
    cwd: Path | None = None,
    startup_timeout: float = 120.0,  # a relay can take a minute to start on a loaded machine
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """Run ``vox-relay *args`` as a subprocess and wait until ``/healthz`` answers on ``port``."""
    exe = Path(sys.executable).with_name("vox-relay")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VOX_")}
    full_env.update(env or {})
    proc = subprocess.Popen(  # noqa: ASYNC220 - Popen returns at once; we poll below
        [str(exe), *args],
        env=full_env,
        cwd=cwd or REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + startup_timeout
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                if proc.poll() is not None:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    raise RuntimeError(f"vox-relay exited with {proc.returncode}:\n{out}")
                try:
                    if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("vox-relay did not become healthy")
                await asyncio.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout:
            proc.stdout.close()


# --- test identities ---------------------------------------------------------------------


def _typed_x25519(key: X25519PrivateKey) -> bytes:
    return b"\x01" + key.public_key().public_bytes_raw()


def _typed_ed25519(key: Ed25519PrivateKey) -> bytes:
    return b"\x02" + key.public_key().public_bytes_raw()


@dataclass
class TestDevice:
    """A device: id, X25519 identity key and Ed25519 auth key (real keys)."""

    __test__ = False  # not a pytest test class

    device_id: int
    identity: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate)
    auth: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    next_key_id: int = 1

    @property
    def identity_key(self) -> bytes:
        """Typed X25519 identity key (33 bytes)."""
        return _typed_x25519(self.identity)

    @property
    def auth_key(self) -> bytes:
        """Typed Ed25519 auth key (33 bytes)."""
        return _typed_ed25519(self.auth)

    def sign_challenge(self, username: str, nonce: bytes) -> bytes:
        """Sign the relay's login challenge (``docs/protocol-relay.md``)."""
        name = username.encode()
        msg = (
            b"VoxAuthChallenge-v1\x00"
            + struct.pack(">H", len(name))
            + name
            + struct.pack(">I", self.device_id)
            + nonce
        )
        return self.auth.sign(msg)


@dataclass
class TestAccount:
    """An account: username, Ed25519 account key, its devices and list version."""

    __test__ = False  # not a pytest test class

    username: str
    account: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    devices: list[TestDevice] = field(default_factory=list)
    list_version: int = 0

    @classmethod
    def new(cls, username: str, device_ids: Sequence[int] = (1,)) -> TestAccount:
        """A fresh account with devices ``device_ids``."""
        return cls(username, devices=[TestDevice(i) for i in device_ids])

    @property
    def account_key(self) -> bytes:
        """Typed Ed25519 account key (33 bytes)."""
        return _typed_ed25519(self.account)

    def device(self, device_id: int) -> TestDevice:
        """The device with ``device_id``."""
        return next(d for d in self.devices if d.device_id == device_id)

    def device_list(
        self,
        version: int,
        devices: Sequence[TestDevice] | None = None,
        *,
        signer: Ed25519PrivateKey | None = None,
        username: str | None = None,
    ) -> bytes:
        """``body || signature`` in the contract's signed device list format v1."""
        devs = sorted(devices if devices is not None else self.devices, key=lambda d: d.device_id)
        name = (username or self.username).encode()
        body = bytes([1]) + struct.pack(">H", len(name)) + name
        body += struct.pack(">QH", version, len(devs))
        for d in devs:
            body += struct.pack(">I", d.device_id) + d.identity_key + d.auth_key
        sig = (signer or self.account).sign(b"VoxDeviceList-v1\x00" + body)
        return body + sig

    def signed_prekey(self, key_id: int) -> dict[str, Any]:
        """A signed X25519 prekey (typed key, signed by the account key)."""
        pub = _typed_x25519(X25519PrivateKey.generate())
        return {"key_id": key_id, "public_key": b64(pub), "signature": b64(self.account.sign(pub))}

    def last_resort(self, key_id: int) -> dict[str, Any]:
        """A signed last-resort ML-KEM prekey (random bytes of the typed shape)."""
        pub = b"\x03" + os.urandom(1184)
        return {"key_id": key_id, "public_key": b64(pub), "signature": b64(self.account.sign(pub))}

    def one_time(self, device: TestDevice, n: int) -> list[dict[str, Any]]:
        """``n`` one-time X25519 prekeys with fresh key ids."""
        out = []
        for _ in range(n):
            pub = _typed_x25519(X25519PrivateKey.generate())
            out.append({"key_id": device.next_key_id, "public_key": b64(pub)})
            device.next_key_id += 1
        return out

    def one_time_pq(self, device: TestDevice, n: int) -> list[dict[str, Any]]:
        """``n`` signed one-time ML-KEM prekeys with fresh key ids."""
        out = []
        for _ in range(n):
            pub = b"\x03" + os.urandom(1184)
            out.append(
                {
                    "key_id": device.next_key_id,
                    "public_key": b64(pub),
                    "signature": b64(self.account.sign(pub)),
                }
            )
            device.next_key_id += 1
        return out

    def prekeys(
        self, device: TestDevice, one_time: int = 5, one_time_pq: int = 5
    ) -> dict[str, Any]:
        """A full prekey upload body for ``device``."""
        return {
            "signed_prekey": self.signed_prekey(1),
            "last_resort_prekey": self.last_resort(1),
            "one_time_prekeys": self.one_time(device, one_time),
            "one_time_pq_prekeys": self.one_time_pq(device, one_time_pq),
        }

    def register_body(
        self, *, invite: str | None = None, one_time: int = 5, one_time_pq: int = 5
    ) -> dict[str, Any]:
        """``POST /v1/accounts`` body for the first device (list version 1)."""
        first = self.devices[0]
        body: dict[str, Any] = {
            "username": self.username,
            "account_key": b64(self.account_key),
            "device_list": b64(self.device_list(1, [first])),
            "prekeys": self.prekeys(first, one_time, one_time_pq),
        }
        if invite is not None:
            body["invite"] = invite
        return body

    async def register(
        self,
        http: httpx.AsyncClient,
        *,
        invite: str | None = None,
        one_time: int = 5,
        one_time_pq: int = 5,
    ) -> httpx.Response:
        """Register with the first device; asserts nothing, returns the response."""
        resp = await http.post(
            "/v1/accounts",
            json=self.register_body(invite=invite, one_time=one_time, one_time_pq=one_time_pq),
        )
        if resp.status_code == 201:
            self.list_version = 1
        return resp

    async def login(self, http: httpx.AsyncClient, device_id: int | None = None) -> str:
        """Challenge–response login; returns the bearer token (raises on failure)."""
        device = self.device(device_id) if device_id is not None else self.devices[0]
        ch = await http.post(
            "/v1/auth/challenge", json={"username": self.username, "device_id": device.device_id}
        )
        ch.raise_for_status()
        nonce = base64.b64decode(ch.json()["nonce"])
        tok = await http.post(
            "/v1/auth/token",
            json={
                "username": self.username,
                "device_id": device.device_id,
                "nonce": b64(nonce),
                "signature": b64(device.sign_challenge(self.username, nonce)),
            },
        )
        tok.raise_for_status()
        token: str = tok.json()["token"]
        return token

    async def register_and_login(self, http: httpx.AsyncClient, **kwargs: Any) -> str:
        """Register (must succeed) and log the first device in."""
        resp = await self.register(http, **kwargs)
        assert resp.status_code == 201, resp.text
        return await self.login(http)

    async def publish_devices(
        self, http: httpx.AsyncClient, token: str, devices: Sequence[TestDevice]
    ) -> httpx.Response:
        """PUT a new signed device list (next version) listing ``devices``."""
        version = self.list_version + 1
        resp = await http.put(
            f"/v1/accounts/{self.username}/devices",
            json={"device_list": b64(self.device_list(version, devices))},
            headers=auth_header(token),
        )
        if resp.status_code == 200:
            self.list_version = version
            self.devices = list(devices)
        return resp


def auth_header(token: str) -> dict[str, str]:
    """``{"Authorization": "Bearer <token>"}``."""
    return {"Authorization": f"Bearer {token}"}


__all__ += ["auth_header"]


CORE_TABLES = (
    "accounts",
    "devices",
    "auth_tokens",
    "invites",
    "one_time_prekeys",
)


async def table_snapshot(
    app: FastAPI, tables: Sequence[str] = CORE_TABLES
) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of ``tables`` (sorted), to assert that a rejected request changed nothing."""
    from sqlalchemy import text

    out: dict[str, list[tuple[Any, ...]]] = {}
    async with relay_state(app).sessions() as session:
        for table in tables:
            rows = (await session.execute(text(f"SELECT * FROM {table}"))).all()
            out[table] = sorted((tuple(r) for r in rows), key=repr)
    return out


__all__ += ["CORE_TABLES", "table_snapshot"]
