"""I/O to the relay: REST over httpx and the device's WebSocket over websockets.

Only this module knows URLs, JSON shapes and status codes (``docs/protocol-relay.md``,
``docs/protocol-ws.md``). Every failure becomes a :mod:`clients.sdk.errors` exception:
connection problems are :class:`RelayUnavailable`, answers with an error status are
:class:`RelayRejected` (or a more specific subclass).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import httpx
import websockets
from pydantic import BaseModel, ValidationError
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.protocol import State

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

from clients.sdk.errors import (
    AccountDeleted,
    AuthFailed,
    DeviceRemoved,
    RegistrationClosed,
    RelayRejected,
    RelayUnavailable,
    UnknownUser,
)
from crypto.encoding import Writer
from crypto.keys import DeviceAuthKey
from wire.codes import CloseCode, RestErrorCode
from wire.encoding import WireDecodeError, b64, unb64
from wire.frames import AuthFrame, ClientFrame, ReadyFrame, ServerFrame, encode, parse_server_frame
from wire.rest import (
    AccountDevices,
    AttachmentCreated,
    ChallengeIn,
    ChallengeOut,
    ConfigOut,
    DeviceListIn,
    ErrorBody,
    PrekeyBundle,
    PrekeyCounts,
    PrekeyUpload,
    RegisterIn,
    RegisterOut,
    TokenIn,
    TokenOut,
    UploadIn,
    UploadOut,
)

__all__ = [
    "AUTH_LABEL",
    "OffsetMismatch",
    "RelayHttp",
    "RelaySocket",
    "SocketClosed",
    "b64",
    "unb64",
]

log = logging.getLogger("vox.transport")

AUTH_LABEL = b"VoxAuthChallenge-v1"


Model = TypeVar("Model", bound=BaseModel)


class OffsetMismatch(RelayRejected):
    """``409 offset_mismatch`` on a chunk of a resumable upload: the relay holds ``offset``
    bytes; continue from there (``docs/protocol-ws.md`` §9.1)."""

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(409, RestErrorCode.OFFSET_MISMATCH, message)
        self.offset = offset


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


class RelayHttp:
    """The relay's REST API for one device, with transparent token (re)acquisition."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        token_cache: tuple[Callable[[], str | None], Callable[[str | None], None]] | None = None,
    ) -> None:
        url = base_url.rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise RelayUnavailable(base_url, "the server URL must start with http:// or https://")
        self.base_url = url
        self._http = httpx.AsyncClient(base_url=url, timeout=timeout)
        self._credentials: tuple[str, int, DeviceAuthKey] | None = None
        self._token: str | None = None
        self._token_cache = token_cache
        self._login_lock = asyncio.Lock()
        if token_cache is not None:
            self._token = token_cache[0]()

    @property
    def ws_url(self) -> str:
        """``ws(s)://host/v1/ws``."""
        if self.base_url.startswith("https://"):
            return "wss://" + self.base_url.removeprefix("https://") + "/v1/ws"
        return "ws://" + self.base_url.removeprefix("http://") + "/v1/ws"

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._http.aclose()

    def forget_token(self) -> None:
        """Drop the cached token: the next request logs in again."""
        self._token = None

    def set_credentials(self, username: str, device_id: int, auth_key: DeviceAuthKey) -> None:
        """Who to log in as when a token is needed."""
        if self._credentials is not None and self._credentials[:2] != (username, device_id):
            self._token = None
        self._credentials = (username, device_id, auth_key)

    # --- plumbing --------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: BaseModel | None = None,
        params: dict[str, Any] | None = None,
        token: str | None = None,
        content: Any = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        all_headers = dict(headers or {})
        if body is not None:
            content = body.model_dump_json(exclude_none=True).encode()
            all_headers["Content-Type"] = "application/json"
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        try:
            return await self._http.request(
                method, path, params=params, headers=all_headers, content=content
            )
        except httpx.TransportError as exc:
            raise RelayUnavailable(self.base_url, _reason(exc)) from None
        except httpx.InvalidURL as exc:
            raise RelayUnavailable(self.base_url, _reason(exc)) from None

    @staticmethod
    def _error(resp: httpx.Response) -> RelayRejected:
        try:
            body = ErrorBody.model_validate_json(resp.content)
            code, message = body.error, body.message or resp.reason_phrase
        except ValidationError:
            code, message = "error", resp.reason_phrase or "unexpected answer"
        offset = resp.headers.get("Upload-Offset", "")
        if resp.status_code == 409 and code == RestErrorCode.OFFSET_MISMATCH and offset.isdigit():
            return OffsetMismatch(int(offset), message[:300])
        return RelayRejected(resp.status_code, code, message[:300])

    def _parse(self, resp: httpx.Response, model: type[Model], *, user: str | None = None) -> Model:
        """A successful answer as ``model``; an answer of another shape is a relay error."""
        self._check(resp, user=user)
        try:
            return model.model_validate_json(resp.content)
        except ValidationError:
            raise RelayRejected(
                resp.status_code, "bad_answer", f"unexpected {model.__name__} from the relay"
            ) from None

    def _check(self, resp: httpx.Response, *, user: str | None = None) -> httpx.Response:
        if resp.status_code < 400:
            return resp
        if resp.status_code == 404 and user is not None:
            raise UnknownUser(user)
        if resp.status_code == 410 and user is not None:
            raise AccountDeleted(user)
        raise self._error(resp)

    async def token(self) -> str:
        """A valid bearer token (logging in when there is none)."""
        if self._token is not None:
            return self._token
        return await self.login()

    def _auth_failed(self, resp: httpx.Response) -> AuthFailed:
        error = self._error(resp)
        if error.code in (RestErrorCode.UNKNOWN_DEVICE, RestErrorCode.DEVICE_REVOKED):
            return DeviceRemoved(error.message, revoked=error.code == RestErrorCode.DEVICE_REVOKED)
        return AuthFailed(error.message)

    async def login(self) -> str:
        """Challenge–response login with the device auth key; returns the new token."""
        if self._credentials is None:
            raise AuthFailed("no device credentials")
        async with self._login_lock:
            username, device_id, key = self._credentials
            challenge = ChallengeIn(username=username, device_id=device_id)
            resp = await self._request("POST", "/v1/auth/challenge", body=challenge)
            if resp.status_code in (401, 403, 404):
                raise self._auth_failed(resp)
            nonce = self._parse(resp, ChallengeOut).nonce
            data = Writer().str16(username).u32(device_id).raw(nonce).finish()
            body = TokenIn(
                username=username,
                device_id=device_id,
                nonce=nonce,
                signature=key.sign(AUTH_LABEL, data),
            )
            resp = await self._request("POST", "/v1/auth/token", body=body)
            if resp.status_code in (401, 403, 404):
                raise self._auth_failed(resp)
            token = self._parse(resp, TokenOut).token
            self._token = token
            if self._token_cache is not None:
                self._token_cache[1](token)
            return token

    async def authed(
        self, method: str, path: str, *, user: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        """A request with the bearer token; on 401 log in again once and retry."""
        token = await self.token()
        resp = await self._request(method, path, token=token, **kwargs)
        if resp.status_code == 401:
            self._token = None
            token = await self.login()
            resp = await self._request(method, path, token=token, **kwargs)
            if resp.status_code == 401:
                raise AuthFailed(self._error(resp).message)
        return self._check(resp, user=user)

    # --- endpoints -------------------------------------------------------------------

    async def config(self) -> ConfigOut:
        """``GET /v1/config`` (also the check that ``base_url`` is a Vox relay)."""
        resp = await self._request("GET", "/v1/config")
        if resp.status_code == 404:
            raise RelayUnavailable(self.base_url, "not a Vox relay (no /v1/config)")
        self._check(resp)
        try:
            return ConfigOut.model_validate_json(resp.content)
        except ValidationError:
            raise RelayUnavailable(self.base_url, "not a Vox relay (no valid config)") from None

    async def register(self, body: RegisterIn) -> RegisterOut:
        """``POST /v1/accounts``."""
        resp = await self._request("POST", "/v1/accounts", body=body)
        if resp.status_code == 403:
            err = self._error(resp)
            raise RegistrationClosed(err.code, err.message)
        return self._parse(resp, RegisterOut)

    async def devices(self, username: str) -> AccountDevices:
        """``GET /v1/accounts/{username}/devices``."""
        resp = await self.authed("GET", f"/v1/accounts/{username}/devices", user=username)
        return self._parse(resp, AccountDevices)

    async def put_devices(self, username: str, signed_list: bytes) -> AccountDevices:
        """``PUT /v1/accounts/{username}/devices``."""
        resp = await self.authed(
            "PUT", f"/v1/accounts/{username}/devices", body=DeviceListIn(device_list=signed_list)
        )
        return self._parse(resp, AccountDevices)

    async def upload_prekeys(self, body: PrekeyUpload) -> None:
        """``POST /v1/prekeys``."""
        await self.authed("POST", "/v1/prekeys", body=body)

    async def prekey_count(self) -> PrekeyCounts:
        """``GET /v1/prekeys/count``."""
        return self._parse(await self.authed("GET", "/v1/prekeys/count"), PrekeyCounts)

    async def bundle(self, username: str, device_id: int | None = None) -> PrekeyBundle:
        """``GET /v1/prekeys/{username}[?device_id=]`` (claims one-time prekeys)."""
        params = {"device_id": device_id} if device_id is not None else None
        resp = await self.authed("GET", f"/v1/prekeys/{username}", user=username, params=params)
        return self._parse(resp, PrekeyBundle)

    async def upload_attachment(self, chunks: AsyncIterator[bytes], size: int) -> AttachmentCreated:
        """Stream an encrypted blob to ``POST /v1/attachments``; returns the relay's answer."""
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        resp = await self.authed("POST", "/v1/attachments", content=chunks, headers=headers)
        return self._parse(resp, AttachmentCreated)

    # Resumable uploads (docs/protocol-ws.md §9.1).

    async def create_upload(self, size: int) -> UploadOut | None:
        """``POST /v1/attachments/uploads``; ``None`` from a relay without resumable uploads
        (it answers 404 or 405: the path is its download route's)."""
        try:
            resp = await self.authed("POST", "/v1/attachments/uploads", body=UploadIn(size=size))
        except RelayRejected as exc:
            if exc.status in (404, 405) and exc.code != RestErrorCode.UNKNOWN_UPLOAD:
                return None
            raise
        return self._parse(resp, UploadOut)

    async def upload_state(self, upload_id: str) -> UploadOut:
        """``GET /v1/attachments/uploads/{id}``: where the upload stands."""
        resp = await self.authed("GET", f"/v1/attachments/uploads/{upload_id}")
        return self._parse(resp, UploadOut)

    async def append_upload(self, upload_id: str, offset: int, chunk: bytes) -> int:
        """``PATCH`` one chunk at ``offset``; returns the relay's new offset. Raises
        :class:`OffsetMismatch` when the relay is elsewhere."""
        headers = {"Content-Type": "application/octet-stream", "Upload-Offset": str(offset)}
        path = f"/v1/attachments/uploads/{upload_id}"
        resp = await self.authed("PATCH", path, content=chunk, headers=headers)
        return self._parse(resp, UploadOut).offset

    async def finish_upload(self, upload_id: str) -> AttachmentCreated:
        """``POST /v1/attachments/uploads/{id}/finish`` (idempotent)."""
        resp = await self.authed("POST", f"/v1/attachments/uploads/{upload_id}/finish")
        return self._parse(resp, AttachmentCreated)

    async def cancel_upload(self, upload_id: str) -> None:
        """``DELETE /v1/attachments/uploads/{id}``; an upload already gone is fine."""
        try:
            await self.authed("DELETE", f"/v1/attachments/uploads/{upload_id}")
        except RelayRejected as exc:
            if exc.status != 404:
                raise

    async def download_attachment(
        self, blob_id: str, sink: Callable[[bytes], Awaitable[None]]
    ) -> None:
        """Stream ``GET /v1/attachments/{id}`` into ``sink``."""
        for attempt in range(2):
            token = await self.token()
            try:
                async with self._http.stream(
                    "GET",
                    f"/v1/attachments/{blob_id}",
                    headers={"Authorization": f"Bearer {token}"},
                ) as resp:
                    if resp.status_code == 401 and attempt == 0:
                        self._token = None
                        await self.login()
                        continue
                    if resp.status_code >= 400:
                        await resp.aread()
                        raise self._error(resp)
                    async for chunk in resp.aiter_bytes():
                        await sink(chunk)
                    return
            except httpx.TransportError as exc:
                raise RelayUnavailable(self.base_url, _reason(exc)) from None


class SocketClosed(Exception):
    """The WebSocket closed; ``code``/``reason`` as sent by the relay (or 1006)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"connection closed ({code}): {reason}")
        self.code = code
        self.reason = reason


class _Connection(ClientConnection):
    """websockets' client connection, except that what one of its own sends queued (a pong,
    a close) goes to the socket in **one** write, not one per frame. The SDK's own frames
    bypass it (:meth:`RelaySocket.send_texts`)."""

    def send_data(self) -> None:
        pending: list[bytes] = []
        for data in self.protocol.data_to_send():
            if data:
                pending.append(data)
                continue
            # End of data: half-close the TCP connection when possible (no TLS), as
            # websockets does; close it otherwise.
            self._write(pending)
            pending = []
            if self.transport.can_write_eof():
                with contextlib.suppress(Exception):  # uvloop can raise RuntimeError
                    self.transport.write_eof()
            else:
                self.transport.close()
        self._write(pending)

    def _write(self, pending: list[bytes]) -> None:
        if len(pending) == 1:
            self.transport.write(pending[0])
        elif pending:
            self.transport.write(b"".join(pending))


_MASK = 0x80
_TEXT_FIN = 0x81  # FIN + opcode 1 (text)
_SHORT = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def text_frames(texts: Sequence[str]) -> bytes:
    """``texts`` as WebSocket text frames (RFC 6455 §5.2), one after the other: unfragmented,
    uncompressed, and masked as a client's must be (§5.3), each with its own random key (one
    ``os.urandom`` call for all of them)."""
    keys = os.urandom(4 * len(texts))
    out: list[bytes] = []
    append = out.append
    at = 0
    for text in texts:
        data = text.encode()
        size = len(data)
        if size < 126:
            append(bytes((_TEXT_FIN, _MASK | size)))
        elif size < 65536:
            append(_SHORT.pack(_TEXT_FIN, _MASK | 126, size))
        else:
            append(_LONG.pack(_TEXT_FIN, _MASK | 127, size))
        key = keys[at : at + 4]
        at += 4
        append(key)
        append(apply_mask(data, key))
    return b"".join(out)


class RelaySocket:
    """One authenticated ``/v1/ws`` connection: JSON frames in and out."""

    def __init__(self, ws: ClientConnection, ready: ReadyFrame) -> None:
        self._ws = ws
        self.ready = ready

    @classmethod
    async def connect(cls, url: str, token: str, *, open_timeout: float = 10.0) -> RelaySocket:
        """Open, send the ``auth`` frame, wait for ``ready``. Raises AuthFailed on 4401."""
        try:
            ws = await websockets.connect(
                url,
                open_timeout=open_timeout,
                max_size=64 * 1024 * 1024,
                compression=None,
                ping_interval=20,
                ping_timeout=20,
                proxy=None,
                create_connection=_Connection,
            )
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            raise RelayUnavailable(url, _reason(exc)) from None
        try:
            await ws.send(encode(AuthFrame(token=token)))
            raw = await asyncio.wait_for(ws.recv(), open_timeout)
        except ConnectionClosed as exc:
            await ws.close()
            code = exc.rcvd.code if exc.rcvd else 1006
            reason = exc.rcvd.reason if exc.rcvd else "connection lost"
            if code == CloseCode.UNAUTHORIZED:
                raise SocketClosed(code, reason) from None
            raise RelayUnavailable(url, f"closed ({code}) {reason}") from None
        except (TimeoutError, OSError) as exc:
            await ws.close()
            raise RelayUnavailable(url, _reason(exc)) from None
        try:
            frame = parse_server_frame(raw)
        except WireDecodeError as exc:
            frame = None
            reason = str(exc)
        if not isinstance(frame, ReadyFrame):
            await ws.close()
            what = type(frame).__name__ if frame is not None else reason
            raise RelayUnavailable(url, f"unexpected first frame ({what})")
        return cls(ws, frame)

    async def send(self, frame: ClientFrame) -> None:
        """Send one frame."""
        await self.send_texts([encode(frame)])

    async def send_texts(self, texts: Sequence[str]) -> None:
        """Send frames given as their JSON texts, in order, in one write to the socket (all of
        them or, if the connection is closed or closing, none: :class:`SocketClosed`). The
        frames are built here (:func:`text_frames`), not by websockets' per-frame path."""
        if not texts:
            return
        ws = self._ws
        if ws.protocol.state is not State.OPEN:
            try:  # websockets waits until the connection is closed and says how
                async with ws.send_context():
                    pass
            except ConnectionClosed as exc:
                raise self._closed(exc) from None
            raise SocketClosed(1006, "connection lost")  # pragma: no cover - raised above
        try:
            ws.transport.write(text_frames(texts))
        except Exception as exc:  # as websockets does when a write fails: the end of it
            ws.set_connection_exc(exc)
            ws.transport.abort()
            raise SocketClosed(1006, "connection lost") from None
        if ws.paused:  # flow control: the relay reads slower than we write
            await ws.drain()

    async def recv(self) -> ServerFrame:
        """The next frame the relay sent that this version understands (others are logged
        and skipped). Raises :class:`SocketClosed`."""
        while True:
            try:
                raw = await self._ws.recv()
            except ConnectionClosed as exc:
                raise self._closed(exc) from None
            try:
                return parse_server_frame(raw)
            except WireDecodeError as exc:
                log.warning("ignored a frame from the relay: %s", exc)

    @staticmethod
    def _closed(exc: ConnectionClosed) -> SocketClosed:
        if exc.rcvd is not None:
            return SocketClosed(exc.rcvd.code, exc.rcvd.reason)
        return SocketClosed(1006, "connection lost")

    async def close(self) -> None:
        """Close politely."""
        await self._ws.close()


def now_ms() -> int:
    """Wall clock in Unix milliseconds."""
    return int(time.time() * 1000)
