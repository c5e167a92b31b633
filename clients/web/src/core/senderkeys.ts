// Sender keys for groups (protocol-crypto-extras.md §2): one sending chain per member device
// and group, distributed over the pairwise sessions; a group message is encrypted once and
// signed. Decrypt commits on success (returns a new state).
import { DecodeError, Reader, Writer, concat, utf8, type Rng } from "./bytes";
import { ED25519_TYPE, typed, untype } from "./keys";
import { CryptoError, aesGcmDecrypt, aesGcmEncrypt, ed25519Public, ed25519Sign, ed25519Verify, hkdf, hmac } from "./primitives";
import { DuplicateMessage, MAX_SKIPPED_AGE, SenderMismatch, StateError, TooManySkipped } from "./session";

export class UnknownSenderKey extends CryptoError {
  override name = "UnknownSenderKey";
}

const MAX_SKIP = 1000;
const RECORD_STATES = 5;
const ZERO32 = new Uint8Array(32);

export interface SenderKeyState {
  groupId: Uint8Array;
  user: string;
  device: number;
  keyId: number;
  iteration: number;
  chainKey: Uint8Array;
  signingSeed: Uint8Array | null; // sending states only
  signingPublic: Uint8Array; // typed Ed25519
  // (iteration, message key seed, stored at: seconds of the caller's clock, 0/absent =
  // unknown), insertion order; expire after MAX_SKIPPED_AGE like the pairwise ratchet's
  skipped: [number, Uint8Array, number?][];
  clock?: number; // the latest clock (seconds) a decrypt was given
}

const expired = (at: number | undefined, clock: number): boolean => MAX_SKIPPED_AGE > 0 && !!at && clock - at > MAX_SKIPPED_AGE;

/** Drop skipped keys expired at ``clock``, stamp keys of unknown age (a new state). */
function expireAt(s: SenderKeyState, clock: number): SenderKeyState {
  if (clock <= 0 || clock === (s.clock ?? 0)) return s;
  const skipped = s.skipped.filter(([, , at]) => !expired(at, clock)).map((e): [number, Uint8Array, number?] => (e[2] ? e : [e[0], e[1], clock]));
  return { ...s, skipped, clock };
}

/** The state without the skipped keys older than MAX_SKIPPED_AGE at ``now`` (seconds). */
export function expireSenderKey(s: SenderKeyState, now: number): SenderKeyState {
  return expireAt(s, Math.max(s.clock ?? 0, Math.floor(now)));
}

export function createSenderKey(groupId: Uint8Array, user: string, device: number, rng: Rng): SenderKeyState {
  const keyId = new DataView(rng(4).buffer).getUint32(0);
  const chainKey = rng(32);
  const signingSeed = rng(32);
  return { groupId, user, device, keyId, iteration: 0, chainKey, signingSeed, signingPublic: typed(ED25519_TYPE, ed25519Public(signingSeed)), skipped: [] };
}

export function encodeDistribution(s: SenderKeyState): Uint8Array {
  return new Writer().u8(1).bytes16(s.groupId).str16(s.user).u32(s.device).u32(s.keyId).u32(s.iteration).raw(s.chainKey).raw(s.signingPublic).done();
}

export function decodeDistribution(b: Uint8Array): SenderKeyState {
  const r = new Reader(b);
  r.version(1);
  const groupId = r.bytes16(64);
  if (groupId.length < 1) throw new DecodeError("empty group id");
  const user = r.str16(32);
  const device = r.u32();
  const keyId = r.u32();
  const iteration = r.u32();
  const chainKey = r.raw(32);
  const signingPublic = r.raw(33);
  untype(ED25519_TYPE, signingPublic);
  r.end();
  return { groupId, user, device, keyId, iteration, chainKey, signingSeed: null, signingPublic, skipped: [] };
}

async function step(ck: Uint8Array): Promise<[Uint8Array, Uint8Array]> {
  return [await hmac(ck, Uint8Array.of(1)), await hmac(ck, Uint8Array.of(2))];
}

export const senderKeyV2 = (seed: Uint8Array): Promise<Uint8Array> => hmac(seed, concat(utf8("VoxSenderKey-v2 message key"), Uint8Array.of(1)));

export async function senderKeysV1(seed: Uint8Array): Promise<[Uint8Array, Uint8Array]> {
  const okm = await hkdf(seed, ZERO32, "VoxSenderKey-v1 message keys", 44);
  return [okm.slice(0, 32), okm.slice(32, 44)];
}

export interface GroupMessage {
  version: 1 | 2;
  groupId: Uint8Array;
  user: string;
  device: number;
  keyId: number;
  iteration: number;
  header: Uint8Array;
  signed: Uint8Array;
  nonce: Uint8Array | null;
  ciphertext: Uint8Array;
  signature: Uint8Array;
}

export function decodeGroupMessage(b: Uint8Array): GroupMessage {
  const r = new Reader(b);
  const version = r.u8();
  if (version !== 1 && version !== 2) throw new DecodeError(`unsupported group message version ${version}`);
  if (version === 2 && r.u8() !== 3) throw new DecodeError("invalid kind");
  const groupId = r.bytes16(64);
  const user = r.str16(32);
  const device = r.u32();
  const keyId = r.u32();
  const iteration = r.u32();
  const header = b.slice(0, r.offset);
  const nonce = version === 2 ? r.raw(12) : null;
  const ciphertext = r.bytes32(16 * 1024 * 1024 + 16);
  if (ciphertext.length < 16) throw new DecodeError("ciphertext too short");
  const signed = b.slice(0, r.offset);
  const signature = r.raw(64);
  r.end();
  return { version: version as 1 | 2, groupId, user, device, keyId, iteration, header, signed, nonce, ciphertext, signature };
}

/** Encrypt with a sending state (version 2); returns the new state and the message. */
export async function senderKeyEncrypt(s: SenderKeyState, plaintext: Uint8Array, rng: Rng): Promise<{ state: SenderKeyState; message: Uint8Array }> {
  if (!s.signingSeed) throw new StateError("not a sending state");
  if (s.iteration >= 0xffffffff) throw new StateError("sender key chain exhausted");
  const header = new Writer().u8(2).u8(3).bytes16(s.groupId).str16(s.user).u32(s.device).u32(s.keyId).u32(s.iteration).done();
  const [seed, next] = await step(s.chainKey);
  const nonce = rng(12);
  const ct = await aesGcmEncrypt(await senderKeyV2(seed), nonce, plaintext, header);
  const signed = new Writer().raw(header).raw(nonce).bytes32(ct).done();
  const sig = ed25519Sign(s.signingSeed, "VoxSenderKeyMessage-v2", signed);
  return { state: { ...s, chainKey: next, iteration: s.iteration + 1 }, message: concat(signed, sig) };
}

/** Decrypt with a receiving state (§2.4); ``now`` (seconds) is the caller's clock for the
 * skipped keys' age (without it nothing new expires). */
export async function senderKeyDecrypt(s: SenderKeyState, m: GroupMessage, now?: number): Promise<{ state: SenderKeyState; plaintext: Uint8Array }> {
  if (s.signingSeed) throw new StateError("a sending state does not decrypt");
  if (m.user !== s.user || m.device !== s.device || m.groupId.length !== s.groupId.length || !m.groupId.every((x, i) => x === s.groupId[i])) {
    throw new SenderMismatch(`${s.user}:${s.device} != ${m.user}:${m.device}`);
  }
  if (m.keyId !== s.keyId) throw new UnknownSenderKey(String(m.keyId));
  ed25519Verify(untype(ED25519_TYPE, s.signingPublic), m.version === 2 ? "VoxSenderKeyMessage-v2" : "VoxSenderKeyMessage-v1", m.signed, m.signature, "sender key message");
  const clock = now === undefined ? (s.clock ?? 0) : Math.max(s.clock ?? 0, Math.floor(now));
  let seed: Uint8Array;
  let next: SenderKeyState;
  if (m.iteration < s.iteration) {
    const hit = s.skipped.find(([i, , at]) => i === m.iteration && !expired(at, clock));
    if (!hit) throw new DuplicateMessage(`iteration ${m.iteration}`);
    seed = hit[1];
    next = { ...s, skipped: s.skipped.filter((e) => e !== hit) };
  } else {
    if (m.iteration - s.iteration > MAX_SKIP) throw new TooManySkipped(`${m.iteration - s.iteration} > ${MAX_SKIP}`);
    let ck = s.chainKey;
    const skipped = [...s.skipped];
    for (let i = s.iteration; i < m.iteration; i++) {
      const [sd, n] = await step(ck);
      skipped.push([i, sd, clock]);
      ck = n;
    }
    const [sd, n] = await step(ck);
    seed = sd;
    while (skipped.length > MAX_SKIP) skipped.shift();
    next = { ...s, chainKey: n, iteration: m.iteration + 1, skipped };
  }
  let plaintext: Uint8Array;
  if (m.version === 2) plaintext = await aesGcmDecrypt(await senderKeyV2(seed), m.nonce as Uint8Array, m.ciphertext, m.header);
  else {
    const [key, nonce] = await senderKeysV1(seed);
    plaintext = await aesGcmDecrypt(key, nonce, m.ciphertext, m.header);
  }
  return { state: expireAt(next, clock), plaintext };
}

/** A receiver's newest states of one sender (newest first, at most 5). */
export function recordImport(record: SenderKeyState[], s: SenderKeyState): SenderKeyState[] {
  if (record.some((x) => x.keyId === s.keyId)) return record;
  return [s, ...record].slice(0, RECORD_STATES);
}
