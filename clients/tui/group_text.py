"""Group management lines of the conversation pane: who did what to whom
(``alice removed you``, ``you added bob, carol``), from a :class:`GroupChanged` event and the
member list the window knew before it."""

from __future__ import annotations

from collections.abc import Iterable

from clients.sdk.models import GroupChanged

__all__ = ["describe_group_change"]


def _names(users: Iterable[str], me: str) -> str:
    ordered = sorted(users, key=lambda u: (u != me, u))  # "you" first
    return ", ".join("you" if u == me else u for u in ordered)


def describe_group_change(event: GroupChanged, before: tuple[str, ...] | None, me: str) -> str:
    """One sentence; ``before`` is the member list before the change (``None``: unknown)."""
    who = "you" if event.by == me else event.by
    after = set(event.members)
    if event.action == "create":
        others = [u for u in event.members if u != event.by]
        return f"{who} created the group {event.name} with {_names(others, me) or 'nobody yet'}"
    if event.action == "leave":
        return f"{who} left the group"
    if before is not None:
        added = after - set(before)
        removed = set(before) - after
        parts = []
        if added:
            parts.append(f"added {_names(added, me)}")
        if removed:
            parts.append(f"removed {_names(removed, me)}")
        if parts:
            return f"{who} {' and '.join(parts)}"
    if event.action == "remove" and me not in after:
        return f"{who} removed you"
    verb = {"add": "changed the members", "remove": "removed members"}.get(
        event.action, event.action
    )
    return f"{who} {verb}: members now {_names(event.members, me)}"
