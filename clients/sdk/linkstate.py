"""Device linking as sans-I/O state machines, one per side (``docs/protocol-client.md`` §7).

The shell (:mod:`clients.sdk.linking`) does the HTTP calls, the socket, the store writes and
the scrypt in a thread; these machines decide everything else — the code, the new device's
slot, the device lists, the sealed offer, which frames to ack, wrong, expired and late codes —
from values, a ``now`` (monotonic seconds) and an ``rng``. Nothing here reads a clock or does
I/O, so every path is a fast test (``tests/clients/test_linkstate.py``).

Existing device (``vox link``), :class:`Offering` then :class:`LinkWatch`::

    choose_slot(our list)      → Slot (device id, secret, code)      the shell derives the keys
    keys(auth, offer key)      → the unsigned list v+1 with the slot  the shell signs and PUTs it
    published(account key)     → OfferSend (LINK payload + who else   the shell sends it as one
                                  to tell)                            ``send``
    sent() / refused(code)     → LinkInvitation / LinkError
    LinkWatch.poll(now)        → (LinkTimeout past the deadline)      the shell fetches our list
    LinkWatch.listed(version)  → Linked (hand the groups over) | Wait(delay)

New device (``vox join``), :class:`Joining`::

    Joining(code)              (LinkCodeMalformed)                    the shell derives the keys
    keys(auth, offer key)      → the temporary key to log in with     login_refused():
                                                                      LinkCodeExpired
    logged_in(now, within)     → AWAIT_OFFER until now + within
    wait_time(now)             seconds left for the next frame        none left: LinkTimeout
    frame(frame)               → acks; the offer opens: REPLACE_LIST  wrong code: LinkWrongCode
    replace_list(served, me)   → list v+2 with our own keys (signed)  the shell PUTs it, logs in
                                                                      again, uploads prekeys
    finished()                 DONE

History is not handed over (§7): once linked, the existing device tells its own devices
about every group (:func:`clients.sdk.group_admin.share_with_own_devices`).
"""

from __future__ import annotations

import base64
import enum
import random
from dataclasses import dataclass
from typing import Final, NoReturn

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from clients.sdk.content import PayloadKind, RelayPayload
from clients.sdk.errors import (
    LinkCodeExpired,
    LinkCodeMalformed,
    LinkError,
    LinkTimeout,
    LinkWrongCode,
)
from crypto import primitives as p
from crypto.device_list import DeviceEntry, DeviceList, SignedDeviceList
from crypto.encoding import Reader, Writer
from crypto.errors import VoxError
from crypto.keys import AccountKey, DeviceAuthKey, DeviceIdentityKey, validate_username
from wire.encoding import WireDecodeError, unb64
from wire.frames import AckFrame, DeliverFrame, ServerFrame

__all__ = [
    "LINK_LABEL",
    "POLL_INTERVAL",
    "JoinStep",
    "Joining",
    "LinkInvitation",
    "LinkWatch",
    "Linked",
    "OfferSend",
    "OfferStep",
    "Offering",
    "Slot",
    "Wait",
    "derive_link_keys",
    "format_code",
    "open_offer",
    "parse_code",
    "seal_offer",
]

LINK_LABEL: Final = b"VoxLink-v1"
SECRET_LEN: Final = 10
OFFER_VERSION: Final = 1
#: Seconds between two looks at our device list while waiting for the new device.
POLL_INTERVAL: Final = 0.5


# --- the code and the offer ----------------------------------------------------------------


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
        raise LinkCodeMalformed(
            "malformed code (expected USERNAME:DEVICE:XXXX-XXXX-XXXX-XXXX)"
        ) from None
    if len(secret) != SECRET_LEN or not 1 <= device_id <= 0xFFFFFFFF:
        raise LinkCodeMalformed("malformed code")
    return username, device_id, secret


def _ad(username: str, device_id: int) -> bytes:
    return Writer().raw(LINK_LABEL).u8(0).str16(username).u32(device_id).finish()


def derive_link_keys(username: str, device_id: int, secret: bytes) -> tuple[DeviceAuthKey, bytes]:
    """The temporary auth key and the offer key for a code (scrypt: run it off the loop)."""
    k = Scrypt(salt=_ad(username, device_id), length=64, n=2**15, r=8, p=1).derive(secret)
    return DeviceAuthKey(k[:32]), k[32:]


def seal_offer(
    offer_key: bytes, nonce: bytes, username: str, device_id: int, account_key: AccountKey
) -> bytes:
    """``nonce || AES-256-GCM(offer key, nonce, u8 1 || str16 username || u32 device id ||
    account key, ad)``."""
    body = (
        Writer()
        .u8(OFFER_VERSION)
        .str16(username)
        .u32(device_id)
        .raw(account_key.to_bytes())
        .finish()
    )
    return nonce + p.aes256gcm_encrypt(offer_key, nonce, body, _ad(username, device_id))


def open_offer(sealed: bytes, username: str, device_id: int, offer_key: bytes) -> AccountKey:
    """The account key in a sealed offer; :class:`LinkWrongCode` if it does not open."""
    try:
        body = p.aes256gcm_decrypt(offer_key, sealed[:12], sealed[12:], _ad(username, device_id))
        r = Reader(body)
        r.version(OFFER_VERSION)
        if r.str16("username", 32) != username or r.u32() != device_id:
            raise LinkError("the offer is for another device")
        account_key = AccountKey.from_bytes(r.raw(r.remaining))
    except VoxError:
        raise LinkWrongCode("the offer does not decrypt with this code") from None
    return account_key


def _expect(current: enum.Enum, wanted: enum.Enum) -> None:
    """A step called out of order is a bug in the shell: say where the flow is."""
    if current is not wanted:
        raise LinkError(f"linking is at '{current.value}', not '{wanted.value}'")


# --- the existing device -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkInvitation:
    """What the existing device shows: the code to type on the new device."""

    code: str
    device_id: int
    list_version: int


@dataclass(frozen=True, slots=True)
class Slot:
    """The new device's place on the account: its device id and the code's secret."""

    username: str
    device_id: int
    secret: bytes

    @property
    def code(self) -> str:
        """The code to show."""
        return format_code(self.username, self.device_id, self.secret)


@dataclass(frozen=True, slots=True)
class OfferSend:
    """The one ``send`` that carries the offer: the LINK payload for the new device and a
    DEVICES content (pairwise, the shell encrypts it) for each of our other devices."""

    client_id: str
    link_payload: bytes
    new_device: tuple[str, int]
    notify: tuple[int, ...]


class OfferStep(enum.Enum):
    """Where :class:`Offering` is."""

    CHOOSE_SLOT = "choose a slot"
    KEYS = "derive the keys"
    PUBLISH_LIST = "publish the list"
    SEND_OFFER = "send the offer"
    SENT = "sent"


class Offering:
    """The existing device's half, up to the invitation (then :class:`LinkWatch`)."""

    def __init__(self, username: str, device_id: int, rng: random.Random | None = None) -> None:
        self.username = username
        self.device_id = device_id
        self.rng = rng or random.SystemRandom()
        self.step = OfferStep.CHOOSE_SLOT
        self._current: DeviceList | None = None
        self._slot: Slot | None = None
        self._offer_key = b""
        self._new_list: DeviceList | None = None

    def _at(self, step: OfferStep) -> None:
        _expect(self.step, step)

    def choose_slot(self, current: DeviceList | None) -> Slot:
        """A free device id and a fresh secret, given our (just fetched) device list."""
        self._at(OfferStep.CHOOSE_SLOT)
        if current is None:
            raise LinkError("our own device list is unknown")
        while True:
            device_id = 2 + self.rng.randrange(2**31)
            if device_id not in current.device_ids:
                break
        self._current = current
        self._slot = Slot(self.username, device_id, self.rng.randbytes(SECRET_LEN))
        self.step = OfferStep.KEYS
        return self._slot

    def keys(self, auth_key: DeviceAuthKey, offer_key: bytes) -> DeviceList:
        """The code's keys are derived: the list (v+1, unsigned) with the slot holding a
        throwaway identity key and the temporary auth key."""
        self._at(OfferStep.KEYS)
        assert self._current is not None and self._slot is not None
        self._offer_key = offer_key
        throwaway = DeviceIdentityKey.generate(self.rng.randbytes).public_key
        entry = DeviceEntry(self._slot.device_id, throwaway, auth_key.public_key)
        self._new_list = self._current.add_device(entry)
        self.step = OfferStep.PUBLISH_LIST
        return self._new_list

    def published(self, account_key: AccountKey) -> OfferSend:
        """The relay holds the new list: the offer to send (one ``send``: the relay wants all
        our other devices addressed, so they get a DEVICES content in the same one)."""
        self._at(OfferStep.PUBLISH_LIST)
        assert self._current is not None and self._slot is not None
        slot = self._slot
        nonce = self.rng.randbytes(12)
        sealed = seal_offer(self._offer_key, nonce, slot.username, slot.device_id, account_key)
        others = tuple(
            d for d in self._current.device_ids if d not in (self.device_id, slot.device_id)
        )
        self.step = OfferStep.SEND_OFFER
        return OfferSend(
            f"link-{self.rng.getrandbits(64):016x}",
            RelayPayload(PayloadKind.LINK, sealed).to_bytes(),
            (slot.username, slot.device_id),
            others,
        )

    def refused(self, code: str) -> NoReturn:
        """The relay refused the offer's ``send``."""
        raise LinkError(f"the relay refused the offer ({code})")

    def sent(self) -> LinkInvitation:
        """The relay accepted the offer: the invitation to show."""
        self._at(OfferStep.SEND_OFFER)
        assert self._slot is not None and self._new_list is not None
        self.step = OfferStep.SENT
        return LinkInvitation(self._slot.code, self._slot.device_id, self._new_list.version)


@dataclass(frozen=True, slots=True)
class Linked:
    """The new device took its slot over: hand it the groups."""

    device_id: int


@dataclass(frozen=True, slots=True)
class Wait:
    """Not yet: look at our device list again after ``delay`` seconds."""

    delay: float


class LinkWatch:
    """The existing device waits until the new device replaced its temporary entry (our list's
    version went past the invitation's), for at most ``within`` seconds from ``now``."""

    def __init__(
        self, invitation: LinkInvitation, now: float, within: float, poll: float = POLL_INTERVAL
    ) -> None:
        self.invitation = invitation
        self.within = within
        self.deadline = now + within
        self.poll_interval = poll

    def poll(self, now: float) -> None:
        """Before each look at the list: :class:`LinkTimeout` once the time is up."""
        if now >= self.deadline:
            raise LinkTimeout("the new device did not join in time", self.within)

    def listed(self, version: int | None) -> Linked | Wait:
        """Our list is at ``version`` (``None``: unknown)."""
        if version is not None and version > self.invitation.list_version:
            return Linked(self.invitation.device_id)
        return Wait(self.poll_interval)


# --- the new device ------------------------------------------------------------------------


class JoinStep(enum.Enum):
    """Where :class:`Joining` is."""

    KEYS = "derive the keys"
    LOGIN_TEMPORARY = "log in with the code"
    AWAIT_OFFER = "wait for the offer"
    REPLACE_LIST = "replace the temporary entry"
    FINISH = "log in and upload prekeys"
    DONE = "done"
    FAILED = "failed"


class Joining:
    """The new device's half: from the code to a device of its own."""

    def __init__(self, code: str) -> None:
        self.username, self.device_id, self.secret = parse_code(code)
        self.step = JoinStep.KEYS
        self.deadline = 0.0
        self.within = 0.0
        self.account_key: AccountKey | None = None
        self._offer_key = b""

    def _at(self, step: JoinStep) -> None:
        _expect(self.step, step)

    def _fail(self, error: LinkError) -> NoReturn:
        self.step = JoinStep.FAILED
        raise error

    def keys(self, auth_key: DeviceAuthKey, offer_key: bytes) -> DeviceAuthKey:
        """The code's keys are derived: log in with the temporary auth key (returned)."""
        self._at(JoinStep.KEYS)
        self._offer_key = offer_key
        self.step = JoinStep.LOGIN_TEMPORARY
        return auth_key

    def login_refused(self) -> NoReturn:
        """The relay does not know the temporary key."""
        self._fail(LinkCodeExpired("the code is not valid (expired or already used)"))

    def logged_in(self, now: float, within: float) -> None:
        """Logged in: the offer must arrive within ``within`` seconds."""
        self._at(JoinStep.LOGIN_TEMPORARY)
        self.within = within
        self.deadline = now + within
        self.step = JoinStep.AWAIT_OFFER

    def wait_time(self, now: float) -> float:
        """Seconds left for the offer; :class:`LinkTimeout` when there are none."""
        self._at(JoinStep.AWAIT_OFFER)
        if now >= self.deadline:
            self._fail(LinkTimeout("no offer arrived (is `vox link` still running?)", self.within))
        return self.deadline - now

    def frame(self, frame: ServerFrame) -> list[AckFrame]:
        """A frame from the relay while waiting: the acks to send. Every delivery is acked;
        the LINK one opens the offer (the next step is :meth:`replace_list`)."""
        self._at(JoinStep.AWAIT_OFFER)
        if not isinstance(frame, DeliverFrame):
            return []
        try:
            payload: RelayPayload | None = RelayPayload.from_bytes(unb64(frame.data))
        except (VoxError, WireDecodeError):
            payload = None
        if payload is not None and payload.kind is PayloadKind.LINK:
            try:
                self.account_key = open_offer(
                    payload.data, self.username, self.device_id, self._offer_key
                )
            except LinkError as exc:
                self._fail(exc)
            self.step = JoinStep.REPLACE_LIST
        return [AckFrame(seqs=[frame.seq])]

    def closed(self, reason: str) -> NoReturn:
        """The connection closed before the offer arrived."""
        self._fail(LinkError(f"connection closed: {reason}"))

    def replace_list(
        self, served_account_key: bytes, served_list: bytes, me: DeviceEntry
    ) -> SignedDeviceList:
        """The relay's current list: the next version, with ``me`` (our own new keys) in our
        slot, signed with the account key from the offer."""
        self._at(JoinStep.REPLACE_LIST)
        account_key = self.account_key
        assert account_key is not None
        if served_account_key != account_key.public_key.to_bytes():
            self._fail(LinkError("the relay serves another account key than the offer's"))
        try:
            current = SignedDeviceList.from_bytes(served_list).verify(
                account_key.public_key, username=self.username
            )
        except VoxError as exc:
            self._fail(LinkError(f"the relay serves a device list that does not verify: {exc}"))
        devices = (*(d for d in current.devices if d.device_id != self.device_id), me)
        new_list = DeviceList(
            self.username, current.version + 1, tuple(sorted(devices, key=lambda d: d.device_id))
        )
        self.step = JoinStep.FINISH
        return new_list.sign(account_key)

    def finished(self) -> None:
        """Logged in with our own key, prekeys uploaded, the profile saved."""
        self._at(JoinStep.FINISH)
        self.step = JoinStep.DONE
