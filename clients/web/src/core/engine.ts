// The client engine: identity, device lists and trust, sessions, fan-out, the outbox,
// receiving (decrypt → store in one transaction → ack), receipts, typing, reconnects.
// The UI only calls its public methods and re-renders on `subscribe` notifications.
import { Api, Offline, RelayError, type RelayConfig } from "./api";
import { DecodeError, Writer, b64, equal, fromB64, hex, fromHex, randomBytes, utf8 } from "./bytes";
import {
  type Content,
  type Extensions,
  type VerifyState,
  PayloadKind,
  decodeContent,
  isConversationContent,
  isOperation,
  decodeRelayPayload,
  encodeContent,
  encodeRelayPayload,
  newMessageId,
  pad,
  sendTtl,
  unpad,
} from "./content";
import { type DeviceList, findDevice, parseList, signList, verifyList } from "./devicelist";
import { displaySafetyNumber, safetyNumber } from "./fingerprint";
import { ED25519_TYPE, USERNAME, X25519_TYPE, accountPublic, typed, x25519Typed } from "./keys";
import { completeLink, deriveLinkKeys, formatLinkCode, parseLinkCode, receiveOffer, sealOffer } from "./link";
import { ed25519Public, ed25519Sign, x25519Public } from "./primitives";
import * as P from "./prekeys";
import type { Prekeys } from "./prekeys";
import * as S from "./session";
import * as SK from "./senderkeys";
import * as ATT from "./attachments";
import { RelayUploads, encryptAndUpload } from "./upload";
import { MessageOps, type MessageExtras } from "./messageops";
import { OWED_PREFIX, type OwedRecord, type ReceiptKind, Receipts } from "./receipts";
import { type SearchOptions, searchMessages } from "./search";
import type { Store } from "./store";

export const LAST_RESORT_BASE = P.LAST_RESORT_BASE;
const LIST_TTL_MS = 60_000;
/** Prekey stock, rotation, skipped-key expiry and seen pruning repeat this often while
 * connected (the SDK's `maintenance_interval`). */
export const MAINTENANCE_MS = 3600_000;
/** Processed envelope ids are kept this long past the relay's envelope lifetime. */
export const SEEN_MARGIN_MS = 24 * 3600_000;
const MAX_SESSIONS = 4;
const MAX_ATTEMPTS = 5;

export interface Identity {
  user: string;
  device: number;
  accountSeed: Uint8Array;
  identityPriv: Uint8Array;
  authSeed: Uint8Array;
}
interface PeerRec {
  accountKey: Uint8Array;
  list: Uint8Array;
  trusted: Uint8Array;
  verified: boolean;
}
export interface Conversation {
  name: string;
  unread: number;
  last: number;
  timer?: number; // disappearing messages (seconds; messageops.ts)
}
export type MessageState = "pending" | "sent" | "delivered" | "read" | "failed" | "received";
export interface Message extends MessageExtras {
  key: string;
  id: string; // 32 hex
  conv: string;
  from: string;
  device: number;
  text: string | null;
  sentAt: number;
  state: MessageState;
  notice?: string; // "could not decrypt ..." entries
  file?: { name: string; type: string; size: number; pointer: Uint8Array };
}
export interface Group {
  id: string; // 32 hex
  name: string;
  members: string[];
  epoch: number;
  since: Record<string, number>;
  ownKey: SK.SenderKeyState | null;
  distributed: { keyId: number; devices: string[] };
  records: Record<string, SK.SenderKeyState[]>; // "user:device" → newest first
}
/**
 * A conversation message (text, file, edit, delete, reaction, timer) waiting for the relay:
 * ``to`` is its conversation (a username, or ``group:<hex id>`` for a group; or
 * ``OWN_DEVICES_LANE`` for a verification sync to our own other devices), ``seq`` its
 * place in the outbox (strictly increasing; entries of one conversation go out in that order).
 */
interface OutboxEntry {
  id: string;
  to: string;
  content: Uint8Array;
  /** 1 once an attempt was about to be handed to the relay (stored before its frame is written): never cancelled since. */
  attempts: number;
  seq?: number; // absent in entries stored before it existed: they go first
  /**
   * ``OUTBOX_FORMAT`` in entries whose ``attempts`` can be trusted. Absent: stored by an older
   * version, whose ``attempts`` stayed 0 even once sent — loaded as handed (``load``).
   */
  format?: number;
  /**
   * A DELETE of our file message uploaded by this device: its blob id, deleted on the relay
   * once the relay accepted this DELETE (listed under ``WITHDRAWN`` in the transaction that
   * takes the entry out); a DELETE refused for good keeps the blob (the others keep the message).
   */
  blob?: string;
}
/** The outbox record format whose ``attempts`` is set before an attempt's frame is written. */
const OUTBOX_FORMAT = 2;
/**
 * The outbox lane of the verification syncs (VERIFIED, to our own other devices only): no
 * conversation is called that (a username never starts with ":").
 */
export const OWN_DEVICES_LANE = ":own-devices";
/**
 * A replay id of the old name (``pqxdh:<hex>``, no signed prekey id) is forgotten once it was
 * written this long before every signed prekey still held was made (room for a clock set back;
 * the SDK's ``REPLAY_GUARD_CLOCK_MARGIN_S``).
 */
export const REPLAY_GUARD_MARGIN_MS = 24 * 3600 * 1000;
/**
 * Blobs to delete on the relay (``DELETE /v1/attachments/{id}``, protocol-ws §9.2):
 * ``withdrawn:<op>`` → blob id, where ``op`` is the accepted DELETE of our file message, or the
 * message itself, withdrawn before it was sent. Listed until the relay answered
 * (``Engine.deleteWithdrawn``: at once, and on every connection — after a reload too).
 */
const WITHDRAWN = "withdrawn:";
/** Group membership changes are not queued (see ``announce``). */
/** Signature label of an account deletion (protocol-relay, ``DELETE /v1/accounts/me``). */
export const ACCOUNT_DELETE_LABEL = "VoxAccountDelete-v1";
export const GROUP_CHANGE_OFFLINE = "offline: changing a group's members needs the relay (such a change is not queued: it must reach every member at once)";
/** Sends of one conversation on their way at once (the lane fence keeps their order). */
export const LANE_WINDOW = 8;
/**
 * An outbox entry as the engine holds it: ``state`` is where it is — "queued" (to be sent) or
 * "in flight" (an attempt on its way; only the lane's pump puts it there, only the end of that
 * attempt takes it back). Accepted and failed entries are no longer in the outbox.
 */
interface Pending {
  entry: OutboxEntry;
  state: "queued" | "in flight";
  /** Attempts put on their way so far (this page's life). */
  sent: number;
  /** Refused with ``predecessor_missing`` naming ``id`` on its attempt ``sent``: held until that one's attempt ended. */
  behind: { id: string; sent: number } | null;
  /** Attempts in a row that came back "retry" (reset by a connect, and after ``MAX_ATTEMPTS`` of them): its backoff. */
  retries: number;
}
/** The pump of one conversation's queue (see ``Engine.pump``). */
interface Lane {
  run: Promise<void>;
  /** Times ``Engine.pump`` was called for the lane while it ran (a new send, a connect, the retry timer). */
  pumps: number;
  /**
   * A send came back "retry": start no send until the lane is pumped again after ``heldAt`` —
   * the ``pumps`` count when the latest attempt that came back "retry" started. A pump during
   * that attempt (a reconnect's, a new send's) counts: the attempt may have failed on the
   * connection that pump came after, and waiting for another would hold the lane for nothing.
   */
  held: boolean;
  heldAt: number;
  /** How long a held lane waits while connected before it is pumped again (``retryDelayMs``). */
  delay: number;
  /** Wakes the pump waiting for an attempt to end (or for a new entry). */
  wake: (() => void) | null;
}
/** What became of one attempt at a send (see ``Engine.sendContent``). */
type SendOutcome = "accepted" | "retry" | "failed" | "requeue";
/** A relay older than the lane fence refuses the ``after`` field itself (protocol-ws §3.1.4). */
function refusesAfter(answer: Record<string, unknown>): boolean {
  return String(answer["message"] ?? "").startsWith("after");
}
/** Never put on its way: queued, and no attempt at it got as far as its frame (``Engine.handing``). */
const neverHanded = (p: Pending): boolean => p.state === "queued" && !p.entry.attempts;
/** The message an outbox entry's content operates on (edit, delete, reaction), if it is such an operation. */
function targetOf(content: Uint8Array): string | undefined {
  try {
    const c = decodeContent(content);
    return isOperation(c) && "target" in c ? hex(c.target) : undefined;
  } catch {
    return undefined;
  }
}
/**
 * A send the relay could not take now (``busy``, ``internal``, ``rate_limited``,
 * ``shutting_down``, or the connection failed on its way) is tried again this much later while
 * connected, its ``retries``-th time in a row: 0.2 s doubling, at most 2 s, like the SDK's
 * ``sendqueue.backoff``; after ``MAX_ATTEMPTS`` such attempts it waits ``REQUEUE_MS`` (the
 * SDK's ``requeue_after``) and starts over. A connect, or a new send of its conversation,
 * resumes it at once either way.
 */
export function retryDelayMs(retries: number): number {
  return retries >= MAX_ATTEMPTS ? REQUEUE_MS : Math.min(200 * 2 ** Math.max(retries - 1, 0), 2000);
}
const REQUEUE_MS = 30_000;
/** Send refusals after which the same send is retried later: nothing was stored (wire/codes.py ``RETRYABLE_SEND_ERRORS``, and our own "disconnected"). */
/** Refusals saying the recipient's account does not exist (any more): a receipt to it is given up. */
const ACCOUNT_GONE = new Set(["unknown_user", "account_deleted"]);
const RETRYABLE = new Set(["disconnected", "busy", "internal", "rate_limited", "shutting_down"]);
/**
 * A send (or any frame the relay answers) unanswered this long means the connection is lost —
 * a half-open socket never reports its end: it is dropped and made again, and the send goes out
 * again with the same client id, which the relay answers with its first answer (protocol-client
 * §4.4 "no answer within 30 s"; the SDK's ``SendQueue.answer_timeout``).
 */
export const ANSWER_TIMEOUT_MS = 30_000;
/**
 * A socket that is not open this long after it was made, or open without ``ready`` this long
 * after our ``auth``, is dropped and made again after the reconnect backoff — a relay (or a
 * proxy) that accepts and stays silent would otherwise hold the page "connecting" for good
 * (protocol-client §4.4; the SDK's ``RelaySocket.connect`` ``open_timeout``, 10 s per stage).
 */
export const READY_TIMEOUT_MS = 10_000;
/** A download's decrypted plaintext held in this page's memory at most (then moved into a `Blob`). */
export const BLOB_FOLD_BYTES = 1 << 20;
export type ConnectionStatus = "connecting" | "online" | "offline" | "replaced" | "signed-out";
/** Why the page is offline, when it knows: the relay did not answer (``ready`` or a send's answer) in time. */
export type OfflineReason = "no-ready" | "no-answer" | null;

type Frame = Record<string, unknown> & { type: string };
type Answer = { type: "accepted" | "mismatch" | "error" } & Frame;

export class UntrustedIdentity extends Error {
  override name = "UntrustedIdentity";
}

const sessionKey = (user: string, device: number): string => `session:${user}:${device}`;

/** Login refusals that mean this device is gone (removed from its account, or revoked). */
const isSignedOut = (e: unknown): boolean =>
  e instanceof RelayError && (e.code === "unknown_device" || e.code === "device_revoked" || e.code === "unknown_user");

/** Ed25519 by the device auth key over "VoxAuthChallenge-v1" || 0x00 || str16 user || u32 device || nonce. */
export function signChallenge(authSeed: Uint8Array, user: string, device: number, nonce: Uint8Array): Uint8Array {
  return ed25519Sign(authSeed, "VoxAuthChallenge-v1", new Writer().str16(user).u32(device).raw(nonce).done());
}

/** A tiny mutex: encryption and the socket write of one send happen under it. */
class Mutex {
  private tail: Promise<void> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.tail.then(fn);
    this.tail = next.then(
      () => undefined,
      () => undefined,
    );
    return next;
  }
}

export class Engine {
  readonly api: Api;
  identity: Identity | null = null;
  config: RelayConfig | null = null;
  status: ConnectionStatus = "offline";
  /** Set with "offline" when the relay went silent (see ``OfflineReason``); cleared on every other status. */
  offlineReason: OfflineReason = null;
  conversations = new Map<string, Conversation>();
  messages = new Map<string, Message[]>();
  typing = new Map<string, Map<string, number>>(); // conversation → user → when
  active: string | null = null;
  notify: ((title: string, body: string, conv: string) => void) | null = null;

  private prekeys: Prekeys | null = null;
  private sessions = new Map<string, S.SessionState[]>();
  private peers = new Map<string, PeerRec>();
  /** Keys our other devices verified (VERIFIED) that this device does not hold yet. */
  private verifiedSync = new Map<string, Uint8Array>();
  private fetchedAt = new Map<string, number>();
  /** Every entry not yet accepted or failed for good, in ``seq`` order (the only record of its state). */
  private outbox = new Map<string, Pending>();
  private outboxSeq = 0;
  /** The conversations whose queue is being sent (one pump each). */
  private lanes = new Map<string, Lane>();
  /** Whether the relay takes ``after`` (false once it refused the field: an older relay). */
  private fence = true;
  /** Blobs to delete on the relay (``WITHDRAWN``, as committed): op id → blob id. */
  private withdrawn = new Map<string, string>();
  /** The ops whose blob is being deleted now. */
  private deletingBlobs = new Set<string>();

  groups = new Map<string, Group>();
  /** Processed envelope ids → when they were processed (ms). */
  private seen = new Map<string, number>();
  /** Counts for diagnostics and tests: prekeys held (ids), seen ids, skipped keys. */
  inspect(): { signed: number[]; lastResort: number[]; oneTime: number; oneTimeKem: number; unpublished: boolean; seen: number; replayGuards: number; skipped: number } {
    const pk = this.prekeys;
    let skipped = 0;
    for (const list of this.sessions.values()) for (const st of list) skipped += st.skipped.length;
    return {
      signed: pk ? pk.signed.map((k) => k.id) : [],
      lastResort: pk ? pk.kem.filter((k) => k.lastResort).map((k) => k.id) : [],
      oneTime: pk ? pk.otp.length : 0,
      oneTimeKem: pk ? pk.kem.filter((k) => !k.lastResort).length : 0,
      unpublished: !!pk?.unpublished,
      seen: this.seen.size,
      replayGuards: [...this.seen.keys()].filter((k) => k.startsWith("pqxdh:")).length,
      skipped,
    };
  }
  /** The engine's clock (ms since the epoch); the test kit injects another. */
  clock: () => number = () => Date.now();
  private maintenanceTimer: ReturnType<typeof setInterval> | null = null;
  private counter = 0;
  private listeners = new Set<() => void>();
  private ws: WebSocket | null = null;
  private waiting = new Map<string, (a: Answer) => void>();
  private sendLock = new Mutex();
  private recvLock = new Mutex();
  private maintenanceLock = new Mutex();
  private reconnectDelay = 500;
  /** The pending wait for the current socket's ``ready`` (``awaitReady``). */
  private readyTimer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;
  private relogged = false;
  /** Edits, deletes, reactions, replies, disappearing messages (messageops.ts). */
  readonly ops: MessageOps;
  /** Delivery and read receipts, owed until the relay took them (receipts.ts). */
  private readonly receipts: Receipts;

  constructor(
    readonly store: Store,
    base = "",
  ) {
    this.api = new Api(base);
    this.api.reauth = () => this.reauthenticate();
    const engine = this;
    this.ops = new MessageOps({
      store,
      messages: this.messages,
      conversations: this.conversations,
      get user() {
        return engine.user;
      },
      get device() {
        return (engine.identity as Identity).device;
      },
      find: (id) => this.findMessage(id),
      add: (m, changes) => this.addMessage(m, changes),
      nextKey: (conv) => this.nextKey(conv),
      sendOperation: (conv, id, content, apply, withdraws) => this.sendOperation(conv, id, content, apply, withdraws),
      cancelUnsent: (id) => this.cancelUnsent(id),
      changed: () => this.changed(),
      now: () => this.clock(),
    });
    this.receipts = new Receipts({
      send: (to, kind, ids) => this.sendReceipt(to, kind, ids),
      commit: (changes) => store.commit(changes),
      now: () => this.clock(),
    });
  }

  // --- observation --------------------------------------------------------------------

  subscribe(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
  private changed(): void {
    for (const fn of this.listeners) fn();
  }
  private setStatus(s: ConnectionStatus, reason: OfflineReason = null): void {
    this.status = s;
    this.offlineReason = s === "offline" ? reason : null;
    this.changed();
  }

  // --- loading ------------------------------------------------------------------------

  async load(): Promise<boolean> {
    this.identity = (await this.store.get<Identity>("identity")) ?? null;
    if (!this.identity) return false;
    this.prekeys = (await this.store.get<Prekeys>("prekeys")) ?? null;
    for (const [k, v] of await this.store.list<S.SessionState[]>("session:")) this.sessions.set(k, v);
    for (const [k, v] of await this.store.list<PeerRec>("peer:")) this.peers.set(k.slice(5), v);
    for (const [k, v] of await this.store.list<Uint8Array>("vsync:")) this.verifiedSync.set(k.slice(6), v);
    for (const [, v] of await this.store.list<Conversation>("conv:")) this.conversations.set(v.name, v);
    for (const [, v] of await this.store.list<Message>("msg:")) {
      const list = this.messages.get(v.conv) ?? [];
      list.push(v);
      this.messages.set(v.conv, list);
      this.counter = Math.max(this.counter, Number(v.key.split(":").pop()));
    }
    const queued = (await this.store.list<OutboxEntry>("outbox:")).map(([, v]) => v);
    for (const v of queued.sort((a, b) => (a.seq ?? 0) - (b.seq ?? 0))) {
      // An entry of an older version may have been sent with its attempts left at 0: it is
      // taken as handed to the relay (never cancelled as unsent; a delete for everyone follows
      // it), which is what it would be if it had been sent.
      if (v.format !== OUTBOX_FORMAT) v.attempts = Math.max(v.attempts || 0, 1);
      this.outbox.set(v.id, { entry: v, state: "queued", sent: 0, behind: null, retries: 0 });
    }
    this.outboxSeq = Math.max(0, ...queued.map((v) => v.seq ?? 0));
    for (const [, v] of await this.store.list<Group>("group:")) this.groups.set(v.id, v);
    for (const [k, v] of await this.store.list<number>("seen:")) this.seen.set(k.slice(5), v);
    for (const [k, v] of await this.store.list<string>(WITHDRAWN)) this.withdrawn.set(k.slice(WITHDRAWN.length), v);
    this.receipts.load(await this.store.list<OwedRecord>(OWED_PREFIX));
    await this.ops.load();
    return true;
  }

  get user(): string {
    if (!this.identity) throw new Error("no identity");
    return this.identity.user;
  }

  // --- registration and login ---------------------------------------------------------

  private newPrekeys(id: Identity): { prekeys: Prekeys; upload: Record<string, unknown> } {
    return P.initialPrekeys(id, this.clock(), randomBytes);
  }

  private entry(id: Identity): { id: number; identityKey: Uint8Array; authKey: Uint8Array } {
    return { id: id.device, identityKey: x25519Typed(id.identityPriv), authKey: typed(ED25519_TYPE, ed25519Public(id.authSeed)) };
  }

  async register(user: string, invite: string | null): Promise<void> {
    const id: Identity = { user, device: 1, accountSeed: randomBytes(32), identityPriv: randomBytes(32), authSeed: randomBytes(32) };
    const signed = signList({ user, version: 1, devices: [this.entry(id)] }, id.accountSeed);
    const { prekeys, upload } = this.newPrekeys(id);
    // Private halves first: a crash after the upload never leaves unusable prekeys behind.
    await this.store.commit([["pending-identity", id], ["prekeys", prekeys]]);
    await this.api.call("POST", "/v1/accounts", {
      username: user,
      account_key: b64(accountPublic(id.accountSeed)),
      device_list: b64(signed),
      prekeys: upload,
      invite: invite || null,
    });
    const me: PeerRec = { accountKey: accountPublic(id.accountSeed), list: signed, trusted: accountPublic(id.accountSeed), verified: true };
    await this.store.commit([["identity", id], ["pending-identity", undefined], [`peer:${user}`, me]]);
    this.identity = id;
    this.prekeys = prekeys;
    this.peers.set(user, me);
    this.changed();
  }

  /** Join an existing account with the code from `vox link` (protocol-client.md §7). */
  async join(code: string): Promise<void> {
    const parsed = parseLinkCode(code);
    const offer = await receiveOffer(this.api, parsed);
    const id: Identity = { user: parsed.user, device: parsed.device, accountSeed: offer.accountSeed, identityPriv: randomBytes(32), authSeed: randomBytes(32) };
    const { prekeys, upload } = this.newPrekeys(id);
    await this.store.commit([["pending-identity", id], ["prekeys", prekeys]]);
    const signed = await completeLink(this.api, parsed, offer, this.entry(id));
    this.api.token = null;
    await this.api.login(id.user, id.device, (n) => signChallenge(id.authSeed, id.user, id.device, n));
    await this.api.call("POST", "/v1/prekeys", upload);
    const me: PeerRec = { accountKey: accountPublic(id.accountSeed), list: signed, trusted: accountPublic(id.accountSeed), verified: true };
    await this.store.commit([["identity", id], ["pending-identity", undefined], [`peer:${id.user}`, me]]);
    this.identity = id;
    this.prekeys = prekeys;
    this.peers.set(id.user, me);
    this.fetchedAt.set(id.user, Date.now());
    this.changed();
  }

  async login(): Promise<void> {
    const id = this.identity;
    if (!id) throw new Error("no identity");
    await this.api.login(id.user, id.device, (n) => signChallenge(id.authSeed, id.user, id.device, n));
  }

  /** After a REST 401 (api.ts): log in again; a device that may not is signed out. */
  private async reauthenticate(): Promise<void> {
    try {
      await this.login();
    } catch (e) {
      if (isSignedOut(e)) this.signOut();
      throw e;
    }
  }

  private signOut(): void {
    this.stop(); // no reconnects, no maintenance or sweeps
    this.setStatus("signed-out");
  }

  // --- the socket ---------------------------------------------------------------------

  start(): void {
    this.stopped = false;
    this.ops.startSweeper();
    void this.connect();
  }

  stop(): void {
    this.stopped = true;
    if (this.maintenanceTimer !== null) clearInterval(this.maintenanceTimer);
    this.maintenanceTimer = null;
    this.ops.stopSweeper();
    this.readyWait(null);
    this.ws?.close(1000);
    this.ws = null;
  }

  private wsUrl(): string {
    const base = this.api.base || location.origin;
    return base.replace(/^http/, "ws") + "/v1/ws";
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    this.setStatus("connecting");
    try {
      if (!this.api.token) await this.login();
    } catch (e) {
      if (isSignedOut(e)) {
        this.signOut();
        return;
      }
      this.retry();
      return;
    }
    if (this.stopped) return;
    const ws = new WebSocket(this.wsUrl());
    const token = this.api.token;
    this.ws = ws;
    this.awaitReady(ws);
    ws.onopen = () => {
      this.awaitReady(ws); // the open took its own stage: ``ready`` gets the whole timeout
      ws.send(JSON.stringify({ type: "auth", token }));
    };
    ws.onmessage = (ev) => {
      let frame: Frame;
      try {
        frame = JSON.parse(String(ev.data)) as Frame;
      } catch {
        return;
      }
      this.onFrame(frame);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.readyWait(null);
      this.detach();
      if (ev.code === 4409) {
        this.stopped = true;
        this.setStatus("replaced");
        return;
      }
      if (ev.code === 4401) {
        // Expired, revoked (a relay re-checking tokens says token_revoked for an expired one
        // too) or the device removed: log in again; a device that may not is signed out then.
        // A token a REST 401 already replaced is used as it is.
        if (this.api.token === token) this.api.token = null;
        if (!this.relogged) {
          this.relogged = true;
          void this.connect();
          return;
        }
      }
      this.retry();
    };
  }

  /** (Re)arms the wait for ``ws``'s ``ready`` (``READY_TIMEOUT_MS``): it ends in ``unready`` unless ``ready`` comes first. */
  private awaitReady(ws: WebSocket): void {
    this.readyWait(setTimeout(() => this.unready(ws), READY_TIMEOUT_MS));
  }
  /** Replaces the pending ``ready`` wait (``null``: none any more). */
  private readyWait(timer: ReturnType<typeof setTimeout> | null): void {
    if (this.readyTimer !== null) clearTimeout(this.readyTimer);
    this.readyTimer = timer;
  }

  /** ``ws`` did not open, or did not bring ``ready``, within ``READY_TIMEOUT_MS``: dropped, and made again after the backoff. */
  private unready(ws: WebSocket): void {
    this.readyTimer = null;
    if (this.ws !== ws) return;
    console.warn(`no ready from the relay within ${READY_TIMEOUT_MS / 1000} s: reconnecting`);
    this.drop(ws, "no-ready");
  }

  /** The current socket is gone: every frame awaiting an answer on it lost it ("disconnected": sent again on the next connection). */
  private detach(): void {
    this.ws = null;
    for (const [, resolve] of this.waiting) resolve({ type: "error", code: "disconnected" } as Answer);
    this.waiting.clear();
  }

  /**
   * A frame written on ``ws`` had no answer within ``ANSWER_TIMEOUT_MS``: the connection is
   * treated as lost at once — not when the browser notices (a half-open socket may never close
   * by itself) — and made again. Nothing more is read from it (deliveries not acked yet come
   * again on the next connection).
   */
  private abandon(ws: WebSocket): void {
    if (this.ws !== ws) return;
    console.warn(`no answer from the relay within ${ANSWER_TIMEOUT_MS / 1000} s: reconnecting`);
    this.drop(ws, "no-answer");
  }

  /** Stop reading ``ws`` (the current socket), close it and reconnect after the backoff. */
  private drop(ws: WebSocket, reason: OfflineReason): void {
    ws.onmessage = null;
    this.readyWait(null);
    this.detach();
    ws.close(1000);
    this.retry(reason);
  }

  private retry(reason: OfflineReason = null): void {
    if (this.stopped) return;
    this.setStatus("offline", reason);
    const delay = this.reconnectDelay;
    this.reconnectDelay = Math.min(this.reconnectDelay * 2, 8000);
    setTimeout(() => void this.connect(), delay);
  }

  private onFrame(f: Frame): void {
    switch (f.type) {
      case "ready":
        this.readyWait(null);
        for (const p of this.outbox.values()) p.retries = 0; // a new connection: the backoff starts over
        this.reconnectDelay = 500;
        this.relogged = false;
        this.setStatus("online");
        void this.afterReady();
        break;
      case "accepted":
      case "mismatch":
      case "error": {
        const id = typeof f["id"] === "string" ? f["id"] : null;
        const resolve = id ? this.waiting.get(id) : undefined;
        if (id && resolve) {
          this.waiting.delete(id);
          resolve(f as Answer);
        }
        break;
      }
      case "deliver":
        void this.recvLock.run(() => this.onDeliver(f));
        break;
      case "ephemeral":
        void this.recvLock.run(() => this.onEphemeral(f));
        break;
      case "prekeys_low":
        void this.maintain().catch(() => undefined);
        break;
      default:
        break; // forward compatible: unknown frames are ignored
    }
  }

  private async afterReady(): Promise<void> {
    this.deleteWithdrawn();
    this.receipts.resume(); // what is owed goes now
    await this.maintain().catch((e) => console.warn("maintenance failed", e));
    await this.flushOutbox();
    if (this.maintenanceTimer === null && !this.stopped) {
      this.maintenanceTimer = setInterval(() => {
        if (this.status === "online") void this.maintain().catch((e) => console.warn("maintenance failed", e));
      }, MAINTENANCE_MS);
    }
  }

  /**
   * One maintenance round (after every connect, every MAINTENANCE_MS while connected, and on
   * `prekeys_low`), like the SDK's: replenish one-time prekeys when the relay's stock is low,
   * rotate the signed prekey and the last-resort ML-KEM prekey when due (and delete replaced
   * ones past their grace period), expire old skipped message keys, forget processed envelope
   * ids the relay can no longer redeliver. State changes run under the receive lock (a
   * receive consumes prekeys and advances sessions); uploads happen after the commit.
   */
  maintain(): Promise<{ uploaded: number; rotated: boolean; expired: number; forgotten: number }> {
    return this.maintenanceLock.run(() => this.maintainOnce());
  }

  private async maintainOnce(): Promise<{ uploaded: number; rotated: boolean; expired: number; forgotten: number }> {
    const id = this.identity;
    if (!id || !this.prekeys) return { uploaded: 0, rotated: false, expired: 0, forgotten: 0 };
    const counts = await this.api.call<P.PrekeyCounts>("GET", "/v1/prekeys/count");
    const cfg = this.config ?? (this.config = await this.api.config());
    const ttlMs = (cfg.limits["envelope_ttl_seconds"] ?? 365 * 86400) * 1000;
    let upload: P.Upload = {};
    let result = { uploaded: 0, rotated: false, expired: 0, forgotten: 0 };
    await this.recvLock.run(async () => {
      const now = this.clock();
      let pk = this.prekeys as Prekeys;
      const changes: [string, unknown][] = [];
      const count = P.replenishCount(counts);
      if (count > 0) {
        const batch = P.oneTimeBatch(id, pk, count, randomBytes);
        pk = batch.prekeys;
        upload = batch.upload;
      }
      pk = P.prune(pk, now);
      const rotated = !pk.unpublished && P.rotationDue(pk, now);
      if (rotated) pk = P.rotate(id, pk, now, randomBytes).prekeys;
      if (pk.unpublished) upload = { ...upload, ...pk.unpublished };
      if (pk !== this.prekeys) changes.push(["prekeys", pk]);
      // Skipped message keys past their age (pairwise sessions and sender keys).
      let expired = 0;
      const sessions = new Map<string, S.SessionState[]>();
      for (const [k, list] of this.sessions) {
        const next = list.map((st) => {
          const r = S.expireSkipped(st, now / 1000);
          expired += r.expired;
          return r.state;
        });
        if (next.some((st, i) => st.skipped.length !== (list[i] as S.SessionState).skipped.length)) {
          sessions.set(k, next);
          changes.push([k, next]);
        }
      }
      const groups = new Map<string, Group>();
      for (const [gid, g] of this.groups) {
        let touched = false;
        const records: Group["records"] = {};
        for (const [k, rec] of Object.entries(g.records)) {
          records[k] = rec.map((st) => {
            const next = SK.expireSenderKey(st, now / 1000);
            if (next.skipped.length !== st.skipped.length) {
              expired += st.skipped.length - next.skipped.length;
              touched = true;
            }
            return next;
          });
        }
        if (touched) {
          const ng = { ...g, records };
          groups.set(gid, ng);
          changes.push([`group:${gid}`, ng]);
        }
      }
      // Envelope ids older than the relay's envelope lifetime (plus a day) cannot come back.
      const cutoff = now - ttlMs - SEEN_MARGIN_MS;
      // `pqxdh:<signed prekey id>:` replay ids go with their signed prekey, not by age: once
      // it is deleted a replay fails (unknown prekey) anyway. Older ids without the key id
      // (`pqxdh:<hex>`) go once written more than REPLAY_GUARD_MARGIN_MS before every signed
      // prekey still held was made: the key they guard was made before the message was
      // accepted, so it is gone too (the SDK's identity._prune_replaced).
      const held = new Set(pk.signed.map((k) => k.id));
      const oldestHeld = Math.min(...pk.signed.map((k) => k.created));
      const gone = ([k, at]: [string, number]): boolean => {
        if (!k.startsWith("pqxdh:")) return at < cutoff;
        const spk = /^pqxdh:(\d+):/.exec(k);
        return spk !== null ? !held.has(Number(spk[1])) : at < oldestHeld - REPLAY_GUARD_MARGIN_MS;
      };
      const forget = [...this.seen].filter(gone).map(([k]) => k);
      for (const k of forget) changes.push([`seen:${k}`, undefined]);
      // Tombstones of messages deleted for me: no copy of them can come any more either.
      const goneIds = this.ops.prune(cutoff, changes);
      if (changes.length) await this.store.commit(changes);
      this.prekeys = pk;
      for (const [k, v] of sessions) this.sessions.set(k, v);
      for (const [k, v] of groups) this.groups.set(k, v);
      for (const k of forget) this.seen.delete(k);
      this.ops.forget(goneIds);
      result = { uploaded: count, rotated, expired, forgotten: forget.length };
    });
    if (Object.keys(upload).length) {
      await this.api.call("POST", "/v1/prekeys", upload);
      if (this.prekeys?.unpublished) {
        await this.recvLock.run(async () => {
          const pk = P.published(this.prekeys as Prekeys, this.clock());
          await this.store.commit([["prekeys", pk]]);
          this.prekeys = pk;
        });
      }
    }
    return result;
  }

  private transmit(frame: Record<string, unknown>): Promise<Answer> {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || this.status !== "online") {
      return Promise.resolve({ type: "error", code: "disconnected" } as Answer);
    }
    const id = frame["id"] as string;
    const p = new Promise<Answer>((resolve) => this.waiting.set(id, resolve));
    ws.send(JSON.stringify(frame));
    const timer = setTimeout(() => this.abandon(ws), ANSWER_TIMEOUT_MS);
    void p.then(() => clearTimeout(timer));
    return p;
  }

  // --- device lists and trust ---------------------------------------------------------

  peer(user: string): PeerRec | undefined {
    return this.peers.get(user);
  }

  keyChanged(user: string): boolean {
    const p = this.peers.get(user);
    return !!p && !equal(p.accountKey, p.trusted);
  }

  /** Fetch and verify a user's signed device list (TOFU on the first account key). */
  async refreshList(user: string, force = false): Promise<DeviceList> {
    const cached = this.peers.get(user);
    const at = this.fetchedAt.get(user) ?? 0;
    if (cached && !force && Date.now() - at < LIST_TTL_MS) return parseList(cached.list).list;
    const data = await this.api.devices(user);
    const accountKey = fromB64(data.account_key);
    const signed = fromB64(data.device_list);
    const sameKey = cached && equal(cached.accountKey, accountKey);
    const list = verifyList(signed, accountKey, user, sameKey ? cached.list : null);
    const rec: PeerRec = cached
      ? { ...cached, accountKey, list: signed }
      : { accountKey, list: signed, trusted: accountKey, verified: false };
    const changes: [string, unknown][] = [[`peer:${user}`, rec]];
    const synced = this.verifiedSync.get(user);
    if (synced && equal(synced, accountKey)) {
      // Our other device verified exactly this key: verified here too, no "key changed".
      rec.trusted = accountKey;
      rec.verified = true;
      this.verifiedSync.delete(user);
      changes.push([`vsync:${user}`, undefined]);
    }
    // Sessions with devices that left the list or changed keys are dropped.
    for (const [k, v] of this.sessions) {
      if (!k.startsWith(`session:${user}:`)) continue;
      const dev = Number(k.split(":")[2]);
      const entry = findDevice(list, dev);
      const keep = entry ? v.filter((s) => equal(s.peer.identityKey, entry.identityKey) && equal(s.peer.accountKey, accountKey)) : [];
      if (keep.length !== v.length) {
        changes.push([k, keep.length ? keep : undefined]);
        if (keep.length) this.sessions.set(k, keep);
        else this.sessions.delete(k);
      }
    }
    await this.store.commit(changes);
    this.peers.set(user, rec);
    this.fetchedAt.set(user, Date.now());
    this.changed();
    return list;
  }

  safetyNumber(user: string): string | null {
    const p = this.peers.get(user);
    const me = this.identity;
    if (!p || !me) return null;
    return displaySafetyNumber(safetyNumber(accountPublic(me.accountSeed), me.user, p.accountKey, user));
  }

  /** Accept (and mark verified) the currently served account key of ``user``. */
  async acceptKey(user: string): Promise<void> {
    const p = this.peers.get(user);
    if (!p) return;
    const rec = { ...p, trusted: p.accountKey, verified: true };
    this.verifiedSync.delete(user); // this device's own decision wins
    this.peers.set(user, rec);
    await this.tellOwnDevices(user, p.accountKey, 1, [[`peer:${user}`, rec], [`vsync:${user}`, undefined]]);
  }

  /**
   * Take back the verification of ``user`` ("unverify", protocol-client §2): trusted on first
   * use again (sending continues; a changed key stays changed), a verification remembered
   * from another device is forgotten, and our other devices are told (VERIFIED state 2).
   */
  async clearVerification(user: string): Promise<void> {
    const p = this.peers.get(user);
    if (!p) return;
    const changes: [string, unknown][] = [[`vsync:${user}`, undefined]];
    this.verifiedSync.delete(user);
    if (p.verified) {
      const rec = { ...p, verified: false };
      this.peers.set(user, rec);
      changes.push([`peer:${user}`, rec]);
    }
    await this.tellOwnDevices(user, p.accountKey, 2, changes);
  }

  /**
   * Our other devices learn a verification (or its withdrawal) of ``user``'s ``key``: the
   * VERIFIED content goes through the outbox in the same transaction as the trust change here
   * (``changes``), in the own-devices lane — in order, retried, kept while offline.
   */
  private async tellOwnDevices(user: string, key: Uint8Array, state: VerifyState, changes: [string, unknown][]): Promise<void> {
    const id = newMessageId();
    const content = encodeContent({ type: 13, id, sentAt: this.clock(), username: user, accountKey: key, state });
    await this.enqueue(OWN_DEVICES_LANE, hex(id), content, changes);
  }

  /**
   * VERIFIED from our own other device. State 1: verified here if we hold that key, else
   * remembered. State 2 (taken back): a verified user under exactly that key is trusted on
   * first use again, a remembered verification of that key is forgotten; anything else stays.
   */
  private applyVerified(user: string, key: Uint8Array, state: VerifyState, changes: [string, unknown][]): void {
    if (user === this.user || !USERNAME.test(user)) return;
    const p = this.peers.get(user);
    if (state === 2) {
      const remembered = this.verifiedSync.get(user);
      if (remembered && equal(remembered, key)) {
        this.verifiedSync.delete(user);
        changes.push([`vsync:${user}`, undefined]);
      }
      if (p && p.verified && equal(p.accountKey, key)) {
        const rec = { ...p, verified: false };
        this.peers.set(user, rec);
        changes.push([`peer:${user}`, rec]);
      }
      return;
    }
    if (p && equal(p.accountKey, key)) {
      const rec = { ...p, trusted: key, verified: true };
      this.peers.set(user, rec);
      this.verifiedSync.delete(user);
      changes.push([`peer:${user}`, rec], [`vsync:${user}`, undefined]);
    } else {
      this.verifiedSync.set(user, key);
      changes.push([`vsync:${user}`, key]);
    }
  }

  // --- sessions -----------------------------------------------------------------------

  private local(): S.LocalDevice {
    const id = this.identity as Identity;
    return { user: id.user, device: id.device, accountKey: accountPublic(id.accountSeed), identityPriv: id.identityPriv };
  }

  private async ensureSessions(user: string, list: DeviceList): Promise<{ user: string; device: number }[]> {
    const me = this.identity as Identity;
    const targets = list.devices.filter((d) => !(user === me.user && d.id === me.device));
    const peer = this.peers.get(user) as PeerRec;
    for (const d of targets) {
      if (this.sessions.get(sessionKey(user, d.id))?.length) continue;
      const { bundles, accountKey } = await this.api.bundles(user, d.id);
      if (!equal(accountKey, peer.accountKey)) throw new UntrustedIdentity(`${user}'s account key changed`);
      const b = bundles.find((x) => x.device === d.id);
      if (!b || !equal(b.identityKey, d.identityKey)) continue; // not uploaded yet / not on the list
      const s = await S.initiate(this.local(), b, randomBytes);
      this.sessions.set(sessionKey(user, d.id), [s]);
      await this.store.commit([[sessionKey(user, d.id), [s]]]);
    }
    return targets.map((d) => ({ user, device: d.id }));
  }

  private async encryptFor(devices: { user: string; device: number }[], content: Uint8Array, changes: [string, unknown][]): Promise<{ data: string; to: { user: string; device: number }[] }[]> {
    const out = [];
    const body = pad(content);
    for (const d of devices) {
      const k = sessionKey(d.user, d.device);
      const list = this.sessions.get(k);
      if (!list?.length) continue;
      const { state, data } = await S.encrypt(list[0] as S.SessionState, body, randomBytes);
      const next = [state, ...list.slice(1)];
      this.sessions.set(k, next);
      changes.push([k, next]);
      out.push({ data: b64(encodeRelayPayload(PayloadKind.Pairwise, data)), to: [d] });
    }
    return out;
  }

  // --- sending ------------------------------------------------------------------------

  private nextKey(conv: string): string {
    this.counter += 1;
    return `msg:${conv}:${String(this.counter).padStart(12, "0")}`;
  }

  private addMessage(m: Message, changes: [string, unknown][]): void {
    const list = this.messages.get(m.conv) ?? [];
    list.push(m);
    this.messages.set(m.conv, list);
    changes.push([m.key, m]);
    const c = this.conversations.get(m.conv) ?? { name: m.conv, unread: 0, last: 0 };
    const conv = { ...c, last: Date.now(), unread: m.from !== this.user && this.active !== m.conv && !m.notice ? c.unread + 1 : c.unread };
    this.conversations.set(m.conv, conv);
    changes.push([`conv:${m.conv}`, conv]);
  }

  /** Stored here, or removed here (deleted for me, disappeared): a copy is not stored again. */
  private known(id: string): boolean {
    return this.ops.isGone(id) || !!this.findMessage(id);
  }

  private findMessage(id: string): Message | undefined {
    for (const list of this.messages.values()) {
      const m = list.find((x) => x.id === id);
      if (m) return m;
    }
    return undefined;
  }

  /** Messages of this device's history with every word of ``query``, newest first (core/search.ts). */
  search(query: string, opts: SearchOptions = {}): Message[] {
    return searchMessages(this.messages.values(), query, opts);
  }

  async openConversation(user: string): Promise<void> {
    if (!this.conversations.has(user)) {
      const c = { name: user, unread: 0, last: Date.now() };
      this.conversations.set(user, c);
      await this.store.commit([[`conv:${user}`, c]]);
    }
    this.active = user;
    await this.markRead(user);
    this.changed();
  }

  async sendText(to: string, text: string, replyTo?: string): Promise<string> {
    if (this.keyChanged(to)) throw new UntrustedIdentity(`${to}'s safety number changed: verify it first`);
    const id = newMessageId();
    const sentAt = Date.now();
    const { ext, extras } = this.ops.outgoing(to, sentAt, replyTo);
    const content = encodeContent({ type: 1, id, sentAt, groupId: new Uint8Array(0), text, ...ext });
    const idHex = hex(id);
    const m: Message = { key: this.nextKey(to), id: idHex, conv: to, from: this.user, device: (this.identity as Identity).device, text, sentAt, state: "pending", ...extras };
    const changes: [string, unknown][] = [];
    this.addMessage(m, changes);
    await this.enqueue(to, idHex, content, changes);
    return idHex;
  }

  /** Refuse a send to ``conv`` while a member's key change is not accepted. */
  private checkTrusted(conv: string): void {
    if (!conv.startsWith("group:")) {
      if (this.keyChanged(conv)) throw new UntrustedIdentity(`${conv}'s safety number changed: verify it first`);
      return;
    }
    const g = this.groups.get(conv.slice(6));
    if (!g) throw new Error("unknown group");
    for (const m of g.members) if (m !== this.user && this.keyChanged(m)) throw new UntrustedIdentity(`${m}'s safety number changed: verify it first`);
  }

  /**
   * Put a conversation message in the outbox, in the same transaction as ``changes`` (its
   * history entry, or an operation's local effect), and start sending ``conv``'s queue. It
   * stays there — across reconnects and reloads — until the relay accepted it (the client id
   * is the message id: a resend after a lost answer is answered with the first `accepted`
   * and stored once) or refused it for good.
   */
  private async enqueue(conv: string, idHex: string, content: Uint8Array, changes: [string, unknown][], blob?: string): Promise<void> {
    const entry: OutboxEntry = { id: idHex, to: conv, content, attempts: 0, seq: ++this.outboxSeq, format: OUTBOX_FORMAT };
    if (blob !== undefined) entry.blob = blob;
    changes.push([`outbox:${idHex}`, entry]);
    await this.store.commit(changes);
    this.outbox.set(idHex, { entry, state: "queued", sent: 0, behind: null, retries: 0 });
    this.changed();
    void this.pump(conv);
  }

  /** How many messages and operations of ``conv`` wait in the outbox. */
  queued(conv: string): number {
    let n = 0;
    for (const p of this.outbox.values()) if (p.entry.to === conv) n++;
    return n;
  }

  /**
   * An operation (messageops.ts): queued like a text, its local effect applied at once. A
   * DELETE of our file message (``withdraws``) takes its blob along once the relay accepted it.
   */
  private async sendOperation(conv: string, idHex: string, content: Uint8Array, apply: (changes: [string, unknown][]) => void, withdraws?: Message): Promise<void> {
    this.checkTrusted(conv);
    const blob = withdraws && this.uploadedBlob(withdraws); // before ``apply``: a tombstone has no file
    const changes: [string, unknown][] = [];
    apply(changes);
    await this.enqueue(conv, idHex, content, changes, blob ?? undefined);
  }

  /** The blob id of ``m`` if it is our file message uploaded by this device (only that device may delete it, protocol-ws §9.2). */
  private uploadedBlob(m: Message): string | null {
    const id = this.identity;
    if (!m.file || !id || m.from !== id.user || m.device !== id.device) return null;
    try {
      return ATT.decodePointer(m.file.pointer).blobId || null;
    } catch {
      return null;
    }
  }

  /**
   * Delete on the relay the blobs listed under ``WITHDRAWN`` (their DELETE accepted, or their
   * message withdrawn unsent), in the background: at once, and again on every connection. An
   * entry goes once the relay answered — gone (204), or refused for good (an older relay
   * without the route: the blob expires); one the relay could not take now (unreachable, 5xx,
   * 408, 429) stays listed for the next connection, across reloads.
   */
  private deleteWithdrawn(): void {
    for (const [op, blob] of this.withdrawn) {
      if (this.deletingBlobs.has(op)) continue;
      this.deletingBlobs.add(op);
      void this.deleteBlob(op, blob).finally(() => this.deletingBlobs.delete(op));
    }
  }

  private async deleteBlob(op: string, blob: string): Promise<void> {
    try {
      await this.api.call("DELETE", `/v1/attachments/${encodeURIComponent(blob)}`);
    } catch (e) {
      if (!(e instanceof RelayError) || e.status === 408 || e.status === 429) {
        console.warn("the attachment is not deleted on the relay yet (tried again on the next connection)", e);
        return;
      }
    }
    try {
      await this.store.commit([[WITHDRAWN + op, undefined]]);
      this.withdrawn.delete(op);
    } catch (e) {
      console.warn("the deleted attachment is still listed (deleted again on the next connection)", e);
    }
  }

  /**
   * Take our message ``id`` out of the outbox if it was never handed to the relay — queued, and
   * no attempt at it ever got as far as its frame (in this page's life or an earlier one: see
   * ``handing``) — with the queued operations of its conversation that target it and were never
   * handed either (edits, reactions): none of them will be sent, to the peers nor to our other
   * devices. Synchronous, so the pump cannot put it on its way meanwhile (only the pump moves an
   * entry to "in flight"). The caller commits ``changes`` (their outbox records removed) in the
   * transaction that removes the message, and calls ``undo`` if that fails, ``done`` once it is
   * committed. Our file message's blob goes with it (listed under ``WITHDRAWN`` in ``changes``,
   * deleted on the relay at once or on a later connection). Null when ``id`` is
   * not in the outbox or may have reached the relay (on its way, or handed before): it cannot
   * be recalled.
   */
  private cancelUnsent(id: string): { changes: [string, unknown][]; undo: () => void; done: () => void } | null {
    const p = this.outbox.get(id);
    if (!p || !neverHanded(p)) return null;
    const gone = [p];
    for (const q of this.outbox.values()) {
      if (q !== p && q.entry.to === p.entry.to && neverHanded(q) && targetOf(q.entry.content) === id) gone.push(q);
    }
    for (const q of gone) this.outbox.delete(q.entry.id);
    this.changed();
    const changes = gone.map((q): [string, unknown] => [`outbox:${q.entry.id}`, undefined]);
    const m = this.findMessage(id);
    const blob = m && this.uploadedBlob(m);
    if (blob) changes.push([WITHDRAWN + id, blob]);
    return {
      changes,
      undo: () => {
        for (const q of gone) this.outbox.set(q.entry.id, q);
        this.changed();
        void this.pump(p.entry.to);
      },
      done: () => {
        if (!blob) return;
        this.withdrawn.set(id, blob);
        this.deleteWithdrawn();
      },
    };
  }

  /**
   * An attempt at outbox entry ``id`` is about to hand its frame to the relay: record that (once)
   * in ``changes``, the transaction committed just before the frame is written, so that it is
   * never cancelled as unsent afterwards (``cancelUnsent``), after a reload too.
   */
  private handing(id: string, changes: [string, unknown][]): void {
    const p = this.outbox.get(id);
    if (!p || p.entry.attempts) return;
    p.entry.attempts = 1;
    changes.push([`outbox:${id}`, p.entry]);
  }

  private async flushOutbox(): Promise<void> {
    await Promise.all([...new Set([...this.outbox.values()].map((p) => p.entry.to))].map((conv) => this.pump(conv)));
  }

  /**
   * Send ``conv``'s queue oldest first (protocol-client §4.6): one pump per conversation, the
   * only thing that puts entries on their way. Up to ``LANE_WINDOW`` sends are on their way at
   * once in a direct conversation (or our own devices' lane), each naming in ``after`` the
   * entry before it — the relay's lane fence (protocol-ws §3.1.4) stores a send only once its
   * predecessor is stored, so nothing overtakes a refused or lost message. A group's queue
   * (encrypted under the sender key as it goes) has one send on its way at a time; so has every
   * queue once the relay refused ``after`` itself (a relay older than the fence).
   *
   * Invariants (``nextToSend``): a lane's in-flight entries all precede its queued ones when a
   * send starts (a refused entry goes out again only once every later attempt of its lane has
   * ended — they come back ``predecessor_missing`` or accepted), so the queue is sent again
   * from its oldest entry; an entry leaves the outbox only when accepted or failed for good.
   * A send that must wait ("retry": busy, the connection) holds the lane until it is pumped
   * again: after the next connect, a new send, or ``retryDelayMs`` while connected. A
   * pump that came while that attempt was on its way counts too (``Lane.heldAt``): a reconnect
   * during an attempt that then failed with the old connection resumes the lane at once.
   */
  private pump(conv: string): Promise<void> {
    const running = this.lanes.get(conv);
    if (running) {
      running.pumps++;
      running.wake?.();
      return running.run;
    }
    const lane: Lane = { run: Promise.resolve(), pumps: 0, held: false, heldAt: 0, delay: 0, wake: null };
    this.lanes.set(conv, lane);
    lane.run = this.runLane(conv, lane);
    return lane.run;
  }

  private async runLane(conv: string, lane: Lane): Promise<void> {
    try {
      for (;;) {
        for (let p = this.nextToSend(conv, lane); p; p = this.nextToSend(conv, lane)) {
          p.state = "in flight"; // the only place an entry goes on its way
          p.sent++;
          p.behind = null;
          const after = this.predecessor(conv, p);
          let written = (): void => undefined;
          const onWire = new Promise<void>((resolve) => (written = resolve));
          // Frames of a lane leave in its order: the next is started once this one is written.
          await Promise.race([onWire, this.attempt(lane, p, after, written, lane.pumps)]);
        }
        if (this.laneEntries(conv).some((p) => p.state === "in flight")) {
          await new Promise<void>((resolve) => (lane.wake = resolve));
          lane.wake = null;
          continue;
        }
        if (lane.held && lane.pumps > lane.heldAt && this.status === "online") {
          lane.held = false; // pumped again since the attempt that had to wait began: resume
          continue;
        }
        // Nothing on its way and nothing to start: done, or held until pumped again.
        if (lane.held && this.status === "online" && !this.stopped) setTimeout(() => void this.pump(conv), lane.delay);
        return;
      }
    } finally {
      this.lanes.delete(conv);
    }
  }

  /** ``conv``'s outbox entries, oldest first. */
  private laneEntries(conv: string): Pending[] {
    const lane: Pending[] = [];
    for (const p of this.outbox.values()) if (p.entry.to === conv) lane.push(p);
    return lane.sort((a, b) => (a.entry.seq ?? 0) - (b.entry.seq ?? 0)); // stable: ties keep load order
  }

  /**
   * The entry of ``conv`` to put on its way now, if any: its oldest queued entry, when the
   * lane is not held and we are connected, fewer than the window are on their way, none of them
   * comes after it, and (refused ``predecessor_missing``) the predecessor it named is no longer
   * on that same attempt.
   */
  private nextToSend(conv: string, lane: Lane): Pending | undefined {
    if (lane.held || this.status !== "online") return undefined;
    const entries = this.laneEntries(conv);
    const i = entries.findIndex((p) => p.state === "queued");
    const next = entries[i];
    if (!next) return undefined;
    const inFlight = entries.filter((p) => p.state === "in flight").length;
    const window = conv.startsWith("group:") || !this.fence ? 1 : LANE_WINDOW;
    if (inFlight >= window || entries.slice(i + 1).some((p) => p.state === "in flight")) return undefined;
    const named = next.behind ? this.outbox.get(next.behind.id) : undefined;
    if (named && next.behind && named.state === "in flight" && named.sent === next.behind.sent) return undefined;
    return next;
  }

  /**
   * The ``after`` of ``p``: the entry just before it in its lane, still in the outbox (so on
   * its way: see ``nextToSend``) — none when every earlier one was accepted or failed for good,
   * and none in a group's queue or against a relay without the fence (one at a time there).
   */
  private predecessor(conv: string, p: Pending): Pending | undefined {
    if (conv.startsWith("group:") || !this.fence) return undefined;
    const entries = this.laneEntries(conv);
    return entries[entries.indexOf(p) - 1];
  }

  /**
   * One attempt at ``p`` (``after``: its predecessor on its way), then the end of the attempt:
   * accepted or failed for good → out of the outbox (and its message marked); "retry" → queued,
   * the lane held; "requeue" (predecessor_missing, or the relay refused ``after``) → queued,
   * behind the attempt of the predecessor it named. Wakes the lane's pump.
   */
  private async attempt(lane: Lane, p: Pending, after: Pending | undefined, written: () => void, pumps: number): Promise<void> {
    const e = p.entry;
    const named = after ? { id: after.entry.id, sent: after.sent } : null;
    let outcome: SendOutcome = "retry";
    try {
      outcome = e.to.startsWith("group:")
        ? await this.deliverGroup(e)
        : e.to === OWN_DEVICES_LANE
          ? await this.sendContent(this.user, e.id, e.content, { transcript: false, after: named?.id, written })
          : await this.sendContent(e.to, e.id, e.content, { transcript: true, after: named?.id, written });
    } catch (err) {
      console.warn("send failed", err); // not expected (the senders answer "failed"): sent again later
    } finally {
      written();
    }
    if (outcome === "accepted" || outcome === "failed") this.outbox.delete(e.id);
    else {
      p.state = "queued";
      if (outcome === "retry") {
        lane.heldAt = lane.held ? Math.max(lane.heldAt, pumps) : pumps;
        lane.held = true;
        lane.delay = retryDelayMs(++p.retries);
        if (p.retries >= MAX_ATTEMPTS) p.retries = 0;
      } else p.behind = named;
    }
    lane.wake?.();
    if (outcome === "accepted" || outcome === "failed") {
      const m = this.findMessage(e.id);
      const changes: [string, unknown][] = [[`outbox:${e.id}`, undefined]];
      if (m && (outcome === "failed" || m.state === "pending")) {
        m.state = outcome === "accepted" ? "sent" : "failed";
        changes.push([m.key, m]);
      }
      // An accepted DELETE of our file message: its blob goes too (refused: it stays).
      const blob = outcome === "accepted" ? e.blob : undefined;
      if (blob) changes.push([WITHDRAWN + e.id, blob]);
      try {
        await this.store.commit(changes);
        if (blob) {
          this.withdrawn.set(e.id, blob);
          this.deleteWithdrawn();
        }
      } catch (err) {
        console.warn("outbox update not stored", err); // kept stored: sent again (and deduplicated) after a reload
      }
      this.changed();
    }
  }

  /** One attempt at a queued group message: encrypted under our sender key when it goes. */
  private async deliverGroup(e: OutboxEntry): Promise<SendOutcome> {
    if (this.status !== "online") return "retry";
    try {
      this.checkTrusted(e.to); // the group still exists (we may have left), no unaccepted key change
      return await this.sendGroupContent(e.to.slice(6), e.id, e.content);
    } catch (err) {
      if (err instanceof Offline) return "retry";
      console.warn("group send failed", err);
      return "failed";
    }
  }

  /**
   * Encrypt a content for every device of ``to`` and our other devices (a transcript for
   * texts/files), send it with client id ``id``, and follow mismatches. Returns "accepted",
   * "retry" (connection trouble: keep it queued), "requeue" (``after`` was given and the
   * predecessor is not stored, or the relay does not know ``after``: send it again behind the
   * predecessor) or "failed". Encrypting and writing the frame hold the send lock; waiting for
   * the answer does not (``written`` is called once the frame is on the socket).
   */
  private async sendContent(
    to: string | string[],
    id: string,
    content: Uint8Array,
    opts: { transcript: boolean; ephemeral?: boolean; after?: string | undefined; written?: (() => void) | undefined; refusal?: { code?: string } },
  ): Promise<SendOutcome> {
    const users = typeof to === "string" ? [to] : [...new Set(to)].sort();
    const me = this.user;
    try {
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        const sent = await this.sendLock.run(async (): Promise<SendOutcome | { answer: Promise<Answer> }> => {
          if (this.status !== "online") return "retry";
          if (opts.after !== undefined && !this.fence) return "requeue"; // see below
          const theirs: { user: string; device: number }[] = [];
          for (const u of users) {
            if (u !== me && this.keyChanged(u)) throw new UntrustedIdentity(`${u}'s safety number changed`);
            theirs.push(...(await this.ensureSessions(u, await this.refreshList(u, attempt > 0))));
          }
          let own: { user: string; device: number }[] = [];
          if (!opts.ephemeral && !users.includes(me)) own = await this.ensureSessions(me, await this.refreshList(me, attempt > 0));
          const changes: [string, unknown][] = [];
          const payloads = await this.encryptFor(theirs, content, changes);
          if (own.length) {
            const copy = opts.transcript
              ? encodeContent({ ...decodeContentHead(content), type: 7, destination: users[0] as string, inner: content })
              : content;
            payloads.push(...(await this.encryptFor(own, copy, changes)));
          }
          this.handing(id, changes);
          await this.store.commit(changes);
          // Nothing to send: refused, except a sync to our own devices when we have no other.
          if (!payloads.length) return users.length === 1 && users[0] === me ? "accepted" : "failed";
          const frame: Record<string, unknown> = { type: "send", id, payloads, ttl: sendTtl(content) };
          if (opts.ephemeral) frame["ephemeral"] = true;
          if (opts.after !== undefined) {
            // Meant to follow its predecessor: never sent unfenced (the relay turned out not to
            // know ``after`` meanwhile) — back behind it, sent once it is answered.
            if (!this.fence) return "requeue";
            frame["after"] = opts.after;
          }
          return { answer: this.transmit(frame) }; // the answer is awaited outside the lock
        });
        opts.written?.();
        if (typeof sent === "string") return sent;
        const answer = await sent.answer;
        if (answer.type === "accepted") return "accepted";
        if (answer.type === "mismatch") {
          await this.sendLock.run(async () => {
            const stale = (answer["stale"] as { user: string; device: number }[]) ?? [];
            const changes: [string, unknown][] = [];
            for (const d of stale) {
              this.sessions.delete(sessionKey(d.user, d.device));
              changes.push([sessionKey(d.user, d.device), undefined]);
            }
            await this.store.commit(changes);
          });
          continue;
        }
        const code = answer["code"];
        if (code === "predecessor_missing") return "requeue";
        if (code === "bad_frame" && refusesAfter(answer)) {
          this.fence = false; // a relay older than the fence: one send per lane, no ``after``
          return "requeue";
        }
        if (typeof code === "string" && opts.refusal) opts.refusal.code = code;
        if (typeof code === "string" && RETRYABLE.has(code)) return "retry";
        return "failed";
      }
      return "failed";
    } catch (e) {
      opts.written?.();
      if (e instanceof RelayError && opts.refusal) opts.refusal.code = e.code;
      if (e instanceof Offline) return "retry";
      if (e instanceof UntrustedIdentity) return "failed";
      console.warn("send failed", e);
      return "failed";
    }
  }

  /**
   * Encrypt a file (fresh key, 64 KiB chunks, padded to Signal's bucket), upload it with
   * progress, then send its pointer like a text (outbox, transcripts, groups).
   */
  async sendFile(conv: string, file: File, onProgress: (fraction: number) => void): Promise<string> {
    const isGroup = conv.startsWith("group:");
    this.checkTrusted(conv);
    const limit = this.config?.limits["max_attachment_bytes"] ?? 104857600;
    if (ATT.blobSize(ATT.paddedSize(file.size), ATT.CHUNK) > limit) throw new Error(`the file is too large for this relay (limit ${limit} bytes after padding)`);
    // Read slice by slice, encrypted chunk by chunk, uploaded as it is made (resumable, at
    // most one window of ciphertext held: src/core/upload.ts, clients/web/README.md).
    const enc = await encryptAndUpload(file, randomBytes, new RelayUploads(this.api), onProgress);
    const blobId = enc.blob;
    const pointer = ATT.encodePointer({ key: enc.key, digest: enc.digest, size: file.size, padding: enc.padding, chunkSize: enc.chunkSize, contentType: file.type || "application/octet-stream", fileName: file.name || "file", blobId });
    const id = newMessageId();
    const idHex = hex(id);
    const sentAt = Date.now();
    const { ext, extras } = this.ops.outgoing(conv, sentAt);
    const content = encodeContent({ type: 2, id, sentAt, groupId: isGroup ? fromHex(conv.slice(6)) : new Uint8Array(0), pointer, caption: "", ...ext });
    const m: Message = { key: this.nextKey(conv), id: idHex, conv, from: this.user, device: (this.identity as Identity).device, text: null, sentAt, state: "pending", file: { name: file.name, type: file.type, size: file.size, pointer }, ...extras };
    const changes: [string, unknown][] = [];
    this.addMessage(m, changes);
    await this.enqueue(conv, idHex, content, changes);
    return idHex;
  }

  /**
   * Download and decrypt an attachment as it arrives (protocol-crypto-devices-groups-
   * attachments §4.2): each chunk is authenticated and decrypted from the response stream,
   * the ciphertext is never held whole, and the plaintext is handed to a `Blob` under
   * construction every ``BLOB_FOLD_BYTES`` (the browser's blob storage, which may keep it on
   * disk, not this page's memory, holds the file); that `Blob` is returned only after the
   * final chunk, the size and the digest verified (a relay that sends more than the pointer's
   * size is cut off at once).
   */
  async openFile(pointer: Uint8Array): Promise<Blob> {
    const p = ATT.decodePointer(pointer);
    const res = await this.api.downloadAttachment(p.blobId);
    const decryptor = new ATT.BlobDecryptor(p);
    let done = new Blob([]); // the plaintext so far, unpublished until finish() verified it all
    let parts: Uint8Array<ArrayBuffer>[] = [];
    let held = 0;
    const keep = (out: Uint8Array[]): void => {
      for (const part of out) {
        parts.push(part as Uint8Array<ArrayBuffer>);
        held += part.length;
        if (held < BLOB_FOLD_BYTES) continue;
        done = new Blob([done, ...parts]);
        parts = [];
        held = 0;
      }
    };
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        keep(await decryptor.feed(value));
      }
      keep(await decryptor.finish());
    } catch (e) {
      await reader.cancel().catch(() => undefined);
      throw e;
    }
    return new Blob([done, ...parts], { type: p.contentType });
  }

  async setTyping(to: string, active: boolean): Promise<void> {
    if (this.status !== "online") return;
    let users = [to];
    let groupId: Uint8Array = new Uint8Array(0);
    if (to.startsWith("group:")) {
      // Pairwise to every other member (ephemeral, like the Python SDK's group typing).
      users = (this.groups.get(to.slice(6))?.members ?? []).filter((m) => m !== this.user && !this.keyChanged(m));
      groupId = fromHex(to.slice(6));
    } else if (this.keyChanged(to)) return;
    if (!users.length) return;
    const content = encodeContent({ type: 4, id: newMessageId(), sentAt: Date.now(), groupId, active });
    await this.sendContent(users, "t-" + hex(randomBytes(8)), content, { transcript: false, ephemeral: true });
  }

  async markRead(conv: string): Promise<void> {
    const c = this.conversations.get(conv);
    const unreadIds = (this.messages.get(conv) ?? []).filter((m) => m.from !== this.user && !m.notice && m.state === "received");
    const changes: [string, unknown][] = [];
    if (c && c.unread) {
      const next = { ...c, unread: 0 };
      this.conversations.set(conv, next);
      changes.push([`conv:${conv}`, next]);
    }
    const bySender = new Map<string, string[]>();
    for (const m of unreadIds) {
      m.state = "read";
      this.ops.read(m);
      changes.push([m.key, m]);
      bySender.set(m.from, [...(bySender.get(m.from) ?? []), m.id]);
    }
    // READ receipts to each sender (group members too), owed from this commit.
    const owed = [...bySender].filter(([sender]) => !this.keyChanged(sender)).map(([sender, ids]) => this.receipts.owe(sender, 2, ids, changes));
    if (changes.length) await this.store.commit(changes);
    this.changed();
    for (const send of owed) send();
  }

  /**
   * One RECEIPT (``receipts.ts`` decides what goes and when): whether it is no longer owed —
   * the relay accepted it, or ``to``'s account is gone (nobody left to tell).
   */
  private async sendReceipt(to: string, kind: ReceiptKind, ids: string[]): Promise<boolean> {
    const content = encodeContent({ type: 3, id: newMessageId(), sentAt: Date.now(), receipt: kind, ids: ids.map(fromHex) });
    const refusal: { code?: string } = {};
    const outcome = await this.sendContent(to, "r-" + hex(randomBytes(12)), content, { transcript: false, refusal });
    return outcome === "accepted" || (outcome === "failed" && ACCOUNT_GONE.has(refusal.code ?? ""));
  }

  // --- receiving ----------------------------------------------------------------------

  private ack(seq: unknown): void {
    if (typeof seq === "number" && this.ws?.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ type: "ack", seqs: [seq] }));
    }
  }

  private async decryptPairwise(from: { user: string; device: number }, data: Uint8Array, changes: [string, unknown][]): Promise<{ body: Uint8Array; peer: S.PeerDevice }> {
    const env = S.decodeEnvelope(data);
    let list = await this.refreshList(from.user);
    let entry = findDevice(list, from.device);
    if (!entry || (env.kind === 2 && !equal(env.prefix.identityKey, entry.identityKey))) {
      list = await this.refreshList(from.user, true);
      entry = findDevice(list, from.device);
    }
    const k = sessionKey(from.user, from.device);
    const sessions = this.sessions.get(k) ?? [];
    let result: { state: S.SessionState; body: Uint8Array } | null = null;
    let index = -1;
    let lastError: unknown = null;
    if (env.kind === 2) {
      const digest = await crypto.subtle.digest("SHA-256", env.prefixBytes as Uint8Array<ArrayBuffer>);
      index = sessions.findIndex((s) => equal(s.initialDigest, new Uint8Array(digest)));
      if (index >= 0) result = await S.decryptMessage(sessions[index] as S.SessionState, env, this.clock() / 1000);
      else {
        const pk = this.prekeys as Prekeys;
        // An initial message on the last-resort KEM key with no one-time X25519 key consumes
        // nothing: its replay id (SHA-256 of the prefix) is kept so that it cannot start a
        // second session after its first was evicted or dropped (protocol-client §5). It is
        // named after the signed prekey it used, and forgotten when that key is deleted.
        const digestHex = hex(new Uint8Array(digest));
        const replayId = `pqxdh:${env.prefix.signedPrekeyId}:${digestHex}`;
        const reusable = env.prefix.oneTimePrekeyId === null && !!pk.kem.find((x) => x.id === env.prefix.kemPrekeyId)?.lastResort;
        const known = this.seen.has(replayId) || this.seen.has(`pqxdh:${digestHex}`); // (older name)
        if (reusable && known) throw new S.ReplayedInitialMessage("initial message accepted before");
        if (reusable) {
          changes.push([`seen:${replayId}`, this.clock()]);
          this.pendingSeen.push(replayId);
        }
        const accepted = await S.accept(this.local(), {
          signed: (i) => pk.signed.find((x) => x.id === i)?.priv ?? null,
          kem: (i) => pk.kem.find((x) => x.id === i) ?? null,
          oneTime: (i) => pk.otp.find((x) => x.id === i)?.priv ?? null,
        }, data, this.clock() / 1000);
        result = { state: accepted.session, body: accepted.body };
        const next: Prekeys = {
          ...pk,
          otp: pk.otp.filter((x) => x.id !== accepted.consumedOneTime),
          kem: pk.kem.filter((x) => x.id !== accepted.consumedKem),
        };
        changes.push(["prekeys", next]);
        this.pendingPrekeys = next;
      }
    } else {
      for (let i = 0; i < sessions.length && !result; i++) {
        try {
          result = await S.decryptMessage(sessions[i] as S.SessionState, env, this.clock() / 1000);
          index = i;
        } catch (e) {
          lastError = e;
        }
      }
      if (!result) throw lastError ?? new S.StateError("no session with this device");
    }
    const peer = result.state.peer;
    const onList = findDevice(list, peer.device, peer.identityKey);
    const rec = this.peers.get(peer.user);
    if (peer.user !== from.user || peer.device !== from.device || !onList || !rec || !equal(rec.accountKey, peer.accountKey)) {
      throw new S.SenderMismatch("the sender is not on its verified device list");
    }
    const rest = sessions.filter((_, i) => i !== index);
    const next = [result.state, ...rest].slice(0, MAX_SESSIONS);
    changes.push([k, next]);
    this.pendingSessions.set(k, next);
    return { body: result.body, peer };
  }

  private pendingSessions = new Map<string, S.SessionState[]>();
  private pendingPrekeys: Prekeys | null = null;
  private pendingSeen: string[] = [];
  private pendingGroups = new Map<string, Group | null>();

  private async onDeliver(f: Frame): Promise<void> {
    const envelope = String(f["envelope"]);
    const from = f["from"] as { user: string; device: number };
    if (this.seen.has(envelope)) {
      this.ack(f["seq"]);
      return;
    }
    const seenAt = this.clock();
    const changes: [string, unknown][] = [[`seen:${envelope}`, seenAt]];
    const after: (() => void)[] = [];
    this.pendingSessions.clear();
    this.pendingPrekeys = null;
    this.pendingGroups.clear();
    this.pendingSeen = [];
    try {
      const payload = decodeRelayPayload(fromB64(String(f["data"])));
      if (payload.kind === PayloadKind.Group) await this.receiveGroup(payload.data, changes, after);
      else if (payload.kind !== PayloadKind.Pairwise) throw new DecodeError("link offers are only read while joining");
      else {
        const { body } = await this.decryptPairwise(from, payload.data, changes);
        const content = decodeContent(unpad(body));
        this.handleContent(from, content, changes, after);
      }
      await this.store.commit(changes);
      for (const [k, v] of this.pendingSessions) this.sessions.set(k, v);
      if (this.pendingPrekeys) this.prekeys = this.pendingPrekeys;
      for (const id of this.pendingSeen) this.seen.set(id, seenAt);
      for (const [k, v] of this.pendingGroups) {
        if (v) this.groups.set(k, v);
        else this.groups.delete(k);
      }
      this.seen.set(envelope, seenAt);
      this.ack(f["seq"]);
      this.changed();
      for (const fn of after) fn();
    } catch (e) {
      if (e instanceof Offline) return; // not stored, not acked: redelivered on reconnect
      console.warn("could not decrypt", e);
      // Roll back the in-memory side effects of the failed envelope.
      this.reloadAfterFailure();
      const notice: Message = {
        key: this.nextKey(from.user),
        id: "x" + envelope,
        conv: from.user,
        from: from.user,
        device: from.device,
        text: null,
        sentAt: Number(f["ts"]) || Date.now(),
        state: "received",
        notice: `could not decrypt a message from ${from.user} (${(e as Error).name})`,
      };
      const fail: [string, unknown][] = [[`seen:${envelope}`, seenAt]];
      this.addMessage(notice, fail);
      await this.store.commit(fail);
      this.seen.set(envelope, seenAt);
      this.ack(f["seq"]);
      this.changed();
    }
  }

  private snapshot: { messages: Map<string, Message[]>; conversations: Map<string, Conversation> } | null = null;
  private reloadAfterFailure(): void {
    // Group and session changes are staged and applied only after the commit.
    this.pendingSessions.clear();
    this.pendingPrekeys = null;
    this.pendingGroups.clear();
  }

  private handleContent(from: { user: string; device: number }, c: Content, changes: [string, unknown][], after: (() => void)[]): void {
    const me = this.identity as Identity;
    const own = from.user === me.user;
    switch (c.type) {
      case 1: {
        if (c.groupId.length) throw new DecodeError("group messages travel under sender keys");
        if (this.known(hex(c.id))) break;
        this.receiveChat(from, from.user, c.id, c.sentAt, c.text, changes, c);
        if (!own) after.push(this.receipts.owe(from.user, 1, [hex(c.id)], changes));
        if (!own && this.notify && (this.active !== from.user || document.hidden)) {
          const n = this.notify;
          after.push(() => n(from.user, c.text, from.user));
        }
        break;
      }
      case 2: {
        if (c.groupId.length) throw new DecodeError("group messages travel under sender keys");
        if (this.known(hex(c.id))) break;
        this.receiveChat(from, from.user, c.id, c.sentAt, { pointer: c.pointer, caption: c.caption }, changes, c);
        if (!own) after.push(this.receipts.owe(from.user, 1, [hex(c.id)], changes));
        break;
      }
      case 7: {
        if (!own) throw new DecodeError("transcripts come only from our own devices");
        const inner = decodeContent(c.inner);
        if (inner.type === 1 && !inner.groupId.length) this.receiveChat(from, c.destination, inner.id, inner.sentAt, inner.text, changes, inner);
        if (inner.type === 2 && !inner.groupId.length) this.receiveChat(from, c.destination, inner.id, inner.sentAt, { pointer: inner.pointer, caption: inner.caption }, changes, inner);
        if (isOperation(inner)) this.ops.apply(inner.groupId.length ? `group:${hex(inner.groupId)}` : c.destination, from, inner, changes);
        break;
      }
      case 3: {
        const rank: Record<MessageState, number> = { pending: 0, failed: 0, sent: 1, delivered: 2, read: 3, received: 0 };
        const target: MessageState = c.receipt === 2 ? "read" : "delivered";
        for (const id of c.ids) {
          const m = this.findMessage(hex(id));
          if (m && m.from === me.user && rank[m.state] < rank[target]) {
            m.state = target;
            changes.push([m.key, m]);
          }
          if (m && m.from === me.user) this.ops.receipt(m, from.user, c.receipt, changes);
        }
        break;
      }
      case 8:
        this.fetchedAt.delete(me.user);
        break;
      case 5:
        this.applyGroupUpdate(from, c, changes);
        break;
      case 6: {
        const dist = SK.decodeDistribution(c.distribution);
        if (dist.user !== from.user || dist.device !== from.device || hex(dist.groupId) !== hex(c.groupId)) {
          throw new DecodeError("sender key distribution for another sender or group");
        }
        const g = this.stagedGroup(hex(c.groupId));
        if (!g) break; // not (yet) a member: nothing to keep
        const k = `${from.user}:${from.device}`;
        g.records[k] = SK.recordImport(g.records[k] ?? [], dist);
        this.stageGroup(g, changes);
        break;
      }
      case 13:
        if (!own) throw new DecodeError("verification syncs come only from our own devices");
        this.applyVerified(c.username, c.accountKey, c.state, changes);
        break;
      case 9:
      case 10:
      case 11:
      case 12:
        if (c.groupId.length) throw new DecodeError("group messages travel under sender keys");
        this.ops.apply(from.user, from, c, changes);
        break;
      default:
        break; // typing arrives as ephemeral
    }
  }

  private receiveChat(from: { user: string; device: number }, conv: string, id: Uint8Array, sentAt: number, text: string | { pointer: Uint8Array; caption: string }, changes: [string, unknown][], ext: Extensions = {}): void {
    const idHex = hex(id);
    // Duplicate message ids are stored once, and one deleted for me here stays deleted.
    if (this.known(idHex)) return;
    const mine = from.user === (this.identity as Identity).user;
    const m: Message = { key: this.nextKey(conv), id: idHex, conv, from: from.user, device: from.device, text: null, sentAt, state: mine ? "sent" : "received", ...this.ops.incoming(ext, sentAt, mine) };
    if (typeof text === "string") m.text = text;
    else {
      const p = ATT.decodePointer(text.pointer); // refuses a malformed pointer before storing
      m.file = { name: p.fileName, type: p.contentType, size: p.size, pointer: text.pointer };
      m.text = text.caption || null;
    }
    this.addMessage(m, changes);
    this.ops.onStored(m, changes);
    // Their message ends their typing indicator here (as in the TUI), not its expiry seconds later.
    if (!mine) this.stoppedTyping(conv, from.user);
  }

  /** ``user`` is no longer shown typing in ``conv``. */
  private stoppedTyping(conv: string, user: string): void {
    const who = this.typing.get(conv);
    if (!who?.has(user)) return;
    const next = new Map(who);
    next.delete(user);
    this.typing.set(conv, next);
  }

  private async onEphemeral(f: Frame): Promise<void> {
    const from = f["from"] as { user: string; device: number };
    const changes: [string, unknown][] = [];
    this.pendingSessions.clear();
    this.pendingPrekeys = null;
    this.pendingSeen = [];
    try {
      const payload = decodeRelayPayload(fromB64(String(f["data"])));
      if (payload.kind !== PayloadKind.Pairwise) return;
      const { body } = await this.decryptPairwise(from, payload.data, changes);
      const c = decodeContent(unpad(body));
      await this.store.commit(changes);
      for (const [k, v] of this.pendingSessions) this.sessions.set(k, v);
      if (this.pendingPrekeys) this.prekeys = this.pendingPrekeys;
      for (const id of this.pendingSeen) this.seen.set(id, this.clock());
      if (c.type === 4) {
        const conv = c.groupId.length ? `group:${hex(c.groupId)}` : from.user;
        if (c.groupId.length && !this.groups.get(hex(c.groupId))?.members.includes(from.user)) return;
        if (c.active) this.typing.set(conv, new Map(this.typing.get(conv)).set(from.user, Date.now()));
        else this.stoppedTyping(conv, from.user);
        this.changed();
      }
    } catch {
      // ephemeral frames are best effort
    }
  }

  // --- groups (protocol-client.md §6) ------------------------------------------------

  /** The group as staged in the current receive (or stored), copied for modification. */
  private stagedGroup(id: string): Group | null {
    const g = this.pendingGroups.has(id) ? this.pendingGroups.get(id) : this.groups.get(id);
    return g ? structuredClone(g) : null;
  }

  private stageGroup(g: Group, changes: [string, unknown][]): void {
    this.pendingGroups.set(g.id, g);
    changes.push([`group:${g.id}`, g]);
  }

  private applyGroupUpdate(from: { user: string; device: number }, c: Extract<Content, { type: 5 }>, changes: [string, unknown][]): void {
    const id = hex(c.groupId);
    const me = this.user;
    const group = this.stagedGroup(id);
    const epoch = Number(c.epoch);
    let members = [...new Set(c.members)].sort();
    let name = c.name;
    let newEpoch = epoch;
    if (group && !group.members.includes(from.user)) throw new DecodeError("membership change from a non-member");
    if (group && epoch <= group.epoch) {
      // Removals win over concurrent changes (protocol-client.md §6).
      if (c.action !== 3 && c.action !== 4) return;
      const gone = new Set(group.members.filter((m) => !c.members.includes(m) && (group.since[m] ?? 0) < epoch));
      if (c.action === 4 && !c.members.includes(from.user)) gone.add(from.user);
      if (!gone.size) return;
      members = group.members.filter((m) => !gone.has(m));
      name = group.name;
      newEpoch = group.epoch;
    }
    if (!group && c.action !== 1 && c.action !== 2) return;
    const conv = `group:${id}`;
    if (!members.includes(me)) {
      this.pendingGroups.set(id, null);
      changes.push([`group:${id}`, undefined]);
      return;
    }
    const removed = group ? group.members.filter((m) => !members.includes(m)) : [];
    const since: Record<string, number> = {};
    for (const m of members) since[m] = group ? (group.since[m] ?? newEpoch) : 0;
    const next: Group = group
      ? { ...group, name, members, epoch: newEpoch, since }
      : { id, name, members, epoch: newEpoch, since, ownKey: null, distributed: { keyId: 0, devices: [] }, records: {} };
    for (const u of removed) for (const k of Object.keys(next.records)) if (k.startsWith(`${u}:`)) delete next.records[k];
    if (removed.length) next.ownKey = null; // rotate: the next send distributes a new key
    this.stageGroup(next, changes);
    if (!this.conversations.has(conv)) {
      const cv = { name: conv, unread: 0, last: Date.now() };
      this.conversations.set(conv, cv);
      changes.push([`conv:${conv}`, cv]);
    }
  }

  private async receiveGroup(data: Uint8Array, changes: [string, unknown][], after: (() => void)[]): Promise<void> {
    const m = SK.decodeGroupMessage(data);
    const list = await this.refreshList(m.user);
    if (!findDevice(list, m.device)) throw new DecodeError("group message from a device off its signed list");
    const id = hex(m.groupId);
    const g = this.stagedGroup(id);
    if (!g || !g.members.includes(m.user)) throw new DecodeError("group message from a non-member");
    const k = `${m.user}:${m.device}`;
    const record = g.records[k] ?? [];
    const state = record.find((x) => x.keyId === m.keyId);
    if (!state) throw new SK.UnknownSenderKey(String(m.keyId));
    const { state: next, plaintext } = await SK.senderKeyDecrypt(state, m, this.clock() / 1000);
    const c = decodeContent(unpad(plaintext));
    if (!isConversationContent(c)) throw new DecodeError("a group message carries a message or an operation");
    if (hex(c.groupId) !== id) throw new DecodeError("group message for another group");
    g.records[k] = record.map((x) => (x.keyId === m.keyId ? next : x));
    this.stageGroup(g, changes);
    if (isOperation(c)) this.ops.apply(`group:${id}`, { user: m.user, device: m.device }, c, changes);
    else {
      const conv = `group:${id}`;
      if (!this.known(hex(c.id))) {
        const body = c.type === 1 ? c.text : { pointer: c.pointer, caption: c.caption };
        this.receiveChat({ user: m.user, device: m.device }, conv, c.id, c.sentAt, body, changes, c);
        if (m.user !== this.user) {
          after.push(this.receipts.owe(m.user, 1, [hex(c.id)], changes));
          if (this.notify && (this.active !== conv || document.hidden)) {
            const n = this.notify;
            after.push(() => n(`${m.user} in ${g.name}`, c.type === 1 ? c.text : "sent a file", conv));
          }
        }
      }
    }
  }

  groupTitle(conv: string): string {
    return conv.startsWith("group:") ? (this.groups.get(conv.slice(6))?.name ?? "group") : conv;
  }

  /**
   * Send a membership change (GROUP_UPDATE, the next epoch) pairwise to every member and to
   * those removed, and only once the relay accepted it apply it here. Not queued: a change
   * written offline would carry an epoch that other members may have passed meanwhile (their
   * concurrent changes; only removals win over those, protocol-client §6), so a late add could
   * be dropped by everyone but us, and what this device believes about the group would
   * diverge from the others without any sign. Like the SDK (protocol-client §4.4: a group
   * update is not kept), it needs the connection and fails otherwise. A refusal for now
   * (``busy``, ``internal``, ``rate_limited``, ``shutting_down``) or a connection lost on its
   * way is retried like a send, with the same client id: after ``retryDelayMs`` (waiting for
   * the connection at most ``READY_TIMEOUT_MS`` more), ``MAX_ATTEMPTS`` attempts in all; then
   * it fails saying why (the relay's code, or offline).
   */
  private async announce(g: Group, members: string[], action: number, extra: string[]): Promise<void> {
    if (this.status !== "online") throw new Error(GROUP_CHANGE_OFFLINE);
    const me = this.user;
    const epoch = g.epoch + 1;
    const sorted = [...new Set(members)].sort();
    const content = encodeContent({ type: 5, id: newMessageId(), sentAt: Date.now(), groupId: fromHex(g.id), epoch: BigInt(epoch), name: g.name, action, members: sorted });
    const to = [...new Set([...sorted, ...extra])].filter((u) => u !== me);
    const clientId = hex(randomBytes(16));
    const refusal: { code?: string } = {};
    let r: SendOutcome = "retry";
    for (let attempt = 1; ; attempt++) {
      delete refusal.code;
      r = await this.sendContent(to.length ? to : me, clientId, content, { transcript: false, refusal });
      if (r !== "retry" || attempt >= MAX_ATTEMPTS || !(await this.onlineAfter(retryDelayMs(attempt)))) break;
    }
    if (r === "retry") {
      const code = refusal.code;
      throw new Error(this.status === "online" && code && code !== "disconnected" ? `the relay could not take the group change now (${code}): nothing changed; try again` : GROUP_CHANGE_OFFLINE);
    }
    if (r !== "accepted") throw new Error("the relay did not accept the group change");
    // In memory at once (a member's answer may already be arriving), then stored.
    const previous = this.groups.get(g.id);
    const changes: [string, unknown][] = [];
    if (sorted.includes(me)) {
      const since: Record<string, number> = {};
      for (const m of sorted) since[m] = previous ? (previous.since[m] ?? epoch) : 0;
      const base = previous ?? g;
      const next: Group = { ...base, members: sorted, epoch, since };
      const removed = previous ? previous.members.filter((m) => !sorted.includes(m)) : [];
      for (const u of removed) for (const k of Object.keys(next.records)) if (k.startsWith(`${u}:`)) delete next.records[k];
      if (removed.length) next.ownKey = null; // rotate: the next send distributes a new key
      changes.push([`group:${g.id}`, next]);
      const conv = `group:${g.id}`;
      if (!this.conversations.has(conv)) {
        const cv = { name: conv, unread: 0, last: Date.now() };
        this.conversations.set(conv, cv);
        changes.push([`conv:${conv}`, cv]);
      }
      this.groups.set(g.id, next);
    } else {
      this.groups.delete(g.id);
      changes.push([`group:${g.id}`, undefined]);
    }
    this.changed();
    await this.store.commit(changes);
  }

  /** Wait ``ms``, then at most ``READY_TIMEOUT_MS`` more for the connection: whether it is online. */
  private async onlineAfter(ms: number): Promise<boolean> {
    await new Promise((r) => setTimeout(r, ms));
    if (this.status === "online") return true;
    if (this.stopped || this.status === "signed-out" || this.status === "replaced") return false;
    return new Promise<boolean>((resolve) => {
      const done = (ok: boolean): void => {
        clearTimeout(timer);
        off();
        resolve(ok);
      };
      const timer = setTimeout(() => done(false), READY_TIMEOUT_MS);
      const off = this.subscribe(() => {
        if (this.status === "online") done(true);
      });
    });
  }

  async createGroup(name: string, members: string[]): Promise<string> {
    const id = hex(randomBytes(16));
    const g: Group = { id, name, members: [], epoch: 0, since: {}, ownKey: null, distributed: { keyId: 0, devices: [] }, records: {} };
    await this.announce(g, [...members, this.user], 1, []);
    return `group:${id}`;
  }

  async addMembers(conv: string, users: string[]): Promise<void> {
    const g = this.groups.get(conv.slice(6));
    if (!g) throw new Error("unknown group");
    await this.announce(g, [...g.members, ...users], 2, []);
  }

  async removeMembers(conv: string, users: string[]): Promise<void> {
    const g = this.groups.get(conv.slice(6));
    if (!g) throw new Error("unknown group");
    if (users.includes(this.user)) throw new Error("use leave to leave");
    await this.announce(g, g.members.filter((m) => !users.includes(m)), 3, users.filter((u) => g.members.includes(u)));
  }

  async leaveGroup(conv: string): Promise<void> {
    const g = this.groups.get(conv.slice(6));
    if (!g) return;
    await this.announce(g, g.members.filter((m) => m !== this.user), 4, [this.user]);
    this.active = null;
  }

  /** A text in a group: queued like a direct one (``enqueue``), encrypted when it goes. */
  async sendGroupText(conv: string, text: string, replyTo?: string): Promise<string> {
    this.checkTrusted(conv);
    const g = this.groups.get(conv.slice(6)) as Group;
    const id = newMessageId();
    const idHex = hex(id);
    const sentAt = Date.now();
    const { ext, extras } = this.ops.outgoing(conv, sentAt, replyTo);
    const m: Message = { key: this.nextKey(conv), id: idHex, conv, from: this.user, device: (this.identity as Identity).device, text, sentAt, state: "pending", ...extras };
    const changes: [string, unknown][] = [];
    this.addMessage(m, changes);
    const content = encodeContent({ type: 1, id, sentAt, groupId: fromHex(g.id), text, ...ext });
    await this.enqueue(conv, idHex, content, changes);
    return idHex;
  }

  private async sendGroupContent(gid: string, idHex: string, content: Uint8Array): Promise<SendOutcome> {
    const me = this.identity as Identity;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const g = structuredClone(this.groups.get(gid) as Group);
      // Every member device (our own other devices too), from verified lists.
      const devices: { user: string; device: number }[] = [];
      for (const u of g.members) {
        const list = await this.refreshList(u, attempt > 0);
        for (const d of list.devices) if (!(u === me.user && d.id === me.device)) devices.push({ user: u, device: d.id });
      }
      const names = devices.map((d) => `${d.user}:${d.device}`);
      if (!g.ownKey) g.ownKey = SK.createSenderKey(fromHex(gid), me.user, me.device, randomBytes);
      let have = g.distributed.keyId === g.ownKey.keyId ? g.distributed.devices : [];
      if (have.some((d) => !names.includes(d))) {
        // A device holding our key left (unlinked): rotate first.
        g.ownKey = SK.createSenderKey(fromHex(gid), me.user, me.device, randomBytes);
        have = [];
      }
      const need = devices.filter((d) => !have.includes(`${d.user}:${d.device}`));
      if (need.length) {
        const users = [...new Set([...need.map((d) => d.user), me.user])];
        const skd = encodeContent({ type: 6, id: newMessageId(), sentAt: Date.now(), groupId: fromHex(gid), distribution: SK.encodeDistribution(g.ownKey) });
        this.groups.set(gid, g);
        await this.store.commit([[`group:${gid}`, g]]);
        const r = await this.sendContent(users, hex(randomBytes(16)), skd, { transcript: false });
        if (r !== "accepted") return r;
        const targets = devices.filter((d) => users.includes(d.user)).map((d) => `${d.user}:${d.device}`);
        g.distributed = { keyId: g.ownKey.keyId, devices: [...new Set([...have, ...targets])] };
      }
      const result = await this.sendLock.run(async () => {
        const { state, message } = await SK.senderKeyEncrypt(g.ownKey as SK.SenderKeyState, pad(content), randomBytes);
        g.ownKey = state;
        this.groups.set(gid, g);
        const changes: [string, unknown][] = [[`group:${gid}`, g]];
        this.handing(idHex, changes);
        await this.store.commit(changes);
        if (!devices.length) return { type: "accepted" } as Answer;
        return this.transmit({ type: "send", id: idHex, payloads: [{ data: b64(encodeRelayPayload(PayloadKind.Group, message)), to: devices }], ttl: sendTtl(content) });
      });
      if (result.type === "accepted") return "accepted";
      if (result.type === "mismatch") continue; // lists refetched on the next attempt
      const code = result["code"];
      if (typeof code === "string" && RETRYABLE.has(code)) return "retry";
      return "failed";
    }
    return "failed";
  }

  // --- devices ------------------------------------------------------------------------

  async devices(): Promise<DeviceList> {
    return this.refreshList(this.user, true);
  }

  /**
   * Existing device side of linking (protocol-client.md §7, what `vox link` does): add a
   * slot with a temporary auth key derived from a fresh code, send the encrypted offer, and
   * return the code; ``waitLinked`` then waits for the new device to take its slot.
   */
  async offerLink(): Promise<{ code: string; device: number; version: number; throwaway: Uint8Array }> {
    const id = this.identity as Identity;
    const current = await this.refreshList(id.user, true);
    let device = 0;
    do {
      device = 2 + (new DataView(randomBytes(4).buffer).getUint32(0) % 2 ** 31);
    } while (current.devices.some((d) => d.id === device));
    const code = { user: id.user, device, secret: randomBytes(10) };
    const { authSeed, offerKey } = await deriveLinkKeys(code);
    const throwaway = x25519Typed(randomBytes(32));
    const entry = { id: device, identityKey: throwaway, authKey: typed(ED25519_TYPE, ed25519Public(authSeed)) };
    const next = { user: id.user, version: current.version + 1, devices: [...current.devices, entry].sort((a, b) => a.id - b.id) };
    await this.api.putDevices(id.user, signList(next, id.accountSeed));
    const list = await this.refreshList(id.user, true);
    const sealed = await sealOffer(code, offerKey, id.accountSeed, randomBytes(12));
    // Our other devices (not the new one: it has no prekeys yet) learn about the change.
    const others = await this.ensureSessions(id.user, { ...list, devices: list.devices.filter((d) => d.id !== device) });
    const answer = await this.sendLock.run(async () => {
      const changes: [string, unknown][] = [];
      const payloads = await this.encryptFor(others, encodeContent({ type: 8, id: newMessageId(), sentAt: Date.now() }), changes);
      await this.store.commit(changes);
      payloads.push({ data: b64(encodeRelayPayload(PayloadKind.Link, sealed)), to: [{ user: id.user, device }] });
      return this.transmit({ type: "send", id: "link-" + hex(randomBytes(8)), payloads });
    });
    if (answer.type !== "accepted") throw new Error(`the relay refused the offer (${String(answer["code"] ?? answer.type)})`);
    return { code: formatLinkCode(code), device, version: list.version, throwaway };
  }

  /** Wait until the new device replaced its temporary entry (list v+2), then hand it the groups. */
  async waitLinked(offer: { device: number; version: number; throwaway: Uint8Array }, withinMs = 300_000): Promise<void> {
    const deadline = Date.now() + withinMs;
    while (Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 2000));
      let list: DeviceList;
      try {
        list = await this.refreshList(this.user, true);
      } catch {
        continue;
      }
      const entry = list.devices.find((d) => d.id === offer.device);
      if (!entry) throw new Error("the new device's slot disappeared");
      if (list.version > offer.version && !equal(entry.identityKey, offer.throwaway)) {
        for (const g of this.groups.values()) {
          const content = encodeContent({ type: 5, id: newMessageId(), sentAt: Date.now(), groupId: fromHex(g.id), epoch: BigInt(g.epoch), name: g.name, action: 2, members: g.members });
          await this.sendContent(this.user, hex(randomBytes(16)), content, { transcript: false });
        }
        return;
      }
    }
    throw new Error("the new device did not join in time");
  }

  async unlink(device: number): Promise<void> {
    const id = this.identity as Identity;
    if (device === id.device) throw new Error("a device cannot remove itself");
    const list = await this.refreshList(id.user, true);
    const next = { user: id.user, version: list.version + 1, devices: list.devices.filter((d) => d.id !== device) };
    const signed = signList(next, id.accountSeed);
    await this.api.putDevices(id.user, signed);
    await this.refreshList(id.user, true);
  }

  /** Web Push (docs/protocol-relay.md "Web Push"): the relay's VAPID key, or null if off. */
  async vapidKey(): Promise<Uint8Array | null> {
    try {
      // /v1/config carries it (null when push is off); a relay from before that asks /v1/push/vapid.
      const cfg = this.config ?? (this.config = await this.api.config());
      const r = cfg.push !== undefined ? cfg.push : await this.api.call<{ public_key: string }>("GET", "/v1/push/vapid", undefined, false);
      if (!r) return null;
      const b64u = r.public_key.replace(/-/g, "+").replace(/_/g, "/");
      return fromB64(b64u + "=".repeat((4 - (b64u.length % 4)) % 4));
    } catch {
      return null;
    }
  }

  async registerPush(subscription: PushSubscriptionJSON): Promise<void> {
    await this.api.call("POST", "/v1/push/subscriptions", subscription);
  }

  /**
   * Delete the whole account on the relay (every device; protocol-relay "DELETE
   * /v1/accounts/me"): signed with the account key, as a token alone must not be able to. On
   * success (or when it is already deleted) this engine stops; the caller wipes the store.
   */
  async deleteAccount(): Promise<void> {
    const me = this.identity as Identity;
    const signature = ed25519Sign(me.accountSeed, ACCOUNT_DELETE_LABEL, utf8(me.user));
    try {
      await this.api.call("DELETE", "/v1/accounts/me", { signature: b64(signature) });
    } catch (e) {
      if (!(e instanceof RelayError && e.code === "account_deleted")) throw e;
    }
    this.stop();
  }

  async logout(): Promise<void> {
    this.stop();
    try {
      // Subscriptions first: a logged-out device must not keep getting pushes.
      await this.api.call("DELETE", "/v1/push/subscriptions").catch(() => undefined);
      await this.api.call("DELETE", "/v1/auth/token");
    } catch {
      // offline: the token expires on its own
    }
  }
}

function decodeContentHead(b: Uint8Array): { id: Uint8Array; sentAt: number } {
  const c = decodeContent(b);
  return { id: c.id, sentAt: c.sentAt };
}

export { X25519_TYPE };
