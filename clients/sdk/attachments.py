"""Attachments over :class:`~clients.sdk.core.Core`: encrypt and upload a file (streamed,
padded to Signal's buckets), send its pointer, download and verify one.

**Uploads are resumable** (``docs/protocol-ws.md`` §9.1): the blob is encrypted as the file
is read and sent in chunks of ``min(UPLOAD_CHUNK_BYTES, the relay's chunk_bytes)``, each its
own ``PATCH``. After a dropped connection, a timeout, a 5xx (or a 408/429) the client waits
(0.5 s, doubling up to 10 s), asks the relay's offset and continues from there, so confirmed
chunks are never sent again; ``ATTEMPTS`` failures in a row give up.

To resend from the relay's offset the client keeps the **ciphertext of the unconfirmed
chunk in memory** (one chunk, at most 4 MiB by default, plus one read of 1 MiB) instead of
making the encryption seekable. Re-encrypting from an offset would be possible (AES-GCM
chunks are deterministic under the attachment key) but the pointer's digest is SHA-256 of
the *whole* blob, computed as it is produced: restarting the stream means hashing again
from byte 0 (hashlib cannot save a hash state), i.e. re-reading the file. And the window
always suffices: a chunk is all or nothing, so the relay's offset is the start or the end
of the chunk in flight. A relay that reports an offset outside it (it lost bytes) fails the
upload.

``progress(done, total)`` reports the bytes the relay **confirmed** (updated once per
chunk). An upload that fails for good (the file changed, the relay refused a chunk, the
attempts ran out, the task was cancelled) is deleted on the relay at once (``DELETE``), so
it holds none of the device's ``max_concurrent_uploads_per_device`` slots nor its reserved
bytes. When that ``DELETE`` cannot reach the relay either (or the process was killed), the
upload stays listed in the profile's store (encrypted secrets: upload id, attachment key,
the file's identity = path, size, mtime in ns, device, inode, blob size). The next upload of
**the same unchanged file** resumes it, in a new process too (``vox send-file`` again): the
same key gives the same blob (deterministic nonces, zero padding), so the file is read and
encrypted again from the start to rebuild the digest, and only the bytes past the relay's
offset are sent. Any other upload deletes such leftovers first (the relay cannot list a
device's uploads). A file changed without changing any of those (same size and mtime) would
make a blob that fails the recipient's digest check: refused there, never silently wrong.
A relay without resumable uploads (``404``/``405`` on ``POST /v1/attachments/uploads``)
gets the one-shot ``POST /v1/attachments``, streamed as well; there a dropped connection
fails the upload.

**A file message withdrawn by its sender** (cancelled before it left, or deleted for
everyone) has its blob deleted on the relay by the device that uploaded it
(``DELETE /v1/attachments/{id}``, ``docs/protocol-ws.md`` §9.2), so it stops counting against
the device's quota and recipients who had not fetched it cannot any more. Cancelled: at once.
Deleted for everyone: once the relay accepted the DELETE, also when that DELETE was queued
(the relay unreachable) and goes out later. Either way the blob is listed in the store's
encrypted secrets (:func:`delete_after`, in the transaction of the cancel or of the DELETE's
outbox entry) until the relay has answered (:func:`delete_withdrawn`: at once, when a queued
DELETE is accepted, and on every connection — of this process or a later one of the
profile). A DELETE refused for good keeps the blob (the message was not deleted for the
others); an older relay (no such route) keeps it until it expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from clients.sdk import trust
from clients.sdk.content import AttachmentContent
from clients.sdk.core import Core
from clients.sdk.errors import AttachmentError, RelayRejected, RelayUnavailable
from clients.sdk.models import Event, Message, MessageSent, SendFailed, SendResult
from clients.sdk.peers import check_user
from clients.sdk.transport import OffsetMismatch
from clients.store.models import StoredMessage, is_group_conversation
from crypto import primitives
from crypto.attachments import (
    DEFAULT_CHUNK_SIZE,
    KEY_SIZE,
    AttachmentDecryptor,
    AttachmentEncryptor,
    AttachmentPointer,
    ciphertext_size,
    padded_size,
)
from crypto.errors import AttachmentMismatch, VoxError
from wire.codes import RestErrorCode
from wire.rest import UploadOut

__all__ = [
    "Progress",
    "delete_after",
    "delete_withdrawn",
    "download",
    "on_event",
    "send_file",
    "upload_file",
]

Progress = Callable[[int, int], None]
"""``progress(done_bytes, total_bytes)`` for uploads and downloads."""


async def send_file(
    core: Core,
    to: str,
    path: Path | str,
    *,
    caption: str = "",
    progress: Progress | None = None,
) -> SendResult:
    """Encrypt ``path`` (streamed), upload it, then send the pointer to ``to`` (a user or a
    group conversation)."""
    if not is_group_conversation(to):
        check_user(to)
        trust.require_trusted(core.store, to)
    pointer = await upload_file(core, path, progress=progress)
    group_id = b""
    if is_group_conversation(to):
        group_id = bytes.fromhex(to.removeprefix("group:"))
    content = AttachmentContent(
        pointer=pointer.to_bytes(),
        caption=caption,
        group_id=group_id,
        sent_at_ms=int(time.time() * 1000),
    )
    return await core.send_chat(to, content)


#: Ciphertext bytes per ``PATCH``, and so at most held in memory (the relay's
#: ``chunk_bytes`` when that is smaller).
UPLOAD_CHUNK_BYTES = 4 * 1024 * 1024
#: Failures in a row (network errors, 5xx) after which a chunk or the finish gives up.
ATTEMPTS = 8
#: Plaintext read from the file at a time.
_READ_BYTES = 1024 * 1024
#: The store's list of this profile's unfinished uploads (JSON list of upload ids).
_OPEN_UPLOADS = "attachments.open_uploads"
#: Uploads running in this process (never deleted as leftovers).
_running: set[str] = set()

T = TypeVar("T")


async def _pause(attempt: int) -> None:
    await asyncio.sleep(min(10.0, 0.25 * 2**attempt))


def _retryable(exc: Exception) -> bool:
    """A failure worth asking the relay's offset again for: the connection or the relay (or a
    proxy) failed, the request was slow, or the relay is pacing us."""
    if isinstance(exc, RelayUnavailable):
        return True
    if isinstance(exc, RelayRejected):
        if exc.code == RestErrorCode.TOO_MANY_UPLOADS:
            return False
        return exc.status >= 500 or exc.status in (408, 429) or exc.code == RestErrorCode.TRUNCATED
    return False


async def _patiently(call: Callable[[], Awaitable[T]]) -> T:
    """``call()``, again after retryable failures, up to ``ATTEMPTS`` times."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return await call()
        except (RelayUnavailable, RelayRejected) as exc:
            if not _retryable(exc) or attempt == ATTEMPTS:
                raise
        await _pause(attempt)
    raise AssertionError("unreachable")


def _file_identity(path: Path, st: os.stat_result, total: int) -> str:
    """What must not have changed for an upload of ``path`` to be resumed by another
    process: where it is, its size, its modification time (ns), its inode; and the blob size."""
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_dev}|{st.st_ino}|{total}"


def _secret_list(core: Core, key: str, fields: tuple[str, ...]) -> list[dict[str, str]]:
    """A list of entries kept in the store's encrypted secrets (JSON), the well-formed ones:
    each a dict with a string for every one of ``fields``."""
    raw = core.store.get_secret(key)
    try:
        entries = json.loads(raw) if raw else []
    except ValueError:
        return []
    if not isinstance(entries, list):
        return []
    return [
        e for e in entries if isinstance(e, dict) and all(isinstance(e.get(k), str) for k in fields)
    ]


def _set_secret_list(core: Core, key: str, entries: list[dict[str, str]]) -> None:
    core.store.set_secret(key, json.dumps(entries).encode() if entries else None)


def _open_uploads(core: Core) -> list[dict[str, str]]:
    """This profile's unfinished uploads: ``{"id", "file", "key"}`` (file identity and
    attachment key in hex, to resume it), kept in the store's encrypted secrets."""
    return _secret_list(core, _OPEN_UPLOADS, ("id", "file", "key"))


def _set_open_uploads(core: Core, entries: list[dict[str, str]]) -> None:
    _set_secret_list(core, _OPEN_UPLOADS, entries)


def _forget_upload(core: Core, upload_id: str) -> None:
    _running.discard(upload_id)
    _set_open_uploads(core, [e for e in _open_uploads(core) if e["id"] != upload_id])


async def _cancel_upload(core: Core, upload_id: str) -> None:
    """Delete an upload on the relay (best effort: kept in the store when that fails)."""
    try:
        await asyncio.wait_for(core.http.cancel_upload(upload_id), 10.0)
    except (RelayUnavailable, RelayRejected, TimeoutError):
        _running.discard(upload_id)  # a leftover now: the next upload deletes it
        return
    _forget_upload(core, upload_id)


async def _abandon_leftovers(core: Core) -> None:
    """Delete the uploads an earlier process of this profile left unfinished (killed, or
    the relay unreachable when it gave up): each holds a slot and its size until it expires."""
    for entry in _open_uploads(core):
        if entry["id"] not in _running:
            await _cancel_upload(core, entry["id"])


async def _resumable(core: Core, identity: str, total: int) -> tuple[UploadOut, bytes] | None:
    """An upload of this very file that an earlier process left unfinished, still on the
    relay, with its attachment key; ``None`` when there is none."""
    for entry in _open_uploads(core):
        if entry["file"] != identity or entry["id"] in _running:
            continue
        try:
            state = await core.http.upload_state(entry["id"])
            key = bytes.fromhex(entry["key"])
        except RelayRejected as exc:
            if exc.status != 404:
                raise
            _forget_upload(core, entry["id"])  # expired, or the relay lost it
            continue
        except ValueError:
            continue  # a damaged entry: deleted as a leftover
        if state.size == total:
            _running.add(state.upload_id)
            return state, key
    return None


async def _create_upload(
    core: Core, total: int, name: str, identity: str, key: bytes
) -> UploadOut | None:
    await _abandon_leftovers(core)
    try:
        # Not retried: a create whose answer was lost would leave an upload we cannot name.
        upload = await core.http.create_upload(total)
    except RelayRejected as exc:
        if exc.code == RestErrorCode.TOO_MANY_UPLOADS:
            raise AttachmentError(
                f"this device has too many unfinished uploads on the relay: {exc.message}"
            ) from None
        raise _too_large(exc, name, total) from None
    if upload is not None:
        _running.add(upload.upload_id)
        entry = {"id": upload.upload_id, "file": identity, "key": key.hex()}
        _set_open_uploads(core, [*_open_uploads(core), entry])
    return upload


def _too_large(exc: RelayRejected, name: str, total: int) -> Exception:
    if exc.code != "too_large":
        return exc
    return AttachmentError(
        f"{name} is too large for this relay ({total:,} bytes encrypted and padded): {exc.message}"
    )


async def _send_chunks(
    core: Core,
    upload: UploadOut,
    pieces: AsyncIterator[bytes],
    total: int,
    progress: Progress | None,
) -> str:
    """Upload the blob ``pieces`` make, chunk by chunk, resuming at the relay's offset;
    returns the attachment id. ``pieces`` make the whole blob: of an upload resumed by
    another process, what the relay has is made again (for the digest) but not sent."""
    upload_id = upload.upload_id
    chunk_bytes = max(1, min(UPLOAD_CHUNK_BYTES, upload.chunk_bytes))
    acked = skip = upload.offset
    if skip and progress:
        progress(skip, total)

    async def send(window: bytes) -> None:
        nonlocal acked
        start = at = acked
        end = start + len(window)
        failures = 0
        while at < end:
            before = at
            try:
                at = await core.http.append_upload(upload_id, at, window[at - start :])
            except OffsetMismatch as exc:
                at = exc.offset
            except (RelayUnavailable, RelayRejected) as exc:
                if not _retryable(exc) or failures + 1 >= ATTEMPTS:
                    raise
                await _pause(failures + 1)
                # The chunk may or may not have arrived: the relay says where it stands.
                at = (await _patiently(lambda: core.http.upload_state(upload_id))).offset
            if not start <= at <= end:  # we can resend only the window we hold
                raise AttachmentError(
                    f"the relay's upload is at byte {at:,}, outside the bytes "
                    f"{start:,}..{end:,} this client still holds"
                )
            failures = 0 if at > before else failures + 1
            if failures >= ATTEMPTS:
                raise AttachmentError(f"the relay's upload is stuck at byte {at:,}")
        acked = at
        if progress:
            progress(acked, total)

    held = bytearray()
    async for piece in pieces:
        if skip:  # the relay has these bytes already
            cut = min(skip, len(piece))
            skip -= cut
            piece = piece[cut:]
        held += piece
        while len(held) >= chunk_bytes:
            await send(bytes(held[:chunk_bytes]))
            del held[:chunk_bytes]
    if held:
        await send(bytes(held))
    if acked != total:
        raise AttachmentError(f"uploaded {acked:,} of {total:,} bytes")
    return (await _patiently(lambda: core.http.finish_upload(upload_id))).id


async def upload_file(
    core: Core, path: Path | str, *, progress: Progress | None = None
) -> AttachmentPointer:
    """Encrypt and upload a file; returns its pointer (with the relay's blob id).

    The file is padded with zeros to Signal's bucket (``crypto.attachments.padded_size``,
    at most 5 % more, 541 bytes at least), so the relay sees only the bucket. If the
    padded blob exceeds the relay's ``max_attachment_bytes`` (from ``/v1/config``), an
    :class:`AttachmentError` is raised before anything is uploaded. The upload is resumable
    (module docstring); ``progress`` counts blob bytes the relay confirmed (padding
    included) against the exact blob size.
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise AttachmentError(f"cannot read {path}: {exc.strerror or exc}") from None
    size = st.st_size
    padded = padded_size(size)
    total = ciphertext_size(padded, DEFAULT_CHUNK_SIZE)
    limit: float | None = None
    with contextlib.suppress(RelayRejected, RelayUnavailable):
        limit = (await core.config()).limits.get("max_attachment_bytes")
    if limit is not None and total > limit:
        raise AttachmentError(
            f"{path.name} is too large for this relay: {size:,} bytes are {total:,} bytes "
            f"encrypted and padded, over the relay's limit of {int(limit):,} bytes"
        )
    try:
        handle = await asyncio.to_thread(path.open, "rb")
    except OSError as exc:
        raise AttachmentError(f"cannot read {path}: {exc.strerror or exc}") from None
    identity = _file_identity(path, st, total)
    try:
        resumed = await _resumable(core, identity, total)
    except BaseException:
        handle.close()
        raise
    # Resumed: the same key makes the same blob (deterministic nonces), so the bytes the
    # relay has and the digest of the whole blob match what is made again now.
    key = resumed[1] if resumed else primitives.random_bytes(KEY_SIZE)
    encryptor = AttachmentEncryptor(rng=lambda n: key)

    async def pieces() -> AsyncIterator[bytes]:
        with handle:
            while data := await asyncio.to_thread(handle.read, _READ_BYTES):
                out = encryptor.feed(data)
                if encryptor.size > padded:  # the blob would exceed its declared size
                    raise AttachmentError(f"{path} grew while it was being uploaded")
                if out:
                    yield out
        # Zero padding up to the bucket, streamed; a file that shrank meanwhile is padded
        # further, so the blob is always exactly ``total`` bytes.
        while (missing := padded - encryptor.size - encryptor.padding) > 0:
            out = encryptor.pad(min(missing, _READ_BYTES))
            if out:
                yield out
        yield encryptor.finish()

    try:
        upload = (
            resumed[0] if resumed else await _create_upload(core, total, path.name, identity, key)
        )
        if upload is None:  # a relay without resumable uploads
            blob_id = await _upload_whole(core, pieces(), total, path.name, progress)
        else:
            try:
                blob_id = await _send_chunks(core, upload, pieces(), total, progress)
            except BaseException:
                await _cancel_upload(core, upload.upload_id)  # free its slot and bytes now
                raise
            _forget_upload(core, upload.upload_id)
    finally:
        handle.close()  # also when the upload failed before reading the file
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return encryptor.pointer(content_type=content_type, file_name=path.name[:255], blob_id=blob_id)


async def _upload_whole(
    core: Core, pieces: AsyncIterator[bytes], total: int, name: str, progress: Progress | None
) -> str:
    """The one-shot ``POST /v1/attachments`` (streamed); progress counts bytes sent."""
    sent = 0

    async def counted() -> AsyncIterator[bytes]:
        nonlocal sent
        async for out in pieces:
            sent += len(out)
            if progress:
                progress(sent, total)
            yield out

    try:
        return (await core.http.upload_attachment(counted(), total)).id
    except RelayRejected as exc:
        raise _too_large(exc, name, total) from None


def _uploaded_blob(core: Core, message: StoredMessage) -> str | None:
    """The blob id of ``message`` if it is our file message uploaded by this device (only
    that device may delete it)."""
    pointer = (message.attachment or {}).get("pointer")
    if message.sender != core.username or message.sender_device != core.device_id:
        return None
    if not isinstance(pointer, str):
        return None
    try:
        return AttachmentPointer.from_bytes(bytes.fromhex(pointer)).blob_id
    except (VoxError, ValueError):
        return None


async def _delete_blob(core: Core, blob_id: str) -> bool:
    """``DELETE /v1/attachments/{id}``: whether the relay answered (it is gone, or it refused
    for good: an older relay without the route, another device's blob)."""
    try:
        await asyncio.wait_for(core.http.authed("DELETE", f"/v1/attachments/{blob_id}"), 10.0)
    except RelayRejected as exc:
        return exc.status < 500 and exc.status not in (408, 429)
    except (RelayUnavailable, TimeoutError):
        return False
    return True


#: The store's list of blobs to delete once the DELETE of their message is accepted (a JSON
#: list of ``{"op": the DELETE's message id, "blob": blob id}``).
_WITHDRAWN = "attachments.withdrawn"
#: DELETEs whose blob this process is deleting now.
_deleting: set[str] = set()


def _withdrawn(core: Core) -> list[dict[str, str]]:
    return _secret_list(core, _WITHDRAWN, ("op", "blob"))


def _set_withdrawn(core: Core, entries: list[dict[str, str]]) -> None:
    _set_secret_list(core, _WITHDRAWN, entries)


def _forget_withdrawn(core: Core, op: str) -> None:
    entries = _withdrawn(core)
    kept = [e for e in entries if e["op"] != op]
    if len(kept) != len(entries):
        _set_withdrawn(core, kept)


def delete_after(core: Core, op: str, message: StoredMessage) -> None:
    """Remember to delete the blob of ``message`` (our file message, if this device uploaded
    it) once the relay accepted ``op``, the DELETE of it — or at once, when ``op`` is the id
    of the message itself, withdrawn. Call it in the transaction that writes the DELETE to
    the outbox (or withdraws the message), so neither is kept without the other."""
    blob_id = _uploaded_blob(core, message)
    if blob_id is not None:
        _set_withdrawn(core, [*_withdrawn(core), {"op": op, "blob": blob_id}])


async def delete_withdrawn(core: Core, op: str | None = None) -> None:
    """Delete on the relay the blobs whose message's DELETE it accepted, or whose message was
    withdrawn (only ``op``'s, if given): a DELETE still queued waits, one refused for good
    keeps its blob. An entry stays
    listed until the relay answered, so one that cannot be reached now is tried again on the
    next connection."""
    entries = [e for e in _withdrawn(core) if op is None or e["op"] == op]
    if not entries:
        return
    # Our DELETEs the relay has not accepted: queued, or refused for good (listed until a
    # later DELETE of the same message is accepted). Imported here: messaging imports
    # group_admin, which imports this module.
    from clients.sdk.messaging import operations

    unsettled = {o.id: o.state for o in operations(core)}
    for entry in entries:
        if entry["op"] in _deleting:
            continue
        state = unsettled.get(entry["op"])
        if state == "failed":
            _forget_withdrawn(core, entry["op"])
        if state is not None:
            continue
        _deleting.add(entry["op"])
        try:
            if await _delete_blob(core, entry["blob"]):
                _forget_withdrawn(core, entry["op"])
        finally:
            _deleting.discard(entry["op"])


def on_event(core: Core, event: Event) -> None:
    """A queued DELETE of ours that the relay accepted deletes its blob (in the background);
    one refused for good forgets it."""
    if isinstance(event, MessageSent) and event.target is not None:
        if any(e["op"] == event.message_id for e in _withdrawn(core)):
            core.spawn(delete_withdrawn(core, event.message_id))
    elif isinstance(event, SendFailed) and event.kind == "delete":
        _forget_withdrawn(core, event.message_id)


async def download(
    core: Core,
    attachment: Message | AttachmentPointer | bytes,
    dest: Path | str,
    *,
    progress: Progress | None = None,
) -> Path:
    """Download, verify (digest, size) and decrypt an attachment to ``dest`` (a file, or a
    directory to put the original file name in). Nothing is left behind on failure.

    Padding (pointer version 2) is checked to be all zero and never written; ``progress``
    counts blob bytes against the exact (padded) blob size."""
    if isinstance(attachment, Message):
        if attachment.attachment is None:
            raise AttachmentError("this message has no attachment")
        raw = attachment.attachment.pointer
        pointer = AttachmentPointer.from_bytes(raw)
    elif isinstance(attachment, bytes):
        pointer = AttachmentPointer.from_bytes(attachment)
    else:
        pointer = attachment
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / (Path(pointer.file_name).name or "attachment")
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
    decryptor = AttachmentDecryptor.for_pointer(pointer)
    total = pointer.ciphertext_size
    done = 0
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            failure: VoxError | None = None

            async def sink(chunk: bytes) -> None:
                # After a failure the rest is read but ignored, so the relay's response
                # finishes normally instead of being cut off.
                nonlocal done, failure
                done += len(chunk)
                if done > total:  # a relay that streams more than announced: cut it off
                    raise AttachmentError("the blob is larger than its pointer says")
                if failure is None:
                    try:
                        out.write(decryptor.feed(chunk))
                    except VoxError as exc:
                        failure = exc
                if progress:
                    progress(min(done, total), total)

            await core.http.download_attachment(pointer.blob_id, sink)
            try:
                if failure is not None:
                    raise failure
                out.write(decryptor.finish())
            except VoxError as exc:
                what = type(exc).__name__
                if isinstance(exc, AttachmentMismatch):  # digest, size or padding
                    what = f"{what}: {exc.field}"
                raise AttachmentError(f"verification failed ({what})") from None
        tmp.replace(dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    if isinstance(attachment, Message):
        stored = core.store.get_message(attachment.id)
        if stored is not None and stored.attachment is not None:
            meta = dict(stored.attachment)
            meta["path"] = str(dest)
            core.store.update_attachment(attachment.id, meta)
    return dest
