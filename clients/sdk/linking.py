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
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import time
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from clients.sdk import group_admin, peers, trust
from clients.sdk import identity as ids
from clients.sdk.content import DevicesChanged, PayloadKind, RelayPayload
from clients.sdk.core import Core
from clients.sdk.errors import AuthFailed, ClientError, LinkError, RelayRejected, RelayUnavailable
from clients.sdk.protocol import OutgoingSend
from clients.sdk.transport import RelayHttp, RelaySocket, SocketClosed
from clients.store.base import Store
from crypto import primitives as p
from crypto.device_list import DeviceEntry, DeviceList, SignedDeviceList
from crypto.encoding import Reader, Writer
from crypto.errors import VoxError
from crypto.keys import AccountKey, DeviceAuthKey, DeviceIdentityKey, validate_username
from wire.encoding import WireDecodeError, unb64
from wire.frames import AckFrame, DeliverFrame
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

LINK_LABEL: Final = b"VoxLink-v1"
SECRET_LEN: Final = 10
OFFER_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class LinkInvitation:
    """What :func:`offer` returns: the code to type on the new device."""

    code: str
    device_id: int
    list_version: int


def format_code(username: str, device_id: int, secret: bytes) -> str:
    """``username:device_id:ABCD-EFGH-IJKL-MNOP``."""
    text = base64.b32encode(secret).decode("ascii").rstrip("=")
    groups = "-".join(text[i : i + 4] for i in range(0, len(text), 4))
    return f"{username}:{device_id}:{groups}"


def parse_code(code: str) -> tuple[str, int, bytes]:
    """Inverse of :func:`format_code` (case and dashes/spaces in the secret are ignored)."""
    try:
        username, device, secret_text = code.strip().split(":")
        validate_username(username)
        device_id = int(device)
        cleaned = "".join(ch for ch in secret_text.upper() if ch.isalnum())
        secret = base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))
    except (ValueError, VoxError):
        raise LinkError("malformed code (expected USERNAME:DEVICE:XXXX-XXXX-XXXX-XXXX)") from None
    if len(secret) != SECRET_LEN or not 1 <= device_id <= 0xFFFFFFFF:
        raise LinkError("malformed code")
    return username, device_id, secret


def _ad(username: str, device_id: int) -> bytes:
    return Writer().raw(LINK_LABEL).u8(0).str16(username).u32(device_id).finish()


def derive_link_keys(username: str, device_id: int, secret: bytes) -> tuple[DeviceAuthKey, bytes]:
    """The temporary auth key and the offer key for a code."""
    k = Scrypt(salt=_ad(username, device_id), length=64, n=2**15, r=8, p=1).derive(secret)
    return DeviceAuthKey(k[:32]), k[32:]


async def offer(client: Core) -> LinkInvitation:
    """Existing device: add a slot for the new device and send it the encrypted offer."""
    await peers.refresh_devices(client, client.username)
    username = client.username
    current = client.protocol.device_list(username)
    if current is None:
        raise LinkError("our own device list is unknown")
    while True:
        device_id = 2 + secrets.randbelow(2**31)
        if device_id not in current.device_ids:
            break
    secret = os.urandom(SECRET_LEN)
    auth_key, offer_key = await asyncio.to_thread(derive_link_keys, username, device_id, secret)
    throwaway = DeviceIdentityKey.generate()
    entry = DeviceEntry(device_id, throwaway.public_key, auth_key.public_key)
    new_list = current.add_device(entry).sign(client.identity.account_key)
    answer = await client.http.put_devices(username, new_list.to_bytes())
    client.protocol.accept_device_list(username, answer.account_key, answer.device_list)
    body = (
        Writer()
        .u8(OFFER_VERSION)
        .str16(username)
        .u32(device_id)
        .raw(client.identity.account_key.to_bytes())
        .finish()
    )
    nonce = os.urandom(12)
    sealed = nonce + p.aes256gcm_encrypt(offer_key, nonce, body, _ad(username, device_id))
    # Our other devices (not the new one, which has no prekeys yet) learn about the change.
    others = [d for d in current.device_ids if d not in (client.device_id, device_id)]
    for other in others:
        if not client.protocol.sessions.has_session(username, other):
            bundle = await client.http.bundle(username, other)
            for item in bundle.devices:
                parsed = peers.device_bundle(item)
                if parsed is not None and parsed.device_id == other:
                    client.protocol.accept_bundle(username, bundle.account_key, parsed)
    payloads: list[tuple[bytes, list[tuple[str, int]]]] = [
        (RelayPayload(PayloadKind.LINK, sealed).to_bytes(), [(username, device_id)])
    ]
    with client.store.transaction():
        payloads += client.protocol._pairwise([(username, d) for d in others], DevicesChanged())
    send = OutgoingSend("link-" + secrets.token_hex(8), payloads)
    try:
        await client.pipeline.deliver(set(), lambda: [send])  # no session set-up
    except RelayRejected as exc:
        raise LinkError(f"the relay refused the offer ({exc.code})") from None
    return LinkInvitation(format_code(username, device_id, secret), device_id, new_list.version)


async def wait_linked(client: Core, invitation: LinkInvitation, within: float = 300.0) -> int:
    """Existing device: wait until the new device has taken over its slot (then share every
    group with it); returns its device id."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        await peers.refresh_devices(client, client.username)
        current = client.protocol.device_list(client.username)
        if current is not None and current.version > invitation.list_version:
            await group_admin.share_with_own_devices(client)
            return invitation.device_id
        await asyncio.sleep(0.5)
    raise LinkError("the new device did not join in time")


def _open_offer(sealed: bytes, username: str, device_id: int, offer_key: bytes) -> AccountKey:
    try:
        body = p.aes256gcm_decrypt(offer_key, sealed[:12], sealed[12:], _ad(username, device_id))
        r = Reader(body)
        r.version(OFFER_VERSION)
        if r.str16("username", 32) != username or r.u32() != device_id:
            raise LinkError("the offer is for another device")
        account_key = AccountKey.from_bytes(r.raw(r.remaining))
    except VoxError:
        raise LinkError("the offer does not decrypt with this code") from None
    return account_key


async def _receive_offer(
    http: RelayHttp, token: str, username: str, device_id: int, offer_key: bytes, within: float
) -> AccountKey:
    socket = await RelaySocket.connect(http.ws_url, token)
    try:
        async with asyncio.timeout(within):
            while True:
                frame = await socket.recv()
                if not isinstance(frame, DeliverFrame):
                    continue
                try:
                    payload = RelayPayload.from_bytes(unb64(frame.data))
                except (VoxError, WireDecodeError):
                    payload = None
                await socket.send(AckFrame(seqs=[frame.seq]))
                if payload is not None and payload.kind is PayloadKind.LINK:
                    return _open_offer(payload.data, username, device_id, offer_key)
    except TimeoutError:
        raise LinkError("no offer arrived (is `vox link` still running?)") from None
    except SocketClosed as exc:
        raise LinkError(f"connection closed: {exc.reason}") from None
    finally:
        await socket.close()


async def join(store: Store, server: str, code: str, *, offer_timeout: float = 60.0) -> None:
    """New device: redeem ``code`` and write the resulting profile into ``store``."""
    username, device_id, secret = parse_code(code)
    auth_key, offer_key = await asyncio.to_thread(derive_link_keys, username, device_id, secret)
    http = RelayHttp(server)
    try:
        await http.config()
        http.set_credentials(username, device_id, auth_key)
        try:
            token = await http.login()
        except AuthFailed:
            raise LinkError("the code is not valid (expired or already used)") from None
        account_key = await _receive_offer(
            http, token, username, device_id, offer_key, offer_timeout
        )
        served = await http.devices(username)
        if served.account_key != account_key.public_key.to_bytes():
            raise LinkError("the relay serves another account key than the offer's")
        current = SignedDeviceList.from_bytes(served.device_list).verify(
            account_key.public_key, username=username
        )
        me = ids.new_identity(username, device_id, account_key)
        devices = (*(d for d in current.devices if d.device_id != device_id), me.entry())
        new_list = DeviceList(
            username, current.version + 1, tuple(sorted(devices, key=lambda d: d.device_id))
        ).sign(account_key)
        with store.transaction():
            prekeys = ids.registration_prekeys(store, me)
        await http.put_devices(username, new_list.to_bytes())
        http.set_credentials(username, device_id, me.auth_key)
        http.forget_token()
        await http.login()
        await http.upload_prekeys(PrekeyUpload.model_validate(prekeys))
        with store.transaction():
            store.save_profile(me.to_profile(http.base_url))
            trust.accept_device_list(
                store, username, account_key.public_key.to_bytes(), new_list.to_bytes()
            )
            trust.accept_key(store, username)
    except (RelayUnavailable, LinkError):
        raise
    except ClientError as exc:
        raise LinkError(str(exc)) from None
    finally:
        await http.aclose()
