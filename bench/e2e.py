"""End-to-end benchmark through the SDK (prints one JSON line at the end).

::

    python bench/e2e.py [--pairs 20] [--messages 200] [--size 64] [--window 10]
                        [--database sqlite|postgres] [--skip-relay-only] [--repeat 1]
                        [--lane-window N] [--tmp-dir DIR]

P pairs of real :class:`clients.sdk.VoxClient` s (each with its own SQLite profile store in a
temporary home) chat through one ``vox-relay serve`` subprocess: every sender sends M texts of
S bytes to its receiver with up to ``--window`` ``send_text`` calls outstanding (the SDK keeps
at most its lane window of one conversation's sends on their way to the relay at once:
``--lane-window`` overrides it for every client, reported as ``lane_window``); every message is
encrypted (Double Ratchet), persisted and acked by the relay, decrypted, stored and acked by
the receiver — which also sends the usual encrypted delivery receipt back. One warm-up message
per pair (PQXDH session set-up) is not timed. Latency is send → decrypted (both clients in this
process, same clock).

In the same run, ``bench/relay.py``'s durable load (raw opaque payloads of the same size as
our ciphertexts, same pairs, messages and window, its own relay process) gives
``relay_only_msgs_per_s``; ``ratio = e2e / relay_only`` shows what the client side costs.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clients.sdk import Event, Message, VoxClient  # noqa: E402
from clients.sdk.content import TextContent, padded  # noqa: E402
from clients.store import SqliteStore  # noqa: E402

#: Bytes a padded content gains on the wire (payload 11 + username + ratchet header 41 +
#: envelope framing 7 + GCM tag 16 + relay payload 2, rounded up).
CIPHERTEXT_OVERHEAD = 90


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
        self.on = False

    def attach(self, client: VoxClient) -> None:
        if isinstance(client.store, SqliteStore):
            client.store._conn.set_trace_callback(self._trace)

    def _trace(self, sql: str) -> None:
        if self.on:
            self.statements += 1
            self.commits += sql == "COMMIT"


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def e2e(args: argparse.Namespace, relay_bench: Any) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="vox-e2e-", dir=args.tmp_dir))
    drop = None
    clients: list[VoxClient] = []
    try:
        if args.database == "postgres":
            database_url, drop = await relay_bench.create_pg_database(args.postgres_url)
        else:
            database_url = f"sqlite+aiosqlite:///{tmp / 'relay.sqlite3'}"
        port = relay_bench.free_port()
        exe = str(Path(sys.executable).with_name("vox-relay"))
        cmd = [exe, "serve", "--port", str(port)]
        env = relay_bench.relay_env(tmp, database_url)
        async with relay_bench.process(cmd, env, port, "/healthz"):
            url = f"http://127.0.0.1:{port}"
            senders, receivers = [], []
            for i in range(args.pairs):
                senders.append(await VoxClient.register(tmp / f"s{i}", url, f"s{i:04d}"))
                receivers.append(await VoxClient.register(tmp / f"r{i}", url, f"r{i:04d}"))
            clients = senders + receivers
            counter = StatementCounter()
            for client in clients:
                counter.attach(client)
                if args.lane_window is not None:
                    client.engine.sends.lane_window = args.lane_window
            log(f"relay up on :{port} ({args.database}), {len(clients)} SDK clients registered")
            sent_at: dict[str, float] = {}
            latencies: list[float] = []
            received = [0] * args.pairs
            done = asyncio.Event()
            warm = asyncio.Event()
            expected = args.messages + 1  # + warm-up

            def on_event(index: int) -> Any:
                def handle(event: Event) -> None:
                    if isinstance(event, Message) and not event.outgoing:
                        t0 = sent_at.get(event.id)
                        if t0 is not None and event.text != "warm-up":
                            latencies.append((time.perf_counter() - t0) * 1000)
                        received[index] += 1
                        if all(n >= 1 for n in received):
                            warm.set()
                        if all(n >= expected for n in received):
                            done.set()

                return handle

            for i, receiver in enumerate(receivers):
                receiver.on_event(on_event(i))
            await asyncio.gather(*(c.connect() for c in clients))
            text = "x" * args.size
            for i, sender in enumerate(senders):  # PQXDH set-up, not timed
                await sender.send_text(f"r{i:04d}", "warm-up")
            await asyncio.wait_for(warm.wait(), 60)

            async def run_sender(i: int, sender: VoxClient) -> None:
                window = asyncio.Semaphore(args.window)

                async def one() -> None:
                    async with window:
                        message_id = os.urandom(16).hex()
                        sent_at[message_id] = time.perf_counter()
                        await sender.send_text(f"r{i:04d}", text, message_id=message_id)

                await asyncio.gather(*(one() for _ in range(args.messages)))

            counter.on = True
            started, cpu_started = time.perf_counter(), time.process_time()
            await asyncio.gather(*(run_sender(i, s) for i, s in enumerate(senders)))
            await asyncio.wait_for(done.wait(), 300)
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
            counter.on = False
            for client in clients:
                await client.close()
            clients = []
        total = args.pairs * args.messages
        return {
            "e2e_msgs_per_s": round(total / elapsed, 1),
            "e2e_seconds": round(elapsed, 3),
            "p50_ms": round(pct(latencies, 0.50), 2) if latencies else None,
            "p99_ms": round(pct(latencies, 0.99), 2) if latencies else None,
            "latency_samples": len(latencies),
            "mean_ms": round(statistics.fmean(latencies), 2) if latencies else None,
            # Both clients of every pair, with their delivery receipts (this process's CPU:
            # less sensitive to other load on the machine than the throughput).
            "client_cpu_us_per_msg": round(cpu / total * 1e6),
            "store_statements_per_msg": round(counter.statements / total, 1),
            "store_commits_per_msg": round(counter.commits / total, 2),
        }
    finally:
        for client in clients:
            await client.close()
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
        "--repeat", type=int, default=1, help="alternate e2e and relay-only runs N times"
    )
    args = parser.parse_args()
    relay_bench = load_relay_bench()
    result: dict[str, Any] = {
        "database": args.database,
        "pairs": args.pairs,
        "messages": args.messages,
        "size": args.size,
        "window": args.window,
        "lane_window": args.lane_window,
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
        for key in ("ratio", "e2e_msgs_per_s", "p50_ms", "client_cpu_us_per_msg"):
            values = [r[key] for r in runs if r.get(key) is not None]
            if values:
                result[f"median_{key}"] = statistics.median(values)
                result[f"spread_{key}"] = [min(values), max(values)]
    print(json.dumps(result), flush=True)


def relay_only(args: argparse.Namespace, relay_bench: Any) -> dict[str, Any]:
    """``bench/relay.py``'s durable load with raw payloads of our ciphertexts' size."""
    relay_args = argparse.Namespace(
        pairs=args.pairs,
        messages=args.messages,
        size=wire_size(args.size),
        window=args.window,
        database=args.database,
        postgres_url=args.postgres_url,
        profile=None,
        growth=0,
    )
    (relay,) = asyncio.run(relay_bench.durable(relay_args))
    return {
        "relay_only_msgs_per_s": relay["durable_msgs_per_s"],
        "relay_only_p50_ms": relay["p50_ms"],
        "relay_only_p99_ms": relay["p99_ms"],
    }


if __name__ == "__main__":
    main()
