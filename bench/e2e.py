"""End-to-end benchmark through the SDK (prints one JSON line at the end).

::

    python bench/e2e.py [--pairs 20] [--messages 200] [--size 64] [--window 10]
                        [--client-procs 2] [--database sqlite|postgres] [--skip-relay-only]
                        [--repeat 1] [--lane-window N] [--tmp-dir DIR] [--profile PATH]
                        [--gc settled|default]

P pairs of real :class:`clients.sdk.VoxClient` s (each with its own SQLite profile store in a
temporary home) chat through one ``vox-relay serve`` subprocess: every sender sends M texts of
S bytes to its receiver with up to ``--window`` ``send_text`` calls outstanding (the SDK keeps
at most its lane window of one conversation's sends on their way to the relay at once:
``--lane-window`` overrides it for every client, reported as ``lane_window``); every message is
encrypted (Double Ratchet), persisted and acked by the relay, decrypted, stored and acked by
the receiver — which also sends the usual encrypted delivery receipt back. One warm-up message
per pair (PQXDH session set-up) is not timed.

The clients run in ``--client-procs`` N processes (so the figure is the protocol's, not one
Python process's GIL): sender ``i`` in process ``i mod N``, its receiver in the next one.
Latency is send → decrypted: each text starts with its send time on the machine's monotonic
clock. ``client_cpu_us_per_msg`` is the client processes' CPU from ``/proc`` over the timed
load (both ends of every pair, receipts included), ``e2e_relay_cpu_us_per_msg`` the relay's;
``client_gc_us_per_msg`` the time the client processes spent in the cyclic garbage collector.
The client processes settle their collector after start-up as ``vox daemon`` and ``vox chat``
do (:func:`clients.sdk.heap.settle`); ``--gc default`` keeps CPython's defaults instead.

In the same run, ``bench/relay.py``'s durable load (raw opaque payloads of the same size as
our ciphertexts, same pairs, messages and window, its own relay process) gives
``relay_only_msgs_per_s`` (and its relay CPU); ``ratio = e2e / relay_only`` shows what the
client side costs.

``--profile PATH`` samples each client process with py-spy (``pip install py-spy``) over the
timed load: ``PATH.<n>.txt`` (raw collapsed stacks) or ``PATH.<n>.svg`` (a flame graph) per
process. Every non-idle thread is sampled, not only the GIL holder (SQLite runs its
statements without the GIL, on the event loop's thread); the stacks under
``Thread._bootstrap`` are the store's fsync and checkpoint threads, mostly waiting on the disk.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clients.sdk import Event, Message, VoxClient, heap  # noqa: E402
from clients.sdk.content import TextContent, padded  # noqa: E402
from clients.sdk.transport import RelaySocket  # noqa: E402
from clients.store import SqliteStore  # noqa: E402

#: Bytes a padded content gains on the wire (payload 11 + username + ratchet header 41 +
#: envelope framing 7 + GCM tag 16 + relay payload 2, rounded up).
CIPHERTEXT_OVERHEAD = 90

#: Seconds a client process may take for one phase (registering, a whole load, ...).
STEP_TIMEOUT = 600


def wire_size(text_bytes: int) -> int:
    """The ciphertext size of a text of ``text_bytes`` bytes (content padded to 160 bytes)."""
    return len(padded(TextContent(text="x" * text_bytes, sent_at_ms=0))) + CIPHERTEXT_OVERHEAD


def log(*parts: object) -> None:
    """Progress on stderr (stdout carries only the final JSON line)."""
    print(*parts, file=sys.stderr, flush=True)


def load_relay_bench() -> Any:
    """``bench/relay.py`` as a module (``bench/`` is not a package)."""
    spec = importlib.util.spec_from_file_location("vox_bench_relay", ROOT / "bench" / "relay.py")
    if spec is None or spec.loader is None:
        raise RuntimeError("bench/relay.py not found")
    module = importlib.util.module_from_spec(spec)
    sys.modules["vox_bench_relay"] = module
    spec.loader.exec_module(module)
    return module


class StatementCounter:
    """Counts the SQL statements (and commits) the clients' stores run, through SQLite's trace
    hook on each store's connection (the bench reaches into the store for this only)."""

    def __init__(self) -> None:
        self.statements = 0
        self.commits = 0
        self.flushes = 0
        self.on = False

    def attach(self, client: VoxClient) -> None:
        if isinstance(client.store, SqliteStore):
            store = client.store
            store._conn.set_trace_callback(self._trace)
            flush = store.flush

            def counted() -> None:  # the fsyncs of the WAL (in the flusher's thread)
                if self.on and store._commits > store._synced:  # not one it skips
                    self.flushes += 1
                flush()

            store.flush = counted  # type: ignore[method-assign]

    def _trace(self, sql: str) -> None:
        if self.on:
            self.statements += 1
            self.commits += sql == "COMMIT"


class GcClock:
    """Time spent in the cyclic garbage collector's collections (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.on = False
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self.on:
            self.seconds += time.perf_counter() - self._started

    def remove(self) -> None:
        gc.callbacks.remove(self._callback)


class FrameCounter:
    """Counts the frames the clients write to the relay (``send`` and ``ack``, and the
    sequence numbers the acks carry), by wrapping the SDK socket's one write path; tells
    what the relay gets per message beside the messages' own sends (receipts, acks)."""

    def __init__(self) -> None:
        self.sends = 0
        self.acks = 0
        self.acked = 0
        self.writes = 0
        self.on = False

    def install(self) -> None:
        original = RelaySocket.send_texts
        counter = self

        async def send_texts(socket: RelaySocket, texts: Sequence[str]) -> None:
            if counter.on and texts:
                counter.writes += 1
                for text in texts:
                    if text.startswith('{"type":"send"'):
                        counter.sends += 1
                    elif text.startswith('{"type":"ack"'):
                        counter.acks += 1
                        counter.acked += text.count(",") + 1
            await original(socket, texts)

        RelaySocket.send_texts = send_texts  # type: ignore[method-assign,assignment]


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def stamped(size: int) -> str:
    """A text of ``size`` characters that starts with the send time (``time.perf_counter``,
    CLOCK_MONOTONIC: the same clock in every process of the machine)."""
    return f"{time.perf_counter():.6f} ".ljust(size, "x")


def placement(pairs: int, procs: int) -> dict[str, int]:
    """The client process of each user: sender ``i`` in process ``i mod N``, its receiver in
    the next one (with more than one process, every message crosses processes)."""
    where: dict[str, int] = {}
    for i in range(pairs):
        where[f"s{i:04d}"] = i % procs
        where[f"r{i:04d}"] = (i + (procs > 1)) % procs
    return where


async def worker_main(conn: Connection, index: int, config: dict[str, Any]) -> None:
    """One client process: registers its users, then follows the coordinator's phases
    (``connect``, ``warm``, ``go``, ``close``), answering each when done."""
    tmp = Path(config["tmp"])
    url, pairs, messages = config["url"], config["pairs"], config["messages"]
    mine = [u for u, n in placement(pairs, config["procs"]).items() if n == index]
    clients: dict[str, VoxClient] = {}

    async def command() -> str:
        name: str = await asyncio.to_thread(conn.recv)
        return name

    try:
        for user in mine:
            clients[user] = await VoxClient.register(tmp / user, url, user)
        counter = StatementCounter()
        frames = FrameCounter()
        frames.install()
        for client in clients.values():
            counter.attach(client)
            if config["lane_window"] is not None:
                client.engine.sends.lane_window = config["lane_window"]
        receivers = [u for u in mine if u.startswith("r")]
        senders = [u for u in mine if u.startswith("s")]
        latencies: list[float] = []
        received = dict.fromkeys(receivers, 0)
        done, warm = asyncio.Event(), asyncio.Event()
        expected = messages + 1  # + warm-up

        def on_event(user: str) -> Any:
            def handle(event: Event) -> None:
                if isinstance(event, Message) and not event.outgoing:
                    if event.text and event.text != "warm-up":
                        sent = float(event.text.split(" ", 1)[0])
                        latencies.append((time.perf_counter() - sent) * 1000)
                    received[user] += 1
                    if all(n >= 1 for n in received.values()):
                        warm.set()
                    if all(n >= expected for n in received.values()):
                        done.set()

            return handle

        for user in receivers:
            clients[user].on_event(on_event(user))
        if not receivers:
            warm.set()
            done.set()
        conn.send("registered")
        assert await command() == "connect"
        await asyncio.gather(*(c.connect() for c in clients.values()))
        conn.send("connected")
        assert await command() == "warm"
        for user in senders:  # PQXDH set-up, not timed
            await clients[user].send_text("r" + user[1:], "warm-up")
        await asyncio.wait_for(warm.wait(), 120)
        conn.send("warm")
        assert await command() == "go"
        if config["gc"] == "settled":
            heap.settle()  # as vox daemon and vox chat do after start-up
        collecting = GcClock()

        async def run_sender(user: str) -> None:
            window = asyncio.Semaphore(config["window"])

            async def one() -> None:
                async with window:
                    await clients[user].send_text("r" + user[1:], stamped(config["size"]))

            await asyncio.gather(*(one() for _ in range(messages)))

        counter.on = frames.on = collecting.on = True
        await asyncio.gather(*(run_sender(u) for u in senders))
        await asyncio.wait_for(done.wait(), 600)
        counter.on = frames.on = collecting.on = False
        collecting.remove()
        conn.send(
            {
                "latencies": latencies,
                "statements": counter.statements,
                "commits": counter.commits,
                "flushes": counter.flushes,
                "sends": frames.sends,
                "acks": frames.acks,
                "acked": frames.acked,
                "writes": frames.writes,
                "gc_seconds": collecting.seconds,
            }
        )
        assert await command() == "close"
    finally:
        for client in clients.values():
            await client.close()
    conn.send("closed")


def worker(conn: Connection, index: int, config: dict[str, Any]) -> None:
    """Entry point of a client process."""
    try:
        asyncio.run(worker_main(conn, index, config))
    except BaseException as exc:
        conn.send(f"error: {type(exc).__name__}: {exc}")
        raise


class Workers:
    """The client processes and the coordinator's end of their pipes."""

    def __init__(self, procs: int, config: dict[str, Any]) -> None:
        context = multiprocessing.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[BaseProcess] = []
        for index in range(procs):
            ours, theirs = context.Pipe()
            proc = context.Process(target=worker, args=(theirs, index, config), daemon=True)
            proc.start()
            self.conns.append(ours)
            self.procs.append(proc)

    async def step(self, command: str | None) -> list[Any]:
        """Send ``command`` to every process (None: send nothing) and wait for each answer."""
        if command is not None:
            for conn in self.conns:
                conn.send(command)

        def answer(conn: Connection, proc: BaseProcess) -> Any:
            deadline = time.monotonic() + STEP_TIMEOUT
            while not conn.poll(0.5):
                if not proc.is_alive():
                    raise RuntimeError(f"client process exited with {proc.exitcode}")
                if time.monotonic() > deadline:
                    raise TimeoutError("a client process did not answer")
            value = conn.recv()
            if isinstance(value, str) and value.startswith("error:"):
                raise RuntimeError(f"client process failed: {value}")
            return value

        return list(
            await asyncio.gather(
                *(
                    asyncio.to_thread(answer, c, p)
                    for c, p in zip(self.conns, self.procs, strict=True)
                )
            )
        )

    def start_profiles(self, path: str | None) -> list[subprocess.Popen[bytes]]:
        """py-spy on every client process (see ``--profile``), or nothing."""
        if not path:
            return []
        spies = []
        for n, proc in enumerate(self.procs):
            raw = path.endswith(".txt")
            out = f"{path.removesuffix('.txt').removesuffix('.svg')}.{n}.{'txt' if raw else 'svg'}"
            command = ["py-spy", "record", "-p", str(proc.pid), "-o", out, "--rate", "200"]
            spies.append(
                subprocess.Popen(
                    [*command, "-f", "raw" if raw else "flamegraph", "--nonblocking"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        return spies

    @staticmethod
    def stop_profiles(spies: list[subprocess.Popen[bytes]]) -> None:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            spy.wait(timeout=60)

    def cpu_seconds(self, relay_bench: Any) -> float:
        return float(sum(relay_bench.cpu_seconds(p.pid) for p in self.procs if p.pid is not None))

    def system_seconds(self) -> float:
        """The client processes' system (kernel) CPU so far, from ``/proc/<pid>/stat``."""
        total = 0
        for proc in self.procs:
            if proc.pid is not None:
                stat = Path(f"/proc/{proc.pid}/stat").read_text().rpartition(")")[2].split()
                total += int(stat[12])
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        for proc in self.procs:
            proc.join(timeout=20)
            if proc.is_alive():
                proc.kill()
                proc.join()


async def e2e(args: argparse.Namespace, relay_bench: Any) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="vox-e2e-", dir=args.tmp_dir))
    drop = None
    workers: Workers | None = None
    try:
        if args.database == "postgres":
            database_url, drop = await relay_bench.create_pg_database(args.postgres_url)
        else:
            database_url = f"sqlite+aiosqlite:///{tmp / 'relay.sqlite3'}"
        port = relay_bench.free_port()
        exe = str(Path(sys.executable).with_name("vox-relay"))
        cmd = [exe, "serve", "--port", str(port)]
        env = relay_bench.relay_env(tmp, database_url)
        async with relay_bench.process(cmd, env, port, "/healthz") as relay:
            config = {
                "tmp": str(tmp),
                "url": f"http://127.0.0.1:{port}",
                "pairs": args.pairs,
                "messages": args.messages,
                "size": args.size,
                "window": args.window,
                "lane_window": args.lane_window,
                "procs": args.client_procs,
                "gc": args.gc,
            }
            workers = Workers(args.client_procs, config)
            await workers.step(None)  # registered
            await workers.step("connect")
            log(
                f"relay up on :{port} ({args.database}), {2 * args.pairs} SDK clients"
                f" in {args.client_procs} process(es)"
            )
            await workers.step("warm")
            relay_cpu0, client_cpu0, client_sys0 = (
                relay_bench.cpu_seconds(relay.pid),
                workers.cpu_seconds(relay_bench),
                workers.system_seconds(),
            )
            spies = workers.start_profiles(args.profile)
            if spies:
                await asyncio.sleep(1.0)  # py-spy attached
            started = time.perf_counter()
            stats = await workers.step("go")
            elapsed = time.perf_counter() - started
            workers.stop_profiles(spies)
            relay_cpu = relay_bench.cpu_seconds(relay.pid) - relay_cpu0
            client_cpu = workers.cpu_seconds(relay_bench) - client_cpu0
            client_sys = workers.system_seconds() - client_sys0
            await workers.step("close")
        latencies = [v for s in stats for v in s["latencies"]]
        statements = sum(s["statements"] for s in stats)
        commits = sum(s["commits"] for s in stats)
        flushes = sum(s["flushes"] for s in stats)
        total = args.pairs * args.messages
        sends = sum(s["sends"] for s in stats)
        acks = sum(s["acks"] for s in stats)
        acked = sum(s["acked"] for s in stats)
        writes = sum(s["writes"] for s in stats)
        gc_seconds = sum(s["gc_seconds"] for s in stats)
        return {
            "e2e_msgs_per_s": round(total / elapsed, 1),
            "e2e_seconds": round(elapsed, 3),
            "p50_ms": round(pct(latencies, 0.50), 2) if latencies else None,
            "p99_ms": round(pct(latencies, 0.99), 2) if latencies else None,
            "latency_samples": len(latencies),
            "mean_ms": round(statistics.fmean(latencies), 2) if latencies else None,
            # Both clients of every pair, with their delivery receipts: the client processes'
            # CPU from /proc (less sensitive to other load on the machine than the throughput).
            "client_cpu_us_per_msg": round(client_cpu / total * 1e6),
            "client_cpu_cores": round(client_cpu / elapsed, 2),
            # Of it, in the kernel (socket writes, fsyncs, file locks, thread hand-offs).
            "client_sys_cpu_us_per_msg": round(client_sys / total * 1e6),
            # Of it, in the cyclic garbage collector (wall time of its collections, --gc).
            "client_gc_us_per_msg": round(gc_seconds / total * 1e6, 1),
            "e2e_relay_cpu_us_per_msg": round(relay_cpu / total * 1e6, 1),
            "e2e_relay_cpu_cores": round(relay_cpu / elapsed, 2),
            "store_statements_per_msg": round(statements / total, 1),
            "store_commits_per_msg": round(commits / total, 2),
            "store_fsyncs_per_msg": round(flushes / total, 2),
            # What the relay gets from the clients per message (relay-only: 1 send, and an
            # ack of up to 32 sequence numbers): sends beyond 1.0 are receipts; acks per
            # message and sequence numbers per ack; socket writes per message.
            "sends_per_msg": round(sends / total, 3),
            "acks_per_msg": round(acks / total, 3),
            "seqs_per_ack": round(acked / acks, 1) if acks else None,
            "socket_writes_per_msg": round(writes / total, 3),
        }
    finally:
        if workers is not None:
            workers.stop()
        if drop is not None:
            await drop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--size", type=int, default=64, help="text bytes per message")
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "VOX_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--skip-relay-only", action="store_true")
    parser.add_argument(
        "--lane-window",
        type=int,
        default=None,
        help="sends of one conversation on their way at once (default: the SDK's)",
    )
    parser.add_argument(
        "--tmp-dir",
        default=None,
        help="where client profiles and the relay data live (e.g. /dev/shm to factor out fsync)",
    )
    parser.add_argument(
        "--client-procs",
        type=int,
        default=2,
        help="client processes the pairs are split across (a pair's sender and receiver sit in"
        " different ones when N > 1)",
    )
    parser.add_argument(
        "--gc",
        choices=["settled", "default"],
        default="settled",
        help="the client processes' garbage collector: clients.sdk.heap.settle() after"
        " start-up, as vox daemon and vox chat do (default), or CPython's defaults",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="alternate e2e and relay-only runs N times"
    )
    parser.add_argument(
        "--profile",
        default=None,
        help="py-spy profiles of the client processes over the timed load: PATH.<n>.txt (raw)"
        " or PATH.<n>.svg",
    )
    args = parser.parse_args()
    if args.size < 24:
        parser.error("--size must be at least 24 (a text starts with its send time)")
    if args.client_procs < 1:
        parser.error("--client-procs must be at least 1")
    relay_bench = load_relay_bench()
    result: dict[str, Any] = {
        "database": args.database,
        "pairs": args.pairs,
        "messages": args.messages,
        "size": args.size,
        "window": args.window,
        "lane_window": args.lane_window,
        "client_procs": args.client_procs,
        "gc": args.gc,
    }
    runs = []
    for n in range(args.repeat):
        log(f"run {n + 1}/{args.repeat}")
        run = asyncio.run(e2e(args, relay_bench))
        if not args.skip_relay_only:
            run.update(relay_only(args, relay_bench))
            run["ratio"] = round(run["e2e_msgs_per_s"] / run["relay_only_msgs_per_s"], 3)
        runs.append(run)
    if args.repeat == 1:
        result.update(runs[0])
    else:
        result["runs"] = runs
        for key in (
            "ratio",
            "e2e_msgs_per_s",
            "p50_ms",
            "client_cpu_us_per_msg",
            "e2e_relay_cpu_us_per_msg",
        ):
            values = [r[key] for r in runs if r.get(key) is not None]
            if values:
                result[f"median_{key}"] = statistics.median(values)
                result[f"spread_{key}"] = [min(values), max(values)]
    print(json.dumps(result), flush=True)


def relay_only(args: argparse.Namespace, relay_bench: Any) -> dict[str, Any]:
    """``bench/relay.py``'s durable load with raw payloads of our ciphertexts' size."""
    relay_args = relay_bench.arguments().parse_args([])  # every option at its default
    relay_args.pairs = args.pairs
    relay_args.messages = args.messages
    relay_args.size = wire_size(args.size)
    relay_args.window = args.window
    relay_args.database = args.database
    relay_args.postgres_url = args.postgres_url
    (relay,) = asyncio.run(relay_bench.durable(relay_args))
    return {
        "relay_only_msgs_per_s": relay["durable_msgs_per_s"],
        "relay_only_p50_ms": relay["p50_ms"],
        "relay_only_p99_ms": relay["p99_ms"],
        "relay_only_relay_cpu_us_per_msg": relay["relay_cpu_us_per_msg"],
    }


if __name__ == "__main__":
    main()
