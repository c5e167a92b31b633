"""Benchmark of the browser client's protocol code, run in headless Chromium.

Run: ``.venv/bin/python bench/web.py [--iterations N]`` (needs Debian's ``chromium`` and
Playwright for Python, as the tests in ``tests/web/`` do).

It loads the browser client's test kit (``clients/web/testkit/testkit.js``: the same
TypeScript protocol core as the app, built by ``scripts/web-build``) into a page and
measures there, in microseconds per operation, for 64 B and 1 KiB bodies:

* ``ratchet_message_symmetric_us``: a message encrypted by Alice and decrypted by Bob, same
  direction every time (symmetric chain steps; envelope coding included);
* ``ratchet_message_dh_step_us``: the same with the direction alternating (a DH ratchet step
  per message);
* ``pqxdh_setup_us``: a whole session setup, both sides (bundle signature checks, ML-KEM-768
  encapsulation and decapsulation, X25519 ×8, the first message encrypted and decrypted);
* ``aes_gcm_us``: WebCrypto AES-256-GCM encrypt + decrypt of the same body alone, with a key
  import per operation (as a per-message key needs); ``aes_gcm_reused_key_us`` reuses one
  imported key.

* ``first_paint_ms`` / ``welcome_ready_ms``: a real relay (``vox-relay serve`` on a free
  loopback port) serves the app; a fresh page's first contentful paint and the time until
  the welcome screen (fetched ``/v1/config``, branded) is shown, best of 5 loads.

It prints one JSON object per body size, then a summary line with the 1 KiB ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "clients" / "web" / "testkit" / "testkit.js"
ORIGIN = "http://127.0.0.1:9"  # intercepted by Playwright: a secure context, no server


def first_paint(browser: Any) -> dict[str, float]:
    """Serve the app from a real relay and time fresh loads (best of 5)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    relay = Path(sys.executable).with_name("vox-relay")
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [str(relay), "serve", "--port", str(port), "--data-dir", tmp],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(600):
                try:
                    with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                        break
                except OSError:
                    time.sleep(0.1)
            paints, ready = [], []
            for _ in range(5):
                ctx = browser.new_context()
                page = ctx.new_page()
                page.goto(url + "/")
                page.get_by_test_id("register-username").wait_for()
                ready.append(page.evaluate("performance.now()"))
                paints.append(
                    page.evaluate(
                        "performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? -1"
                    )
                )
                ctx.close()
        finally:
            proc.terminate()
            proc.wait(30)
    return {"first_paint_ms": round(min(paints), 1), "welcome_ready_ms": round(min(ready), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    results: list[dict[str, Any]] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()

            def serve(route: Any) -> None:
                if route.request.url.endswith("/testkit.js"):
                    route.fulfill(body=KIT.read_bytes(), content_type="text/javascript")
                else:
                    html = '<!doctype html><script type="module" src="/testkit.js"></script>'
                    route.fulfill(body=html, content_type="text/html")

            page.route(f"{ORIGIN}/**", serve)
            page.goto(f"{ORIGIN}/")
            page.wait_for_function("() => !!window.voxTestkit")
            version = browser.version
            paint = first_paint(browser)
            print(json.dumps({"bench": "web-load", **paint}))
            for size in (64, 1024):
                got = page.evaluate(
                    "([n, s]) => window.voxTestkit.benchmark(n, s)", [args.iterations, size]
                )
                row = {"bench": "web", "size": size, "iterations": args.iterations}
                row.update({k: round(v, 1) for k, v in got.items()})
                results.append(row)
                print(json.dumps(row))
        finally:
            browser.close()
    kib = next(r for r in results if r["size"] == 1024)
    summary = {
        "bench": "web-summary",
        "chromium": version,
        "machine": platform.machine(),
        "ratchet_symmetric_1k_us": kib["ratchet_message_symmetric_us"],
        "ratchet_dh_step_1k_us": kib["ratchet_message_dh_step_us"],
        "pqxdh_setup_us": kib["pqxdh_setup_us"],
        "aes_gcm_1k_us": kib["aes_gcm_us"],
        "symmetric_vs_aes_gcm": round(kib["ratchet_message_symmetric_us"] / kib["aes_gcm_us"], 1),
        "dh_step_vs_aes_gcm": round(kib["ratchet_message_dh_step_us"] / kib["aes_gcm_us"], 1),
        **paint,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
