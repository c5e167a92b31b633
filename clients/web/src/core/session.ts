// PQXDH (protocol-crypto.md §5), the Double Ratchet (§6) and the envelopes (§8).
// Decrypt commits on success: it works on a copy and returns the new state only after the
// AEAD tag verified and the payload's sender matched.
import { DecodeError, Reader, Writer, concat, equal, hex, utf8, type Rng } from "./bytes";
import { type Bundle, MLKEM_TYPE, X25519_TYPE, typed, untype, verifyBundle, ED25519_TYPE } from "./keys";
import {
  CryptoError,
  aesGcmDecrypt,
  aesGcmEncrypt,
  hkdf,
  hmac,
  mlkemDecapsulate,
  mlkemEncapsulate,
  sha256,
  x25519Dh,
  x25519Public,
} from "./primitives";

export class DuplicateMessage extends CryptoError {
  override name = "DuplicateMessage";
}
export class TooManySkipped extends CryptoError {
  override name = "TooManySkipped";
}
export class SenderMismatch extends CryptoError {
  override name = "SenderMismatch";
}
export class StateError extends CryptoError {
  override name = "StateError";
}
export class UnknownPrekey extends CryptoError {
  override name = "UnknownPrekey";
}
/** An initial message that used no one-time prekey, accepted before (protocol-client §5). */
export class ReplayedInitialMessage extends CryptoError {
  override name = "ReplayedInitialMessage";
}

export const MAX_SKIP = 1000;
export const MAX_STORED = 2000;
/** A skipped message key no longer opens its message after this many seconds of the
 * caller's clock (30 days, the relay's default envelope TTL; protocol-crypto.md §6.6). */
export const MAX_SKIPPED_AGE = 30 * 24 * 3600;
const PREVIOUS_KEYS = 5;
const INFO_PQXDH = "VoxPQXDH_CURVE25519_SHA-256_ML-KEM-768";
const ZERO32 = new Uint8Array(32);

export interface PeerDevice {
  user: string;
  device: number;
  accountKey: Uint8Array; // typed Ed25519 (33)
  identityKey: Uint8Array; // typed X25519 (33)
}

export interface SessionState {
  localUser: string;
  localDevice: number;
  peer: PeerDevice;
  ad: Uint8Array;
  rk: Uint8Array;
  dhsPriv: Uint8Array;
  dhr: Uint8Array | null; // raw 32
  cks: Uint8Array | null;
  ns: number;
  ckr: Uint8Array | null;
  nr: number;
  pn: number;
  baseKey: Uint8Array; // raw EK_A
  initialDigest: Uint8Array;
  pending: Uint8Array | null; // encoded PqxdhPrefix (initiator until the first reply)
  previous: Uint8Array[]; // raw, newest last
  // (hex ratchet key, index, message key, stored at: whole seconds of the caller's clock,
  // 0 or absent = unknown, starts aging at the next clock reading), oldest inserted first
  skipped: Skipped[];
  clock?: number; // the latest clock (seconds) a decrypt was given; never moves backwards
}

export type Skipped = [string, number, Uint8Array, number?];

export interface Header {
  ratchetKey: Uint8Array; // raw 32
  pn: number;
  n: number;
}

export interface PqxdhPrefix {
  user: string;
  device: number;
  accountKey: Uint8Array;
  identityKey: Uint8Array;
  baseKey: Uint8Array; // typed
  signedPrekeyId: number;
  kemPrekeyId: number;
  oneTimePrekeyId: number | null;
  kemCiphertext: Uint8Array;
}

/** Envelope version 2 (sent) carries a random nonce; version 1 is only decrypted. */
export type Envelope = { version: 1 | 2; header: Header; headerBytes: Uint8Array; nonce: Uint8Array | null; ciphertext: Uint8Array } & (
  | { kind: 1 }
  | { kind: 2; prefix: PqxdhPrefix; prefixBytes: Uint8Array }
);
export const ENVELOPE_VERSION: 1 | 2 = 2;

// --- encodings ---------------------------------------------------------------------------

export function encodeHeader(h: Header): Uint8Array {
  return new Writer().raw(typed(X25519_TYPE, h.ratchetKey)).u32(h.pn).u32(h.n).done();
}

function readHeader(r: Reader): { header: Header; headerBytes: Uint8Array } {
  const key = r.raw(33);
  const pn = r.u32();
  const n = r.u32();
  const headerBytes = new Writer().raw(key).u32(pn).u32(n).done();
  return { header: { ratchetKey: untype(X25519_TYPE, key), pn, n }, headerBytes };
}

export function encodePrefix(p: PqxdhPrefix): Uint8Array {
  const w = new Writer().str16(p.user).u32(p.device).raw(p.accountKey).raw(p.identityKey).raw(p.baseKey);
  w.u32(p.signedPrekeyId).u32(p.kemPrekeyId).u8(p.oneTimePrekeyId === null ? 0 : 1);
  if (p.oneTimePrekeyId !== null) w.u32(p.oneTimePrekeyId);
  return w.raw(p.kemCiphertext).done();
}

function readPrefix(r: Reader): PqxdhPrefix {
  const user = r.str16(32);
  const device = r.u32();
  const accountKey = r.raw(33);
  const identityKey = r.raw(33);
  const baseKey = r.raw(33);
  untype(ED25519_TYPE, accountKey);
  untype(X25519_TYPE, identityKey);
  untype(X25519_TYPE, baseKey);
  const signedPrekeyId = r.u32();
  const kemPrekeyId = r.u32();
  const oneTimePrekeyId = r.flag() ? r.u32() : null;
  const kemCiphertext = r.raw(1088);
  return { user, device, accountKey, identityKey, baseKey, signedPrekeyId, kemPrekeyId, oneTimePrekeyId, kemCiphertext };
}

export function decodeEnvelope(data: Uint8Array): Envelope {
  const r = new Reader(data);
  const version = r.u8();
  if (version !== 1 && version !== 2) throw new DecodeError(`unsupported envelope version ${version}`);
  const kind = r.u8();
  if (kind !== 1 && kind !== 2) throw new DecodeError(`invalid envelope kind ${kind}`);
  let prefixPart: { prefix: PqxdhPrefix; prefixBytes: Uint8Array } | null = null;
  if (kind === 2) {
    const start = r.offset;
    const prefix = readPrefix(r);
    prefixPart = { prefix, prefixBytes: data.slice(start, r.offset) };
  }
  const { header, headerBytes } = readHeader(r);
  const nonce = version === 2 ? r.raw(12) : null;
  const ciphertext = r.bytes32();
  if (ciphertext.length < 16) throw new DecodeError("ciphertext too short");
  r.end();
  const common = { version: version as 1 | 2, header, headerBytes, nonce, ciphertext };
  return prefixPart ? { ...common, kind: 2, ...prefixPart } : { ...common, kind: 1 };
}

function encodePayload(user: string, device: number, body: Uint8Array): Uint8Array {
  return new Writer().u8(1).str16(user).u32(device).bytes32(body).done();
}

function decodePayload(data: Uint8Array): { user: string; device: number; body: Uint8Array } {
  const r = new Reader(data);
  r.version(1);
  const user = r.str16(32);
  const device = r.u32();
  const body = r.bytes32(16 * 1024 * 1024);
  r.end();
  return { user, device, body };
}

export function associatedData(initiator: PeerDevice, responder: PeerDevice): Uint8Array {
  const w = new Writer();
  for (const p of [initiator, responder]) w.str16(p.user).u32(p.device).raw(p.accountKey).raw(p.identityKey);
  return w.done();
}

// --- KDFs (§6.1-6.3) --------------------------------------------------------------------

export async function kdfRk(rk: Uint8Array, dh: Uint8Array): Promise<[Uint8Array, Uint8Array]> {
  const out = await hkdf(dh, rk, "VoxRatchet-v1-Root", 64);
  return [out.slice(0, 32), out.slice(32, 64)];
}

export async function chainStep(ck: Uint8Array): Promise<[Uint8Array, Uint8Array]> {
  return [await hmac(ck, Uint8Array.of(1)), await hmac(ck, Uint8Array.of(2))];
}

/** Version 1 (decrypt only): key and nonce both derived from the message key. */
export async function messageKeysV1(mk: Uint8Array): Promise<[Uint8Array, Uint8Array]> {
  const out = await hkdf(mk, ZERO32, "VoxRatchet-v1-MessageKeys", 44);
  return [out.slice(0, 32), out.slice(32, 44)];
}

/** Version 2: HKDF-Expand(PRK = mk, "VoxRatchet-v2-MessageKey", 32) = one HMAC. */
export async function messageKeyV2(mk: Uint8Array): Promise<Uint8Array> {
  return hmac(mk, concat(utf8("VoxRatchet-v2-MessageKey"), Uint8Array.of(1)));
}

/** AEAD associated data: session AD [|| version || kind (v2)] || header. */
function aeadAd(s: SessionState, env: { version: number; kind: number; headerBytes: Uint8Array }): Uint8Array {
  return env.version === 2 ? concat(s.ad, Uint8Array.of(2, env.kind), env.headerBytes) : concat(s.ad, env.headerBytes);
}

async function open(mk: Uint8Array, env: Envelope, ad: Uint8Array): Promise<Uint8Array> {
  if (env.version === 2) return aesGcmDecrypt(await messageKeyV2(mk), env.nonce as Uint8Array, env.ciphertext, ad);
  const [key, nonce] = await messageKeysV1(mk);
  return aesGcmDecrypt(key, nonce, env.ciphertext, ad);
}

// --- PQXDH ------------------------------------------------------------------------------

export interface LocalDevice {
  user: string;
  device: number;
  accountKey: Uint8Array; // typed Ed25519 public
  identityPriv: Uint8Array;
}

const publicOf = (l: LocalDevice): PeerDevice => ({
  user: l.user,
  device: l.device,
  accountKey: l.accountKey,
  identityKey: typed(X25519_TYPE, x25519Public(l.identityPriv)),
});

async function deriveSk(dhs: Uint8Array[], ss: Uint8Array): Promise<Uint8Array> {
  return hkdf(concat(new Uint8Array(32).fill(0xff), ...dhs, ss), ZERO32, INFO_PQXDH, 32);
}

/** §5.1: start a session with one device from its bundle. */
export async function initiate(
  local: LocalDevice,
  bundle: Bundle,
  rng: Rng,
  encapsulation?: { cipherText: Uint8Array; sharedSecret: Uint8Array },
): Promise<SessionState> {
  verifyBundle(bundle);
  const kemPub = untype(MLKEM_TYPE, bundle.kemPrekey.key);
  const { cipherText, sharedSecret } = encapsulation ?? mlkemEncapsulate(kemPub);
  const ek = rng(32);
  const spk = untype(X25519_TYPE, bundle.signedPrekey.key);
  const ikB = untype(X25519_TYPE, bundle.identityKey);
  const dhs = [x25519Dh(local.identityPriv, spk), x25519Dh(ek, ikB), x25519Dh(ek, spk)];
  if (bundle.oneTime) dhs.push(x25519Dh(ek, untype(X25519_TYPE, bundle.oneTime.key)));
  const sk = await deriveSk(dhs, sharedSecret);
  const me = publicOf(local);
  const peer: PeerDevice = {
    user: bundle.user,
    device: bundle.device,
    accountKey: bundle.accountKey,
    identityKey: bundle.identityKey,
  };
  const ad = associatedData(me, peer);
  const dhsPriv = rng(32);
  const [rk, cks] = await kdfRk(sk, x25519Dh(dhsPriv, spk));
  const baseKey = x25519Public(ek);
  const prefix = encodePrefix({
    user: me.user,
    device: me.device,
    accountKey: me.accountKey,
    identityKey: me.identityKey,
    baseKey: typed(X25519_TYPE, baseKey),
    signedPrekeyId: bundle.signedPrekey.id,
    kemPrekeyId: bundle.kemPrekey.id,
    oneTimePrekeyId: bundle.oneTime ? bundle.oneTime.id : null,
    kemCiphertext: cipherText,
  });
  return {
    localUser: me.user,
    localDevice: me.device,
    peer,
    ad,
    rk,
    dhsPriv,
    dhr: spk,
    cks,
    ns: 0,
    ckr: null,
    nr: 0,
    pn: 0,
    baseKey,
    initialDigest: await sha256(prefix),
    pending: prefix,
    previous: [],
    skipped: [],
  };
}

export interface PrekeyLookup {
  signed(id: number): Uint8Array | null; // X25519 private
  kem(id: number): { seed: Uint8Array; lastResort: boolean } | null;
  oneTime(id: number): Uint8Array | null;
}

/** §5.2: accept an initial message; returns the new session, body and consumed ids. */
export async function accept(
  local: LocalDevice,
  prekeys: PrekeyLookup,
  data: Uint8Array,
  now?: number,
): Promise<{ session: SessionState; body: Uint8Array; consumedOneTime: number | null; consumedKem: number | null }> {
  const env = decodeEnvelope(data);
  if (env.kind !== 2) throw new DecodeError("not an initial message");
  const p = env.prefix;
  const spk = prekeys.signed(p.signedPrekeyId);
  if (!spk) throw new UnknownPrekey(`signed ${p.signedPrekeyId}`);
  const kem = prekeys.kem(p.kemPrekeyId);
  if (!kem) throw new UnknownPrekey(`kem ${p.kemPrekeyId}`);
  let opk: Uint8Array | null = null;
  if (p.oneTimePrekeyId !== null) {
    opk = prekeys.oneTime(p.oneTimePrekeyId);
    if (!opk) throw new UnknownPrekey(`one-time ${p.oneTimePrekeyId}`);
  }
  const ikA = untype(X25519_TYPE, p.identityKey);
  const ekA = untype(X25519_TYPE, p.baseKey);
  const dhs = [x25519Dh(spk, ikA), x25519Dh(local.identityPriv, ekA), x25519Dh(spk, ekA)];
  if (opk) dhs.push(x25519Dh(opk, ekA));
  const ss = mlkemDecapsulate(p.kemCiphertext, kem.seed);
  const sk = await deriveSk(dhs, ss);
  const me = publicOf(local);
  const peer: PeerDevice = { user: p.user, device: p.device, accountKey: p.accountKey, identityKey: p.identityKey };
  const fresh: SessionState = {
    localUser: me.user,
    localDevice: me.device,
    peer,
    ad: associatedData(peer, me),
    rk: sk,
    dhsPriv: spk,
    dhr: null,
    cks: null,
    ns: 0,
    ckr: null,
    nr: 0,
    pn: 0,
    baseKey: ekA,
    initialDigest: await sha256(env.prefixBytes),
    pending: null,
    previous: [],
    skipped: [],
  };
  const { state, body } = await decryptMessage(fresh, env, now);
  return {
    session: state,
    body,
    consumedOneTime: p.oneTimePrekeyId,
    consumedKem: kem.lastResort ? null : p.kemPrekeyId,
  };
}

// --- Double Ratchet ---------------------------------------------------------------------

function clone(s: SessionState): SessionState {
  return { ...s, previous: [...s.previous], skipped: [...s.skipped] };
}

/** §6.5: returns the new state and the envelope bytes. */
export async function encrypt(
  s0: SessionState,
  body: Uint8Array,
  rng: Rng,
  version: 1 | 2 = ENVELOPE_VERSION,
): Promise<{ state: SessionState; data: Uint8Array }> {
  if (!s0.dhr) throw new StateError("no ratchet key from the peer yet");
  const s = clone(s0);
  if (!s.cks) {
    s.dhsPriv = rng(32);
    [s.rk, s.cks] = await kdfRk(s.rk, x25519Dh(s.dhsPriv, s.dhr as Uint8Array));
    s.ns = 0;
  }
  const headerBytes = encodeHeader({ ratchetKey: x25519Public(s.dhsPriv), pn: s.pn, n: s.ns });
  const kind = s.pending ? 2 : 1;
  const [mk, next] = await chainStep(s.cks as Uint8Array);
  const ad = aeadAd(s, { version, kind, headerBytes });
  const plaintext = encodePayload(s.localUser, s.localDevice, body);
  let nonce: Uint8Array | null = null;
  let ct: Uint8Array;
  if (version === 2) {
    nonce = rng(12); // drawn after the ratchet key (§6.5)
    ct = await aesGcmEncrypt(await messageKeyV2(mk), nonce, plaintext, ad);
  } else {
    // Version 1 is never sent by the app; only the pinned vectors reproduce it.
    const [key, derived] = await messageKeysV1(mk);
    ct = await aesGcmEncrypt(key, derived, plaintext, ad);
  }
  s.cks = next;
  s.ns += 1;
  const w = new Writer().u8(version).u8(kind);
  if (s.pending) w.raw(s.pending);
  w.raw(headerBytes);
  if (nonce) w.raw(nonce);
  w.bytes32(ct);
  return { state: s, data: w.done() };
}

async function skipKeys(
  ck: Uint8Array,
  from: number,
  to: number,
): Promise<{ keys: [number, Uint8Array][]; ck: Uint8Array }> {
  if (to - from > MAX_SKIP) throw new TooManySkipped(`${to - from} > ${MAX_SKIP}`);
  const keys: [number, Uint8Array][] = [];
  let c = ck;
  for (let i = from; i < to; i++) {
    const [mk, next] = await chainStep(c);
    keys.push([i, mk]);
    c = next;
  }
  return { keys, ck: c };
}

function addSkipped(s: SessionState, key: Uint8Array, keys: [number, Uint8Array][], clock: number): void {
  const k = hex(key);
  for (const [i, mk] of keys) {
    s.skipped = s.skipped.filter(([kk, ii]) => !(kk === k && ii === i));
    s.skipped.push([k, i, mk, clock]);
  }
  while (s.skipped.length > MAX_STORED) s.skipped.shift();
}

const expired = (storedAt: number | undefined, clock: number): boolean =>
  MAX_SKIPPED_AGE > 0 && !!storedAt && clock - storedAt > MAX_SKIPPED_AGE;

/** Delete the skipped keys expired at ``clock`` and stamp keys of unknown age; returns how
 * many were deleted (mutates ``s``: call it on a copy). */
function expireAt(s: SessionState, clock: number): number {
  if (clock <= 0) return 0;
  const before = s.skipped.length;
  s.skipped = s.skipped.filter(([, , , at]) => !expired(at, clock)).map((e) => (e[3] ? e : [e[0], e[1], e[2], clock]));
  return before - s.skipped.length;
}

/** §6.6 `expire_skipped(now)`: the session without the skipped keys older than
 * MAX_SKIPPED_AGE at ``now`` (seconds), and how many were deleted. */
export function expireSkipped(s0: SessionState, now: number): { state: SessionState; expired: number } {
  const s = clone(s0);
  s.clock = Math.max(s0.clock ?? 0, Math.floor(now));
  return { state: s, expired: expireAt(s, s.clock) };
}

async function openPayload(s: SessionState, mk: Uint8Array, env: Envelope, ad: Uint8Array): Promise<Uint8Array> {
  const payload = decodePayload(await open(mk, env, ad));
  if (payload.user !== s.peer.user || payload.device !== s.peer.device) {
    throw new SenderMismatch(`${s.peer.user}:${s.peer.device} != ${payload.user}:${payload.device}`);
  }
  return payload.body;
}

/** The common end of every successful decrypt (§6.6 step 5). */
function commit(s: SessionState, clock: number): SessionState {
  s.pending = null;
  if (clock !== (s.clock ?? 0)) {
    s.clock = clock;
    expireAt(s, clock);
  }
  return s;
}

/**
 * §6.6. ``now`` (seconds since the epoch) is the caller's clock: skipped keys older than
 * MAX_SKIPPED_AGE no longer open their message and are deleted at this commit; without it
 * nothing new expires.
 */
export async function decryptMessage(
  s0: SessionState,
  env: Envelope,
  now?: number,
): Promise<{ state: SessionState; body: Uint8Array }> {
  const { header } = env;
  const ad = aeadAd(s0, env);
  const k = hex(header.ratchetKey);
  const clock = now === undefined ? (s0.clock ?? 0) : Math.max(s0.clock ?? 0, Math.floor(now));
  const stored = s0.skipped.find(([kk, i, , at]) => kk === k && i === header.n && !expired(at, clock));
  if (stored) {
    const body = await openPayload(s0, stored[2], env, ad);
    const s = clone(s0);
    s.skipped = s.skipped.filter((e) => e !== stored);
    return { state: commit(s, clock), body };
  }
  if (s0.dhr && s0.ckr && equal(header.ratchetKey, s0.dhr)) {
    if (header.n < s0.nr) throw new DuplicateMessage(`index ${header.n}`);
    const { keys, ck } = await skipKeys(s0.ckr, s0.nr, header.n);
    const [mk, next] = await chainStep(ck);
    const body = await openPayload(s0, mk, env, ad);
    const s = clone(s0);
    s.ckr = next;
    s.nr = header.n + 1;
    addSkipped(s, header.ratchetKey, keys, clock);
    return { state: commit(s, clock), body };
  }
  if (s0.previous.some((p) => equal(p, header.ratchetKey))) throw new DuplicateMessage(`old chain, index ${header.n}`);
  // A DH ratchet step: the bound first, over both chains together; the old chain's keys are
  // derived only after the new message's tag verified.
  const oldGap = s0.ckr && s0.dhr ? Math.max(0, header.pn - s0.nr) : 0;
  if (oldGap + header.n > MAX_SKIP) throw new TooManySkipped(`${oldGap + header.n} > ${MAX_SKIP}`);
  const [rk, ckNew] = await kdfRk(s0.rk, x25519Dh(s0.dhsPriv, header.ratchetKey));
  const { keys, ck } = await skipKeys(ckNew, 0, header.n);
  const [mk, next] = await chainStep(ck);
  const body = await openPayload(s0, mk, env, ad);
  const s = clone(s0);
  if (s.dhr) {
    if (s0.ckr && oldGap) addSkipped(s, s.dhr, (await skipKeys(s0.ckr, s0.nr, header.pn)).keys, clock);
    s.previous.push(s.dhr);
    while (s.previous.length > PREVIOUS_KEYS) s.previous.shift();
  }
  addSkipped(s, header.ratchetKey, keys, clock);
  s.rk = rk;
  s.dhr = header.ratchetKey;
  s.ckr = next;
  s.nr = header.n + 1;
  if (s.cks) s.pn = s.ns;
  s.cks = null;
  return { state: commit(s, clock), body };
}

/** Decrypt envelope bytes with an existing session (§6.6, §8.3). */
export async function decrypt(s: SessionState, data: Uint8Array, now?: number): Promise<{ state: SessionState; body: Uint8Array }> {
  const env = decodeEnvelope(data);
  if (env.kind === 2 && !equal(await sha256(env.prefixBytes), s.initialDigest)) {
    throw new StateError("initial message of another session");
  }
  return decryptMessage(s, env, now);
}
