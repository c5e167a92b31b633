// Everyday operations on messages (protocol-client.md §2 "Operations"): edit, delete for
// everyone and for me, reactions, replies, the disappearing-messages timer and its expiry
// sweep, and per-member receipts in groups. The receiving rules are the Python SDK's
// (clients/sdk/message_rules.py), so every device of every member converges:
//
// * EDIT and DELETE take effect only from the target's author; an edit of a deleted message
//   or of a file is ignored; an edit keeps the earlier texts; a delete leaves a tombstone
//   (text, file, edits and reactions gone);
// * a reaction is one emoji per person per message, replaced by the next, removed by "";
//   reactions to a deleted message are ignored;
// * an operation applies only to a message of the conversation it arrived in;
// * an operation whose target is not stored (yet) is kept — at most MAX_PENDING of them, for
//   at most PENDING_TTL_MS — and applied when the message arrives;
// * TIMER sets the conversation's timer (any member) and is shown in the conversation; a
//   repeat of it (a resend under a new client id, a transcript) changes nothing — its row is
//   stored already, or was deleted for me and stays deleted; a message sent under a timer
//   carries it (EXPIRE) and is removed from this store that long after it was sent (ours, and
//   our other devices' copies) or read here (theirs);
// * a message removed here (delete for me, disappeared) takes the operations kept for it along.
//
// The engine owns the sockets, sessions and the store; it hands this module a small host.
import { fromHex, hex } from "./bytes";
import {
  type Extensions,
  type Operation,
  type Quote,
  checkTimer,
  decodeContent,
  encodeContent,
  excerptOf,
  isOperation,
  newMessageId,
} from "./content";
import type { Conversation, Message } from "./engine";
import type { Store } from "./store";

export const MAX_PENDING = 1000;
export const PENDING_TTL_MS = 7 * 24 * 3600 * 1000;
const PENDING = "ops:pending";
/** Ids of messages deleted for me (or expired) here: ``gone:<id>`` → when (Unix ms). */
const GONE = "gone:";
const SWEEP_EVERY_MS = 1000;

/** What a reply shows of the quoted message (ids as 32 hex digits). */
export interface Reply {
  id: string;
  author: string;
  excerpt: string;
}

/** What a stored message carries besides its text or file. */
export interface MessageExtras {
  /** Earlier texts, oldest first: the message was edited when this is not empty. */
  edits?: string[];
  /** Deleted for everyone: a tombstone. */
  deleted?: boolean;
  /** username → emoji (one per person). */
  reactions?: Record<string, string>;
  reply?: Reply;
  /** The disappearing timer it was sent under (seconds). */
  expiresIn?: number;
  /** When it disappears from this store (Unix ms): set when sent, or when read here. */
  expireAt?: number;
  /** Our group messages: what each member's receipts said. */
  receipts?: Record<string, "delivered" | "read">;
  /** A conversation event shown in the history (a timer change). */
  event?: "timer";
}

type Changes = [string, unknown][];
/** Our unsent message taken out of the outbox (``OpsHost.cancelUnsent``). */
type Cancelled = { changes: Changes; undo: () => void; done: () => void };
/** What a delete did: "withdrawn" — our message was still queued and never sent: it reached no one. */
export type DeleteResult = "withdrawn" | "deleted";
type Sender = { user: string; device: number };

interface PendingOp {
  conv: string;
  user: string;
  device: number;
  content: string; // hex of the operation's content
  target: string;
  at: number;
}

/** What the engine lends this module. */
export interface OpsHost {
  readonly store: Store;
  readonly messages: Map<string, Message[]>;
  readonly conversations: Map<string, Conversation>;
  readonly user: string;
  readonly device: number;
  find(id: string): Message | undefined;
  /** Add a new history entry (and bump its conversation) into ``changes``. */
  add(m: Message, changes: Changes): void;
  nextKey(conv: string): string;
  /**
   * Send an operation's content in ``conv``; ``apply`` records its local effect in the
   * transaction that queues it. Rejects when it cannot be sent. ``withdraws``: the DELETE of
   * our file message ``withdraws`` — its blob goes from the relay (``DELETE /v1/attachments/{id}``,
   * if this device uploaded it) once the relay accepted the DELETE, from this page or after a
   * reload; a DELETE refused for good keeps it.
   */
  sendOperation(conv: string, idHex: string, content: Uint8Array, apply: (changes: Changes) => void, withdraws?: Message): Promise<void>;
  /**
   * Take our message ``id`` (and the queued operations on it) out of the outbox if it was never
   * handed to the relay, at once (no await: the pump cannot send it meanwhile): ``changes`` to
   * commit with its removal, ``undo`` if that commit fails, ``done`` once it is committed (our
   * file message's blob is deleted on the relay then, or on a later connection). Null when it
   * is not queued unsent.
   */
  cancelUnsent(id: string): Cancelled | null;
  changed(): void;
  /** The engine's clock (Unix ms). */
  now(): number;
}

const TIMER_UNITS: [number, string][] = [
  [7 * 86400, "week"],
  [86400, "day"],
  [3600, "hour"],
  [60, "minute"],
  [1, "second"],
];

/** "1 hour", "30 seconds", "4 weeks", "off". */
export function describeTimer(seconds: number): string {
  if (!seconds) return "off";
  for (const [unit, name] of TIMER_UNITS) {
    if (seconds % unit === 0) {
      const n = seconds / unit;
      return `${n} ${name}${n === 1 ? "" : "s"}`;
    }
  }
  return `${seconds} seconds`;
}

export const groupIdOf = (conv: string): Uint8Array => (conv.startsWith("group:") ? fromHex(conv.slice(6)) : new Uint8Array(0));

export class MessageOps {
  private pending: PendingOp[] = [];
  /**
   * Messages removed from this device (delete for me, disappeared): id → when. A copy that
   * arrives again later (a relay redelivery, a history transcript, the sender's resend) is
   * not stored again, and operations on it are dropped. Pruned like processed envelope ids.
   */
  private gone = new Map<string, number>();
  private sweeper: ReturnType<typeof setInterval> | null = null;

  constructor(private readonly host: OpsHost) {}

  async load(): Promise<void> {
    this.pending = (await this.host.store.get<PendingOp[]>(PENDING)) ?? [];
    for (const [k, at] of await this.host.store.list<number>(GONE)) this.gone.set(k.slice(GONE.length), at);
  }

  /** Was message ``id`` deleted for me (or did it disappear) on this device? */
  isGone(id: string): boolean {
    return this.gone.has(id);
  }

  /** Forget tombstones made before ``cutoff`` (Unix ms): no copy can arrive any more. */
  prune(cutoff: number, changes: Changes): string[] {
    const old = [...this.gone].filter(([, at]) => at < cutoff).map(([id]) => id);
    for (const id of old) changes.push([GONE + id, undefined]);
    return old;
  }

  /** After the commit of ``prune``'s changes. */
  forget(ids: string[]): void {
    for (const id of ids) this.gone.delete(id);
  }

  /** The conversation's disappearing-messages timer in seconds (0 = off). */
  timer(conv: string): number {
    return this.host.conversations.get(conv)?.timer ?? 0;
  }

  // --- what a message carries ------------------------------------------------------------

  /** Extensions and stored fields of a message we send now in ``conv`` (optionally a reply). */
  outgoing(conv: string, sentAt: number, replyTo?: string): { ext: Extensions; extras: MessageExtras } {
    const ext: Extensions = {};
    const extras: MessageExtras = {};
    if (replyTo) {
      const q = this.message(conv, replyTo);
      if (q.deleted) throw new Error("that message was deleted");
      const quote: Quote = { id: fromHex(q.id), author: q.from, excerpt: excerptOf(q.text ?? q.file?.name ?? "") };
      ext.quote = quote;
      extras.reply = { id: q.id, author: quote.author, excerpt: quote.excerpt };
    }
    const timer = this.timer(conv);
    if (timer) {
      ext.expire = timer;
      extras.expiresIn = timer;
      extras.expireAt = sentAt + timer * 1000;
    }
    return { ext, extras };
  }

  /** Stored fields of a message received (or our other device's copy, ``mine``). */
  incoming(ext: Extensions, sentAt: number, mine: boolean): MessageExtras {
    const extras: MessageExtras = {};
    if (ext.quote) extras.reply = { id: hex(ext.quote.id), author: ext.quote.author, excerpt: ext.quote.excerpt };
    if (ext.expire) {
      extras.expiresIn = ext.expire;
      // Ours disappear that long after they were sent; theirs after we read them.
      if (mine) extras.expireAt = sentAt + ext.expire * 1000;
    }
    return extras;
  }

  /** ``m`` was read on this device now: its disappearing countdown starts. */
  read(m: Message, now = this.host.now()): void {
    if (m.expiresIn && m.expireAt === undefined) m.expireAt = now + m.expiresIn * 1000;
  }

  /** A receipt from ``user`` for our message ``m`` (kept per member in groups). */
  receipt(m: Message, user: string, kind: 1 | 2, changes: Changes): void {
    if (!m.conv.startsWith("group:") || user === this.host.user) return;
    const was = m.receipts?.[user];
    if (was === "read" || (was === "delivered" && kind === 1)) return;
    m.receipts = { ...m.receipts, [user]: kind === 2 ? "read" : "delivered" };
    changes.push([m.key, m]);
  }

  // --- receiving -------------------------------------------------------------------------

  /** Apply an operation received (or sent by us) in ``conv``. */
  apply(conv: string, sender: Sender, op: Operation, changes: Changes, now = this.host.now()): void {
    if (op.type === 12) {
      this.applyTimer(conv, sender, op, changes);
      return;
    }
    if (this.gone.has(hex(op.target))) return; // removed here: nothing to change
    const m = this.host.find(hex(op.target));
    if (!m) {
      this.defer(conv, sender, op, changes, now);
      return;
    }
    if (m.conv !== conv || m.notice) return;
    const author = sender.user === m.from;
    if (op.type === 9) {
      if (!author || m.deleted || m.text === null || m.file) return;
      m.edits = [...(m.edits ?? []), m.text];
      m.text = op.text;
    } else if (op.type === 10) {
      if (!author || m.deleted) return;
      m.deleted = true;
      m.text = null;
      delete m.file;
      delete m.edits;
      delete m.reactions;
    } else {
      if (m.deleted) return;
      const reactions = { ...m.reactions };
      if (op.emoji) reactions[sender.user] = op.emoji;
      else delete reactions[sender.user];
      m.reactions = reactions;
    }
    changes.push([m.key, m]);
  }

  private applyTimer(conv: string, sender: Sender, op: Extract<Operation, { type: 12 }>, changes: Changes): void {
    // A repeat (a resend under a new client id, a transcript) changes nothing: its row is
    // stored already, or was deleted for me here and stays deleted — and an older change
    // arriving again does not set the timer back over a newer one.
    const id = hex(op.id);
    if (this.gone.has(id) || this.host.find(id)) return;
    const c = this.host.conversations.get(conv) ?? { name: conv, unread: 0, last: this.host.now() };
    const next: Conversation = { ...c, timer: op.seconds };
    this.host.conversations.set(conv, next);
    changes.push([`conv:${conv}`, next]);
    const who = sender.user === this.host.user ? "You" : sender.user;
    const text = op.seconds
      ? `${who} set disappearing messages to ${describeTimer(op.seconds)}`
      : `${who} turned off disappearing messages`;
    // A notice: shown in the history, never counted unread nor receipted.
    const m: Message = { key: this.host.nextKey(conv), id, conv, from: sender.user, device: sender.device, text, sentAt: op.sentAt, state: "read", notice: text, event: "timer" };
    this.host.add(m, changes);
  }

  private defer(conv: string, sender: Sender, op: Operation, changes: Changes, now: number): void {
    const kept = this.pending.filter((p) => p.at > now - PENDING_TTL_MS);
    kept.push({ conv, user: sender.user, device: sender.device, content: hex(encodeContent(op)), target: "target" in op ? hex(op.target) : "", at: now });
    this.pending = kept.slice(-MAX_PENDING);
    changes.push([PENDING, this.pending]);
  }

  /** ``m`` was just stored: apply the operations that arrived before it. */
  onStored(m: Message, changes: Changes, now = this.host.now()): void {
    const mine = this.pending.filter((p) => p.target === m.id);
    if (!mine.length) return;
    this.pending = this.pending.filter((p) => p.target !== m.id);
    changes.push([PENDING, this.pending.length ? this.pending : undefined]);
    for (const p of mine) {
      const op = decodeContent(fromHex(p.content));
      if (isOperation(op)) this.apply(p.conv, { user: p.user, device: p.device }, op, changes, now);
    }
  }

  // --- sending ---------------------------------------------------------------------------

  private message(conv: string, id: string): Message {
    const m = this.host.find(id.toLowerCase());
    if (!m || m.conv !== conv || m.notice) throw new Error(`no message ${id} in this conversation`);
    return m;
  }

  private async send(conv: string, body: Record<string, unknown> & { type: 9 | 10 | 11 | 12 }, withdraws?: Message): Promise<void> {
    const op = { ...body, id: newMessageId(), sentAt: this.host.now(), groupId: groupIdOf(conv) } as Operation;
    const me = { user: this.host.user, device: this.host.device };
    await this.host.sendOperation(conv, hex(op.id), encodeContent(op), (changes) => this.apply(conv, me, op, changes), withdraws);
  }

  /** Replace the text of our message ``id``. */
  async edit(conv: string, id: string, text: string): Promise<void> {
    const m = this.message(conv, id);
    if (m.from !== this.host.user || m.deleted || m.text === null || m.file) throw new Error("only your own text messages can be edited");
    if (!text.trim()) throw new Error("an edit needs a text");
    await this.send(conv, { type: 9, target: fromHex(m.id), text });
  }

  /**
   * Delete our message ``id`` for everyone (a tombstone on every device). Still queued and never
   * handed to the relay, it is not sent at all (nor the edits and reactions queued on it) and is
   * removed here: no DELETE is needed. On its way (or possibly delivered) it cannot be recalled:
   * the DELETE is queued behind it. A file's blob is deleted on the relay either way: withdrawn,
   * at once; deleted, once the relay accepted the DELETE (also when it goes out later, after a
   * reload too). Returns "withdrawn" when it was never sent (it reached no one), else "deleted".
   */
  async deleteForEveryone(conv: string, id: string): Promise<DeleteResult> {
    const m = this.message(conv, id);
    if (m.from !== this.host.user) throw new Error("only your own messages can be deleted for everyone");
    if (m.deleted) return "deleted";
    const cancelled = this.host.cancelUnsent(m.id);
    if (cancelled) {
      await this.remove([m], cancelled);
    } else {
      await this.send(conv, { type: 10, target: fromHex(m.id) }, m);
    }
    return cancelled ? "withdrawn" : "deleted";
  }

  /** Set (or with "" remove) our reaction to ``id``. */
  async react(conv: string, id: string, emoji: string): Promise<void> {
    const m = this.message(conv, id);
    if (m.deleted) throw new Error("that message was deleted");
    await this.send(conv, { type: 11, target: fromHex(m.id), emoji: emoji.trim() });
  }

  /** Set the conversation's disappearing timer for every member (0 = off). */
  async setTimer(conv: string, seconds: number): Promise<void> {
    await this.send(conv, { type: 12, seconds: checkTimer(seconds) });
  }

  /**
   * Delete ``id`` from this device only: a message, or a timer change's row (the change itself
   * stands). Our message still queued and never handed to the relay is not sent at all (nor the
   * edits and reactions queued on it; a file's blob is deleted on the relay): "withdrawn", it
   * reached no one. One on its way still goes, and stays deleted here: "deleted".
   */
  async deleteForMe(conv: string, id: string): Promise<DeleteResult> {
    const row = this.host.find(id.toLowerCase());
    const m = row?.event === "timer" && row.conv === conv ? row : this.message(conv, id);
    const cancelled = m.from === this.host.user && !m.event ? this.host.cancelUnsent(m.id) : null;
    await this.remove([m], cancelled);
    return cancelled ? "withdrawn" : "deleted";
  }

  // --- disappearing messages -------------------------------------------------------------

  /** Remove ``gone`` from this store (``cancelled``: its unsent outbox entries, taken out with it). */
  private async remove(gone: Message[], cancelled: Cancelled | null = null): Promise<void> {
    if (!gone.length) return;
    const keys = new Set(gone.map((m) => m.key));
    const now = this.host.now();
    // The message, its tombstone and the operations kept for it in one transaction: a copy
    // that comes again stays gone. (A timer change's row too: its TIMER arriving again brings
    // back neither the row nor the timer. A "could not decrypt" notice has no message id.)
    const remembered = gone.filter((m) => !m.notice || m.event);
    const ids = new Set(remembered.map((m) => m.id));
    const changes: Changes = [...keys].map((k): [string, unknown] => [k, undefined]);
    for (const m of remembered) changes.push([GONE + m.id, now]);
    const pending = this.pending.filter((p) => !ids.has(p.target));
    if (pending.length !== this.pending.length) {
      changes.push([PENDING, pending.length ? pending : undefined]);
      this.pending = pending; // now: an operation kept meanwhile is added to this list
    }
    if (cancelled) changes.push(...cancelled.changes);
    try {
      await this.host.store.commit(changes);
    } catch (err) {
      cancelled?.undo(); // still stored (message and outbox entries): sent after all
      throw err;
    }
    cancelled?.done();
    for (const conv of new Set(gone.map((m) => m.conv))) {
      this.host.messages.set(conv, (this.host.messages.get(conv) ?? []).filter((m) => !keys.has(m.key)));
    }
    for (const id of ids) this.gone.set(id, now);
    this.host.changed();
  }

  /** Remove every message whose disappearing time has come; returns how many. */
  async sweep(now = this.host.now()): Promise<number> {
    const gone: Message[] = [];
    for (const list of this.host.messages.values()) {
      for (const m of list) if (m.expireAt !== undefined && m.expireAt <= now) gone.push(m);
    }
    await this.remove(gone);
    return gone.length;
  }

  startSweeper(): void {
    if (this.sweeper !== null) return;
    void this.sweep().catch(() => undefined);
    this.sweeper = setInterval(() => void this.sweep().catch(() => undefined), SWEEP_EVERY_MS);
  }

  stopSweeper(): void {
    if (this.sweeper !== null) clearInterval(this.sweeper);
    this.sweeper = null;
  }
}
