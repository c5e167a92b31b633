"""A legitimate pair under attack (prints one JSON line at the end).

    python bench/abuse.py [--messages 3000] [--size 1024] [--window 10] [--sockets 10000]

One real ``vox-relay serve`` subprocess (SQLite, default limits except the per-device and
per-account send rates, lifted so that the pair measures the relay, not its own budget). In
the same run:

1. **quiet** — alice sends M messages of S opaque bytes to bob (up to ``--window`` sends
   awaiting ``accepted``; bob acks in batches): throughput and send → deliver latency;
2. **attacked** — the same pair sends M more messages while an attacker process, started
   first and given a few seconds to ramp up, keeps trying to hold ``--sockets`` idle TCP
   connections to the relay from one address (127.0.0.2; every socket that is closed is
   reopened after a pause) and floods 1 MiB frames of an unknown type from one authenticated
   device (from 127.0.0.4; on every close it reconnects at once).

All along, two probers (127.0.0.3) open a fresh connection every 100 ms and time
``GET /healthz``: one on the relay's operator-only listener (``VOX_OPS_PORT``, where a load
balancer should probe: ``healthz_max_ms``), one on the public port under attack
(``healthz_public_max_ms``; a probe that fails or takes over 5 s counts as 5,000 ms). The
final JSON line has ``quiet_msgs_per_s``, ``attacked_msgs_per_s``, ``quiet_p99_ms``,
``attacked_p99_ms``, ``healthz_max_ms`` and what the attacker achieved.
The two phases alternate ``--rounds`` times (the machine may be shared: its load should not
land on one side only); rates are total messages over total time, latencies pooled.
Targets (``docs/threat-model.md``): ``/healthz`` within 100 ms throughout, attacked p99 ≤ 3 ×
quiet, attacked throughput ≥ 0.5 × quiet.

Loopback only; every loop is bounded by the phase's duration or message count. Both processes
raise their open-file limit to the hard limit (10,000 sockets need it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil
from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.server.relay_harness import TestAccount  # noqa: E402

ATTACK_ADDRESS = "127.0.0.2"
PROBE_ADDRESS = "127.0.0.3"
FLOOD_ADDRESS = "127.0.0.4"


def log(*parts: object) -> None:
    print("[abuse]", *parts, file=sys.stderr, flush=True)


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] if ordered else 0.0


# --- the relay ------------------------------------------------------------------------------


def relay_env(data_dir: Path, ops_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOX_")}
    env.update(
        {
            "VOX_DATA_DIR": str(data_dir),
            "VOX_OPS_PORT": str(ops_port),
            "VOX_LOG_LEVEL": "warning",
            "VOX_ACCESS_LOG": "false",
            # The pair's own budgets are lifted; every hostile-client limit keeps its default.
            "VOX_LIMITS__MESSAGES_PER_SECOND_PER_DEVICE": "100000",
            "VOX_LIMITS__MESSAGES_PER_SECOND_PER_ACCOUNT": "100000",
            "VOX_LIMITS__FRAMES_PER_SECOND_PER_DEVICE": "100000",
            "VOX_LIMITS__MAX_QUEUE_DEPTH": "1000000",
        }
    )
    return env


async def wait_healthy(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"relay exited with {proc.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise TimeoutError("relay did not start")


async def login_all(base_url: str) -> dict[str, str]:
    tokens: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        for user in ("alice", "bob", "mallory"):
            tokens[user] = await TestAccount.new(user).register_and_login(http)
    return tokens


async def open_device(port: int, token: str, address: str = "127.0.0.1") -> ClientConnection:
    """An authenticated WebSocket from ``address``."""
    sock = socket.socket()
    sock.bind((address, 0))
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    url = f"ws://127.0.0.1:{port}/v1/ws"
    ws = await connect(url, sock=sock, compression=None, max_size=None, open_timeout=30)
    await ws.send(json.dumps({"type": "auth", "token": token}))
    ready = json.loads(await ws.recv())
    if ready.get("type") != "ready":
        raise RuntimeError(f"auth failed: {ready}")
    return ws


# --- the legitimate pair --------------------------------------------------------------------


async def pair_load(
    port: int, tokens: dict[str, str], phase: str, messages: int, size: int, window: int
) -> tuple[float, list[float]]:
    """alice → bob: returns (messages per second, latencies in ms)."""
    alice = await open_device(port, tokens["alice"])
    bob = await open_device(port, tokens["bob"])
    sent_at = [0.0] * messages
    latencies: list[float] = []
    slots = asyncio.Semaphore(window)
    filler = os.urandom(max(0, size - 8))
    to = [{"user": "bob", "device": 1}]

    async def send() -> None:
        for i in range(messages):
            await slots.acquire()
            data = base64.b64encode(struct.pack(">Q", i) + filler).decode()
            frame = {"type": "send", "id": f"{phase}-{i}", "payloads": [{"data": data, "to": to}]}
            sent_at[i] = time.perf_counter()
            await alice.send(json.dumps(frame))

    async def answers() -> None:
        got = 0
        while got < messages:
            frame = json.loads(await alice.recv())
            if frame["type"] == "accepted":
                got += 1
                slots.release()
            elif frame["type"] != "deliver":
                raise RuntimeError(f"unexpected answer {frame}")

    async def receive() -> None:
        seen: set[int] = set()
        pending: list[int] = []
        while len(seen) < messages:
            try:
                raw = await asyncio.wait_for(bob.recv(), 0.005 if pending else 60)
            except TimeoutError:
                await bob.send(json.dumps({"type": "ack", "seqs": pending}))
                pending = []
                continue
            frame = json.loads(raw)
            if frame["type"] != "deliver":
                continue
            (i,) = struct.unpack(">Q", base64.b64decode(frame["data"][:12])[:8])
            if i not in seen:
                seen.add(i)
                latencies.append((time.perf_counter() - sent_at[i]) * 1000)
            pending.append(frame["seq"])
            if len(pending) >= 32:
                await bob.send(json.dumps({"type": "ack", "seqs": pending}))
                pending = []
        if pending:
            await bob.send(json.dumps({"type": "ack", "seqs": pending}))

    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(send(), answers(), receive()), 600)
    elapsed = time.perf_counter() - start
    await alice.close()
    await bob.close()
    return messages / elapsed, latencies


async def prober(
    port: int, stop: asyncio.Event, samples: dict[str, list[float]], phase: list[str]
) -> None:
    """A fresh connection every 100 ms: ``GET /healthz``; the time until the answer."""
    request = b"GET /healthz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n"
    while not stop.is_set():
        start = time.perf_counter()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, local_addr=(PROBE_ADDRESS, 0)), 5
            )
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            ok = head.startswith(b"HTTP/1.1 200")
            writer.close()
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            ok = False
        elapsed = (time.perf_counter() - start) * 1000
        samples[phase[0]].append(elapsed if ok else 5000.0)
        await asyncio.sleep(0.1)


# --- the attacker (a separate process) ------------------------------------------------------


async def attacker(port: int, token: str, sockets: int, duration: float) -> dict[str, Any]:
    """Hold idle sockets from one address and flood invalid frames from one device, until
    SIGTERM or ``duration`` seconds."""
    loop = asyncio.get_running_loop()
    stopped: asyncio.Future[None] = loop.create_future()

    def stop() -> None:
        if not stopped.done():
            stopped.set_result(None)

    loop.add_signal_handler(signal.SIGTERM, stop)
    loop.call_later(duration, stop)
    held = 0
    peak = 0
    stats: Counter[str] = Counter()

    async def idle_slot(k: int) -> None:
        nonlocal held, peak
        await asyncio.sleep(k * 0.0005)  # open 2,000 per second at first
        while not stopped.done():
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port, local_addr=(ATTACK_ADDRESS, 0)),
                    10,
                )
            except (OSError, TimeoutError) as exc:
                stats["connect_failed"] += 1
                stats[f"connect_failed_{exc.__class__.__name__}_{getattr(exc, 'errno', '')}"] += 1
                await asyncio.sleep(1.0)
                continue
            stats["connects"] += 1
            held += 1
            peak = max(peak, held)
            read = asyncio.ensure_future(reader.read(1))
            read_or_stop: list[asyncio.Future[Any]] = [read, stopped]
            await asyncio.wait(read_or_stop, return_when=asyncio.FIRST_COMPLETED)
            if read.done():
                stats["closed_by_relay"] += 1
            else:
                read.cancel()
            held -= 1
            writer.close()
            await asyncio.wait([stopped], timeout=1.0)  # the attacker reopens every closed socket

    async def flood() -> None:
        junk = json.dumps({"type": "junk", "pad": "x" * (1024 * 1024 - 64)})
        while not stopped.done():
            try:
                ws = await asyncio.wait_for(open_device(port, token, FLOOD_ADDRESS), 10)
            except Exception as exc:
                stats["flood_connect_refused"] += 1
                stats[f"flood_connect_{exc.__class__.__name__}"] += 1
                await asyncio.sleep(0.05)
                continue
            try:
                while not stopped.done():
                    await ws.send(junk)
                    stats["flood_frames"] += 1
            except Exception as exc:
                stats[f"flood_send_{exc.__class__.__name__}"] += 1
            rcvd = ws.protocol.close_rcvd
            stats[f"flood_closed_{rcvd.code if rcvd else 'none'}"] += 1
            with contextlib.suppress(Exception):
                await ws.close()

    tasks = [asyncio.create_task(flood())]
    await asyncio.sleep(0.5)  # the flooding device is in before the idle sockets pile up
    tasks += [asyncio.create_task(idle_slot(k)) for k in range(sockets)]
    print("ready", flush=True)
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"attacker_sockets_held_max": peak, **dict(stats)}


# --- main -----------------------------------------------------------------------------------


async def attacked_phase(
    args: argparse.Namespace,
    port: int,
    tokens: dict[str, str],
    tag: str,
    relay_pid: int,
    phase: list[str],
) -> tuple[float, list[float], float, float, dict[str, Any]]:
    """Start the attacker, let it ramp up, run the pair, stop the attacker."""
    attack = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--attacker",
        str(port),
        tokens["mallory"],
        str(args.sockets),
        str(args.attack_seconds),
        stdout=asyncio.subprocess.PIPE,
    )
    assert attack.stdout is not None
    await asyncio.wait_for(attack.stdout.readline(), 60)  # "ready"
    await asyncio.sleep(args.ramp_seconds)
    phase[0] = "attacked"
    relay_ps, attacker_ps = psutil.Process(relay_pid), psutil.Process(attack.pid)
    a0, r0, t0 = _cpu(attacker_ps), _cpu(relay_ps), time.perf_counter()
    rate, lat = await pair_load(port, tokens, tag, args.messages, args.size, args.window)
    t1 = time.perf_counter()
    phase[0] = "ramp"
    relay_cpu, attacker_cpu = (
        (_cpu(relay_ps) - r0) / (t1 - t0),
        (_cpu(attacker_ps) - a0) / (t1 - t0),
    )
    attack.terminate()
    out, _ = await asyncio.wait_for(attack.communicate(), 120)
    return rate, lat, relay_cpu, attacker_cpu, json.loads(out.decode().strip().splitlines()[-1])


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    nofile = raise_nofile()
    port, ops_port = free_port(), free_port()
    exe = str(Path(sys.executable).with_name("vox-relay"))
    quiet_lat: list[float] = []
    attacked_lat: list[float] = []
    quiet_rates: list[float] = []
    attacked_rates: list[float] = []
    cpu: dict[str, list[float]] = {"quiet": [], "attacked": [], "attacker": []}
    attack_stats: Counter[str] = Counter()
    held_max = 0
    with tempfile.TemporaryDirectory(prefix="vox-abuse-") as tmp:
        proc = subprocess.Popen(  # noqa: ASYNC220
            [exe, "serve", "--port", str(port)], env=relay_env(Path(tmp), ops_port), cwd=ROOT
        )
        try:
            await wait_healthy(port, proc)
            tokens = await login_all(f"http://127.0.0.1:{port}")
            samples: dict[str, list[float]] = {"quiet": [], "attacked": [], "ramp": []}
            public: dict[str, list[float]] = {"quiet": [], "attacked": [], "ramp": []}
            phase = ["ramp"]
            stop = asyncio.Event()
            probes = [
                asyncio.create_task(prober(ops_port, stop, samples, phase)),
                asyncio.create_task(prober(port, stop, public, phase)),
            ]
            await pair_load(port, tokens, "warm", min(300, args.messages), args.size, args.window)
            relay_ps = psutil.Process(proc.pid)
            # Quiet and attacked phases alternate, so that a change in the machine's load
            # (it is shared) does not land on one side only.
            for r in range(args.rounds):
                phase[0] = "quiet"
                r0, t0 = _cpu(relay_ps), time.perf_counter()
                rate, lat = await pair_load(
                    port, tokens, f"q{r}", args.messages, args.size, args.window
                )
                cpu["quiet"].append((_cpu(relay_ps) - r0) / (time.perf_counter() - t0))
                quiet_rates.append(rate)
                quiet_lat += lat
                log(f"round {r} quiet: {rate:.0f} msg/s, p99 {pct(lat, 0.99):.1f} ms")
                phase[0] = "ramp"
                rate, lat, relay_cpu, attacker_cpu, stats = await attacked_phase(
                    args, port, tokens, f"a{r}", proc.pid, phase
                )
                phase[0] = "ramp"
                cpu["attacked"].append(relay_cpu)
                cpu["attacker"].append(attacker_cpu)
                attacked_rates.append(rate)
                attacked_lat += lat
                held_max = max(held_max, int(stats.pop("attacker_sockets_held_max", 0)))
                attack_stats.update(stats)
                log(f"round {r} attacked: {rate:.0f} msg/s, p99 {pct(lat, 0.99):.1f} ms")
            stop.set()
            await asyncio.gather(*probes)
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    # Rates: the harmonic mean over rounds (= total messages / total time).
    quiet_rate = len(quiet_rates) / sum(1 / x for x in quiet_rates)
    attacked_rate = len(attacked_rates) / sum(1 / x for x in attacked_rates)
    quiet_p99 = pct(quiet_lat, 0.99)
    attacked_p99 = pct(attacked_lat, 0.99)
    probed = [v for v in samples.values() if v]  # throughout: ramps included
    healthz_max = max(max(v) for v in probed)
    public_max = max(max(v) for v in public.values() if v)
    return {
        "bench": "abuse",
        "rounds": args.rounds,
        "messages_per_phase": args.messages,
        "size": args.size,
        "window": args.window,
        "sockets": args.sockets,
        "open_file_limit": nofile,
        "quiet_msgs_per_s": round(quiet_rate, 1),
        "attacked_msgs_per_s": round(attacked_rate, 1),
        "quiet_p50_ms": round(pct(quiet_lat, 0.5), 2),
        "attacked_p50_ms": round(pct(attacked_lat, 0.5), 2),
        "quiet_p99_ms": round(quiet_p99, 2),
        "attacked_p99_ms": round(attacked_p99, 2),
        "healthz_max_ms": round(healthz_max, 2),
        "healthz_quiet_max_ms": round(max(samples["quiet"] or [0.0]), 2),
        "healthz_attacked_max_ms": round(max(samples["attacked"] or [0.0]), 2),
        "healthz_probes": sum(len(v) for v in probed),
        "healthz_public_max_ms": round(public_max, 2),
        "healthz_public_quiet_max_ms": round(max(public["quiet"] or [0.0]), 2),
        "healthz_public_attacked_p99_ms": round(pct(public["attacked"], 0.99), 2),
        "healthz_public_failed": sum(x >= 5000 for v in public.values() for x in v),
        "relay_cpu_quiet": round(sum(cpu["quiet"]) / len(cpu["quiet"]), 2),
        "relay_cpu_attacked": round(sum(cpu["attacked"]) / len(cpu["attacked"]), 2),
        "attacker_cpu": round(sum(cpu["attacker"]) / len(cpu["attacker"]), 2),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "attacker_sockets_held_max": held_max,
        **dict(attack_stats),
        "target_healthz_100ms": healthz_max <= 100,
        "target_p99_3x": attacked_p99 <= 3 * quiet_p99,
        "target_throughput_half": attacked_rate >= 0.5 * quiet_rate,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--attacker":
        raise_nofile()
        port, token, sockets, duration = sys.argv[2:6]
        result = asyncio.run(attacker(int(port), token, int(sockets), float(duration)))
        print(json.dumps(result), flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1500, help="per phase")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument("--ramp-seconds", type=float, default=5.0)
    parser.add_argument("--attack-seconds", type=float, default=600.0, help="upper bound")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
