"""Linking a new device with a short one-time code (end-to-end encrypted through the relay).

The code the existing device shows is ``USERNAME:DEVICE_ID:SECRET`` where ``SECRET`` is 80
random bits in base32 (16 characters, shown in groups of 4). From it both devices derive::

    k = scrypt(SECRET (10 bytes), salt = "VoxLink-v1" || 0x00 || str16 username || u32 device_id,
               n = 2^15, r = 8, p = 1, length = 64)
    temporary auth key seed = k[0:32]        (Ed25519)
    offer key               = k[32:64]       (AES-256-GCM)

1. The existing device adds ``DEVICE_ID`` to the account's signed device list with a throwaway
   X25519 identity key and the *temporary* auth key, uploads the list (version v+1), and sends
   the new device a ``LINK`` payload (the relay sees only ciphertext)::

       data  = nonce (12) || AES-256-GCM(offer key, nonce, offer, ad)
       ad    = "VoxLink-v1" || 0x00 || str16 username || u32 device_id
       offer = u8 1 || str16 username || u32 device_id || account key (crypto AccountKey encoding)

   Its other devices get a pairwise ``DEVICES`` content (refetch the list).
2. The new device logs in as ``DEVICE_ID`` with the temporary auth key (derived from the
   code), receives and decrypts the offer, and so learns the account key. It then generates
   its *own* identity and auth keys, signs list v+2 that replaces its entry with them (the
   relay drops the temporary device and its token), logs in with the new auth key and
   uploads prekeys signed by the account key. Nothing derived from the code remains in use.

An observer of the relay would have to guess 80 bits through scrypt to read the offer; the
code is single-use (the temporary entry disappears in step 2).

This module only executes (HTTP, the socket, the store, scrypt in a thread): every decision
— the slot, the lists, the sealed offer, acks, wrong, expired and late codes (typed
:class:`~clients.sdk.errors.LinkError` subclasses) — is the sans-I/O state machines' in
:mod:`clients.sdk.linkstate`, with the time from an injectable ``clock``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from clients.sdk import group_admin, peers, trust
from clients.sdk import identity as ids
from clients.sdk.content import DevicesChanged
from clients.sdk.core import Core
from clients.sdk.errors import AuthFailed, ClientError, LinkError, RelayRejected, RelayUnavailable
from clients.sdk.linkstate import (
    LINK_LABEL,
    Joining,
    Linked,
    LinkInvitation,
    LinkWatch,
    Offering,
    derive_link_keys,
    format_code,
    parse_code,
)
from clients.sdk.protocol import OutgoingSend
from clients.sdk.transport import RelayHttp, RelaySocket, SocketClosed
from clients.store.base import Store
from wire.rest import PrekeyUpload

__all__ = [
    "LINK_LABEL",
    "LinkInvitation",
    "derive_link_keys",
    "format_code",
    "join",
    "offer",
    "parse_code",
    "wait_linked",
]

Clock = Callable[[], float]


async def offer(client: Core) -> LinkInvitation:
    """Existing device: add a slot for the new device and send it the encrypted offer."""
    flow = Offering(client.username, client.device_id)
    await peers.refresh_devices(client, client.username)
    slot = flow.choose_slot(client.protocol.device_list(client.username))
    keys = await asyncio.to_thread(derive_link_keys, slot.username, slot.device_id, slot.secret)
    new_list = flow.keys(*keys).sign(client.identity.account_key)
    answer = await client.http.put_devices(client.username, new_list.to_bytes())
    client.protocol.accept_device_list(client.username, answer.account_key, answer.device_list)
    out = flow.published(client.identity.account_key)
    # Our other devices (not the new one, which has no prekeys yet) learn about the change.
    for other in out.notify:
        if not client.protocol.sessions.has_session(client.username, other):
            bundle = await client.http.bundle(client.username, other)
            for item in bundle.devices:
                parsed = peers.device_bundle(item)
                if parsed is not None and parsed.device_id == other:
                    client.protocol.accept_bundle(client.username, bundle.account_key, parsed)
    payloads: list[tuple[bytes, list[tuple[str, int]]]] = [(out.link_payload, [out.new_device])]
    with client.store.transaction():
        others = [(client.username, d) for d in out.notify]
        payloads += client.protocol._pairwise(others, DevicesChanged())
    send = OutgoingSend(out.client_id, payloads)
    try:
        await client.pipeline.deliver(set(), lambda: [send])  # no session set-up
    except RelayRejected as exc:
        flow.refused(exc.code)
    return flow.sent()


async def wait_linked(
    client: Core,
    invitation: LinkInvitation,
    within: float = 300.0,
    *,
    clock: Clock = time.monotonic,
) -> int:
    """Existing device: wait until the new device has taken over its slot (then share every
    group with it); returns its device id."""
    watch = LinkWatch(invitation, clock(), within)
    while True:
        watch.poll(clock())
        await peers.refresh_devices(client, client.username)
        current = client.protocol.device_list(client.username)
        step = watch.listed(None if current is None else current.version)
        if isinstance(step, Linked):
            await group_admin.share_with_own_devices(client)
            return step.device_id
        await asyncio.sleep(step.delay)


async def _receive_offer(http: RelayHttp, token: str, flow: Joining, clock: Clock) -> None:
    socket = await RelaySocket.connect(http.ws_url, token)
    try:
        while flow.account_key is None:
            try:
                async with asyncio.timeout(flow.wait_time(clock())):
                    frame = await socket.recv()
            except TimeoutError:
                continue  # wait_time raises once the time is up
            for ack in flow.frame(frame):
                await socket.send(ack)
    except SocketClosed as exc:
        flow.closed(exc.reason)
    finally:
        await socket.close()


async def join(
    store: Store,
    server: str,
    code: str,
    *,
    offer_timeout: float = 60.0,
    clock: Clock = time.monotonic,
) -> None:
    """New device: redeem ``code`` and write the resulting profile into ``store``."""
    flow = Joining(code)
    keys = await asyncio.to_thread(derive_link_keys, flow.username, flow.device_id, flow.secret)
    http = RelayHttp(server)
    try:
        await http.config()
        http.set_credentials(flow.username, flow.device_id, flow.keys(*keys))
        try:
            token = await http.login()
        except AuthFailed:
            flow.login_refused()
        flow.logged_in(clock(), offer_timeout)
        await _receive_offer(http, token, flow, clock)
        assert flow.account_key is not None
        account_key = flow.account_key
        served = await http.devices(flow.username)
        me = ids.new_identity(flow.username, flow.device_id, account_key)
        new_list = flow.replace_list(served.account_key, served.device_list, me.entry())
        with store.transaction():
            prekeys = ids.registration_prekeys(store, me)
        await http.put_devices(flow.username, new_list.to_bytes())
        http.set_credentials(flow.username, flow.device_id, me.auth_key)
        http.forget_token()
        await http.login()
        await http.upload_prekeys(PrekeyUpload.model_validate(prekeys))
        with store.transaction():
            store.save_profile(me.to_profile(http.base_url))
            trust.accept_device_list(
                store, flow.username, account_key.public_key.to_bytes(), new_list.to_bytes()
            )
            trust.accept_key(store, flow.username)
        flow.finished()
    except (RelayUnavailable, LinkError):
        raise
    except ClientError as exc:
        raise LinkError(str(exc)) from None
    finally:
        await http.aclose()
