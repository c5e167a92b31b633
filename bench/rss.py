"""Where the relay's idle memory goes: an import ladder (prints one JSON line at the end).

::

    python bench/rss.py [--repeat 3]

Each rung is a fresh ``python -c`` process that imports one more layer of what
``vox-relay serve`` loads, with the modules ``serve`` blocks blocked
(:data:`server.cli.BLOCKED_MODULES`), runs a full collection and reads its own
``/proc/self/status``:

1. ``python``: the bare interpreter;
2. ``fastapi_stack``: FastAPI, uvicorn with the protocols the relay serves with (httptools,
   the sans-I/O ``websockets`` implementation, uvloop) and aiosqlite — what
   ``bench/forwarder.py``'s FastAPI forwarder loads, plus the SQLite driver;
3. ``sqlalchemy_core``: + ``import sqlalchemy`` (Core: SQL expressions, engine, pool, types);
4. ``sqlalchemy_asyncio``: + ``sqlalchemy.ext.asyncio`` (its package imports the ORM session,
   so this rung is the ORM too);
5. ``relay_app``: + ``server.app`` (every relay module, its pydantic models and tables).

Then the real thing: ``vox-relay serve`` on a fresh SQLite database, read one second after
``/healthz`` answers (as ``bench/relay.py``'s ``relay_idle_rss_mb``), and the FastAPI
forwarder (``bench/forwarder.py``) the same way. Each figure is the median of ``--repeat``
processes; ``*_delta_mb`` is a rung minus the one before it. The ladder shows what serving
without a layer would save; the running relay holds a little more than ``relay_app`` (what
its lifespan opens: database connections, the writer's and checkpointer's threads, caches;
start-up's garbage is collected and its freed heap handed back,
:func:`server.edge.serve.serving_gc`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.relay import process, relay_env  # noqa: E402
from server.cli import BLOCKED_MODULES  # noqa: E402
from tests.server.relay_harness import free_port  # noqa: E402

FASTAPI_STACK = (
    "fastapi",
    "uvicorn",
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.protocols.websockets.websockets_sansio_impl",
    "uvloop",
    "aiosqlite",
)

#: (rung, modules imported on top of the rungs before it)
LADDER: list[tuple[str, tuple[str, ...]]] = [
    ("python", ()),
    ("fastapi_stack", FASTAPI_STACK),
    ("sqlalchemy_core", ("sqlalchemy",)),
    ("sqlalchemy_asyncio", ("sqlalchemy.ext.asyncio",)),
    ("relay_app", ("server.app",)),
]

_READ = (
    "import gc, json, re, sys\n"
    "gc.collect()\n"
    "s = open('/proc/self/status').read()\n"
    "print(json.dumps({k: int(re.search(k + r':\\s+(\\d+)', s).group(1))"
    " for k in ('VmRSS', 'RssAnon', 'RssFile')}))\n"
)


def rung_kib(modules: list[str]) -> dict[str, int]:
    """``/proc/self/status`` of a fresh interpreter that imported ``modules``."""
    block = "".join(f"sys.modules[{name!r}] = None\n" for name in BLOCKED_MODULES)
    code = f"import sys\n{block}" + "".join(f"import {m}\n" for m in modules) + _READ
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    values: dict[str, int] = json.loads(out.stdout)
    return values


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


async def served_kib(kind: str) -> int:
    """Idle RSS of a real server one second after its health check answers."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="vox-rss-") as tmp:
        if kind == "relay":
            database_url = f"sqlite+aiosqlite:///{Path(tmp) / 'relay.sqlite3'}"
            cmd = [str(Path(sys.executable).with_name("vox-relay")), "serve", "--port", str(port)]
            env = relay_env(Path(tmp), database_url)
            path = "/healthz"
        else:
            cmd = [sys.executable, str(ROOT / "bench" / "forwarder.py"), str(port), "fastapi"]
            env = dict(os.environ)
            path = "/"
        async with process(cmd, env, port, path) as proc:
            await asyncio.sleep(1.0)
            return rss_kib(proc.pid)


def mb(kib: float) -> float:
    return round(kib / 1024, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    result: dict[str, Any] = {"repeat": args.repeat}
    modules: list[str] = []
    previous: float | None = None
    for name, extra in LADDER:
        modules += extra
        runs = [rung_kib(modules) for _ in range(args.repeat)]
        rss = statistics.median(r["VmRSS"] for r in runs)
        result[f"{name}_rss_mb"] = mb(rss)
        result[f"{name}_anon_mb"] = mb(statistics.median(r["RssAnon"] for r in runs))
        if previous is not None:
            result[f"{name}_delta_mb"] = mb(rss - previous)
        previous = rss
        print(f"{name}: {mb(rss)} MB", file=sys.stderr, flush=True)
    for kind in ("relay", "fastapi"):
        values = [asyncio.run(served_kib(kind)) for _ in range(args.repeat)]
        result[f"{kind}_idle_rss_mb"] = mb(statistics.median(values))
        print(f"{kind} idle: {result[f'{kind}_idle_rss_mb']} MB", file=sys.stderr, flush=True)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
