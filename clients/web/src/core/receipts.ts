// Delivery and read receipts: coalesced on their way, and owed until the relay took them
// (docs/protocol-client.md §5, "Owed receipts"; the Python SDK's clients/sdk/receipts.py).
//
// A receipt is owed from the store commit that makes it due — the commit that stores the
// received messages, the one that marks them read — until the relay accepted a RECEIPT listing
// its ids: one sealed record per owed id (``OWED_PREFIX``), written in that same commit and
// deleted once the relay took it. At every new connection (``resume``; a page load too, once
// online) what is owed and not already on its way is sent again, so a receipt lost with a
// closed tab or an unreachable relay still arrives. A receipt sent twice is harmless: a
// message's state only moves forward. Owed ids are given up after ``OWED_TTL_MS``, beyond
// ``MAX_OWED`` per recipient and kind the oldest go, and those owed to an account the relay no
// longer has (``unknown_user``, ``account_deleted``) go at their first refusal.
//
// At most one receipt per recipient and kind is on its way at a time: ids that come meanwhile
// wait and go together in the next (``RECEIPT_CHUNK`` ids per receipt at most).

/** Store records of owed receipts: ``receipt-owed:<kind>:<message id hex>`` → ``OwedRecord``. */
export const OWED_PREFIX = "receipt-owed:";
/** An owed receipt is tried again (at each connection) this long, then given up. */
export const OWED_TTL_MS = 7 * 86400_000;
/** Message ids owed to one recipient and kind at most (beyond, the oldest are given up). */
export const MAX_OWED = 5000;
/** Ids in one RECEIPT at most (a receiver takes 1 to 512). */
export const RECEIPT_CHUNK = 500;

/** 1: delivered, 2: read. */
export type ReceiptKind = 1 | 2;
type Changes = [string, unknown][];

export interface OwedRecord {
  to: string;
  kind: ReceiptKind;
  id: string; // the message id, 32 hex
  at: number; // when it became owed (ms since the epoch)
}

/** What the receipts need from the engine. */
export interface ReceiptHost {
  /** Send one RECEIPT: whether it is no longer owed (the relay accepted it, or the recipient's account is gone). */
  send(to: string, kind: ReceiptKind, ids: string[]): Promise<boolean>;
  commit(changes: Changes): Promise<void>;
  now(): number;
}

function recordName(kind: ReceiptKind, id: string): string {
  return `${OWED_PREFIX}${kind}:${id}`;
}

/** The in-memory key of a recipient and kind. */
function keyOf(to: string, kind: ReceiptKind): string {
  return `${kind}:${to}`;
}

export class Receipts {
  /** What is owed, as committed: recipient and kind → message id → when owed (oldest first). */
  private owed = new Map<string, { to: string; kind: ReceiptKind; ids: Map<string, number> }>();
  /** Per recipient and kind with a sender running: the ids waiting for the next receipt. */
  private waiting = new Map<string, string[]>();
  /** The ids of the receipt on its way, per recipient and kind. */
  private flying = new Map<string, string[]>();
  /** Counts ``resume`` calls: a receipt lost with an older connection is sent again at once. */
  private connection = 0;

  constructor(private readonly host: ReceiptHost) {}

  /** The owed records as stored (``store.list(OWED_PREFIX)``). */
  load(records: [string, OwedRecord][]): void {
    for (const [, r] of records.sort(([, a], [, b]) => a.at - b.at)) this.entry(r.to, r.kind).ids.set(r.id, r.at);
  }

  /** How many ids are owed (tests, diagnostics). */
  get size(): number {
    let n = 0;
    for (const e of this.owed.values()) n += e.ids.size;
    return n;
  }

  private entry(to: string, kind: ReceiptKind): { to: string; kind: ReceiptKind; ids: Map<string, number> } {
    const k = keyOf(to, kind);
    let e = this.owed.get(k);
    if (!e) {
      e = { to, kind, ids: new Map() };
      this.owed.set(k, e);
    }
    return e;
  }

  /**
   * Receipts of ``kind`` for ``ids`` are due to ``to`` from the caller's commit: their records
   * (and the deletion of the oldest beyond ``MAX_OWED``) are added to ``changes``. Call the
   * returned function right after that commit: it records them here and sends them.
   */
  owe(to: string, kind: ReceiptKind, ids: string[], changes: Changes): () => void {
    const at = this.host.now();
    const held = this.owed.get(keyOf(to, kind))?.ids ?? new Map<string, number>();
    const added = [...new Set(ids)].filter((id) => !held.has(id));
    const over = Math.max(0, held.size + added.length - MAX_OWED);
    const dropped = [...held.keys()].slice(0, over); // the oldest first
    const fresh = added.slice(over - dropped.length);
    for (const id of dropped) changes.push([recordName(kind, id), undefined]);
    for (const id of fresh) changes.push([recordName(kind, id), { to, kind, id, at } satisfies OwedRecord]);
    return () => {
      const e = this.entry(to, kind);
      for (const id of dropped) e.ids.delete(id);
      for (const id of fresh) e.ids.set(id, at);
      this.add(to, kind, ids.filter((id) => e.ids.has(id))); // not those given up at once
    };
  }

  /**
   * A new connection: owed ids older than ``OWED_TTL_MS`` are given up, and everything else
   * owed and not already on its way is sent.
   */
  resume(): void {
    this.connection++;
    const limit = this.host.now() - OWED_TTL_MS;
    const expired: Changes = [];
    for (const [k, e] of this.owed) {
      for (const [id, at] of e.ids) {
        if (at >= limit) continue;
        e.ids.delete(id);
        expired.push([recordName(e.kind, id), undefined]);
      }
      if (!e.ids.size) this.owed.delete(k);
    }
    if (expired.length) this.host.commit(expired).catch((err) => console.warn("could not forget expired receipts", err));
    for (const e of this.owed.values()) this.add(e.to, e.kind, [...e.ids.keys()]);
  }

  /** Queue ``ids`` for a receipt to ``to``; starts a sender unless one is running for it. */
  private add(to: string, kind: ReceiptKind, ids: string[]): void {
    const k = keyOf(to, kind);
    const queued = this.waiting.get(k);
    if (queued) {
      const known = new Set([...queued, ...(this.flying.get(k) ?? [])]);
      queued.push(...ids.filter((id) => !known.has(id)));
      return;
    }
    this.waiting.set(k, [...new Set(ids)]);
    void this.sendAll(to, kind);
  }

  private async sendAll(to: string, kind: ReceiptKind): Promise<void> {
    const k = keyOf(to, kind);
    try {
      for (let ids = this.waiting.get(k) ?? []; ids.length; ids = this.waiting.get(k) ?? []) {
        const chunk = ids.slice(0, RECEIPT_CHUNK);
        this.waiting.set(k, ids.slice(RECEIPT_CHUNK));
        this.flying.set(k, chunk);
        const connection = this.connection;
        let accepted = false;
        try {
          accepted = await this.host.send(to, kind, chunk);
        } catch (err) {
          console.warn("receipt not sent", err);
        }
        this.flying.delete(k);
        if (accepted) await this.settle(to, kind, chunk);
        else if (connection !== this.connection) {
          // Lost with a connection that has been replaced since: its ``resume`` counted it
          // on its way, so it goes again now.
          const rest = this.waiting.get(k) ?? [];
          this.waiting.set(k, [...chunk, ...rest.filter((id) => !chunk.includes(id))]);
        } // otherwise still owed: sent again at the next connection
      }
    } finally {
      this.waiting.delete(k);
      this.flying.delete(k);
    }
  }

  /** The relay took a receipt with ``ids``: no longer owed. */
  private async settle(to: string, kind: ReceiptKind, ids: string[]): Promise<void> {
    const e = this.owed.get(keyOf(to, kind));
    const gone = ids.filter((id) => e?.ids.delete(id));
    if (e && !e.ids.size) this.owed.delete(keyOf(to, kind));
    if (!gone.length) return;
    try {
      await this.host.commit(gone.map((id) => [recordName(kind, id), undefined]));
    } catch (err) {
      console.warn("could not record a receipt as sent; it may be sent again", err); // harmless
    }
  }
}
