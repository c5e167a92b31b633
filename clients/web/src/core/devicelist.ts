// The signed device list (protocol-crypto-extras.md §1): the account key signs the set of
// devices; the client refuses any device that is not on a validly signed list.
import { DecodeError, Reader, Writer, equal } from "./bytes";
import { ED25519_TYPE, USERNAME, X25519_TYPE, untype } from "./keys";
import { ed25519Sign, ed25519Verify, CryptoError } from "./primitives";

export interface DeviceEntry {
  id: number;
  identityKey: Uint8Array; // typed X25519
  authKey: Uint8Array; // typed Ed25519
}
export interface DeviceList {
  user: string;
  version: number;
  devices: DeviceEntry[];
}

export class DeviceListRollback extends CryptoError {
  override name = "DeviceListRollback";
}

const LABEL = "VoxDeviceList-v1";

export function encodeBody(list: DeviceList): Uint8Array {
  const w = new Writer().u8(1).str16(list.user).u64(list.version).u16(list.devices.length);
  for (const d of list.devices) w.u32(d.id).raw(d.identityKey).raw(d.authKey);
  return w.done();
}

export function signList(list: DeviceList, accountSeed: Uint8Array): Uint8Array {
  const body = encodeBody(list);
  const w = new Writer().raw(body).raw(ed25519Sign(accountSeed, LABEL, body));
  return w.done();
}

export function parseList(signed: Uint8Array): { list: DeviceList; body: Uint8Array; sig: Uint8Array } {
  const r = new Reader(signed);
  r.version(1);
  const user = r.str16(32);
  if (!USERNAME.test(user)) throw new DecodeError("invalid username");
  const version = r.u64();
  if (version < 1n || version > BigInt(Number.MAX_SAFE_INTEGER)) throw new DecodeError("invalid list_version");
  const count = r.u16();
  if (count > 16) throw new DecodeError("too many devices");
  if (count < 1) throw new DecodeError("no devices");
  const devices: DeviceEntry[] = [];
  let last = 0;
  for (let i = 0; i < count; i++) {
    const id = r.u32();
    const identityKey = r.raw(33);
    const authKey = r.raw(33);
    if (id < 1 || id <= last) throw new DecodeError("invalid device_id");
    untype(X25519_TYPE, identityKey);
    untype(ED25519_TYPE, authKey);
    devices.push({ id, identityKey, authKey });
    last = id;
  }
  const bodyLen = r.offset;
  const sig = r.raw(64);
  r.end();
  return { list: { user, version: Number(version), devices }, body: signed.slice(0, bodyLen), sig };
}

/** Verify a signed list under the (typed) account key; refuse rollbacks and equivocation. */
export function verifyList(
  signed: Uint8Array,
  accountKey: Uint8Array,
  user: string,
  previous: Uint8Array | null,
): DeviceList {
  const { list, body, sig } = parseList(signed);
  ed25519Verify(untype(ED25519_TYPE, accountKey), LABEL, body, sig, "device list");
  if (list.user !== user) throw new CryptoError(`device list names ${list.user}, not ${user}`);
  if (previous) {
    const prev = parseList(previous).list;
    if (list.version < prev.version) throw new DeviceListRollback(`${prev.version} > ${list.version}`);
    if (list.version === prev.version && !equal(previous, signed)) {
      throw new DeviceListRollback(`equivocation at version ${list.version}`);
    }
  }
  return list;
}

export function findDevice(list: DeviceList, id: number, identityKey?: Uint8Array): DeviceEntry | null {
  const d = list.devices.find((e) => e.id === id);
  if (!d) return null;
  if (identityKey && !equal(identityKey, d.identityKey)) return null;
  return d;
}
