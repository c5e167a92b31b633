"""The relay's VAPID identity (RFC 8292) and the RFC 8291 encryption of a push message.

The relay signs every push request with one P-256 key, kept in
``<data dir>/vapid_private_key.pem`` (mode 0600; ``push.vapid_key_file`` moves it, e.g. to a
secret shared by every relay node — subscriptions are bound to this key, so all nodes of one
deployment must use the same file). Browsers subscribe with its public key
(``GET /v1/push/vapid``). The file is read (or created) when the key is first needed — its
public key served or a push signed — not at start: an idle relay does not load
``cryptography``.

Signing (``py_vapid``) and encryption (``http_ece``, ``aes128gcm``) come from maintained
libraries; nothing here is hand-written cryptography.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import secrets
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # cryptography (~8 MB resident) is loaded only when the key is used
    from cryptography.hazmat.primitives.asymmetric import ec

from server.logs import log_event

__all__ = [
    "CONTENT_ENCODING",
    "JWT_LIFETIME_SECONDS",
    "PAYLOAD",
    "VapidKey",
    "b64url",
    "encrypt_payload",
]

#: The only plaintext a push ever carries: no sender, no count, no message data.
PAYLOAD = b'{"v":1,"type":"new_messages"}'
CONTENT_ENCODING = "aes128gcm"
#: Lifetime of a signed VAPID token (RFC 8292 allows at most 24 hours).
JWT_LIFETIME_SECONDS = 12 * 3600
#: A cached token is replaced when it has less than this left.
_JWT_MIN_LEFT_SECONDS = 3600


def b64url(data: bytes) -> str:
    """Base64url without padding (how Web Push encodes keys)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class VapidKey:
    """The relay's VAPID signing key, with a per-audience cache of signed tokens.

    Nothing is read at construction: the key file is loaded (or created) the first time
    the key is needed — its public key served (``await ready()``) or a push signed — so an
    idle relay never loads ``cryptography`` (about 8 MB resident) for it.
    """

    def __init__(self, path: Path, subject: str) -> None:
        self.path = path
        self.subject = subject
        self._private_key: ec.EllipticCurvePrivateKey | None = None
        self._public_key = b""
        self._vapid: Any = None  # py_vapid's signer, loaded with the first push
        self._tokens: dict[str, tuple[str, int]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"VapidKey(path={str(self.path)!r})"

    def check_permissions(self) -> None:
        """Warn if an existing key file is readable by others (a stat: no key is loaded)."""
        with contextlib.suppress(FileNotFoundError):
            mode = self.path.stat().st_mode & 0o777
            if mode & 0o077:
                log_event(
                    "vapid_key_permissions",
                    logging.WARNING,
                    path=str(self.path),
                    mode=oct(mode),
                    hint="chmod 600",
                )

    async def ready(self) -> None:
        """Load the key off the event loop's thread (a no-op once loaded)."""
        if self._private_key is None:
            await asyncio.to_thread(self._load)

    @property
    def public_key(self) -> bytes:
        """The uncompressed P-256 public point (65 bytes)."""
        self._load()
        return self._public_key

    @property
    def public_key_b64(self) -> str:
        """The public key as browsers take it (``applicationServerKey``)."""
        return b64url(self.public_key)

    def _load(self) -> ec.EllipticCurvePrivateKey:
        with self._lock:
            if self._private_key is None:
                self._private_key, self._public_key = _load_key_file(self.path)
            return self._private_key

    def authorization(self, audience: str, now: int) -> str:
        """The ``Authorization: vapid t=<JWT>, k=<public key>`` value for a push service.

        ``audience`` is the push endpoint's origin (``https://host[:port]``).
        """
        private_key = self._load()
        t = now
        with self._lock:
            cached = self._tokens.get(audience)
            if cached is not None and cached[1] - t > _JWT_MIN_LEFT_SECONDS:
                return cached[0]
            exp = t + JWT_LIFETIME_SECONDS
            claims = {"aud": audience, "exp": exp, "sub": self.subject}
            if self._vapid is None:
                from py_vapid import Vapid02

                self._vapid = Vapid02(private_key)
            header: str = self._vapid.sign(claims)["Authorization"]
            if len(self._tokens) > 1000:
                self._tokens.clear()
            self._tokens[audience] = (header, exp)
            return header


def _load_key_file(path: Path) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """The P-256 key at ``path`` and its public point, creating the file if missing."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        _create_key_file(path)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} does not hold an EC private key")
    if not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("a VAPID key must be a P-256 key")
    public = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return key, public


def _create_key_file(path: Path) -> None:
    """Write a fresh P-256 key to ``path`` (0600); keep another process's key if it won."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # atomic; a concurrent first start keeps the winner's key
    finally:
        tmp.unlink(missing_ok=True)
    log_event("vapid_key_created", path=str(path))


def encrypt_payload(p256dh: bytes, auth: bytes, payload: bytes = PAYLOAD) -> bytes:
    """RFC 8291 ``aes128gcm`` body for a subscription (fresh ephemeral key and salt)."""
    import http_ece  # loaded with the first push
    from cryptography.hazmat.primitives.asymmetric import ec

    ephemeral = ec.generate_private_key(ec.SECP256R1())

    body: bytes = http_ece.encrypt(
        payload,
        salt=os.urandom(16),
        private_key=ephemeral,
        dh=p256dh,
        auth_secret=auth,
        version=CONTENT_ENCODING,
    )
    return body
