"""How core services reach a connected device: the :class:`DeviceNotifier` interface.

``RelayState.notifier`` holds the implementation. The default, :class:`NullNotifier`, drops
everything (a relay without the WebSocket layer). The delivery layer replaces it with its
fan-out hub (in-process or via Redis), so that:

* ``notify(device_pk, frame)`` pushes a JSON frame such as
  ``{"type": "prekeys_low", "one_time_prekeys": 3, "one_time_pq_prekeys": 9}`` to the device
  if it is connected (on any node); nothing is stored, offline devices miss it.
* ``disconnect(device_pk, reason)`` closes the device's connections (on any node), used when
  a device is removed from its account's signed list or revoked by an operator.

Both must be cheap, never raise on a missing device, and be safe to call after the
database transaction that caused them has committed.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["DeviceNotifier", "NullNotifier"]


class DeviceNotifier(Protocol):
    """Push a frame to, or drop the connections of, a device wherever it is connected."""

    async def notify(self, device_pk: int, frame: dict[str, object]) -> None:
        """Send ``frame`` (a JSON object) to the device's live connections, if any."""
        ...

    async def disconnect(self, device_pk: int, reason: str) -> None:
        """Close the device's live connections, if any."""
        ...

    async def disconnect_token(self, device_pk: int, token_id: int, reason: str) -> None:
        """Close the device's live connection if it authenticated with ``token_id``."""
        ...


class NullNotifier:
    """The default notifier: no WebSocket layer, nothing to tell."""

    async def notify(self, device_pk: int, frame: dict[str, object]) -> None:
        """Drop the frame."""

    async def disconnect(self, device_pk: int, reason: str) -> None:
        """Nothing to close."""

    async def disconnect_token(self, device_pk: int, token_id: int, reason: str) -> None:
        """Nothing to close."""
