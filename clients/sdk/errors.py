"""The SDK's error tree. Every failure a caller of :class:`~clients.sdk.VoxClient` sees is a
:class:`ClientError`; the CLI prints ``str(error)`` as one line and exits non-zero.

::

    ClientError
    ├── ProfileError                     the home directory / local profile
    │   ├── NoProfile(home)              nothing registered in this home yet
    │   ├── ProfileExists(home)          register/join into a home that has a profile
    │   ├── ProfileLocked(home)          another process holds the profile lock
    │   └── StoreError(reason)           corrupted store, wrong passphrase, bad key file
    ├── RelayError                       talking to the relay
    │   ├── RelayUnavailable(url, reason) connection refused, DNS, TLS, timeout
    │   │   └── MessageQueued(id, conversation, reason)  kept in the outbox, sent later
    │   ├── RelayRejected(status, code, message)  a 4xx/5xx answer or a WS close with reason
    │   ├── AuthFailed(reason)           login refused (bad key, account gone, ...)
    │   │   └── DeviceRemoved(reason)    this device is no longer on the account's list
    │   └── RegistrationClosed(code)     registration needs an invite or is closed
    ├── UnknownUser(username)            no such account on the relay
│   └── AccountDeleted(username)     the account existed and was deleted (relay: 410)
    ├── UntrustedIdentity(username)      the user's account key changed; accept it first
    ├── BadDeviceList(username, reason)  the relay served a list that does not verify
    ├── DecryptFailed(sender, device, kind)  reported in the event stream, never raised by send
    ├── LinkError(reason)                device linking failed
    │   ├── LinkCodeMalformed(reason)    the code is not USERNAME:DEVICE:XXXX-XXXX-XXXX-XXXX
    │   ├── LinkCodeExpired(reason)      the relay refuses the code (expired or already used)
    │   ├── LinkWrongCode(reason)        the offer does not open with this code
    │   └── LinkTimeout(reason, waited)  no offer arrived / the new device did not join in time
    ├── GroupError(reason)               unknown group, not a member, ...
    ├── NotDeletableForEveryone(id)      a timer change is a setting: delete it for me only
    └── AttachmentError(reason)          upload/download/digest failure
"""

from __future__ import annotations

__all__ = [
    "AccountDeleted",
    "AttachmentError",
    "AuthFailed",
    "BadDeviceList",
    "ClientError",
    "DecryptFailed",
    "DeviceRemoved",
    "GroupError",
    "LinkCodeExpired",
    "LinkCodeMalformed",
    "LinkError",
    "LinkTimeout",
    "LinkWrongCode",
    "MessageQueued",
    "NoProfile",
    "NotDeletableForEveryone",
    "ProfileError",
    "ProfileExists",
    "ProfileLocked",
    "RegistrationClosed",
    "RelayError",
    "RelayRejected",
    "RelayUnavailable",
    "StoreError",
    "UnknownUser",
    "UntrustedIdentity",
]


class ClientError(Exception):
    """Base of every error the SDK raises. ``str()`` is a one-line, user-facing message."""


class ProfileError(ClientError):
    """Something is wrong with the local profile (the home directory)."""


class NoProfile(ProfileError):
    """No account is registered in this home directory."""

    def __init__(self, home: str) -> None:
        super().__init__(f"no Vox profile in {home} (run 'vox register' or 'vox join' first)")
        self.home = home


class ProfileExists(ProfileError):
    """``register``/``join`` into a home directory that already holds a profile."""

    def __init__(self, home: str) -> None:
        super().__init__(f"{home} already holds a Vox profile")
        self.home = home


class ProfileLocked(ProfileError):
    """Another process holds this profile open (and did not release it in time)."""

    def __init__(self, home: str) -> None:
        super().__init__(f"the profile in {home} is in use by another vox process")
        self.home = home


class StoreError(ProfileError):
    """The local store cannot be opened or read: corrupted, wrong passphrase, bad key file."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"local store: {reason}")
        self.reason = reason


class RelayError(ClientError):
    """Talking to the relay failed."""


class RelayUnavailable(RelayError):
    """The relay could not be reached (refused, DNS, TLS, timeout, dropped)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the relay at {url}: {reason}")
        self.url = url
        self.reason = reason


class MessageQueued(RelayUnavailable):
    """A chat message could not be handed to the relay now (unreachable, or busy after every
    retry): it is kept in the outbox and sent — once, in the order it was written within its
    conversation — when the relay is reachable again (the next connection of any process on
    this profile). Do not send it again. ``vox`` exits 75 for this."""

    def __init__(
        self, message_id: str, conversation: str, reason: str, *, text: str | None = None
    ) -> None:
        ClientError.__init__(
            self,
            text
            or f"queued, not yet accepted ({reason}): message {message_id} is kept and sent "
            "in order when the relay is reachable; do not send it again",
        )
        self.url = ""
        self.reason = reason
        self.message_id = message_id
        self.conversation = conversation


class RelayRejected(RelayError):
    """The relay answered with an error (HTTP status or WebSocket close/error frame)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"relay refused the request ({status} {code}): {message}")
        self.status = status
        self.code = code
        self.message = message


class AuthFailed(RelayError):
    """The relay refused to log this device in (removed from the list, revoked, bad key)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"login failed: {reason}")
        self.reason = reason


class DeviceRemoved(AuthFailed):
    """The relay refuses this device for good: another device of the account removed it
    from the signed device list (``vox unlink``; ``revoked`` False: link it anew), or the
    relay operator revoked it (``revoked`` True: it is still on the account's list; the
    operator can undo that with ``vox-relay device unrevoke``)."""

    def __init__(self, reason: str, *, revoked: bool = False) -> None:
        if revoked:
            hint = (
                "this device is still on your account's device list; ask the relay operator "
                "to undo the revocation, or remove it (`vox unlink` on another device) and "
                "link it again"
            )
        else:
            hint = (
                "this device was removed from the account; "
                "link it again (`vox link` on another device, then `vox join`)"
            )
        super().__init__(f"{reason} — {hint}")
        self.revoked = revoked


class RegistrationClosed(RelayError):
    """The relay's registration policy refuses this registration."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"registration refused ({code}): {message}")
        self.code = code


class UnknownUser(ClientError):
    """The relay has no account with this username."""

    def __init__(self, username: str) -> None:
        super().__init__(f"unknown user {username!r}")
        self.username = username


class AccountDeleted(UnknownUser):
    """The user deleted their account (the relay answers 410 ``account_deleted``)."""

    def __init__(self, username: str) -> None:
        ClientError.__init__(self, f"the account {username!r} was deleted")
        self.username = username


class UntrustedIdentity(ClientError):
    """The user's account key differs from the one trusted so far; sending is blocked."""

    def __init__(self, username: str) -> None:
        super().__init__(
            f"the account key of {username!r} has changed; compare safety numbers and run "
            f"'vox verify {username} --accept' to accept it"
        )
        self.username = username


class BadDeviceList(ClientError):
    """The relay served a device list that does not verify (forged, rolled back, ...)."""

    def __init__(self, username: str, reason: str) -> None:
        super().__init__(f"device list of {username!r} refused: {reason}")
        self.username = username
        self.reason = reason


class DecryptFailed(ClientError):
    """An incoming envelope could not be decrypted (reported as an event, then acked)."""

    def __init__(self, sender: str, device: int, kind: str) -> None:
        super().__init__(f"could not decrypt a message from {sender}:{device} ({kind})")
        self.sender = sender
        self.device = device
        self.kind = kind


class LinkError(ClientError):
    """Linking a new device failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"device linking failed: {reason}")
        self.reason = reason


class LinkCodeMalformed(LinkError):
    """The link code cannot be read (typed wrong?)."""


class LinkCodeExpired(LinkError):
    """The relay refused the code's temporary key: expired, already used or never issued."""


class LinkWrongCode(LinkError):
    """The offer that arrived does not open with this code (a mistyped secret)."""


class LinkTimeout(LinkError):
    """The other device did not do its part within ``waited`` seconds."""

    def __init__(self, reason: str, waited: float) -> None:
        super().__init__(reason)
        self.waited = waited


class GroupError(ClientError):
    """A group operation is not possible (unknown group, not a member, ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"group: {reason}")
        self.reason = reason


class NotDeletableForEveryone(ClientError):
    """A delete for everyone of a disappearing-timer change that has left this device: a
    timer change is a setting, not content — every member keeps it (set the timer again to
    change it); delete for me removes its row from this device."""

    def __init__(self, message_id: str) -> None:
        super().__init__(
            "a disappearing-timer change cannot be deleted for everyone: it is a setting, not "
            "a message (set the timer again to change it, or delete its row with --for-me)"
        )
        self.message_id = message_id


class AttachmentError(ClientError):
    """An attachment could not be uploaded, downloaded, verified or decrypted."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"attachment: {reason}")
        self.reason = reason
