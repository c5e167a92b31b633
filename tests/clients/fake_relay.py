"""A fake relay pair harness for the sans-I/O client engine (h11's ``ConnectionPair`` idea).

:class:`FakeRelay` keeps the relay's delivery rules on the :mod:`wire` types — device sets per
account (``mismatch``), de-duplication by (sending device, client id), per-device queues,
acks — and can be told to refuse the next sends with an error code or to lose an answer.
:class:`Device` is one client device: a :class:`~clients.sdk.protocol.ClientProtocol` and a
:class:`~clients.sdk.engine.ClientEngine` over an in-memory store, driven synchronously by
:meth:`Device.send_text` and :meth:`Device.receive` the way the asyncio shell drives them
(``clients/sdk/pipeline.py``), with a fake clock: no sockets, no sleeping, milliseconds.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from clients.sdk import identity as ids
from clients.sdk import trust
from clients.sdk.content import TextContent
from clients.sdk.engine import Answer, ClientEngine, Process, ack_frames, send_frame
from clients.sdk.errors import RelayUnavailable
from clients.sdk.models import Event
from clients.sdk.peers import device_bundle
from clients.sdk.protocol import ClientProtocol, Envelope, NeedDeviceList, OutgoingSend
from clients.sdk.sendqueue import Accepted, Action, Fail, Finished, Queued, Transmit
from clients.store.memory import MemoryStore
from crypto.device_list import DeviceList
from crypto.keys import AccountKey
from wire.frames import (
    AcceptedFrame,
    DeliverFrame,
    DeviceRef,
    ErrorFrame,
    MismatchFrame,
    SendFrame,
    ServerFrame,
    parse_server_frame,
)
from wire.rest import BundleDevice, OneTimePrekeyOut, PrekeyUpload, SignedPrekeyOut

Address = tuple[str, int]


@dataclass
class FakeRelay:
    """The relay's delivery semantics in memory (``docs/protocol-ws.md`` §3-5)."""

    devices: dict[str, dict[int, Device]] = field(default_factory=dict)
    account_keys: dict[str, bytes] = field(default_factory=dict)
    device_lists: dict[str, bytes] = field(default_factory=dict)
    queues: dict[Address, list[DeliverFrame]] = field(default_factory=lambda: defaultdict(list))
    answers: dict[tuple[Address, str], ServerFrame] = field(default_factory=dict)
    #: Error codes to answer the next sends that pass the lane fence with (nothing stored).
    refuse: list[str] = field(default_factory=list)
    #: How many of the next accepted sends have their answer lost (stored, not answered).
    lose_answers: int = 0
    stored: int = 0
    #: Every stored send as (sender, client id), in the order the relay accepted them.
    log: list[tuple[Address, str]] = field(default_factory=list)
    #: How many of the next frames are lost on the way (neither stored nor answered).
    blackhole: int = 0
    #: Enforce the lane fence (``after``); ``False``: a relay that ignores it.
    fence: bool = True
    #: ``False``: a relay older than the fence, which refuses the ``after`` field.
    knows_after: bool = True
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    now_ms: int = 1_700_000_000_000

    def handle(self, sender: Address, frame: SendFrame) -> ServerFrame | None:
        """A ``send`` from ``sender``; returns the answer (``None``: lost on the way)."""
        key = (sender, frame.id)
        if self.blackhole:
            self.blackhole -= 1
            return None
        if key in self.answers:  # a repeated id is answered again, never stored twice
            return self.answers[key]
        if not self.knows_after and frame.after is not None:
            return ErrorFrame(
                id=frame.id, code="bad_frame", message="after: Extra inputs are not permitted"
            )
        if self.fence and frame.after is not None and (sender, frame.after) not in self.answers:
            return ErrorFrame(id=frame.id, code="predecessor_missing", message="resend the lane")
        if self.refuse:
            code = self.refuse.pop(0)
            return ErrorFrame(id=frame.id, code=code, message="refused by the fake relay")
        addressed: dict[str, set[int]] = defaultdict(set)
        for payload in frame.payloads:
            for r in payload.to:
                addressed[r.user].add(r.device)
        if not frame.ephemeral:
            addressed.setdefault(sender[0], set())
        missing: list[DeviceRef] = []
        stale: list[DeviceRef] = []
        for user, got in sorted(addressed.items()):
            expected = set(self.devices[user]) - ({sender[1]} if user == sender[0] else set())
            missing += [DeviceRef(user=user, device=d) for d in sorted(expected - got)]
            stale += [DeviceRef(user=user, device=d) for d in sorted(got - expected)]
        if missing or stale:
            return MismatchFrame(id=frame.id, missing=missing, stale=stale)
        envelope = f"{next(self._seq):032x}"
        for payload in frame.payloads:
            for r in payload.to:
                self.queues[(r.user, r.device)].append(
                    DeliverFrame.model_validate(
                        {
                            "seq": next(self._seq),
                            "envelope": envelope,
                            "from": {"user": sender[0], "device": sender[1]},
                            "ts": self.now_ms,
                            "data": payload.data,
                        }
                    )
                )
        self.stored += 1
        self.log.append(key)
        answer = AcceptedFrame(id=frame.id, envelope=envelope, ts=self.now_ms)
        self.answers[key] = answer
        if self.lose_answers:
            self.lose_answers -= 1
            return None
        return answer

    def ack(self, address: Address, seqs: list[int]) -> None:
        """Acked envelopes are deleted."""
        done = set(seqs)
        self.queues[address] = [f for f in self.queues[address] if f.seq not in done]


@dataclass
class Device:
    """One client device on a :class:`FakeRelay`, with a fake clock."""

    relay: FakeRelay
    proto: ClientProtocol
    engine: ClientEngine
    upload: PrekeyUpload
    clock: float = 0.0
    slept: list[float] = field(default_factory=list)
    served: int = 0  # one-time keys handed out so far (each bundle fetch takes the next)
    online: bool = True
    builds: dict[str, Callable[[], list[OutgoingSend]]] = field(default_factory=dict)
    answers: list[ServerFrame] = field(default_factory=list)  # on the link, not yet read
    written: list[str] = field(default_factory=list)  # client ids, in write order
    settled: dict[str, list[Finished | Queued]] = field(default_factory=dict)

    @classmethod
    def register(cls, relay: FakeRelay, username: str, account: AccountKey | None = None,
                 device_id: int = 1) -> Device:  # fmt: skip
        """A new account (or, with ``account``, a further device of it) on ``relay``."""
        store = MemoryStore()
        me = ids.new_identity(username, device_id, account)
        upload = PrekeyUpload.model_validate(ids.registration_prekeys(store, me, batch=3))
        store.save_profile(me.to_profile("http://relay.invalid"))
        device = cls(relay, ClientProtocol(store, me), ClientEngine(username), upload)
        device.engine.sends.connection_up(0.0)
        relay.devices.setdefault(username, {})[device_id] = device
        entries = tuple(
            sorted((d.proto.identity.entry() for d in relay.devices[username].values()),
                   key=lambda e: e.device_id)
        )  # fmt: skip
        signed = DeviceList(username, len(entries), entries).sign(me.account_key)
        relay.account_keys[username] = me.account_key.public_key.to_bytes()
        relay.device_lists[username] = signed.to_bytes()
        trust.accept_device_list(store, username, relay.account_keys[username], signed.to_bytes())
        trust.accept_key(store, username)
        return device

    @property
    def address(self) -> Address:
        """(username, device id)."""
        return (self.proto.username, self.proto.identity.device_id)

    def bundle_entry(self) -> BundleDevice:
        """What ``GET /v1/prekeys`` serves for this device (its next one-time keys)."""
        up = self.upload
        assert up.signed_prekey is not None and up.last_resort_prekey is not None
        i = self.served % len(up.one_time_prekeys)
        self.served += 1
        otk, otpq = up.one_time_prekeys[i], up.one_time_pq_prekeys[i]
        return BundleDevice(
            device_id=self.address[1],
            identity_key=self.proto.identity.identity_key.public_key.to_bytes(),
            signed_prekey=SignedPrekeyOut.model_validate(up.signed_prekey.model_dump()),
            last_resort_prekey=SignedPrekeyOut.model_validate(up.last_resort_prekey.model_dump()),
            one_time_prekey=OneTimePrekeyOut(
                key_id=otk.key_id, public_key=otk.public_key, signature=b""
            ),
            one_time_pq_prekey=OneTimePrekeyOut.model_validate(otpq.model_dump()),
        )

    # --- what the shell's HTTP calls do --------------------------------------------------

    def refresh(self, username: str) -> None:
        """Fetch ``username``'s device list (``GET /v1/accounts/{username}/devices``)."""
        self.proto.accept_device_list_changed(
            username, self.relay.account_keys[username], self.relay.device_lists[username]
        )
        self.engine.list_checked(username, self.clock)

    def ensure_sessions(self, users: set[str], *, force: bool = False) -> None:
        """Device lists when due, bundles for devices without a session."""
        for user in sorted(users):
            known = self.proto.device_list(user) is not None
            if self.engine.list_due(user, self.clock, known=known, refresh=force):
                self.refresh(user)
        for user, device_ids in self.proto.missing_sessions(sorted(users)).items():
            for device_id in device_ids:
                entry = self.relay.devices[user][device_id].bundle_entry()
                parsed = device_bundle(entry)
                assert parsed is not None
                self.proto.accept_bundle(user, self.relay.account_keys[user], parsed)

    # --- the shell's send half (clients/sdk/pipeline.py), synchronously -------------------

    def connect(self) -> None:
        """The connection is up (the engine resumes queued sends)."""
        self.online = True
        self.feed(self.engine.sends.connection_up(self.clock))

    def drop(self) -> None:
        """The connection drops: answers on their way are lost, the shell reconnects later."""
        self.online = False
        self.answers.clear()
        lost = RelayUnavailable("fake", "connection dropped")
        self.feed(self.engine.sends.connection_down(self.clock, lost, reconnecting=True))

    def submit(self, to: str, text: str, *, lane: str | None = None, durable: bool = False,
               key: str | None = None) -> str:  # fmt: skip
        """Hand a text for ``to`` to the engine (not run yet: see :meth:`run`); returns its key."""
        content = TextContent(text=text, sent_at_ms=1)
        key = key or content.id_hex
        self.builds[key] = lambda: [self.proto.encode_direct(to, content)]
        self.feed(
            self.engine.sends.submit(
                key, {to, self.proto.username}, self.clock, lane=lane, durable=durable
            )
        )
        return key

    def feed(self, actions: list[Action]) -> None:
        """Execute the engine's actions (a :class:`Transmit` writes to the relay at once;
        answers wait on the link until :meth:`step`)."""
        for action in actions:
            if isinstance(action, Transmit):
                self._transmit(action)
            elif isinstance(action, Finished | Queued):
                self.settled.setdefault(action.key, []).append(action)

    def _transmit(self, t: Transmit) -> None:
        for user in sorted(t.refresh):
            self.refresh(user)
        for user, device in t.drop:
            self.proto.sessions.drop(user, device)
        if not self.online:  # a process that never connected: the connect fails
            down = RelayUnavailable("fake", "refused")
            self.feed(self.engine.sends.write_failed(t.key, t.attempt, down, self.clock))
            return
        self.ensure_sessions(set(t.users), force=t.force)
        sends = [s for s in self.builds[t.key]() if s.payloads]  # re-encrypted, same client id
        self.feed(self.engine.sends.expect(t.key, t.attempt, [s.client_id for s in sends],
                                           self.clock))  # fmt: skip
        after = self.engine.sends.predecessor(t.key)
        for send in sends:
            self.written.append(send.client_id)
            answer = self.relay.handle(self.address, send_frame(send, after))
            after = send.client_id
            if answer is not None:
                self.answers.append(answer)

    def step(self) -> bool:
        """Deliver the next answer on the link, or else let time run to the engine's next
        deadline; ``False`` when nothing is left to do."""
        if self.answers:
            routed = self.engine.route(self.answers.pop(0), receiving=True)
            assert isinstance(routed, Answer)
            self.feed(self.engine.sends.answer(routed.frame, self.clock))
            return True
        deadline = self.engine.sends.deadline()
        if deadline is None:
            return False
        if deadline > self.clock:
            self.slept.append(round(deadline - self.clock, 6))
            self.clock = deadline
        self.feed(self.engine.sends.tick(self.clock))
        return True

    def run(self, *, limit: int = 1000) -> None:
        """Step until nothing is left to do (or ``limit`` steps)."""
        for _ in range(limit):
            if not self.step():
                return

    def outcome(self, key: str) -> Finished | Queued:
        """The last settlement of send ``key``."""
        return self.settled[key][-1]

    def send_text(self, to: str, text: str) -> Accepted | Fail:
        """Send one text and run until the engine has decided; waiting advances the clock."""
        key = self.submit(to, text)
        self.run()
        outcome = self.outcome(key)
        assert isinstance(outcome, Finished)
        return outcome.outcome

    def receive(self) -> list[Event]:
        """Process everything queued for this device (as the processor task does) and ack."""
        events: list[Event] = []
        seqs: list[int] = []
        for frame in list(self.relay.queues[self.address]):
            parsed = parse_server_frame(frame.model_dump_json(by_alias=True))
            routed = self.engine.route(parsed, receiving=True)
            assert isinstance(routed, Process)
            envelope = self.engine.envelope(routed.frame)
            assert isinstance(envelope, Envelope)
            need = self.proto.precheck(envelope)
            if isinstance(need, NeedDeviceList):
                self.refresh(need.username)
            result = self.proto.receive(envelope)
            events += result.events
            for action in result.actions:
                self.engine.receipts.add(action)
            seqs.append(envelope.seq)
        for ack in ack_frames(seqs):
            self.relay.ack(self.address, ack.seqs)
        return events
