"""docs/protocol-relay.md's example client runs, unchanged, against a live relay."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from tests.server.relay_harness import REPO, make_settings, running_relay


def _example() -> str:
    doc = (REPO / "docs" / "protocol-relay.md").read_text()
    section = doc.split("## Example: a minimal client", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match
    return match.group(1)


async def test_the_documented_example_client_works(tmp_path: Path) -> None:
    code = _example()
    async with running_relay(make_settings(tmp_path)) as relay:
        namespace = {"BASE": relay.base_url}
        # The example is synchronous (httpx.Client): run it off the event loop.
        await asyncio.to_thread(exec, compile(code, "protocol-relay.md", "exec"), namespace)
