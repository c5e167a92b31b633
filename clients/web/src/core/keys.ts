// Typed public keys, prekeys and their signatures (protocol-crypto.md §2-4).
import { DecodeError, Reader, Writer, concat, type Rng } from "./bytes";
import {
  ed25519Public,
  ed25519Sign,
  ed25519Verify,
  mlkemKeygen,
  x25519Public,
} from "./primitives";

export const X25519_TYPE = 0x01;
export const ED25519_TYPE = 0x02;
export const MLKEM_TYPE = 0x03;
const P = (1n << 255n) - 19n;

export const typed = (type: number, raw: Uint8Array): Uint8Array => concat(Uint8Array.of(type), raw);

/** Strip and check a typed key's prefix (X25519 keys must be canonical). */
export function untype(type: number, key: Uint8Array): Uint8Array {
  const size = type === MLKEM_TYPE ? 1185 : 33;
  if (key.length !== size || key[0] !== type) throw new DecodeError(`invalid typed key (type ${type})`);
  const raw = key.slice(1);
  if (type === X25519_TYPE) {
    let v = 0n;
    for (let i = 31; i >= 0; i--) v = (v << 8n) | BigInt(raw[i] as number);
    if (v >= P) throw new DecodeError("X25519 public key is not canonical");
  }
  return raw;
}

export const USERNAME = /^[a-z0-9_.-]{3,32}$/;

export interface SignedPrekeyPriv {
  id: number;
  priv: Uint8Array;
  sig: Uint8Array;
  created: number;
}
export interface KemPrekeyPriv {
  id: number;
  seed: Uint8Array;
  lastResort: boolean;
  sig: Uint8Array;
  created?: number; // ms; last-resort keys (rotation), absent in stores written before it
}
export interface OneTimePriv {
  id: number;
  priv: Uint8Array;
}

export function signSignedPrekey(
  accountSeed: Uint8Array,
  identityPub: Uint8Array,
  id: number,
  spkPub: Uint8Array,
): Uint8Array {
  const data = new Writer().raw(typed(X25519_TYPE, identityPub)).u32(id).raw(typed(X25519_TYPE, spkPub)).done();
  return ed25519Sign(accountSeed, "VoxSignedPrekey-v1", data);
}

function kemData(identityTyped: Uint8Array, id: number, lastResort: boolean, kemTyped: Uint8Array): Uint8Array {
  return new Writer().raw(identityTyped).u32(id).u8(lastResort ? 1 : 0).raw(kemTyped).done();
}

export function newSignedPrekey(accountSeed: Uint8Array, identityPub: Uint8Array, id: number, rng: Rng, created = Date.now()): SignedPrekeyPriv {
  const priv = rng(32);
  const sig = signSignedPrekey(accountSeed, identityPub, id, x25519Public(priv));
  return { id, priv, sig, created };
}

export function newKemPrekey(
  accountSeed: Uint8Array,
  identityPub: Uint8Array,
  id: number,
  lastResort: boolean,
  rng: Rng,
): KemPrekeyPriv {
  const seed = rng(64);
  const pub = mlkemKeygen(seed).publicKey;
  const sig = ed25519Sign(
    accountSeed,
    "VoxKemPrekey-v1",
    kemData(typed(X25519_TYPE, identityPub), id, lastResort, typed(MLKEM_TYPE, pub)),
  );
  return { id, seed, lastResort, sig };
}

export const kemPublic = (k: KemPrekeyPriv): Uint8Array => mlkemKeygen(k.seed).publicKey;

/** One device's prekey bundle as the initiator needs it (§4.2). */
export interface Bundle {
  user: string;
  device: number;
  accountKey: Uint8Array; // typed Ed25519
  identityKey: Uint8Array; // typed X25519
  signedPrekey: { id: number; key: Uint8Array; sig: Uint8Array }; // typed X25519
  kemPrekey: { id: number; lastResort: boolean; key: Uint8Array; sig: Uint8Array }; // typed ML-KEM
  oneTime: { id: number; key: Uint8Array } | null;
}

export function verifyBundle(b: Bundle): void {
  const accountRaw = untype(ED25519_TYPE, b.accountKey);
  ed25519Verify(
    accountRaw,
    "VoxSignedPrekey-v1",
    new Writer().raw(b.identityKey).u32(b.signedPrekey.id).raw(b.signedPrekey.key).done(),
    b.signedPrekey.sig,
    "signed prekey",
  );
  ed25519Verify(
    accountRaw,
    "VoxKemPrekey-v1",
    kemData(b.identityKey, b.kemPrekey.id, b.kemPrekey.lastResort, b.kemPrekey.key),
    b.kemPrekey.sig,
    "KEM prekey",
  );
}

/** The binary PrekeyBundle of §4.2 (used by the pinned vectors). */
export function decodeBundle(data: Uint8Array): Bundle {
  const r = new Reader(data);
  r.version(1);
  const user = r.str16(32);
  const device = r.u32();
  const accountKey = r.raw(33);
  const identityKey = r.raw(33);
  const spk = { id: r.u32(), key: r.raw(33), sig: r.raw(64) };
  const kem = { id: r.u32(), lastResort: r.flag(), key: r.raw(1185), sig: r.raw(64) };
  const oneTime = r.flag() ? { id: r.u32(), key: r.raw(33) } : null;
  r.end();
  untype(ED25519_TYPE, accountKey);
  untype(X25519_TYPE, identityKey);
  untype(X25519_TYPE, spk.key);
  untype(MLKEM_TYPE, kem.key);
  if (oneTime) untype(X25519_TYPE, oneTime.key);
  return { user, device, accountKey, identityKey, signedPrekey: spk, kemPrekey: kem, oneTime };
}

export function accountPublic(seed: Uint8Array): Uint8Array {
  return typed(ED25519_TYPE, ed25519Public(seed));
}
export function x25519Typed(priv: Uint8Array): Uint8Array {
  return typed(X25519_TYPE, x25519Public(priv));
}

/** AccountKey private encoding (§4.3): u8 1 || 0x11 || seed. */
export function decodeAccountKey(data: Uint8Array): Uint8Array {
  const r = new Reader(data);
  r.version(1);
  if (r.u8() !== 0x11) throw new DecodeError("not an account key");
  const seed = r.raw(32);
  r.end();
  return seed;
}
