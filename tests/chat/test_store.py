from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from workbench.chat import store as store_mod
from workbench.chat.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    ChatStore,
    Message,
    StoreError,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "dir" / "chats.sqlite3"


@pytest.fixture
def store(db_path: Path) -> Iterator[ChatStore]:
    s = ChatStore(db_path)
    yield s
    s.close()


def _user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


# -- opening, migrations, file safety -----------------------------------------


def test_creates_parent_dir_and_sets_schema_version(db_path: Path) -> None:
    assert not db_path.parent.exists()
    ChatStore(db_path).close()
    assert db_path.is_file()
    assert SCHEMA_VERSION == len(MIGRATIONS) >= 1
    assert _user_version(db_path) == SCHEMA_VERSION


def test_wal_mode_sync_and_foreign_keys(store: ChatStore, db_path: Path) -> None:
    conn = store._connection()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    # WAL is persistent in the file, so an independent connection sees it too.
    other = sqlite3.connect(db_path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        other.close()


def test_reopen_is_idempotent(db_path: Path) -> None:
    with ChatStore(db_path) as s:
        conv = s.create_conversation("Keep me")
        s.add_message(conv.id, "user", "hello")
        schema = (
            s._connection().execute("SELECT type, name FROM sqlite_master ORDER BY name").fetchall()
        )
    for _ in range(3):
        with ChatStore(db_path) as s:
            again = (
                s._connection()
                .execute("SELECT type, name FROM sqlite_master ORDER BY name")
                .fetchall()
            )
            assert again == schema
            assert [c.title for c in s.list_conversations()] == ["Keep me"]
            assert [m.content for m in s.messages(conv.id)] == ["hello"]
    assert _user_version(db_path) == SCHEMA_VERSION


def test_persistence_across_close_and_reopen(db_path: Path) -> None:
    s = ChatStore(db_path)
    conv = s.create_conversation("Persist", system_prompt="be brief")
    msg = s.add_message(
        conv.id,
        "assistant",
        "hi",
        settings={"temperature": 0.7},
        stats={"tokens": 3},
        prompt_text="<s>hi",
    )
    s.close()
    s2 = ChatStore(db_path)
    try:
        assert s2.get_conversation(conv.id) == s2.list_conversations()[0]
        assert s2.get_conversation(conv.id).system_prompt == "be brief"
        assert s2.get_message(msg.id) == msg
    finally:
        s2.close()


def test_newer_schema_raises_and_file_is_untouched(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE future_thing (x)")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="newer version"):
        ChatStore(path)
    assert path.read_bytes() == before
    assert _user_version(path) == SCHEMA_VERSION + 1


@pytest.mark.parametrize("payload", [b"this is definitely not sqlite\n" * 200, b"\x00\xff" * 4096])
def test_non_database_file_raises_and_is_untouched(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(payload)
    with pytest.raises(StoreError, match="not a valid database"):
        ChatStore(path)
    assert path.read_bytes() == payload


def test_pending_migration_is_applied_once(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ChatStore(db_path).close()
    extra = "ALTER TABLE conversations ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;"
    monkeypatch.setattr(store_mod, "MIGRATIONS", [*MIGRATIONS, extra])
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    for _ in range(2):  # a second run must not re-apply (duplicate column)
        with ChatStore(db_path) as s:
            cols = [r[1] for r in s._connection().execute("PRAGMA table_info(conversations)")]
            assert cols.count("pinned") == 1
    assert _user_version(db_path) == SCHEMA_VERSION + 1


def test_migration_recheck_under_lock_skips_done_work(store: ChatStore) -> None:
    # Simulates another process migrating between our version check and
    # BEGIN IMMEDIATE: the stale version must not re-run any migration.
    conn = store._connection()
    schema = conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    store._migrate(0)
    assert conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall() == (schema)
    assert _user_version(Path(store.path)) == SCHEMA_VERSION


def test_failing_migration_rolls_back_whole_step(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ChatStore(db_path).close()
    bad = "CREATE TABLE half_done (x); THIS IS NOT SQL;"
    monkeypatch.setattr(store_mod, "MIGRATIONS", [*MIGRATIONS, bad])
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(StoreError):
        ChatStore(db_path)
    conn = sqlite3.connect(db_path)
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "half_done" not in names
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


def test_statement_splitter_keeps_semicolons_in_strings_and_triggers() -> None:
    script = """
    CREATE TABLE t (x TEXT DEFAULT 'a;b'); -- comment; with semicolon
    CREATE TRIGGER tr AFTER INSERT ON t BEGIN
        UPDATE t SET x = 'c;d' WHERE rowid = new.rowid;
    END;
    """
    parts = list(store_mod._statements(script))
    assert len(parts) == 2
    conn = sqlite3.connect(":memory:")
    for part in parts:
        conn.execute(part)
    conn.execute("INSERT INTO t DEFAULT VALUES")
    assert conn.execute("SELECT x FROM t").fetchone()[0] == "c;d"


# -- conversations ------------------------------------------------------------


def test_create_get_and_list_newest_first(store: ChatStore) -> None:
    a = store.create_conversation()
    b = store.create_conversation("Second", system_prompt="sys")
    c = store.create_conversation("Third")
    assert a.title == "New chat" and a.system_prompt == ""
    assert store.get_conversation(b.id) == b
    assert b.system_prompt == "sys"
    assert a.updated_at < b.updated_at < c.updated_at
    assert [x.id for x in store.list_conversations()] == [c.id, b.id, a.id]
    # Activity moves a conversation to the top.
    store.add_message(a.id, "user", "bump")
    assert [x.id for x in store.list_conversations()] == [a.id, c.id, b.id]
    assert store.get_conversation(a.id).updated_at > c.updated_at


def test_list_order_survives_identical_clock(
    store: ChatStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_mod.time, "time", lambda: 1000.0)
    convs = [store.create_conversation(f"c{i}") for i in range(5)]
    stamps = [c.updated_at for c in convs]
    assert stamps == sorted(set(stamps))  # strictly increasing despite the clock
    ids = [c.id for c in convs]
    assert [c.id for c in store.list_conversations()] == ids[::-1]
    # Even identical stored timestamps (e.g. an imported file) order by id.
    store._connection().execute("UPDATE conversations SET updated_at = 5.0")
    assert [c.id for c in store.list_conversations()] == ids[::-1]


def test_search_title_and_content_case_insensitive(store: ChatStore) -> None:
    recipes = store.create_conversation("Pasta RECIPES")
    physics = store.create_conversation("Physics")
    store.add_message(physics.id, "user", "Explain the Schrödinger equation")
    store.add_message(physics.id, "assistant", "It describes 100% of psi_t")
    empty = store.create_conversation("Nothing here")

    def ids(q: str) -> list[int]:
        return [c.id for c in store.list_conversations(q)]

    assert ids("recipes") == [recipes.id]
    assert ids("SCHRÖDINGER") == [physics.id]  # non-ASCII folding too
    assert ids("pHySiCs") == [physics.id]
    assert ids("e") == [empty.id, physics.id, recipes.id]
    assert ids("") == [empty.id, physics.id, recipes.id]
    # LIKE wildcards are taken literally.
    assert ids("100%") == [physics.id]
    assert ids("psi_t") == [physics.id]
    assert ids("%") == [physics.id]
    assert ids("zebra") == []


def test_rename_and_system_prompt(store: ChatStore) -> None:
    conv = store.create_conversation("Old")
    store.rename_conversation(conv.id, "New title")
    store.set_system_prompt(conv.id, "You are terse.")
    got = store.get_conversation(conv.id)
    assert got.title == "New title"
    assert got.system_prompt == "You are terse."
    assert [c.title for c in store.list_conversations("new t")] == ["New title"]
    with pytest.raises(KeyError):
        store.rename_conversation(9999, "x")
    with pytest.raises(KeyError):
        store.set_system_prompt(9999, "x")


def test_delete_conversation_cascades(store: ChatStore, db_path: Path) -> None:
    doomed = store.create_conversation("Doomed")
    kept = store.create_conversation("Kept")
    m1 = store.add_message(doomed.id, "user", "a")
    store.add_message(doomed.id, "assistant", "b")
    k1 = store.add_message(kept.id, "user", "c")
    store.delete_conversation(doomed.id)
    with pytest.raises(KeyError):
        store.get_conversation(doomed.id)
    with pytest.raises(KeyError):
        store.get_message(m1.id)
    assert store.messages(doomed.id) == []
    assert store.messages(kept.id) == [k1]
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 1
    finally:
        conn.close()
    with pytest.raises(KeyError):
        store.delete_conversation(doomed.id)


def test_missing_ids_raise_key_error(store: ChatStore) -> None:
    with pytest.raises(KeyError):
        store.get_conversation(42)
    with pytest.raises(KeyError):
        store.add_message(42, "user", "orphan")
    with pytest.raises(KeyError):
        store.get_message(42)
    with pytest.raises(KeyError):
        store.update_message(42, content="x")
    with pytest.raises(KeyError):
        store.update_message(42)
    with pytest.raises(KeyError):
        store.delete_messages_from(42)


# -- messages -----------------------------------------------------------------


def test_add_and_get_message_round_trips_json(store: ChatStore) -> None:
    conv = store.create_conversation()
    settings = {
        "temperature": 0.7,
        "top_p": 0.95,
        "stop": ["</s>", "\n\n"],
        "seed": None,
        "label": "naïve ☃",
    }
    stats = {"tokens": 42, "tokens_per_s": 31.5, "ttft_s": 0.12, "nested": {"a": [1, 2]}}
    msg = store.add_message(
        conv.id,
        "assistant",
        "Hello!",
        status="streaming",
        settings=settings,
        stats=stats,
        prompt_text="<|user|>hi<|assistant|>",
    )
    assert isinstance(msg, Message)
    assert msg.conversation_id == conv.id
    assert (msg.role, msg.content, msg.status) == ("assistant", "Hello!", "streaming")
    assert msg.settings == settings and msg.stats == stats
    assert msg.prompt_text == "<|user|>hi<|assistant|>"
    assert store.get_message(msg.id) == msg
    assert hash(msg) == hash(store.get_message(msg.id))  # dict fields don't break hash
    plain = store.add_message(conv.id, "user", "q")
    assert (plain.settings, plain.stats, plain.prompt_text) == ({}, {}, "")
    assert plain.status == "complete"
    assert plain.created_at > msg.created_at


def test_messages_are_ordered_by_insertion(store: ChatStore) -> None:
    conv = store.create_conversation()
    other = store.create_conversation()
    added = [
        store.add_message(conv.id, r, f"m{i}")
        for i, r in enumerate(["system", "user", "assistant", "user"])
    ]
    store.add_message(other.id, "user", "elsewhere")
    assert store.messages(conv.id) == added


def test_update_message_changes_only_given_fields(store: ChatStore) -> None:
    conv = store.create_conversation()
    msg = store.add_message(
        conv.id, "assistant", "", status="streaming", settings={"temperature": 1.0}, prompt_text="P"
    )
    upd = store.update_message(msg.id, content="partial answer")
    assert upd.content == "partial answer"
    assert (upd.status, upd.settings, upd.prompt_text) == ("streaming", {"temperature": 1.0}, "P")
    done = store.update_message(
        msg.id, status="complete", stats={"tokens": 2, "tokens_per_s": 10.0}
    )
    assert done.content == "partial answer" and done.status == "complete"
    assert done.stats == {"tokens": 2, "tokens_per_s": 10.0}
    assert store.get_message(msg.id) == done
    cleared = store.update_message(msg.id, content="", settings={}, prompt_text="")
    assert (cleared.content, cleared.settings, cleared.prompt_text) == ("", {}, "")
    assert cleared.stats == done.stats
    assert store.update_message(msg.id) == cleared  # no fields: unchanged row


def test_invalid_role_and_status_rejected(store: ChatStore) -> None:
    conv = store.create_conversation()
    with pytest.raises(ValueError):
        store.add_message(conv.id, "robot", "x")
    with pytest.raises(ValueError):
        store.add_message(conv.id, "user", "x", status="done")
    msg = store.add_message(conv.id, "user", "ok")
    with pytest.raises(ValueError):
        store.update_message(msg.id, status="bogus", content="changed")
    with pytest.raises(TypeError):
        store.add_message(conv.id, "user", "x", settings=[1, 2])  # type: ignore[arg-type]
    assert store.messages(conv.id) == [msg]  # nothing half-written


def test_delete_messages_from(store: ChatStore) -> None:
    conv = store.create_conversation()
    other = store.create_conversation()
    ms = [
        store.add_message(conv.id, "user" if i % 2 == 0 else "assistant", f"m{i}") for i in range(5)
    ]
    # Interleave another conversation's message so ids are not contiguous.
    o = store.add_message(other.id, "user", "other")
    late = store.add_message(conv.id, "user", "late")
    assert store.delete_messages_from(ms[2].id) == 4  # m2, m3, m4, late
    assert store.messages(conv.id) == ms[:2]
    assert store.messages(other.id) == [o]
    with pytest.raises(KeyError):
        store.get_message(late.id)
    # Ids are never reused, so a new message still sorts last.
    new = store.add_message(conv.id, "user", "again")
    assert new.id > late.id
    assert store.delete_messages_from(ms[0].id) == 3
    assert store.messages(conv.id) == []


def test_recover_interrupted(store: ChatStore) -> None:
    conv = store.create_conversation()
    s1 = store.add_message(conv.id, "assistant", "half", status="streaming")
    s2 = store.add_message(conv.id, "assistant", "also half", status="streaming")
    ok = store.add_message(conv.id, "assistant", "done")
    err = store.add_message(conv.id, "assistant", "", status="error")
    assert store.recover_interrupted() == 2
    assert store.get_message(s1.id).status == "interrupted"
    assert store.get_message(s2.id).status == "interrupted"
    assert store.get_message(s2.id).content == "also half"
    assert store.get_message(ok.id).status == "complete"
    assert store.get_message(err.id).status == "error"
    assert store.recover_interrupted() == 0


# -- durability / concurrency -------------------------------------------------


def test_committed_write_visible_to_second_connection_before_close(
    store: ChatStore, db_path: Path
) -> None:
    conv = store.create_conversation("Crash test")
    msg = store.add_message(conv.id, "assistant", "tok", status="streaming")
    store.update_message(msg.id, content="tok tok")
    peer = sqlite3.connect(db_path)  # opened while the store is still open
    try:
        row = peer.execute(
            "SELECT m.content, m.status, c.title FROM messages m"
            " JOIN conversations c ON c.id = m.conversation_id WHERE m.id = ?",
            (msg.id,),
        ).fetchone()
        assert row == ("tok tok", "streaming", "Crash test")
    finally:
        peer.close()
    assert not store._connection().in_transaction  # autocommitted


def test_killed_process_keeps_rows_and_recovers(db_path: Path) -> None:
    # The child writes then dies without close() or any cleanup.
    code = (
        "import os, sys\n"
        "from workbench.chat.store import ChatStore\n"
        "s = ChatStore(sys.argv[1])\n"
        "c = s.create_conversation('Killed')\n"
        "s.add_message(c.id, 'user', 'question')\n"
        "m = s.add_message(c.id, 'assistant', 'partial', status='streaming')\n"
        "s.update_message(m.id, content='partial more')\n"
        "os._exit(0)\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(db_path)],
        cwd=REPO_ROOT,
        check=True,
        env={"PYTHONPATH": str(REPO_ROOT)},
    )
    with ChatStore(db_path) as s:
        (conv,) = s.list_conversations()
        assert conv.title == "Killed"
        assert s.recover_interrupted() == 1
        msgs = s.messages(conv.id)
        assert [(m.content, m.status) for m in msgs] == [
            ("question", "complete"),
            ("partial more", "interrupted"),
        ]


def test_usable_from_another_thread(store: ChatStore) -> None:
    conv = store.create_conversation()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for i in range(20):
                store.add_message(conv.id, "assistant", f"t{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.messages(conv.id)) == 60


def test_closed_store_raises_store_error(db_path: Path) -> None:
    s = ChatStore(db_path)
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError):
        s.list_conversations()
    with pytest.raises(StoreError):
        s.create_conversation()
