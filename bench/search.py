"""Local history search: 100,000 messages in a real SQLite profile store, searched by word.

    .venv/bin/python -m bench.search [--messages 100000] [--rounds 20]

Fills a fresh store (texts from a small vocabulary plus one rare word every 1,000 messages),
then times ``search_messages`` for a rare word, a common word, two words, and a word limited
to one conversation. The store stays encrypted at rest: the index holds keyed word tokens
(HMAC-SHA256 under a key derived from the store key), candidates are decrypted and checked
(docs/protocol-client.md §9). Target: under 200 ms per search at 100,000 messages.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from clients.store import Direction, SqliteStore, StoredMessage

WORDS = [
    *[
        "lunch",
        "dinner",
        "meet",
        "station",
        "train",
        "late",
        "early",
        "today",
        "tomorrow",
        "yes",
        "no",
        "maybe",
        "call",
        "later",
    ],
    *[
        "photo",
        "file",
        "send",
        "thanks",
        "ok",
        "sure",
        "great",
        "party",
        "weekend",
        "work",
        "home",
        "office",
        "coffee",
        "tea",
    ],
]


def fill(store: SqliteStore, n: int, rng: random.Random) -> None:
    batch = 5000
    for start in range(0, n, batch):
        with store.transaction():
            for i in range(start, min(n, start + batch)):
                words = rng.choices(WORDS, k=rng.randint(3, 12))
                if i % 1000 == 0:
                    words.append("zanzibar")
                peer = f"peer{i % 20}"
                store.add_message(
                    StoredMessage(
                        f"{i:032x}",
                        peer,
                        Direction.IN,
                        peer,
                        1,
                        float(i),
                        float(i),
                        " ".join(words),
                    )
                )


def timed(
    store: SqliteStore, query: str, rounds: int, chat: str | None = None
) -> tuple[float, int]:
    times, found = [], 0
    for _ in range(rounds):
        t = time.perf_counter()
        found = len(store.search_messages(query, conversation=chat, limit=50))
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore.open(Path(tmp) / "profile")
        t = time.perf_counter()
        fill(store, args.messages, random.Random(1))
        print(f"filled {args.messages} messages in {time.perf_counter() - t:.1f} s")
        for label, query, chat in (
            ("rare word (100 hits)", "zanzibar", None),
            ("common word (limit 50)", "lunch", None),
            ("two words (limit 50)", "coffee tea", None),
            ("rare word in one chat", "zanzibar", "peer0"),
        ):
            median, found = timed(store, query, args.rounds, chat)
            print(f"{label:28} {median:8.1f} ms median of {args.rounds}  ({found} results)")
        store.close()


if __name__ == "__main__":
    main()
