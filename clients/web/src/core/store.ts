// The local store: IndexedDB, every record sealed with AES-256-GCM under a key that never
// leaves the browser: a non-extractable WebCrypto key kept in IndexedDB itself, or (with a
// passphrase) a key derived by PBKDF2-SHA256 that is never stored. The record's name is the
// associated data, so records cannot be swapped. A commit of several records is one
// IndexedDB transaction (all or nothing).
import { b64, fromB64, randomBytes, utf8 } from "./bytes";

const DB_NAME = "vox-web";
const PBKDF2_ITERATIONS = 600_000;

type Sealed = { iv: Uint8Array; ct: Uint8Array };

function reqP<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

function openDb(name = DB_NAME): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(name, 1);
    req.onupgradeneeded = () => {
      req.result.createObjectStore("meta");
      req.result.createObjectStore("kv");
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

/** JSON with Uint8Array and bigint. */
export function serialize(v: unknown): Uint8Array {
  return utf8(
    JSON.stringify(v, (_k, x: unknown) => {
      if (x instanceof Uint8Array) return { $u: b64(x) };
      if (typeof x === "bigint") return { $n: x.toString() };
      return x;
    }),
  );
}
export function deserialize<T>(b: Uint8Array): T {
  return JSON.parse(new TextDecoder().decode(b), (_k, x: unknown) => {
    if (x && typeof x === "object" && !Array.isArray(x)) {
      const o = x as Record<string, unknown>;
      if (typeof o["$u"] === "string" && Object.keys(o).length === 1) return fromB64(o["$u"]);
      if (typeof o["$n"] === "string" && Object.keys(o).length === 1) return BigInt(o["$n"]);
    }
    return x;
  }) as T;
}

export class LockedError extends Error {
  override name = "LockedError";
}

export class Store {
  /** Commits under way (a passphrase change waits for them). */
  private commits = 0;
  private idle: (() => void)[] = [];
  /** A passphrase change under way: reads and commits wait for it. */
  private rekeying: Promise<void> | null = null;

  private constructor(
    private readonly db: IDBDatabase,
    private key: CryptoKey,
    /** Whether a passphrase protects the store ("device": a key kept in IndexedDB). */
    public mode: "device" | "passphrase",
  ) {}

  /** Does a store (with or without passphrase) exist? */
  static async mode(): Promise<"none" | "device" | "passphrase"> {
    const db = await openDb();
    try {
      const m = (await reqP(db.transaction("meta").objectStore("meta").get("mode"))) as string | undefined;
      return m === "device" || m === "passphrase" ? m : "none";
    } finally {
      db.close();
    }
  }

  /** Open (or create) the store; a passphrase is needed iff the store was made with one. */
  /** ``name``: the IndexedDB database (the app uses one; the test kit runs two devices). */
  static async open(passphrase?: string, name = DB_NAME): Promise<Store> {
    const db = await openDb(name);
    const meta = (k: string): Promise<unknown> => reqP(db.transaction("meta").objectStore("meta").get(k));
    let mode = (await meta("mode")) as string | undefined;
    let key: CryptoKey;
    if (!mode) {
      const puts: [string, unknown][] = [];
      if (passphrase) {
        const salt = randomBytes(16);
        key = await Store.derive(passphrase, salt);
        puts.push(["salt", salt], ["check", await Store.sealWith(key, "check", utf8("vox"))], ["mode", "passphrase"]);
      } else {
        key = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
        puts.push(["key", key], ["mode", "device"]);
      }
      const tx = db.transaction("meta", "readwrite");
      for (const [k, v] of puts) tx.objectStore("meta").put(v, k);
      await new Promise((r) => (tx.oncomplete = r));
      mode = passphrase ? "passphrase" : "device";
    } else if (mode === "passphrase") {
      if (!passphrase) throw new LockedError("passphrase required");
      key = await Store.derive(passphrase, (await meta("salt")) as Uint8Array);
      try {
        await Store.openWith(key, "check", (await meta("check")) as Sealed);
      } catch {
        throw new LockedError("wrong passphrase");
      }
    } else {
      key = (await meta("key")) as CryptoKey;
    }
    return new Store(db, key, mode === "passphrase" ? "passphrase" : "device");
  }

  /**
   * Re-seal every record under a new key: derived from ``next`` (a new salt), or, with
   * ``null``, a new non-extractable key kept in IndexedDB (no passphrase). ``current`` must be
   * the passphrase in use when there is one (LockedError otherwise; nothing changes). All
   * records and the key material are replaced in one transaction: a failure leaves the store
   * as it was. Commits and reads wait while it runs.
   */
  async changePassphrase(current: string | null, next: string | null): Promise<void> {
    while (this.rekeying) await this.rekeying.catch(() => undefined);
    const run = this.rekey(current, next);
    this.rekeying = run;
    try {
      await run;
    } finally {
      this.rekeying = null;
    }
  }

  private async rekey(current: string | null, next: string | null): Promise<void> {
    if (next !== null && !next) throw new Error("the new passphrase must not be empty");
    if (this.commits) await new Promise<void>((resolve) => this.idle.push(resolve));
    const meta = (k: string): Promise<unknown> => reqP(this.db.transaction("meta").objectStore("meta").get(k));
    if (this.mode === "passphrase") {
      const check = await Store.derive(current ?? "", (await meta("salt")) as Uint8Array)
        .then(async (k) => Store.openWith(k, "check", (await meta("check")) as Sealed))
        .catch(() => null);
      if (!check) throw new LockedError("wrong passphrase");
    }
    const puts: [string, unknown][] = [];
    let key: CryptoKey;
    if (next !== null) {
      const salt = randomBytes(16);
      key = await Store.derive(next, salt);
      puts.push(["salt", salt], ["check", await Store.sealWith(key, "check", utf8("vox"))], ["mode", "passphrase"]);
    } else {
      key = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
      puts.push(["key", key], ["mode", "device"]);
    }
    const os = this.db.transaction("kv").objectStore("kv");
    const [names, values] = await Promise.all([reqP(os.getAllKeys()), reqP(os.getAll())]);
    const resealed: [string, Sealed][] = [];
    for (let i = 0; i < names.length; i++) {
      const name = names[i] as string;
      resealed.push([name, await Store.sealWith(key, name, await Store.openWith(this.key, name, values[i] as Sealed))]);
    }
    const tx = this.db.transaction(["kv", "meta"], "readwrite", { durability: "strict" });
    for (const [name, sealed] of resealed) tx.objectStore("kv").put(sealed, name);
    for (const stale of next !== null ? ["key"] : ["salt", "check"]) tx.objectStore("meta").delete(stale);
    for (const [k, v] of puts) tx.objectStore("meta").put(v, k);
    await new Promise<void>((resolve, reject) => {
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error ?? new Error("transaction aborted"));
    });
    this.key = key;
    this.mode = next !== null ? "passphrase" : "device";
  }

  private static async derive(passphrase: string, salt: Uint8Array): Promise<CryptoKey> {
    const base = await crypto.subtle.importKey("raw", utf8(passphrase) as Uint8Array<ArrayBuffer>, "PBKDF2", false, ["deriveKey"]);
    return crypto.subtle.deriveKey(
      { name: "PBKDF2", hash: "SHA-256", salt: salt as Uint8Array<ArrayBuffer>, iterations: PBKDF2_ITERATIONS },
      base,
      { name: "AES-GCM", length: 256 },
      false,
      ["encrypt", "decrypt"],
    );
  }

  private static async sealWith(key: CryptoKey, name: string, data: Uint8Array): Promise<Sealed> {
    const iv = randomBytes(12);
    const ct = await crypto.subtle.encrypt(
      { name: "AES-GCM", iv: iv as Uint8Array<ArrayBuffer>, additionalData: utf8(name) as Uint8Array<ArrayBuffer> },
      key,
      data as Uint8Array<ArrayBuffer>,
    );
    return { iv, ct: new Uint8Array(ct) };
  }

  private static async openWith(key: CryptoKey, name: string, s: Sealed): Promise<Uint8Array> {
    const pt = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: s.iv as Uint8Array<ArrayBuffer>, additionalData: utf8(name) as Uint8Array<ArrayBuffer> },
      key,
      s.ct as Uint8Array<ArrayBuffer>,
    );
    return new Uint8Array(pt);
  }

  async get<T>(name: string): Promise<T | undefined> {
    while (this.rekeying) await this.rekeying.catch(() => undefined);
    const key = this.key; // the key of what this transaction reads
    const s = (await reqP(this.db.transaction("kv").objectStore("kv").get(name))) as Sealed | undefined;
    return s ? deserialize<T>(await Store.openWith(key, name, s)) : undefined;
  }

  /** Every record whose name starts with ``prefix``, in name order. */
  async list<T>(prefix: string): Promise<[string, T][]> {
    while (this.rekeying) await this.rekeying.catch(() => undefined);
    const key = this.key; // the key of what this transaction reads
    const range = IDBKeyRange.bound(prefix, prefix + "\uffff");
    const os = this.db.transaction("kv").objectStore("kv");
    const [keys, values] = await Promise.all([reqP(os.getAllKeys(range)), reqP(os.getAll(range))]);
    const out: [string, T][] = [];
    for (let i = 0; i < keys.length; i++) {
      const name = keys[i] as string;
      out.push([name, deserialize<T>(await Store.openWith(key, name, values[i] as Sealed))]);
    }
    return out;
  }

  /** Write (value) or delete (undefined) several records in one transaction. */
  async commit(changes: [string, unknown][]): Promise<void> {
    while (this.rekeying) await this.rekeying.catch(() => undefined);
    this.commits++;
    try {
      await this.write(changes);
    } finally {
      if (--this.commits === 0) for (const resume of this.idle.splice(0)) resume();
    }
  }

  private async write(changes: [string, unknown][]): Promise<void> {
    const sealed: [string, Sealed | undefined][] = [];
    for (const [name, value] of changes) {
      sealed.push([name, value === undefined ? undefined : await Store.sealWith(this.key, name, serialize(value))]);
    }
    const tx = this.db.transaction("kv", "readwrite", { durability: "strict" });
    const os = tx.objectStore("kv");
    for (const [name, s] of sealed) {
      if (s === undefined) os.delete(name);
      else os.put(s, name);
    }
    await new Promise<void>((resolve, reject) => {
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error ?? new Error("transaction aborted"));
    });
  }

  close(): void {
    this.db.close();
  }

  static async wipe(): Promise<void> {
    await new Promise<void>((resolve) => {
      const req = indexedDB.deleteDatabase(DB_NAME);
      req.onsuccess = req.onerror = req.onblocked = () => resolve();
    });
  }
}
