// The relay payload and the content inside every plaintext (protocol-client.md §1-2).
import { DecodeError, Reader, Writer, concat, randomBytes } from "./bytes";

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

export type ContentBody =
  | { type: 1; groupId: Uint8Array; text: string }
  | { type: 2; groupId: Uint8Array; pointer: Uint8Array; caption: string }
  | { type: 3; receipt: 1 | 2; ids: Uint8Array[] }
  | { type: 4; groupId: Uint8Array; active: boolean }
  | { type: 5; groupId: Uint8Array; epoch: bigint; name: string; action: number; members: string[] }
  | { type: 6; groupId: Uint8Array; distribution: Uint8Array }
  | { type: 7; destination: string; inner: Uint8Array }
  | { type: 8 };

export type Content = { id: Uint8Array; sentAt: number } & ContentBody;

export const newMessageId = (): Uint8Array => randomBytes(16);

export function encodeContent(c: Content): Uint8Array {
  const w = new Writer().u8(1).u8(c.type).bytes16(c.id).u64(BigInt(c.sentAt));
  switch (c.type) {
    case 1:
      w.bytes16(c.groupId).bytes32(new TextEncoder().encode(c.text));
      break;
    case 2:
      w.bytes16(c.groupId).bytes32(c.pointer).str16(c.caption);
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
  }
  return w.done();
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
      const text = new TextDecoder("utf-8", { fatal: true }).decode(r.bytes32(65536));
      body = { type, groupId, text };
      break;
    }
    case 2:
      body = { type, groupId: r.bytes16(32), pointer: r.bytes32(4096), caption: r.str16() };
      break;
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
    case 7:
      body = { type, destination: r.str16(32), inner: r.bytes32() };
      break;
    case 8:
      body = { type };
      break;
    default:
      throw new DecodeError(`unknown content type ${type}`);
  }
  r.end();
  return { id, sentAt, ...body };
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
