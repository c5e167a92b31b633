"""The test suite's own plumbing: race-free ports (:mod:`tests.ports`) and no leaked processes
(``tests/conftest.py``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests import ports

REPO = Path(__file__).resolve().parents[1]

_LEAKY_MODULE = """
import subprocess
from pathlib import Path


def test_leaks_a_child_and_an_orphan(tmp_path: Path) -> None:
    child = subprocess.Popen(["sleep", "300"])
    Path("{out}", "child").write_text(str(child.pid))
    # The shell exits at once: its sleep is re-parented, no longer a descendant of pytest.
    subprocess.run(["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $! > {out}/orphan"], check=True)
"""


def _port_block_of_another_process() -> set[int]:
    code = "from tests import ports; print(*(ports.free_port() for _ in range(5)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout
    return {int(p) for p in out.split()}


def test_ports_come_from_below_the_ephemeral_range_and_a_block_no_other_process_holds() -> None:
    mine = {ports.free_port() for _ in range(5)}
    low, _ = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    assert all(ports.FIRST_PORT <= p <= ports.LAST_PORT < low for p in mine)
    # This process holds its block while it lives: another process gets another block.
    theirs = _port_block_of_another_process()
    assert len(theirs) == 5
    assert {p // ports.BLOCK_SIZE for p in mine}.isdisjoint({p // ports.BLOCK_SIZE for p in theirs})


def test_a_port_something_listens_on_is_skipped() -> None:
    ports.free_port()
    upcoming = ports._block[ports._next % len(ports._block)]  # the block is walked in order
    with socket.socket() as outsider:
        outsider.bind(("127.0.0.1", upcoming))
        outsider.listen()
        assert ports.free_port() != upcoming


def test_processes_a_test_module_leaves_behind_are_killed_when_it_ends(tmp_path: Path) -> None:
    module = tmp_path / "test_leaky.py"
    module.write_text(_LEAKY_MODULE.format(out=tmp_path))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "tests.conftest",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            str(module),
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    pids = [int((tmp_path / name).read_text()) for name in ("child", "orphan")]
    deadline = time.monotonic() + 30
    alive = [pid for pid in pids if _running(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in pids if _running(pid)]
    for pid in alive:
        os.kill(pid, 9)  # leave nothing behind ourselves
    assert alive == []


def _running(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
