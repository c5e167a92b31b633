// Sending a file: encrypt it chunk by chunk (attachments.ts) and upload the ciphertext as it
// is made with the relay's resumable uploads (docs/protocol-ws.md §9.1), so at most one
// window of ciphertext (≤ WINDOW bytes, ≤ the relay's chunk_bytes) is ever held, progress
// is what the relay acknowledged, and a dropped connection resumes from the relay's offset.
// A relay without resumable uploads gets the one-shot POST of the whole encrypted Blob.
import { type Rng, concat } from "./bytes";
import { Offline, RelayError, type Api } from "./api";
import { CHUNK, type Encrypted, blobSize, encryptBlob, encryptChunks, paddedSize, sliceReader } from "./attachments";

/** At most this much ciphertext is held (and sent per request). */
export const WINDOW = 1024 * 1024;
/** Attempts per window (and per finish) after network errors, with growing pauses. */
const ATTEMPTS = 8;

/** `409 offset_mismatch`: the relay holds `offset` bytes; continue from there. */
export class UploadConflict extends Error {
  override name = "UploadConflict";
  constructor(readonly offset: number) {
    super(`the relay's upload is at offset ${offset}`);
  }
}

/** The relay's side of a resumable upload (RelayUploads; the test kit substitutes its own). */
export interface UploadTransport {
  /** Start an upload of `size` bytes; null when the relay has no resumable uploads. */
  create(size: number): Promise<{ id: string; chunkBytes: number } | null>;
  /** Append `body` at `offset`; the relay's new offset. Throws UploadConflict, Offline (retry). */
  append(id: string, offset: number, body: Uint8Array, onSent: (bytes: number) => void): Promise<number>;
  /** The relay's offset. */
  offset(id: string): Promise<number>;
  /** The attachment id (finishing again gives the same one). */
  finish(id: string): Promise<string>;
  /** Abandon an upload (best effort: its bytes and its reservation go at once). */
  cancel(id: string): Promise<void>;
  /** The one-shot upload of a whole blob (a relay without resumable uploads). */
  whole(blob: Blob, onProgress: (fraction: number) => void): Promise<string>;
}

const pause = (attempt: number): Promise<void> => new Promise((r) => setTimeout(r, Math.min(10_000, 250 * 2 ** attempt)));

/** Retry `fn` after `Offline` (network errors, 5xx, a chunk cut off), up to ATTEMPTS times. */
async function patiently<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (e) {
      if (!(e instanceof Offline) || attempt >= ATTEMPTS) throw e;
      await pause(attempt);
    }
  }
}

/**
 * Encrypt `file` (read by slices) and upload it window by window; `onProgress(fraction)` of
 * the ciphertext the relay holds. Returns the pointer's secrets and the attachment id.
 */
export async function encryptAndUpload(file: Blob, rng: Rng, t: UploadTransport, onProgress: (fraction: number) => void): Promise<Encrypted<string>> {
  const total = blobSize(paddedSize(file.size), CHUNK);
  const up = await t.create(total);
  if (!up) {
    const enc = await encryptBlob(file, rng, { onChunk: (done, n) => onProgress((0.5 * done) / n) });
    return { ...enc, blob: await t.whole(enc.blob, (f) => onProgress(0.5 + 0.5 * f)) };
  }
  const window = Math.min(WINDOW, up.chunkBytes);
  let acked = 0; // the relay's offset = where the held window starts
  let held: Uint8Array[] = [];
  let heldBytes = 0;

  const send = async (win: Uint8Array): Promise<void> => {
    const start = acked;
    let at = start;
    let failures = 0;
    while (at < start + win.length) {
      try {
        at = await t.append(up.id, at, win.subarray(at - start), (n) => onProgress((at + n) / total));
        failures = 0;
      } catch (e) {
        if (e instanceof UploadConflict) at = e.offset;
        else if (e instanceof Offline && ++failures < ATTEMPTS) {
          await pause(failures);
          at = await patiently(() => t.offset(up.id)); // the chunk may or may not have arrived
        } else throw e;
      }
      // We can resend only what we hold: the relay must be inside this window.
      if (at < start || at > start + win.length) throw new Error(`the relay's upload is at ${at}, outside ${start}..${start + win.length}`);
    }
    acked = at;
    onProgress(acked / total);
  };

  const flush = async (all: boolean): Promise<void> => {
    if (!heldBytes) return;
    let buf = held.length === 1 ? (held[0] as Uint8Array) : concat(...held);
    while (buf.length >= window || (all && buf.length)) {
      const n = Math.min(window, buf.length);
      await send(buf.subarray(0, n));
      buf = buf.subarray(n);
    }
    held = buf.length ? [buf.slice()] : [];
    heldBytes = buf.length;
  };

  try {
    const enc = await encryptChunks(file.size, sliceReader(file), rng, {}, async (part) => {
      held.push(part);
      heldBytes += part.length;
      if (heldBytes >= window) await flush(false);
    });
    await flush(true);
    if (acked !== total) throw new Error(`uploaded ${acked} of ${total} bytes`);
    return { ...enc, blob: await patiently(() => t.finish(up.id)) };
  } catch (e) {
    // Given up: free the relay's reservation now rather than when the upload expires.
    await t.cancel(up.id).catch(() => undefined);
    throw e;
  }
}

/**
 * Uploads this browser started and has not finished or abandoned (localStorage): a tab
 * closed in the middle leaves one behind, holding one of the device's
 * `max_concurrent_uploads_per_device` slots and its reserved bytes for a day. The next
 * upload abandons them first.
 */
const OPEN_UPLOADS = "vox-open-uploads";
/** Uploads running in this page (one tab holds the device), never abandoned as leftovers. */
const inProgress = new Set<string>();

function openUploads(): string[] {
  try {
    const v = JSON.parse(localStorage.getItem(OPEN_UPLOADS) ?? "[]") as unknown;
    return Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : [];
  } catch {
    return [];
  }
}

function setOpenUploads(ids: string[]): void {
  try {
    if (ids.length) localStorage.setItem(OPEN_UPLOADS, JSON.stringify(ids));
    else localStorage.removeItem(OPEN_UPLOADS);
  } catch {
    // no localStorage: leftovers expire on the relay
  }
}

interface UploadState {
  upload_id: string;
  offset: number;
  chunk_bytes: number;
}

/** The relay's resumable uploads over its REST API (JSON through Api, chunks by XHR for progress). */
export class RelayUploads implements UploadTransport {
  constructor(readonly api: Api) {}

  async create(size: number): Promise<{ id: string; chunkBytes: number } | null> {
    for (const id of openUploads()) if (!inProgress.has(id)) await this.cancel(id).catch(() => undefined);
    try {
      const r = await this.api.call<UploadState>("POST", "/v1/attachments/uploads", { size });
      inProgress.add(r.upload_id);
      setOpenUploads([...openUploads(), r.upload_id]);
      return { id: r.upload_id, chunkBytes: r.chunk_bytes };
    } catch (e) {
      if (e instanceof RelayError && (e.status === 404 || e.status === 405) && e.code !== "unknown_upload") return null; // an older relay
      throw e;
    }
  }

  whole(blob: Blob, onProgress: (fraction: number) => void): Promise<string> {
    return this.api.uploadAttachment(blob, (sent, n) => onProgress(sent / Math.max(n, 1)));
  }

  async offset(id: string): Promise<number> {
    // Through Api.call: a 401 here logs in again, so the next chunk carries a fresh token.
    return (await this.api.call<UploadState>("GET", `/v1/attachments/uploads/${encodeURIComponent(id)}`)).offset;
  }

  async finish(id: string): Promise<string> {
    const blob = (await this.api.call<{ id: string }>("POST", `/v1/attachments/uploads/${encodeURIComponent(id)}/finish`)).id;
    this.forget(id);
    return blob;
  }

  async cancel(id: string): Promise<void> {
    try {
      await this.api.call("DELETE", `/v1/attachments/uploads/${encodeURIComponent(id)}`);
    } catch (e) {
      if (!(e instanceof RelayError && e.status === 404)) throw e; // gone already: forget it
    }
    this.forget(id);
  }

  private forget(id: string): void {
    inProgress.delete(id);
    setOpenUploads(openUploads().filter((x) => x !== id));
  }

  append(id: string, offset: number, body: Uint8Array, onSent: (bytes: number) => void): Promise<number> {
    // XMLHttpRequest gives upload progress; fetch does not.
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("PATCH", `${this.api.base}/v1/attachments/uploads/${encodeURIComponent(id)}`);
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      xhr.setRequestHeader("Upload-Offset", String(offset));
      if (this.api.token) xhr.setRequestHeader("Authorization", `Bearer ${this.api.token}`);
      xhr.upload.onprogress = (e) => onSent(e.loaded);
      xhr.onload = () => {
        const at = Number(xhr.getResponseHeader("Upload-Offset"));
        let code = "";
        try {
          code = (JSON.parse(xhr.responseText) as { error?: string }).error ?? "";
        } catch {
          // not JSON
        }
        if (xhr.status === 200) resolve(at);
        else if (xhr.status === 409 && code === "offset_mismatch") reject(new UploadConflict(at));
        // Retried after asking the relay's offset: a dead token (that request renews it),
        // a chunk cut off, a slow body, the relay or a proxy failing.
        else if (xhr.status === 401 || xhr.status === 408 || code === "truncated" || xhr.status >= 500) reject(new Offline(`chunk refused (${xhr.status})`));
        else reject(new RelayError(xhr.status, code || `http_${xhr.status}`, xhr.responseText));
      };
      xhr.onerror = xhr.onabort = xhr.ontimeout = () => reject(new Offline("connection lost during a chunk"));
      xhr.send(body as Uint8Array<ArrayBuffer>);
    });
  }
}
