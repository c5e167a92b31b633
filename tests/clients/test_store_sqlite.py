"""The SQLite store: encryption at rest, typed failures, and the profile lock (real processes)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from clients.store import (
    DeliveryState,
    Direction,
    Group,
    KeyFileError,
    OutboxEntry,
    PrekeyKind,
    PrekeyRecord,
    Profile,
    ProfileLocked,
    SqliteStore,
    StoreCorrupted,
    StoredMessage,
    StoreError,
    WrongPassphrase,
    open_store,
)

ROOT = Path(__file__).resolve().parents[2]
CANARY = b"CANARY-7f3e9a-secret"


def fill_with_secrets(store: SqliteStore) -> None:
    store.save_profile(
        Profile("http://x", "alice", 1, CANARY + b"acct", CANARY + b"id", CANARY + b"auth")
    )
    store.put_prekeys([PrekeyRecord(PrekeyKind.ONE_TIME_KEM, 1, CANARY + b"kem")])
    store.store_session("bob", 1, CANARY + b"session")
    store.put_group(Group("g", "group", ("alice", "bob")))
    store.store_own_sender_key("g", CANARY + b"own-sk")
    store.store_sender_key("g", "bob", 1, CANARY + b"bob-sk")
    store.add_message(
        StoredMessage(
            "m",
            "bob",
            Direction.IN,
            "bob",
            1,
            1.0,
            1.0,
            CANARY.decode() + " text",
            {"key": CANARY.decode()},
        )
    )
    store.outbox_put(OutboxEntry("o", "bob", CANARY + b"outbox"))
    store.set_secret("token", CANARY + b"token")


def profile_bytes(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(home.iterdir()) if p.name.startswith("vox.db"))


@pytest.mark.parametrize("passphrase", [None, "correct horse battery staple"])
def test_no_secret_appears_in_the_database_files(tmp_path: Path, passphrase: str | None) -> None:
    home = tmp_path / "p"
    with SqliteStore.open(home, passphrase=passphrase) as store:
        fill_with_secrets(store)
        # Scan while open (WAL not yet checkpointed) and after close.
        assert CANARY not in profile_bytes(home)
    raw = profile_bytes(home)
    assert b"alice" in raw  # the scan does see plaintext columns
    assert CANARY not in raw
    with SqliteStore.open(home, passphrase=passphrase) as store:
        assert store.load_session("bob", 1) == CANARY + b"session"
        assert store.get_secret("token") == CANARY + b"token"
        profile = store.load_profile()
        assert profile is not None and profile.auth_key == CANARY + b"auth"


def test_files_are_private(tmp_path: Path) -> None:
    home = tmp_path / "p"
    open_store(home).close()
    assert (home.stat().st_mode & 0o777) == 0o700
    assert ((home / "vox.key").stat().st_mode & 0o777) == 0o600
    assert ((home / "vox.db").stat().st_mode & 0o777) == 0o600


def test_wrong_passphrase_is_a_typed_error(tmp_path: Path) -> None:
    home = tmp_path / "p"
    with open_store(home, passphrase="right") as store:
        store.store_session("bob", 1, b"state")
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        open_store(home, passphrase="wrong")
    with pytest.raises(WrongPassphrase, match="none was given"):
        open_store(home)
    with open_store(home, passphrase="right") as store:  # the failed opens released the lock
        assert store.load_session("bob", 1) == b"state"


def test_a_key_file_profile_refuses_a_passphrase(tmp_path: Path) -> None:
    open_store(tmp_path).close()
    with pytest.raises(WrongPassphrase, match="key file"):
        open_store(tmp_path, passphrase="x")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_a_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    open_store(tmp_path).close()
    (tmp_path / "vox.key").chmod(mode)
    with pytest.raises(KeyFileError, match="too open; run: chmod 600"):
        open_store(tmp_path)


def test_a_missing_or_foreign_key_file_is_refused(tmp_path: Path) -> None:
    open_store(tmp_path).close()
    key = tmp_path / "vox.key"
    key.unlink()
    with pytest.raises(KeyFileError, match="missing"):
        open_store(tmp_path)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, os.urandom(32))
    os.close(fd)
    with pytest.raises(KeyFileError, match="does not open this store"):
        open_store(tmp_path)


def raw_update(home: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    conn = sqlite3.connect(home / "vox.db")
    with conn:
        conn.execute(sql, params)
    conn.close()


def test_a_tampered_row_is_reported_as_corrupted(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.store_session("bob", 1, b"session-state")
        store.add_message(StoredMessage("m", "bob", Direction.IN, "bob", 1, 1.0, 1.0, "hello"))
    conn = sqlite3.connect(tmp_path / "vox.db")
    (blob,) = conn.execute("SELECT state FROM sessions").fetchone()
    conn.close()
    flipped = bytearray(blob)
    flipped[20] ^= 0x01
    raw_update(tmp_path, "UPDATE sessions SET state = ?", (bytes(flipped),))
    raw_update(tmp_path, "UPDATE messages SET body = substr(body, 1, 10)")
    with open_store(tmp_path) as store:
        with pytest.raises(StoreCorrupted, match="sessions fails authentication"):
            store.load_session("bob", 1)
        with pytest.raises(StoreCorrupted, match="messages"):
            store.history("bob")


def test_rows_cannot_be_swapped_between_keys_or_tables(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.store_session("bob", 1, b"bob-state")
        store.store_session("carol", 1, b"carol-state")
        store.put_group(Group("g", "g", ("bob",)))
        store.store_sender_key("g", "bob", 1, b"sender-key")
    # Give carol bob's ciphertext, and bob's sender key row the session ciphertext.
    raw_update(
        tmp_path,
        "UPDATE sessions SET state = (SELECT state FROM sessions WHERE username = 'bob')"
        " WHERE username = 'carol'",
    )
    raw_update(tmp_path, "UPDATE sender_keys SET state = (SELECT state FROM sessions LIMIT 1)")
    with open_store(tmp_path) as store:
        assert store.load_session("bob", 1) == b"bob-state"
        with pytest.raises(StoreCorrupted):
            store.load_session("carol", 1)
        with pytest.raises(StoreCorrupted):
            store.load_sender_key("g", "bob", 1)


def test_a_garbage_database_file_is_reported_as_corrupted(tmp_path: Path) -> None:
    open_store(tmp_path).close()
    (tmp_path / "vox.db").write_bytes(b"this is not sqlite" * 100)
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"vox.db{suffix}").unlink(missing_ok=True)
    with pytest.raises(StoreCorrupted):
        open_store(tmp_path)


def test_a_foreign_sqlite_database_is_not_taken_over(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "vox.db")
    conn.execute("CREATE TABLE other (x)")
    conn.close()
    with pytest.raises(StoreCorrupted, match="not a Vox store"):
        open_store(tmp_path)


def test_opening_a_missing_profile_without_create_fails(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no Vox profile"):
        open_store(tmp_path / "nope", create=False)
    assert not (tmp_path / "nope").exists()


# --- the profile lock, with real processes -----------------------------------------------


def spawn(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


HOLDER = """
import sys
from clients.store import open_store
store = open_store(sys.argv[1] if len(sys.argv) > 1 else {home!r})
store.store_session("bob", 1, b"from-holder")
print("held", flush=True)
sys.stdin.readline()
store.close()
print("released", flush=True)
"""


def test_a_second_process_fails_cleanly_while_the_profile_is_held(tmp_path: Path) -> None:
    holder = spawn(HOLDER.format(home=str(tmp_path)))
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        t0 = time.monotonic()
        with pytest.raises(ProfileLocked) as info:
            open_store(tmp_path, lock_timeout=0.3)
        assert time.monotonic() - t0 >= 0.3
        assert info.value.pid == holder.pid
        assert f"pid {holder.pid}" in str(info.value)
    finally:
        holder.communicate("go\n", timeout=10)
    with open_store(tmp_path, lock_timeout=0) as store:
        assert store.load_session("bob", 1) == b"from-holder"


def test_a_waiting_process_gets_the_profile_when_released(tmp_path: Path) -> None:
    holder = spawn(HOLDER.format(home=str(tmp_path)))
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    assert holder.stdin is not None
    holder.stdin.write("go\n")
    holder.stdin.flush()
    with open_store(tmp_path, lock_timeout=10) as store:
        assert store.load_session("bob", 1) == b"from-holder"
    holder.communicate(timeout=10)


KILLED_WRITER = """
import sys
from clients.store import Direction, StoredMessage, open_store
store = open_store({home!r})
with store.transaction(sync=False):
    store.add_message(StoredMessage("m", "bob", Direction.IN, "bob", 1, 1.0, 1.0, "x"))
    store.store_session("bob", 1, b"after")
    if {inside}:
        print("killed", flush=True)
        sys.stdin.readline()
print("killed", flush=True)  # committed, never flushed
sys.stdin.readline()
"""


@pytest.mark.parametrize("inside", [True, False], ids=["mid-transaction", "unsynced-commit"])
def test_a_killed_holder_leaves_its_transaction_all_or_nothing(
    tmp_path: Path, inside: bool
) -> None:
    with open_store(tmp_path) as store:
        store.store_session("bob", 1, b"before")
    child = spawn(KILLED_WRITER.format(home=str(tmp_path), inside=inside))
    assert child.stdout is not None and child.stdout.readline() == "killed\n"
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=10)
    with open_store(tmp_path, lock_timeout=5) as store:  # the kernel released the lock
        message = store.get_message("m")
        if inside:  # nothing of it
            assert store.load_session("bob", 1) == b"before" and message is None
        else:  # all of it, although nobody called flush()
            assert store.load_session("bob", 1) == b"after"
            assert message is not None and message.text == "x"


def test_concurrent_processes_take_turns_and_lose_nothing(tmp_path: Path) -> None:
    open_store(tmp_path).close()
    code = """
    import sys
    from clients.store import Direction, StoredMessage, open_store
    for i in range(5):
        with open_store({home!r}, lock_timeout=30) as store:
            for j in range(4):
                mid = f"{{sys.argv[1]}}-{{i}}-{{j}}"
                store.add_message(StoredMessage(mid, "bob", Direction.IN, "bob", 1, i, i, mid))
    """
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code.format(home=str(tmp_path))), f"w{n}"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for n in range(3)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    with open_store(tmp_path) as store:
        assert len(store.history("bob", limit=1000)) == 3 * 5 * 4


# --- changing the passphrase ---------------------------------------------------------------


def assert_secrets_readable(store: SqliteStore) -> None:
    profile = store.load_profile()
    assert profile is not None and profile.account_key == CANARY + b"acct"
    prekey = store.get_prekey(PrekeyKind.ONE_TIME_KEM, 1)
    assert prekey is not None and prekey.secret == CANARY + b"kem"
    assert store.load_session("bob", 1) == CANARY + b"session"
    assert store.load_own_sender_key("g") == CANARY + b"own-sk"
    assert store.load_sender_key("g", "bob", 1) == CANARY + b"bob-sk"
    message = store.get_message("m")
    assert message is not None and message.attachment == {"key": CANARY.decode()}
    assert store.outbox_pending()[0].payload == CANARY + b"outbox"
    assert store.get_secret("token") == CANARY + b"token"


def test_changing_from_a_key_file_to_a_passphrase_and_back(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        fill_with_secrets(store)
        store.change_passphrase("new passphrase")
        assert_secrets_readable(store)
    assert not (tmp_path / "vox.key").exists()
    assert CANARY not in profile_bytes(tmp_path)
    with pytest.raises(WrongPassphrase, match="none was given"):
        open_store(tmp_path)
    with open_store(tmp_path, passphrase="new passphrase") as store:
        assert_secrets_readable(store)
        store.change_passphrase("second")
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        open_store(tmp_path, passphrase="new passphrase")
    with open_store(tmp_path, passphrase="second") as store:
        store.change_passphrase(None)
    assert ((tmp_path / "vox.key").stat().st_mode & 0o777) == 0o600
    assert not (tmp_path / "vox.key.new").exists()
    with open_store(tmp_path) as store:
        assert_secrets_readable(store)


def test_an_interrupted_key_file_rotation_is_finished_or_discarded_on_open(
    tmp_path: Path,
) -> None:
    with open_store(tmp_path) as store:
        fill_with_secrets(store)
    old_key = (tmp_path / "vox.key").read_bytes()
    with open_store(tmp_path) as store:
        store.change_passphrase(None)  # rotate the key file
    new_key = (tmp_path / "vox.key").read_bytes()
    assert new_key != old_key

    def write(name: str, key: bytes) -> None:
        path = tmp_path / name
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, key)
        os.close(fd)

    # Committed, but the crash came before vox.key.new replaced vox.key.
    write("vox.key", old_key)
    write("vox.key.new", new_key)
    with open_store(tmp_path) as store:
        assert_secrets_readable(store)
    assert (tmp_path / "vox.key").read_bytes() == new_key
    assert not (tmp_path / "vox.key.new").exists()
    # Never committed: a stray new key file is discarded.
    write("vox.key.new", old_key)
    with open_store(tmp_path) as store:
        assert_secrets_readable(store)
    assert not (tmp_path / "vox.key.new").exists()


@pytest.mark.parametrize("params", [b"1024,8,1", b"1048577,8,1", b"32768,1,1", b"4194304,8,1"])
def test_tampered_scrypt_parameters_are_refused(tmp_path: Path, params: bytes) -> None:
    open_store(tmp_path, passphrase="pw").close()
    raw_update(tmp_path, "UPDATE meta SET value = ? WHERE key = 'scrypt'", (params,))
    with pytest.raises(StoreCorrupted, match="scrypt parameters out of bounds"):
        open_store(tmp_path, passphrase="pw")


def test_a_transaction_writes_each_session_once_at_its_commit(tmp_path: Path) -> None:
    # A burst advances one session once per message: the store keeps the last state and
    # seals and writes it once, at the commit; reads in between see the latest state.
    home = tmp_path / "p"
    writes: list[str] = []
    with SqliteStore.open(home) as store:
        store._conn.set_trace_callback(
            lambda sql: writes.append(sql) if sql.startswith("INSERT INTO sessions") else None
        )
        with store.transaction():
            for n in range(5):
                store.store_session("bob", 1, b"bob-%d" % n)
                assert store.load_session("bob", 1) == b"bob-%d" % n
            store.store_session("carol", 2, b"carol")
            assert store.session_devices("carol") == [2]  # written before the table is read
            store.store_session("carol", 2, b"carol-2")
            store.store_session("dave", 1, b"dave")
            store.delete_session("dave", 1)
        # bob and carol in one statement before the table is read, carol again at the
        # commit; dave never
        assert len(writes) == 2
        with pytest.raises(RuntimeError), store.transaction():
            store.store_session("bob", 1, b"rolled back")
            raise RuntimeError
        assert store.load_session("bob", 1) == b"bob-4"
        assert len(writes) == 2
    with SqliteStore.open(home) as store:
        assert store.load_session("bob", 1) == b"bob-4"
        assert store.load_session("carol", 2) == b"carol-2"
        assert store.session_devices("dave") == []


def test_a_receipts_ids_move_in_one_statement_and_a_damaged_state_is_reported(
    tmp_path: Path,
) -> None:
    with open_store(tmp_path) as store:
        for n in range(5):
            store.add_message(
                StoredMessage(f"o{n}", "bob", Direction.OUT, "me", 1, 1.0, 1.0, "hi", None)
            )
        updates: list[str] = []
        store._conn.set_trace_callback(
            lambda sql: updates.append(sql) if sql.startswith("UPDATE messages") else None
        )
        ids = [f"o{n}" for n in range(5)]
        assert store.update_message_states(ids, DeliveryState.DELIVERED) == 5
        assert len(updates) == 1
    raw_update(tmp_path, "UPDATE messages SET state = 'bogus' WHERE message_id = 'o3'")
    with open_store(tmp_path) as store, pytest.raises(StoreCorrupted, match="o3"):
        store.update_message_states(ids, DeliveryState.READ)


def test_a_messages_search_tokens_go_in_one_statement(tmp_path: Path) -> None:
    # One INSERT for a message's words (it was one per word); a text of more distinct words
    # than one statement takes still has every word indexed.
    with open_store(tmp_path) as store:
        inserts: list[str] = []
        store._conn.set_trace_callback(
            lambda sql: inserts.append(sql) if "INTO search_pending" in sql else None
        )
        store.add_message(StoredMessage("a", "bob", Direction.IN, "bob", 1, 1.0, 1.0, "one two"))
        assert len(inserts) == 1
        many = " ".join(f"w{n}" for n in range(700))
        store.add_message(StoredMessage("b", "bob", Direction.IN, "bob", 1, 2.0, 2.0, many))
        assert len(inserts) == 4  # 300 + 300 + 100 rows
        for word in ("w0", "w350", "w699", "two"):
            assert len(store.search_messages(word)) == 1


def test_a_tombstone_is_found_after_reopening_and_a_profile_without_one_is_not_asked(
    tmp_path: Path,
) -> None:
    # is_gone is asked for every received message: without any tombstone it answers from
    # memory (no statement); one written earlier is found after the store is reopened.
    store = SqliteStore.open(tmp_path / "p")
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    assert not store.is_gone("m1") and not store.is_gone("m2")
    assert len([s for s in statements if "FROM seen" in s]) == 1  # the one existence check
    store.forget_message("m1", 1.0)
    assert store.is_gone("m1") and not store.is_gone("m2")
    store.close()
    again = SqliteStore.open(tmp_path / "p")
    assert again.is_gone("m1") and not again.is_gone("m2")
    again.close()
