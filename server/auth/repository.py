"""Challenges and bearer tokens (stored only as SHA-256 digests).

The login statements are synchronous functions of a ``Connection``: a challenge or a token
is one short transaction run in one hand-off (:class:`server.db.onehop.OneHop`). Token lookups
and upkeep use an ``AsyncSession``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import TextClause, delete, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import Account, AuthChallenge, AuthToken, Device
from server.db.raw import sqlite_rows

__all__ = [
    "LoginDevice",
    "add_challenge",
    "add_token",
    "challenge_counts",
    "dead_tokens",
    "delete_expired",
    "delete_expired_for_device",
    "delete_oldest_challenges",
    "find_token",
    "login_device",
    "revoke_token",
    "take_challenge",
]


# -- login: synchronous, inside one transaction run by server.db.onehop.OneHop -------------
#
# On SQLite each statement goes straight to the driver (``sqlite3``, named ``:params``) inside
# the transaction OneHop opened: SQLAlchemy's execution path (compiling the cached statement's
# parameters, events, the result object) cost about ten times the statement itself, and was
# most of a login's relay CPU. On PostgreSQL the same text runs through SQLAlchemy.


@dataclass(frozen=True, slots=True)
class _Statement:
    """One login statement: its text for the SQLite driver and its clause for SQLAlchemy."""

    sql: str
    clause: TextClause


def _statement(sql: str) -> _Statement:
    return _Statement(sql, text(sql))


def _rows(conn: Connection, statement: _Statement, params: dict[str, Any]) -> list[Any]:
    """Every row of ``statement`` (none for a plain DELETE or INSERT)."""
    if conn.dialect.name == "sqlite":
        return sqlite_rows(conn, statement.sql, params)
    result = conn.execute(statement.clause, params)
    return list(result.all()) if result.returns_rows else []


_LOGIN_DEVICE = _statement(
    "SELECT d.pk, d.revoked_at, d.auth_key FROM devices AS d"
    " JOIN accounts AS a ON a.id = d.account_id"
    " WHERE a.username = :username AND d.device_id = :device_id"
)
_DELETE_EXPIRED_CHALLENGES = _statement(
    "DELETE FROM auth_challenges WHERE device_pk = :pk AND expires_at <= :now"
)
_DELETE_EXPIRED_TOKENS = _statement(
    "DELETE FROM auth_tokens WHERE device_pk = :pk AND expires_at <= :now"
)
_CHALLENGE_COUNTS = _statement(
    "SELECT requester, count(*), max(id) FROM auth_challenges WHERE device_pk = :pk"
    " GROUP BY requester"
)
_DELETE_OLDEST = _statement(
    "DELETE FROM auth_challenges WHERE id IN (SELECT id FROM auth_challenges"
    " WHERE device_pk = :pk AND requester = :requester ORDER BY id LIMIT :count)"
)
_ADD_CHALLENGE = _statement(
    "INSERT INTO auth_challenges (nonce_hash, device_pk, expires_at, requester)"
    " VALUES (:nonce_hash, :pk, :expires_at, :requester)"
)
_TAKE_CHALLENGE = _statement(
    "DELETE FROM auth_challenges WHERE nonce_hash = :nonce_hash RETURNING device_pk, expires_at"
)
_ADD_TOKEN = _statement(
    "INSERT INTO auth_tokens (token_hash, device_pk, created_at, expires_at)"
    " VALUES (:token_hash, :pk, :now, :expires_at)"
)


@dataclass(frozen=True, slots=True)
class LoginDevice:
    """What a login needs of a device."""

    pk: int
    revoked_at: int | None
    auth_key: bytes


def login_device(conn: Connection, username: str, device_id: int) -> LoginDevice | None:
    """The device ``device_id`` of ``username``."""
    rows = _rows(conn, _LOGIN_DEVICE, {"username": username, "device_id": device_id})
    if not rows:
        return None
    pk, revoked_at, auth_key = rows[0]
    return LoginDevice(int(pk), revoked_at, bytes(auth_key))


def delete_expired_for_device(conn: Connection, device_pk: int, now: int) -> None:
    """Forget the device's expired challenges and tokens."""
    _rows(conn, _DELETE_EXPIRED_CHALLENGES, {"pk": device_pk, "now": now})
    _rows(conn, _DELETE_EXPIRED_TOKENS, {"pk": device_pk, "now": now})


def challenge_counts(conn: Connection, device_pk: int) -> dict[str, tuple[int, int]]:
    """The device's outstanding challenges per requester: ``{requester: (count, newest id)}``."""
    rows = _rows(conn, _CHALLENGE_COUNTS, {"pk": device_pk})
    return {str(r): (int(n), int(newest)) for r, n, newest in rows}


def delete_oldest_challenges(conn: Connection, device_pk: int, requester: str, count: int) -> None:
    """Delete the ``count`` oldest challenges that ``requester`` holds for the device."""
    _rows(conn, _DELETE_OLDEST, {"pk": device_pk, "requester": requester, "count": count})


def add_challenge(
    conn: Connection, *, nonce_hash: bytes, device_pk: int, expires_at: int, requester: str = ""
) -> None:
    """Store a challenge."""
    _rows(
        conn,
        _ADD_CHALLENGE,
        {
            "nonce_hash": nonce_hash,
            "pk": device_pk,
            "expires_at": expires_at,
            "requester": requester,
        },
    )


def take_challenge(conn: Connection, nonce_hash: bytes) -> tuple[int, int] | None:
    """Delete the challenge and return ``(device_pk, expires_at)`` — at most once, ever."""
    rows = _rows(conn, _TAKE_CHALLENGE, {"nonce_hash": nonce_hash})
    return None if not rows else (int(rows[0][0]), int(rows[0][1]))


def add_token(
    conn: Connection, *, token_hash: bytes, device_pk: int, now: int, expires_at: int
) -> None:
    """Store a token digest."""
    _rows(
        conn,
        _ADD_TOKEN,
        {"token_hash": token_hash, "pk": device_pk, "now": now, "expires_at": expires_at},
    )


# -- tokens and upkeep (async sessions) -----------------------------------------------------


async def delete_expired(session: AsyncSession, now: int) -> tuple[int, int]:
    """Delete every expired challenge and token; return how many of each."""
    ch = await session.execute(delete(AuthChallenge).where(AuthChallenge.expires_at <= now))
    tok = await session.execute(delete(AuthToken).where(AuthToken.expires_at <= now))
    return int(getattr(ch, "rowcount", 0) or 0), int(getattr(tok, "rowcount", 0) or 0)


async def find_token(
    session: AsyncSession, token_hash: bytes
) -> tuple[AuthToken, Device, Account] | None:
    """The token with this digest, with its device and account (whatever their state)."""
    result = await session.execute(
        select(AuthToken, Device, Account)
        .join(Device, Device.pk == AuthToken.device_pk)
        .join(Account, Account.id == Device.account_id)
        .where(AuthToken.token_hash == token_hash)
    )
    row = result.first()
    return None if row is None else (row[0], row[1], row[2])


async def dead_tokens(session: AsyncSession, token_ids: list[int], now: int) -> dict[int, str]:
    """Those of ``token_ids`` that no longer authenticate, each with the reason its socket is
    closed for (``docs/protocol-ws.md`` §2): ``token_revoked`` (revoked, or its device revoked
    by the operator), ``token_expired`` (expired, or already swept as expired)."""
    result = await session.execute(
        select(AuthToken.id, AuthToken.revoked_at, AuthToken.expires_at, Device.revoked_at)
        .join(Device, Device.pk == AuthToken.device_pk)
        .where(AuthToken.id.in_(token_ids))
    )
    found = {int(r[0]): (r[1], int(r[2]), r[3]) for r in result.all()}
    dead: dict[int, str] = {}
    for token_id in token_ids:
        row = found.get(token_id)
        if row is None:
            dead[token_id] = "token_expired"
            continue
        token_revoked, expires_at, device_revoked = row
        if token_revoked is not None or device_revoked is not None:
            dead[token_id] = "token_revoked"
        elif expires_at <= now:
            dead[token_id] = "token_expired"
    return dead


async def revoke_token(session: AsyncSession, token_id: int, now: int) -> None:
    """Revoke one token."""
    token = await session.get(AuthToken, token_id)
    if token is not None and token.revoked_at is None:
        token.revoked_at = now
