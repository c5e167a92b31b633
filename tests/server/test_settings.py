"""Settings: precedence (defaults < TOML < environment < arguments) and refusal of unsafe values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from server.settings import ConfigFileError, RegistrationPolicy, load_settings


def test_defaults_are_an_embedded_sqlite_relay_in_vox_data() -> None:
    s = load_settings(environ={})
    assert s.data_dir == Path("vox-data")
    assert s.effective_database_url.startswith("sqlite+aiosqlite:///")
    assert s.effective_database_url.endswith("vox-data/relay.sqlite3")
    assert s.redis_url is None
    assert s.registration is RegistrationPolicy.OPEN
    assert s.limits.max_attachment_bytes == 100 * 1024 * 1024
    assert s.limits.envelope_ttl_seconds == 30 * 86400


def test_toml_then_environment_then_arguments(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(
        'registration = "invite"\n'
        'redis_url = "redis://toml:6379/0"\n'
        "[brand]\n"
        'name = "From TOML"\n'
        'primary_color = "#010203"\n'
        "[limits]\n"
        "max_recipients = 11\n"
        "prekey_batch_max = 50\n"
    )
    env = {
        "VOX_CONFIG": str(config),
        "VOX_BRAND__NAME": "From Env",
        "VOX_LIMITS__MAX_RECIPIENTS": "22",
        "VOX_REDIS_URL": "redis://env:6379/0",
        "UNRELATED": "x",
    }
    s = load_settings(environ=env, redis_url="redis://arg:6379/0", data_dir=None)
    assert s.registration is RegistrationPolicy.INVITE  # TOML only
    assert s.brand.primary_color == "#010203"  # TOML only
    assert s.brand.name == "From Env"  # env beats TOML
    assert s.limits.max_recipients == 22
    assert s.limits.prekey_batch_max == 50  # nested TOML value survives env merge
    assert s.redis_url == "redis://arg:6379/0"  # argument beats env
    assert s.data_dir == Path("vox-data")  # None arguments are ignored


def test_explicit_config_file_argument(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text('[brand]\nname = "Explicit"\n')
    assert load_settings(config, environ={}).brand.name == "Explicit"


@pytest.mark.parametrize(
    "overrides",
    [
        {"database_url": "mysql://root@localhost/vox"},
        {"redis_url": "http://localhost:6379"},
        {"registration": "everyone"},
        {"brand": {"primary_color": "red"}},
        {"brand": {"logo_url": "http://evil.example/logo.png"}},
        {"brand": {"name": ""}},
        {"limits": {"token_ttl_seconds": 10}},
        {"limits": {"token_ttl_seconds": 365 * 86400}},
        {"limits": {"max_attachment_bytes": 10 * 1024**4}},
        {"limits": {"max_ciphertext_bytes": 4 * 1024 * 1024, "max_frame_bytes": 1024 * 1024}},
        {"limits": {"prekey_low_threshold": 600}},
        {"limits": {"max_recipients": 0}},
        {"limits": {"prekey_batch_max": 1000, "prekey_max_stock": 2000}},
        {"limits": {"unknown_limit": 1}},
        # A delivery of the largest ciphertext would disconnect its recipient every time.
        {"limits": {"max_ciphertext_bytes": 8 * 1024 * 1024, "max_frame_bytes": 16 * 1024 * 1024}},
        {"limits": {"max_outbound_bytes": 1024 * 1024, "outbound_pause_bytes": 1024 * 1024}},
        {"limits": {"max_inflight": 0}},
        {"typo_setting": True},
        {"public_url": "http://chat.example.org"},
    ],
)
def test_unsafe_or_unknown_values_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        load_settings(environ={}, **overrides)


def test_unsafe_environment_value_is_refused() -> None:
    with pytest.raises(ValidationError, match="token_ttl_seconds"):
        load_settings(environ={"VOX_LIMITS__TOKEN_TTL_SECONDS": "5"})


def test_missing_or_broken_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="not found"):
        load_settings(tmp_path / "missing.toml", environ={})
    broken = tmp_path / "broken.toml"
    broken.write_text("[brand\nname=")
    with pytest.raises(ConfigFileError, match="not valid TOML"):
        load_settings(broken, environ={})


def test_localhost_logo_over_http_is_allowed_for_development() -> None:
    s = load_settings(environ={}, brand={"logo_url": "http://localhost:8000/logo.png"})
    assert s.brand.logo_url == "http://localhost:8000/logo.png"
