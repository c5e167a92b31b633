"""docs/whitelabel.md stays true: its TOML yields exactly the /v1/config JSON it shows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from server.app import create_app
from server.settings import load_settings
from tests.server.relay_harness import REPO


def _block(text: str, lang: str) -> str:
    match = re.search(rf"```{lang}\n(.*?)```", text, re.S)
    assert match, f"no {lang} block"
    return match.group(1)


async def test_whitelabel_example_toml_gives_the_documented_config(tmp_path: Path) -> None:
    doc = (REPO / "docs" / "whitelabel.md").read_text()
    config = tmp_path / "harbor.toml"
    config.write_text(_block(doc, "toml"))
    settings = load_settings(config, environ={})
    app = create_app(settings)  # /v1/config needs no database: no lifespan here
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://relay") as http:
        served = (await http.get("/v1/config")).json()
    assert served == json.loads(_block(doc, "json"))
    assert app.title == "Harbor Chat relay"


def test_whitelabel_example_env_vars_match_the_toml(tmp_path: Path) -> None:
    doc = (REPO / "docs" / "whitelabel.md").read_text()
    env_block = _block(doc, "sh").strip()
    env_block = _block(doc.split(env_block, 1)[1], "sh")
    environ = {}
    for line in env_block.strip().splitlines():
        key, _, value = line.partition("=")
        environ[key] = value.strip('"')
    from_env = load_settings(environ=environ)
    config = tmp_path / "harbor.toml"
    config.write_text(_block(doc, "toml"))
    from_toml = load_settings(config, environ={})
    assert from_env.brand == from_toml.brand
    assert from_env.limits == from_toml.limits
    assert from_env.registration == from_toml.registration
