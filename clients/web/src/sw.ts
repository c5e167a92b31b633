// The service worker: (1) keeps the app shell (index, script, style, icon) and the last
// /v1/config in the Cache API so the app opens without the relay (it then shows "offline"
// and keeps sends queued in IndexedDB); (2) shows a content-free "New message" notification
// for a Web Push (the relay's pushes carry no content and no sender; src/notify.ts), fetching
// nothing, and focuses or opens the app on click. Only same-origin GETs of those few paths are
// ever answered from the cache, and only when the network fails: online, the relay's answer is
// always used.
import { openApp, pushNotification } from "./notify";

const sw = globalThis as unknown as ServiceWorkerGlobalScope;

/** SHA-256 (first 16 hex digits) of the shell files, set by build.mjs at build time. */
declare const __SHELL_VERSION__: string;
/** static/icon.svg as a data: URL (build.mjs): the push notification's icon needs no fetch. */
declare const __ICON__: string;
const SHELL_CACHE = `vox-shell-${__SHELL_VERSION__}`;
const SHELL = ["/", "/app.js", "/app.css", "/icon.svg"];
const CONFIG = "/v1/config";
const CONFIG_CACHE = "vox-config";

sw.addEventListener("install", (event: ExtendableEvent) => {
  // A new bundle (another hash) installs its own cache; `cache: "reload"` bypasses the HTTP cache.
  event.waitUntil(
    (async () => {
      const cache = await caches.open(SHELL_CACHE);
      await cache.addAll(SHELL.map((path) => new Request(path, { cache: "reload" })));
      // The page that registered us read /v1/config before we controlled it: keep a copy now.
      await (await caches.open(CONFIG_CACHE)).add(new Request(CONFIG, { cache: "reload" })).catch(() => undefined);
      await sw.skipWaiting();
    })(),
  );
});

sw.addEventListener("activate", (event: ExtendableEvent) => {
  event.waitUntil(
    (async () => {
      for (const name of await caches.keys()) {
        if (name.startsWith("vox-shell-") && name !== SHELL_CACHE) await caches.delete(name);
      }
      await sw.clients.claim();
    })(),
  );
});

sw.addEventListener("fetch", (event: FetchEvent) => {
  const req = event.request;
  const url = new URL(req.url);
  if (req.method !== "GET" || url.origin !== sw.location.origin) return; // never another origin
  if (url.pathname === CONFIG) {
    event.respondWith(networkThenCache(req, CONFIG_CACHE, true));
  } else if (SHELL.includes(url.pathname)) {
    event.respondWith(networkThenCache(new Request(url.pathname), SHELL_CACHE, false, req));
  }
  // Everything else (the API, attachments, the WebSocket) goes to the network untouched.
});

/** The network's answer; when the network fails (relay down, offline), the cached copy. */
async function networkThenCache(key: Request, cacheName: string, remember: boolean, original: Request = key): Promise<Response> {
  try {
    const res = await fetch(original);
    if (remember && res.ok) {
      const cache = await caches.open(cacheName);
      await cache.put(key, res.clone());
    }
    return res;
  } catch (e) {
    const cached = await (await caches.open(cacheName)).match(key, { ignoreSearch: true });
    if (cached) return cached;
    throw e;
  }
}

sw.addEventListener("push", (event: PushEvent) => {
  const name = new URL(sw.registration.scope).searchParams.get("brand") ?? "";
  event.waitUntil(
    (async () => {
      const note = await pushNotification(sw.clients, sw.location.origin, (await brandName()) || name, __ICON__);
      if (note) await sw.registration.showNotification(note.title, note.options);
    })(),
  );
});

sw.addEventListener("notificationclick", (event: NotificationEvent) => {
  event.notification.close();
  event.waitUntil(openApp(sw.clients, sw.location.origin));
});

// The brand name is handed over by the app (postMessage) and kept in the Cache API, so a
// push never needs the network.
async function brandName(): Promise<string> {
  const cache = await caches.open("vox-brand");
  const res = await cache.match("/__brand");
  return res ? res.text() : "";
}

sw.addEventListener("message", (event: ExtendableMessageEvent) => {
  const data = event.data as { brand?: string } | null;
  if (data && typeof data.brand === "string") {
    const brand = data.brand;
    event.waitUntil(caches.open("vox-brand").then((c) => c.put("/__brand", new Response(brand))));
  }
});
