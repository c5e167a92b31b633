"""Relay throughput/latency/memory benchmark (prints one JSON line at the end).

Durable mode (default)::

    python bench/relay.py [--pairs 20] [--messages 500] [--size 1024] [--window 10]
                          [--database sqlite|postgres]

P sender→receiver device pairs, each sender keeping up to ``--window`` sends awaiting
``accepted``, M messages of S opaque bytes each, through the whole durable path: persist →
accepted → deliver → ack → delete (the clock stops when every message was delivered *and* the
relay's queue is empty again). The relay is a real ``vox-relay serve`` subprocess (uvicorn, the
production settings) so that its RSS can be read with psutil. Accounts and tokens are created
through the REST API (signed device lists, challenge–response login).

In the same run, the same clients drive in-memory WebSocket forwarders (``bench/forwarder.py``
on the same uvicorn/websockets stack: no persistence, no auth, no validation) under the same
load: ``asgi`` (a bare ASGI app) and ``fastapi`` (a FastAPI WebSocket route) — the floor for a
Python relay. ``ratio_vs_<kind> = durable / baseline`` throughput; ``cpu_vs_<kind>`` compares
server CPU per message (each server's own process, from ``/proc/<pid>/stat``). On PostgreSQL
``db_cpu_us_per_msg`` adds the CPU of the database's backends serving the bench database
(their process titles name it; the shared WAL writer and checkpointer are not counted).

History mode::

    python bench/relay.py --growth [5] [--database ...]

runs the same load (default 20 pairs × 2,500 messages) five times in a row on one relay: the
send records of every run are kept (de-duplication, 30 days), so the last run starts with
200,000 of them. Reports each run's throughput and ``last_vs_first``.

Deep-queue mode::

    python bench/relay.py --database postgres --deep 5000 [--baselines '']

gives pair i an offline device (``o<i>``, never connected) whose queue holds ``--deep``
envelopes before the load, and addresses every send to it as well as to the receiver: each
batch checks the queue limits of offline devices with deep (and growing) queues. The run
ends when the receivers' queues are empty (the offline ones keep theirs).

Two-node mode::

    python bench/relay.py --database postgres --nodes 2 [--baselines ...]

runs ``--nodes`` relay processes on the same PostgreSQL database and one Redis (``--redis-url``,
a fresh key prefix per run) and splits the same load across them: pair i's sender connects
to node i mod N and its receiver to the next node, so every envelope crosses nodes (Redis
fan-out). CPU per message is the relay processes' sum.

Connections mode::

    python bench/relay.py --connections 5000

opens N authenticated idle WebSockets (N devices, 16 per account) and reports the relay's RSS
growth per connection.

Logins mode::

    python bench/relay.py --logins 10000 [--login-concurrency 64] [--database ...]

registers N devices (16 per account; not timed), then logs every one of them in again
(challenge, Ed25519 signature, token) with ``--login-concurrency`` logins at a time over
keep-alive connections, and reports the wall time and the relay's CPU per login. The client
side is a minimal HTTP/1.1 client (a few µs per request) so that, on a small machine, the
figure is the relay's and not the benchmark's.

Latency is send → deliver as seen by the clients (both in this process, same clock).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

from tests.server.relay_harness import TestAccount, free_port  # noqa: E402

PG_DEFAULT = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


# --- processes -------------------------------------------------------------------------------


async def wait_healthy(port: int, proc: subprocess.Popen[bytes], path: str) -> None:
    deadline = time.monotonic() + 180  # a shared, busy machine can take a minute to start a relay
    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                if (await http.get(f"http://127.0.0.1:{port}{path}")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("server did not start")
            await asyncio.sleep(0.1)


@asynccontextmanager
async def process(
    cmd: list[str], env: dict[str, str], port: int, path: str
) -> AsyncIterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)  # noqa: ASYNC220
    try:
        await wait_healthy(port, proc, path)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def relay_env(data_dir: Path, database_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOX_")}
    env.update(
        {
            "VOX_DATA_DIR": str(data_dir),
            "VOX_LOG_LEVEL": "warning",
            "VOX_ACCESS_LOG": "false",
            "VOX_LIMITS__MESSAGES_PER_SECOND_PER_DEVICE": "100000",
            "VOX_LIMITS__REQUESTS_PER_MINUTE_PER_IP": "1000000",
            "VOX_LIMITS__MAX_QUEUE_DEPTH": "1000000",
            "VOX_LIMITS__MAX_QUEUE_BYTES": str(16 * 2**30),
            "VOX_LIMITS__QUEUE_SHARE_PER_SENDER": "1.0",
            "VOX_LIMITS__REGISTRATIONS_PER_HOUR_PER_IP": "1000000",
            # Every bench client is 127.0.0.1 and floods on purpose: lift the hostile-client
            # budgets (bench/abuse.py measures those).
            "VOX_LIMITS__MESSAGES_PER_SECOND_PER_ACCOUNT": "100000",
            "VOX_LIMITS__FRAMES_PER_SECOND_PER_DEVICE": "100000",
            "VOX_LIMITS__FRAME_BYTES_PER_SECOND_PER_DEVICE": str(1024 * 1024 * 1024),
            "VOX_LIMITS__MAX_UNAUTHENTICATED_CONNECTIONS_PER_ADDRESS": "1000000",
            "VOX_LIMITS__MAX_AUTHENTICATED_CONNECTIONS_PER_ADDRESS": "1000000",
            "VOX_LIMITS__WS_CONNECTS_PER_MINUTE_PER_ADDRESS": "1000000",
            "VOX_LIMITS__CHALLENGES_PER_MINUTE_PER_ADDRESS": "100000",
        }
    )
    if database_url:
        env["VOX_DATABASE_URL"] = database_url
    return env


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    def rss(self) -> int:
        rss: int = self.proc.memory_info().rss
        self.peak = max(self.peak, rss)
        return rss

    async def _run(self) -> None:
        while True:
            self.rss()
            await asyncio.sleep(0.05)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far, from ``/proc/<pid>/stat`` (clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pg_backend_cpu(database: str) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend serving ``database`` (its process title names
    the database: ``postgres: <user> <database> <client> <state>``)."""
    out: dict[int, float] = {}
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        title = " ".join(cmdline)
        if title.startswith("postgres: ") and f" {database} " in title:
            with suppress(OSError):
                out[proc.pid] = cpu_seconds(proc.pid)
    return out


def pg_cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """Backends that started during the run count from zero; ones that ended are lost (the
    relay keeps its pool and writer connections open, so that is rare)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


async def start_profile(pid: int, path: str | None) -> subprocess.Popen[bytes] | None:
    """py-spy (``pip install py-spy``) sampling the relay into ``path`` (raw text when it ends
    with ``.txt``, else a flame graph), or nothing. Only samples holding the GIL count
    (``--gil``): a thread waiting in a pool or on a lock is not CPU."""
    if not path:
        return None
    spy = subprocess.Popen(  # noqa: ASYNC220
        [
            "py-spy",
            "record",
            "-p",
            str(pid),
            "-o",
            path,
            "-f",
            "raw" if path.endswith(".txt") else "flamegraph",
            "--rate",
            "200",
            "--gil",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    await asyncio.sleep(1.0)
    return spy


def stop_profile(spy: subprocess.Popen[bytes] | None) -> None:
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=30)


# --- accounts -------------------------------------------------------------------------------


async def make_devices(
    base_url: str,
    users: list[str],
    devices_per_user: int,
    concurrency: int = 1,
    accounts: list[TestAccount] | None = None,
) -> list[tuple[str, int, str]]:
    """Register users (with ``devices_per_user`` devices each) and log every device in
    (the accounts, with their keys, are appended to ``accounts``)."""
    out: list[tuple[str, int, str]] = []
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as http:

        async def one(user: str) -> None:
            async with sem:
                account = TestAccount.new(user, list(range(1, devices_per_user + 1)))
                devices = list(account.devices)
                account.devices = devices[:1]
                token = await account.register_and_login(http, one_time=1, one_time_pq=1)
                if len(devices) > 1:
                    resp = await account.publish_devices(http, token, devices)
                    resp.raise_for_status()
                if accounts is not None:
                    accounts.append(account)
                out.append((user, 1, token))
                for d in devices[1:]:
                    out.append((user, d.device_id, await account.login(http, d.device_id)))

        await asyncio.gather(*(one(u) for u in users))
    return out


# --- the load -------------------------------------------------------------------------------


class Pair:
    def __init__(self, index: int, messages: int, window: int) -> None:
        self.index = index
        self.messages = messages
        self.window = asyncio.Semaphore(window)
        self.sent_at: list[float] = [0.0] * messages
        self.latencies: list[float] = []
        self.received = 0
        self.seen: set[int] = set()
        self.duplicates = 0
        self.done = asyncio.Event()


async def run_load(
    open_sender: Callable[[int], Awaitable[ClientConnection]],
    open_receiver: Callable[[int], Awaitable[ClientConnection]],
    target: Callable[[int], dict[str, Any] | list[dict[str, Any]]],
    pairs: int,
    messages: int,
    size: int,
    window: int,
    ack: bool,
    tag: str = "",
) -> tuple[float, list[float], float]:
    """Drive the load; returns (elapsed seconds, latencies in ms, start time)."""
    state = [Pair(i, messages, window) for i in range(pairs)]
    senders = await asyncio.gather(*(open_sender(i) for i in range(pairs)))
    receivers = await asyncio.gather(*(open_receiver(i) for i in range(pairs)))
    filler = os.urandom(max(0, size - 8))

    async def receive(pair: Pair, ws: ClientConnection) -> None:
        pending: list[int] = []
        flushing: asyncio.Task[None] | None = None

        async def flush() -> None:
            await asyncio.sleep(0.002)
            nonlocal pending
            seqs, pending = pending, []
            if seqs:
                await ws.send(ack_frame(seqs))

        while pair.received < messages:
            frame = json.loads(await ws.recv())
            if frame["type"] != "deliver":
                continue
            now = time.perf_counter()
            (i,) = struct.unpack(">Q", base64.b64decode(frame["data"][:12])[:8])
            if i not in pair.seen:  # delivery is at-least-once: count each message once
                pair.seen.add(i)
                pair.latencies.append((now - pair.sent_at[i]) * 1000)
                pair.received += 1
            else:
                pair.duplicates += 1
            if ack:
                pending.append(frame["seq"])
                if len(pending) >= 32:
                    seqs, pending = pending, []
                    await ws.send(ack_frame(seqs))
                elif flushing is None or flushing.done():
                    flushing = asyncio.create_task(flush())
        if flushing is not None:
            await flushing
        if pending:
            await ws.send(ack_frame(pending))
        pair.done.set()

    async def answers(pair: Pair, ws: ClientConnection) -> None:
        got = 0
        while got < messages:
            frame = json.loads(await ws.recv())
            if frame["type"] == "accepted":
                got += 1
                pair.window.release()
            elif frame["type"] != "deliver":
                raise RuntimeError(f"unexpected answer {frame}")

    async def send(pair: Pair, ws: ClientConnection) -> None:
        one = target(pair.index)
        to = one if isinstance(one, list) else [one]
        for i in range(messages):
            await pair.window.acquire()
            data = base64.b64encode(struct.pack(">Q", i) + filler).decode()
            frame = json.dumps(
                {
                    "type": "send",
                    "id": f"{tag}{pair.index}-{i}",
                    "payloads": [{"data": data, "to": to}],
                }
            )
            pair.sent_at[i] = time.perf_counter()
            await ws.send(frame)

    start = time.perf_counter()
    tasks = []
    for pair, s, r in zip(state, senders, receivers, strict=True):
        tasks += [
            asyncio.create_task(receive(pair, r)),
            asyncio.create_task(answers(pair, s)),
            asyncio.create_task(send(pair, s)),
        ]
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    for ws in (*senders, *receivers):
        await ws.close()
    latencies = [x for pair in state for x in pair.latencies]
    log(f"duplicate deliveries: {sum(pair.duplicates for pair in state)}")
    return elapsed, latencies, start


def ack_frame(seqs: list[int]) -> str:
    return json.dumps({"type": "ack", "seqs": seqs})


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


# --- modes ----------------------------------------------------------------------------------


async def create_pg_database(base: str) -> tuple[str, Callable[[], Awaitable[None]]]:
    import asyncpg

    admin = base.replace("postgresql+asyncpg://", "postgresql://", 1)
    name = f"vox_bench_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()

    async def drop() -> None:
        c = await asyncpg.connect(admin)
        await c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await c.close()

    return base.rpartition("/")[0] + "/" + name, drop


async def queue_rows(database_url: str) -> int:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text("SELECT count(*) FROM delivery_queue"))
            return int(result.scalar_one())
    finally:
        await engine.dispose()


async def fill_deep_queues(database_url: str, users: list[str], rows: int) -> None:
    """``--deep``: ``rows`` queue rows for the (only) device of each of ``users``, straight into
    ``delivery_queue`` (no payloads: nothing ever fetches them; the queue's own triggers, where
    the schema has them, count them as any insert)."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(database_url)
    expires = int(time.time() * 1000) + 30 * 86_400_000
    try:
        async with engine.begin() as conn:
            names = ",".join(f"'{u}'" for u in users)  # bench-made names, no quotes in them
            pks = (
                await conn.execute(
                    text(
                        "SELECT d.pk FROM devices AS d JOIN accounts AS a"
                        f" ON a.id = d.account_id WHERE a.username IN ({names})"
                    )
                )
            ).scalars()
            for pk in pks:
                await conn.execute(
                    text(
                        f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
                        f" WHERE i < {int(rows)}) INSERT INTO delivery_queue (device_pk,"
                        " envelope_id, idx, expires_at, size, sender_account_id)"
                        f" SELECT {int(pk)}, 'deep{int(pk)}-' || CAST(i AS VARCHAR), 0,"
                        f" {expires}, 1024, 0 FROM n"
                    )
                )
    finally:
        await engine.dispose()


async def durable(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The durable load on one relay: once, or ``--growth`` times in a row (history grows)."""
    tmp = Path(tempfile.mkdtemp(prefix="vox-bench-"))
    drop: Callable[[], Awaitable[None]] | None = None
    pg_database = ""
    try:
        if args.database == "postgres":
            database_url, drop = await create_pg_database(args.postgres_url)
            pg_database = database_url.rpartition("/")[2]
        else:
            database_url = f"sqlite+aiosqlite:///{tmp / 'relay.sqlite3'}"
        exe = str(Path(sys.executable).with_name("vox-relay"))
        ports = [free_port() for _ in range(args.nodes)]
        prefix = f"vox-bench-{uuid.uuid4().hex[:8]}:"
        async with AsyncExitStack() as stack:
            procs = []
            for n, port in enumerate(ports):  # one after the other: each migrates at start
                (tmp / f"node{n}").mkdir()
                env = relay_env(tmp / f"node{n}", database_url)
                if args.nodes > 1:
                    env.update({"VOX_REDIS_URL": args.redis_url, "VOX_REDIS_PREFIX": prefix})
                cmd = [exe, "serve", "--port", str(port)]
                procs.append(await stack.enter_async_context(process(cmd, env, port, "/healthz")))
            proc = procs[0]
            port = ports[0]
            sampler = RssSampler(proc.pid)
            await asyncio.sleep(1.0)
            idle = sampler.rss()
            base_url = f"http://127.0.0.1:{port}"
            users = [f"s{i:04d}" for i in range(args.pairs)] + [
                f"r{i:04d}" for i in range(args.pairs)
            ]
            tokens = {u: t for u, _, t in await make_devices(base_url, users, 1, 8)}
            if args.deep:  # offline recipients (never connected) with deep queues
                offline = [f"o{i:04d}" for i in range(args.pairs)]
                await make_devices(base_url, offline, 1, 8)
                await fill_deep_queues(database_url, offline, args.deep)
                log(f"{len(offline)} offline devices with {args.deep} queued envelopes each")
            log(
                f"relay up on :{port} ({args.database}, {args.nodes} node(s)),"
                f" {len(tokens)} accounts"
            )

            def node_of(user: str) -> int:  # senders on node i, their receivers on the next
                return (int(user[1:]) + (user[0] == "r")) % int(args.nodes)

            async def open_as(user: str) -> ClientConnection:
                url = f"ws://127.0.0.1:{ports[node_of(user)]}/v1/ws"
                ws = await connect(url, compression=None, max_size=None)
                await ws.send(json.dumps({"type": "auth", "token": tokens[user]}))
                assert json.loads(await ws.recv())["type"] == "ready"
                return ws

            sampler.start()
            spy = await start_profile(proc.pid, args.profile)
            results = []
            for run in range(max(1, args.growth)):
                results.append(
                    await _durable_load(
                        args, [p.pid for p in procs], database_url, pg_database, open_as, f"r{run}-"
                    )
                )
                results[-1]["retained_sends_before"] = run * args.pairs * args.messages
                if args.deep:
                    results[-1]["deep_queue_before"] = args.deep + run * args.messages
            async with httpx.AsyncClient() as http:
                text = (await http.get(f"{base_url}/metrics")).text
            values = {
                ln.split(" ")[0]: float(ln.split(" ")[1])
                for ln in text.splitlines()
                if ln.startswith(("vox_queue_reads_total", "vox_commit_"))
                and ("_sum " in ln or "_count " in ln or "_total " in ln)
            }
            batches = values.get("vox_commit_batch_size_count", 0) or 1
            log(
                f"relay: {batches:.0f} commits, "
                f"{values.get('vox_commit_batch_size_sum', 0) / batches:.1f} ops/commit, "
                f"{1000 * values.get('vox_commit_seconds_sum', 0) / batches:.2f} ms/commit, "
                f"{values.get('vox_queue_reads_total', 0):.0f} queue reads"
            )
            stop_profile(spy)
            await sampler.stop()
            peak = max(sampler.peak, sampler.rss())
        for one in results:
            one["relay_idle_rss_mb"] = round(idle / 2**20, 1)
            one["relay_peak_rss_mb"] = round(peak / 2**20, 1)
        return results
    finally:
        if drop is not None:
            await drop()
        shutil.rmtree(tmp, ignore_errors=True)


async def _durable_load(
    args: argparse.Namespace,
    pids: list[int],
    database_url: str,
    pg_database: str,
    open_as: Callable[[str], Awaitable[ClientConnection]],
    tag: str,
) -> dict[str, Any]:
    cpu0 = sum(cpu_seconds(pid) for pid in pids)
    db0 = pg_backend_cpu(pg_database) if pg_database else {}
    me0 = psutil.Process().cpu_times()
    elapsed, latencies, _ = await run_load(
        lambda i: open_as(f"s{i:04d}"),
        lambda i: open_as(f"r{i:04d}"),
        lambda i: (
            [{"user": f"r{i:04d}", "device": 1}, {"user": f"o{i:04d}", "device": 1}]
            if args.deep
            else {"user": f"r{i:04d}", "device": 1}
        ),
        args.pairs,
        args.messages,
        args.size,
        args.window,
        ack=True,
        tag=tag,
    )
    # The durable path ends when the acks have deleted every queue row (but the offline
    # devices' of ``--deep``: theirs only grow).
    run = int(tag.strip("r-") or 0)
    stays = args.pairs * (args.deep + (run + 1) * args.messages) if args.deep else 0
    start_wait = time.perf_counter()
    while await queue_rows(database_url) > stays:
        if time.perf_counter() - start_wait > 60:
            raise RuntimeError("queue did not drain")
        await asyncio.sleep(0.005)
    elapsed += time.perf_counter() - start_wait
    relay_cpu = sum(cpu_seconds(pid) for pid in pids) - cpu0
    db_cpu = pg_cpu_delta(db0, pg_backend_cpu(pg_database)) if pg_database else 0.0
    me1 = psutil.Process().cpu_times()
    client_cpu = me1.user + me1.system - me0.user - me0.system
    total = args.pairs * args.messages
    out = {
        "durable_msgs_per_s": round(total / elapsed, 1),
        "durable_seconds": round(elapsed, 3),
        "p50_ms": round(pct(latencies, 0.50), 2),
        "p99_ms": round(pct(latencies, 0.99), 2),
        "relay_cpu_cores": round(relay_cpu / elapsed, 2),
        "relay_cpu_us_per_msg": round(relay_cpu * 1e6 / total, 1),
        "client_cpu_cores": round(client_cpu / elapsed, 2),
    }
    if pg_database:
        out["db_cpu_us_per_msg"] = round(db_cpu * 1e6 / total, 1)
        out["relay_db_cpu_us_per_msg"] = round((relay_cpu + db_cpu) * 1e6 / total, 1)
    return out


async def baseline(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """One run against a forwarder: ``asgi`` (a bare ASGI app) or ``fastapi`` (the same in
    FastAPI). Keys are prefixed with the kind."""
    port = free_port()
    cmd = [sys.executable, str(HERE.with_name("forwarder.py")), str(port), kind]
    async with process(cmd, dict(os.environ), port, "/") as proc:
        await asyncio.sleep(1.0)
        idle = psutil.Process(proc.pid).memory_info().rss
        url = f"ws://127.0.0.1:{port}/"

        async def open_as(name: str) -> ClientConnection:
            ws = await connect(url, compression=None, max_size=None)
            await ws.send(json.dumps({"type": "hello", "name": name}))
            assert json.loads(await ws.recv())["type"] == "ready"
            return ws

        cpu0 = cpu_seconds(proc.pid)
        elapsed, latencies, _ = await run_load(
            lambda i: open_as(f"s{i:04d}:1"),
            lambda i: open_as(f"r{i:04d}:1"),
            lambda i: {"user": f"r{i:04d}", "device": 1},
            args.pairs,
            args.messages,
            args.size,
            args.window,
            ack=False,
        )
        cpu = cpu_seconds(proc.pid) - cpu0
    total = args.pairs * args.messages
    return {
        f"{kind}_msgs_per_s": round(total / elapsed, 1),
        f"{kind}_p50_ms": round(pct(latencies, 0.50), 2),
        f"{kind}_p99_ms": round(pct(latencies, 0.99), 2),
        f"{kind}_cpu_us_per_msg": round(cpu * 1e6 / total, 1),
        f"{kind}_idle_rss_mb": round(idle / 2**20, 1),
    }


async def connections(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="vox-bench-"))
    n = args.connections
    try:
        port = free_port()
        exe = str(Path(sys.executable).with_name("vox-relay"))
        cmd = [exe, "serve", "--port", str(port)]
        async with process(cmd, relay_env(tmp, None), port, "/healthz") as proc:
            sampler = RssSampler(proc.pid)
            base_url = f"http://127.0.0.1:{port}"
            per = 16
            users = [f"c{i:05d}" for i in range(math.ceil(n / per))]
            t0 = time.perf_counter()
            cpu0 = cpu_seconds(proc.pid)
            devices = (await make_devices(base_url, users, per, args.login_concurrency))[:n]
            login_s = time.perf_counter() - t0
            login_cpu = cpu_seconds(proc.pid) - cpu0
            log(f"{len(devices)} devices logged in in {login_s:.1f}s")
            await asyncio.sleep(1.0)
            before = sampler.rss()
            url = f"ws://127.0.0.1:{port}/v1/ws"
            sem = asyncio.Semaphore(100)
            sockets: list[ClientConnection] = []

            async def open_one(token: str) -> None:
                async with sem:
                    ws = await connect(url, compression=None, open_timeout=60)
                    await ws.send(json.dumps({"type": "auth", "token": token}))
                    assert json.loads(await ws.recv())["type"] == "ready"
                    sockets.append(ws)

            await asyncio.gather(*(open_one(t) for _, _, t in devices))
            await asyncio.sleep(2.0)
            after = sampler.rss()
            for ws in sockets:
                await ws.close()
        per_conn = (after - before) / len(sockets)
        return {
            "connections": len(sockets),
            "relay_rss_before_mb": round(before / 2**20, 1),
            "relay_rss_after_mb": round(after / 2**20, 1),
            "rss_per_connection_kib": round(per_conn / 1024, 1),
            # registration of the accounts, their device lists and every device's login
            "login_seconds": round(login_s, 1),
            "login_concurrency": args.login_concurrency,
            "relay_cpu_ms_per_device_login": round(1000 * login_cpu / len(devices), 2),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class KeepAlive:
    """A minimal HTTP/1.1 keep-alive client for JSON POSTs (one request at a time)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> KeepAlive:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode()
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"content-length: {len(data)}\r\n\r\n".encode()
            + data
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        payload = await self.reader.readexactly(length)
        return status, json.loads(payload) if payload else {}

    async def close(self) -> None:
        self.writer.close()
        with suppress(OSError):
            await self.writer.wait_closed()


async def logins(args: argparse.Namespace) -> dict[str, Any]:
    """Register N devices (not timed), then log each in again, timed."""
    tmp = Path(tempfile.mkdtemp(prefix="vox-bench-"))
    n = args.logins
    drop: Callable[[], Awaitable[None]] | None = None
    try:
        database_url = None
        if args.database == "postgres":
            database_url, drop = await create_pg_database(args.postgres_url)
        port = free_port()
        exe = str(Path(sys.executable).with_name("vox-relay"))
        cmd = [exe, "serve", "--port", str(port)]
        async with process(cmd, relay_env(tmp, database_url), port, "/healthz") as proc:
            base_url = f"http://127.0.0.1:{port}"
            per = 16
            users = [f"l{i:05d}" for i in range(math.ceil(n / per))]
            accounts: list[TestAccount] = []
            await make_devices(base_url, users, per, 16, accounts)
            work = [(a, d) for a in accounts for d in a.devices][:n]
            log(f"{len(work)} devices registered; logging them in")
            queue = list(reversed(work))
            spy = await start_profile(proc.pid, args.profile)
            cpu0 = cpu_seconds(proc.pid)
            me0 = psutil.Process().cpu_times()
            t0 = time.perf_counter()

            async def worker() -> None:
                http = await KeepAlive.open(port)
                try:
                    while queue:
                        account, device = queue.pop()
                        who = {"username": account.username, "device_id": device.device_id}
                        status, ch = await http.post("/v1/auth/challenge", who)
                        assert status == 200, (status, ch)
                        nonce = base64.b64decode(ch["nonce"])
                        signature = device.sign_challenge(account.username, nonce)
                        status, tok = await http.post(
                            "/v1/auth/token",
                            {
                                **who,
                                "nonce": ch["nonce"],
                                "signature": base64.b64encode(signature).decode(),
                            },
                        )
                        assert status == 200, (status, tok)
                finally:
                    await http.close()

            await asyncio.gather(*(worker() for _ in range(args.login_concurrency)))
            elapsed = time.perf_counter() - t0
            cpu = cpu_seconds(proc.pid) - cpu0
            me1 = psutil.Process().cpu_times()
            stop_profile(spy)
        return {
            "mode": "logins",
            "database": args.database,
            "devices": len(work),
            "login_seconds": round(elapsed, 2),
            "logins_per_s": round(len(work) / elapsed, 1),
            "login_concurrency": args.login_concurrency,
            "relay_cpu_ms_per_login": round(1000 * cpu / len(work), 3),
            "relay_cpu_cores": round(cpu / elapsed, 2),
            "client_cpu_cores": round((me1.user + me1.system - me0.user - me0.system) / elapsed, 2),
            "seconds_for_10k": round(10_000 * elapsed / len(work), 1),
        }
    finally:
        if drop is not None:
            await drop()
        shutil.rmtree(tmp, ignore_errors=True)


def arguments() -> argparse.ArgumentParser:
    """The command line (``bench/e2e.py`` takes its defaults for its relay-only run)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument(
        "--messages", type=int, default=0, help="per pair (default 500; 2500 with --growth)"
    )
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("VOX_TEST_POSTGRES_URL", PG_DEFAULT),
        help="server where a throw-away database is created (postgres mode)",
    )
    parser.add_argument("--connections", type=int, default=0, help="idle-connection mode")
    parser.add_argument(
        "--nodes", type=int, default=1, help="relay processes sharing the database (and Redis)"
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("VOX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="Redis for --nodes > 1",
    )
    parser.add_argument("--logins", type=int, default=0, help="login mode: N devices")
    parser.add_argument(
        "--login-concurrency",
        type=int,
        default=8,
        help="accounts registered and logged in at once while preparing --connections devices",
    )
    parser.add_argument("--repeat", type=int, default=1, help="alternate runs, report medians")
    parser.add_argument(
        "--growth",
        type=int,
        nargs="?",
        const=5,
        default=0,
        help="history mode: the same load N times (default 5) in a row on one relay",
    )
    parser.add_argument(
        "--baselines",
        default="asgi,fastapi",
        help="forwarders to run beside the relay (comma-separated: asgi, fastapi; '' for none)",
    )
    parser.add_argument(
        "--deep",
        type=int,
        default=0,
        help="deep-queue mode: every send also goes to an offline device (one per pair) whose"
        " queue holds N envelopes before the load (and grows with it)",
    )
    parser.add_argument("--profile", help="write a py-spy profile of the relay to this file")
    return parser


def main() -> None:
    parser = arguments()
    args = parser.parse_args()
    if not args.messages:
        args.messages = 2500 if args.growth else 500
    if args.size < 8:
        parser.error("--size must be at least 8")
    if args.nodes > 1 and args.database != "postgres":
        parser.error("--nodes > 1 needs --database postgres (nodes share one database)")
    result: dict[str, Any]
    if args.connections:
        result = asyncio.run(connections(args))
    elif args.logins:
        result = asyncio.run(logins(args))
    elif args.growth:
        result = growth(args)
    else:
        result = series(args)
    print(json.dumps(result), flush=True)


def growth(args: argparse.Namespace) -> dict[str, Any]:
    """``--growth N``: N loads in a row on one relay; each run's throughput against the
    first's (the send records of every run are retained: dedupe and expiry keep them)."""
    runs = asyncio.run(durable(args))
    for one in runs:
        log(json.dumps(one))
    first = runs[0]["durable_msgs_per_s"]
    return {
        "mode": "growth",
        "database": args.database,
        "pairs": args.pairs,
        "messages": args.messages,
        "msgs_per_s_per_run": [r["durable_msgs_per_s"] for r in runs],
        "relay_cpu_us_per_msg_per_run": [r["relay_cpu_us_per_msg"] for r in runs],
        "retained_sends_before_run": [r["retained_sends_before"] for r in runs],
        "p99_ms_per_run": [r["p99_ms"] for r in runs],
        "last_vs_first": round(runs[-1]["durable_msgs_per_s"] / first, 3),
        # CPU per message is the steadier measure on a shared machine.
        "cpu_last_vs_first": round(
            runs[-1]["relay_cpu_us_per_msg"] / runs[0]["relay_cpu_us_per_msg"], 3
        ),
        "min_vs_first": round(min(r["durable_msgs_per_s"] for r in runs) / first, 3),
    }


def series(args: argparse.Namespace) -> dict[str, Any]:
    """Durable and baseline runs alternate; with --repeat N the medians are reported (the
    machine may be shared: alternating keeps all of them exposed to the same background load).
    """
    kinds = [k for k in args.baselines.split(",") if k]
    result: dict[str, Any] = {
        "database": args.database,
        "nodes": args.nodes,
        "pairs": args.pairs,
        "messages": args.messages,
        "size": args.size,
        "window": args.window,
    }
    runs = []
    for _ in range(args.repeat):
        (one,) = asyncio.run(durable(args))
        for kind in kinds:
            one.update(asyncio.run(baseline(args, kind)))
            base_rate = one[f"{kind}_msgs_per_s"]
            one[f"ratio_vs_{kind}"] = round(one["durable_msgs_per_s"] / base_rate, 3)
            # A load too short for one clock tick of the baseline's CPU has no CPU ratio (null).
            base_cpu = one[f"{kind}_cpu_us_per_msg"] or None
            one[f"cpu_vs_{kind}"] = base_cpu and round(one["relay_cpu_us_per_msg"] / base_cpu, 2)
            if "relay_db_cpu_us_per_msg" in one:
                one[f"relay_db_cpu_vs_{kind}"] = base_cpu and round(
                    one["relay_db_cpu_us_per_msg"] / base_cpu, 2
                )
        if "asgi" in kinds:
            one["ratio"] = one["ratio_vs_asgi"]
        log(json.dumps(one))
        runs.append(one)
    for key in runs[0]:
        values = [r[key] for r in runs if r[key] is not None]
        if not values:
            result[key] = None
            continue
        result[key] = statistics.median(values) if key != "relay_peak_rss_mb" else max(values)
    result["relay_idle_rss_mb"] = max(r["relay_idle_rss_mb"] for r in runs)
    result["repeat"] = args.repeat
    if args.repeat > 1:
        for key in ("durable_msgs_per_s", "ratio_vs_fastapi", "cpu_vs_fastapi", "p99_ms"):
            if key in runs[0]:
                result[f"{key}_per_run"] = [r[key] for r in runs]
    return result


if __name__ == "__main__":
    main()
