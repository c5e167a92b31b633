// One message in a conversation: text or file, the quoted message of a reply (a click jumps
// to it), "edited" with the earlier texts, the tombstone of a deleted message, reactions with
// counts, the disappearing timer, receipts (per member in groups), and the actions sheet
// (react, reply, edit, delete for everyone / for me). Also the conversation's timer picker.
import { useState } from "preact/hooks";
import type { Engine, Message } from "../core/engine";
import { type DeleteResult, describeTimer } from "../core/messageops";
import { FileView } from "./files";

export const QUICK_REACTIONS = ["👍", "❤️", "😂", "😮", "😢", "🙏"];
/** Shown when a delete withdrew our message before it was ever sent (the SDK's ``Withdrawn``). */
export const WITHDRAWN = "withdrawn before sending: it reached no one";
export const TIMER_CHOICES = [0, 30, 300, 3600, 8 * 3600, 86400, 7 * 86400, 4 * 7 * 86400];

const STATE_MARK: Record<string, string> = { pending: "🕓", sent: "✓", delivered: "✓✓", read: "✓✓ read", failed: "⚠ not sent", received: "" };

/** What the composer is doing besides writing a new message. */
export type Compose = { kind: "reply" | "edit"; m: Message } | null;

/** Scroll to a message and flash it; false when it is not (or no longer) here. */
export function jumpTo(id: string): boolean {
  const el = document.querySelector<HTMLElement>(`[data-testid="message"][data-message-id="${CSS.escape(id)}"]`);
  if (!el) return false;
  el.scrollIntoView({ block: "center", behavior: "smooth" });
  el.dataset["highlighted"] = "true";
  el.classList.add("flash");
  setTimeout(() => {
    el.classList.remove("flash");
    delete el.dataset["highlighted"];
  }, 2000);
  return true;
}

function Quote(props: { m: Message; onMissing: () => void }) {
  const r = props.m.reply;
  if (!r) return null;
  return (
    <button
      type="button"
      class="quote"
      data-testid="reply-quote"
      data-quote-id={r.id}
      title="Show the quoted message"
      onClick={() => {
        if (!jumpTo(r.id)) props.onMissing();
      }}
    >
      <b>{r.author}</b>
      <span>{r.excerpt || "…"}</span>
    </button>
  );
}

function Reactions(props: { m: Message; me: string; onReact: (emoji: string) => void }) {
  const all = Object.entries(props.m.reactions ?? {});
  if (!all.length) return null;
  const counts = new Map<string, string[]>();
  for (const [user, emoji] of all) counts.set(emoji, [...(counts.get(emoji) ?? []), user]);
  const mine = props.m.reactions?.[props.me];
  return (
    <div class="reactions" data-testid="reactions">
      {[...counts].map(([emoji, users]) => (
        <button
          type="button"
          key={emoji}
          class={emoji === mine ? "reaction mine" : "reaction"}
          data-testid="reaction"
          data-emoji={emoji}
          data-count={users.length}
          title={users.join(", ")}
          onClick={() => props.onReact(emoji === mine ? "" : emoji)}
        >
          {emoji} {users.length}
        </button>
      ))}
    </div>
  );
}

function GroupReceipts(props: { m: Message; engine: Engine }) {
  const g = props.engine.groups.get(props.m.conv.slice(6));
  const others = (g?.members ?? []).filter((u) => u !== props.engine.user);
  const r = props.m.receipts ?? {};
  const readBy = others.filter((u) => r[u] === "read");
  const read = readBy.length;
  const delivered = others.filter((u) => r[u]).length;
  if (!others.length || !delivered) return null;
  return (
    <span class="receipts" data-testid="group-receipts" data-read={read} data-delivered={delivered} data-read-by={readBy.join(",")} title={others.map((u) => `${u}: ${r[u] ?? "not yet"}`).join("\n")}>
      {read ? `read by ${read}/${others.length}` : `delivered to ${delivered}/${others.length}`}
    </span>
  );
}

function Actions(props: { m: Message; me: string; onAction: (a: string, arg?: string) => void }) {
  const { m, me } = props;
  const mine = m.from === me;
  const reacted = m.reactions?.[me];
  return (
    <div class="actions" data-testid="message-actions-panel">
      <div class="quick">
        {QUICK_REACTIONS.map((e) => (
          <button type="button" key={e} class={e === reacted ? "on" : ""} data-testid="react-option" data-emoji={e} aria-label={`React ${e}`} onClick={() => props.onAction("react", e)}>
            {e}
          </button>
        ))}
        {reacted && (
          <button type="button" data-testid="react-remove" onClick={() => props.onAction("react", "")}>
            ✕
          </button>
        )}
      </div>
      <button type="button" data-testid="action-reply" onClick={() => props.onAction("reply")}>
        Reply
      </button>
      {mine && m.text !== null && !m.file && (
        <button type="button" data-testid="action-edit" onClick={() => props.onAction("edit")}>
          Edit
        </button>
      )}
      {mine && (
        <button type="button" data-testid="action-delete-everyone" onClick={() => props.onAction("delete-everyone")}>
          Delete for everyone
        </button>
      )}
      <button type="button" data-testid="action-delete-me" onClick={() => props.onAction("delete-me")}>
        Delete for me
      </button>
    </div>
  );
}

export function MessageView(props: { m: Message; engine: Engine; onCompose: (c: Compose) => void; onError: (e: string) => void; onNotice: (text: string) => void }) {
  const { m, engine } = props;
  const me = engine.user;
  const [open, setOpen] = useState(false);
  const [history, setHistory] = useState(false);
  const run = (p: Promise<unknown>): void => void p.catch((e: Error) => props.onError(e.message));
  if (m.event) {
    // A timer change's row can be deleted for me (the change stands; a repeat of it stays deleted).
    return (
      <div class="notice event" data-testid="timer-event" data-from={m.from} data-message-id={m.id}>
        ⏱ {m.notice}
        <button type="button" class="link more" data-testid="action-delete-me" title="Delete for me" aria-label="Delete for me" onClick={() => run(engine.ops.deleteForMe(m.conv, m.id))}>
          ✕
        </button>
      </div>
    );
  }
  if (m.notice) {
    return (
      <div class="notice" data-testid="decrypt-failure" data-from={m.from}>
        ⚠ {m.notice}
      </div>
    );
  }
  const mine = m.from === me;
  const isGroup = m.conv.startsWith("group:");
  // A delete of our message still queued and never sent withdraws it: it reached no one.
  const withdrawn = (r: DeleteResult): void => {
    if (r === "withdrawn") props.onNotice(WITHDRAWN);
  };
  const onAction = (a: string, arg?: string): void => {
    setOpen(false);
    if (a === "react") run(engine.ops.react(m.conv, m.id, arg ?? ""));
    else if (a === "reply") props.onCompose({ kind: "reply", m });
    else if (a === "edit") props.onCompose({ kind: "edit", m });
    else if (a === "delete-everyone") run(engine.ops.deleteForEveryone(m.conv, m.id).then(withdrawn));
    else if (a === "delete-me") run(engine.ops.deleteForMe(m.conv, m.id).then(withdrawn));
  };
  const cls = ["msg", mine ? "mine" : "", m.deleted ? "deleted" : ""].filter(Boolean).join(" ");
  return (
    <div class={cls} data-testid="message" data-from={m.from} data-message-id={m.id} data-state={m.state} data-deleted={m.deleted ? "true" : undefined}>
      {isGroup && !mine && <div class="sender">{m.from}</div>}
      {m.deleted ? (
        <div class="text tombstone" data-testid="tombstone">
          🚫 This message was deleted
        </div>
      ) : (
        <>
          <Quote m={m} onMissing={() => props.onError("the quoted message is no longer here")} />
          {m.file && <FileView m={m} engine={engine} />}
          {m.text !== null && <div class="text">{m.text}</div>}
          {history && (
            <ol class="history" data-testid="edit-history">
              {(m.edits ?? []).map((t, i) => (
                <li key={i}>{t}</li>
              ))}
            </ol>
          )}
        </>
      )}
      <div class="meta">
        {!!m.edits?.length && !m.deleted && (
          <button type="button" class="link" data-testid="edited" title="Show the earlier versions" onClick={() => setHistory(!history)}>
            edited
          </button>
        )}
        {m.expiresIn !== undefined && (
          <span data-testid="expires" title={`disappears ${describeTimer(m.expiresIn)} after ${mine ? "sending" : "reading"}`}>
            ⏱
          </span>
        )}
        <time>{new Date(m.sentAt).toLocaleTimeString()}</time>
        {mine && (
          <span class="state" data-testid="message-state" title={m.state === "pending" && engine.status !== "online" ? "queued: sent when the relay is reachable again" : undefined}>
            {m.state === "pending" && engine.status !== "online" ? "🕓 queued" : STATE_MARK[m.state]}
          </span>
        )}
        {mine && isGroup && <GroupReceipts m={m} engine={engine} />}
        {!m.deleted && (
          <button type="button" class="link more" data-testid="message-actions" aria-label="Message actions" onClick={() => setOpen(!open)}>
            ⋯
          </button>
        )}
      </div>
      {!m.deleted && <Reactions m={m} me={me} onReact={(e) => onAction("react", e)} />}
      {open && <Actions m={m} me={me} onAction={onAction} />}
    </div>
  );
}

/** The reply or edit in progress, above the composer. */
export function ComposeBanner(props: { compose: Compose; onCancel: () => void }) {
  const c = props.compose;
  if (!c) return null;
  const excerpt = c.m.text ?? c.m.file?.name ?? "";
  return (
    <div class="compose-banner" data-testid={c.kind === "reply" ? "reply-preview" : "edit-banner"}>
      <span>
        {c.kind === "reply" ? `Replying to ${c.m.from}: ` : "Editing: "}
        <i>{excerpt.length > 80 ? `${excerpt.slice(0, 80)}…` : excerpt}</i>
      </span>
      <button type="button" data-testid={c.kind === "reply" ? "reply-cancel" : "edit-cancel"} aria-label="Cancel" onClick={props.onCancel}>
        ✕
      </button>
    </div>
  );
}

/** The conversation's disappearing-messages timer (any member may change it). */
export function TimerPicker(props: { engine: Engine; conv: string; onError: (e: string) => void }) {
  const current = props.engine.ops.timer(props.conv);
  const [busy, setBusy] = useState(false);
  const choices = TIMER_CHOICES.includes(current) ? TIMER_CHOICES : [...TIMER_CHOICES, current].sort((a, b) => a - b);
  return (
    <label class="timer" title="Disappearing messages">
      ⏱
      <select
        data-testid="timer-select"
        data-timer={current}
        disabled={busy}
        value={String(current)}
        onChange={(e) => {
          const seconds = Number(e.currentTarget.value);
          setBusy(true);
          props.engine.ops.setTimer(props.conv, seconds).then(
            () => setBusy(false),
            (err: Error) => {
              setBusy(false);
              props.onError(err.message);
            },
          );
        }}
      >
        {choices.map((s) => (
          <option key={s} value={String(s)}>
            {s ? describeTimer(s) : "off"}
          </option>
        ))}
      </select>
    </label>
  );
}
