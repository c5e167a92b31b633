// Attachments (protocol-crypto-extras.md §4): chunked AES-256-GCM under a fresh key, Signal's
// padding buckets, the pointer that travels inside the message.
import { DecodeError, Reader, Writer, concat, equal, type Rng } from "./bytes";
import { CryptoError, aesGcmDecrypt, aesGcmEncrypt } from "./primitives";

export const CHUNK = 65536;

export class AttachmentMismatch extends CryptoError {
  override name = "AttachmentMismatch";
}

export interface Pointer {
  key: Uint8Array;
  digest: Uint8Array;
  size: number;
  padding: number;
  chunkSize: number;
  contentType: string;
  fileName: string;
  blobId: string;
}

/** Signal's bucket, exactly in integers: max(541, floor(1.05^k)) with 1.05^k >= size. */
export function paddedSizeBig(n: bigint): bigint {
  let num = 1n;
  let den = 1n;
  while (num < n * den) {
    num *= 21n;
    den *= 20n;
  }
  const v = num / den;
  return v > 541n ? v : 541n;
}

export const paddedSize = (size: number): number => Number(paddedSizeBig(BigInt(size)));

export const blobSize = (n: number, chunk: number): number => 5 + n + 16 * Math.max(1, Math.ceil(n / chunk));

function nonce(i: number, final: boolean): Uint8Array {
  return new Writer().u64(i).u32(final ? 1 : 0).done();
}

export function encodePointer(p: Pointer): Uint8Array {
  const w = new Writer().u8(p.padding ? 2 : 1).raw(p.key).raw(p.digest).u64(p.size);
  if (p.padding) w.u64(p.padding);
  return w.u32(p.chunkSize).str16(p.contentType).str16(p.fileName).str16(p.blobId).done();
}

export function decodePointer(b: Uint8Array): Pointer {
  const r = new Reader(b);
  const v = r.u8();
  if (v !== 1 && v !== 2) throw new DecodeError(`unsupported pointer version ${v}`);
  const key = r.raw(32);
  const digest = r.raw(32);
  const size = Number(r.u64());
  const padding = v === 2 ? Number(r.u64()) : 0;
  if (v === 2 && padding === 0) throw new DecodeError("invalid padding");
  const chunkSize = r.u32();
  if (chunkSize < 16 || chunkSize > 1048576) throw new DecodeError("invalid chunk size");
  const p = { key, digest, size, padding, chunkSize, contentType: r.str16(255), fileName: r.str16(255), blobId: r.str16(128) };
  r.end();
  return p;
}

/** Encrypt a whole file (padded) into a blob; ``onChunk`` reports progress. */
export async function encryptFile(
  file: Uint8Array,
  rng: Rng,
  opts: { chunkSize?: number; key?: Uint8Array; pad?: boolean; onChunk?: (done: number, total: number) => void } = {},
): Promise<{ blob: Uint8Array; key: Uint8Array; digest: Uint8Array; padding: number; chunkSize: number }> {
  const chunkSize = opts.chunkSize ?? CHUNK;
  const key = opts.key ?? rng(32);
  const padding = opts.pad === false ? 0 : paddedSize(file.length) - file.length;
  const plain = padding ? concat(file, new Uint8Array(padding)) : file;
  const header = new Writer().u8(1).u32(chunkSize).done();
  const parts: Uint8Array[] = [header];
  const count = Math.max(1, Math.ceil(plain.length / chunkSize));
  for (let i = 0; i < count; i++) {
    const chunk = plain.subarray(i * chunkSize, (i + 1) * chunkSize);
    parts.push(await aesGcmEncrypt(key, nonce(i, i === count - 1), chunk, header));
    opts.onChunk?.(i + 1, count);
  }
  const blob = concat(...parts);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", blob as Uint8Array<ArrayBuffer>));
  return { blob, key, digest, padding, chunkSize };
}

/** Decrypt a whole blob against its pointer (size, padding and digest checked). */
export async function decryptBlob(blob: Uint8Array, p: Pointer): Promise<Uint8Array> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", blob as Uint8Array<ArrayBuffer>));
  if (!equal(digest, p.digest)) throw new AttachmentMismatch("digest");
  if (blob.length < 5) throw new DecodeError("truncated");
  const header = blob.slice(0, 5);
  const r = new Reader(header);
  r.version(1);
  if (r.u32() !== p.chunkSize) throw new AttachmentMismatch("chunk_size");
  const n = p.size + p.padding;
  if (blob.length !== blobSize(n, p.chunkSize)) throw new AttachmentMismatch("size");
  const count = Math.max(1, Math.ceil(n / p.chunkSize));
  const out = new Uint8Array(n);
  let o = 5;
  for (let i = 0; i < count; i++) {
    const len = Math.min(p.chunkSize, n - i * p.chunkSize) + 16;
    const pt = await aesGcmDecrypt(p.key, nonce(i, i === count - 1), blob.subarray(o, o + len), header);
    out.set(pt, i * p.chunkSize);
    o += len;
  }
  if (out.subarray(p.size).some((x) => x !== 0)) throw new AttachmentMismatch("padding");
  return out.slice(0, p.size);
}
