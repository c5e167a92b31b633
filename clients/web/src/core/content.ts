// The relay payload and the content inside every plaintext (protocol-client.md §1-2).
import { DecodeError, Reader, Writer, concat, fromUtf8, randomBytes } from "./bytes";

export const PAD_BLOCK = 160;
export const enum PayloadKind {
  Pairwise = 1,
  Group = 2,
  Link = 3,
}

export function encodeRelayPayload(kind: PayloadKind, data: Uint8Array): Uint8Array {
  return concat(Uint8Array.of(1, kind), data);
}

export function decodeRelayPayload(b: Uint8Array): { kind: PayloadKind; data: Uint8Array } {
  if (b.length < 2) throw new DecodeError("truncated relay payload");
  if (b[0] !== 1) throw new DecodeError(`unsupported relay payload version ${b[0]}`);
  const kind = b[1] as number;
  if (kind < 1 || kind > 3) throw new DecodeError(`unknown payload kind ${kind}`);
  return { kind: kind as PayloadKind, data: b.slice(2) };
}

/** What a reply quotes (extension QUOTE): the message id, its author, a short excerpt. */
export interface Quote {
  id: Uint8Array;
  author: string;
  excerpt: string;
}
/** Optional extensions of a TEXT or ATTACHMENT (protocol-client.md §2). */
export interface Extensions {
  quote?: Quote;
  expire?: number; // the conversation's disappearing timer when sent (seconds)
}

export const MAX_TEXT = 65536;
export const MAX_EXCERPT = 200;
export const MAX_EMOJI = 32;
export const MIN_TIMER = 30;
export const MAX_TIMER = 4 * 7 * 24 * 3600;
const ED25519_KEY = 0x02; // the type byte of a typed Ed25519 public key (protocol-crypto §4)
const QUOTE = 1;
const EXPIRE = 2;

/** ``seconds`` if it is a valid timer (0 = off, or 30 s .. 4 weeks); else a DecodeError. */
export function checkTimer(seconds: number): number {
  if (seconds !== 0 && !(seconds >= MIN_TIMER && seconds <= MAX_TIMER)) {
    throw new DecodeError(`timer must be 0 or ${MIN_TIMER}..${MAX_TIMER} seconds`);
  }
  return seconds;
}

/** At most 200 UTF-8 bytes of ``text``, cut on a character boundary. */
export function excerptOf(text: string): string {
  const b = new TextEncoder().encode(text);
  let end = Math.min(b.length, MAX_EXCERPT);
  while (end < b.length && ((b[end] as number) & 0xc0) === 0x80) end--; // not inside a character
  return fromUtf8(b.slice(0, end));
}

/** VERIFIED's state (protocol-client §2): 1 = verified, 2 = unverified (taken back). */
export type VerifyState = 1 | 2;

export type ContentBody =
  | ({ type: 1; groupId: Uint8Array; text: string } & Extensions)
  | ({ type: 2; groupId: Uint8Array; pointer: Uint8Array; caption: string } & Extensions)
  | { type: 3; receipt: 1 | 2; ids: Uint8Array[] }
  | { type: 4; groupId: Uint8Array; active: boolean }
  | { type: 5; groupId: Uint8Array; epoch: bigint; name: string; action: number; members: string[] }
  | { type: 6; groupId: Uint8Array; distribution: Uint8Array }
  | { type: 7; destination: string; inner: Uint8Array }
  | { type: 8 }
  | { type: 9; groupId: Uint8Array; target: Uint8Array; text: string }
  | { type: 10; groupId: Uint8Array; target: Uint8Array }
  | { type: 11; groupId: Uint8Array; target: Uint8Array; emoji: string }
  | { type: 12; groupId: Uint8Array; seconds: number }
  | { type: 13; username: string; accountKey: Uint8Array; state: VerifyState };

/** Operations on a conversation's messages (EDIT, DELETE, REACTION, TIMER). */
export type Operation = Extract<Content, { type: 9 | 10 | 11 | 12 }>;
export const isOperation = (c: Content): c is Operation => c.type >= 9 && c.type <= 12;
/** What a TRANSCRIPT or a group message may carry. */
export type ConversationContent = Extract<Content, { type: 1 | 2 | 9 | 10 | 11 | 12 }>;
export const isConversationContent = (c: Content): c is ConversationContent => c.type === 1 || c.type === 2 || isOperation(c);

export type Content = { id: Uint8Array; sentAt: number } & ContentBody;

export const newMessageId = (): Uint8Array => randomBytes(16);

export function encodeContent(c: Content): Uint8Array {
  const w = new Writer().u8(1).u8(c.type).bytes16(c.id).u64(BigInt(c.sentAt));
  switch (c.type) {
    case 1:
      w.bytes16(c.groupId).bytes32(new TextEncoder().encode(c.text));
      writeExtensions(w, c);
      break;
    case 2:
      w.bytes16(c.groupId).bytes32(c.pointer).str16(c.caption);
      writeExtensions(w, c);
      break;
    case 3:
      w.u8(c.receipt).u16(c.ids.length);
      for (const id of c.ids) w.bytes16(id);
      break;
    case 4:
      w.bytes16(c.groupId).u8(c.active ? 1 : 0);
      break;
    case 5:
      w.bytes16(c.groupId).u64(c.epoch).str16(c.name).u8(c.action).u16(c.members.length);
      for (const m of c.members) w.str16(m);
      break;
    case 6:
      w.bytes16(c.groupId).bytes32(c.distribution);
      break;
    case 7:
      w.str16(c.destination).bytes32(c.inner);
      break;
    case 8:
      break;
    case 9:
      target(w, c.groupId, c.target).bytes32(new TextEncoder().encode(c.text));
      break;
    case 10:
      target(w, c.groupId, c.target);
      break;
    case 11:
      if (new TextEncoder().encode(c.emoji).length > MAX_EMOJI) throw new DecodeError(`emoji longer than ${MAX_EMOJI} bytes`);
      target(w, c.groupId, c.target).str16(c.emoji);
      break;
    case 12:
      w.bytes16(c.groupId).u32(checkTimer(c.seconds));
      break;
    case 13:
      if (c.accountKey.length !== 33 || c.accountKey[0] !== ED25519_KEY) throw new DecodeError("not a typed Ed25519 key");
      if (c.state !== 1 && c.state !== 2) throw new DecodeError("unknown verify state");
      w.str16(c.username).raw(c.accountKey).u8(c.state);
      break;
  }
  return w.done();
}

function target(w: Writer, groupId: Uint8Array, id: Uint8Array): Writer {
  if (id.length !== 16) throw new DecodeError("target must be 16 bytes");
  return w.bytes16(groupId).bytes16(id);
}

function writeExtensions(w: Writer, e: Extensions): void {
  if (e.quote) {
    if (e.quote.id.length !== 16) throw new DecodeError("the quoted id must be 16 bytes");
    if (new TextEncoder().encode(e.quote.excerpt).length > MAX_EXCERPT) throw new DecodeError("excerpt too long");
    w.u8(QUOTE).bytes16(new Writer().bytes16(e.quote.id).str16(e.quote.author).str16(e.quote.excerpt).done());
  }
  if (e.expire) w.u8(EXPIRE).bytes16(new Writer().u32(checkTimer(e.expire)).done());
}

/** Extensions up to the end of the content; unknown tags are skipped. */
function readExtensions(r: Reader): Extensions {
  const out: Extensions = {};
  while (r.remaining) {
    const tag = r.u8();
    const value = new Reader(r.bytes16(4096));
    if (tag === QUOTE) {
      const id = value.bytes16(16);
      if (id.length !== 16) throw new DecodeError("the quoted id must be 16 bytes");
      out.quote = { id, author: value.str16(32), excerpt: value.str16(MAX_EXCERPT) };
      value.end();
    } else if (tag === EXPIRE) {
      out.expire = checkTimer(value.u32());
      value.end();
    }
  }
  return out;
}

function readTarget(r: Reader): { groupId: Uint8Array; target: Uint8Array } {
  const groupId = r.bytes16(32);
  const id = r.bytes16(16);
  if (id.length !== 16) throw new DecodeError("target must be 16 bytes");
  return { groupId, target: id };
}

export function decodeContent(b: Uint8Array): Content {
  const r = new Reader(b);
  r.version(1);
  const type = r.u8();
  const id = r.bytes16(16);
  if (id.length !== 16) throw new DecodeError("message id must be 16 bytes");
  const sentAt = Number(r.u64());
  let body: ContentBody;
  switch (type) {
    case 1: {
      const groupId = r.bytes16(32);
      const text = fromUtf8(r.bytes32(MAX_TEXT));
      body = { type, groupId, text, ...readExtensions(r) };
      break;
    }
    case 2: {
      const groupId = r.bytes16(32);
      const pointer = r.bytes32(4096);
      const caption = r.str16(4096);
      body = { type, groupId, pointer, caption, ...readExtensions(r) };
      break;
    }
    case 3: {
      const kind = r.u8();
      if (kind !== 1 && kind !== 2) throw new DecodeError("bad receipt kind");
      const n = r.u16();
      if (n > 512) throw new DecodeError("too many receipt ids");
      const ids: Uint8Array[] = [];
      for (let i = 0; i < n; i++) ids.push(r.bytes16(16));
      body = { type, receipt: kind, ids };
      break;
    }
    case 4:
      body = { type, groupId: r.bytes16(32), active: r.flag() };
      break;
    case 5: {
      const groupId = r.bytes16(32);
      const epoch = r.u64();
      const name = r.str16(256);
      const action = r.u8();
      if (action < 1 || action > 4) throw new DecodeError("bad group action");
      const n = r.u16();
      if (n > 256) throw new DecodeError("too many members");
      const members: string[] = [];
      for (let i = 0; i < n; i++) members.push(r.str16(32));
      body = { type, groupId, epoch, name, action, members };
      break;
    }
    case 6:
      body = { type, groupId: r.bytes16(32), distribution: r.bytes32(1024) };
      break;
    case 7: {
      const destination = r.str16(32);
      const inner = r.bytes32();
      if (!isConversationContent(decodeContent(inner))) throw new DecodeError("a transcript carries a message or an operation");
      body = { type, destination, inner };
      break;
    }
    case 8:
      body = { type };
      break;
    case 9: {
      const t = readTarget(r);
      body = { type, ...t, text: fromUtf8(r.bytes32(MAX_TEXT)) };
      break;
    }
    case 10:
      body = { type, ...readTarget(r) };
      break;
    case 11: {
      const t = readTarget(r);
      body = { type, ...t, emoji: fromUtf8(r.bytes16(MAX_EMOJI)) };
      break;
    }
    case 12:
      body = { type, groupId: r.bytes16(32), seconds: checkTimer(r.u32()) };
      break;
    case 13: {
      // VERIFIED: to our own devices only (protocol-client §2); the key as in device lists.
      const username = r.str16(32);
      const accountKey = r.raw(33);
      if (accountKey[0] !== ED25519_KEY) throw new DecodeError("not a typed Ed25519 key");
      const state = r.u8();
      if (state !== 1 && state !== 2) throw new DecodeError("unknown verify state");
      body = { type, username, accountKey, state };
      break;
    }
    default:
      throw new DecodeError(`unknown content type ${type}`);
  }
  r.end();
  return { id, sentAt, ...body };
}

/**
 * The relay's `ttl` for a send carrying this content: the disappearing timer of a TEXT or
 * ATTACHMENT sent under one (protocol-ws §3.1); none (undefined) for everything else.
 */
export function sendTtl(content: Uint8Array): number | undefined {
  const c = decodeContent(content);
  return (c.type === 1 || c.type === 2) && c.expire ? c.expire : undefined;
}

export function pad(content: Uint8Array): Uint8Array {
  const total = (Math.floor(content.length / PAD_BLOCK) + 1) * PAD_BLOCK;
  const out = new Uint8Array(total);
  out.set(content);
  out[content.length] = 0x80;
  return out;
}

export function unpad(b: Uint8Array): Uint8Array {
  let i = b.length - 1;
  while (i >= 0 && b[i] === 0) i--;
  if (i < 0 || b[i] !== 0x80 || b.length - i > PAD_BLOCK) throw new DecodeError("bad padding");
  return b.slice(0, i);
}
