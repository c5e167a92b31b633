"""Files are streamed in the browser (``protocol-crypto-devices-groups-attachments.md`` §4.2),
checked in Chromium through the test kit: the sender reads its ``File`` slice by slice (never
whole) and produces the same blob as the whole-file encryptor; the receiver's decryptor
releases authenticated plaintext as the download arrives, cuts a relay off the moment it
sends more than the pointer's size, and refuses at the end a blob whose digest or final chunk
is wrong (the app publishes the file only after that). End to end with ``vox``:
``test_files.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.web.support import kit_call, kit_page

CHUNK = 65536


@pytest.fixture(scope="module")
def kit(browser: Any) -> Iterator[Any]:
    with kit_page(browser) as page:
        yield page


def test_a_file_is_encrypted_slice_by_slice_and_decrypted_as_it_arrives(kit: Any) -> None:
    size = 5 * CHUNK + 1234
    got = kit_call(kit, "attachmentStreaming", size)
    # Same bytes as the whole-file encryptor (and so the pinned vectors), same digest.
    assert got["sameBlob"] is True
    assert got["sameDigest"] is True
    # The file was read only in chunk-sized slices, never whole.
    assert got["wholeReads"] == 0
    assert got["maxRead"] <= CHUNK
    assert got["reads"] == 6
    # Plaintext came out before the end (all but the held-back final chunk), then all of it.
    assert 0 < got["releasedBeforeFinish"] < size
    assert got["released"] == size


def test_the_decryptor_refuses_excess_truncation_and_a_wrong_digest(kit: Any) -> None:
    got = kit_call(kit, "attachmentStreaming", 3 * CHUNK)
    assert got["extraError"] == "AttachmentMismatch"  # one byte too many: refused at once
    assert got["cutError"] == "AuthenticationFailed"  # cut at a chunk boundary
    # A wrong digest: chunks opened (they are authenticated) but finish() refuses.
    assert got["wrongReleased"] > 0
    assert got["wrongFinish"] == "AttachmentMismatch"
