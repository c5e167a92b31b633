// Safety numbers (protocol-crypto-extras.md §3): Signal's numeric fingerprint, version 0,
// 5,200 SHA-512 iterations over the typed Ed25519 account key and the username.
import { Writer, concat, utf8 } from "./bytes";
import { sha512 } from "./primitives";

const ITERATIONS = 5200;

function partyHash(accountKey: Uint8Array, user: string): Uint8Array {
  let h = new Writer().u16(0).raw(accountKey).raw(utf8(user)).done();
  for (let i = 0; i < ITERATIONS; i++) h = sha512(concat(h, accountKey));
  return h;
}

function digits(h: Uint8Array): string {
  let out = "";
  for (let i = 0; i < 30; i += 5) {
    let v = 0;
    for (let j = 0; j < 5; j++) v = v * 256 + (h[i + j] as number);
    out += String(v % 100000).padStart(5, "0");
  }
  return out;
}

/** The 60-digit safety number of two parties (smaller digit string first). */
export function safetyNumber(aKey: Uint8Array, aUser: string, bKey: Uint8Array, bUser: string): string {
  const a = digits(partyHash(aKey, aUser));
  const b = digits(partyHash(bKey, bUser));
  return a < b ? a + b : b + a;
}

/** Shown as 12 groups of 5 digits. */
export function displaySafetyNumber(n: string): string {
  return (n.match(/.{5}/g) ?? []).join(" ");
}
