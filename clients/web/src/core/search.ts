// Local message search, as the Python SDK's (clients/store/search.py): a message matches
// when every word of the query is one of its words. Words are maximal runs of letters,
// digits and "_" (Python's \w), in lower case; what is searched is the text, or a file's
// caption and name — nothing of a message deleted for everyone, of an event or of a notice.
// It runs over the messages this page holds decrypted in memory (every stored message is
// loaded at start): nothing is sent anywhere and no index is written.
import type { Message } from "./engine";

const WORD = /[\p{L}\p{N}_]+/gu;

/** Lower case, with the case foldings ``str.casefold`` adds that matter for words (ß, ς). */
function fold(text: string): string {
  return text.toLowerCase().replace(/ß/g, "ss").replace(/ς/g, "σ");
}

/** The distinct folded words of ``text``. */
export function words(text: string): Set<string> {
  return new Set(fold(text).match(WORD) ?? []);
}

/** What search looks at (see the module comment). */
export function searchableText(m: Message): string {
  if (m.deleted || m.event || m.notice) return "";
  const parts = [m.text ?? ""];
  if (m.file) parts.push(m.file.name);
  return parts.join(" ");
}

export interface SearchOptions {
  /** Only this conversation (a username or ``group:<hex id>``). */
  conv?: string;
  /** At most this many results (default 50). */
  limit?: number;
}

/** The messages with every word of ``query``, newest first (none for a query without words). */
export function searchMessages(all: Iterable<Message[]>, query: string, opts: SearchOptions = {}): Message[] {
  const wanted = [...words(query)];
  if (!wanted.length) return [];
  const found: Message[] = [];
  for (const list of all) {
    for (const m of list) {
      if (opts.conv !== undefined && m.conv !== opts.conv) continue;
      const text = searchableText(m);
      if (!text) continue;
      const have = words(text);
      if (wanted.every((w) => have.has(w))) found.push(m);
    }
  }
  found.sort((a, b) => b.sentAt - a.sentAt || (a.key < b.key ? 1 : -1));
  return found.slice(0, opts.limit ?? 50);
}
