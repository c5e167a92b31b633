from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crypto.encoding import Reader, Writer
from crypto.errors import (
    DecodeError,
    FieldTooLarge,
    InvalidValue,
    TrailingBytes,
    Truncated,
    UnsupportedVersion,
)


def test_writer_encodes_fields_big_endian_with_length_prefixes() -> None:
    data = Writer().u8(1).u16(0x0203).u32(4).u64(5).bytes16(b"ab").str16("é").finish()
    assert data == bytes.fromhex("010203000000040000000000000005000261620002c3a9")


def test_reader_decodes_what_writer_wrote() -> None:
    data = Writer().u8(1).u16(7).bytes32(b"payload").str16("bob").finish()
    r = Reader(data)
    assert r.version(1) == 1
    assert r.u16() == 7
    assert r.bytes32("payload") == b"payload"
    assert r.str16("name") == "bob"
    r.end()


def test_reader_rejects_wrong_version_truncation_trailing_and_oversize() -> None:
    with pytest.raises(UnsupportedVersion) as info:
        Reader(b"\x02").version(1)
    assert (info.value.expected, info.value.got) == (1, 2)
    with pytest.raises(Truncated):
        Reader(b"\x00\x05abc").bytes16("f")
    with pytest.raises(TrailingBytes):
        r = Reader(b"\x01\x00")
        r.u8()
        r.end()
    with pytest.raises(FieldTooLarge):
        Reader(b"\x00\x05abcde").bytes16("f", limit=4)
    with pytest.raises(InvalidValue):
        Reader(b"\x00\x02\xff\xfe").str16("name")
    with pytest.raises(InvalidValue):
        Reader(b"\x02").flag("flag")


@given(st.binary(max_size=64))
def test_reader_raises_only_decode_error_on_arbitrary_bytes(data: bytes) -> None:
    r = Reader(data)
    try:
        r.version(1)
        r.bytes16("a", limit=32)
        r.str16("b")
        r.bytes32("c", limit=16)
        r.end()
    except DecodeError:
        pass
