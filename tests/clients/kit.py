"""Small helpers shared by the client tests (polling, event filters, relay queue counts)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select, update

from clients.sdk import Event, Message, VoxClient
from clients.sdk.content import Content, Receipt
from clients.sdk.errors import RelayUnavailable, UnknownUser
from clients.sdk.models import SendResult
from clients.store import MemoryStore
from server.db.models import Account, Device
from server.db.models_delivery import DeliveryPayload, QueueEntry
from tests.server.relay_harness import Relay, free_port


async def wait_for(predicate: Callable[[], bool], within: float = 20.0) -> None:
    """Poll ``predicate()`` until true (the relay and clients run in this event loop)."""
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def wait_for_value(
    probe: Callable[[], Awaitable[object]], expected: object, within: float = 10.0
) -> None:
    """Poll the coroutine function ``probe`` until it returns ``expected``."""
    deadline = asyncio.get_running_loop().time() + within
    while (got := await probe()) != expected:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"expected {expected!r}, still {got!r}")
        await asyncio.sleep(0.05)


async def receive_until(
    client: VoxClient, done: Callable[[list[Event]], bool], within: float = 60.0
) -> list[Event]:
    """Connect ``client`` (receiving) and collect its events until ``done(events)``: no idle
    wait to guess, and no early return on a loaded machine."""
    events: list[Event] = []
    unsubscribe = client.on_event(events.append)
    try:
        await client.connect(receive=True)
        await wait_for(lambda: done(events), within)
    finally:
        unsubscribe()
    return events


async def receive_texts(client: VoxClient, sender: str, count: int) -> list[Event]:
    """:func:`receive_until` ``count`` texts from ``sender`` arrived."""
    return await receive_until(client, lambda events: len(texts(events, sender)) >= count)


def texts(events: list[Event], sender: str) -> list[str]:
    """Texts of the messages from ``sender`` in ``events``, in order."""
    return [e.text or "" for e in events if isinstance(e, Message) and e.sender == sender]


async def queued(relay: Relay, username: str) -> int:
    """Envelopes waiting in the relay's queues of ``username``'s devices."""
    query = (
        select(func.count())
        .select_from(QueueEntry)
        .join(Device, Device.pk == QueueEntry.device_pk)
        .join(Account, Account.id == Device.account_id)
        .where(Account.username == username)
    )
    async with relay.state.sessions() as session:
        return int((await session.execute(query)).scalar_one())


class RelayProcess:
    """``vox-relay serve`` as a subprocess (logs to a file), restartable and killable."""

    def __init__(self, data_dir: Path, log_path: Path, *, database_url: str | None = None) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.database_url = database_url
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self) -> subprocess.Popen[bytes]:
        exe = Path(sys.executable).with_name("vox-relay")
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOX_")}
        env["VOX_LIMITS__REQUESTS_PER_MINUTE_PER_IP"] = "100000"
        env["VOX_LIMITS__REGISTRATIONS_PER_HOUR_PER_IP"] = "100000"
        args = [str(exe), "serve", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        if self.database_url:
            args += ["--database-url", self.database_url]
        with self.log_path.open("ab") as log:
            return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)

    def logs(self) -> bytes:
        """Everything the relay logged so far."""
        return self.log_path.read_bytes() if self.log_path.exists() else b""

    async def start(self) -> None:
        """Start and wait until ``/healthz`` answers."""
        self.proc = self._spawn()
        deadline = time.monotonic() + 120  # a relay can take a minute to start under load
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"vox-relay exited: {self.logs()[-2000:]!r}")
                try:
                    if (await http.get(f"{self.base_url}/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError("vox-relay did not become healthy")

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (graceful) or SIGKILL, and wait."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


async def tamper_queued_payload(relay: Relay) -> None:
    """Flip one bit in the middle of the one payload queued at the relay (an attack on
    stored ciphertext)."""
    async with relay.state.sessions() as session:
        row = (await session.execute(select(DeliveryPayload))).scalars().one()
        data = bytearray(row.data)
        data[len(data) // 2] ^= 0x40
        await session.execute(
            update(DeliveryPayload)
            .where(DeliveryPayload.envelope_id == row.envelope_id)
            .values(data=bytes(data))
        )
        await session.commit()


VOX = str(Path(sys.executable).with_name("vox"))


async def vox(
    home: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> tuple[int, str, str]:
    """Run ``vox --home HOME args...`` (``stdin`` piped in, not a terminal); returns
    (exit code, stdout, stderr)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VOX_")}
    full_env.update(env or {})
    proc = await asyncio.create_subprocess_exec(
        VOX,
        "--home",
        str(home),
        *args,
        stdin=None if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=full_env,
    )
    out, err = await asyncio.wait_for(
        proc.communicate(None if stdin is None else stdin.encode()), 120
    )
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def assert_clean_error(code: int, err: str, needle: str) -> None:
    """A non-zero exit with exactly one line on stderr, mentioning ``needle``, no traceback."""
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vox: error: "), err
    assert needle in lines[0], err
    assert "Traceback" not in err


class ReceiptRecorder:
    """A stand-in :class:`~clients.sdk.core.Core` for
    :class:`~clients.sdk.receipts.ReceiptSender`: a memory store; each receipt sent is recorded,
    held until ``release`` is set (set from the start unless ``hold``), or refused while
    ``fail`` (the relay unreachable) or when its recipient is in ``gone`` (a deleted account)."""

    def __init__(self, *, hold: bool = False) -> None:
        self.store = MemoryStore()
        self.sent: list[tuple[str, Receipt]] = []
        self.release = asyncio.Event()
        if not hold:
            self.release.set()
        self.fail = False
        self.gone: set[str] = set()  # deleted accounts
        self.tasks: list[asyncio.Future[Any]] = []

    def spawn(self, coro: Awaitable[Any]) -> None:
        self.tasks.append(asyncio.ensure_future(coro))

    async def send_direct(self, to: str, content: Content) -> SendResult | None:
        assert isinstance(content, Receipt)
        if self.fail:
            raise RelayUnavailable("http://relay", "the test keeps the relay unreachable")
        if to in self.gone:
            raise UnknownUser(to)
        self.sent.append((to, content))
        await self.release.wait()
        return None
