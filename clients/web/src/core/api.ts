// The relay's REST API (protocol-relay.md) over fetch. Tokens travel only in the
// Authorization header. Errors become RelayError with the relay's machine code.
import { b64, fromB64 } from "./bytes";
import type { Bundle } from "./keys";

export interface Brand {
  name: string;
  primary_color: string;
  accent_color: string;
  background_color: string;
  logo_url: string | null;
  welcome_text: string;
}
export interface RelayConfig {
  protocol_version: number;
  brand: Brand;
  registration: "open" | "invite" | "closed";
  limits: Record<string, number>;
  /** Web Push VAPID key (protocol-relay.md); null when push is off, absent on older relays. */
  push?: { public_key: string; content_encoding: string } | null;
}

export class RelayError extends Error {
  override name = "RelayError";
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}
export class Offline extends Error {
  override name = "Offline";
}

export interface DevicesAnswer {
  username: string;
  account_key: string;
  device_list: string;
  device_list_version: number;
}

interface SignedJson {
  key_id: number;
  public_key: string;
  signature: string;
}

/**
 * How long a REST call (request and answer body) may take before it fails as ``Offline``:
 * the SDK's ``timeout`` (30 s). Blob uploads and downloads stream and have no such limit.
 */
export const REQUEST_TIMEOUT_MS = 30_000;

export class Api {
  token: string | null = null;
  /** A call that is not answered within this many milliseconds rejects with ``Offline``. */
  timeoutMs = REQUEST_TIMEOUT_MS;
  /**
   * Logs in again (challenge → token) after a REST 401: protocol-client §3, a token that
   * expired or was revoked. Set by the engine; it rejects when the device may not log in
   * (removed, revoked), and the engine then shows "signed out".
   */
  reauth: (() => Promise<void>) | null = null;
  private relogin: Promise<void> | null = null;
  constructor(readonly base: string = "") {}

  /**
   * Run an authenticated request (``attempt`` reads ``this.token``); on 401 log in again once
   * — one login shared by every request that met the same dead token — and retry once.
   */
  private async authed<T>(attempt: () => Promise<T>): Promise<T> {
    const used = this.token;
    try {
      return await attempt();
    } catch (e) {
      if (!(e instanceof RelayError) || e.status !== 401 || !this.reauth) throw e;
    }
    if (this.token === used) {
      this.relogin ??= this.reauth().finally(() => (this.relogin = null));
      await this.relogin;
    }
    return attempt();
  }

  call<T>(method: string, path: string, body?: unknown, auth = true): Promise<T> {
    return auth ? this.authed(() => this.request<T>(method, path, body, true)) : this.request<T>(method, path, body, false);
  }

  private async request<T>(method: string, path: string, body: unknown, auth: boolean): Promise<T> {
    const headers: Record<string, string> = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (auth && this.token) headers["Authorization"] = `Bearer ${this.token}`;
    // One deadline for the request and its answer's body: a relay (or a proxy) that takes the
    // connection and never answers must not hold the caller — a send, a blob's DELETE — for good.
    const signal = AbortSignal.timeout(this.timeoutMs);
    const failed = (e: unknown): Offline =>
      signal.aborted
        ? new Offline(`the relay did not answer within ${this.timeoutMs / 1000} s`)
        : new Offline(`relay unreachable (${(e as Error).message})`);
    let res: Response;
    let text: string;
    try {
      res = await fetch(this.base + path, {
        method,
        headers,
        body: body === undefined ? null : JSON.stringify(body),
        cache: "no-store",
        credentials: "omit",
        signal,
      });
      text = res.status === 204 ? "" : await res.text();
    } catch (e) {
      throw failed(e);
    }
    if (res.status === 204) return undefined as T;
    let data: unknown = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!res.ok) {
      const err = (data ?? {}) as { error?: string; message?: string };
      if (res.status >= 500 || res.status === 502 || res.status === 503) {
        throw new Offline(`relay answered ${res.status}`);
      }
      throw new RelayError(res.status, err.error ?? "http_" + res.status, err.message ?? res.statusText);
    }
    return data as T;
  }

  config(): Promise<RelayConfig> {
    return this.call("GET", "/v1/config", undefined, false);
  }

  devices(user: string): Promise<DevicesAnswer> {
    return this.call("GET", `/v1/accounts/${encodeURIComponent(user)}/devices`);
  }

  putDevices(user: string, signed: Uint8Array): Promise<DevicesAnswer> {
    return this.call("PUT", `/v1/accounts/${encodeURIComponent(user)}/devices`, { device_list: b64(signed) });
  }

  async bundles(user: string, device?: number): Promise<{ accountKey: Uint8Array; deviceList: Uint8Array; bundles: Bundle[] }> {
    const q = device === undefined ? "" : `?device_id=${device}`;
    const data = await this.call<{
      username: string;
      account_key: string;
      device_list: string;
      devices: {
        device_id: number;
        identity_key: string;
        signed_prekey: SignedJson | null;
        last_resort_prekey: SignedJson | null;
        one_time_prekey: SignedJson | null;
        one_time_pq_prekey: SignedJson | null;
      }[];
    }>("GET", `/v1/prekeys/${encodeURIComponent(user)}${q}`);
    const accountKey = fromB64(data.account_key);
    const bundles: Bundle[] = [];
    for (const d of data.devices) {
      if (!d.signed_prekey || !d.last_resort_prekey) continue;
      const kem = d.one_time_pq_prekey ?? d.last_resort_prekey;
      bundles.push({
        user,
        device: d.device_id,
        accountKey,
        identityKey: fromB64(d.identity_key),
        signedPrekey: { id: d.signed_prekey.key_id, key: fromB64(d.signed_prekey.public_key), sig: fromB64(d.signed_prekey.signature) },
        kemPrekey: {
          id: kem.key_id,
          lastResort: d.one_time_pq_prekey === null,
          key: fromB64(kem.public_key),
          sig: fromB64(kem.signature),
        },
        oneTime: d.one_time_prekey ? { id: d.one_time_prekey.key_id, key: fromB64(d.one_time_prekey.public_key) } : null,
      });
    }
    return { accountKey, deviceList: fromB64(data.device_list), bundles };
  }

  /** Challenge–response login; ``sign`` signs the relay's nonce (see protocol-relay.md). */
  async login(user: string, device: number, sign: (nonce: Uint8Array) => Uint8Array): Promise<string> {
    const ch = await this.call<{ nonce: string }>("POST", "/v1/auth/challenge", { username: user, device_id: device }, false);
    const nonce = fromB64(ch.nonce);
    const tok = await this.call<{ token: string }>(
      "POST",
      "/v1/auth/token",
      { username: user, device_id: device, nonce: ch.nonce, signature: b64(sign(nonce)) },
      false,
    );
    this.token = tok.token;
    return tok.token;
  }

  uploadAttachment(blob: Uint8Array | Blob, onProgress?: (sent: number, total: number) => void): Promise<string> {
    return this.authed(() => this.upload(blob, onProgress));
  }

  private upload(blob: Uint8Array | Blob, onProgress?: (sent: number, total: number) => void): Promise<string> {
    // XMLHttpRequest gives upload progress; fetch does not.
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", this.base + "/v1/attachments");
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      if (this.token) xhr.setRequestHeader("Authorization", `Bearer ${this.token}`);
      xhr.upload.onprogress = (e) => onProgress?.(e.loaded, e.total);
      xhr.onload = () => {
        if (xhr.status === 201) resolve((JSON.parse(xhr.responseText) as { id: string }).id);
        else reject(new RelayError(xhr.status, "upload_failed", xhr.responseText));
      };
      xhr.onerror = () => reject(new Offline("upload failed"));
      xhr.send(blob instanceof Blob ? blob : (blob as Uint8Array<ArrayBuffer>));
    });
  }

  downloadAttachment(id: string): Promise<Response> {
    return this.authed(() => this.download(id));
  }

  private async download(id: string): Promise<Response> {
    const res = await fetch(`${this.base}/v1/attachments/${encodeURIComponent(id)}`, {
      headers: this.token ? { Authorization: `Bearer ${this.token}` } : {},
      credentials: "omit",
    });
    if (!res.ok) throw new RelayError(res.status, "download_failed", `download failed (${res.status})`);
    return res;
  }
}
