"""The benchmark scripts still run (a tiny load each, real relay subprocesses): a change to one
of them, or to what it imports, must not leave the others broken until the next measurement
(``bench/e2e.py``'s relay-only run once missed an option ``bench/relay.py`` had gained)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_bench(script: str, *args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(
    ("script", "args", "keys"),
    [
        (
            "relay.py",
            ("--pairs", "2", "--messages", "5", "--baselines", "fastapi"),
            {"durable_msgs_per_s", "relay_cpu_us_per_msg", "ratio_vs_fastapi", "cpu_vs_fastapi"},
        ),
        (
            "e2e.py",
            ("--pairs", "2", "--messages", "5"),
            {"e2e_msgs_per_s", "relay_only_msgs_per_s", "ratio", "client_cpu_us_per_msg"},
        ),
        ("rss.py", ("--repeat", "1"), {"fastapi_stack_rss_mb", "relay_idle_rss_mb"}),
    ],
)
def test_a_benchmark_runs_and_prints_its_figures(
    script: str, args: tuple[str, ...], keys: set[str]
) -> None:
    result = run_bench(script, *args)
    assert keys <= set(result), sorted(result)
