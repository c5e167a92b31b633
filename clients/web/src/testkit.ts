// Test kit (not part of the app bundle; built to testkit/testkit.js): exposes the protocol
// core to the Chromium tests (tests/web/test_vectors.py), which feed it the pinned vectors of
// docs/ and compare what it computes. Inputs and outputs are hex strings.
import { sha256 } from "@noble/hashes/sha2.js";
import { Reader, Writer, concat, fromHex, hex, utf8, type Rng } from "./core/bytes";
import * as A from "./core/attachments";
import { type Content, type Operation, decodeContent, encodeContent, pad, unpad } from "./core/content";
import type { Conversation, Message } from "./core/engine";
import { MessageOps } from "./core/messageops";
import { parseList, signList, verifyList } from "./core/devicelist";
import { safetyNumber, displaySafetyNumber } from "./core/fingerprint";
import { type Bundle, accountPublic, decodeBundle, kemPublic, newKemPrekey, newSignedPrekey, typed, X25519_TYPE } from "./core/keys";
import { aesGcmDecrypt, aesGcmEncrypt, ed25519Public, mlkemDecapsulate, x25519Public } from "./core/primitives";
import * as SK from "./core/senderkeys";
import * as S from "./core/session";
import { Engine } from "./core/engine";
import { Store } from "./core/store";
import { MAX_OWED, OWED_TTL_MS, RECEIPT_CHUNK, type ReceiptKind, Receipts } from "./core/receipts";
import { type AppClients, type AppWindow, openApp, pushNotification } from "./notify";
import { Api, Offline } from "./core/api";
import { UploadConflict, type UploadTransport, encryptAndUpload } from "./core/upload";

/** protocol-crypto.md §1: SHA-256(seed || u64 i) blocks, consumed front to back. */
function deterministicRng(seed: Uint8Array): Rng {
  let buf: Uint8Array = new Uint8Array(0);
  let counter = 0n;
  return (n: number) => {
    while (buf.length < n) {
      buf = concat(buf, sha256(concat(seed, new Writer().u64(counter).done())));
      counter += 1n;
    }
    const out = buf.slice(0, n);
    buf = buf.slice(n);
    return out;
  };
}

async function ratchetKdf(rootKey: string, dh: string, nonceV2: string): Promise<Record<string, string>> {
  const [rk, ck] = await S.kdfRk(fromHex(rootKey), fromHex(dh));
  const [mk, next] = await S.chainStep(ck);
  const [key, nonce] = await S.messageKeysV1(mk);
  const keyV2 = await S.messageKeyV2(mk);
  return {
    next_root_key: hex(rk),
    chain_key: hex(ck),
    message_key_0: hex(mk),
    next_chain_key: hex(next),
    aes_key_0: hex(key),
    nonce_0: hex(nonce),
    ciphertext_0: hex(await aesGcmEncrypt(key, nonce, utf8("vox"), utf8("ad"))),
    aes_key_0_v2: hex(keyV2),
    ciphertext_0_v2: hex(await aesGcmEncrypt(keyV2, fromHex(nonceV2), utf8("vox"), utf8("ad"))),
  };
}

interface ConvVector {
  alice_seed: string;
  bob_seed: string;
  bundle: string;
  kem_ciphertext: string;
  kem_shared_secret: string;
  bob: { identity_private: string; signed_prekey: string; kem_prekey: string; one_time_prekey: string };
  messages: { from: string; plaintext: string; wire: string }[];
}

/**
 * Replay the pinned conversation from the seeds alone: Alice initiates from the bundle with
 * the pinned encapsulation, the two sides alternate, every wire is produced by this code.
 * Returns, per message, the wire we produced and the plaintext the other side decrypted.
 */
async function conversation(
  v: ConvVector,
  version: 1 | 2,
  tamperAt = -1,
): Promise<{ wires: string[]; plaintexts: string[]; consumed: (number | null)[]; decapsulated: string; tamperError: string }> {
  let tamperError = "";
  const aliceRng = deterministicRng(utf8(v.alice_seed));
  const bobRng = deterministicRng(utf8(v.bob_seed));
  const aliceAccount = aliceRng(32);
  const aliceIdentity = aliceRng(32);
  bobRng(192); // Bob's keys (given below as serialized private keys)
  const bundle = decodeBundle(fromHex(v.bundle));
  const alice: S.LocalDevice = { user: "alice", device: 1, accountKey: typed(2, ed25519Public(aliceAccount)), identityPriv: aliceIdentity };
  const spk = new Reader(fromHex(v.bob.signed_prekey));
  spk.raw(2);
  const spkId = spk.u32();
  const spkPriv = spk.raw(32);
  const kem = new Reader(fromHex(v.bob.kem_prekey));
  kem.raw(2);
  const kemId = kem.u32();
  const kemLr = kem.u8() === 1;
  const kemSeed = kem.raw(64);
  const otp = new Reader(fromHex(v.bob.one_time_prekey));
  otp.raw(2);
  const otpId = otp.u32();
  const otpPriv = otp.raw(32);
  const bob: S.LocalDevice = { user: "bob", device: 7, accountKey: bundle.accountKey, identityPriv: fromHex(v.bob.identity_private) };
  const lookup: S.PrekeyLookup = {
    signed: (i) => (i === spkId ? spkPriv : null),
    kem: (i) => (i === kemId ? { seed: kemSeed, lastResort: kemLr } : null),
    oneTime: (i) => (i === otpId ? otpPriv : null),
  };
  const decapsulated = hex(mlkemDecapsulate(fromHex(v.kem_ciphertext), kemSeed));
  let a = await S.initiate(alice, bundle, aliceRng, { cipherText: fromHex(v.kem_ciphertext), sharedSecret: fromHex(v.kem_shared_secret) });
  let b: S.SessionState | null = null;
  const wires: string[] = [];
  const plaintexts: string[] = [];
  let consumed: (number | null)[] = [];
  for (const m of v.messages) {
    const body = utf8(m.plaintext);
    if (m.from === "alice") {
      const out = await S.encrypt(a, body, aliceRng, version);
      a = out.state;
      wires.push(hex(out.data));
      if (!b) {
        const acc = await S.accept(bob, lookup, out.data);
        b = acc.session;
        consumed = [acc.consumedOneTime, acc.consumedKem];
        plaintexts.push(new TextDecoder().decode(acc.body));
      } else {
        const r = await S.decrypt(b, out.data);
        b = r.state;
        plaintexts.push(new TextDecoder().decode(r.body));
      }
    } else {
      const out = await S.encrypt(b as S.SessionState, body, bobRng, version);
      b = out.state;
      wires.push(hex(out.data));
      if (wires.length - 1 === tamperAt) {
        // A flipped bit in the ciphertext is refused and leaves Alice's session unchanged.
        const bad = out.data.slice();
        bad[bad.length - 20] = (bad[bad.length - 20] as number) ^ 1;
        try {
          await S.decrypt(a, bad);
          tamperError = "accepted";
        } catch (e) {
          tamperError = (e as Error).name;
        }
      }
      const r = await S.decrypt(a, out.data);
      a = r.state;
      plaintexts.push(new TextDecoder().decode(r.body));
    }
  }
  return { wires, plaintexts, consumed, decapsulated, tamperError };
}

function deviceList(seed: string, username: string, devices: { device_id: number; identity_key: string; auth_key: string }[]): Record<string, string | boolean> {
  const account = fromHex(seed);
  const entries = devices.map((d) => ({ id: d.device_id, identityKey: fromHex(d.identity_key), authKey: fromHex(d.auth_key) }));
  const v1 = signList({ user: username, version: 1, devices: entries.slice(0, 1) }, account);
  const v2 = signList({ user: username, version: 2, devices: entries }, account);
  const pub = typed(2, ed25519Public(account));
  let rollback = "accepted";
  try {
    verifyList(v1, pub, username, v2);
  } catch (e) {
    rollback = (e as Error).name;
  }
  const flipped = v2.slice();
  flipped[10] = (flipped[10] as number) ^ 1;
  let tampered = "accepted";
  try {
    verifyList(flipped, pub, username, null);
  } catch (e) {
    tampered = (e as Error).name;
  }
  return {
    account_public_key: hex(pub),
    v1_signed: hex(v1),
    v2_signed: hex(v2),
    v2_ids: parseList(v2).list.devices.map((d) => d.id).join(","),
    rollback,
    tampered,
  };
}

function safety(aKey: string, aUser: string, bKey: string, bUser: string): Record<string, string> {
  const n = safetyNumber(fromHex(aKey), aUser, fromHex(bKey), bUser);
  return { digits: n, display: displaySafetyNumber(n) };
}

async function senderKey(seed: string, groupId: string, plaintexts: string[], nonces: string[], v1Messages: string[], v2Messages: string[]): Promise<Record<string, unknown>> {
  const rng = deterministicRng(utf8(seed));
  let state = SK.createSenderKey(fromHex(groupId), "alice", 1, rng);
  const distribution = SK.encodeDistribution(state);
  const produced: string[] = [];
  for (let i = 0; i < plaintexts.length; i++) {
    const nonce = fromHex(nonces[i] as string);
    const out = await SK.senderKeyEncrypt(state, fromHex(plaintexts[i] as string), () => nonce);
    state = out.state;
    produced.push(hex(out.message));
  }
  const opened: Record<string, string[]> = { v1: [], v2: [] };
  for (const [name, list] of [["v1", v1Messages], ["v2", v2Messages]] as const) {
    let recv = SK.decodeDistribution(distribution);
    for (const m of list) {
      const r = await SK.senderKeyDecrypt(recv, SK.decodeGroupMessage(fromHex(m)));
      recv = r.state;
      opened[name]?.push(hex(r.plaintext));
    }
  }
  let replay = "accepted";
  try {
    let recv = SK.decodeDistribution(distribution);
    const m = SK.decodeGroupMessage(fromHex(v2Messages[0] as string));
    recv = (await SK.senderKeyDecrypt(recv, m)).state;
    await SK.senderKeyDecrypt(recv, m);
  } catch (e) {
    replay = (e as Error).name;
  }
  return { key_id: state.keyId, distribution: hex(distribution), messages_v2: produced, opened, replay };
}

async function attachment(file: string, key: string, chunkSize: number, padded: boolean, contentType: string, fileName: string, blobId: string): Promise<Record<string, string | number>> {
  const data = fromHex(file);
  const enc = await A.encryptFile(data, () => fromHex(key), { chunkSize, key: fromHex(key), pad: padded });
  const pointer = A.encodePointer({ key: enc.key, digest: enc.digest, size: data.length, padding: enc.padding, chunkSize, contentType, fileName, blobId });
  const back = await A.decryptBlob(enc.blob, A.decodePointer(pointer));
  return { blob: hex(enc.blob), digest: hex(enc.digest), pointer: hex(pointer), padding: enc.padding, roundtrip: hex(back) };
}

const paddedSizes = (sizes: string[]): string[] => sizes.map((s) => A.paddedSizeBig(BigInt(s)).toString());

function contentExample(): string {
  // protocol-client.md §2: a direct TEXT "hi", message id a99d…b436, sent at 5 ms.
  const c = encodeContent({ type: 1, id: fromHex("a99d8543039507ed6de4de7d15dcb436"), sentAt: 5, groupId: new Uint8Array(0), text: "hi" });
  const padded = pad(c);
  const back = decodeContent(unpad(padded));
  return `${hex(c)}|${padded.length}|${back.type === 1 ? back.text : ""}`;
}

interface ContentVector {
  type: string;
  group_id?: string;
  target?: string;
  text?: string;
  emoji?: string;
  seconds?: number;
  quote?: { id: string; author: string; excerpt: string };
  expire?: number;
  username?: string;
  account_key?: string;
  state?: number;
}

/**
 * docs/vectors/protocol-client-content.json: build each content from its fields (message id
 * 0011…eeff, sent at 1700000000000) and encode it; decode the pinned bytes back to fields.
 */
function contentVector(v: ContentVector, pinned: string): { encoded: string; decoded: ContentVector } {
  const head = { id: fromHex("00112233445566778899aabbccddeeff"), sentAt: 1700000000000, groupId: fromHex(v.group_id ?? "") };
  const target = fromHex(v.target ?? "");
  const quote = v.quote && { id: fromHex(v.quote.id), author: v.quote.author, excerpt: v.quote.excerpt };
  const body: Record<string, Content> = {
    text: { ...head, type: 1, text: v.text ?? "", ...(quote ? { quote } : {}), ...(v.expire ? { expire: v.expire } : {}) },
    edit: { ...head, type: 9, target, text: v.text ?? "" },
    delete: { ...head, type: 10, target },
    reaction: { ...head, type: 11, target, emoji: v.emoji ?? "" },
    timer: { ...head, type: 12, seconds: v.seconds ?? 0 },
    verified: { id: head.id, sentAt: head.sentAt, type: 13, username: v.username ?? "", accountKey: fromHex(v.account_key ?? ""), state: v.state === 2 ? 2 : 1 },
  };
  const c = decodeContent(fromHex(pinned));
  const names: Record<number, string> = { 1: "text", 9: "edit", 10: "delete", 11: "reaction", 12: "timer", 13: "verified" };
  const decoded: ContentVector = { type: names[c.type] ?? String(c.type), group_id: "groupId" in c ? hex(c.groupId) : "" };
  if (c.type === 13) {
    delete decoded.group_id;
    Object.assign(decoded, { username: c.username, account_key: hex(c.accountKey), state: c.state });
  }
  if (c.type === 1 || c.type === 9) decoded.text = c.text;
  if (c.type === 9 || c.type === 10 || c.type === 11) decoded.target = hex(c.target);
  if (c.type === 11) decoded.emoji = c.emoji;
  if (c.type === 12) decoded.seconds = c.seconds;
  if (c.type === 1 && c.quote) decoded.quote = { id: hex(c.quote.id), author: c.quote.author, excerpt: c.quote.excerpt };
  if (c.type === 1 && c.expire) decoded.expire = c.expire;
  return { encoded: hex(encodeContent(body[v.type] as Content)), decoded };
}

/** For each hex content: "type N" if it decodes, else the error's class name. */
function contentDecodes(hexes: string[]): string[] {
  return hexes.map((h) => {
    try {
      return `type ${decodeContent(fromHex(h)).type}`;
    } catch (e) {
      return (e as Error).name;
    }
  });
}

type OpsStep =
  | { kind: "message"; conv: string; from: string; id: string; text?: string; file?: boolean; sentAt?: number; expire?: number; now?: number }
  | { kind: "op"; conv: string; from: string; type: "edit" | "delete" | "reaction" | "timer"; id?: string; target?: string; text?: string; emoji?: string; seconds?: number; group?: string; now?: number }
  | { kind: "read"; conv: string; now: number }
  | { kind: "forget"; conv: string; id: string }
  | { kind: "sweep"; now: number };

/**
 * The receiving rules of messageops.ts over an in-memory host (no relay, injected clock):
 * plays ``steps`` as user "me" ("forget": delete for me) and returns every stored message, the
 * timers and the targets of the operations kept for a message not stored.
 */
async function opsScenario(steps: OpsStep[]): Promise<{ messages: Record<string, unknown>[]; timers: Record<string, number>; swept: number[]; kept: string[] }> {
  const messages = new Map<string, Message[]>();
  const conversations = new Map<string, Conversation>();
  let counter = 0;
  const store = { get: async () => undefined, commit: async () => undefined } as unknown as Store;
  const all = (): Message[] => [...messages.values()].flat();
  const ops = new MessageOps({
    store,
    messages,
    conversations,
    user: "me",
    device: 1,
    find: (id) => all().find((m) => m.id === id),
    add: (m) => {
      messages.set(m.conv, [...(messages.get(m.conv) ?? []), m]);
      conversations.set(m.conv, { name: m.conv, unread: 0, last: 0, ...conversations.get(m.conv) });
    },
    nextKey: (conv) => `msg:${conv}:${++counter}`,
    sendOperation: async (_conv, _id, _content, apply) => apply([]),
    cancelUnsent: () => null,
    changed: () => undefined,
    now: () => 0,
  });
  const swept: number[] = [];
  for (const s of steps) {
    if (s.kind === "message") {
      const sentAt = s.sentAt ?? 1000;
      const m: Message = { key: `msg:${s.conv}:${++counter}`, id: s.id, conv: s.conv, from: s.from, device: 1, text: s.file ? null : (s.text ?? ""), sentAt, state: s.from === "me" ? "sent" : "received", ...ops.incoming(s.expire ? { expire: s.expire } : {}, sentAt, s.from === "me") };
      if (s.file) m.file = { name: "f.bin", type: "application/octet-stream", size: 1, pointer: new Uint8Array(0) };
      messages.set(s.conv, [...(messages.get(s.conv) ?? []), m]);
      ops.onStored(m, [], s.now ?? sentAt);
    } else if (s.kind === "op") {
      const head = { id: s.id ? fromHex(s.id) : crypto.getRandomValues(new Uint8Array(16)), sentAt: s.now ?? 0, groupId: fromHex(s.group ?? "") };
      const target = fromHex(s.target ?? "00".repeat(16));
      const op: Operation =
        s.type === "edit" ? { ...head, type: 9, target, text: s.text ?? "" }
        : s.type === "delete" ? { ...head, type: 10, target }
        : s.type === "reaction" ? { ...head, type: 11, target, emoji: s.emoji ?? "" }
        : { ...head, type: 12, seconds: s.seconds ?? 0 };
      ops.apply(s.conv, { user: s.from, device: 1 }, op, [], s.now ?? 0);
    } else if (s.kind === "read") {
      for (const m of messages.get(s.conv) ?? []) if (m.state === "received" && !m.notice) ops.read(m, s.now);
    } else if (s.kind === "forget") await ops.deleteForMe(s.conv, s.id);
    else swept.push(await ops.sweep(s.now));
  }
  const timers: Record<string, number> = {};
  for (const [k, c] of conversations) if (c.timer !== undefined) timers[k] = c.timer;
  const out = all().map((m) => ({ id: m.id, conv: m.conv, from: m.from, text: m.text, file: !!m.file, edits: m.edits ?? [], deleted: !!m.deleted, reactions: m.reactions ?? {}, expireAt: m.expireAt ?? null, event: m.event ?? null }));
  const kept = (ops as unknown as { pending: { target: string }[] }).pending.map((p) => p.target);
  return { messages: out, timers, swept, kept };
}

/** A fresh responder (keys + bundle) and initiator, with real randomness. */
function freshPair(): { alice: S.LocalDevice; bob: S.LocalDevice; bundle: Bundle; lookup: S.PrekeyLookup } {
  const rnd = (n: number): Uint8Array => crypto.getRandomValues(new Uint8Array(n));
  const aliceSeed = rnd(32);
  const bobSeed = rnd(32);
  const alice: S.LocalDevice = { user: "alice", device: 1, accountKey: accountPublic(aliceSeed), identityPriv: rnd(32) };
  const bob: S.LocalDevice = { user: "bob", device: 1, accountKey: accountPublic(bobSeed), identityPriv: rnd(32) };
  const idPub = x25519Public(bob.identityPriv);
  const spk = newSignedPrekey(bobSeed, idPub, 1, rnd);
  const kem = newKemPrekey(bobSeed, idPub, 2, false, rnd);
  const otp = rnd(32);
  const bundle: Bundle = {
    user: "bob",
    device: 1,
    accountKey: bob.accountKey,
    identityKey: typed(X25519_TYPE, idPub),
    signedPrekey: { id: 1, key: typed(X25519_TYPE, x25519Public(spk.priv)), sig: spk.sig },
    kemPrekey: { id: 2, lastResort: false, key: typed(3, kemPublic(kem)), sig: kem.sig },
    oneTime: { id: 3, key: typed(X25519_TYPE, x25519Public(otp)) },
  };
  const lookup: S.PrekeyLookup = {
    signed: (i) => (i === 1 ? spk.priv : null),
    kem: (i) => (i === 2 ? { seed: kem.seed, lastResort: false } : null),
    oneTime: (i) => (i === 3 ? otp : null),
  };
  return { alice, bob, bundle, lookup };
}

async function timeIt(n: number, fn: () => Promise<void>): Promise<number> {
  await fn(); // warm-up
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await fn();
  return ((performance.now() - t0) / n) * 1000; // µs per operation
}

/** bench/web.py: per-operation times in µs, measured in this page. */
async function benchmark(n: number, size: number): Promise<Record<string, number>> {
  const rnd = (k: number): Uint8Array => crypto.getRandomValues(new Uint8Array(k));
  const body = rnd(size);
  const setup = await timeIt(Math.max(3, Math.floor(n / 20)), async () => {
    const { alice, bob, bundle, lookup } = freshPair();
    const a = await S.initiate(alice, bundle, rnd);
    const first = await S.encrypt(a, body, rnd);
    await S.accept(bob, lookup, first.data);
  });
  const { alice, bob, bundle, lookup } = freshPair();
  let a = (await S.initiate(alice, bundle, rnd));
  const first = await S.encrypt(a, body, rnd);
  a = first.state;
  let b = (await S.accept(bob, lookup, first.data)).session;
  const reply = await S.encrypt(b, body, rnd);
  b = reply.state;
  a = (await S.decrypt(a, reply.data)).state;
  // Symmetric chain step: alice sends, bob decrypts, same chain.
  const symmetric = await timeIt(n, async () => {
    const out = await S.encrypt(a, body, rnd);
    a = out.state;
    b = (await S.decrypt(b, out.data)).state;
  });
  // DH ratchet step every message: the sides alternate.
  let turn = 0;
  const dhStep = await timeIt(n, async () => {
    if (turn++ % 2 === 0) {
      const out = await S.encrypt(b, body, rnd);
      b = out.state;
      a = (await S.decrypt(a, out.data)).state;
    } else {
      const out = await S.encrypt(a, body, rnd);
      a = out.state;
      b = (await S.decrypt(b, out.data)).state;
    }
  });
  const key = rnd(32);
  const ad = rnd(64);
  const aes = await timeIt(n, async () => {
    const nonce = rnd(12);
    const ct = await aesGcmEncrypt(key, nonce, body, ad);
    await aesGcmDecrypt(key, nonce, ct, ad);
  });
  const cryptoKey = await crypto.subtle.importKey("raw", key as Uint8Array<ArrayBuffer>, "AES-GCM", false, ["encrypt", "decrypt"]);
  const aesReused = await timeIt(n, async () => {
    const nonce = rnd(12);
    const ct = await aesGcmEncrypt(cryptoKey, nonce, body, ad);
    await aesGcmDecrypt(cryptoKey, nonce, ct, ad);
  });
  return {
    pqxdh_setup_us: setup,
    ratchet_message_symmetric_us: symmetric,
    ratchet_message_dh_step_us: dhStep,
    aes_gcm_us: aes,
    aes_gcm_reused_key_us: aesReused,
  };
}


// --- skipped-key bounds (protocol-crypto.md §6.6) ------------------------------------------

/** A fresh session pair that has exchanged one message each way (both have chains). */
async function warmPair(): Promise<{ a: S.SessionState; b: S.SessionState }> {
  const rnd = (k: number): Uint8Array => crypto.getRandomValues(new Uint8Array(k));
  const { alice, bob, bundle, lookup } = freshPair();
  let a = await S.initiate(alice, bundle, rnd);
  const first = await S.encrypt(a, utf8("hello"), rnd);
  a = first.state;
  let b = (await S.accept(bob, lookup, first.data)).session;
  const reply = await S.encrypt(b, utf8("hi"), rnd);
  b = reply.state;
  a = (await S.decrypt(a, reply.data)).state;
  return { a, b };
}

const errorName = async (p: Promise<unknown>): Promise<string> => {
  try {
    await p;
    return "accepted";
  } catch (e) {
    return (e as Error).name;
  }
};

/**
 * Out-of-order messages under a clock (seconds): Alice sends m0, m1, m2; Bob receives m2 at
 * ``t0`` (m0 and m1 become skipped keys), m1 at ``t1``, m0 at ``t2``. Returns what each late
 * message gave and the skipped count after each step, and what ``expireSkipped`` leaves.
 */
async function skippedExpiry(t0: number, t1: number, t2: number): Promise<Record<string, unknown>> {
  const rnd = (k: number): Uint8Array => crypto.getRandomValues(new Uint8Array(k));
  let { a, b } = await warmPair();
  const wires: Uint8Array[] = [];
  for (const text of ["m0", "m1", "m2"]) {
    const out = await S.encrypt(a, utf8(text), rnd);
    a = out.state;
    wires.push(out.data);
  }
  const r2 = await S.decrypt(b, wires[2] as Uint8Array, t0);
  b = r2.state;
  const afterM2 = b.skipped.length;
  let m1 = "";
  try {
    const r1 = await S.decrypt(b, wires[1] as Uint8Array, t1);
    b = r1.state;
    m1 = new TextDecoder().decode(r1.body);
  } catch (e) {
    m1 = (e as Error).name;
  }
  const afterM1 = b.skipped.length;
  const before = b;
  const m0 = await errorName(S.decrypt(b, wires[0] as Uint8Array, t2));
  const sweep = S.expireSkipped(before, t2);
  return { afterM2, m1, afterM1, m0, stateUnchanged: before.skipped.length, swept: sweep.expired, afterSweep: sweep.state.skipped.length };
}

/**
 * The bound of one DH step counts both chains together (max_skip = 1000): Bob has read
 * nothing of Alice's current chain past message 0 when ``oldGap`` more messages were sent on
 * it; then Alice's next chain's message ``newIndex`` arrives. Returns the outcome.
 */
async function combinedSkipBound(oldGap: number, newIndex: number): Promise<string> {
  const rnd = (k: number): Uint8Array => crypto.getRandomValues(new Uint8Array(k));
  let { a, b } = await warmPair();
  // Alice's current chain: one message Bob reads, then oldGap he never sees.
  let out = await S.encrypt(a, utf8("read"), rnd);
  a = out.state;
  b = (await S.decrypt(b, out.data)).state;
  for (let i = 0; i < oldGap; i++) a = (await S.encrypt(a, utf8("lost"), rnd)).state;
  // Bob answers; Alice steps; her new chain's message newIndex reaches Bob.
  out = await S.encrypt(b, utf8("answer"), rnd);
  b = out.state;
  a = (await S.decrypt(a, out.data)).state;
  let data: Uint8Array = new Uint8Array(0);
  for (let i = 0; i <= newIndex; i++) {
    out = await S.encrypt(a, utf8(`new ${i}`), rnd);
    a = out.state;
    data = out.data;
  }
  return errorName(S.decrypt(b, data));
}

/** Sender-key skipped keys expire like the ratchet's: iteration 0 skipped at t0, read at t1. */
async function senderKeyExpiry(t0: number, t1: number): Promise<Record<string, unknown>> {
  const rnd = (k: number): Uint8Array => crypto.getRandomValues(new Uint8Array(k));
  let send = SK.createSenderKey(rnd(16), "alice", 1, rnd);
  let recv = SK.decodeDistribution(SK.encodeDistribution(send));
  const msgs: Uint8Array[] = [];
  for (let i = 0; i < 2; i++) {
    const out = await SK.senderKeyEncrypt(send, utf8(`g${i}`), rnd);
    send = out.state;
    msgs.push(out.message);
  }
  recv = (await SK.senderKeyDecrypt(recv, SK.decodeGroupMessage(msgs[1] as Uint8Array), t0)).state;
  const skipped = recv.skipped.length;
  const late = await errorName(SK.senderKeyDecrypt(recv, SK.decodeGroupMessage(msgs[0] as Uint8Array), t1));
  return { skipped, late, afterSweep: SK.expireSenderKey(recv, t1).skipped.length };
}


// --- attachments streamed (protocol-crypto-devices-groups-attachments §4.2) ----------------

/** A `Blob` that records every slice read from it. */
class SpyBlob extends Blob {
  reads: number[] = [];
  whole = 0;
  override slice(start?: number, end?: number, type?: string): Blob {
    this.reads.push((end ?? this.size) - (start ?? 0));
    return super.slice(start, end, type);
  }
  override arrayBuffer(): Promise<ArrayBuffer> {
    this.whole += 1;
    return super.arrayBuffer();
  }
}

async function attachmentStreaming(size: number): Promise<Record<string, unknown>> {
  const rnd = (k: number): Uint8Array => crypto.getRandomValues(new Uint8Array(k));
  const data = new Uint8Array(size);
  for (let o = 0; o < size; o += 65536) data.set(rnd(Math.min(65536, size - o)), o);
  const key = rnd(32);
  const spy = new SpyBlob([data as Uint8Array<ArrayBuffer>]);
  const streamed = await A.encryptBlob(spy, rnd, { key });
  const whole = await A.encryptFile(data, rnd, { key });
  const streamedBytes = new Uint8Array(await streamed.blob.arrayBuffer());
  const pointer = { key, digest: whole.digest, size, padding: whole.padding, chunkSize: A.CHUNK, contentType: "x/y", fileName: "f", blobId: "b" };
  // Fed in network-sized pieces: plaintext comes out before the end.
  const d = new A.BlobDecryptor(pointer);
  let released = 0;
  let releasedBeforeFinish = 0;
  for (let o = 0; o < whole.blob.length; o += 16384) {
    for (const part of await d.feed(whole.blob.subarray(o, o + 16384))) released += part.length;
  }
  releasedBeforeFinish = released;
  for (const part of await d.finish()) released += part.length;
  // One byte more than the pointer allows is refused at once (not at the end).
  const extra = new A.BlobDecryptor(pointer);
  const extraError = await errorName(extra.feed(concat(whole.blob, Uint8Array.of(0))));
  // A wrong digest: chunks open, but finish() refuses — nothing may be published.
  const wrong = new A.BlobDecryptor({ ...pointer, digest: new Uint8Array(32) });
  const wrongReleased = (await wrong.feed(whole.blob)).reduce((n, p) => n + p.length, 0);
  const wrongFinish = await errorName(wrong.finish());
  // Truncated at a chunk boundary: the new last chunk was sealed as not final.
  const cut = new A.BlobDecryptor(pointer);
  const cutError = await errorName((async () => {
    await cut.feed(whole.blob.subarray(0, 5 + 2 * (A.CHUNK + 16)));
    await cut.finish();
  })());
  return {
    sameBlob: hex(streamedBytes) === hex(whole.blob),
    sameDigest: hex(streamed.digest) === hex(whole.digest),
    maxRead: Math.max(...spy.reads),
    reads: spy.reads.length,
    wholeReads: spy.whole,
    released,
    releasedBeforeFinish,
    extraError,
    wrongReleased,
    wrongFinish,
    cutError,
  };
}

// --- the engine against a real relay, with an injected clock (tests/web/test_web_maint*) ----

let kitEngine: Engine | null = null;
let kitClock = Date.now();
const kitPeers = new Map<string, Engine>();
/** Every frame the primary engine received (the replay test re-feeds one). */
const kitFrames: Record<string, unknown>[] = [];
const engine = (): Engine => {
  if (!kitEngine) throw new Error("no engine: call engineRegister first");
  return kitEngine;
};

async function registered(user: string, db: string | undefined, clockMs: number): Promise<Engine> {
  kitClock = clockMs;
  const store = await Store.open(undefined, db);
  const e = new Engine(store);
  e.clock = () => kitClock;
  await e.register(user, null);
  const hooks = e as unknown as { onFrame(f: Record<string, unknown>): void };
  const onFrame = hooks.onFrame.bind(e);
  hooks.onFrame = (f) => {
    if (e === kitEngine) kitFrames.push(f);
    onFrame(f);
  };
  e.start();
  for (let i = 0; i < 600 && e.status !== "online"; i++) await new Promise((r) => setTimeout(r, 100));
  if (e.status !== "online") throw new Error(`engine is ${e.status}`);
  return e;
}

/** Register ``user`` on this page's relay with a fresh store, connect, wait until online. */
async function engineRegister(user: string, clockMs: number): Promise<void> {
  kitEngine = await registered(user, undefined, clockMs);
}

/**
 * protocol-client §5 "Replayed initial messages": ``alice`` (a second device in this page,
 * its own database) claims one bundle of the primary engine's user — on a relay that allows
 * one claim per requester and hour, her next bundle has no one-time keys — then sends
 * ``text``: an initial message on the signed prekey and the last-resort ML-KEM key. The
 * receiver's session with her is then dropped (as eviction would) and the same initial
 * message is delivered again under a new envelope id. Returns the receiver's entries for
 * alice (texts and "could not decrypt" notices).
 */
async function lastResortReplay(alice: string, text: string): Promise<string[]> {
  const bob = engine();
  const a = await registered(alice, `vox-kit-${alice}`, kitClock);
  kitPeers.set(alice, a);
  const claimed = await a.api.bundles(bob.user, 1);
  if (!claimed.bundles[0]?.oneTime) throw new Error("the first claim should carry a one-time key");
  await a.sendText(bob.user, text);
  const texts = (): string[] => (bob.messages.get(alice) ?? []).map((m) => m.text ?? m.notice ?? "");
  for (let i = 0; i < 600 && !texts().includes(text); i++) await new Promise((r) => setTimeout(r, 100));
  const frame = kitFrames.find((f) => f["type"] === "deliver" && (f["from"] as { user: string }).user === alice);
  if (!frame) throw new Error("no delivery from alice captured");
  const inner = bob as unknown as {
    sessions: Map<string, unknown>;
    recvLock: { run(fn: () => Promise<void>): Promise<void> };
    onFrame(f: Record<string, unknown>): void;
  };
  // Under the receive lock: the delivery that showed the text may still be committing.
  await inner.recvLock.run(async () => {
    if (!inner.sessions.delete(`session:${alice}:1`)) throw new Error("no session with alice to drop");
    await bob.store.commit([[`session:${alice}:1`, undefined]]);
  });
  const before = texts().length;
  inner.onFrame({ ...frame, envelope: `${String(frame["envelope"])}-replayed`, seq: undefined });
  for (let i = 0; i < 300 && texts().length === before; i++) await new Promise((r) => setTimeout(r, 100));
  return texts();
}

const until = async (ok: () => boolean, what: string): Promise<void> => {
  for (let i = 0; i < 600 && !ok(); i++) await new Promise((r) => setTimeout(r, 100));
  if (!ok()) throw new Error(`timed out waiting for ${what}`);
};

/** The primary engine stopped and made again from its store (a reload of the page), online. */
async function reloaded(): Promise<Engine> {
  const old = engine();
  old.stop();
  const again = new Engine(old.store);
  again.clock = () => kitClock;
  if (!(await again.load())) throw new Error("no identity after the reload");
  again.start();
  await until(() => again.status === "online", "the reloaded engine online");
  kitEngine = again;
  return again;
}

/**
 * Disappearing-timer changes that arrive again: ``alice`` (a second device in this page) sets
 * the timer of her chat with the primary engine's user to 1 hour, 10 minutes, then 1 minute.
 * With ``forget`` the receiver deletes the first change's row for itself and is reloaded
 * (the tombstone must come from the store). Alice then sends the first two changes again
 * (same message ids, under new client ids: a resend or a history transcript) and ``marker``.
 * Returns the ids of the three changes, the receiver's timer rows (ids) and its timer once
 * the marker is there.
 */
async function timerRepeated(alice: string, forget: boolean, marker: string): Promise<{ sent: string[]; rows: string[]; timer: number }> {
  let bob = engine();
  const a = kitPeers.get(alice) ?? (await registered(alice, `vox-kit-${alice}`, kitClock));
  kitPeers.set(alice, a);
  const rows = (e: Engine, conv: string): Message[] => (e.messages.get(conv) ?? []).filter((m) => m.event === "timer");
  const changes: { id: string; seconds: number; sentAt: number }[] = [];
  for (const seconds of [3600, 600, 60]) {
    await a.ops.setTimer(bob.user, seconds);
    const row = rows(a, bob.user).at(-1);
    if (!row) throw new Error("alice has no row of her timer change");
    changes.push({ id: row.id, seconds, sentAt: row.sentAt });
  }
  await until(() => rows(bob, alice).length === 3 && bob.ops.timer(alice) === 60, "the three changes");
  if (forget) {
    await bob.ops.deleteForMe(alice, (changes[0] as { id: string }).id);
    bob = await reloaded();
  }
  const resend = a as unknown as { sendContent(to: string, id: string, c: Uint8Array, o: { transcript: boolean }): Promise<string> };
  for (const c of changes.slice(0, 2)) {
    const content = encodeContent({ type: 12, id: fromHex(c.id), sentAt: c.sentAt, groupId: new Uint8Array(0), seconds: c.seconds });
    const r = await resend.sendContent(bob.user, `again-${c.id}`, content, { transcript: true });
    if (r !== "accepted") throw new Error(`the repeat was not accepted (${r})`);
  }
  await a.sendText(bob.user, marker);
  const receiver = bob;
  await until(() => (receiver.messages.get(alice) ?? []).some((m) => m.text === marker), "the marker");
  return { sent: changes.map((c) => c.id), rows: rows(receiver, alice).map((m) => m.id), timer: receiver.ops.timer(alice) };
}

/**
 * The primary engine's replay ids (``seen:pqxdh:…``): with ``rename``, each is first renamed to
 * the old name (``pqxdh:<hex>``, written before the signed prekey id was part of it), keeping
 * when it was written; with ``add`` ([hex, when]), one more of the old name is written. Returns
 * the replay ids held, each with when it was written.
 */
async function engineGuards(rename: boolean, add: [string, number] | null): Promise<[string, number][]> {
  const inner = engine() as unknown as { seen: Map<string, number>; store: Store; recvLock: { run(fn: () => Promise<void>): Promise<void> } };
  await inner.recvLock.run(async () => {
    const changes: [string, unknown][] = [];
    const renamed: [string, string, number][] = [];
    for (const [k, at] of inner.seen) {
      const named = /^pqxdh:\d+:([0-9a-f]+)$/.exec(k);
      if (rename && named) renamed.push([k, `pqxdh:${named[1] as string}`, at]);
    }
    for (const [from, to, at] of renamed) changes.push([`seen:${from}`, undefined], [`seen:${to}`, at]);
    if (add) changes.push([`seen:pqxdh:${add[0]}`, add[1]]);
    await inner.store.commit(changes);
    for (const [from, to, at] of renamed) {
      inner.seen.delete(from);
      inner.seen.set(to, at);
    }
    if (add) inner.seen.set(`pqxdh:${add[0]}`, add[1]);
  });
  return [...inner.seen].filter(([k]) => k.startsWith("pqxdh:"));
}

/**
 * "Delete for me" against a copy that comes again: ``alice`` (a second device in this page)
 * sends ``text``; the primary engine deletes it for itself and is reloaded (a new Engine on
 * the same store); alice then sends the same content (same message id) again under a new
 * client id — a new envelope, freshly encrypted, as a resend or a history transcript
 * arrives — and then ``marker``. Returns the receiver's entries for alice once the marker
 * is there.
 */
async function deleteForMeRedelivered(alice: string, text: string, marker: string): Promise<string[]> {
  const bob = engine();
  const a = kitPeers.get(alice) ?? (await registered(alice, `vox-kit-${alice}`, kitClock));
  kitPeers.set(alice, a);
  const id = await a.sendText(bob.user, text);
  const texts = (e: Engine): string[] => (e.messages.get(alice) ?? []).map((m) => m.text ?? m.notice ?? "");
  await until(() => texts(bob).includes(text), "the first copy");
  await bob.ops.deleteForMe(alice, id);
  const again = await reloaded(); // the tombstone must come from the store
  const sent = (a.messages.get(bob.user) ?? []).find((m) => m.id === id);
  if (!sent || sent.text === null) throw new Error("alice has no copy of her message");
  const content = encodeContent({ type: 1, id: fromHex(id), sentAt: sent.sentAt, groupId: new Uint8Array(0), text: sent.text });
  const resend = a as unknown as { sendContent(to: string, id: string, c: Uint8Array, o: { transcript: boolean }): Promise<string> };
  const r = await resend.sendContent(bob.user, `again-${id}`, content, { transcript: true });
  if (r !== "accepted") throw new Error(`the second copy was not accepted (${r})`);
  await a.sendText(bob.user, marker);
  await until(() => texts(again).includes(marker), "the marker");
  return texts(again);
}

/**
 * The service worker's push and notificationclick handlers (src/notify.ts) against stand-in
 * window clients: which notification a push shows, which window a click focuses or whether
 * it opens one.
 */
async function swHandlers(origin: string, windows: { url: string; focused: boolean; visibilityState: DocumentVisibilityState }[]): Promise<Record<string, unknown>> {
  const calls: string[] = [];
  const clients: AppClients = {
    matchAll: async () => windows.map((w): AppWindow => ({ ...w, focus: async () => void calls.push(`focus ${w.url}`) })),
    openWindow: async (url) => void calls.push(`open ${url}`),
  };
  const note = await pushNotification(clients, origin, "AcmeChat", "data:,");
  const click = await openApp(clients, origin);
  return { note, click, calls };
}

/**
 * encryptAndUpload (src/core/upload.ts) against a stand-in relay that keeps the bytes and
 * misbehaves on cue, by PATCH call number: "offline" (lost before the relay), "lost" (stored,
 * its answer lost), "conflict:<offset>" (a 409 naming that offset). Returns whether the relay
 * ends up with exactly encryptBlob's blob (same key), every PATCH as [offset, length], the
 * largest body, and the error if the upload gave up.
 */
async function uploadScenario(size: number, chunkBytes: number, script: Record<string, string>): Promise<Record<string, unknown>> {
  const file = new Blob([Uint8Array.from({ length: size }, (_, i) => (i * 31 + (i >> 8)) & 255)]);
  const key = new Uint8Array(32).fill(7);
  const rng = (): Uint8Array => key;
  let stored: Uint8Array = new Uint8Array(0);
  const calls: [number, number][] = [];
  const relay: UploadTransport = {
    create: async () => ({ id: "upload", chunkBytes }),
    offset: async () => stored.length,
    finish: async () => "attachment",
    cancel: async () => void calls.push([-1, 0]),
    whole: async () => {
      throw new Error("the one-shot upload was used");
    },
    append: async (_id, offset, body) => {
      const what = script[String(calls.length)] ?? "";
      calls.push([offset, body.length]);
      if (what === "offline") throw new Offline("connection lost");
      if (what.startsWith("conflict:")) throw new UploadConflict(Number(what.slice(9)));
      if (offset < stored.length && offset + body.length <= stored.length) return stored.length;
      if (offset !== stored.length) throw new UploadConflict(stored.length);
      stored = concat(stored, body);
      if (what === "lost") throw new Offline("answer lost");
      return stored.length;
    },
  };
  let error = "";
  try {
    await encryptAndUpload(file, rng, relay, () => undefined);
  } catch (e) {
    error = `${(e as Error).name}: ${(e as Error).message}`;
  }
  const whole = new Uint8Array(await (await A.encryptBlob(file, rng)).blob.arrayBuffer());
  return { same: stored.length === whole.length && stored.every((b, i) => b === whole[i]), calls, maxBody: Math.max(...calls.map((c) => c[1])), error };
}

/**
 * One authenticated REST call (``Api.call``: DELETE ``path``) with a ``timeoutMs`` deadline,
 * raced against ``guardMs``: "<name>: <message>" when it rejects, "answered" when it resolves,
 * "hung" when the guard runs out first.
 */
async function apiDeadline(path: string, timeoutMs: number, guardMs: number): Promise<string> {
  const api = new Api("");
  api.token = "token";
  api.timeoutMs = timeoutMs;
  const call = api.call("DELETE", path).then(
    () => "answered",
    (e: unknown) => `${(e as Error).name}: ${(e as Error).message}`,
  );
  const guard = new Promise<string>((resolve) => setTimeout(() => resolve("hung"), guardMs));
  return Promise.race([call, guard]);
}

/**
 * A passphrase change with a commit and a read started while it runs (tests/web/test_web_passphrase.py):
 * what each saw, and what a store reopened with the new passphrase (and the old one) reads.
 */
async function storeRekeyRace(db: string): Promise<Record<string, unknown>> {
  const store = await Store.open("old words", db);
  const before: [string, unknown][] = Array.from({ length: 50 }, (_, i) => [`r:${String(i).padStart(3, "0")}`, { i }]);
  await store.commit(before);
  // The commit and the read start the moment the change reads the records to re-seal them.
  const getAll = IDBObjectStore.prototype.getAll;
  const hooked: { during?: [Promise<void>, Promise<{ i: number } | undefined>] } = {};
  IDBObjectStore.prototype.getAll = function (this: IDBObjectStore, ...args: Parameters<IDBObjectStore["getAll"]>) {
    const request = getAll.apply(this, args);
    if (!hooked.during && args.length === 0) hooked.during = [store.commit([["r:late", { i: -1 }]]), store.get<{ i: number }>("r:007")];
    return request;
  };
  try {
    await store.changePassphrase("old words", "new words");
  } finally {
    IDBObjectStore.prototype.getAll = getAll;
  }
  if (!hooked.during) throw new Error("the change read no records");
  const [late, read] = hooked.during;
  await late;
  const readDuring = (await read)?.i ?? null;
  const mode = store.mode;
  store.close();
  const reopened = await Store.open("new words", db);
  const records = (await reopened.list<{ i: number }>("r:")).map(([, v]) => v.i);
  reopened.close();
  const old = await Store.open("old words", db).then(
    (s) => (s.close(), "opened"),
    (e: Error) => `${e.name}: ${e.message}`,
  );
  return { readDuring, mode, records, old };
}

/**
 * Owed receipts (``core/receipts.ts``) against a stand-in store and relay
 * (tests/web/test_web_receipts_owed.py): what was stored and sent at each step.
 */
async function receiptsScenario(): Promise<Record<string, unknown>> {
  const stored = new Map<string, unknown>();
  const sends: [string, ReceiptKind, string[]][] = [];
  let now = 1_800_000_000_000;
  let answer: (ids: string[]) => Promise<boolean> = async () => false;
  const apply = (changes: [string, unknown][]): void => {
    for (const [k, v] of changes) {
      if (v === undefined) stored.delete(k);
      else stored.set(k, v);
    }
  };
  const r = new Receipts({
    send: (to, kind, ids) => {
      sends.push([to, kind, ids]);
      return answer(ids);
    },
    commit: async (changes) => apply(changes),
    now: () => now,
  });
  const id = (i: number): string => i.toString(16).padStart(32, "0");
  const settled = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 0));
  const owe = async (to: string, kind: ReceiptKind, ids: string[]): Promise<void> => {
    const changes: [string, unknown][] = [];
    const after = r.owe(to, kind, ids, changes);
    apply(changes); // the caller's commit
    after();
    await settled();
  };
  const out: Record<string, unknown> = { max: MAX_OWED, chunk: RECEIPT_CHUNK, ttl: OWED_TTL_MS };

  // Owed while the relay refuses: kept; beyond MAX_OWED per recipient and kind the oldest go.
  await owe("bob", 1, Array.from({ length: MAX_OWED + 1 }, (_, i) => id(i)));
  now += 1000;
  await owe("bob", 1, [id(MAX_OWED + 1), id(MAX_OWED + 2)]);
  await owe("carol", 2, [id(1)]);
  out["capped"] = { stored: stored.size, oldest: [id(0), id(1), id(2), id(3)].map((i) => stored.has(`receipt-owed:1:${i}`)), carol: stored.has(`receipt-owed:2:${id(1)}`) };
  out["firstSends"] = sends.map(([to, kind, ids]) => [to, kind, ids.length]);
  sends.length = 0;

  // A week later: what was owed at the start is given up, the rest goes (in chunks), and once
  // the relay took it nothing is owed.
  now += OWED_TTL_MS - 500;
  answer = async () => true;
  r.resume();
  for (let i = 0; i < 40; i++) await settled();
  out["resumed"] = { sends: sends.map(([to, kind, ids]) => [to, kind, ids]), stored: [...stored.keys()], size: r.size };
  sends.length = 0;

  // Coalesced: ids owed while a receipt is on its way go together in the next one.
  const held: ((ok: boolean) => void)[] = [];
  answer = () => new Promise<boolean>((resolve) => held.push(resolve));
  await owe("dave", 1, [id(10)]);
  await owe("dave", 1, [id(11)]);
  await owe("dave", 1, [id(12)]);
  held.shift()?.(true);
  for (let i = 0; i < 5; i++) await settled();
  held.shift()?.(true);
  for (let i = 0; i < 5; i++) await settled();
  out["coalesced"] = { sends: sends.map(([, , ids]) => ids), stored: stored.size };
  sends.length = 0;

  // Lost with a connection replaced meanwhile: sent again at once on the new one.
  await owe("erin", 2, [id(20)]);
  r.resume(); // the new connection counts it on its way
  held.shift()?.(false); // the old connection's answer: lost
  for (let i = 0; i < 5; i++) await settled();
  held.shift()?.(true);
  for (let i = 0; i < 5; i++) await settled();
  out["replaced"] = { sends: sends.map(([to, kind, ids]) => [to, kind, ids]), stored: stored.size };
  sends.length = 0;

  // Refused on the current connection: still owed (stored), not tried again until the next.
  await owe("frank", 1, [id(30)]);
  held.shift()?.(false);
  for (let i = 0; i < 5; i++) await settled();
  out["refused"] = { sends: sends.length, stored: [...stored.keys()] };
  return out;
}

const engineKit = {
  storeRekeyRace,
  engineRegister,
  lastResortReplay,
  deleteForMeRedelivered,
  timerRepeated,
  engineGuards,
  receiptsScenario,
  setClock: (ms: number) => void (kitClock = ms),
  engineMaintain: () => engine().maintain(),
  engineInspect: () => engine().inspect(),
  engineTexts: (conv: string) => (engine().messages.get(conv) ?? []).map((m) => m.text ?? m.notice ?? ""),
  /** The signed and last-resort key ids the relay serves for ``user`` device 1. */
  engineServed: async (user: string) => {
    const r = await engine().api.call<{ devices: { signed_prekey: { key_id: number }; last_resort_prekey: { key_id: number } }[] }>("GET", `/v1/prekeys/${user}?device_id=1`);
    const d = r.devices[0];
    return { signed: d?.signed_prekey.key_id, lastResort: d?.last_resort_prekey.key_id };
  },
  engineCount: () => engine().api.call("GET", "/v1/prekeys/count"),
};

(globalThis as unknown as { voxTestkit: unknown }).voxTestkit = {
  ...engineKit,
  attachmentStreaming,
  uploadScenario,
  apiDeadline,
  swHandlers,
  skippedExpiry,
  combinedSkipBound,
  senderKeyExpiry,
  benchmark,
  ratchetKdf,
  conversation,
  deviceList,
  safety,
  senderKey,
  attachment,
  paddedSizes,
  contentExample,
  contentVector,
  contentDecodes,
  opsScenario,
  x25519Public: (k: string) => hex(typed(X25519_TYPE, x25519Public(fromHex(k)))),
};
