"""The local profile: opening, creating (register, join) and removing it; cached config.

A profile is a directory holding the encrypted store (``vox.db``, ``vox.key``) and its lock.
A failed :func:`register` or :func:`join` removes what it created, nothing else.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from clients.sdk import identity as ids
from clients.sdk import linking, trust
from clients.sdk.errors import (
    ClientError,
    NoProfile,
    ProfileExists,
    ProfileLocked,
    RelayUnavailable,
    StoreError,
)
from clients.sdk.models import Message, ServerConfig
from clients.sdk.protocol import message_from_stored
from clients.sdk.transport import RelayHttp
from clients.store import errors as store_errors
from clients.store.base import Store
from crypto.errors import VoxError
from crypto.keys import validate_username
from wire.rest import ConfigOut, PrekeyUpload, RegisterIn

__all__ = ["config", "history", "join", "open_existing", "register", "token_cache"]


def open_store(home: Path, passphrase: str | None, *, create: bool, lock_timeout: float) -> Store:
    """Open (or create) the SQLite store in ``home``, with SDK errors."""
    from clients.store.sqlite import SqliteStore

    try:
        return SqliteStore.open(
            home, passphrase=passphrase, lock_timeout=lock_timeout, create=create
        )
    except store_errors.ProfileLocked:
        raise ProfileLocked(str(home)) from None
    except store_errors.WrongPassphrase as exc:
        # "wrong passphrase for this profile", "this profile is protected by a passphrase;
        # none was given", "this profile uses a key file, not a passphrase"
        raise StoreError(str(exc)) from None
    except store_errors.StoreError as exc:
        raise StoreError(str(exc)) from None


def exists(home: Path) -> bool:
    """Whether ``home`` holds a profile."""
    from clients.store.sqlite import profile_exists

    return profile_exists(home)


def open_existing(home: Path, passphrase: str | None, lock_timeout: float) -> Store:
    """The store of an existing profile."""
    if not exists(home):
        raise NoProfile(str(home))
    return open_store(home, passphrase, create=False, lock_timeout=lock_timeout)


def remove(home: Path) -> None:
    """Remove what a failed register/join created (never anything else)."""
    for name in ("vox.db", "vox.db-wal", "vox.db-shm", "vox.key", "vox.lock"):
        with contextlib.suppress(FileNotFoundError):
            (home / name).unlink()
    with contextlib.suppress(OSError):
        home.rmdir()  # only when empty: a directory that held nothing else


async def register(
    home: Path,
    server: str,
    username: str,
    *,
    invite: str | None,
    passphrase: str | None,
    lock_timeout: float,
    device_id: int,
) -> Store:
    """Create an account (account key, device keys, prekeys, device list v1) on ``server``
    and its profile in ``home``; returns the open store."""
    try:
        validate_username(username)
    except VoxError:
        raise ClientError(f"invalid username {username!r}: use 3-32 of a-z 0-9 _ . -") from None
    if exists(home):
        raise ProfileExists(str(home))
    http = RelayHttp(server)
    try:
        await http.config()  # fail early (and clearly) on a wrong URL
        store = open_store(home, passphrase, create=True, lock_timeout=lock_timeout)
        try:
            me = ids.new_identity(username, device_id, None)
            signed_list = ids.first_device_list(me)
            with store.transaction():
                prekeys = ids.registration_prekeys(store, me)
            body = RegisterIn(
                username=username,
                account_key=me.account_key.public_key.to_bytes(),
                device_list=signed_list.to_bytes(),
                prekeys=PrekeyUpload.model_validate(prekeys),
                invite=invite or None,
            )
            await http.register(body)
            with store.transaction():
                store.save_profile(me.to_profile(http.base_url))
                own_key = me.account_key.public_key.to_bytes()
                trust.accept_device_list(store, username, own_key, signed_list.to_bytes())
                trust.accept_key(store, username)
        except BaseException:
            store.close()
            remove(home)
            raise
    finally:
        await http.aclose()
    return store


async def join(
    home: Path,
    server: str,
    code: str,
    passphrase: str | None,
    offer_timeout: float,
    lock_timeout: float,
) -> Store:
    """Become a new device of an existing account (see :mod:`clients.sdk.linking`)."""
    if exists(home):
        raise ProfileExists(str(home))
    store = open_store(home, passphrase, create=True, lock_timeout=lock_timeout)
    try:
        await linking.join(store, server, code, offer_timeout=offer_timeout)
    except BaseException:
        store.close()
        remove(home)
        raise
    return store


def token_cache(store: Store) -> tuple[Callable[[], str | None], Callable[[str | None], None]]:
    """Load and save the bearer token in the store's secrets."""

    def load() -> str | None:
        data = store.get_secret("token")
        return data.decode() if data else None

    def save(token: str | None) -> None:
        store.set_secret("token", token.encode() if token else None)

    return load, save


async def config(store: Store, http: RelayHttp) -> ServerConfig:
    """The relay's ``/v1/config``, cached in the store for when the relay is unreachable."""
    try:
        served = await http.config()
        store.set_setting("config", served.model_dump_json())
    except RelayUnavailable:
        cached = store.get_setting("config")
        if cached is None:
            raise
        try:
            served = ConfigOut.model_validate(json.loads(cached))
        except (ValueError, ValidationError):  # a cache of an older shape: as if absent
            raise RelayUnavailable(http.base_url, "no usable cached configuration") from None
    brand = served.brand
    return ServerConfig(
        name=brand.name,
        primary_color=brand.primary_color,
        accent_color=brand.accent_color,
        background_color=brand.background_color,
        logo_url=brand.logo_url,
        welcome_text=brand.welcome_text,
        registration=served.registration,
        limits={k: float(v) for k, v in served.limits.model_dump().items()},
    )


def history(store: Store, conversation: str, limit: int) -> list[Message]:
    """The last ``limit`` messages of a conversation, oldest first."""
    return [message_from_stored(m) for m in store.history(conversation, limit=limit)]
