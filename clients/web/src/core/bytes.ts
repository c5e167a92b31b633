// Byte helpers: big-endian codecs (str16, bytes16, bytes32), base64, hex, UTF-8.
// Mirrors crypto/encoding.py: every decoder rejects truncation and trailing bytes.

export class DecodeError extends Error {
  override name = "DecodeError";
}

const enc = new TextEncoder();
const dec = new TextDecoder("utf-8", { fatal: true });

export const utf8 = (s: string): Uint8Array => enc.encode(s);
export function fromUtf8(b: Uint8Array): string {
  try {
    return dec.decode(b);
  } catch {
    throw new DecodeError("invalid UTF-8");
  }
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= (a[i] as number) ^ (b[i] as number);
  return d === 0;
}

export function hex(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += x.toString(16).padStart(2, "0");
  return s;
}

export function fromHex(s: string): Uint8Array {
  const clean = s.replace(/\s+/g, "");
  if (clean.length % 2 !== 0 || /[^0-9a-fA-F]/.test(clean)) throw new DecodeError("bad hex");
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function b64(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 0x8000) {
    s += String.fromCharCode(...b.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

export function fromB64(s: string): Uint8Array {
  let bin: string;
  try {
    bin = atob(s);
  } catch {
    throw new DecodeError("bad base64");
  }
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  crypto.getRandomValues(out);
  return out;
}

/** A source of random bytes (tests pass a deterministic one). */
export type Rng = (n: number) => Uint8Array;

export class Writer {
  private parts: Uint8Array[] = [];
  u8(v: number): this {
    this.parts.push(Uint8Array.of(v & 0xff));
    return this;
  }
  u16(v: number): this {
    const b = new Uint8Array(2);
    new DataView(b.buffer).setUint16(0, v);
    this.parts.push(b);
    return this;
  }
  u32(v: number): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v >>> 0);
    this.parts.push(b);
    return this;
  }
  u64(v: number | bigint): this {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(v));
    this.parts.push(b);
    return this;
  }
  raw(b: Uint8Array): this {
    this.parts.push(b);
    return this;
  }
  bytes16(b: Uint8Array): this {
    if (b.length > 0xffff) throw new RangeError("bytes16 too long");
    return this.u16(b.length).raw(b);
  }
  bytes32(b: Uint8Array): this {
    return this.u32(b.length).raw(b);
  }
  str16(s: string): this {
    return this.bytes16(utf8(s));
  }
  done(): Uint8Array {
    return concat(...this.parts);
  }
}

export class Reader {
  private o = 0;
  private readonly view: DataView;
  constructor(private readonly b: Uint8Array) {
    this.view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  }
  get offset(): number {
    return this.o;
  }
  get remaining(): number {
    return this.b.length - this.o;
  }
  private need(n: number): void {
    if (this.o + n > this.b.length) throw new DecodeError("truncated");
  }
  u8(): number {
    this.need(1);
    return this.view.getUint8(this.o++);
  }
  u16(): number {
    this.need(2);
    const v = this.view.getUint16(this.o);
    this.o += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.view.getUint32(this.o);
    this.o += 4;
    return v;
  }
  u64(): bigint {
    this.need(8);
    const v = this.view.getBigUint64(this.o);
    this.o += 8;
    return v;
  }
  raw(n: number): Uint8Array {
    this.need(n);
    const v = this.b.slice(this.o, this.o + n);
    this.o += n;
    return v;
  }
  bytes16(max = 0xffff): Uint8Array {
    const n = this.u16();
    if (n > max) throw new DecodeError(`field too large (${n} > ${max})`);
    return this.raw(n);
  }
  bytes32(max = 16 * 1024 * 1024 + 80): Uint8Array {
    const n = this.u32();
    if (n > max) throw new DecodeError(`field too large (${n} > ${max})`);
    return this.raw(n);
  }
  str16(max = 0xffff): string {
    return fromUtf8(this.bytes16(max));
  }
  flag(): boolean {
    const v = this.u8();
    if (v > 1) throw new DecodeError("invalid flag");
    return v === 1;
  }
  version(expected: number): void {
    const v = this.u8();
    if (v !== expected) throw new DecodeError(`unsupported version ${v} (expected ${expected})`);
  }
  end(): void {
    if (this.o !== this.b.length) throw new DecodeError("trailing bytes");
  }
}
