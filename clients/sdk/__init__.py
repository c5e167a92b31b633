"""Vox client SDK: one device of one account, talking to a relay, end to end encrypted.

Architecture (sans-I/O core under a thin asyncio shell, as in h11 / websockets)::

    CLI (clients/cli.py)   TUI (clients/tui/)           <- talk only to VoxClient
            \\                 /
          VoxClient  (client.py: the asyncio shell — WebSocket, HTTP pool, tasks, clock)
               |  pipeline.py (executes sendqueue decisions) transport.py (RelayHttp, RelaySocket)
               |  features over core.Core: messaging.py (texts, typing, receipts, Outbox)
               |  attachments.py  group_admin.py  peers.py (device lists, sessions, verify,
               |  prekeys)  linking.py  profile.py (open/register/join, cached config)
          ClientEngine (engine.py: sans-I/O decisions — frame routing, retries, acks, receipts,
               |  device-list freshness, backoff; clock and rng are inputs)
               |  sendqueue.py (pending sends)  groupstate.py (membership, epochs, sender-key
               |  rotation and distribution)  linkstate.py (linking, both devices)
          ClientProtocol (protocol.py: sans-I/O — sessions, device lists, groups, dedup, content)
               |  sessions.py  trust.py  groups.py  identity.py  content.py
          crypto/ (PQXDH, Double Ratchet, sender keys)   clients/store/ (Store)   wire/ (frames)

Every frame and REST body is a typed :mod:`wire` model; nothing parses JSON by hand.
The picture with the data flow is in ``docs/architecture.md``.

Quick use::

    from clients.sdk import VoxClient

    alice = await VoxClient.register(home, "http://127.0.0.1:8000", "alice")
    await alice.connect()                       # WebSocket; deliveries start flowing
    result = await alice.send_text("bob", "hi") # returns once the relay accepted it
    async for event in alice.messages():        # Message | ReceiptEvent | TypingEvent | ...
        if isinstance(event, Message):
            print(event.sender, event.text)
    await alice.close()

Public API of :class:`VoxClient` (all ``async`` unless noted):

* opening: ``VoxClient.register(home, server, username, invite=, passphrase=)``,
  ``VoxClient.open(home, passphrase=)`` (no network), ``VoxClient.join(home, server, code)``,
  ``close()`` / ``async with``; properties ``username``, ``device_id``, ``server_url``.
* relay: ``config() -> ServerConfig`` (brand, colours, registration, limits),
  ``connect(receive=True)``, ``disconnect()``, ``connected`` (property).
* messages: ``send_text(to, text) -> SendResult`` (``to`` = username or ``group:<id>``;
  raises :class:`MessageQueued` when the relay cannot take it now: it is kept and sent, in
  order, on the next connection, then a :class:`MessageSent` event follows),
  ``send_file(to, path, caption=, progress=)``, ``download(message, dest, progress=)``,
  ``send_typing(to, active)``, ``mark_read(conversation)`` (sends read receipts),
  ``messages()`` (async iterator of events), ``on_event(callback)`` (returns unsubscribe),
  ``receive(wait)`` (collect until idle), ``history(conversation, limit=)`` and
  ``conversations()`` (sync, from the local store); ``queued()`` (texts and files not yet
  accepted) and ``operations()`` (edits, deletes, reactions, timer changes and verification
  syncs queued or refused for good: :class:`Operation`), both sync.
* identity: ``verify(username) -> Verification`` (safety number, changed?, verified?),
  ``accept_key(username)``, ``clear_verification(username)`` (both told to our other devices
  through the outbox); a changed key raises :class:`UntrustedIdentity` on send and emits
  a :class:`KeyChanged` event.
* devices: ``devices() -> list[DeviceInfo]``, ``link() -> LinkInvitation`` (``.code``),
  ``wait_linked(invitation, within=300.0, clock=time.monotonic)``, ``remove_device(device_id)``;
  linking fails with a :class:`LinkError`: :class:`LinkCodeMalformed`,
  :class:`LinkCodeExpired`, :class:`LinkWrongCode`, :class:`LinkTimeout`.
* groups: ``create_group(name, members) -> GroupInfo``, ``add_members(group, users)``,
  ``remove_members(group, users)``, ``leave_group(group)``, ``send_group_text(group, text)``,
  ``send_group_file(group, path)``, ``groups()`` (sync). ``group`` is an id, ``group:<id>``
  or a unique name.
* maintenance (automatic after ``connect``): ``replenish_prekeys()``,
  ``rotate_signed_prekey(force=)``.

Events (:data:`Event`): :class:`Message` (text or :class:`AttachmentInfo`; ``outgoing`` for
what this account sent from another device), :class:`ReceiptEvent` (delivered/read),
:class:`TypingEvent`, :class:`KeyChanged`, :class:`GroupChanged`, :class:`DecryptFailure`
(reported, acked, never stops the loop), :class:`MessageSent` / :class:`SendFailed` (a queued
message or operation accepted / refused for good). Conversations are usernames or
``group:<hex id>``.

Errors: every failure is a :class:`ClientError` subclass with a one-line message (see
:mod:`clients.sdk.errors`). Formats and flows: ``docs/protocol-client.md``.
"""

from __future__ import annotations

from clients.sdk.client import LinkInvitation, Progress, VoxClient
from clients.sdk.errors import (
    AccountDeleted,
    AttachmentError,
    AuthFailed,
    BadDeviceList,
    ClientError,
    DecryptFailed,
    DeviceRemoved,
    GroupError,
    LinkCodeExpired,
    LinkCodeMalformed,
    LinkError,
    LinkTimeout,
    LinkWrongCode,
    MessageQueued,
    NoProfile,
    NotDeletableForEveryone,
    ProfileError,
    ProfileExists,
    ProfileLocked,
    RegistrationClosed,
    RelayError,
    RelayRejected,
    RelayUnavailable,
    StoreError,
    UnknownUser,
    UntrustedIdentity,
)
from clients.sdk.models import (
    AttachmentInfo,
    DecryptFailure,
    DeliveryState,
    DeviceInfo,
    Event,
    GroupChanged,
    GroupInfo,
    KeyChanged,
    Message,
    MessageSent,
    MessageUpdate,
    Operation,
    ReceiptEvent,
    ReplyRef,
    SendFailed,
    SendResult,
    ServerConfig,
    SignedOut,
    TypingEvent,
    Verification,
    Withdrawn,
    group_conversation,
)

__all__ = [
    "AccountDeleted",
    "AttachmentError",
    "AttachmentInfo",
    "AuthFailed",
    "BadDeviceList",
    "ClientError",
    "DecryptFailed",
    "DecryptFailure",
    "DeliveryState",
    "DeviceInfo",
    "DeviceRemoved",
    "Event",
    "GroupChanged",
    "GroupError",
    "GroupInfo",
    "KeyChanged",
    "LinkCodeExpired",
    "LinkCodeMalformed",
    "LinkError",
    "LinkInvitation",
    "LinkTimeout",
    "LinkWrongCode",
    "Message",
    "MessageQueued",
    "MessageSent",
    "MessageUpdate",
    "NoProfile",
    "NotDeletableForEveryone",
    "Operation",
    "ProfileError",
    "ProfileExists",
    "ProfileLocked",
    "Progress",
    "ReceiptEvent",
    "RegistrationClosed",
    "RelayError",
    "RelayRejected",
    "RelayUnavailable",
    "ReplyRef",
    "SendFailed",
    "SendResult",
    "ServerConfig",
    "SignedOut",
    "StoreError",
    "TypingEvent",
    "UnknownUser",
    "UntrustedIdentity",
    "Verification",
    "VoxClient",
    "Withdrawn",
    "group_conversation",
]
