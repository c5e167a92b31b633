from __future__ import annotations

import contextlib
import hashlib
import io
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.attachments import (
    DEFAULT_CHUNK_SIZE,
    HEADER_SIZE,
    MAX_CHUNK_SIZE,
    TAG_SIZE,
    AttachmentDecryptor,
    AttachmentEncryptor,
    AttachmentPointer,
    ciphertext_size,
    decrypt_stream,
    encrypt_stream,
)
from crypto.errors import (
    AttachmentMismatch,
    AuthenticationFailed,
    DecodeError,
    DecryptionError,
    FieldTooLarge,
    InvalidValue,
    StateError,
    Truncated,
    UnsupportedVersion,
)
from crypto.primitives import DeterministicRng

CHUNK = 64  # small chunks keep the structural tests fast; the default is exercised too


def encrypt(
    data: bytes, chunk_size: int = CHUNK, seed: bytes = b"att"
) -> tuple[bytes, AttachmentPointer]:
    enc = AttachmentEncryptor(chunk_size=chunk_size, rng=DeterministicRng(seed))
    blob = b"".join(encrypt_stream(io.BytesIO(data), enc))
    return blob, enc.pointer(content_type="application/octet-stream", file_name="f.bin")


def decrypt(blob: bytes, pointer: AttachmentPointer, piece: int = 1000) -> bytes:
    dec = AttachmentDecryptor.for_pointer(pointer)
    pieces = [blob[i : i + piece] for i in range(0, len(blob), piece)]
    return b"".join(decrypt_stream(pieces, dec))


def chunks_of(blob: bytes, chunk_size: int = CHUNK) -> tuple[bytes, list[bytes]]:
    n = chunk_size + TAG_SIZE
    body = blob[HEADER_SIZE:]
    return blob[:HEADER_SIZE], [body[i : i + n] for i in range(0, len(body), n)]


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 5])
def test_round_trip_at_chunk_boundaries(size: int) -> None:
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    blob, pointer = encrypt(data)
    assert len(blob) == ciphertext_size(size, CHUNK) == pointer.ciphertext_size
    assert pointer.digest == hashlib.sha256(blob).digest()
    assert pointer.size == size
    for piece in (1, 7, CHUNK + TAG_SIZE, 10_000):
        assert decrypt(blob, pointer, piece) == data


def test_round_trip_with_the_default_chunk_size_and_a_readable_source() -> None:
    data = DeterministicRng(b"payload")(3 * DEFAULT_CHUNK_SIZE + 1234)
    blob, pointer = encrypt(data, chunk_size=DEFAULT_CHUNK_SIZE)
    assert pointer.chunk_size == DEFAULT_CHUNK_SIZE
    assert decrypt(blob, pointer, piece=DEFAULT_CHUNK_SIZE - 3) == data
    assert b"".join(decrypt_stream(io.BytesIO(blob), AttachmentDecryptor(pointer.key))) == data


def test_encryptor_accepts_an_iterable_of_pieces_of_any_size() -> None:
    data = b"0123456789" * 50
    enc = AttachmentEncryptor(chunk_size=CHUNK, rng=DeterministicRng(b"att"))
    blob = b"".join(encrypt_stream([b"", data[:3], data[3:200], b"", data[200:]], enc))
    assert blob == encrypt(data)[0]


def test_reordered_chunks_fail() -> None:
    blob, pointer = encrypt(b"x" * (3 * CHUNK + 1))
    header, chunks = chunks_of(blob)
    swapped = header + chunks[1] + chunks[0] + b"".join(chunks[2:])
    with pytest.raises(AuthenticationFailed):
        decrypt(swapped, replace(pointer, digest=_sha(swapped)))


def test_truncation_at_a_chunk_boundary_fails() -> None:
    blob, pointer = encrypt(b"x" * (3 * CHUNK + 1))
    header, chunks = chunks_of(blob)
    truncated = header + b"".join(chunks[:-1])
    with pytest.raises(AuthenticationFailed):
        b"".join(decrypt_stream([truncated], AttachmentDecryptor(pointer.key)))
    with pytest.raises(Truncated):
        b"".join(decrypt_stream([header], AttachmentDecryptor(pointer.key)))
    with pytest.raises(Truncated):
        b"".join(decrypt_stream([header[:3]], AttachmentDecryptor(pointer.key)))
    with pytest.raises(Truncated):
        b"".join(decrypt_stream([blob[: HEADER_SIZE + 5]], AttachmentDecryptor(pointer.key)))


def test_extension_fails() -> None:
    blob, pointer = encrypt(b"x" * (2 * CHUNK))
    _, chunks = chunks_of(blob)
    for extended in (blob + chunks[0], blob + b"\x00", blob + blob[HEADER_SIZE:]):
        with pytest.raises(AuthenticationFailed):
            b"".join(decrypt_stream([extended], AttachmentDecryptor(pointer.key)))
    # Appending a chunk of *another* attachment under another key fails too.
    other, _ = encrypt(b"y" * CHUNK, seed=b"other")
    with pytest.raises(AuthenticationFailed):
        b"".join(decrypt_stream([blob + chunks_of(other)[1][0]], AttachmentDecryptor(pointer.key)))


def test_changing_the_chunk_size_in_the_header_fails() -> None:
    blob, pointer = encrypt(b"x" * (2 * CHUNK))
    forged = b"\x01" + (CHUNK * 2).to_bytes(4, "big") + blob[HEADER_SIZE:]
    with pytest.raises(AuthenticationFailed):
        b"".join(decrypt_stream([forged], AttachmentDecryptor(pointer.key)))
    with pytest.raises(AttachmentMismatch):
        decrypt(forged, pointer)


def test_flipping_any_bit_fails() -> None:
    blob, pointer = encrypt(b"attachment bytes" * 9)
    for i in range(len(blob) * 8):
        flipped = bytearray(blob)
        flipped[i // 8] ^= 1 << (i % 8)
        with pytest.raises((DecryptionError, DecodeError)):
            b"".join(decrypt_stream([bytes(flipped)], AttachmentDecryptor(pointer.key)))


def test_digest_and_size_are_checked_against_the_pointer() -> None:
    blob, pointer = encrypt(b"z" * 100)
    wrong_digest = replace(pointer, digest=bytes(32))
    with pytest.raises(AttachmentMismatch) as info:
        decrypt(blob, wrong_digest)
    assert info.value.field == "digest"
    smaller = replace(pointer, size=99)
    with pytest.raises(AttachmentMismatch):
        decrypt(blob, smaller)
    larger = replace(pointer, size=101)
    with pytest.raises(AttachmentMismatch):
        decrypt(blob, larger)
    with pytest.raises(AuthenticationFailed):
        decrypt(blob, replace(pointer, key=bytes(32)))


def test_a_failed_decryptor_refuses_further_use() -> None:
    blob, pointer = encrypt(b"z" * 300)
    dec = AttachmentDecryptor(pointer.key)
    bad = bytearray(blob)
    bad[HEADER_SIZE + 2] ^= 1
    with pytest.raises(AuthenticationFailed):
        dec.feed(bytes(bad))
    with pytest.raises(StateError):
        dec.feed(b"")
    enc = AttachmentEncryptor(chunk_size=CHUNK)
    with pytest.raises(StateError):
        _ = enc.digest
    enc.finish()
    with pytest.raises(StateError):
        enc.feed(b"more")


def test_each_attachment_gets_a_fresh_key() -> None:
    a = AttachmentEncryptor()
    b = AttachmentEncryptor()
    assert a.key != b.key and len(a.key) == 32


def test_header_with_unknown_version_or_bad_chunk_size_is_rejected() -> None:
    blob, pointer = encrypt(b"abc")
    with pytest.raises(UnsupportedVersion):
        AttachmentDecryptor(pointer.key).feed(b"\x02" + blob[1:])
    with pytest.raises(FieldTooLarge):
        AttachmentDecryptor(pointer.key).feed(b"\x01" + (MAX_CHUNK_SIZE + 1).to_bytes(4, "big"))
    with pytest.raises(InvalidValue):
        AttachmentDecryptor(pointer.key).feed(b"\x01\x00\x00\x00\x00")


def test_pointer_round_trips_and_hides_the_key() -> None:
    _, pointer = encrypt(b"hello")
    pointer = pointer.with_blob_id("blob-42")
    data = pointer.to_bytes()
    assert AttachmentPointer.from_bytes(data) == pointer
    assert data[0] == 1 and data[1:33] == pointer.key
    assert pointer.key.hex() not in repr(pointer)
    enc = AttachmentEncryptor(rng=DeterministicRng(b"k"))
    assert enc.key.hex() not in repr(enc)
    assert pointer.key.hex() not in repr(AttachmentDecryptor.for_pointer(pointer))
    with pytest.raises(ValueError):
        replace(pointer, file_name="x" * 256)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_pointer_decoder_raises_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        AttachmentPointer.from_bytes(data)


@settings(max_examples=100)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=64))
def test_decryptor_raises_only_vox_errors_on_arbitrary_blobs(data: bytes, piece: int) -> None:
    dec = AttachmentDecryptor(bytes(32))
    with contextlib.suppress(DecodeError, DecryptionError):
        for i in range(0, len(data), piece):
            dec.feed(data[i : i + piece])
        dec.finish()


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
