// Attachments (protocol-crypto-devices-groups-attachments.md §4): chunked AES-256-GCM under a
// fresh key, Signal's padding buckets, the pointer that travels inside the message. Files are
// encrypted slice by slice and decrypted as the download arrives (§4.2).
import { DecodeError, Reader, Writer, concat, equal, type Rng } from "./bytes";
import { CryptoError, aesGcmDecrypt, aesGcmEncrypt, aesGcmKey, sha256Stream } from "./primitives";

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

/** What an encryption produced: the blob (to upload) and the pointer's secrets. */
export interface Encrypted<B> {
  blob: B;
  key: Uint8Array;
  digest: Uint8Array;
  padding: number;
  chunkSize: number;
}
type EncryptOptions = { chunkSize?: number; key?: Uint8Array; pad?: boolean; onChunk?: (done: number, total: number) => void };

/**
 * Encrypt a file chunk by chunk (§4.1), reading it with ``read(offset, length)`` — a
 * `File`'s `slice()` in the app, so the file is never read whole — and padding it with zero
 * bytes to Signal's bucket. The encrypted chunks are handed to ``collect`` as they are made
 * (awaited: an upload may hold the next one back) and the digest is computed incrementally.
 */
export async function encryptChunks(
  size: number,
  read: (offset: number, length: number) => Promise<Uint8Array>,
  rng: Rng,
  opts: EncryptOptions,
  collect: (part: Uint8Array) => void | Promise<void>,
): Promise<Omit<Encrypted<null>, "blob">> {
  const chunkSize = opts.chunkSize ?? CHUNK;
  const key = opts.key ?? rng(32);
  const padding = opts.pad === false ? 0 : paddedSize(size) - size;
  const n = size + padding;
  const header = new Writer().u8(1).u32(chunkSize).done();
  const hash = sha256Stream();
  hash.update(header);
  await collect(header);
  const cryptoKey = await aesGcmKey(key);
  const count = Math.max(1, Math.ceil(n / chunkSize));
  for (let i = 0; i < count; i++) {
    const start = i * chunkSize;
    const end = Math.min(n, start + chunkSize);
    let chunk = start < size ? await read(start, Math.min(end, size) - start) : new Uint8Array(0);
    if (end > size) chunk = concat(chunk, new Uint8Array(end - Math.max(start, size))); // zero padding
    const sealed = await aesGcmEncrypt(cryptoKey, nonce(i, i === count - 1), chunk, header);
    hash.update(sealed);
    await collect(sealed);
    opts.onChunk?.(i + 1, count);
  }
  return { key, digest: hash.digest(), padding, chunkSize };
}

/** Encrypt an in-memory file into one blob (the test kit's vectors). */
export async function encryptFile(file: Uint8Array, rng: Rng, opts: EncryptOptions = {}): Promise<Encrypted<Uint8Array>> {
  const parts: Uint8Array[] = [];
  const read = async (o: number, l: number): Promise<Uint8Array> => file.subarray(o, o + l);
  const out = await encryptChunks(file.length, read, rng, opts, (p) => void parts.push(p));
  return { ...out, blob: concat(...parts) };
}

/** Read a `File`/`Blob` by `slice()`, never whole. */
export const sliceReader =
  (file: Blob) =>
  async (o: number, l: number): Promise<Uint8Array> =>
    new Uint8Array(await file.slice(o, o + l).arrayBuffer());

/** Encrypt a `File`/`Blob` read slice by slice into a `Blob` of encrypted chunks (a relay
 * without resumable uploads, src/core/upload.ts). */
export async function encryptBlob(file: Blob, rng: Rng, opts: EncryptOptions = {}): Promise<Encrypted<Blob>> {
  const parts: Uint8Array<ArrayBuffer>[] = [];
  const out = await encryptChunks(file.size, sliceReader(file), rng, opts, (p) => void parts.push(p as Uint8Array<ArrayBuffer>));
  return { ...out, blob: new Blob(parts, { type: "application/octet-stream" }) };
}

/**
 * The streaming decryptor of §4.2 for one pointer: ``feed`` ciphertext as it arrives and get
 * back the plaintext released so far (authenticated chunk by chunk, the file's bytes only,
 * never padding); ``finish`` checks the final chunk, the total size and the digest. Plaintext
 * is complete only when ``finish`` returned: callers keep it unpublished until then. After
 * any error the decryptor refuses further use.
 */
export class BlobDecryptor {
  private pending: Uint8Array[] = [];
  private pendingLength = 0;
  private received = 0;
  private index = 0;
  private released = 0; // plaintext offset (padding included) of the next chunk
  private header: Uint8Array | null = null;
  private key: Promise<CryptoKey>;
  private hash = sha256Stream();
  private failed = false;
  private readonly total: number;
  private readonly expected: number;

  constructor(private readonly p: Pointer) {
    this.key = aesGcmKey(p.key);
    this.total = p.size + p.padding;
    this.expected = blobSize(this.total, p.chunkSize);
  }

  async feed(data: Uint8Array): Promise<Uint8Array[]> {
    return this.guard(async () => {
      this.received += data.length;
      if (this.received > this.expected) throw new AttachmentMismatch("size");
      this.hash.update(data);
      this.pending.push(data);
      this.pendingLength += data.length;
      const out: Uint8Array[] = [];
      if (!this.header && this.pendingLength >= 5) this.readHeader();
      const full = this.p.chunkSize + 16;
      // Hold back one chunk until more data follows (it may be the final one).
      while (this.header && this.pendingLength > full) out.push(...(await this.open(this.take(full), false)));
      return out;
    });
  }

  async finish(): Promise<Uint8Array[]> {
    return this.guard(async () => {
      if (!this.header) throw new DecodeError("truncated");
      if (this.pendingLength < 16) throw new DecodeError("truncated");
      const out = await this.open(this.take(this.pendingLength), true);
      if (this.released !== this.total || this.received !== this.expected) throw new AttachmentMismatch("size");
      if (!equal(this.hash.digest(), this.p.digest)) throw new AttachmentMismatch("digest");
      return out;
    });
  }

  private async guard<T>(fn: () => Promise<T>): Promise<T> {
    if (this.failed) throw new CryptoError("the decryptor failed before");
    try {
      return await fn();
    } catch (e) {
      this.failed = true;
      throw e;
    }
  }

  private take(n: number): Uint8Array {
    const all = this.pending.length === 1 ? (this.pending[0] as Uint8Array) : concat(...this.pending);
    const head = all.subarray(0, n);
    const rest = all.subarray(n);
    this.pending = rest.length ? [rest] : [];
    this.pendingLength = rest.length;
    return head;
  }

  private readHeader(): void {
    const header = this.take(5);
    const r = new Reader(header);
    r.version(1);
    if (r.u32() !== this.p.chunkSize) throw new AttachmentMismatch("chunk_size");
    this.header = header.slice();
  }

  /** Open one chunk; release only the bytes before the file's size, check the rest is zero. */
  private async open(sealed: Uint8Array, final: boolean): Promise<Uint8Array[]> {
    const plain = await aesGcmDecrypt(await this.key, nonce(this.index, final), sealed, this.header as Uint8Array);
    this.index += 1;
    const start = this.released;
    this.released += plain.length;
    if (this.released > this.total) throw new AttachmentMismatch("size");
    const keep = Math.max(0, Math.min(plain.length, this.p.size - start));
    if (plain.subarray(keep).some((x) => x !== 0)) throw new AttachmentMismatch("padding");
    return keep ? [plain.subarray(0, keep)] : [];
  }
}

/** Decrypt a whole blob against its pointer (size, padding and digest checked). */
export async function decryptBlob(blob: Uint8Array, p: Pointer): Promise<Uint8Array> {
  const d = new BlobDecryptor(p);
  const parts = [...(await d.feed(blob)), ...(await d.finish())];
  return concat(...parts);
}
