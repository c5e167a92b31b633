"""Streaming, chunked AES-256-GCM encryption of attachments.

An attachment is encrypted under a fresh random 32-byte key into one opaque *blob*::

    blob   = header || chunk_0 || chunk_1 || ... || chunk_last
    header  = u8 1 (format version) || u32 chunk_size     (MIN_CHUNK_SIZE ..= MAX_CHUNK_SIZE)
    chunk_i = AES-256-GCM(key, nonce_i, plaintext_i, ad=header)  (ciphertext || 16-byte tag)
    nonce_i = u64 i || u32 final                     (final = 1 on the last chunk, else 0)

Every chunk but the last carries exactly ``chunk_size`` plaintext bytes; the last carries
``0 ..= chunk_size`` (an empty file is one empty final chunk, 16 bytes of tag). Because the
nonce binds the chunk index and the final flag and the AD binds the header, reordering,
dropping, duplicating or appending chunks, truncating at a chunk boundary and changing the
chunk size all fail authentication. The key is never reused, so the deterministic nonces are
unique. ``digest = SHA-256(blob)`` lets the recipient check the download before decrypting.

**Padding** (optional, Signal's buckets): the plaintext may be the file followed by zero bytes
up to :func:`padded_size`, so the relay sees only the bucket, not the file's exact size
(at most 5 % overhead, 541 bytes at least). The blob format is unchanged; the pointer records
the padding byte count (pointer version 2) and :meth:`AttachmentDecryptor.for_pointer`
releases only the file's bytes and checks that every padding byte is zero.

Sans-I/O: :class:`AttachmentEncryptor` and :class:`AttachmentDecryptor` are fed bytes and
return bytes; :func:`encrypt_stream` / :func:`decrypt_stream` drive them from any object with
``read(n)`` or any iterable of ``bytes``. Nothing here opens a file.

Plaintext returned by :meth:`AttachmentDecryptor.feed` is authenticated chunk by chunk, but the
attachment is only known to be *complete* once :meth:`AttachmentDecryptor.finish` returns.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import math
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final, Protocol, runtime_checkable

from crypto import primitives
from crypto.encoding import Reader, Writer
from crypto.errors import (
    AttachmentMismatch,
    FieldTooLarge,
    InvalidValue,
    StateError,
    Truncated,
    UnsupportedVersion,
)
from crypto.primitives import Rng

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "MIN_PADDED_SIZE",
    "AttachmentDecryptor",
    "AttachmentEncryptor",
    "AttachmentPointer",
    "Readable",
    "ciphertext_size",
    "decrypt_stream",
    "encrypt_stream",
    "padded_size",
]

FORMAT_VERSION: Final = 1
POINTER_VERSION: Final = 1
"""Pointer encoding without padding (``padding == 0``)."""
PADDED_POINTER_VERSION: Final = 2
"""Pointer encoding with padding (``padding >= 1``)."""
MIN_PADDED_SIZE: Final = 541
"""Smallest padded size: Signal's floor, ``floor(1.05 ** 129)``."""
DEFAULT_CHUNK_SIZE: Final = 64 * 1024
MIN_CHUNK_SIZE: Final = 16
MAX_CHUNK_SIZE: Final = 1024 * 1024
KEY_SIZE: Final = 32
DIGEST_SIZE: Final = 32
TAG_SIZE: Final = 16
HEADER_SIZE: Final = 5
MAX_CONTENT_TYPE: Final = 255
MAX_FILE_NAME: Final = 255
MAX_BLOB_ID: Final = 128

_NONCE = struct.Struct(">QI")


@runtime_checkable
class Readable(Protocol):
    """Anything with a ``read(n)`` returning at most ``n`` bytes (``b""`` at the end)."""

    def read(self, n: int, /) -> bytes:
        """Return up to ``n`` bytes; ``b""`` at the end of the stream."""
        ...


def _nonce(index: int, final: bool) -> bytes:
    return _NONCE.pack(index, 1 if final else 0)


def _header(chunk_size: int) -> bytes:
    return Writer().u8(FORMAT_VERSION).u32(chunk_size).finish()


def _check_chunk_size(chunk_size: int) -> None:
    if chunk_size > MAX_CHUNK_SIZE:
        raise FieldTooLarge("chunk_size", chunk_size, MAX_CHUNK_SIZE)
    if chunk_size < MIN_CHUNK_SIZE:
        raise InvalidValue("chunk_size", f"must be at least {MIN_CHUNK_SIZE}")


def ciphertext_size(size: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """Return the exact blob size for ``size`` plaintext bytes (header included).

    ``size`` counts everything encrypted, padding included: a padded file of ``n`` bytes
    makes a blob of ``ciphertext_size(padded_size(n), chunk_size)`` bytes.
    """
    chunks = max(1, -(-size // chunk_size))
    return HEADER_SIZE + size + chunks * TAG_SIZE


def _bucket_reaches(k: int, size: int) -> bool:
    """Whether ``1.05 ** k >= size``, exactly (``21 ** k >= size * 20 ** k``)."""
    return int(21**k) >= size * int(20**k)


def padded_size(size: int) -> int:
    """Signal's attachment bucket: ``max(541, floor(1.05 ** ceil(log(size, 1.05))))``.

    Evaluated exactly in integers: with ``k`` the smallest integer ``>= 0`` such that
    ``21 ** k >= size * 20 ** k`` (i.e. ``1.05 ** k >= size``), the result is
    ``max(541, 21 ** k // 20 ** k)``. Sizes 0 and 1 give ``k = 0``, hence 541; every
    ``size <= 541`` gives 541 (``floor(1.05 ** 129) == 541``). For any ``size >= 0``:
    ``size <= padded_size(size)``, the function is monotonic and idempotent, and above 541
    the overhead is strictly below 5 % (``floor(1.05 ** k) <= 1.05 ** k < 1.05 * size``,
    because ``1.05 ** (k - 1) < size``). Defined for arbitrarily large integers; a result of
    ``2 ** 64`` or more cannot be described by an :class:`AttachmentPointer`.

    Double-precision evaluations of the formula (Signal's clients) agree with this one at
    every bucket boundary below 3 * 10 ** 11 bytes and drift above; this one is the reference.
    """
    if size < 0:
        raise ValueError("size must be >= 0")
    if size <= MIN_PADDED_SIZE:
        return MIN_PADDED_SIZE
    # A floating-point estimate of k, then exact correction in either direction.
    k = max(0, math.ceil(math.log(size) / math.log(1.05)))
    while not _bucket_reaches(k, size):
        k += 1
    while k > 0 and _bucket_reaches(k - 1, size):
        k -= 1
    return max(MIN_PADDED_SIZE, int(21**k) // int(20**k))


@dataclass(frozen=True, slots=True)
class AttachmentPointer:
    """What a message carries so the recipient can fetch, verify and decrypt an attachment.

    ``size`` is the file's size in bytes; ``digest`` is SHA-256 of the whole blob;
    ``blob_id`` is the relay's identifier of the uploaded blob (empty if not yet uploaded);
    ``padding`` is the number of zero bytes encrypted after the file (0: not padded). The blob
    decrypts to ``size + padding`` bytes, of which only the first ``size`` are the file.
    """

    key: bytes = field(repr=False)
    digest: bytes
    size: int
    chunk_size: int
    content_type: str
    file_name: str
    blob_id: str = ""
    padding: int = 0

    def __post_init__(self) -> None:
        if len(self.key) != KEY_SIZE or len(self.digest) != DIGEST_SIZE:
            raise ValueError("attachment key and digest must be 32 bytes each")
        if not 0 <= self.size < 2**64:
            raise ValueError("size out of range")
        if not 0 <= self.padding < 2**64 - self.size:
            raise ValueError("padding out of range (size + padding must be below 2**64)")
        _check_chunk_size(self.chunk_size)
        for name, value, limit in (
            ("content_type", self.content_type, MAX_CONTENT_TYPE),
            ("file_name", self.file_name, MAX_FILE_NAME),
            ("blob_id", self.blob_id, MAX_BLOB_ID),
        ):
            if len(value.encode("utf-8")) > limit:
                raise ValueError(f"{name} longer than {limit} bytes")

    @property
    def padded_size(self) -> int:
        """The plaintext length of the blob: ``size + padding``."""
        return self.size + self.padding

    @property
    def ciphertext_size(self) -> int:
        """The exact size of the blob this pointer describes (padding included)."""
        return ciphertext_size(self.padded_size, self.chunk_size)

    def with_blob_id(self, blob_id: str) -> AttachmentPointer:
        """Return a copy naming the relay's blob id (known after the upload)."""
        return dataclasses.replace(self, blob_id=blob_id)

    def to_bytes(self) -> bytes:
        """Encode; version 1 without padding, version 2 (with ``u64 padding``) with padding::

            v1 = u8 1 || key[32] || digest[32] || u64 size || u32 chunk_size
                 || str16 content_type || str16 file_name || str16 blob_id
            v2 = u8 2 || key[32] || digest[32] || u64 size || u64 padding (>= 1)
                 || u32 chunk_size || str16 content_type || str16 file_name || str16 blob_id

        Each pointer has exactly one encoding (a pointer without padding is always v1).
        """
        w = Writer()
        if self.padding:
            w.u8(PADDED_POINTER_VERSION).raw(self.key).raw(self.digest).u64(self.size)
            w.u64(self.padding)
        else:
            w.u8(POINTER_VERSION).raw(self.key).raw(self.digest).u64(self.size)
        return (
            w.u32(self.chunk_size)
            .str16(self.content_type)
            .str16(self.file_name)
            .str16(self.blob_id)
            .finish()
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> AttachmentPointer:
        """Decode :meth:`to_bytes` output (v1 or v2); raises only
        :class:`~crypto.errors.DecodeError`. A v1 pointer decodes with ``padding == 0``."""
        r = Reader(data)
        version = r.u8()
        if version not in (POINTER_VERSION, PADDED_POINTER_VERSION):
            raise UnsupportedVersion(PADDED_POINTER_VERSION, version)
        key = r.raw(KEY_SIZE)
        digest = r.raw(DIGEST_SIZE)
        size = r.u64()
        padding = 0
        if version == PADDED_POINTER_VERSION:
            padding = r.u64()
            if padding == 0:
                raise InvalidValue("padding", "a v2 pointer has padding >= 1 (else it is v1)")
            if padding >= 2**64 - size:
                raise InvalidValue("padding", "size + padding must be below 2**64")
        chunk_size = r.u32()
        _check_chunk_size(chunk_size)
        content_type = r.str16("content_type", MAX_CONTENT_TYPE)
        file_name = r.str16("file_name", MAX_FILE_NAME)
        blob_id = r.str16("blob_id", MAX_BLOB_ID)
        r.end()
        return cls(key, digest, size, chunk_size, content_type, file_name, blob_id, padding)


class AttachmentEncryptor:
    """Push-style encryptor: :meth:`feed` the file, optionally :meth:`pad`, then :meth:`finish`.

    The concatenation of everything returned (header first) is the blob. ``key``, ``digest``,
    ``size`` and ``padding`` describe it; ``digest`` is available after :meth:`finish`.
    """

    __slots__ = (
        "_buffer",
        "_chunk_size",
        "_digest",
        "_hash",
        "_header",
        "_header_sent",
        "_index",
        "_key",
        "_padding",
        "_size",
    )

    def __init__(
        self, *, chunk_size: int = DEFAULT_CHUNK_SIZE, rng: Rng = primitives.random_bytes
    ) -> None:
        _check_chunk_size(chunk_size)
        self._key = rng(KEY_SIZE)
        if len(self._key) != KEY_SIZE:
            raise ValueError("rng returned the wrong number of bytes")
        self._chunk_size = chunk_size
        self._header = _header(chunk_size)
        self._header_sent = False
        self._buffer = bytearray()
        self._index = 0
        self._size = 0
        self._padding = 0
        self._hash = hashlib.sha256()
        self._digest: bytes | None = None

    def __repr__(self) -> str:
        return (
            f"AttachmentEncryptor(chunk_size={self._chunk_size}, size={self._size}, "
            f"padding={self._padding})"
        )

    @property
    def key(self) -> bytes:
        """The fresh attachment key (secret)."""
        return self._key

    @property
    def chunk_size(self) -> int:
        """Plaintext bytes per chunk."""
        return self._chunk_size

    @property
    def size(self) -> int:
        """File bytes fed so far (padding not included)."""
        return self._size

    @property
    def padding(self) -> int:
        """Zero bytes of padding appended so far."""
        return self._padding

    @property
    def digest(self) -> bytes:
        """SHA-256 of the whole blob; only after :meth:`finish`."""
        if self._digest is None:
            raise StateError("the attachment digest is known only after finish()")
        return self._digest

    def _emit(self, out: bytearray, data: bytes) -> None:
        self._hash.update(data)
        out += data

    def _chunk(self, out: bytearray, plaintext: bytes, final: bool) -> None:
        nonce = _nonce(self._index, final)
        self._emit(out, primitives.aes256gcm_encrypt(self._key, nonce, plaintext, self._header))
        self._index += 1

    def _absorb(self, data: bytes) -> bytes:
        out = bytearray()
        if not self._header_sent:
            self._emit(out, self._header)
            self._header_sent = True
        self._buffer += data
        # Keep at least one byte back: only finish() knows which chunk is the final one.
        n, start = self._chunk_size, 0
        while len(self._buffer) - start > n:
            self._chunk(out, bytes(self._buffer[start : start + n]), final=False)
            start += n
        del self._buffer[:start]
        return bytes(out)

    def feed(self, data: bytes) -> bytes:
        """Add file bytes; return the ciphertext that is ready (possibly ``b""``)."""
        if self._digest is not None:
            raise StateError("feed() after finish()")
        if data and self._padding:
            raise StateError("feed() after pad(): padding comes after the whole file")
        self._size += len(data)
        return self._absorb(data)

    def pad(self, count: int) -> bytes:
        """Append ``count`` zero bytes of padding after the file; return ready ciphertext.

        May be called repeatedly to stream a large padding in pieces; once padding has begun,
        :meth:`feed` refuses more file bytes. The pointer records the total padding.
        """
        if self._digest is not None:
            raise StateError("pad() after finish()")
        if count < 0:
            raise ValueError("padding count must be >= 0")
        self._padding += count
        return self._absorb(bytes(count))

    def finish(self, *, pad_to: int | None = None) -> bytes:
        """Encrypt the final chunk; return the last ciphertext bytes.

        With ``pad_to``, first pad with zeros so that ``size + padding == pad_to`` (e.g.
        ``pad_to=padded_size(encryptor.size)``); ``pad_to`` below ``size + padding`` is a
        ``ValueError``. For a large padding, stream it with :meth:`pad` instead.
        """
        if self._digest is not None:
            raise StateError("finish() called twice")
        out = bytearray(self._absorb(b""))
        if pad_to is not None:
            missing = pad_to - self._size - self._padding
            if missing < 0:
                raise ValueError(
                    f"pad_to={pad_to} is below the {self._size + self._padding} bytes encrypted"
                )
            out += self.pad(missing)
        self._chunk(out, bytes(self._buffer), final=True)
        self._buffer.clear()
        self._digest = self._hash.digest()
        return bytes(out)

    def pointer(self, *, content_type: str, file_name: str, blob_id: str = "") -> AttachmentPointer:
        """Return the :class:`AttachmentPointer` for the finished blob (padding included)."""
        return AttachmentPointer(
            self._key,
            self.digest,
            self._size,
            self._chunk_size,
            content_type,
            file_name,
            blob_id,
            self._padding,
        )


class AttachmentDecryptor:
    """Push-style decryptor that authenticates every chunk as it streams.

    If ``digest`` / ``size`` / ``chunk_size`` are given (see :meth:`for_pointer`) they are
    checked too: size as soon as it is exceeded, digest and size at :meth:`finish`. With
    ``padding`` (which needs ``size``), the blob must decrypt to ``size + padding`` bytes;
    only the first ``size`` are released and the rest must all be zero, else
    :class:`~crypto.errors.AttachmentMismatch` ``("padding")`` is raised and nothing of that
    feed is released. Without ``size`` every decrypted byte is released (padding included).
    After any failure the decryptor is poisoned and every further call raises
    :class:`~crypto.errors.StateError`.
    """

    __slots__ = (
        "_buffer",
        "_chunk_size",
        "_done",
        "_expected_chunk_size",
        "_expected_digest",
        "_expected_size",
        "_expected_total",
        "_failed",
        "_hash",
        "_header",
        "_index",
        "_key",
        "_opened",
        "_size",
    )

    def __init__(
        self,
        key: bytes,
        *,
        digest: bytes | None = None,
        size: int | None = None,
        chunk_size: int | None = None,
        padding: int = 0,
    ) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError("attachment key must be 32 bytes")
        if padding < 0:
            raise ValueError("padding must be >= 0")
        if padding and size is None:
            raise ValueError("padding can only be stripped with a known size")
        self._key = bytes(key)
        self._expected_digest = digest
        self._expected_size = size
        self._expected_total = None if size is None else size + padding
        self._expected_chunk_size = chunk_size
        self._buffer = bytearray()
        self._header: bytes | None = None
        self._chunk_size = 0
        self._index = 0
        self._opened = 0
        self._size = 0
        self._hash = hashlib.sha256()
        self._failed = False
        self._done = False

    @classmethod
    def for_pointer(cls, pointer: AttachmentPointer) -> AttachmentDecryptor:
        """A decryptor that checks the pointer's digest, size, chunk size and padding, and
        releases only the file's ``size`` bytes."""
        return cls(
            pointer.key,
            digest=pointer.digest,
            size=pointer.size,
            chunk_size=pointer.chunk_size,
            padding=pointer.padding,
        )

    def __repr__(self) -> str:
        return f"AttachmentDecryptor(chunk_index={self._index}, size={self._size})"

    @property
    def size(self) -> int:
        """Plaintext bytes released so far (never padding)."""
        return self._size

    def _check_usable(self) -> None:
        if self._failed:
            raise StateError("the decryptor failed earlier; start again")
        if self._done:
            raise StateError("the decryptor already finished")

    def _parse_header(self) -> None:
        if self._header is not None or len(self._buffer) < HEADER_SIZE:
            return
        header = bytes(self._buffer[:HEADER_SIZE])
        r = Reader(header)
        version = r.u8()
        if version != FORMAT_VERSION:
            raise UnsupportedVersion(FORMAT_VERSION, version)
        chunk_size = r.u32()
        _check_chunk_size(chunk_size)
        if self._expected_chunk_size is not None and chunk_size != self._expected_chunk_size:
            raise AttachmentMismatch("chunk_size")
        self._header = header
        self._chunk_size = chunk_size
        del self._buffer[:HEADER_SIZE]

    def _open(self, ciphertext: bytes, final: bool) -> bytes:
        assert self._header is not None
        plaintext = primitives.aes256gcm_decrypt(
            self._key, _nonce(self._index, final), ciphertext, self._header
        )
        self._index += 1
        start = self._opened
        self._opened += len(plaintext)
        if self._expected_total is not None and self._opened > self._expected_total:
            raise AttachmentMismatch("size")
        if self._expected_size is not None and self._opened > self._expected_size:
            # Only reachable with padding: the tail of this chunk is padding, never released.
            keep = max(0, self._expected_size - start)
            tail = plaintext[keep:]
            if tail.count(0) != len(tail):
                raise AttachmentMismatch("padding")
            plaintext = plaintext[:keep]
        self._size += len(plaintext)
        return plaintext

    def feed(self, data: bytes) -> bytes:
        """Add blob bytes; return the file bytes of every chunk now known to be non-final."""
        self._check_usable()
        try:
            self._hash.update(data)
            self._buffer += data
            self._parse_header()
            if self._header is None:
                return b""
            out = bytearray()
            n, start = self._chunk_size + TAG_SIZE, 0
            while len(self._buffer) - start > n:
                out += self._open(bytes(self._buffer[start : start + n]), final=False)
                start += n
            del self._buffer[:start]
            return bytes(out)
        except BaseException:
            self._failed = True
            raise

    def finish(self) -> bytes:
        """Authenticate the final chunk and the digest/size; return the last file bytes."""
        self._check_usable()
        try:
            if self._header is None:
                raise Truncated(HEADER_SIZE, len(self._buffer))
            if len(self._buffer) < TAG_SIZE:
                raise Truncated(TAG_SIZE, len(self._buffer))
            out = self._open(bytes(self._buffer), final=True)
            self._buffer.clear()
            if self._expected_total is not None and self._opened != self._expected_total:
                raise AttachmentMismatch("size")
            if self._expected_digest is not None and not hmac.compare_digest(
                self._hash.digest(), self._expected_digest
            ):
                raise AttachmentMismatch("digest")
            self._done = True
            return out
        except BaseException:
            self._failed = True
            raise


def _pieces(source: Readable | Iterable[bytes], n: int) -> Iterator[bytes]:
    if isinstance(source, Readable):
        while piece := source.read(n):
            yield piece
    else:
        yield from source


def encrypt_stream(
    source: Readable | Iterable[bytes], encryptor: AttachmentEncryptor, *, padded: bool = False
) -> Iterator[bytes]:
    """Yield the blob (header, then ciphertext) for everything read from ``source``.

    With ``padded=True`` the file is followed by zero bytes up to
    ``padded_size(encryptor.size)`` (streamed in pieces). After the iterator is exhausted,
    ``encryptor.digest`` and :meth:`~AttachmentEncryptor.pointer` are available.
    """
    for piece in _pieces(source, encryptor.chunk_size):
        out = encryptor.feed(piece)
        if out:
            yield out
    if padded:
        target = padded_size(encryptor.size)
        step = max(encryptor.chunk_size, DEFAULT_CHUNK_SIZE)
        while (missing := target - encryptor.size - encryptor.padding) > 0:
            out = encryptor.pad(min(missing, step))
            if out:
                yield out
    yield encryptor.finish()


def decrypt_stream(
    source: Readable | Iterable[bytes], decryptor: AttachmentDecryptor
) -> Iterator[bytes]:
    """Yield verified plaintext from a blob read from ``source``; raise on any failure.

    The last piece is yielded only after the final chunk and the digest verified; callers
    must treat earlier output as provisional until the iterator is exhausted without error.
    """
    for piece in _pieces(source, DEFAULT_CHUNK_SIZE + TAG_SIZE):
        out = decryptor.feed(piece)
        if out:
            yield out
    last = decryptor.finish()
    if last:
        yield last
