"""Pending sends and their retries: the client engine's send state machine, sans-I/O.

The shell (:mod:`clients.sdk.pipeline`) feeds :class:`SendQueue` events — a send submitted,
its frames written (or the write failed), an answer from the relay, the connection up or
down, a timer tick — each with the current (monotonic) time, and executes the actions it
returns: :class:`Transmit` (build, encrypt and write a send's frames), :class:`FrameAccepted`
(record what only an accepted frame may record), :class:`Finished` (accepted or failed for
good) and :class:`Queued` (a durable send the relay cannot take now: kept, resumed on the next
connection). :meth:`SendQueue.deadline` says when to call :meth:`SendQueue.tick` next.

Rules:

* a refused send is retried with the **same client id**, so the relay never stores it twice:
  ``mismatch`` at once, after refreshing the named users' device lists and dropping the stale
  sessions; ``busy``/``internal``/``rate_limited``/``shutting_down`` and a lost connection after
  :func:`backoff`; anything else fails at once (:func:`classify`);
* a send written on a connection that is gone, or unanswered for :attr:`SendQueue.answer_timeout`
  seconds, counts as a lost connection;
* while the connection is down and being re-established, a send waits (at most
  :attr:`SendQueue.offline_patience` seconds); a process that never connected fails its first
  attempt at once;
* after :attr:`SendQueue.max_attempts` attempts a *durable* send (an outbox message) is
  :class:`Queued`, not failed: it stays here and is resumed on the next connection, after
  :attr:`SendQueue.requeue_after` seconds while connected, or when a new send joins its lane;
* **lanes** (a conversation): at most :attr:`SendQueue.lane_window` (default
  :data:`LANE_WINDOW`) sends of a lane are on their way at a time, in submission order, and
  none while an earlier one waits for a retry; while the head of a lane is queued, every
  later send of the lane is queued behind it;
* **the lane fence** (``docs/protocol-ws.md`` §3.1.4): each frame names its lane predecessor
  (:meth:`SendQueue.predecessor`, the frame's ``after``) — the last frame of the nearest
  earlier send of its lane still pending — so the relay stores it only once that one is
  stored. A send refused with ``predecessor_missing`` goes back into its lane without using
  up an attempt and goes out again once its predecessor has (or once that one is done);
* a send none of whose frames was ever written may be **cancelled** (:meth:`SendQueue.cancel`:
  our message deleted before it left); a written one cannot be recalled.

So two messages of one conversation can never be stored by the relay out of order — not
after a refused send, a dropped connection or a restart (the outbox reloads its messages in
the order they were written) — while up to a window of them are on their way at once.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from clients.sdk.errors import ClientError, RelayRejected, RelayUnavailable, UnknownUser
from wire.codes import RETRYABLE_SEND_ERRORS, ErrorCode
from wire.frames import AcceptedFrame, ErrorFrame, MismatchFrame

__all__ = [
    "LANE_WINDOW",
    "Accepted",
    "Action",
    "Fail",
    "Fenced",
    "Finished",
    "FrameAccepted",
    "Queued",
    "Retry",
    "SendAnswer",
    "SendOutcome",
    "SendQueue",
    "Transmit",
    "backoff",
    "classify",
    "is_transient",
]

SendAnswer = AcceptedFrame | MismatchFrame | ErrorFrame
Address = tuple[str, int]

#: Default sends of one lane on their way at once (the fence keeps their order).
LANE_WINDOW = 10


# --- the decision on one answer ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accepted:
    """The relay stored the send (``ts``: its acceptance time, Unix ms; ``None`` when there
    was nothing to send)."""

    ts: int | None


@dataclass(frozen=True, slots=True)
class Retry:
    """Send again (same client id) after ``delay`` seconds, first refreshing ``refresh``'s
    device lists and dropping the sessions with ``drop``; ``error`` is the failure reported
    if no attempt is left."""

    delay: float
    error: ClientError
    refresh: frozenset[str] = frozenset()
    drop: tuple[Address, ...] = ()


@dataclass(frozen=True, slots=True)
class Fail:
    """Give up: ``error``. ``written``: whether any frame of the send was ever written (a send
    that never left may be forgotten without a trace)."""

    error: Exception
    written: bool = True


@dataclass(frozen=True, slots=True)
class Fenced:
    """``predecessor_missing``: the send's lane predecessor is not stored yet; send it again
    once the predecessor has gone out again (or is done). Not a failed attempt."""


SendOutcome = Accepted | Retry | Fail | Fenced


def backoff(attempt: int) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (0.2 s doubling, at most 2 s)."""
    return float(min(0.2 * 2**attempt, 2.0))


def classify(answer: SendAnswer, users: Iterable[str], attempt: int) -> SendOutcome:
    """What an answer means (``users``: who the send was addressed to)."""
    if isinstance(answer, AcceptedFrame):
        return Accepted(answer.ts)
    if isinstance(answer, MismatchFrame):
        changed = frozenset(d.user for d in (*answer.missing, *answer.stale))
        drop = tuple((d.user, d.device) for d in answer.stale)
        error = RelayRejected(409, "mismatch", "device lists kept changing")
        return Retry(0.0, error, changed, drop)
    code = answer.code
    if code == ErrorCode.PREDECESSOR_MISSING:
        return Fenced()
    if code == ErrorCode.UNKNOWN_USER:
        bad = answer.users or sorted(users)
        return Fail(UnknownUser(str(bad[0])))
    if code in RETRYABLE_SEND_ERRORS:
        return Retry(backoff(attempt), RelayRejected(429, code, answer.message))
    return Fail(RelayRejected(400, code, answer.message))


def _refuses_after(answer: ErrorFrame) -> bool:
    """A relay that predates the lane fence refused the ``after`` field itself."""
    return answer.code == ErrorCode.BAD_FRAME and answer.message.startswith("after:")


def is_transient(error: Exception) -> bool:
    """Whether the relay may take the send later (unreachable, or busy after every retry)."""
    return isinstance(error, RelayUnavailable) or (
        isinstance(error, RelayRejected) and error.code in RETRYABLE_SEND_ERRORS
    )


# --- actions -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transmit:
    """Build (encrypt) send ``key`` for ``users`` and write its frames: first refetch the
    device lists of ``refresh`` (and every due list if ``force``) and drop the ``drop``
    sessions; then report :meth:`SendQueue.expect` before writing and
    :meth:`SendQueue.write_failed` if building or writing fails."""

    key: str
    attempt: int
    users: frozenset[str]
    refresh: frozenset[str] = frozenset()
    drop: tuple[Address, ...] = ()
    force: bool = False


@dataclass(frozen=True, slots=True)
class FrameAccepted:
    """The relay accepted frame ``client_id`` of send ``key``."""

    key: str
    client_id: str
    ts: int


@dataclass(frozen=True, slots=True)
class Finished:
    """Send ``key`` is done: accepted or failed for good. ``announce``: it had been reported
    queued, so whoever waited was told so and must now hear that it went out."""

    key: str
    outcome: Accepted | Fail
    announce: bool = False


@dataclass(frozen=True, slots=True)
class Queued:
    """Durable send ``key`` cannot go out now (``error``); it is kept and resumed later."""

    key: str
    error: Exception


Action = Transmit | FrameAccepted | Finished | Queued


# --- the state machine ----------------------------------------------------------------------


class _State(enum.Enum):
    READY = "ready"  # to transmit when due (and first in its lane, and connected)
    SENDING = "sending"  # Transmit emitted: the shell builds and writes
    IN_FLIGHT = "in flight"  # frames written: awaiting their answers
    QUEUED = "queued"  # durable, held until resumed


_ON_THEIR_WAY = (_State.SENDING, _State.IN_FLIGHT)


@dataclass(slots=True, eq=False)  # identity: a send is found in its lane's list by itself
class _Send:
    key: str
    order: int
    users: frozenset[str]
    lane: str | None
    durable: bool
    state: _State = _State.READY
    attempt: int = 0
    due: float = 0.0
    held_since: float | None = None  # waiting for a connection since
    refresh: frozenset[str] = frozenset()
    drop: tuple[Address, ...] = ()
    force: bool = False
    awaiting: list[str] = field(default_factory=list)
    answer_by: float = math.inf
    written: bool = False
    reported: bool = False  # a Queued action was emitted
    last_ts: int | None = None
    frames: list[str] = field(default_factory=list)  # client ids of the last attempt written
    transmits: int = 0  # Transmit actions emitted so far
    #: Refused with ``predecessor_missing``: (predecessor key, its transmits then); held
    #: until that send goes out again or is done.
    fenced: tuple[str, int] | None = None
    error: Exception | None = None  # why it was queued


class SendQueue:
    """Every send of one client that the relay has not answered for good, with its retries."""

    def __init__(
        self,
        *,
        max_attempts: int = 5,
        answer_timeout: float = 30.0,
        offline_patience: float = 10.0,
        requeue_after: float = 30.0,
        lane_window: int = LANE_WINDOW,
    ) -> None:
        self.max_attempts = max_attempts
        #: Sends of one lane on their way at once (each naming its predecessor: the relay's
        #: fence keeps their order). 1: one at a time, no ``after`` ever needed.
        self.lane_window = lane_window
        #: Whether the relay takes ``after``. A relay older than the fence refuses the field
        #: (``bad_frame``, ``after: ...``): from then on no send names a predecessor and one
        #: send per lane is on its way at a time.
        self.fence = True
        self.answer_timeout = answer_timeout
        self.offline_patience = offline_patience
        self.requeue_after = requeue_after
        self.online = False
        self.reconnecting = False  # a reader re-establishes a lost connection by itself
        #: Every pending send, in submission (``order``) order: a dict keeps its insertion
        #: order and a send is inserted once, when submitted.
        self._sends: dict[str, _Send] = {}
        #: The pending sends of each lane, in order (so a lane's rules look at that lane and at
        #: most a window of it, not at every pending send of the client).
        self._lanes: dict[str, list[_Send]] = {}
        self._by_frame: dict[str, str] = {}  # frame client id -> send key
        self._order = itertools.count()

    # --- inspection ------------------------------------------------------------------------

    def __contains__(self, key: str) -> bool:
        return key in self._sends

    def __len__(self) -> int:
        return len(self._sends)

    def lane(self, lane: str) -> list[str]:
        """The keys of ``lane``'s pending sends, in order."""
        return [s.key for s in self._lanes.get(lane, ())]

    def queued(self) -> list[str]:
        """Keys of the sends that are queued (held until resumed), in order."""
        return [s.key for s in self._ordered() if s.state is _State.QUEUED]

    def predecessor(self, key: str) -> str | None:
        """The client id that the first frame of send ``key`` names in ``after``: the last
        frame of the nearest earlier send of its lane still pending (its key if it never was
        written: the SDK's message sends end with a frame whose client id is their key);
        ``None`` when there is none. Asked when writing, after :meth:`expect`."""
        send = self._sends.get(key)
        if send is None or send.lane is None or not self.fence:
            return None
        ahead = self._ahead(send)
        if not ahead:
            return None
        last = ahead[-1]
        return last.frames[-1] if last.frames else last.key

    def deadline(self) -> float | None:
        """When :meth:`tick` must be called next (``None``: nothing is timed)."""
        # Asked after every event (the shell re-arms its timer): one pass, no list.
        first: float | None = None
        in_flight, queued, ready = _State.IN_FLIGHT, _State.QUEUED, _State.READY
        for send in self._sends.values():
            state = send.state
            if state is in_flight:
                at = send.answer_by
            elif state is queued:
                if not self.online or send.due == math.inf:
                    continue
                at = send.due
            elif state is ready and self._may_go(send):
                held = send.held_since
                at = send.due if held is None else held + self.offline_patience
            else:
                continue
            if first is None or at < first:
                first = at
        return first

    # --- events in -----------------------------------------------------------------------

    def submit(
        self,
        key: str,
        users: Iterable[str],
        now: float,
        *,
        lane: str | None = None,
        durable: bool = False,
        queued: bool = False,
    ) -> list[Action]:
        """A new send. ``lane`` orders it behind the lane's earlier sends; ``durable`` keeps it
        (queued) when the relay cannot take it; ``queued`` adds it held (an outbox message
        reloaded after a restart), to go out when resumed. A new send resumes its lane."""
        if key in self._sends:
            raise ValueError(f"send {key} is already pending")
        send = _Send(key, next(self._order), frozenset(users), lane, durable or queued, due=now)
        if queued:
            send.state, send.reported, send.due = _State.QUEUED, True, math.inf
        self._sends[key] = send
        if lane is not None:
            self._lanes.setdefault(lane, []).append(send)
        if not queued and lane is not None:  # only its lane's sends: not every pending one
            self._resume(now, lambda s: True, self._lanes[lane])
        return self._pump(now)

    def connection_up(self, now: float) -> list[Action]:
        """A connection is established: resume every queued send."""
        self.online = self.reconnecting = True
        for send in self._sends.values():
            send.held_since = None
        self._resume(now, lambda s: True)
        return self._pump(now)

    def connection_down(
        self, now: float, error: RelayUnavailable, *, reconnecting: bool
    ) -> list[Action]:
        """The connection is gone (``reconnecting``: a reader re-establishes it). Every
        send awaiting answers lost them."""
        self.online, self.reconnecting = False, reconnecting
        actions: list[Action] = []
        for send in self._ordered():
            if send.state is _State.IN_FLIGHT:
                actions += self._failed(send, Retry(backoff(send.attempt), error), now)
        return actions + self._pump(now)

    def expect(self, key: str, attempt: int, client_ids: Iterable[str], now: float) -> list[Action]:
        """Send ``key`` (attempt ``attempt``) was built: its frames ``client_ids`` are about to
        be written, answers may arrive from now on. No frame at all: accepted as is."""
        send = self._current(key, attempt, _State.SENDING)
        if send is None:
            return []
        ids = list(client_ids)
        if not ids:
            return self._finish(send, Accepted(None), now)
        send.state, send.awaiting, send.written = _State.IN_FLIGHT, ids, True
        send.frames = list(ids)
        send.answer_by = now + self.answer_timeout
        for client_id in ids:
            self._by_frame[client_id] = key
        return []

    def write_failed(self, key: str, attempt: int, error: Exception, now: float) -> list[Action]:
        """Building or writing send ``key`` failed: a lost connection is retried (a process
        that never connected gives up at once), anything else fails for good."""
        send = self._current(key, attempt, _State.SENDING, _State.IN_FLIGHT)
        if send is None:
            return []
        if not isinstance(error, RelayUnavailable):
            return self._finish(send, Fail(error, send.written), now)
        if not self.reconnecting and not self.online:
            return self._give_up(send, error, now)
        return self._failed(send, Retry(backoff(attempt), error), now)

    def answer(self, answer: SendAnswer, now: float) -> list[Action]:
        """The relay answered a frame (an answer to no pending frame is ignored)."""
        key = self._by_frame.pop(str(answer.id), None)
        send = self._sends.get(key) if key is not None else None
        if send is None or send.state is not _State.IN_FLIGHT or answer.id not in send.awaiting:
            return []
        if isinstance(answer, ErrorFrame) and _refuses_after(answer):
            # A relay without the fence: resend without ``after``, one per lane at a time.
            self.fence = False
            return self._fenced(send, now) + self._pump(now)
        outcome = classify(answer, send.users, send.attempt)
        if isinstance(outcome, Accepted):
            assert outcome.ts is not None
            send.awaiting.remove(answer.id)
            send.last_ts = outcome.ts
            actions: list[Action] = [FrameAccepted(send.key, answer.id, outcome.ts)]
            if not send.awaiting:
                actions += self._finish(send, outcome, now)
            return actions
        if isinstance(outcome, Fail):
            return self._finish(send, outcome, now)
        if isinstance(outcome, Fenced):
            return self._fenced(send, now) + self._pump(now)
        return self._failed(send, outcome, now) + self._pump(now)

    def tick(self, now: float) -> list[Action]:
        """Time passed: unanswered sends count as lost, due retries go out, sends that waited
        too long for a connection give up."""
        actions: list[Action] = []
        lost = RelayUnavailable("the relay", "no answer to a send")
        for send in self._ordered():
            if send.state is _State.IN_FLIGHT and now >= send.answer_by:
                actions += self._failed(send, Retry(backoff(send.attempt), lost), now)
        if self.online:
            self._resume(now, lambda s: s.due <= now)
        return actions + self._pump(now)

    def cancel(self, key: str, now: float) -> list[Action] | None:
        """Withdraw send ``key`` if none of its frames was ever written (its Transmit, if one
        is out, must not have been built yet: the shell checks that): it is forgotten without
        an outcome, and its lane goes on without it. ``None``: it was written (the relay may
        hold it) and stays; a send not pending here is nothing to cancel (``[]``)."""
        send = self._sends.get(key)
        if send is None:
            return []
        if send.written or send.state is _State.IN_FLIGHT:
            return None
        self._forget_frames(send)
        self._remove(send)
        return self._pump(now)

    def abandon(self, error: RelayUnavailable) -> list[Action]:
        """The client is closing: every pending send ends (durable ones queued, kept by the
        caller's store); nothing is pending afterwards."""
        actions: list[Action] = []
        for send in self._ordered():
            if send.durable:
                if not send.reported:
                    actions.append(Queued(send.key, error))
            else:
                actions.append(Finished(send.key, Fail(error, send.written)))
        self._sends.clear()
        self._lanes.clear()
        self._by_frame.clear()
        self.online = self.reconnecting = False
        return actions

    # --- transitions ---------------------------------------------------------------------

    def _ordered(self) -> list[_Send]:
        return list(self._sends.values())  # inserted in order (see ``_sends``)

    def _ahead(self, send: _Send) -> list[_Send]:
        """The pending sends of ``send``'s lane before it, in order."""
        lane = self._lanes.get(send.lane) if send.lane is not None else None
        if not lane:
            return []
        for i, other in enumerate(lane):
            if other is send:
                return lane[:i]
        return []

    def _remove(self, send: _Send) -> None:
        del self._sends[send.key]
        if send.lane is not None:
            lane = self._lanes[send.lane]
            lane.remove(send)  # by identity (``eq=False``); usually the lane's head
            if not lane:
                del self._lanes[send.lane]

    def _current(self, key: str, attempt: int, *states: _State) -> _Send | None:
        send = self._sends.get(key)
        if send is None or send.attempt != attempt or send.state not in states:
            return None  # a stale report (the send moved on meanwhile)
        return send

    def _may_go(self, send: _Send) -> bool:
        """Whether ``send`` may be transmitted as far as its lane is concerned: fewer than
        :attr:`lane_window` sends ahead of it, all of them on their way, and (after a
        ``predecessor_missing``) the predecessor sent again or done."""
        if send.lane is None:
            return True
        if send.fenced is not None:
            key, transmits = send.fenced
            before = self._sends.get(key)
            if before is not None and before.transmits == transmits:
                return False
        window = self.lane_window if self.fence else 1
        # Fewer than ``window`` sends ahead, all on their way: at most a window is looked at.
        for i, other in enumerate(self._lanes[send.lane]):
            if other is send:
                return i < window
            if i + 1 >= window or other.state not in _ON_THEIR_WAY:
                return False
        return False

    def _resume(
        self, now: float, which: Callable[[_Send], bool], sends: Iterable[_Send] | None = None
    ) -> None:
        """Make the queued ``sends`` (default: every pending send) that ``which`` picks ready."""
        for send in self._sends.values() if sends is None else sends:
            if send.state is _State.QUEUED and which(send):
                send.state, send.attempt, send.due, send.held_since = _State.READY, 0, now, None

    def _forget_frames(self, send: _Send) -> None:
        for client_id in send.awaiting:
            self._by_frame.pop(client_id, None)
        send.awaiting = []
        send.answer_by = math.inf

    def _failed(self, send: _Send, retry: Retry, now: float) -> list[Action]:
        """One attempt failed: retry after ``retry.delay`` or give up."""
        self._forget_frames(send)
        send.attempt += 1
        send.refresh |= retry.refresh
        send.drop += retry.drop
        send.force = send.force or bool(retry.refresh)
        send.users |= retry.refresh
        if send.attempt >= self.max_attempts:
            return self._give_up(send, retry.error, now)
        send.state, send.due, send.held_since = _State.READY, now + retry.delay, None
        return []

    def _fenced(self, send: _Send, now: float) -> list[Action]:
        """Refused with ``predecessor_missing``: back into the lane behind its predecessor
        (held until that one goes out again or is done), without using up an attempt."""
        self._forget_frames(send)
        ahead = self._ahead(send)
        send.state, send.due, send.held_since = _State.READY, now, None
        if not ahead:
            return []
        before = ahead[-1]
        send.fenced = (before.key, before.transmits)
        head = next((s for s in ahead if s.state is _State.QUEUED), None)
        if head is None:
            return []
        # The lane is held behind a queued send: this one is queued with it.
        send.state, send.due = _State.QUEUED, head.due
        if send.reported:
            return []
        send.reported = True
        error = head.error or RelayUnavailable("the relay", "queued behind an earlier send")
        return [Queued(send.key, error)]

    def _give_up(self, send: _Send, error: Exception, now: float) -> list[Action]:
        self._forget_frames(send)
        if not (send.durable and is_transient(error)):
            return self._finish(send, Fail(error, send.written), now)
        return self._queue(send, error, now)

    def _queue(self, send: _Send, error: Exception, now: float) -> list[Action]:
        send.state, send.attempt, send.held_since = _State.QUEUED, 0, None
        send.due, send.error = now + self.requeue_after, error
        actions: list[Action] = []
        if not send.reported:
            send.reported = True
            actions.append(Queued(send.key, error))
        if send.lane is not None:  # everything behind it in its lane waits too
            for other in self._lanes[send.lane]:
                behind = other.order > send.order
                if behind and other.state is _State.READY:
                    other.state, other.due, other.held_since = _State.QUEUED, send.due, None
                    other.error = error
                    if not other.reported:
                        other.reported = True
                        actions.append(Queued(other.key, error))
        return actions

    def _finish(self, send: _Send, outcome: Accepted | Fail, now: float) -> list[Action]:
        self._forget_frames(send)
        self._remove(send)
        if isinstance(outcome, Accepted) and outcome.ts is None:
            outcome = Accepted(send.last_ts)
        return [Finished(send.key, outcome, send.reported), *self._pump(now)]

    def _pump(self, now: float) -> list[Action]:
        """Transmit every send that is due, first in its lane and may go now."""
        actions: list[Action] = []
        for send in self._ordered():
            if send.state is not _State.READY or self._sends.get(send.key) is not send:
                continue  # not ready, or finished meanwhile
            if not self._may_go(send):
                continue
            if not self.online and self.reconnecting:
                if send.held_since is None:
                    send.held_since = now
                elif now >= send.held_since + self.offline_patience:
                    error = RelayUnavailable("the relay", "not connected")
                    actions += self._give_up(send, error, now)
                continue
            if send.due > now:
                continue
            send.state, send.fenced = _State.SENDING, None
            send.transmits += 1
            actions.append(
                Transmit(send.key, send.attempt, send.users, send.refresh, send.drop, send.force)
            )
            send.refresh, send.drop = frozenset(), ()
        return actions
