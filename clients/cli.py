"""``vox``: the reference command line client — a thin layer over :class:`clients.sdk.VoxClient`.

A stable contract for scripts and tests (see ``docs/protocol-client.md``):

* every command takes ``--home DIR`` (or ``VOX_HOME``; default ``~/.vox``); the profile
  passphrase, if any, comes from ``VOX_PASSPHRASE`` (without it a 0600 key file is used);
  when a profile needs one and ``VOX_PASSPHRASE`` is unset, it is asked for on the terminal
  (no echo), or the command fails if there is no terminal;
* success exits 0; every failure prints one line ``vox: error: ...`` to stderr and exits
  non-zero (1 for expected errors, 2 for usage, 3 for anything unexpected) — never a traceback;
* **75** (``EX_TEMPFAIL``): the message is *queued, not yet accepted* — the relay could not
  take it now; it is kept and sent, once and in order, by the next ``vox`` process (or the
  running daemon) that reaches the relay. Its id is printed as on success; do not send it
  again. ``vox status`` lists queued messages;
* while ``vox daemon`` or ``vox chat`` holds the profile, commands are sent to it over its
  JSON-RPC socket (``docs/daemon.md``) instead of opening the profile; otherwise a second
  process on the same profile waits up to ``--lock-timeout`` seconds (default 10) for the
  first to finish, then fails cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from clients.daemon.remote import RemoteApi
from clients.daemon.server import is_live, socket_path
from clients.sdk import (
    ClientError,
    DecryptFailure,
    DeliveryState,
    Event,
    GroupChanged,
    GroupInfo,
    KeyChanged,
    Message,
    MessageQueued,
    MessageSent,
    MessageUpdate,
    ReceiptEvent,
    SendFailed,
    SignedOut,
    VoxClient,
    Withdrawn,
)
from clients.sdk.account import ProfileProtection, profile_protection
from clients.store.errors import StoreError as StoreFailure
from clients.units import format_size, timer_notice, withdrawn_notice

__all__ = ["app", "main"]

T = TypeVar("T")

app = typer.Typer(
    name="vox",
    help="Vox: end-to-end encrypted messaging from the command line.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
group_app = typer.Typer(
    help="Groups: create, add, remove, leave, send, list.", no_args_is_help=True
)
app.add_typer(group_app, name="group")
account_app = typer.Typer(help="Your account on the relay.", no_args_is_help=True)
app.add_typer(account_app, name="account")
passphrase_app = typer.Typer(help="The local profile's passphrase.", no_args_is_help=True)
app.add_typer(passphrase_app, name="passphrase")


class _State:
    home: Path = Path("~/.vox").expanduser()
    lock_timeout: float = 10.0


STATE = _State()


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"vox: error: {message}", err=True)
    return typer.Exit(code)


def _passphrase() -> str | None:
    given = os.environ.get("VOX_PASSPHRASE") or None
    if given is None and profile_protection(STATE.home) is ProfileProtection.PASSPHRASE:
        return _ask_secret(f"Passphrase for the profile in {STATE.home}: ")
    return given


def _ask_secret(prompt: str) -> str:
    """Read a secret from the terminal without echo; fail cleanly without a terminal."""
    import getpass

    if not sys.stdin.isatty():
        raise _fail("this profile is protected by a passphrase: set VOX_PASSPHRASE")
    try:
        return getpass.getpass(prompt)
    except (EOFError, KeyboardInterrupt):
        raise _fail("no passphrase given", 130) from None


EXIT_QUEUED = 75


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``; turn every failure into one line on stderr and a non-zero exit."""
    try:
        return asyncio.run(coro)
    except MessageQueued as exc:
        typer.echo(exc.message_id)
        typer.echo(f"vox: {exc}", err=True)
        raise typer.Exit(EXIT_QUEUED) from None
    except (ClientError, StoreFailure) as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        raise _fail("interrupted", 130) from None
    except typer.Exit:
        raise
    except Exception as exc:  # never a traceback
        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise _fail(f"unexpected {type(exc).__name__}: {detail}", 3) from None


Api = VoxClient | RemoteApi
"""A profile opened here, or the daemon (or ``vox chat``) that holds it."""


async def _open_api() -> Api:
    if await is_live(socket_path(STATE.home)):
        with contextlib.suppress(OSError):
            return await RemoteApi.connect(socket_path(STATE.home))
    return await VoxClient.open(
        STATE.home, passphrase=_passphrase(), lock_timeout=STATE.lock_timeout
    )


async def _with_client(action: Callable[[Api], Awaitable[T]]) -> T:
    client = await _open_api()
    try:
        return await action(client)
    finally:
        await client.close()


async def _with_local_client(action: Callable[[VoxClient], Awaitable[T]]) -> T:
    """For what only the profile's holder may do (delete the account, change the passphrase)."""
    if await is_live(socket_path(STATE.home)):
        raise _fail("vox chat or vox daemon holds this profile: stop it first")
    client = await VoxClient.open(
        STATE.home, passphrase=_passphrase(), lock_timeout=STATE.lock_timeout
    )
    try:
        return await action(client)
    finally:
        await client.close()


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"vox {version('vox')}")
        raise typer.Exit()


async def _groups(client: Api) -> list[GroupInfo]:
    return client.groups() if isinstance(client, VoxClient) else await client.list_groups()


@app.callback()
def _main(
    home: Annotated[
        Path | None,
        typer.Option("--home", envvar="VOX_HOME", help="Profile directory (default ~/.vox)."),
    ] = None,
    lock_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for another vox process on this profile.")
    ] = 10.0,
    _version_flag: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Vox client."""
    STATE.home = (home or Path("~/.vox")).expanduser()
    STATE.lock_timeout = lock_timeout


# --- account --------------------------------------------------------------------------


@app.command()
def register(
    username: Annotated[str, typer.Argument(help="Your username (3-32 of a-z 0-9 _ . -).")],
    server: Annotated[str, typer.Option("--server", help="Relay URL, e.g. http://127.0.0.1:8000")],
    invite: Annotated[
        str | None, typer.Option(help="Invite token, if the relay needs one.")
    ] = None,
) -> None:
    """Create an account on a relay and make this profile its first device."""

    async def go() -> str:
        client = await VoxClient.register(
            STATE.home,
            server,
            username,
            invite=invite,
            passphrase=_passphrase(),
            lock_timeout=STATE.lock_timeout,
        )
        try:
            return (
                f"registered {client.username} (device {client.device_id}) on {client.server_url}"
            )
        finally:
            await client.close()

    typer.echo(run(go()))


@app.command()
def whoami() -> None:
    """Show this profile's username, device and relay."""

    async def go(client: Api) -> str:
        return f"{client.username} device {client.device_id} on {client.server_url}"

    typer.echo(run(_with_client(go)))


# --- messaging ------------------------------------------------------------------------


TARGET_HELP = "A username, group:NAME or group:ID."


def _text(text: str) -> str:
    """TEXT, or standard input when it is ``-``; an empty message is refused (exit 2)."""
    if text == "-":
        text = sys.stdin.read().removesuffix("\n")
    if not text.strip():
        raise _fail("refusing to send an empty message", 2)
    return text


async def _target(client: Api, target: str) -> str:
    """The conversation key of a TARGET (``group:NAME`` resolved to ``group:<id>``)."""
    if not target.startswith("group:"):
        return target
    key = target.removeprefix("group:")
    groups = await _groups(client)
    by_id = [g for g in groups if g.group_id == key.lower()]
    named = by_id or [g for g in groups if g.name == key]
    if len(named) == 1:
        return named[0].conversation
    if named:
        raise ClientError(f"several groups are named {key!r}; use group:ID (vox group list)")
    raise ClientError(f"unknown group {key!r} (vox group list shows your groups)")


@app.command()
def send(
    target: Annotated[str, typer.Argument(help=TARGET_HELP, metavar="TARGET")],
    text: Annotated[str, typer.Argument(help="Message text ('-' reads standard input).")],
    reply_to: Annotated[
        str | None, typer.Option("--reply-to", help="Quote this message id (a reply).")
    ] = None,
) -> None:
    """Send a text; prints its id and exits 0 once the relay accepted it.

    Example: vox send bob "lunch?"  ·  vox send group:friends - < note.txt
    """
    body = _text(text)

    async def go(client: Api) -> str:
        to = await _target(client, target)
        if reply_to is not None:
            return (await client.reply(to, reply_to, body)).id
        return (await client.send_text(to, body)).id

    typer.echo(run(_with_client(go)))


def _done(result: object, fallback: str) -> str:
    return str(getattr(result, "id", fallback))


@app.command()
def edit(
    target: Annotated[str, typer.Argument(help=TARGET_HELP, metavar="TARGET")],
    message_id: Annotated[str, typer.Argument(help="Id of your message (vox history).")],
    text: Annotated[str, typer.Argument(help="The new text ('-' reads standard input).")],
) -> None:
    """Edit a message you sent (everyone sees the new text, marked edited).

    Example: vox edit bob 3f2a...e1 "lunch at 1?"
    """
    body = _text(text)

    async def go(client: Api) -> str:
        return _done(await client.edit(await _target(client, target), message_id, body), "")

    typer.echo(run(_with_client(go)))


@app.command()
def delete(
    target: Annotated[str, typer.Argument(help=TARGET_HELP, metavar="TARGET")],
    message_id: Annotated[str, typer.Argument(help="Message id (vox history).")],
    for_me: Annotated[
        bool, typer.Option("--for-me", help="Only from this device (any message).")
    ] = False,
) -> None:
    """Delete a message you sent for everyone (a tombstone replaces it), or --for-me.

    Your message still queued (vox status) and not yet handed to the relay is never sent:
    deleted either way, it reaches no one, nor do the edits and reactions queued on it.

    Example: vox delete bob 3f2a...e1  ·  vox delete group:friends 3f2a...e1 --for-me
    """

    async def go(client: Api) -> str:
        conversation = await _target(client, target)
        result = await client.delete(conversation, message_id, for_me=for_me)
        if isinstance(result, Withdrawn):
            return withdrawn_notice(result.timer)
        return _done(result, "deleted on this device")

    typer.echo(run(_with_client(go)))


@app.command()
def react(
    target: Annotated[str, typer.Argument(help=TARGET_HELP, metavar="TARGET")],
    message_id: Annotated[str, typer.Argument(help="Message id (vox history).")],
    emoji: Annotated[str, typer.Argument(help="One emoji (replaces your earlier one).")],
    remove: Annotated[bool, typer.Option("--remove", help="Remove your reaction.")] = False,
) -> None:
    """React to a message (one emoji per person; --remove takes it back).

    Example: vox react bob 3f2a...e1 👍
    """

    async def go(client: Api) -> str:
        conversation = await _target(client, target)
        return _done(await client.react(conversation, message_id, emoji, remove=remove), "")

    typer.echo(run(_with_client(go)))


@app.command()
def disappear(
    target: Annotated[str, typer.Argument(help=TARGET_HELP, metavar="TARGET")],
    duration: Annotated[
        str, typer.Argument(help="off, or 30s .. 4w (units s, m, h, d, w).", metavar="DURATION")
    ],
) -> None:
    """Set the conversation's disappearing-messages timer for every member and device.

    Messages sent from then on are deleted from each device that long after they were read
    there (or sent). Example: vox disappear bob 1h  ·  vox disappear group:friends off
    """
    from clients.sdk.message_rules import parse_duration

    try:
        seconds = parse_duration(duration)
    except ClientError as exc:
        raise _fail(str(exc), 2) from None

    async def go(client: Api) -> str:
        await client.set_timer(await _target(client, target), seconds)
        return timer_notice("you", seconds)

    typer.echo(run(_with_client(go)))


def _duration(seconds: int) -> str:
    if not seconds:
        return "off"
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


#: What a history row of ours says while it is not (or never) accepted by the relay.
_UNSENT = {DeliveryState.PENDING: " (queued)", DeliveryState.FAILED: " (not sent)"}


def _line(message: Message) -> str:
    when = dt.datetime.fromtimestamp(message.sent_at / 1000).strftime("%Y-%m-%d %H:%M")
    unsent = _UNSENT.get(message.state, "") if message.outgoing else ""
    if message.timer is not None:
        notice = timer_notice(message.sender, message.timer)
        return f"{message.id}  {when}  {notice}{unsent}"
    if message.deleted:
        body = "[deleted]"
    elif message.attachment is not None:
        body = f"[file] {message.attachment.file_name}"
    else:
        body = message.text or ""
    if message.reply_to is not None:
        body = f"(reply to {message.reply_to.author}: {message.reply_to.excerpt[:30]!r}) {body}"
    if message.edited:
        body += " (edited)"
    if message.reactions:
        counts = message.reaction_counts()
        body += "  " + " ".join(f"{e}{n if n > 1 else ''}" for e, n in counts.items())
    for kind, state in message.unsent:  # our edit / delete / reaction the relay has not taken
        unsent += f" ({kind} {'not sent' if state == 'failed' else 'queued'})"
    return f"{message.id}  {when}  {message.sender}: {body}{unsent}"


@app.command()
def history(
    target: Annotated[str, typer.Argument(help=TARGET_HELP, metavar="TARGET")],
    limit: Annotated[int, typer.Option(help="How many of the last messages.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Show a conversation's last messages with their ids (for edit, delete, react, reply).

    Example: vox history bob --limit 5
    """
    from clients.daemon.codec import message_json

    async def go(client: Api) -> list[str]:
        conversation = await _target(client, target)
        if isinstance(client, VoxClient):
            found = client.history(conversation, limit=limit)
        else:
            found = await client.history(conversation, limit=limit)
        if as_json:
            return [json.dumps(message_json(m), ensure_ascii=False) for m in found]
        return [_line(m) for m in found]

    for line in run(_with_client(go)):
        typer.echo(line)


@app.command()
def search(
    text: Annotated[str, typer.Argument(help="Words to find (all of them, whole words).")],
    chat: Annotated[
        str | None, typer.Option("--chat", help="Only this conversation: " + TARGET_HELP)
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many results.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Search the local history (decrypted on this device only), newest first.

    Example: vox search lunch --chat bob
    """
    from clients.daemon.codec import message_json

    async def go(client: Api) -> list[str]:
        conversation = None if chat is None else await _target(client, chat)
        if isinstance(client, VoxClient):
            found = client.search(text, chat=conversation, limit=limit)
        else:
            found = await client.search(text, chat=conversation, limit=limit)
        if as_json:
            return [json.dumps(message_json(m), ensure_ascii=False) for m in found]
        return [f"[{m.conversation}] {_line(m)}" for m in found]

    for line in run(_with_client(go)):
        typer.echo(line)


def _progress_bar(label: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        transient=True,
        console=None,
    )
    task = progress.add_task(label, total=None)
    started = False

    def update(done: int, total: int) -> None:
        nonlocal started
        if not started and sys.stderr.isatty():
            progress.start()
            started = True
        progress.update(task, completed=done, total=total)

    def stop() -> None:
        if started:
            progress.stop()

    return update, stop


@app.command("send-file")
def send_file(
    target: Annotated[str, typer.Argument(help=TARGET_HELP, metavar="TARGET")],
    path: Annotated[Path, typer.Argument(help="File to send.")],
    caption: Annotated[str, typer.Option(help="Optional caption.")] = "",
) -> None:
    """Encrypt, upload and send a file (with a progress bar).

    Example: vox send-file group:friends photo.jpg --caption "the view"
    """
    if not path.is_file():
        raise _fail(f"no such file: {path}")

    async def go(client: Api) -> str:
        update, stop = _progress_bar(path.name)
        to = await _target(client, target)
        try:
            result = await client.send_file(to, path, caption=caption, progress=update)
        finally:
            stop()
        return result.id

    typer.echo(run(_with_client(go)))


def _operation(kind: str, target: str | None) -> str:
    """``edit of #3f9a0c``, ``reaction to #3f9a0c``, ``timer change``, ``verify`` (the short
    id is the first digits of the message's id, as the TUI shows it)."""
    if target is None:
        return {"timer": "timer change"}.get(kind, kind)
    return f"{kind} {'to' if kind == 'reaction' else 'of'} #{target[:6]}"


@app.command()
def status() -> None:
    """Who this profile is, what is queued (written, not yet accepted by the relay: texts,
    files and operations — edits, deletes, reactions, timer changes, verifications — in the
    order they will go out), and the operations the relay refused for good ("not sent")."""

    async def go(client: Api) -> list[str]:
        where = f"{client.username} device {client.device_id} on {client.server_url}"
        if isinstance(client, RemoteApi):
            answer = await client.status()
            state = "connected" if answer["connected"] else "offline"
            lines = [f"{where} (daemon, {state})"]
            queued = [
                (q["id"], q["conversation"], "" if q.get("kind") in (None, "text", "file")
                 else f"[{_operation(q['kind'], q.get('target'))}]")
                for q in answer["queued"]
            ]  # fmt: skip
            failed = [
                (f["id"], f["conversation"], _operation(f["kind"], f["target"]), f["reason"])
                for f in answer.get("failed", ())
            ]
        else:
            lines = [where]
            texts = {m.id: m.text or "[file]" for m in client.queued()}
            ops = client.operations()
            labels = {o.id: f"[{_operation(o.kind, o.target)}]" for o in ops}
            queued = [
                (e.message_id, e.conversation, texts.get(e.message_id) or labels[e.message_id])
                for e in client.outbox.pending()
                if e.message_id in texts or e.message_id in labels
            ]
            failed = [
                (o.id, o.conversation, _operation(o.kind, o.target), o.reason)
                for o in ops
                if o.state == "failed"
            ]
        lines.append(f"queued: {len(queued)}")
        lines += [f"  {mid}  {conv}  {text[:40]}".rstrip() for mid, conv, text in queued]
        if failed:
            lines.append(f"not sent (refused for good): {len(failed)}")
            lines += [f"  {mid}  {conv}  [{op}] {why}" for mid, conv, op, why in failed]
        return lines

    for line in run(_with_client(go)):
        typer.echo(line)


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="milliseconds")


@app.command()
def receive(
    wait: Annotated[
        float, typer.Option(help="Exit after this many seconds with nothing new.")
    ] = 2.0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    save_dir: Annotated[
        Path | None, typer.Option(help="Where to save received files (default HOME/downloads).")
    ] = None,
) -> None:
    """Print (and ack) what arrives; exits after --wait seconds with nothing new. Each message
    line starts with the message's id (for edit, delete, react, send --reply-to). Printed
    messages count as read: read receipts go to their senders and the disappearing countdown
    of a message sent under a timer starts. While a daemon holds the profile it has already
    received (and acked) what came before: this prints what it receives from now on.

    Example: vox receive --wait 10
    """

    async def go(client: Api) -> None:
        target = save_dir or (STATE.home / "downloads")
        printed = _Printed(client)
        try:
            if isinstance(client, RemoteApi):
                await _receive_from_daemon(client, wait, as_json, target, printed)
            else:
                await _receive_here(client, wait, as_json, target, printed)
        finally:
            await printed.mark_read()

    run(_with_client(go))


class _Printed:
    """The incoming messages ``vox receive`` printed, to be marked read (in batches: after
    each burst and at the end), as reading them in the TUI would."""

    def __init__(self, client: Api) -> None:
        self.client = client
        self.unread: dict[str, list[str]] = {}

    def add(self, event: Event) -> None:
        if isinstance(event, Message) and not event.outgoing:
            self.unread.setdefault(event.conversation, []).append(event.id)

    async def mark_read(self) -> None:
        unread, self.unread = self.unread, {}
        for conversation, ids in unread.items():
            try:
                await self.client.mark_read(conversation, ids=ids)
            except ClientError as exc:
                typer.echo(f"vox: warning: could not mark messages read: {exc}", err=True)


async def _receive_here(
    client: VoxClient, wait: float, as_json: bool, target: Path, printed: _Printed
) -> None:
    queue: asyncio.Queue[Event] = asyncio.Queue()
    client.on_event(queue.put_nowait)
    done = asyncio.Event()
    signed_out: list[str] = []

    async def printer() -> None:
        while not (done.is_set() and queue.empty()):
            try:
                event = await asyncio.wait_for(queue.get(), 0.1)
            except TimeoutError:
                await printed.mark_read()  # a burst was printed: it has been read
                continue
            if isinstance(event, SignedOut):
                signed_out.append(event.reason)
            else:
                await _print_event(client, event, as_json, target)
                printed.add(event)

    task = asyncio.create_task(printer())
    try:
        await client.receive(wait)
    finally:
        done.set()
        await task
    if signed_out:  # what arrived before is printed and acked; then fail clearly
        raise _fail(signed_out[0])


async def _receive_from_daemon(
    client: RemoteApi, wait: float, as_json: bool, target: Path, printed: _Printed
) -> None:
    events = client.events()
    pending: asyncio.Future[Event] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            idle = 0.1 if printed.unread else wait
            if not (await asyncio.wait({pending}, timeout=idle))[0]:
                if not printed.unread:
                    return  # nothing new for --wait seconds
                await printed.mark_read()  # a burst was printed: it has been read
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            if isinstance(event, SignedOut):
                raise _fail(event.reason)
            await _print_event(client, event, as_json, target)
            printed.add(event)
    finally:
        if pending is not None:
            pending.cancel()


async def _print_event(client: Api, event: Event, as_json: bool, target: Path) -> None:
    if isinstance(event, Message):
        if event.attachment is not None and not event.outgoing:
            await asyncio.to_thread(target.mkdir, parents=True, exist_ok=True)
            try:
                path = await client.download(event, _unique(target, event.attachment.file_name))
                from dataclasses import replace

                event = replace(event, attachment=replace(event.attachment, path=path))
            except ClientError as exc:
                typer.echo(f"vox: warning: {exc}", err=True)
        if as_json:
            typer.echo(json.dumps(_event_json(event), ensure_ascii=False))
        else:
            when = dt.datetime.fromtimestamp(event.sent_at / 1000).strftime("%H:%M:%S")
            where = "" if event.conversation == event.sender else f" [{event.conversation}]"
            if event.group_id:  # the group's name, as in "group NAME (ID8): ..." lines
                names = {g.group_id: g.name for g in await _groups(client)}
                where = f" [group {names.get(event.group_id, '?')} ({event.group_id[:8]})]"
            body = event.text
            if event.attachment is not None:
                att = event.attachment
                body = f"[file] {att.file_name} ({format_size(att.size)})"
                if event.attachment.path:
                    body += f" -> {event.attachment.path}"
            typer.echo(f"{event.id}  {when}  {event.sender}:{event.device}{where}: {body}")
    elif isinstance(event, KeyChanged):
        typer.echo(
            f"vox: warning: the account key of {event.username} changed; "
            f"run 'vox verify {event.username}'",
            err=True,
        )
    elif isinstance(event, DecryptFailure):
        typer.echo(
            f"vox: warning: could not decrypt a message from {event.sender}:{event.device} "
            f"({event.error})",
            err=True,
        )
    elif isinstance(event, MessageSent | SendFailed) and as_json:
        typer.echo(json.dumps(_event_json(event), ensure_ascii=False))
    elif isinstance(event, SendFailed):
        what = _operation(event.kind, event.target)
        typer.echo(
            f"vox: warning: queued {what} {event.message_id} to {event.conversation} was "
            f"refused for good, not sent: {event.reason}",
            err=True,
        )
    elif isinstance(event, GroupChanged) and not as_json:
        typer.echo(f"group {event.name} ({event.group_id[:8]}): {event.action} by {event.by}")
    elif isinstance(event, MessageUpdate | ReceiptEvent | GroupChanged) and as_json:
        typer.echo(json.dumps(_event_json(event), ensure_ascii=False))
    elif isinstance(event, MessageUpdate) and event.kind != "expired":  # --json only
        typer.echo(_update_line(event))


def _event_json(event: Event) -> dict[str, Any]:
    """``vox receive --json``: every kind with a ``kind`` field (docs/protocol-client.md §9)."""
    from clients.daemon.codec import event_json

    out = event_json(event)
    if isinstance(event, Message):
        kind = "file" if event.attachment is not None else "text"
        out["kind"] = "reply" if event.reply_to is not None else kind
    return out


def _update_line(event: MessageUpdate) -> str:
    when = dt.datetime.fromtimestamp(event.at / 1000).strftime("%H:%M:%S")
    who = f"{event.sender}:{event.device}"
    where = "" if event.conversation == event.sender else f" [{event.conversation}]"
    target = event.target or ""
    if event.kind == "edit":
        return f"{when} {who}{where} edited {target}: {event.text}"
    if event.kind == "delete":
        return f"{when} {who}{where} deleted {target}"
    if event.kind == "reaction":
        if event.emoji:
            return f"{when} {who}{where} reacted {event.emoji} to {target}"
        return f"{when} {who}{where} removed the reaction to {target}"
    return f"{when} {timer_notice(who + where, event.seconds or 0)}"


def _unique(directory: Path, name: str) -> Path:
    base = Path(name).name or "attachment"
    candidate = directory / base
    n = 1
    while candidate.exists():
        candidate = directory / f"{Path(base).stem}-{n}{Path(base).suffix}"
        n += 1
    return candidate


# --- identity and devices -------------------------------------------------------------


@app.command()
def verify(
    username: Annotated[str, typer.Argument(help="The user to verify.")],
    accept: Annotated[
        bool,
        typer.Option(
            "--accept", help="The numbers match: mark their key verified (or accept a new one)."
        ),
    ] = False,
    clear: Annotated[
        bool,
        typer.Option(
            "--clear", help="Take the verification back: trusted on first use again (unverify)."
        ),
    ] = False,
) -> None:
    """Show the safety number with a user; --accept marks their (current) key verified,
    --clear takes a verification back. Either is told to your other devices (queued while
    the relay is unreachable: vox status lists it)."""
    if accept and clear:
        raise _fail("--accept and --clear exclude each other", 2)

    async def go(client: Api) -> str:
        result = await (
            client.accept_key(username)
            if accept
            else client.clear_verification(username)
            if clear
            else client.verify(username)
        )
        state = (
            "key CHANGED (not accepted)"
            if result.key_changed
            else ("verified" if result.verified else "trusted on first use")
        )
        return f"safety number with {username}:\n  {result.safety_number}\nstatus: {state}"

    typer.echo(run(_with_client(go)))


@app.command()
def devices() -> None:
    """List this account's devices (from its signed device list)."""

    async def go(client: Api) -> list[str]:
        return [
            f"{d.device_id}{' (this device)' if d.current else ''}  {d.identity_key_hex[:16]}…"
            for d in await client.devices()
        ]

    for line in run(_with_client(go)):
        typer.echo(line)


@app.command()
def unlink(
    device_id: Annotated[int, typer.Argument(help="The device to remove (see `vox devices`).")],
) -> None:
    """Remove another device of this account (e.g. a lost laptop) from the signed device list;
    the relay drops its queue, its connection and its tokens at once."""

    async def go(client: Api) -> str:
        await client.remove_device(device_id)
        return f"removed device {device_id}"

    typer.echo(run(_with_client(go)))


@app.command()
def link(
    wait: Annotated[float, typer.Option(help="Seconds to wait for the new device.")] = 300.0,
) -> None:
    """Show a one-time code to type into `vox join` on the new device, and wait for it."""

    async def go(client: Api) -> int:
        invitation = await client.link()
        typer.echo(
            f"on the new device run:  vox join {invitation.code} --server {client.server_url}"
        )
        sys.stdout.flush()
        return await client.wait_linked(invitation, within=wait)

    device_id = run(_with_client(go))
    typer.echo(f"linked device {device_id}")


@app.command()
def join(
    code: Annotated[str, typer.Argument(help="The code shown by `vox link`.")],
    server: Annotated[str, typer.Option("--server", help="Relay URL.")],
) -> None:
    """Become a new device of an existing account."""

    async def go() -> str:
        client = await VoxClient.join(
            STATE.home, server, code, passphrase=_passphrase(), lock_timeout=STATE.lock_timeout
        )
        try:
            return f"joined as {client.username} device {client.device_id}"
        finally:
            await client.close()

    typer.echo(run(go()))


# --- groups ---------------------------------------------------------------------------


@group_app.command("create")
def group_create(
    name: Annotated[str, typer.Argument(help="Group name.")],
    members: Annotated[list[str], typer.Argument(help="Usernames to add.")],
) -> None:
    """Create a group; prints its id."""

    async def go(client: Api) -> str:
        return (await client.create_group(name, members)).group_id

    typer.echo(run(_with_client(go)))


@group_app.command("add")
def group_add(
    group: Annotated[str, typer.Argument(help="Group id or name.")],
    members: Annotated[list[str], typer.Argument(help="Usernames to add.")],
) -> None:
    """Add members to a group."""

    async def go(client: Api) -> str:
        info = await client.add_members(group, members)
        return " ".join(info.members)

    typer.echo(run(_with_client(go)))


@group_app.command("remove")
def group_remove(
    group: Annotated[str, typer.Argument(help="Group id or name.")],
    members: Annotated[list[str], typer.Argument(help="Usernames to remove.")],
) -> None:
    """Remove members from a group (everyone rotates their sender key)."""

    async def go(client: Api) -> str:
        info = await client.remove_members(group, members)
        return " ".join(info.members)

    typer.echo(run(_with_client(go)))


@group_app.command("leave")
def group_leave(
    group: Annotated[str, typer.Argument(help="Group id or name.")],
) -> None:
    """Leave a group (the remaining members rotate their sender keys)."""

    async def go(client: Api) -> str:
        await client.leave_group(group)
        return f"left {group}"

    typer.echo(run(_with_client(go)))


@group_app.command("send")
def group_send(
    group: Annotated[str, typer.Argument(help="Group id or name.")],
    text: Annotated[str, typer.Argument(help="Message text.")],
) -> None:
    """Send a text to a group; exits 0 once the relay accepted it."""

    async def go(client: Api) -> str:
        return (await client.send_group_text(group, text)).id

    typer.echo(run(_with_client(go)))


@group_app.command("send-file")
def group_send_file(
    group: Annotated[str, typer.Argument(help="Group id or name.")],
    path: Annotated[Path, typer.Argument(help="File to send.")],
    caption: Annotated[str, typer.Option(help="Optional caption.")] = "",
) -> None:
    """Send a file to a group. Example: vox group send-file friends photo.jpg"""
    send_file("group:" + group.removeprefix("group:"), path, caption)


@group_app.command("list")
def group_list() -> None:
    """List groups: id, name, members."""

    async def go(client: Api) -> list[str]:
        return [f"{g.group_id}  {g.name}  {' '.join(g.members)}" for g in await _groups(client)]

    for line in run(_with_client(go)):
        typer.echo(line)


# --- account deletion and passphrase -----------------------------------------------------


@account_app.command("delete")
def account_delete(
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete your whole account on the relay (every device), then this local profile.

    The relay deletes the account's devices, queued messages, prekeys and uploaded files;
    contacts see the account as deleted; the name stays reserved for a while (the relay's
    quarantine). Received files in HOME/downloads are kept.

    Example: vox account delete --yes
    """
    from clients.sdk.account import delete_account, remove_profile_files

    async def go(client: VoxClient) -> str:
        if not yes:
            typer.echo(
                f"This deletes the account {client.username} on {client.server_url} for every "
                "device, and this profile. It cannot be undone.",
                err=True,
            )
            answer = typer.prompt("Type the username to confirm", default="", err=True)
            if answer.strip() != client.username:
                raise _fail("not confirmed; nothing was deleted")
        await delete_account(client)
        return client.username

    username = run(_with_local_client(go))
    if remove_profile_files(STATE.home):
        where = f"removed the local profile {STATE.home}"
    else:
        where = f"removed the local profile's files; {STATE.home} still holds your other files"
    typer.echo(f"deleted account {username}; {where}")


@passphrase_app.command("change")
def passphrase_change(
    remove: Annotated[
        bool, typer.Option("--remove", help="Use a 0600 key file instead of a passphrase.")
    ] = False,
) -> None:
    """Set, change or (--remove) drop the passphrase that encrypts this profile.

    The current one comes from VOX_PASSPHRASE or is asked for; the new one from
    VOX_NEW_PASSPHRASE or is asked for twice (no echo).

    Example: vox passphrase change
    """
    from clients.sdk.account import change_passphrase

    new: str | None = None
    if not remove:
        new = os.environ.get("VOX_NEW_PASSPHRASE") or None
        if new is None:
            new = _ask_secret("New passphrase: ")
            if _ask_secret("New passphrase again: ") != new:
                raise _fail("the two passphrases differ; nothing was changed")
        if not new:
            raise _fail("the new passphrase must not be empty (use --remove for none)")

    async def go(client: VoxClient) -> None:
        change_passphrase(client, new)

    run(_with_local_client(go))
    typer.echo("passphrase removed (a key file is used)" if remove else "passphrase changed")


# --- daemon and TUI -------------------------------------------------------------------


@app.command()
def jsonrpc() -> None:
    """The daemon's JSON-RPC 2.0 on stdin/stdout, one request per line (for bots); through
    the running daemon if there is one. Ends when stdin ends."""
    from clients.daemon import serve_stdio

    run(serve_stdio(STATE.home, passphrase=_passphrase(), lock_timeout=STATE.lock_timeout))


@app.command()
def daemon() -> None:
    """Hold the profile and serve JSON-RPC 2.0 on HOME/vox.sock (see docs/daemon.md); vox
    commands then talk to it. Stops on SIGINT/SIGTERM."""
    from clients.daemon import serve

    def announce(line: str) -> None:
        typer.echo(line)
        sys.stdout.flush()

    run(serve(STATE.home, passphrase=_passphrase(), lock_timeout=STATE.lock_timeout,
              announce=announce))  # fmt: skip


@app.command()
def chat(
    target: Annotated[str | None, typer.Argument(help="A username or group to open.")] = None,
    no_notify: Annotated[
        bool,
        typer.Option(
            "--no-notify",
            help="No bell or desktop notification for messages in other chats "
            "(also VOX_CHAT_NOTIFY=0; VOX_CHAT_NOTIFY=bell: the bell only).",
        ),
    ] = False,
) -> None:
    """Open the terminal chat (Textual TUI)."""
    if no_notify:
        os.environ["VOX_CHAT_NOTIFY"] = "0"  # read by the TUI (clients.tui.notify)
    try:
        from clients import tui
    except ImportError:
        raise _fail("the TUI is not installed in this build") from None
    launcher = getattr(tui, "run", None) or getattr(tui, "main", None)
    if launcher is None:
        raise _fail("the TUI has no entry point")
    try:
        launcher(home=STATE.home, target=target, passphrase=_passphrase())
    except ClientError as exc:
        raise _fail(str(exc)) from None


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit:
        raise
    except Exception as exc:  # pragma: no cover - last resort: no tracebacks
        typer.echo(f"vox: error: unexpected {type(exc).__name__}", err=True)
        raise SystemExit(3) from None


if __name__ == "__main__":  # pragma: no cover
    main()
