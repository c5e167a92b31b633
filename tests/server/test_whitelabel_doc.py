"""docs/whitelabel.md stays true: its TOML yields exactly the /v1/config JSON it shows."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from server.app import create_app
from server.settings import load_settings
from tests.server.relay_harness import REPO, running_relay


def _block(text: str, lang: str) -> str:
    match = re.search(rf"```{lang}\n(.*?)```", text, re.S)
    assert match, f"no {lang} block"
    return match.group(1)


async def test_whitelabel_example_toml_gives_the_documented_config(tmp_path: Path) -> None:
    doc = (REPO / "docs" / "whitelabel.md").read_text()
    config = tmp_path / "harbor.toml"
    config.write_text(_block(doc, "toml"))
    assert create_app(load_settings(config, environ={})).title == "Harbor Chat relay"
    # The example's PostgreSQL and Redis are not here: run it on SQLite in tmp_path, every
    # other setting as written, so the push key is made at start as in a real deployment.
    remote = ("database_url", "redis_url", "data_dir")
    lines = [x for x in _block(doc, "toml").splitlines() if not x.startswith(remote)]
    config.write_text("\n".join(lines))
    settings = load_settings(config, environ={}, data_dir=tmp_path / "data")
    async with running_relay(settings) as relay, relay.client() as http:
        served = (await http.get("/v1/config")).json()
        vapid = (await http.get("/v1/push/vapid")).json()
    documented = json.loads(_block(doc, "json"))
    # Each relay makes its own VAPID key at first start: the doc shows an example one.
    assert set(documented["push"]) == set(served["push"]) and served["push"] == vapid
    assert len(base64.urlsafe_b64decode(documented["push"]["public_key"] + "=")) == 65
    documented["push"]["public_key"] = served["push"]["public_key"]
    assert served == documented


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
