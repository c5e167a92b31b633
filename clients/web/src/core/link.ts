// Linking this browser as a new device of an existing account (protocol-client.md §7),
// with the code that `vox link` shows: USERNAME:DEVICE:XXXX-XXXX-XXXX-XXXX.
import { scryptAsync } from "@noble/hashes/scrypt.js";
import { Api, RelayError } from "./api";
import { DecodeError, Reader, Writer, concat, equal, fromB64, utf8 } from "./bytes";
import { decodeRelayPayload, PayloadKind } from "./content";
import { type DeviceEntry, signList, verifyList } from "./devicelist";
import { USERNAME, accountPublic, decodeAccountKey } from "./keys";
import { aesGcmDecrypt, aesGcmEncrypt, ed25519Public, ed25519Sign } from "./primitives";

export class LinkError extends Error {
  override name = "LinkError";
}

export interface LinkCode {
  user: string;
  device: number;
  secret: Uint8Array;
}

const B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

function base32Decode(s: string): Uint8Array {
  let bits = 0;
  let value = 0;
  const out: number[] = [];
  for (const ch of s) {
    const v = B32.indexOf(ch);
    if (v < 0) throw new LinkError("malformed code");
    value = (value << 5) | v;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Uint8Array.from(out);
}

export function formatLinkCode(c: LinkCode): string {
  let bits = 0;
  let value = 0;
  let out = "";
  for (const byte of c.secret) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += B32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += B32[(value << (5 - bits)) & 31];
  return `${c.user}:${c.device}:${(out.match(/.{1,4}/g) ?? []).join("-")}`;
}

/** The encrypted offer sent to the new device: nonce || AES-GCM(offer key, offer, ad). */
export async function sealOffer(c: LinkCode, offerKey: Uint8Array, accountSeed: Uint8Array, nonce: Uint8Array): Promise<Uint8Array> {
  const accountKey = new Writer().u8(1).u8(0x11).raw(accountSeed).done();
  const body = new Writer().u8(1).str16(c.user).u32(c.device).raw(accountKey).done();
  return concat(nonce, await aesGcmEncrypt(offerKey, nonce, body, linkAd(c)));
}

export function parseLinkCode(code: string): LinkCode {
  const parts = code.trim().split(":");
  if (parts.length !== 3) throw new LinkError("malformed code (expected USERNAME:DEVICE:XXXX-XXXX-XXXX-XXXX)");
  const [user, dev, secretText] = parts as [string, string, string];
  const device = Number(dev);
  if (!USERNAME.test(user) || !Number.isInteger(device) || device < 1 || device > 0xffffffff) throw new LinkError("malformed code");
  const cleaned = secretText.toUpperCase().replace(/[^A-Z0-9]/g, "");
  const secret = base32Decode(cleaned);
  if (secret.length !== 10 || cleaned.length !== 16) throw new LinkError("malformed code");
  return { user, device, secret };
}

const linkAd = (c: LinkCode): Uint8Array => new Writer().raw(utf8("VoxLink-v1")).u8(0).str16(c.user).u32(c.device).done();

export async function deriveLinkKeys(c: LinkCode): Promise<{ authSeed: Uint8Array; offerKey: Uint8Array }> {
  const k = await scryptAsync(c.secret, linkAd(c), { N: 2 ** 15, r: 8, p: 1, dkLen: 64 });
  return { authSeed: k.slice(0, 32), offerKey: k.slice(32, 64) };
}

export interface Offer {
  accountSeed: Uint8Array;
  token: string;
}

/** Log in with the code's temporary key and wait for the encrypted offer. */
export async function receiveOffer(api: Api, c: LinkCode, timeoutMs = 60_000): Promise<Offer> {
  await api.config();
  const { authSeed, offerKey } = await deriveLinkKeys(c);
  try {
    await api.login(c.user, c.device, (nonce) =>
      ed25519Sign(authSeed, "VoxAuthChallenge-v1", new Writer().str16(c.user).u32(c.device).raw(nonce).done()),
    );
  } catch (e) {
    if (e instanceof RelayError) throw new LinkError("the code is not valid (expired or already used)");
    throw e;
  }
  const token = api.token as string;
  const base = api.base || location.origin;
  const ws = new WebSocket(base.replace(/^http/, "ws") + "/v1/ws");
  try {
    const sealed = await new Promise<Uint8Array>((resolve, reject) => {
      const timer = setTimeout(() => reject(new LinkError("no offer arrived (is `vox link` still running?)")), timeoutMs);
      ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token }));
      ws.onclose = (ev) => {
        clearTimeout(timer);
        reject(new LinkError(`connection closed: ${ev.reason || ev.code}`));
      };
      ws.onmessage = (ev) => {
        const f = JSON.parse(String(ev.data)) as { type: string; seq?: number; data?: string };
        if (f.type !== "deliver") return;
        ws.send(JSON.stringify({ type: "ack", seqs: [f.seq] }));
        try {
          const p = decodeRelayPayload(fromB64(f.data ?? ""));
          if (p.kind === PayloadKind.Link) {
            clearTimeout(timer);
            resolve(p.data);
          }
        } catch {
          // not for us
        }
      };
    });
    let body: Uint8Array;
    try {
      body = await aesGcmDecrypt(offerKey, sealed.slice(0, 12), sealed.slice(12), linkAd(c));
    } catch {
      throw new LinkError("the offer does not decrypt with this code");
    }
    const r = new Reader(body);
    r.version(1);
    if (r.str16(32) !== c.user || r.u32() !== c.device) throw new LinkError("the offer is for another device");
    const accountSeed = decodeAccountKey(r.raw(r.remaining));
    return { accountSeed, token };
  } catch (e) {
    if (e instanceof DecodeError) throw new LinkError("malformed offer");
    throw e;
  } finally {
    ws.onclose = null;
    ws.close();
  }
}

/** Replace the temporary entry with this device's real keys (list v+1); returns the list. */
export async function completeLink(api: Api, c: LinkCode, offer: Offer, me: DeviceEntry): Promise<Uint8Array> {
  const data = await api.devices(c.user);
  const served = fromB64(data.account_key);
  if (!equal(served, accountPublic(offer.accountSeed))) throw new LinkError("the relay serves another account key than the offer's");
  const current = verifyList(fromB64(data.device_list), served, c.user, null);
  const devices = [...current.devices.filter((d) => d.id !== c.device), me].sort((a, b) => a.id - b.id);
  const signed = signList({ user: c.user, version: current.version + 1, devices }, offer.accountSeed);
  await api.putDevices(c.user, signed);
  return signed;
}

export { ed25519Public };
