"""Short message ids the user can type: every row of the conversation shows the first
:data:`SHORT` hex digits of its message id (``#3f9a0c``); commands take any unique prefix of at
least :data:`MIN_PREFIX` digits (with or without the ``#``), or the full 32-digit id that
``vox history`` prints."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["MIN_PREFIX", "SHORT", "IdError", "looks_like_id", "resolve", "short_id"]

SHORT = 6
MIN_PREFIX = 4
_HEX = re.compile(rf"#?[0-9a-fA-F]{{{MIN_PREFIX},32}}")


class IdError(ValueError):
    """No message, or more than one, has the id the user typed (the text says which)."""


def short_id(message_id: str, clashing: Iterable[str] = ()) -> str:
    """What a row shows: ``#`` and the first :data:`SHORT` digits — more when ``clashing``
    (the other loaded ids with the same first digits) would make it ambiguous."""
    others = sorted({message_id, *clashing})
    return "#" + message_id[: _distinct(others)]


def looks_like_id(word: str) -> bool:
    """Whether ``word`` could be a message id (``#``? and 4 to 32 hex digits)."""
    return _HEX.fullmatch(word) is not None


def resolve(typed: str, ids: Iterable[str]) -> str:
    """The one id in ``ids`` that starts with ``typed``; a full id not in ``ids`` (a message
    not loaded in the window) is returned as typed, for the SDK to look up."""
    if not looks_like_id(typed):
        raise IdError(f"{typed!r} is not a message id (the #xxxxxx shown on each message)")
    prefix = typed.removeprefix("#").lower()
    found = sorted({i for i in ids if i.startswith(prefix)})
    if len(found) == 1:
        return found[0]
    if not found:
        if len(prefix) == 32:
            return prefix
        raise IdError(f"no message #{prefix} in this conversation")
    shown = ", ".join("#" + i[: _distinct(found)] for i in found[:4])
    raise IdError(f"#{prefix} matches {len(found)} messages ({shown}): type more of the id")


def _distinct(ids: list[str]) -> int:
    """The shortest prefix length that tells ``ids`` apart (sorted, distinct)."""
    length = SHORT
    while length < 32 and len({i[:length] for i in ids}) < len(ids):
        length += 1
    return length
