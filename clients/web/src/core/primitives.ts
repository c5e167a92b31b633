// The primitives of protocol-crypto.md §1, all from audited libraries: X25519 and Ed25519
// from @noble/curves, ML-KEM-768 from @noble/post-quantum, SHA-512 from @noble/hashes;
// HKDF, HMAC, SHA-256 and AES-256-GCM from WebCrypto (incremental SHA-256 for attachment
// digests, which WebCrypto lacks, from @noble/hashes). Nothing here is hand-written crypto.
import { ed25519, x25519 } from "@noble/curves/ed25519.js";
import { ml_kem768 } from "@noble/post-quantum/ml-kem.js";
import { sha256 as nobleSha256, sha512 as nobleSha512 } from "@noble/hashes/sha2.js";
import { concat, utf8 } from "./bytes";

export class CryptoError extends Error {
  override name = "CryptoError";
}
export class AuthenticationFailed extends CryptoError {
  override name = "AuthenticationFailed";
}
export class BadSignature extends CryptoError {
  override name = "BadSignature";
}
export class InvalidPublicKey extends CryptoError {
  override name = "InvalidPublicKey";
}

const subtle = (): SubtleCrypto => globalThis.crypto.subtle;
const buf = (b: Uint8Array): Uint8Array<ArrayBuffer> => b as Uint8Array<ArrayBuffer>;
const ZERO32 = new Uint8Array(32);

export function x25519Public(priv: Uint8Array): Uint8Array {
  return x25519.getPublicKey(priv);
}

export function x25519Dh(priv: Uint8Array, pub: Uint8Array): Uint8Array {
  if (pub.length !== 32) throw new InvalidPublicKey("X25519 key must be 32 bytes");
  let out: Uint8Array;
  try {
    out = x25519.getSharedSecret(priv, pub);
  } catch (e) {
    throw new InvalidPublicKey(`X25519: ${(e as Error).message}`);
  }
  if (out.every((x) => x === 0)) throw new InvalidPublicKey("X25519 output is all zero");
  return out;
}

export function signingMessage(label: string, data: Uint8Array): Uint8Array {
  return concat(utf8(label), Uint8Array.of(0), data);
}

export function ed25519Public(seed: Uint8Array): Uint8Array {
  return ed25519.getPublicKey(seed);
}

export function ed25519Sign(seed: Uint8Array, label: string, data: Uint8Array): Uint8Array {
  return ed25519.sign(signingMessage(label, data), seed);
}

export function ed25519Verify(
  pub: Uint8Array,
  label: string,
  data: Uint8Array,
  sig: Uint8Array,
  what: string,
): void {
  let ok = false;
  try {
    ok = sig.length === 64 && ed25519.verify(sig, signingMessage(label, data), pub, { zip215: false });
  } catch {
    ok = false;
  }
  if (!ok) throw new BadSignature(what);
}

export async function sha256(data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await subtle().digest("SHA-256", buf(data)));
}

export function sha512(data: Uint8Array): Uint8Array {
  return nobleSha512(data);
}

export async function hkdf(
  ikm: Uint8Array,
  salt: Uint8Array,
  info: Uint8Array | string,
  length: number,
): Promise<Uint8Array> {
  const key = await subtle().importKey("raw", buf(ikm), "HKDF", false, ["deriveBits"]);
  const bits = await subtle().deriveBits(
    {
      name: "HKDF",
      hash: "SHA-256",
      salt: buf(salt.length ? salt : ZERO32),
      info: buf(typeof info === "string" ? utf8(info) : info),
    },
    key,
    length * 8,
  );
  return new Uint8Array(bits);
}

export async function hmac(key: Uint8Array, data: Uint8Array): Promise<Uint8Array> {
  const k = await subtle().importKey("raw", buf(key), { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  return new Uint8Array(await subtle().sign("HMAC", k, buf(data)));
}

async function aesKey(key: Uint8Array, use: KeyUsage): Promise<CryptoKey> {
  if (key.length !== 32) throw new CryptoError("AES-256-GCM key must be 32 bytes");
  return subtle().importKey("raw", buf(key), "AES-GCM", false, [use]);
}

export async function aesGcmEncrypt(
  key: Uint8Array | CryptoKey,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  ad: Uint8Array,
): Promise<Uint8Array> {
  const k = key instanceof Uint8Array ? await aesKey(key, "encrypt") : key;
  const out = await subtle().encrypt(
    { name: "AES-GCM", iv: buf(nonce), additionalData: buf(ad), tagLength: 128 },
    k,
    buf(plaintext),
  );
  return new Uint8Array(out);
}

export async function aesGcmDecrypt(
  key: Uint8Array | CryptoKey,
  nonce: Uint8Array,
  ciphertext: Uint8Array,
  ad: Uint8Array,
): Promise<Uint8Array> {
  const k = key instanceof Uint8Array ? await aesKey(key, "decrypt") : key;
  try {
    const out = await subtle().decrypt(
      { name: "AES-GCM", iv: buf(nonce), additionalData: buf(ad), tagLength: 128 },
      k,
      buf(ciphertext),
    );
    return new Uint8Array(out);
  } catch {
    throw new AuthenticationFailed("AEAD tag does not verify");
  }
}

/** ML-KEM-768 from a 64-byte seed d || z (FIPS 203 KeyGen_internal). */
export function mlkemKeygen(seed: Uint8Array): { publicKey: Uint8Array; secretKey: Uint8Array } {
  return ml_kem768.keygen(seed);
}

export function mlkemEncapsulate(publicKey: Uint8Array): {
  cipherText: Uint8Array;
  sharedSecret: Uint8Array;
} {
  if (publicKey.length !== 1184) throw new InvalidPublicKey("ML-KEM-768 key must be 1184 bytes");
  try {
    return ml_kem768.encapsulate(publicKey);
  } catch (e) {
    throw new InvalidPublicKey(`ML-KEM-768: ${(e as Error).message}`);
  }
}

export function mlkemDecapsulate(cipherText: Uint8Array, seed: Uint8Array): Uint8Array {
  if (cipherText.length !== 1088) throw new CryptoError("ML-KEM-768 ciphertext must be 1088 bytes");
  return ml_kem768.decapsulate(cipherText, ml_kem768.keygen(seed).secretKey);
}

/** An incremental SHA-256 (WebCrypto digests only whole buffers): attachment digests. */
export interface Sha256Stream {
  update(data: Uint8Array): void;
  digest(): Uint8Array;
}
export function sha256Stream(): Sha256Stream {
  const h = nobleSha256.create();
  return { update: (d) => void h.update(d), digest: () => h.digest() };
}

/** A non-extractable AES-256-GCM key for many operations (one import per attachment). */
export async function aesGcmKey(key: Uint8Array): Promise<CryptoKey> {
  if (key.length !== 32) throw new CryptoError("AES-256-GCM key must be 32 bytes");
  return subtle().importKey("raw", buf(key), "AES-GCM", false, ["encrypt", "decrypt"]);
}
