"""docker-compose.yml: the relay service, started exactly as the file says (no Docker here).

The test reads the relay's ``command`` and ``environment`` from the compose file, resolves
``${VAR:-default}``, swaps the compose network's PostgreSQL/Redis for this machine's,
the data volume for a temp dir and ``0.0.0.0:8000`` for a free loopback port, runs the
command as a subprocess and expects ``/readyz`` (the compose healthcheck) to pass.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.server.relay_harness import REPO, free_port, relay_process

COMPOSE = REPO / "docker-compose.yml"


def _resolve(value: str) -> str:
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: m.group(2), value)


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_compose_file_has_relay_postgres_redis_and_a_tls_proxy() -> None:
    services = _compose()["services"]
    assert {"relay", "postgres", "redis", "caddy"} <= set(services)
    for name in ("relay", "postgres", "redis"):
        assert "healthcheck" in services[name], name
    assert "/readyz" in " ".join(services["relay"]["healthcheck"]["test"])
    assert any(v.endswith(":/data") for v in services["relay"]["volumes"])
    assert "443:443" in services["caddy"]["ports"]
    caddyfile = (REPO / "deploy" / "Caddyfile").read_text()
    assert "dynamic a relay 8000" in caddyfile and "lb_try_duration" in caddyfile
    assert services["relay"]["depends_on"]["postgres"]["condition"] == "service_healthy"


@pytest.mark.postgres
@pytest.mark.redis
async def test_relay_starts_as_the_compose_file_says(
    tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str
) -> None:
    relay = _compose()["services"]["relay"]
    command: list[str] = list(relay["command"])
    env = {k: _resolve(str(v)) for k, v in relay["environment"].items()}
    assert env["VOX_DATABASE_URL"].startswith("postgresql+asyncpg://vox:")
    assert "@postgres:5432/" in env["VOX_DATABASE_URL"]
    assert env["VOX_REDIS_URL"] == "redis://redis:6379/0"
    env["VOX_DATABASE_URL"] = postgres_url
    env["VOX_REDIS_URL"] = redis_url
    env["VOX_REDIS_PREFIX"] = redis_prefix
    port = free_port()
    swaps = {"0.0.0.0": "127.0.0.1", "8000": str(port), "/data": str(tmp_path / "data")}
    assert command[0] == "vox-relay"
    args = [swaps.get(a, a) for a in command[1:]]
    assert args[0] == "serve"
    async with (
        relay_process(args, env=env, port=port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}
        config = (await http.get("/v1/config")).json()
        assert config["registration"] == "invite"
        assert config["brand"]["name"] == "Vox"
