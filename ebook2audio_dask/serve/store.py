"""The server's persistent job queue: uploads, jobs, their books, state and progress in SQLite.

One :class:`JobStore` per server process holds one SQLite connection (WAL
journal, synchronous FULL: a process killed or a machine losing power at any
moment leaves the last committed state) behind one lock: the API's request
threads, the :class:`~.runner.Runner` and its job threads share it.  Every
change bumps :attr:`JobStore.version` and wakes the threads blocked in
:meth:`JobStore.wait_change` (the event streams).

Records come out as plain JSON-able dicts, the API's response bodies.  A job::

    {id, created, updated (epoch seconds), state, priority, options, output,
     error, position (1 = next to start; queued jobs only, else null),
     progress: {chunks_done, chunks_total, fraction (0..1), eta_s or null},
     books: [{index (0-based), upload_id, name, title, chapters, state,
              chunks_done, chunks_total, chunks_from_cache, eta_s, error,
              exit_code, files: [{name, kind, size}]}]}

Job states: ``queued`` → ``running`` → ``done`` / ``failed`` / ``cancelled``;
``running`` → ``cancelling`` (cancel asked, the runner stops its tasks) →
``cancelled``; ``running`` → ``waiting`` (the scheduler went away) →
``queued`` once it is back.  Book states: ``queued``, ``running``, ``done``,
``failed``, ``cancelled``.  A job is ``done`` when every book is done,
``failed`` when any failed (the others still finish).

The store changes rows only: the files of uploads and outputs are the
caller's (:meth:`delete_upload` and :meth:`delete_job` remove no file;
:meth:`~.runner.Runner.delete_job` also removes a job's output folder).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import UsageError

__all__ = [
    "BOOK_STATES",
    "FINAL_STATES",
    "JOB_STATES",
    "SCHEMA_VERSION",
    "JobStore",
]

#: Version of the database layout; a later version migrates older files (see ``_MIGRATIONS``).
SCHEMA_VERSION = 1

#: Every state of a job.
JOB_STATES = ("queued", "running", "waiting", "cancelling", "done", "failed", "cancelled")
#: Every state of a job's book.
BOOK_STATES = ("queued", "running", "done", "failed", "cancelled")
#: States a job or book does not leave by itself.
FINAL_STATES = ("done", "failed", "cancelled")

#: Book columns the runner may set through :meth:`JobStore.update_books`.
_BOOK_FIELDS = ("state", "title", "chunks_done", "chunks_total", "chunks_from_cache", "eta_s",
                "error", "exit_code", "files")  # fmt: skip

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    summary TEXT,
    error TEXT,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL,
    options TEXT NOT NULL,
    output TEXT NOT NULL,
    error TEXT,
    eta_s REAL
);
CREATE TABLE IF NOT EXISTS books (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    upload_id TEXT NOT NULL,
    name TEXT NOT NULL,
    title TEXT,
    chapters TEXT,
    state TEXT NOT NULL,
    chunks_done INTEGER NOT NULL DEFAULT 0,
    chunks_total INTEGER NOT NULL DEFAULT 0,
    chunks_from_cache INTEGER NOT NULL DEFAULT 0,
    eta_s REAL,
    error TEXT,
    exit_code INTEGER,
    files TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (job_id, idx)
);
CREATE INDEX IF NOT EXISTS books_upload ON books(upload_id);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
"""

#: ``{from_version: sql}``: the statements (``;``-separated) that turn a database of that
#: version into the next one, run in one transaction.
_MIGRATIONS: dict[int, str] = {}

#: Sort group of each job state in :meth:`JobStore.list_jobs`.
_GROUP = {"running": 0, "cancelling": 0, "waiting": 1, "queued": 2}


def _new_id() -> str:
    return secrets.token_hex(8)


def _loads(text: str | None, default: Any = None) -> Any:
    return default if text is None else json.loads(text)


class JobStore:
    """Uploads and jobs in the SQLite file *path* (created if missing; survives restarts).

    Thread-safe: one connection, one lock.  See the module docstring for the
    records' shape and the states.

    Parameters
    ----------
    path : Path
        The database file (``<data>/queue.sqlite3``); its folder is created.

    Raises
    ------
    UsageError
        *path* is not a job queue this version can read.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        #: Bumped on every change (this process's counter: it starts again at 1).
        self.version = 1
        try:
            self._db = sqlite3.connect(
                str(self.path), check_same_thread=False, isolation_level=None, timeout=30
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a job the API said it created survives a power loss too (WAL + NORMAL
            # would keep the file sound but could lose the last commits)
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"{self.path}: not a job queue database ({exc})") from None

    # -- plumbing ------------------------------------------------------------------------------

    def _migrate(self) -> None:
        with self._write():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row["value"]) if row else SCHEMA_VERSION
            if version > SCHEMA_VERSION:
                raise UsageError(
                    f"{self.path}: job queue written by a newer ebook2audio (schema {version}, "
                    f"this one reads up to {SCHEMA_VERSION})"
                )
            while version < SCHEMA_VERSION:
                for statement in _MIGRATIONS[version].split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                version += 1
            self._db.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(version),),
            )

    def _write(self):
        """A write transaction under the lock (``with self._write(): ...``)."""
        return _Transaction(self)

    def _bump(self) -> None:
        self.version += 1
        self._changed.notify_all()

    def close(self) -> None:
        """Close the database (the store is unusable after)."""
        with self._lock:
            self._db.close()

    def wait_change(self, version: int, timeout: float) -> int:
        """Block until :attr:`version` differs from *version* or *timeout* s pass; return it."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._changed:
            while self.version == version:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return self.version

    # -- uploads -------------------------------------------------------------------------------

    def add_upload(
        self, *, name: str, path: str, size: int, summary: dict | None, error: str | None
    ) -> dict:
        """Record an upload stored at *path*; returns it (see :meth:`get_upload`)."""
        upload_id = _new_id()
        with self._write():
            self._db.execute(
                "INSERT INTO uploads(id, name, path, size, summary, error, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (upload_id, name, str(path), int(size),
                 None if summary is None else json.dumps(summary), error, time.time()),
            )  # fmt: skip
        return self.get_upload(upload_id)

    def get_upload(self, upload_id: str) -> dict | None:
        """``{id, name, path, size, summary, error, created, job_id}`` or None.

        *job_id* is the latest job that uses the upload, else None.
        """
        with self._lock:
            row = self._db.execute("SELECT * FROM uploads WHERE id=?", (upload_id,)).fetchone()
            if row is None:
                return None
            used = self._db.execute(
                "SELECT b.job_id FROM books b JOIN jobs j ON j.id=b.job_id "
                "WHERE b.upload_id=? ORDER BY j.seq DESC LIMIT 1",
                (upload_id,),
            ).fetchone()
        return {
            "id": row["id"],
            "name": row["name"],
            "path": row["path"],
            "size": row["size"],
            "summary": _loads(row["summary"]),
            "error": row["error"],
            "created": row["created"],
            "job_id": used["job_id"] if used else None,
        }

    def delete_upload(self, upload_id: str) -> bool:
        """Forget an upload no job uses (its file is the caller's); False if used or unknown."""
        with self._write():
            if self._db.execute("SELECT 1 FROM books WHERE upload_id=?", (upload_id,)).fetchone():
                return False
            deleted = self._db.execute("DELETE FROM uploads WHERE id=?", (upload_id,)).rowcount
        return bool(deleted)

    def pending_uploads(self) -> int:
        """How many uploads no job uses."""
        with self._lock:
            return self._db.execute(
                "SELECT COUNT(*) FROM uploads u WHERE NOT EXISTS "
                "(SELECT 1 FROM books b WHERE b.upload_id=u.id)"
            ).fetchone()[0]

    # -- jobs ----------------------------------------------------------------------------------

    def create_job(self, *, books: list[dict], options: dict, priority: int, output: str) -> dict:
        """Queue a job; returns it.

        Parameters
        ----------
        books : list of dict
            ``{"upload_id": str, "chapters": str or None}`` per book, in order
            (an upload given twice fails there: see :class:`~.runner.Runner`).
        options : dict
            The job's options, JSON-able (already validated by the API).
        priority : int
            Higher runs first.
        output : str
            The server's output folder (path or fsspec URL): the job writes into
            ``<output>/<job id>`` (the job's ``output``).

        Raises
        ------
        LookupError
            A book's upload is not known.
        ValueError
            No book.
        """
        if not books:
            raise ValueError("a job needs at least one book")
        job_id = _new_id()
        now = time.time()
        with self._write():
            rows = []
            for i, book in enumerate(books):
                upload = self._db.execute(
                    "SELECT name, summary FROM uploads WHERE id=?", (book["upload_id"],)
                ).fetchone()
                if upload is None:
                    raise LookupError(f"no upload {book['upload_id']!r}")
                summary = _loads(upload["summary"]) or {}
                rows.append((job_id, i, book["upload_id"], upload["name"], summary.get("title"),
                             book.get("chapters"), "queued"))  # fmt: skip
            self._db.execute(
                "INSERT INTO jobs(id, created, updated, state, priority, options, output) "
                "VALUES (?, ?, ?, 'queued', ?, ?, ?)",
                (job_id, now, now, int(priority), json.dumps(options),
                 f"{output.rstrip('/')}/{job_id}"),
            )  # fmt: skip
            self._db.executemany(
                "INSERT INTO books(job_id, idx, upload_id, name, title, chapters, state) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        return self.get_job(job_id)

    def get_job(self, job_id: str) -> dict | None:
        """The job (see the module docstring), or None."""
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
            return None if row is None else self._job_dicts([row])[0]

    def list_jobs(self, finished: int | None = None) -> list[dict]:
        """Every job in queue order: running (and cancelling), waiting, queued (priority
        desc, then oldest first), then finished ones, most recently finished first.

        Parameters
        ----------
        finished : int, optional
            Keep only this many finished jobs (the newest); None: all of them.
        """
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs").fetchall()
            rows.sort(key=_queue_order)
            if finished is not None:
                active = [r for r in rows if r["state"] not in FINAL_STATES]
                rows = active + [r for r in rows if r["state"] in FINAL_STATES][: max(0, finished)]
            return self._job_dicts(rows)

    def set_priority(self, job_id: str, priority: int) -> dict | None:
        """Change a job's priority (reorders the queue; a running job keeps its tasks' order)."""
        with self._write():
            n = self._db.execute(
                "UPDATE jobs SET priority=?, updated=? WHERE id=?",
                (int(priority), time.time(), job_id),
            ).rowcount
        return self.get_job(job_id) if n else None

    def cancel(self, job_id: str) -> dict | None:
        """Cancel a job: queued or waiting → ``cancelled`` at once, running → ``cancelling``
        (the runner stops its tasks, then makes it ``cancelled``).  A finished job is
        returned unchanged."""
        with self._write():
            state = self._state(job_id)
            if state is None:
                return None
            if state in ("queued", "waiting"):
                self._finish_books(job_id, "cancelled")
                self._set_job(job_id, "cancelled")
            elif state == "running":
                self._set_job(job_id, "cancelling")
        return self.get_job(job_id)

    def retry(self, job_id: str) -> dict | None:
        """Queue a failed or cancelled job's failed and cancelled books again (the job too).

        Any other job is returned unchanged.
        """
        with self._write():
            if self._state(job_id) in ("failed", "cancelled"):
                self._db.execute(
                    "UPDATE books SET state='queued', error=NULL, exit_code=NULL, eta_s=NULL "
                    "WHERE job_id=? AND state IN ('failed', 'cancelled')",
                    (job_id,),
                )
                self._set_job(job_id, "queued")
        return self.get_job(job_id)

    def delete_job(self, job_id: str) -> bool:
        """Forget a finished job (its outputs are left where they are); False otherwise."""
        with self._write():
            if self._state(job_id) not in FINAL_STATES:
                return False
            self._db.execute("DELETE FROM books WHERE job_id=?", (job_id,))
            self._db.execute("DELETE FROM jobs WHERE id=?", (job_id,))
        return True

    # -- what the runner uses ------------------------------------------------------------------

    def claim_next(self) -> dict | None:
        """The first queued job in queue order, now ``running``; None when none is queued."""
        with self._write():
            rows = self._db.execute("SELECT * FROM jobs WHERE state='queued'").fetchall()
            if not rows:
                return None
            row = min(rows, key=_queue_order)
            self._set_job(row["id"], "running")
        return self.get_job(row["id"])

    def update_books(
        self, job_id: str, books: Mapping[int, Mapping[str, Any]], *, eta_s: float | None = None
    ) -> None:
        """Set fields of a job's books (``{index: {field: value}}``) and the job's ETA at once.

        Fields: ``state``, ``title``, ``chunks_done``, ``chunks_total``,
        ``chunks_from_cache``, ``eta_s``, ``error``, ``exit_code``, ``files``
        (a list of ``{name, kind, size, url}``; *url* is kept for
        :meth:`file_url` and not shown).
        """
        with self._write():
            for index, fields in books.items():
                unknown = set(fields) - set(_BOOK_FIELDS)
                if unknown:
                    raise TypeError(f"not a book field: {sorted(unknown)}")
                if not fields:
                    continue
                values = [json.dumps(v) if k == "files" else v for k, v in fields.items()]
                sets = ", ".join(f"{k}=?" for k in fields)
                self._db.execute(
                    f"UPDATE books SET {sets} WHERE job_id=? AND idx=?",
                    (*values, job_id, int(index)),
                )
            self._db.execute(
                "UPDATE jobs SET eta_s=?, updated=? WHERE id=?", (eta_s, time.time(), job_id)
            )

    def release_job(self, job_id: str, state: str, *, error: str | None = None) -> dict | None:
        """End the runner's hold on a job.

        *state*: ``queued`` (a clean shutdown: books not finished go back to
        ``queued``), ``waiting`` (the scheduler went away: likewise),
        ``cancelled`` (books not finished → ``cancelled``; with none left, as
        ``finished``), or ``finished``:
        ``failed`` when a book failed, else ``cancelled`` when one was
        cancelled, else ``done`` (a book left unfinished fails with *error*).
        """
        with self._write():
            if self._state(job_id) is None:
                return None
            if state in ("queued", "waiting"):
                self._db.execute(
                    "UPDATE books SET state='queued', eta_s=NULL WHERE job_id=? AND "
                    "state IN ('queued', 'running')",
                    (job_id,),
                )
                self._set_job(job_id, state)
            elif state == "cancelled" and self._unfinished(job_id):
                self._finish_books(job_id, "cancelled")
                self._set_job(job_id, "cancelled")
            elif state in ("finished", "cancelled"):
                self._db.execute(
                    "UPDATE books SET state='failed', error=?, exit_code=1 WHERE job_id=? AND "
                    "state IN ('queued', 'running')",
                    (error or "the book did not finish", job_id),
                )
                states = [r[0] for r in self._db.execute(
                    "SELECT state FROM books WHERE job_id=? ORDER BY idx", (job_id,))]  # fmt: skip
                first = self._db.execute(
                    "SELECT error FROM books WHERE job_id=? AND state='failed' ORDER BY idx "
                    "LIMIT 1",
                    (job_id,),
                ).fetchone()
                if first is not None:
                    n = states.count("failed")
                    why = f"{n} of {len(states)} book(s) failed: {first[0]}"
                    self._set_job(job_id, "failed", error=why)
                elif "cancelled" in states:
                    self._set_job(job_id, "cancelled")
                else:
                    self._set_job(job_id, "done")
            else:
                raise ValueError(f"cannot release a job as {state!r}")
        return self.get_job(job_id)

    def recover(self) -> list[str]:
        """After a server died: its running and waiting jobs → ``queued`` (their running books
        too), its cancelling jobs → ``cancelled``.  Returns the ids of the jobs queued again."""
        with self._write():
            rows = self._db.execute(
                "SELECT id, state FROM jobs WHERE state IN ('running', 'waiting', 'cancelling')"
            ).fetchall()
            requeued = []
            for row in rows:
                if row["state"] == "cancelling":
                    self._finish_books(row["id"], "cancelled")
                    self._set_job(row["id"], "cancelled")
                else:
                    self._db.execute(
                        "UPDATE books SET state='queued', eta_s=NULL WHERE job_id=? AND "
                        "state='running'",
                        (row["id"],),
                    )
                    self._set_job(row["id"], "queued")
                    requeued.append(row["id"])
        return requeued

    def requeue_waiting(self) -> list[str]:
        """Jobs ``waiting`` for the scheduler → ``queued``; returns their ids."""
        with self._write():
            ids = [r[0] for r in self._db.execute("SELECT id FROM jobs WHERE state='waiting'")]
            for job_id in ids:
                self._set_job(job_id, "queued")
        return ids

    def job_states(self, job_ids: Iterable[str]) -> dict[str, str]:
        """``{job id: state}`` of the given jobs that exist."""
        ids = list(job_ids)
        if not ids:
            return {}
        with self._lock:
            marks = ",".join("?" * len(ids))
            return {
                r[0]: r[1]
                for r in self._db.execute(
                    f"SELECT id, state FROM jobs WHERE id IN ({marks})",
                    ids,
                )
            }

    def file_url(self, job_id: str, index: int, name: str) -> str | None:
        """The URL of the file *name* recorded for book *index* of *job_id*, else None."""
        with self._lock:
            row = self._db.execute(
                "SELECT files FROM books WHERE job_id=? AND idx=?", (job_id, int(index))
            ).fetchone()
        if row is None:
            return None
        for f in _loads(row["files"], []):
            if f.get("name") == name and f.get("url"):
                return f["url"]
        return None

    # -- helpers (under the lock) --------------------------------------------------------------

    def _state(self, job_id: str) -> str | None:
        row = self._db.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
        return None if row is None else row[0]

    def _unfinished(self, job_id: str) -> int:
        return self._db.execute(
            "SELECT COUNT(*) FROM books WHERE job_id=? AND state IN ('queued', 'running')",
            (job_id,),
        ).fetchone()[0]

    def _set_job(self, job_id: str, state: str, *, error: str | None = None) -> None:
        self._db.execute(
            "UPDATE jobs SET state=?, error=?, eta_s=NULL, updated=? WHERE id=?",
            (state, error, time.time(), job_id),
        )

    def _finish_books(self, job_id: str, state: str) -> None:
        self._db.execute(
            "UPDATE books SET state=?, eta_s=NULL "
            "WHERE job_id=? AND state IN ('queued', 'running')",
            (state, job_id),
        )

    def _job_dicts(self, rows: list[sqlite3.Row]) -> list[dict]:
        ids = [r["id"] for r in rows]
        books: dict[str, list[dict]] = {i: [] for i in ids}
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            for b in self._db.execute(
                f"SELECT * FROM books WHERE job_id IN ({marks}) ORDER BY job_id, idx",
                part,
            ):
                books[b["job_id"]].append(_book_dict(b))
        queued = sorted(
            self._db.execute("SELECT * FROM jobs WHERE state='queued'").fetchall(),
            key=_queue_order,
        )
        position = {r["id"]: i + 1 for i, r in enumerate(queued)}
        return [_job_dict(r, books[r["id"]], position.get(r["id"])) for r in rows]


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) under the store's lock;
    a committed transaction that changed a row bumps the version (an idle runner's
    polls wake no one)."""

    def __init__(self, store: JobStore):
        self.store = store
        self.changes = 0

    def __enter__(self):
        self.store._lock.acquire()
        try:
            self.store._db.execute("BEGIN IMMEDIATE")
            self.changes = self.store._db.total_changes
        except BaseException:
            self.store._lock.release()
            raise
        return self.store._db

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self.store._db.execute("COMMIT")
                if self.store._db.total_changes != self.changes:
                    self.store._bump()
            else:
                self.store._db.execute("ROLLBACK")
        finally:
            self.store._lock.release()
        return False


def _queue_order(row: sqlite3.Row) -> tuple:
    group = _GROUP.get(row["state"], 3)
    if group == 3:  # finished: most recently finished first
        return (group, -row["updated"], 0)
    return (group, -row["priority"], row["seq"])


def _book_dict(row: sqlite3.Row) -> dict:
    return {
        "index": row["idx"],
        "upload_id": row["upload_id"],
        "name": row["name"],
        "title": row["title"],
        "chapters": row["chapters"],
        "state": row["state"],
        "chunks_done": row["chunks_done"],
        "chunks_total": row["chunks_total"],
        "chunks_from_cache": row["chunks_from_cache"],
        "eta_s": row["eta_s"],
        "error": row["error"],
        "exit_code": row["exit_code"],
        "files": [{k: f[k] for k in ("name", "kind", "size")} for f in _loads(row["files"], [])],
    }


def _job_dict(row: sqlite3.Row, books: list[dict], position: int | None) -> dict:
    done = sum(b["chunks_done"] for b in books)
    total = sum(b["chunks_total"] for b in books)
    if row["state"] == "done":
        fraction = 1.0
    else:
        fraction = min(1.0, done / total) if total else 0.0
    return {
        "id": row["id"],
        "created": row["created"],
        "updated": row["updated"],
        "state": row["state"],
        "priority": row["priority"],
        "options": _loads(row["options"], {}),
        "output": row["output"],
        "error": row["error"],
        "position": position,
        "progress": {
            "chunks_done": done,
            "chunks_total": total,
            "fraction": round(fraction, 4),
            "eta_s": row["eta_s"],
        },
        "books": books,
    }
