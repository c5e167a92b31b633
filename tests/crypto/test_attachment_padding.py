"""Attachment padding: Signal's size buckets (``padded_size``), padded blobs, the version 2
pointer, and the decryptor's refusal to release padding or to accept non-zero padding."""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import struct
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.attachments import (
    DEFAULT_CHUNK_SIZE,
    MIN_PADDED_SIZE,
    TAG_SIZE,
    AttachmentDecryptor,
    AttachmentEncryptor,
    AttachmentPointer,
    ciphertext_size,
    decrypt_stream,
    encrypt_stream,
    padded_size,
)
from crypto.errors import (
    AttachmentMismatch,
    DecodeError,
    InvalidValue,
    StateError,
    Truncated,
    UnsupportedVersion,
)
from crypto.primitives import DeterministicRng

CHUNK = 64


def bucket(k: int) -> int:
    """``floor(1.05 ** k)``, exactly."""
    return int(21**k) // int(20**k)


def signal_float(size: int) -> int:
    """Signal's formula in double precision (as its clients evaluate it)."""
    return max(541, math.floor(1.05 ** math.ceil(math.log(size, 1.05))))


def data_of(size: int) -> bytes:
    return (bytes(range(1, 256)) * (size // 255 + 1))[:size]  # no zero bytes: padding stands out


def encrypt_padded(
    data: bytes, chunk_size: int = CHUNK, seed: bytes = b"pad"
) -> tuple[bytes, AttachmentPointer]:
    enc = AttachmentEncryptor(chunk_size=chunk_size, rng=DeterministicRng(seed))
    blob = b"".join(encrypt_stream(io.BytesIO(data), enc, padded=True))
    return blob, enc.pointer(content_type="application/octet-stream", file_name="f.bin")


def decrypt_in_pieces(blob: bytes, pointer: AttachmentPointer, piece: int) -> list[bytes]:
    dec = AttachmentDecryptor.for_pointer(pointer)
    return list(decrypt_stream([blob[i : i + piece] for i in range(0, len(blob), piece)], dec))


# --- the bucket function -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, 541),
        (1, 541),
        (2, 541),
        (540, 541),
        (541, 541),
        (542, 568),
        (568, 568),
        (569, 596),
        (1_000, 1_020),
        (1_010, 1_020),
        (65_536, 67_789),
        (10 * 1024 * 1024, 10_835_458),
    ],
)
def test_padded_size_known_values(size: int, expected: int) -> None:
    assert padded_size(size) == expected


def test_the_floor_541_is_itself_signals_bucket_129() -> None:
    assert MIN_PADDED_SIZE == bucket(129) == 541 and bucket(128) < 541


def test_padded_size_refuses_negative_sizes() -> None:
    with pytest.raises(ValueError):
        padded_size(-1)


def test_padded_size_is_monotonic_and_bounded_on_every_size_up_to_100k() -> None:
    previous = 0
    for size in range(100_000):
        p = padded_size(size)
        assert p >= previous and p >= size and p >= 541
        if size > 541:
            assert 20 * p < 21 * size  # strictly under 5 % overhead
        previous = p


def test_padded_size_agrees_with_signals_float_formula_where_doubles_are_exact_enough() -> None:
    for size in range(1, 50_000):
        assert padded_size(size) == signal_float(size), size
    # Every bucket boundary (and its neighbours) below 2**38.
    k = 130
    while bucket(k) < 2**38:
        for size in (bucket(k) - 1, bucket(k), bucket(k) + 1):
            assert padded_size(size) == signal_float(size), size
        k += 1


def test_padded_size_is_exact_where_doubles_drift() -> None:
    # The first boundary where doubles disagree: floor(1.05 ** 543) in doubles is one too high.
    b = bucket(542)
    assert padded_size(b) == b and padded_size(b + 1) == bucket(543) == 320_471_486_605
    assert signal_float(b + 1) == bucket(543) + 1


def test_padded_size_of_huge_sizes_is_well_defined() -> None:
    assert padded_size(2**64 - 1) > 2**64 - 1
    assert padded_size(10**30) == bucket(padded_size_exponent(10**30))
    huge = 2**200 + 12345
    p = padded_size(huge)
    assert huge <= p and 20 * p < 21 * huge and padded_size(p) == p


def padded_size_exponent(size: int) -> int:
    k = 0
    while int(21**k) < size * int(20**k):
        k += 1
    return k


@settings(max_examples=400)
@given(st.integers(min_value=0, max_value=2**80), st.integers(min_value=0, max_value=2**80))
def test_padded_size_properties(a: int, b: int) -> None:
    pa, pb = padded_size(a), padded_size(b)
    assert pa >= a and pa >= MIN_PADDED_SIZE
    assert (a <= b) <= (pa <= pb)  # monotonic
    assert padded_size(pa) == pa  # idempotent: a bucket pads to itself
    assert pa == MIN_PADDED_SIZE or pa == bucket(padded_size_exponent(pa))
    if a > MIN_PADDED_SIZE:
        assert 20 * pa < 21 * a  # < 5 % overhead
    else:
        assert pa == MIN_PADDED_SIZE


def test_same_bucket_gives_the_same_blob_size() -> None:
    assert padded_size(1_000) == padded_size(1_010)
    assert ciphertext_size(padded_size(1_000)) == ciphertext_size(padded_size(1_010)) == 1_041


# --- padded blobs ----------------------------------------------------------------------------


def _edge_sizes() -> list[tuple[int, int]]:
    """(size, chunk_size): empty, tiny, chunk boundaries, padding crossing chunk boundaries,
    padded length exactly a chunk multiple, file ending exactly on a chunk boundary."""
    cases = [(n, CHUNK) for n in (0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 540, 541, 542, 569, 570)]
    cases += [(n, 541) for n in (0, 1, 540, 541, 542)]  # 541 = exactly one chunk
    cases += [(n, 71) for n in (497, 498, 542, 567, 568)]  # 568 = 8 × 71; 497 = 7 × 71
    cases += [(n, 16) for n in (0, 600, 1_000)]  # the smallest chunk size
    d = DEFAULT_CHUNK_SIZE
    cases += [(n, d) for n in (d - 10, d, d + 1, 2 * d - 3_000)]  # padding spills into chunk 2
    return cases


@pytest.mark.parametrize(("size", "chunk_size"), _edge_sizes())
def test_padded_round_trip_at_edge_sizes(size: int, chunk_size: int) -> None:
    data = data_of(size)
    blob, pointer = encrypt_padded(data, chunk_size)
    target = padded_size(size)
    assert (pointer.size, pointer.padding, pointer.padded_size) == (size, target - size, target)
    assert len(blob) == pointer.ciphertext_size == ciphertext_size(target, chunk_size)
    assert pointer.digest == hashlib.sha256(blob).digest()
    for piece in (1, 7, chunk_size + TAG_SIZE, len(blob)):
        released = 0
        out = []
        dec = AttachmentDecryptor.for_pointer(pointer)
        for i in range(0, len(blob), piece):
            got = dec.feed(blob[i : i + piece])
            released += len(got)
            assert released <= size  # padding is never released, not even provisionally
            out.append(got)
        out.append(dec.finish())
        assert b"".join(out) == data and dec.size == size
    # Without the pointer's size the raw plaintext (padding included) comes out.
    raw = b"".join(decrypt_stream([blob], AttachmentDecryptor(pointer.key)))
    assert raw == data + bytes(target - size)


def test_padding_crosses_chunk_boundaries_in_the_test_cases() -> None:
    crossing = [
        (n, c) for n, c in _edge_sizes() if n // c != (padded_size(n) - 1) // c and n % c != 0
    ]
    assert len(crossing) >= 5


@settings(max_examples=150, deadline=None)
@given(
    st.binary(max_size=3_000),
    st.integers(min_value=16, max_value=400),
    st.integers(min_value=1, max_value=700),
)
def test_padded_round_trip_property(data: bytes, chunk_size: int, piece: int) -> None:
    blob, pointer = encrypt_padded(data, chunk_size)
    assert len(blob) == ciphertext_size(padded_size(len(data)), chunk_size)
    assert b"".join(decrypt_in_pieces(blob, pointer, piece)) == data


def test_streamed_padding_and_finish_pad_to_and_encrypt_stream_agree() -> None:
    data = data_of(1_234)
    target = padded_size(len(data))
    a = AttachmentEncryptor(chunk_size=CHUNK, rng=DeterministicRng(b"same"))
    blob_a = a.feed(data) + a.finish(pad_to=target)
    b = AttachmentEncryptor(chunk_size=CHUNK, rng=DeterministicRng(b"same"))
    blob_b = b.feed(data[:500]) + b.feed(data[500:])
    for _ in range(target - len(data)):
        blob_b += b.pad(1)
    blob_b += b.finish()
    blob_c, pointer_c = encrypt_padded(data, seed=b"same")
    assert blob_a == blob_b == blob_c
    assert a.pointer(content_type="x", file_name="y") == b.pointer(content_type="x", file_name="y")
    assert (a.size, a.padding) == (1_234, target - 1_234) == (pointer_c.size, pointer_c.padding)


def test_encryptor_padding_api_misuse() -> None:
    enc = AttachmentEncryptor(chunk_size=CHUNK)
    enc.feed(b"abc")
    with pytest.raises(ValueError):
        enc.pad(-1)
    enc.pad(0)
    enc.feed(b"def")  # no padding yet: still fine
    enc.pad(5)
    with pytest.raises(StateError):
        enc.feed(b"more file after padding")
    enc.feed(b"")  # nothing: harmless
    with pytest.raises(ValueError):
        enc.finish(pad_to=10)  # below the 11 bytes already encrypted
    enc2 = AttachmentEncryptor(chunk_size=CHUNK)
    enc2.finish(pad_to=0)
    with pytest.raises(StateError):
        enc2.pad(1)
    with pytest.raises(StateError):
        enc2.finish()


def test_finish_pad_to_the_exact_size_means_no_padding_and_a_v1_pointer() -> None:
    data = data_of(541)  # already a bucket
    blob, pointer = encrypt_padded(data)
    assert pointer.padding == 0 and pointer.to_bytes()[0] == 1
    unpadded = AttachmentEncryptor(chunk_size=CHUNK, rng=DeterministicRng(b"pad"))
    assert blob == unpadded.feed(data) + unpadded.finish()


# --- tampered padding ----------------------------------------------------------------------


def forge(data: bytes, padding: bytes, chunk_size: int = CHUNK) -> tuple[bytes, AttachmentPointer]:
    """A correctly encrypted blob of ``data || padding`` whose (correct-digest) pointer says
    ``size = len(data)`` and ``padding = len(padding)``: what a malicious sender could make."""
    enc = AttachmentEncryptor(chunk_size=chunk_size, rng=DeterministicRng(b"forged"))
    blob = enc.feed(data + padding) + enc.finish()
    pointer = AttachmentPointer(
        enc.key,
        enc.digest,
        len(data),
        chunk_size,
        "application/octet-stream",
        "f.bin",
        padding=len(padding),
    )
    return blob, pointer


@pytest.mark.parametrize(
    ("size", "bad_at"),
    [
        (0, 0),  # the very first plaintext byte is (bad) padding
        (100, 0),  # first padding byte, in the chunk that also holds the file's end
        (100, 27),  # last padding byte of that chunk (100 + 27 = 127, chunk 1 ends at 128)
        (100, 28),  # first byte of the next chunk
        (100, 440),  # last padding byte (541 - 100 - 1), in the final chunk
        (128, 0),  # file ends on a chunk boundary; padding starts a chunk
    ],
)
@pytest.mark.parametrize("piece", [1, 50, CHUNK + TAG_SIZE, 10_000])
def test_non_zero_padding_fails_and_nothing_of_it_is_released(
    size: int, bad_at: int, piece: int
) -> None:
    data = data_of(size)
    padding = bytearray(padded_size(size) - size)
    padding[bad_at] = 0x01
    blob, pointer = forge(data, bytes(padding))
    dec = AttachmentDecryptor.for_pointer(pointer)
    released = b""
    with pytest.raises(AttachmentMismatch) as info:
        for i in range(0, len(blob), piece):
            released += dec.feed(blob[i : i + piece])
        released += dec.finish()
    assert info.value.field == "padding"
    assert data.startswith(released)  # only file bytes, never a padding byte
    # The chunk holding the bad byte released nothing: everything released precedes it.
    bad_chunk_start = (size + bad_at) // CHUNK * CHUNK
    assert len(released) <= min(size, bad_chunk_start)
    with pytest.raises(StateError):
        dec.feed(b"")


def test_non_zero_padding_fails_in_decrypt_stream_too() -> None:
    blob, pointer = forge(b"file", b"\x00" * 536 + b"\x80")
    with pytest.raises(AttachmentMismatch, match="padding"):
        b"".join(decrypt_stream([blob], AttachmentDecryptor.for_pointer(pointer)))


def test_padding_length_must_match_the_pointer() -> None:
    data = data_of(300)
    blob, pointer = encrypt_padded(data)
    for padding in (pointer.padding - 1, pointer.padding + 1, 0):
        wrong = replace(pointer, padding=padding)
        with pytest.raises(AttachmentMismatch) as info:
            b"".join(decrypt_stream([blob], AttachmentDecryptor.for_pointer(wrong)))
        assert info.value.field == "size"
    # A pointer that calls the whole padded plaintext the file releases the zeros as data.
    whole = replace(pointer, size=pointer.padded_size, padding=0)
    assert b"".join(decrypt_stream([blob], AttachmentDecryptor.for_pointer(whole))) == (
        data + bytes(pointer.padding)
    )


def test_decryptor_padding_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        AttachmentDecryptor(bytes(32), padding=5)  # padding needs a size to strip it
    with pytest.raises(ValueError):
        AttachmentDecryptor(bytes(32), size=1, padding=-1)


# --- the pointer -----------------------------------------------------------------------------


def test_unpadded_pointer_encodes_as_version_1_exactly_as_before() -> None:
    p = AttachmentPointer(b"k" * 32, b"d" * 32, 112, 64, "text/plain", "a.txt", "blob")
    expected = (
        b"\x01"
        + b"k" * 32
        + b"d" * 32
        + struct.pack(">QI", 112, 64)
        + b"\x00\x0atext/plain\x00\x05a.txt\x00\x04blob"
    )
    assert p.to_bytes() == expected
    decoded = AttachmentPointer.from_bytes(expected)
    assert decoded == p and decoded.padding == 0 and decoded.ciphertext_size == 5 + 112 + 32


def test_padded_pointer_encodes_as_version_2() -> None:
    p = AttachmentPointer(b"k" * 32, b"d" * 32, 315, 256, "text/plain", "a.txt", "", padding=226)
    data = p.to_bytes()
    expected = (
        b"\x02"
        + b"k" * 32
        + b"d" * 32
        + struct.pack(">QQI", 315, 226, 256)
        + b"\x00\x0atext/plain\x00\x05a.txt\x00\x00"
    )
    assert data == expected
    assert AttachmentPointer.from_bytes(data) == p
    assert p.padded_size == 541 and p.ciphertext_size == ciphertext_size(541, 256) == 594
    assert p.with_blob_id("b-1").padding == 226
    assert AttachmentPointer.from_bytes(p.with_blob_id("b-1").to_bytes()).blob_id == "b-1"


def test_v2_pointer_decoding_rules() -> None:
    base = AttachmentPointer(b"k" * 32, b"d" * 32, 10, 64, "t", "f", "", padding=531).to_bytes()
    zero_padding = base[:73] + bytes(8) + base[81:]
    with pytest.raises(InvalidValue):
        AttachmentPointer.from_bytes(zero_padding)  # non-canonical: must be v1
    overflow = base[:65] + struct.pack(">QQ", 2**63, 2**63) + base[81:]
    with pytest.raises(InvalidValue):
        AttachmentPointer.from_bytes(overflow)
    top = base[:65] + struct.pack(">QQ", 1, 2**64 - 2) + base[81:]
    assert AttachmentPointer.from_bytes(top).padded_size == 2**64 - 1
    with pytest.raises(UnsupportedVersion):
        AttachmentPointer.from_bytes(b"\x03" + base[1:])
    with pytest.raises(Truncated):
        AttachmentPointer.from_bytes(base[:78])
    # A v1 body read as v2 (or the reverse) does not decode.
    v1 = AttachmentPointer(b"k" * 32, b"d" * 32, 10, 64, "t", "f").to_bytes()
    with pytest.raises(DecodeError):
        AttachmentPointer.from_bytes(b"\x02" + v1[1:])
    with pytest.raises(DecodeError):
        AttachmentPointer.from_bytes(b"\x01" + base[1:])


def test_pointer_padding_range_is_checked_on_construction() -> None:
    base = AttachmentPointer(b"k" * 32, b"d" * 32, 10, 64, "t", "f")
    with pytest.raises(ValueError):
        replace(base, padding=-1)
    with pytest.raises(ValueError):
        replace(base, size=2**63, padding=2**63)
    replace(base, size=2**63, padding=2**63 - 1)


@settings(max_examples=200)
@given(
    st.integers(min_value=0, max_value=2**64 - 1),
    st.integers(min_value=0, max_value=2**64 - 1),
    st.integers(min_value=16, max_value=1024 * 1024),
    st.text(max_size=20),
)
def test_pointer_round_trips_with_any_padding(
    size: int, padding: int, chunk_size: int, name: str
) -> None:
    padding = min(padding, 2**64 - 1 - size)
    p = AttachmentPointer(b"k" * 32, b"d" * 32, size, chunk_size, "t", name, "", padding)
    data = p.to_bytes()
    assert data[0] == (2 if padding else 1)
    assert AttachmentPointer.from_bytes(data) == p


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_v2_pointer_decoder_raises_only_decode_error(tail: bytes) -> None:
    with contextlib.suppress(DecodeError):
        AttachmentPointer.from_bytes(b"\x02" + tail)
