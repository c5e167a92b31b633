"""docker-compose.yml: the relay service, started exactly as the file says (no Docker here).

The test reads the relay's ``command``, ``env_file`` (``deploy/example.env`` as the operator's
``.env``) and ``environment`` from the compose file, resolves ``${VAR}``, ``${VAR:-default}``
and ``${VAR:?error}`` as compose does, swaps the compose network's PostgreSQL/Redis for this
machine's, the data volume for a temp dir and ``0.0.0.0:8000`` for a free loopback port,
runs the command as a subprocess and expects ``/readyz`` (the compose healthcheck) to pass.
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


EXAMPLE_ENV = REPO / "deploy" / "example.env"


def _env_file(text: str) -> dict[str, str]:
    """``KEY=value`` lines of a compose env file (comments and blanks skipped)."""
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value
    return out


def _resolve(value: str, variables: dict[str, str]) -> str:
    """Compose interpolation: ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}``."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        got = variables.get(name, "")
        if op == ":?" and not got:
            raise ValueError(f"required variable {name} is missing a value: {arg}")
        return got or (arg if op == ":-" else "")

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


def _operator_env(**changes: str) -> dict[str, str]:
    """``deploy/example.env`` filled in as an operator would (a password set)."""
    env = _env_file(EXAMPLE_ENV.read_text())
    env["POSTGRES_PASSWORD"] = "a-long-random-password"
    env.update(changes)
    return {k: v for k, v in env.items() if v != "<unset>"}


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
    # The operator's .env: every VOX_* line of it reaches the container (env_file) ...
    dotenv = _operator_env(
        VOX_BRAND__NAME="Harbor Chat",
        VOX_BRAND__PRIMARY_COLOR="#0b5394",
        VOX_LIMITS__MAX_RECIPIENTS="50",
    )
    assert relay["env_file"] == [{"path": ".env", "required": True}]
    env = {k: v for k, v in dotenv.items() if k.startswith("VOX_")}
    # ... and ``environment`` (interpolated from the same .env) wins over it.
    env.update({k: _resolve(str(v), dotenv) for k, v in relay["environment"].items()})
    assert env["VOX_PUBLIC_URL"] == "https://chat.example.org"
    assert env["VOX_DATA_DIR"] == "/data"
    env["VOX_DATA_DIR"] = str(tmp_path / "data")
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
        relay_process(args, env=env, port=port, startup_timeout=120),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}
        config = (await http.get("/v1/config")).json()
        assert config["registration"] == "invite"
        assert config["brand"]["name"] == "Harbor Chat"
        assert config["brand"]["primary_color"] == "#0b5394"
        assert config["limits"]["max_recipients"] == 50


def test_compose_refuses_to_start_without_the_database_password_or_the_domain() -> None:
    services = _compose()["services"]
    text = COMPOSE.read_text()
    for name in ("POSTGRES_PASSWORD", "VOX_DOMAIN"):
        # Every use is ${NAME:?...}: no silent default such as "change-me" or "localhost".
        uses = re.findall(r"\$\{" + name + r"([^}]*)\}", text)
        assert uses and all(u.startswith(":?") for u in uses), (name, uses)
        for service in ("relay", "postgres", "caddy"):
            environment = services[service].get("environment", {})
            for value in environment.values():
                if name in str(value):
                    with pytest.raises(ValueError, match=name):
                        _resolve(str(value), _operator_env(**{name: "<unset>"}))
    assert _env_file(EXAMPLE_ENV.read_text())["POSTGRES_PASSWORD"] == ""  # nothing to reuse


def test_the_example_env_names_the_relay_settings_the_relay_reads() -> None:
    from server.settings import load_settings

    env = {k: v for k, v in _operator_env().items() if k.startswith("VOX_")}
    env.pop("VOX_DOMAIN")  # compose's, not the relay's
    settings = load_settings(environ=env)
    assert settings.brand.name == env["VOX_BRAND__NAME"]
    assert settings.registration.value == env["VOX_REGISTRATION"]


def test_the_image_leaves_out_local_environments_data_and_caches() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for pattern in (".venv", "vox-data", "**/__pycache__", "**/node_modules", ".env", ".git"):
        assert pattern in ignored, pattern
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    for package in ("server", "crypto", "clients", "wire", "migrations"):
        assert f"COPY {package} ./{package}" in dockerfile, package
    # The container's user owns /data, where the documented backup command writes.
    assert "USER vox" in dockerfile and "chown vox /data" in dockerfile
    hosting = (REPO / "docs" / "self-hosting.md").read_text()
    assert "docker compose exec relay vox-relay backup --no-database /data/backups/" in hosting
