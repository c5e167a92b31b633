// This device's prekeys (protocol-client.md §3): registration material, one-time batches,
// and the rotation of the signed X25519 prekey and the last-resort ML-KEM-768 prekey, on the
// Python SDK's schedule (clients/sdk/identity.py). Sans-I/O: every function takes the state
// and the clock and returns a new state plus the `POST /v1/prekeys` body; the engine stores
// the state first, then uploads.
import { b64, type Rng } from "./bytes";
import { type KemPrekeyPriv, type OneTimePriv, type SignedPrekeyPriv, kemPublic, newKemPrekey, newSignedPrekey, typed, x25519Typed } from "./keys";
import { x25519Public } from "./primitives";

/** Last-resort ML-KEM ids live above this base (one-time ids start at 1). */
export const LAST_RESORT_BASE = 0x80000000;
/** One-time prekeys of each kind per upload. */
export const BATCH = 50;
const DAY_MS = 24 * 3600 * 1000;
/** Rotate the signed prekey and the last-resort ML-KEM prekey when the newest is older. */
export const ROTATE_AFTER_MS = 7 * DAY_MS;
/** Keep a replaced key's private half this long after its successor was made. */
export const GRACE_MS = 14 * DAY_MS;

export interface Prekeys {
  signed: SignedPrekeyPriv[];
  kem: KemPrekeyPriv[]; // one-time and last-resort
  otp: OneTimePriv[];
  nextOtp: number;
  nextKem: number;
  nextSigned: number;
  nextLastResort: number;
  /** A rotation stored but not yet accepted by the relay (re-sent until it is). */
  unpublished?: Upload | null;
}
export type Upload = Record<string, unknown>;
export interface Keys {
  accountSeed: Uint8Array;
  identityPriv: Uint8Array;
}
export interface PrekeyCounts {
  one_time_prekeys: number;
  one_time_pq_prekeys: number;
  low_threshold: number;
  max_stock?: number;
}

const signedJson = (k: SignedPrekeyPriv): Upload => ({ key_id: k.id, public_key: b64(x25519Typed(k.priv)), signature: b64(k.sig) });
const kemJson = (k: KemPrekeyPriv): Upload => ({ key_id: k.id, public_key: b64(typed(3, kemPublic(k))), signature: b64(k.sig) });

/** Signed prekey 1, last-resort key 0x80000001 and a batch of one-time keys. */
export function initialPrekeys(keys: Keys, now: number, rng: Rng): { prekeys: Prekeys; upload: Upload } {
  const empty: Prekeys = { signed: [], kem: [], otp: [], nextOtp: 1, nextKem: 1, nextSigned: 1, nextLastResort: 1 };
  const rotated = rotate(keys, empty, now, rng);
  const batch = oneTimeBatch(keys, { ...rotated.prekeys, unpublished: null }, BATCH, rng);
  return { prekeys: batch.prekeys, upload: { ...rotated.upload, ...batch.upload } };
}

/** ``count`` new one-time X25519 and ML-KEM prekeys. */
export function oneTimeBatch(keys: Keys, pk: Prekeys, count: number, rng: Rng): { prekeys: Prekeys; upload: Upload } {
  const idPub = x25519Public(keys.identityPriv);
  const otp = [...pk.otp];
  const kem = [...pk.kem];
  const ones = [];
  const kems = [];
  let { nextOtp, nextKem } = pk;
  for (let i = 0; i < count; i++) {
    const o = { id: nextOtp++, priv: rng(32) };
    otp.push(o);
    ones.push({ key_id: o.id, public_key: b64(x25519Typed(o.priv)) });
    const k = newKemPrekey(keys.accountSeed, idPub, nextKem++, false, rng);
    kem.push(k);
    kems.push(kemJson(k));
  }
  return { prekeys: { ...pk, otp, kem, nextOtp, nextKem }, upload: { one_time_prekeys: ones, one_time_pq_prekeys: kems } };
}

/** How many one-time prekeys of each kind to upload given the relay's counts (the SDK's
 * `replenish_count`: refill up to twice a batch, capped by the relay's stock limit). */
export function replenishCount(c: PrekeyCounts, batch = BATCH): number {
  const have = Math.min(c.one_time_prekeys, c.one_time_pq_prekeys);
  if (have > c.low_threshold) return 0;
  const target = Math.min(c.max_stock ?? 500, batch * 2);
  return Math.max(0, Math.min(target - have, batch));
}

const lastResort = (pk: Prekeys): KemPrekeyPriv[] => pk.kem.filter((k) => k.lastResort);
const newest = (times: number[]): number => (times.length ? Math.max(...times) : -Infinity);

/** True when the newest signed prekey or the newest last-resort key is older than
 * ROTATE_AFTER_MS (or missing). A key written before rotation existed has age "always". */
export function rotationDue(pk: Prekeys, now: number): boolean {
  const cutoff = now - ROTATE_AFTER_MS;
  return newest(pk.signed.map((k) => k.created)) < cutoff || newest(lastResort(pk).map((k) => k.created ?? 0)) < cutoff;
}

/** Replaced keys past the grace period deleted, then a new signed prekey and a new
 * last-resort key (fresh ids), kept as ``unpublished`` until the relay accepted them. */
export function rotate(keys: Keys, current: Prekeys, now: number, rng: Rng): { prekeys: Prekeys; upload: Upload } {
  const pk = prune(current, now);
  const idPub = x25519Public(keys.identityPriv);
  const spk = newSignedPrekey(keys.accountSeed, idPub, pk.nextSigned, rng, now);
  const lrId = LAST_RESORT_BASE + pk.nextLastResort;
  const lr = { ...newKemPrekey(keys.accountSeed, idPub, lrId, true, rng), created: now };
  const upload = { signed_prekey: signedJson(spk), last_resort_prekey: kemJson(lr) };
  const next: Prekeys = {
    ...pk,
    signed: [...pk.signed, spk],
    kem: [...pk.kem, lr],
    nextSigned: pk.nextSigned + 1,
    nextLastResort: pk.nextLastResort + 1,
    unpublished: upload,
  };
  return { prekeys: next, upload };
}

/** Delete signed and last-resort keys whose successor was made more than GRACE_MS ago
 * (never while a rotation waits for the relay: the old key is still the one served). */
export function prune(pk: Prekeys, now: number): Prekeys {
  if (pk.unpublished) return pk;
  const cutoff = now - GRACE_MS;
  const keep = <T extends { id: number }>(keys: T[], at: (k: T) => number): Set<number> => {
    const sorted = [...keys].sort((a, b) => at(a) - at(b) || a.id - b.id);
    const out = new Set<number>();
    sorted.forEach((k, i) => {
      const successor = sorted[i + 1];
      if (!successor || at(successor) >= cutoff) out.add(k.id);
    });
    return out;
  };
  const signed = keep(pk.signed, (k) => k.created);
  const lr = keep(lastResort(pk), (k) => k.created ?? 0);
  if (signed.size === pk.signed.length && lr.size === lastResort(pk).length) return pk;
  return { ...pk, signed: pk.signed.filter((k) => signed.has(k.id)), kem: pk.kem.filter((k) => !k.lastResort || lr.has(k.id)) };
}

/** The relay accepted the pending rotation at ``now``: its keys count as made then (the
 * grace period of the keys they replace starts when they are served). */
export function published(pk: Prekeys, now: number): Prekeys {
  const up = pk.unpublished as { signed_prekey?: { key_id: number }; last_resort_prekey?: { key_id: number } } | null | undefined;
  if (!up) return pk;
  const spk = up.signed_prekey?.key_id;
  const lr = up.last_resort_prekey?.key_id;
  return {
    ...pk,
    signed: pk.signed.map((k) => (k.id === spk ? { ...k, created: now } : k)),
    kem: pk.kem.map((k) => (k.lastResort && k.id === lr ? { ...k, created: now } : k)),
    unpublished: null,
  };
}
