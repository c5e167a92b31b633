"""``VOX_*`` variables are read by the relay's own reader (``server.settings._environment``)
exactly as pydantic-settings' environment source read them before (the serving process no
longer loads pydantic-settings: ``tests/server/test_idle_footprint.py``)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import create_model

from server.settings import ConfigFileError, Settings, _environment, load_settings

pytest.importorskip("pydantic_settings")
import pydantic_settings  # (after the skip when it is missing)


class _EnvBase(pydantic_settings.BaseSettings):
    model_config = pydantic_settings.SettingsConfigDict(
        env_prefix="VOX_", env_nested_delimiter="__", case_sensitive=False
    )


#: The settings' fields under the configuration ``Settings`` had when it was a BaseSettings.
_Reference = create_model(  # type: ignore[call-overload]
    "_Reference",
    __base__=_EnvBase,
    **{name: (field.annotation, None) for name, field in Settings.model_fields.items()},
)


def _reference(env: dict[str, str]) -> dict[str, Any]:
    source = pydantic_settings.EnvSettingsSource(_Reference, case_sensitive=False)
    source.env_vars = {k.lower(): v for k, v in env.items()}
    values: dict[str, Any] = source()
    return values


ENVIRONMENTS: list[dict[str, str]] = [
    {},
    {"PATH": "/usr/bin", "UNRELATED": "x", "VOX_CONFIG": "/etc/vox.toml", "VOX_TYPO": "1"},
    {"VOX_DATA_DIR": "/data", "VOX_DATABASE_URL": "", "VOX_LOG_JSON": "false"},
    {"vox_registration": "invite", "Vox_Redis_Url": "redis://r:6379/0", "VOX_OPS_PORT": "9100"},
    {"VOX_BRAND__NAME": "Harbor", "VOX_BRAND__PRIMARY_COLOR": "#0b5394"},
    {"VOX_LIMITS__MAX_RECIPIENTS": "50", "vox_limits__TOKEN_TTL_SECONDS": "3600"},
    {"VOX_LIMITS__UNKNOWN_LIMIT": "1", "VOX_PUSH__ENABLED": "false", "VOX_PUSH__": "x"},
    {"VOX_LIMITS__A__B": "1", "VOX_BRAND__NAME__X": "y", "VOX_DATA_DIR__X": "z"},
    {"VOX_LIMITS": '{"max_recipients": 5, "max_depth": 9}', "vox_limits__max_recipients": "6"},
    {"VOX_BRAND": "{}", "VOX_PUSH": '{"enabled": true}', "VOX_PUSH__SUBJECT": ""},
    {"VOX_LIMITS": "[1, 2]", "VOX_LIMITS__MAX_RECIPIENTS": "6"},
    {"VOX_LIMITS": '{"a": 1}', "VOX_LIMITS__A__B": "2", "VOX_LIMITS__C__D": "3"},
    {"VOX_LIMITS__A": "1", "VOX_LIMITS__A__B": "2", "VOX_BRAND__X__Y": "3", "VOX_BRAND__X": "4"},
]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_environment_is_read_as_pydantic_settings_read_it(env: dict[str, str]) -> None:
    assert _environment(env) == _reference(env)


def test_a_table_variable_that_is_not_json_is_a_clear_error() -> None:
    with pytest.raises(ConfigFileError, match="VOX_LIMITS is not a JSON object"):
        load_settings(environ={"VOX_LIMITS": "max_recipients=5"})


def test_settings_still_validate_their_defaults_and_refuse_changes() -> None:
    settings = load_settings(environ={"VOX_LIMITS__MAX_RECIPIENTS": "50"})
    assert settings.limits.max_recipients == 50
    assert Settings.model_config.get("validate_default") is True
    with pytest.raises(ValueError, match="frozen"):
        settings.data_dir = settings.data_dir  # type: ignore[misc]
