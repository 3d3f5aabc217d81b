"""Conversation persistence in SQLite.

Core module: no Qt imports, so it can be used and tested headless.
Every public write is its own committed transaction, so killing the app
at any moment loses at most the row being written.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROLES: frozenset[str] = frozenset({"system", "user", "assistant"})
STATUSES: frozenset[str] = frozenset({"complete", "streaming", "stopped", "interrupted", "error"})

# Migration i brings PRAGMA user_version from i to i + 1. Append only:
# never edit a migration that has shipped.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE conversations (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        title         TEXT NOT NULL,
        system_prompt TEXT NOT NULL DEFAULT '',
        created_at    REAL NOT NULL,
        updated_at    REAL NOT NULL
    );
    -- AUTOINCREMENT: ids are never reused, so a stale id held by the UI
    -- can never point at a different, newer message.
    CREATE TABLE messages (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id INTEGER NOT NULL
                        REFERENCES conversations(id) ON DELETE CASCADE,
        role            TEXT NOT NULL,
        content         TEXT NOT NULL,
        status          TEXT NOT NULL,
        settings        TEXT NOT NULL DEFAULT '{}',
        stats           TEXT NOT NULL DEFAULT '{}',
        prompt_text     TEXT NOT NULL DEFAULT '',
        created_at      REAL NOT NULL
    );
    CREATE INDEX idx_messages_conversation ON messages(conversation_id, id);
    CREATE INDEX idx_conversations_updated ON conversations(updated_at, id);
    -- Partial index keeps the start-up recovery scan cheap.
    CREATE INDEX idx_messages_streaming ON messages(status)
        WHERE status = 'streaming';
    """,
]
SCHEMA_VERSION: int = len(MIGRATIONS)


class StoreError(Exception):
    """A problem with the chat history file; the message is meant for users."""


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    system_prompt: str
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: int
    role: str
    content: str
    status: str
    # hash=False: dicts are unhashable, but the rest of a Message is.
    settings: dict[str, Any] = field(hash=False)
    stats: dict[str, Any] = field(hash=False)
    prompt_text: str
    created_at: float


_CONV_COLS = "id, title, system_prompt, created_at, updated_at"
_MSG_COLS = "id, conversation_id, role, content, status, settings, stats, prompt_text, created_at"


def _check(kind: str, value: str, allowed: frozenset[str]) -> str:
    if value not in allowed:
        raise ValueError(f"invalid {kind} {value!r}; expected one of {sorted(allowed)}")
    return value


def _to_json(value: dict[str, Any] | None) -> str:
    if value is None:
        return "{}"
    if not isinstance(value, dict):
        raise TypeError(f"expected a dict, got {type(value).__name__}")
    return json.dumps(value, ensure_ascii=False)


def _statements(script: str) -> Iterator[str]:
    # Not executescript(): it commits first, breaking one transaction per migration.
    buf = ""
    for piece in script.split(";"):
        buf += piece + ";"
        # complete_statement understands quotes, comments and trigger bodies.
        if sqlite3.complete_statement(buf):
            if buf.strip(" \t\r\n;"):
                yield buf
            buf = ""
    if buf.strip(" \t\r\n;"):
        yield buf


def _contains(haystack: str | None, needle: str) -> bool:
    # Python casefold() instead of SQL LIKE: LIKE only folds ASCII.
    return haystack is not None and needle in haystack.casefold()


def _message(row: tuple[Any, ...]) -> Message:
    return Message(*row[:5], json.loads(row[5]), json.loads(row[6]), *row[7:])


class ChatStore:
    """Chat history in one SQLite file. Safe to share between threads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        # One connection shared across threads, serialised by this lock, so
        # a worker thread can persist streamed tokens.
        self._lock = threading.RLock()
        self._last_ts = 0.0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves.
            conn = sqlite3.connect(
                str(self.path), timeout=5.0, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"Could not open the chat history at {self.path}: {exc}") from exc
        self._conn: sqlite3.Connection | None = conn
        try:
            self._open()
        except BaseException:
            conn.close()
            self._conn = None
            raise

    def _open(self) -> None:
        conn = self._connection()
        try:
            # Check the version before anything that writes: switching to
            # WAL rewrites the header of a file we must leave untouched.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            self._reject_newer(version)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.create_function("wb_contains", 2, _contains, deterministic=True)
        except sqlite3.DatabaseError as exc:
            # 11/26 = SQLITE_CORRUPT/NOTADB; sqlite_errorcode is 3.11+, the text covers 3.10.
            code = getattr(exc, "sqlite_errorcode", None)
            if code in (11, 26) or "not a database" in str(exc):
                raise StoreError(
                    f"The chat history file {self.path} is not a valid database "
                    "(it may be damaged or be some other kind of file). It was "
                    "left unchanged; move it aside to start a new history."
                ) from exc
            raise StoreError(f"Could not open the chat history at {self.path}: {exc}") from exc
        self._migrate(version)
        with self._read() as c:
            row = c.execute("SELECT MAX(updated_at) FROM conversations").fetchone()
        self._last_ts = row[0] or 0.0

    def _reject_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"The chat history at {self.path} was created by a newer version "
                f"of Workbench (format {version}; this version reads up to "
                f"{SCHEMA_VERSION}). Please update Workbench. The file was left "
                "unchanged."
            )

    def _migrate(self, version: int) -> None:
        while version < SCHEMA_VERSION:
            with self._tx() as conn:
                # Re-read under the write lock: another process may have
                # migrated between our check and BEGIN IMMEDIATE.
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                self._reject_newer(version)
                if version == SCHEMA_VERSION:
                    break
                for statement in _statements(MIGRATIONS[version]):
                    conn.execute(statement)
                version += 1
                # PRAGMA cannot take parameters; version is our own int.
                conn.execute(f"PRAGMA user_version = {int(version)}")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> ChatStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("The chat history has been closed.")
        return self._conn

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._connection()
            except sqlite3.Error as exc:
                raise StoreError(f"Could not read the chat history: {exc}") from exc

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One committed write transaction; rolled back on any exception."""
        with self._lock:
            conn = self._connection()
            try:
                # IMMEDIATE takes the write lock up front, so busy_timeout
                # applies instead of failing on a read-to-write upgrade.
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StoreError(f"Could not save the chat history: {exc}") from exc

    def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._read() as conn:
            return conn.execute(sql, params).fetchall()

    def _write(self, sql: str, params: tuple[Any, ...], key: int | None = None) -> int:
        """Run one statement as its own transaction; KeyError(key) if no row matched."""
        with self._tx() as conn:
            count = conn.execute(sql, params).rowcount
            if key is not None and count == 0:
                raise KeyError(key)
            return count

    def _now(self) -> float:
        # Strictly increasing even if the wall clock stalls or steps back,
        # so "newest first" never reorders equal timestamps.
        self._last_ts = max(time.time(), self._last_ts + 1e-6)
        return self._last_ts

    # -- conversations ----------------------------------------------------

    def create_conversation(self, title: str = "New chat", system_prompt: str = "") -> Conversation:
        with self._tx() as conn:
            now = self._now()
            sql = "INSERT INTO conversations (title, system_prompt, created_at, updated_at)"
            cur = conn.execute(sql + " VALUES (?, ?, ?, ?)", (title, system_prompt, now, now))
        return Conversation(int(cur.lastrowid or 0), title, system_prompt, now, now)

    def get_conversation(self, conversation_id: int) -> Conversation:
        sql = f"SELECT {_CONV_COLS} FROM conversations WHERE id = ?"
        rows = self._fetch(sql, (conversation_id,))
        if not rows:
            raise KeyError(conversation_id)
        return Conversation(*rows[0])

    def list_conversations(self, search: str = "") -> list[Conversation]:
        """Newest activity first; search matches title or any message."""
        sql = f"SELECT {_CONV_COLS} FROM conversations"
        params: tuple[str, ...] = ()
        if search:
            sql += (
                " WHERE wb_contains(title, ?1) OR EXISTS (SELECT 1 FROM messages m"
                " WHERE m.conversation_id = conversations.id"
                " AND wb_contains(m.content, ?1))"
            )
            params = (search.casefold(),)
        sql += " ORDER BY updated_at DESC, id DESC"
        return [Conversation(*r) for r in self._fetch(sql, params)]

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        # Deliberately does not bump updated_at: renaming is not activity,
        # and the list should not jump around under the user.
        sql = "UPDATE conversations SET title = ? WHERE id = ?"
        self._write(sql, (title, conversation_id), conversation_id)

    def set_system_prompt(self, conversation_id: int, system_prompt: str) -> None:
        sql = "UPDATE conversations SET system_prompt = ? WHERE id = ?"
        self._write(sql, (system_prompt, conversation_id), conversation_id)

    def delete_conversation(self, conversation_id: int) -> None:
        # Messages go too: ON DELETE CASCADE with foreign_keys=ON.
        sql = "DELETE FROM conversations WHERE id = ?"
        self._write(sql, (conversation_id,), conversation_id)

    # -- messages ---------------------------------------------------------

    def add_message(
        self,
        conversation_id: int,
        role: str,
        content: str,
        *,
        status: str = "complete",
        settings: dict[str, Any] | None = None,
        stats: dict[str, Any] | None = None,
        prompt_text: str = "",
    ) -> Message:
        # Validate and serialise before opening the transaction.
        values = (_check("role", role, ROLES), content, _check("status", status, STATUSES))
        values += (_to_json(settings), _to_json(stats), prompt_text)
        with self._tx() as conn:
            now = self._now()
            sql = "UPDATE conversations SET updated_at = ? WHERE id = ?"
            if conn.execute(sql, (now, conversation_id)).rowcount == 0:
                raise KeyError(conversation_id)
            cur = conn.execute(
                "INSERT INTO messages (conversation_id, role, content, status, settings,"
                " stats, prompt_text, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, *values, now),
            )
            message_id = int(cur.lastrowid or 0)
        return self.get_message(message_id)

    def update_message(
        self,
        message_id: int,
        *,
        content: str | None = None,
        status: str | None = None,
        settings: dict[str, Any] | None = None,
        stats: dict[str, Any] | None = None,
        prompt_text: str | None = None,
    ) -> Message:
        """Change only the given fields; returns the updated row."""
        given = {
            "content": content,
            "status": None if status is None else _check("status", status, STATUSES),
            "settings": None if settings is None else _to_json(settings),
            "stats": None if stats is None else _to_json(stats),
            "prompt_text": prompt_text,
        }
        changes = {name: value for name, value in given.items() if value is not None}
        if changes:
            # Column names come from the fixed keys above, never from input.
            assignments = ", ".join(f"{name} = ?" for name in changes)
            sql = f"UPDATE messages SET {assignments} WHERE id = ?"
            self._write(sql, (*changes.values(), message_id), message_id)
        return self.get_message(message_id)

    def get_message(self, message_id: int) -> Message:
        rows = self._fetch(f"SELECT {_MSG_COLS} FROM messages WHERE id = ?", (message_id,))
        if not rows:
            raise KeyError(message_id)
        return _message(rows[0])

    def messages(self, conversation_id: int) -> list[Message]:
        sql = f"SELECT {_MSG_COLS} FROM messages WHERE conversation_id = ? ORDER BY id"
        return [_message(r) for r in self._fetch(sql, (conversation_id,))]

    def delete_messages_from(self, message_id: int) -> int:
        """Delete a message and all later ones in its conversation."""
        # Ids only grow (AUTOINCREMENT), so "later" is simply a larger id.
        sql = (
            "DELETE FROM messages WHERE id >= ?1 AND conversation_id ="
            " (SELECT conversation_id FROM messages WHERE id = ?1)"
        )
        return self._write(sql, (message_id,), message_id)

    def recover_interrupted(self) -> int:
        """Mark replies left "streaming" by a killed process as interrupted."""
        sql = "UPDATE messages SET status = 'interrupted' WHERE status = 'streaming'"
        return self._write(sql, ())
