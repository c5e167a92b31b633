"""TCP ports for the servers tests start in subprocesses, free of races.

The usual trick — bind port 0, read the number, close, hand it to a subprocess — leaves a gap:
the port is back in the kernel's ephemeral pool until the subprocess binds it seconds later,
and any socket that connects out in that time (an HTTP client, a database driver, a parallel
test worker) can be given it. Ports here come from below the ephemeral range
(``/proc/sys/net/ipv4/ip_local_port_range``, 32768+ by default), which the kernel never hands
out by itself, and each test process first takes a block of them under an ``flock``: no other
test process on the machine (another pytest-xdist worker, another checkout's run) uses the same
block while this one lives. Inside its block a process goes round robin and skips a port that
something outside is listening on, so a port is reused only after the whole block was.

``free_port()`` is the one call tests need.
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
import threading
from pathlib import Path
from typing import IO

__all__ = ["BLOCK_SIZE", "FIRST_PORT", "LAST_PORT", "free_port"]

FIRST_PORT = 20000
LAST_PORT = 29999  # below the default ephemeral range (32768-60999)
BLOCK_SIZE = 100
LOCK_DIR = Path(tempfile.gettempdir()) / "vox-test-ports"

_lock = threading.Lock()
_held: IO[bytes] | None = None  # the flock'ed file: open for this process's life
_owner_pid = 0
_block: range = range(0)
_next = 0


def _take_block() -> range:
    """Lock the first free block (starting at one picked by pid, to spread processes)."""
    global _held, _owner_pid
    LOCK_DIR.mkdir(exist_ok=True)
    blocks = (LAST_PORT - FIRST_PORT + 1) // BLOCK_SIZE
    start = os.getpid() % blocks
    for i in range(blocks):
        n = (start + i) % blocks
        f = (LOCK_DIR / f"block-{n}.lock").open("ab")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            continue
        _held, _owner_pid = f, os.getpid()
        first = FIRST_PORT + n * BLOCK_SIZE
        return range(first, first + BLOCK_SIZE)
    raise RuntimeError(f"all {blocks} test port blocks in {LOCK_DIR} are held by other processes")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        # As servers bind (SO_REUSEADDR): a port whose last connection is in TIME_WAIT is fine.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback TCP port reserved for this test process; nothing else listens on it now."""
    global _block, _next
    with _lock:
        if _owner_pid != os.getpid():  # first call, or a forked child: take a block of its own
            _block, _next = _take_block(), 0
        for _ in range(len(_block)):
            port = _block[_next % len(_block)]
            _next += 1
            if _bindable(port):
                return port
    raise RuntimeError(f"no bindable port left in {_block}")
