// What the service worker does for a Web Push and for a click on its notification, kept
// apart from src/sw.ts so the test kit can run it against stand-in clients
// (tests/web/test_web_push.py; the browser's own click on a notification cannot be driven
// from headless Chromium).

/** A window client as far as the click handler needs one. */
export interface AppWindow {
  readonly url: string;
  readonly focused: boolean;
  readonly visibilityState: DocumentVisibilityState;
  focus(): Promise<unknown>;
}

/** The service worker's `clients`, as far as the push and click handlers need them. */
export interface AppClients {
  matchAll(options: { type: "window"; includeUncontrolled: boolean }): Promise<readonly AppWindow[]>;
  openWindow(url: string): Promise<unknown>;
}

export const PUSH_TAG = "vox-new-messages";

/**
 * The notification for a push: the brand's name and "New message", nothing else — the
 * relay's push carries no content and no sender, and the worker fetches nothing (the icon is
 * a data: URL built into sw.js). None while a window of the app is focused: the open app
 * notifies by itself (Notification API).
 */
export async function pushNotification(
  clients: AppClients,
  origin: string,
  brand: string,
  icon: string,
): Promise<{ title: string; options: NotificationOptions } | null> {
  if ((await appWindows(clients, origin)).some((w) => w.focused)) return null;
  return { title: brand || "Vox", options: { body: "New message", tag: PUSH_TAG, icon } };
}

/**
 * A click on the notification: focus a window of the app (the focused one, else a visible
 * one, else any) or, with none open, open the app at `/`. Returns what it did.
 */
export async function openApp(clients: AppClients, origin: string): Promise<string> {
  const windows = await appWindows(clients, origin);
  const best = windows.find((w) => w.focused) ?? windows.find((w) => w.visibilityState === "visible") ?? windows[0];
  if (best) {
    await best.focus();
    return `focused ${best.url}`;
  }
  await clients.openWindow("/");
  return "opened /";
}

async function appWindows(clients: AppClients, origin: string): Promise<AppWindow[]> {
  return (await clients.matchAll({ type: "window", includeUncontrolled: true })).filter((w) => new URL(w.url).origin === origin);
}
