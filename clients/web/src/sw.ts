// The service worker: shows a content-free "New message" notification for a Web Push
// (the relay's pushes carry no content and no sender) and opens the app on click.
// It fetches nothing until the app is opened.
const sw = globalThis as unknown as ServiceWorkerGlobalScope;

sw.addEventListener("install", () => void sw.skipWaiting());
sw.addEventListener("activate", (event: ExtendableEvent) => event.waitUntil(sw.clients.claim()));

sw.addEventListener("push", (event: PushEvent) => {
  const name = new URL(sw.registration.scope).searchParams.get("brand") ?? "";
  event.waitUntil(
    (async () => {
      const windows = await sw.clients.matchAll({ type: "window", includeUncontrolled: true });
      if (windows.some((w) => w.focused)) return; // the open app notifies by itself
      const title = (await brandName()) || name || "Vox";
      await sw.registration.showNotification(title, { body: "New message", tag: "vox-new-messages", icon: "/icon.svg" });
    })(),
  );
});

sw.addEventListener("notificationclick", (event: NotificationEvent) => {
  event.notification.close();
  event.waitUntil(
    (async () => {
      const windows = await sw.clients.matchAll({ type: "window", includeUncontrolled: true });
      const first = windows[0];
      if (first) await first.focus();
      else await sw.clients.openWindow("/");
    })(),
  );
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
