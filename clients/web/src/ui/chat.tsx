// The chat screen: header (brand, connection status), chat list, conversation, composer,
// safety numbers and devices. Phone-sized screens show the list or the conversation.
import { useEffect, useRef, useState } from "preact/hooks";
import type { RelayConfig } from "../core/api";
import { type ConnectionStatus, type Engine, GROUP_CHANGE_OFFLINE, type Message, type OfflineReason, UntrustedIdentity } from "../core/engine";
import type { DeviceList } from "../core/devicelist";
import { USERNAME } from "../core/keys";
import { logoUrl } from "./brand";
import qrcode from "qrcode-generator";
import { type Compose, ComposeBanner, MessageView, TimerPicker, jumpTo } from "./messages";

const STATUS_TEXT: Record<ConnectionStatus, string> = {
  connecting: "connecting…",
  online: "online",
  offline: "offline, retrying",
  replaced: "open in another tab",
  "signed-out": "signed out (this device was removed)",
};
/** Why "offline" (shown after the status text), when the engine knows. */
const OFFLINE_REASON_TEXT: Record<Exclude<OfflineReason, null>, string> = {
  "no-ready": "the relay did not answer",
  "no-answer": "the relay stopped answering",
};

function useEngine(engine: Engine): number {
  const [tick, setTick] = useState(0);
  useEffect(() => engine.subscribe(() => setTick((t) => t + 1)), [engine]);
  return tick;
}

export function ChatScreen(props: { config: RelayConfig; engine: Engine; onLogout: () => Promise<void>; onAccountDeleted: () => Promise<void> }) {
  const { engine, config } = props;
  engine.config = config;
  useEngine(engine);
  const [panel, setPanel] = useState<"none" | "devices">("none");
  const [active, setActive] = useState<string | null>(engine.active);
  const [query, setQuery] = useState("");
  /** A search result opened: its message is scrolled to and marked once rendered. */
  const [found, setFound] = useState<{ id: string } | null>(null);
  const logo = logoUrl(config.brand);
  useEffect(() => {
    if (found) jumpTo(found.id);
  }, [found, active]);

  // Notifications once permitted (asked only after a click on "Enable notifications"); the
  // push subscription is registered once logged in (right after registering or a reload the
  // token comes with the connection: a registration before it was refused with 401), and
  // again after each reconnect (the relay answers 200 for one it has).
  const [notifying, setNotifying] = useState(typeof Notification !== "undefined" && Notification.permission === "granted");
  const online = engine.status === "online";
  useEffect(() => {
    if (notifying) enableNotifications(engine, config);
  }, [engine, notifying]);
  useEffect(() => {
    if (notifying && online && "serviceWorker" in navigator) void subscribePush(engine, config);
  }, [engine, notifying, online]);

  const convs = [...engine.conversations.values()].sort((a, b) => b.last - a.last);
  return (
    <div class={active ? "app has-active" : "app"}>
      <header class="top">
        {logo && <img class="logo" src={logo} alt="" referrerpolicy="no-referrer" />}
        <span class="brand" data-testid="brand-name">
          {config.brand.name}
        </span>
        <span
          class={`status ${engine.status}`}
          data-testid="connection-status"
          data-status={engine.status}
          data-reason={engine.offlineReason ?? undefined}
        >
          {STATUS_TEXT[engine.status]}
          {engine.offlineReason && ` (${OFFLINE_REASON_TEXT[engine.offlineReason]})`}
        </span>
        <span class="me" data-testid="me">
          {engine.user}
        </span>
        {typeof Notification !== "undefined" && Notification.permission === "default" && (
          <button type="button" data-testid="notifications-enable" onClick={() => void askNotifications().then(setNotifying)}>
            Enable notifications
          </button>
        )}
        <button type="button" data-testid="devices-open" onClick={() => setPanel(panel === "devices" ? "none" : "devices")}>
          Devices
        </button>
        <button type="button" data-testid="logout" onClick={() => void dropPushSubscription().then(props.onLogout)}>
          Log out
        </button>
      </header>
      {panel === "devices" && <Devices engine={engine} onClose={() => setPanel("none")} onAccountDeleted={props.onAccountDeleted} />}
      <div class="body">
        <aside class="sidebar">
          <input
            type="search"
            class="search"
            data-testid="search-input"
            placeholder="Search messages"
            value={query}
            onInput={(e) => setQuery(e.currentTarget.value)}
            onKeyDown={(e) => {
              if (e.key === "Escape") setQuery("");
            }}
          />
          <NewChat
            onOpen={async (user) => {
              await engine.openConversation(user);
              setActive(user);
            }}
          />
          <NewGroup
            online={engine.status === "online"}
            onCreate={async (name, members) => {
              const conv = await engine.createGroup(name, members);
              await engine.openConversation(conv);
              setActive(conv);
            }}
          />
          {query.trim() ? (
            <SearchResults
              engine={engine}
              query={query}
              onOpen={async (m) => {
                await engine.openConversation(m.conv);
                setActive(m.conv);
                setFound({ id: m.id });
              }}
            />
          ) : (
            <ul class="chat-list" data-testid="chat-list">
              {convs.map((c) => (
                <li key={c.name}>
                  <button
                    type="button"
                    class={c.name === active ? "chat-item on" : "chat-item"}
                    data-testid={c.name.startsWith("group:") ? `group-item-${engine.groupTitle(c.name)}` : `chat-item-${c.name}`}
                    onClick={async () => {
                      await engine.openConversation(c.name);
                      setActive(c.name);
                    }}
                  >
                    <span>{c.name.startsWith("group:") ? `# ${engine.groupTitle(c.name)}` : c.name}</span>
                    {c.unread > 0 && (
                      <span class="badge" data-testid={`unread-${c.name.startsWith("group:") ? engine.groupTitle(c.name) : c.name}`}>
                        {c.unread}
                      </span>
                    )}
                  </button>
                </li>
              ))}
            </ul>
          )}
        </aside>
        <main class="conversation">
          {active ? (
            // A view per conversation (keyed): its composer, reply/edit state and notices
            // start empty when another conversation opens, from the first render on.
            <Conversation
              key={active}
              engine={engine}
              user={active}
              onBack={() => {
                engine.active = null;
                setActive(null);
              }}
            />
          ) : (
            <div class="empty" data-testid="no-conversation">
              <p>{config.brand.welcome_text}</p>
            </div>
          )}
        </main>
      </div>
    </div>
  );
}

async function askNotifications(): Promise<boolean> {
  // Asked only after this click (a user action), never on load.
  return (await Notification.requestPermission()) === "granted";
}

function enableNotifications(engine: Engine, config: RelayConfig): void {
  engine.notify = (title, body) => {
    try {
      new Notification(config.brand.name, { body: `${title}: ${body.slice(0, 80)}`, tag: "vox-" + title });
    } catch {
      // some browsers only allow notifications from the service worker
    }
  };
}

/** Service worker + Web Push subscription (content-free pushes from the relay). */
async function subscribePush(engine: Engine, config: RelayConfig): Promise<void> {
  try {
    const reg = await navigator.serviceWorker.register("/sw.js", { scope: "/" });
    await navigator.serviceWorker.ready;
    reg.active?.postMessage({ brand: config.brand.name });
    const key = await engine.vapidKey();
    if (!key || !("pushManager" in reg)) return; // push turned off by the operator
    let sub = await reg.pushManager.getSubscription();
    if (!sub) sub = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key as Uint8Array<ArrayBuffer> });
    await engine.registerPush(sub.toJSON());
  } catch (e) {
    console.info("push notifications unavailable:", (e as Error).message);
  }
}

/**
 * Logout: end this browser's push subscription at the push service too (the relay's copy is
 * deleted by Engine.logout), so nothing is delivered to a logged-out browser even if the
 * relay could not be told.
 */
async function dropPushSubscription(): Promise<void> {
  try {
    const reg = "serviceWorker" in navigator ? await navigator.serviceWorker.getRegistration("/") : undefined;
    const sub = reg && "pushManager" in reg ? await reg.pushManager.getSubscription() : null;
    await sub?.unsubscribe();
  } catch (e) {
    console.info("push subscription not removed:", (e as Error).message);
  }
}

/** The local search's results (every word of the query; newest first), in place of the chat list. */
function SearchResults(props: { engine: Engine; query: string; onOpen: (m: Message) => Promise<void> }) {
  const { engine } = props;
  const results = engine.search(props.query);
  if (!results.length) {
    return (
      <p class="hint search-empty" data-testid="search-empty">
        No message has every word of that.
      </p>
    );
  }
  return (
    <ul class="chat-list search-results" data-testid="search-results">
      {results.map((m) => (
        <li key={m.key}>
          <button type="button" class="chat-item search-result" data-testid="search-result" data-message-id={m.id} data-conv={m.conv} onClick={() => void props.onOpen(m)}>
            <span class="where">
              {m.conv.startsWith("group:") ? `# ${engine.groupTitle(m.conv)}` : m.conv} · {m.from === engine.user ? "you" : m.from} · {new Date(m.sentAt).toLocaleString([], { dateStyle: "short", timeStyle: "short" })}
            </span>
            <span class="snippet">{[m.text, m.file?.name].filter(Boolean).join(" · ")}</span>
          </button>
        </li>
      ))}
    </ul>
  );
}

function NewChat(props: { onOpen: (user: string) => Promise<void> }) {
  const [user, setUser] = useState("");
  const [error, setError] = useState<string | null>(null);
  return (
    <form
      class="new-chat"
      onSubmit={async (e) => {
        e.preventDefault();
        if (!USERNAME.test(user)) {
          setError("not a valid username");
          return;
        }
        setError(null);
        await props.onOpen(user);
        setUser("");
      }}
    >
      <input data-testid="new-chat-username" placeholder="Start a chat: username" value={user} onInput={(e) => setUser(e.currentTarget.value.trim().toLowerCase())} />
      <button type="submit" data-testid="new-chat-submit">
        Chat
      </button>
      {error && <small class="error">{error}</small>}
    </form>
  );
}

function NewGroup(props: { online: boolean; onCreate: (name: string, members: string[]) => Promise<void> }) {
  const [name, setName] = useState("");
  const [members, setMembers] = useState("");
  const [error, setError] = useState<string | null>(null);
  return (
    <form
      class="new-chat"
      onSubmit={async (e) => {
        e.preventDefault();
        const list = members.split(/[\s,]+/).filter(Boolean);
        if (!name.trim() || list.some((u) => !USERNAME.test(u))) {
          setError("a group needs a name and valid usernames");
          return;
        }
        setError(null);
        try {
          await props.onCreate(name.trim(), list);
          setName("");
          setMembers("");
        } catch (err) {
          setError((err as Error).message);
        }
      }}
    >
      <input data-testid="group-name" placeholder="New group: name" value={name} onInput={(e) => setName(e.currentTarget.value)} />
      <input data-testid="group-members" placeholder="members: bob, carol" value={members} onInput={(e) => setMembers(e.currentTarget.value.toLowerCase())} />
      <button type="submit" data-testid="group-create" disabled={!props.online} title={props.online ? undefined : GROUP_CHANGE_OFFLINE}>
        Create group
      </button>
      {error && <small class="error">{error}</small>}
    </form>
  );
}

function GroupPanel(props: { engine: Engine; conv: string; onLeft: () => void }) {
  const { engine, conv } = props;
  const g = engine.groups.get(conv.slice(6));
  const [add, setAdd] = useState("");
  const [error, setError] = useState<string | null>(null);
  if (!g) return <p data-testid="group-gone">You are no longer a member of this group.</p>;
  // Messages, edits, reactions and timer changes are queued offline; membership changes are
  // not (Engine.announce says why), so their controls wait for the connection.
  const offline = engine.status !== "online";
  const run = async (fn: () => Promise<void>) => {
    setError(null);
    try {
      await fn();
    } catch (e) {
      setError((e as Error).message);
    }
  };
  return (
    <div class="panel group-panel" data-testid="group-panel">
      <span data-testid="group-member-list">
        {g.members.map((m) => (
          <span key={m} class="member" data-testid={`group-member-${m}`}>
            {m}
            {m !== engine.user && (
              <button type="button" data-testid={`group-remove-${m}`} title={`Remove ${m}`} disabled={offline} onClick={() => void run(() => engine.removeMembers(conv, [m]))}>
                ×
              </button>
            )}
          </span>
        ))}
      </span>
      <form
        class="inline"
        onSubmit={(e) => {
          e.preventDefault();
          const users = add.split(/[\s,]+/).filter(Boolean);
          void run(async () => {
            await engine.addMembers(conv, users);
            setAdd("");
          });
        }}
      >
        <input data-testid="group-add-username" placeholder="add member" value={add} onInput={(e) => setAdd(e.currentTarget.value.trim().toLowerCase())} />
        <button type="submit" data-testid="group-add-submit" disabled={offline}>
          Add
        </button>
      </form>
      <button type="button" data-testid="group-leave" disabled={offline} onClick={() => void run(async () => {
        await engine.leaveGroup(conv);
        props.onLeft();
      })}>
        Leave group
      </button>
      {offline && (
        <small class="hint" data-testid="group-offline">
          Offline: messages are queued, but adding, removing and leaving need the connection — a membership change must
          reach every member at once.
        </small>
      )}
      {error && (
        <small class="error" data-testid="group-error">
          {error}
        </small>
      )}
    </div>
  );
}

function Conversation(props: { engine: Engine; user: string; onBack: () => void }) {
  const { engine, user } = props;
  const [text, setText] = useState("");
  const [error, setError] = useState<string | null>(null);
  /** What the last action did that the user should know (a withdrawn send); cleared by the next send. */
  const [notice, setNotice] = useState<string | null>(null);
  const [safety, setSafety] = useState(false);
  const [progress, setProgress] = useState<number | null>(null);
  const [compose, setCompose] = useState<Compose>(null);
  const listRef = useRef<HTMLDivElement>(null);
  const composerRef = useRef<HTMLTextAreaElement>(null);
  const typingSent = useRef(0);
  const messages = engine.messages.get(user) ?? [];
  const isGroup = user.startsWith("group:");
  const changed = isGroup ? false : engine.keyChanged(user);
  const typists = [...(engine.typing.get(user) ?? new Map<string, number>())].filter(([, at]) => Date.now() - at < 6000).map(([u]) => u);
  const unread = messages.some((m) => m.state === "received" && !m.notice && m.from !== engine.user);
  const [, force] = useState(0);

  const online = engine.status === "online";
  const queued = engine.queued(user);
  useEffect(() => {
    // Only once logged in (after a reload the token comes with the connection: a fetch
    // before it was refused with 401 and the key-change warning never showed).
    if (isGroup || !online) return;
    void engine.refreshList(user).then(() => force((x) => x + 1)).catch((e: Error) => setError(e.message));
  }, [user, online]);
  useEffect(() => {
    listRef.current?.scrollTo(0, listRef.current.scrollHeight);
  }, [messages.length]);
  useEffect(() => {
    // Messages that arrive while the conversation is open and visible are read now.
    const read = (): void => {
      if (engine.active === user && unread && !document.hidden) void engine.markRead(user);
    };
    read();
    document.addEventListener("visibilitychange", read);
    return () => document.removeEventListener("visibilitychange", read);
  }, [messages.length, unread, user]);
  useEffect(() => {
    if (!typists.length) return;
    const t = setTimeout(() => force((x) => x + 1), 6000);
    return () => clearTimeout(t);
  }, [typists.join(",")]);

  function startCompose(c: Compose): void {
    setCompose(c);
    if (c?.kind === "edit") setText(c.m.text ?? "");
    composerRef.current?.focus();
  }

  async function send(): Promise<void> {
    const body = text.trim();
    if (!body) return;
    const c = compose;
    setError(null);
    setNotice(null);
    // The composer is emptied now, not once the message is stored: what is typed meanwhile
    // is the next message (clearing it later wiped a message typed during a slow write).
    setText("");
    setCompose(null);
    typingSent.current = 0;
    try {
      if (c?.kind === "edit") await engine.ops.edit(user, c.m.id, body);
      else {
        const replyTo = c?.kind === "reply" ? c.m.id : undefined;
        if (isGroup) await engine.sendGroupText(user, body, replyTo);
        else await engine.sendText(user, body, replyTo);
      }
    } catch (e) {
      setError(e instanceof UntrustedIdentity ? e.message : (e as Error).message);
      // Not sent: given back to the composer unless something else was typed meanwhile.
      setText((t) => (t ? t : body));
      setCompose((x) => x ?? c);
    }
  }

  return (
    <div class="conv">
      <div class="conv-head">
        <button type="button" class="back" data-testid="back" onClick={props.onBack}>
          ←
        </button>
        <h2 data-testid="conversation-title">{isGroup ? engine.groupTitle(user) : user}</h2>
        {queued > 0 && !online && (
          <span class="queued" data-testid="queued" data-count={queued} title="sent in order when the relay is reachable again">
            🕓 {queued} queued — offline, retrying
          </span>
        )}
        {typists.length > 0 && (
          <span class="typing" data-testid="typing" data-users={typists.join(",")}>
            {isGroup ? `${typists.join(", ")} ${typists.length === 1 ? "is" : "are"} typing…` : "typing…"}
          </span>
        )}
        <span class="head-tools">
          <TimerPicker engine={engine} conv={user} onError={setError} />
          {!isGroup && (
            <button type="button" data-testid="safety-open" onClick={() => setSafety(!safety)}>
              Safety number
            </button>
          )}
        </span>
      </div>
      {isGroup && <GroupPanel engine={engine} conv={user} onLeft={props.onBack} />}
      {(safety || changed) && <Safety engine={engine} user={user} changed={changed} onDone={() => setSafety(false)} />}
      <div class="messages" ref={listRef}>
        {messages.map((m) => (
          <MessageView key={m.key} m={m} engine={engine} onCompose={startCompose} onError={setError} onNotice={setNotice} />
        ))}
      </div>
      {error && (
        <p class="error" data-testid="send-error">
          {error}
        </p>
      )}
      {notice && (
        <p class="hint" data-testid="withdrawn">
          {notice}
        </p>
      )}
      <ComposeBanner
        compose={compose}
        onCancel={() => {
          if (compose?.kind === "edit") setText("");
          setCompose(null);
        }}
      />
      <form
        class="composer"
        onSubmit={(e) => {
          e.preventDefault();
          void send();
        }}
      >
        <label class="attach" title="Send a file (end-to-end encrypted)">
          <input
            type="file"
            data-testid="attach-file"
            disabled={changed || progress !== null}
            onChange={async (e) => {
              const input = e.currentTarget;
              const file = input.files?.[0];
              if (!file) return;
              setError(null);
              setProgress(0);
              try {
                await engine.sendFile(user, file, setProgress);
              } catch (err) {
                setError((err as Error).message);
              } finally {
                setProgress(null);
                input.value = "";
              }
            }}
          />
          File
        </label>
        {progress !== null && (
          <progress data-testid="upload-progress" max={1} value={progress} />
        )}
        <textarea
          data-testid="composer"
          ref={composerRef}
          rows={1}
          placeholder={changed ? "Verify the new safety number to send" : "Message"}
          disabled={changed}
          value={text}
          onInput={(e) => {
            const value = e.currentTarget.value;
            setText(value);
            const now = Date.now();
            if (!value) {
              // The draft was cleared: "stopped" at once, not the receiver's expiry later.
              if (typingSent.current) void engine.setTyping(user, false);
              typingSent.current = 0;
            } else if (now - typingSent.current > 4000) {
              typingSent.current = now;
              void engine.setTyping(user, true);
            }
          }}
          onKeyDown={(e) => {
            if (e.key === "Enter" && !e.shiftKey) {
              e.preventDefault();
              void send();
            } else if (e.key === "Escape" && compose) {
              if (compose.kind === "edit") setText("");
              setCompose(null);
            }
          }}
        />
        <button type="submit" class="primary" data-testid="send" disabled={changed}>
          {compose?.kind === "edit" ? "Save" : "Send"}
        </button>
      </form>
    </div>
  );
}

function Safety(props: { engine: Engine; user: string; changed: boolean; onDone: () => void }) {
  const { engine, user, changed } = props;
  const number = engine.safetyNumber(user);
  const verified = engine.peer(user)?.verified ?? false;
  return (
    <div class={changed ? "safety warn" : "safety"} data-testid="safety-panel" data-verified={verified && !changed ? "true" : "false"}>
      {changed && (
        <p data-testid="key-changed">
          {user}'s safety number has changed (a new account key). Sending is blocked until you compare the number
          below with {user} and accept it.
        </p>
      )}
      <p>Safety number with {user}{verified && !changed ? " (verified)" : ""}:</p>
      <code class="number" data-testid="safety-number">
        {number ?? "…"}
      </code>
      <div>
        <button
          type="button"
          class="primary"
          data-testid="verify-accept"
          onClick={async () => {
            await engine.acceptKey(user);
            props.onDone();
          }}
        >
          {changed ? "Accept the new key" : "Mark as verified"}
        </button>
        {verified && !changed && (
          <button
            type="button"
            data-testid="verify-clear"
            title="trusted on first use again, here and on your other devices"
            onClick={async () => {
              await engine.clearVerification(user);
              props.onDone();
            }}
          >
            Clear verification
          </button>
        )}
      </div>
    </div>
  );
}

function Devices(props: { engine: Engine; onClose: () => void; onAccountDeleted: () => Promise<void> }) {
  const { engine } = props;
  const [list, setList] = useState<DeviceList | null>(null);
  const [error, setError] = useState<string | null>(null);
  const load = () => engine.devices().then(setList).catch((e: Error) => setError(e.message));
  useEffect(() => {
    void load();
  }, []);
  const me = engine.identity?.device;
  return (
    <div class="panel" data-testid="devices-panel">
      <h3>Devices of {engine.user}</h3>
      {error && <p class="error">{error}</p>}
      <ul>
        {list?.devices.map((d) => (
          <li key={d.id} data-testid={`device-${d.id}`}>
            Device {d.id} {d.id === me ? "(this browser)" : ""}
            {d.id !== me && (
              <button
                type="button"
                data-testid={`unlink-${d.id}`}
                onClick={async () => {
                  try {
                    await engine.unlink(d.id);
                    await load();
                  } catch (e) {
                    setError((e as Error).message);
                  }
                }}
              >
                Unlink
              </button>
            )}
          </li>
        ))}
      </ul>
      <LinkNewDevice engine={engine} onLinked={() => void load()} />
      <ChangePassphrase engine={engine} />
      <DeleteAccount engine={engine} onDeleted={props.onAccountDeleted} />
      <button type="button" onClick={props.onClose}>
        Close
      </button>
    </div>
  );
}

/** Set, change or remove the passphrase that encrypts this browser's store. */
function ChangePassphrase(props: { engine: Engine }) {
  const store = props.engine.store;
  const [open, setOpen] = useState(false);
  const [current, setCurrent] = useState("");
  const [next, setNext] = useState("");
  const [again, setAgain] = useState("");
  const [busy, setBusy] = useState(false);
  const [status, setStatus] = useState<{ ok: boolean; text: string } | null>(null);
  const had = store.mode === "passphrase";
  const change = async (to: string | null): Promise<void> => {
    if (to !== null && (!to || to !== again)) {
      setStatus({ ok: false, text: to ? "the two new passphrases differ" : "type a new passphrase" });
      return;
    }
    setBusy(true);
    setStatus(null);
    try {
      await store.changePassphrase(had ? current : null, to);
      setStatus({ ok: true, text: to === null ? "passphrase removed: this browser opens the store without one" : "passphrase changed" });
      setCurrent("");
      setNext("");
      setAgain("");
    } catch (e) {
      setStatus({ ok: false, text: `not changed: ${(e as Error).message}` });
    } finally {
      setBusy(false);
    }
  };
  if (!open) {
    return (
      <button type="button" data-testid="passphrase-open" onClick={() => setOpen(true)}>
        {had ? "Change passphrase…" : "Set a passphrase…"}
      </button>
    );
  }
  return (
    <form
      class="passphrase"
      data-testid="passphrase-panel"
      onSubmit={(e) => {
        e.preventDefault();
        void change(next);
      }}
    >
      <p>The passphrase encrypts what this browser keeps (asked when the app opens); it never leaves the browser and cannot be recovered.</p>
      {had && (
        <label>
          Current passphrase
          <input type="password" data-testid="passphrase-current" autocomplete="current-password" value={current} onInput={(e) => setCurrent(e.currentTarget.value)} />
        </label>
      )}
      <label>
        New passphrase
        <input type="password" data-testid="passphrase-new" autocomplete="new-password" value={next} onInput={(e) => setNext(e.currentTarget.value)} />
      </label>
      <label>
        New passphrase again
        <input type="password" data-testid="passphrase-again" autocomplete="new-password" value={again} onInput={(e) => setAgain(e.currentTarget.value)} />
      </label>
      <button type="submit" data-testid="passphrase-submit" disabled={busy}>
        {had ? "Change passphrase" : "Set passphrase"}
      </button>
      {had && (
        <button type="button" data-testid="passphrase-remove" disabled={busy} onClick={() => void change(null)}>
          Remove passphrase
        </button>
      )}
      <button type="button" onClick={() => setOpen(false)} disabled={busy}>
        Close
      </button>
      {status && (
        <p class={status.ok ? "hint" : "error"} data-testid="passphrase-status" data-ok={String(status.ok)}>
          {status.text}
        </p>
      )}
    </form>
  );
}

/** Delete the whole account (every device), once its name is typed to confirm. */
function DeleteAccount(props: { engine: Engine; onDeleted: () => Promise<void> }) {
  const { engine } = props;
  const [open, setOpen] = useState(false);
  const [typed, setTyped] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  if (!open) {
    return (
      <button type="button" class="danger" data-testid="account-delete-open" onClick={() => setOpen(true)}>
        Delete account…
      </button>
    );
  }
  return (
    <form
      class="delete-account"
      data-testid="account-delete-panel"
      onSubmit={async (e) => {
        e.preventDefault();
        if (typed !== engine.user) return;
        setBusy(true);
        setError(null);
        try {
          await engine.deleteAccount();
          await props.onDeleted();
        } catch (err) {
          setError(`not deleted: ${(err as Error).message}`);
          setBusy(false);
        }
      }}
    >
      <p>
        This deletes <strong>{engine.user}</strong> on the relay for every device: its keys, queued messages and uploaded files. Contacts see the account as
        deleted, and this browser forgets everything. It cannot be undone.
      </p>
      <label>
        Type {engine.user} to confirm
        <input data-testid="account-delete-confirm" autocomplete="off" value={typed} onInput={(e) => setTyped(e.currentTarget.value.trim())} />
      </label>
      <button type="submit" class="danger" data-testid="account-delete-submit" disabled={busy || typed !== engine.user}>
        Delete my account
      </button>
      <button type="button" onClick={() => setOpen(false)} disabled={busy}>
        Cancel
      </button>
      {error && (
        <p class="error" data-testid="account-delete-error">
          {error}
        </p>
      )}
    </form>
  );
}

/** Show a one-time code (and its QR code, for a future phone app) for a new device. */
function LinkNewDevice(props: { engine: Engine; onLinked: () => void }) {
  const [code, setCode] = useState<string | null>(null);
  const [qr, setQr] = useState<string | null>(null);
  const [status, setStatus] = useState<string | null>(null);
  return (
    <div class="link-new">
      <button
        type="button"
        data-testid="link-new-device"
        disabled={!!code && !status?.startsWith("linked")}
        onClick={async () => {
          setStatus("creating a code…");
          try {
            const offer = await props.engine.offerLink();
            setCode(offer.code);
            const q = qrcode(0, "M");
            q.addData(offer.code);
            q.make();
            setQr(q.createDataURL(4, 2));
            setStatus("waiting for the new device…");
            await props.engine.waitLinked(offer);
            setStatus(`linked device ${offer.device}`);
            props.onLinked();
          } catch (e) {
            setStatus(`linking failed: ${(e as Error).message}`);
          }
        }}
      >
        Link a new device
      </button>
      {code && (
        <div>
          <p>
            On the new device run <code>vox join {code} --server {location.origin}</code>, or type the code into
            its "Link to an existing account" screen:
          </p>
          <code class="number" data-testid="link-new-code">
            {code}
          </code>
          {qr && <img data-testid="link-qr" class="qr" src={qr} alt="QR code of the link code" />}
        </div>
      )}
      {status && <p data-testid="link-new-status">{status}</p>}
    </div>
  );
}
