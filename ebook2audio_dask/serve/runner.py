"""The server's runner: holds the Dask client and drives the queued jobs through the pipeline.

:class:`Runner` owns one background thread for the server's life.  It opens
the cluster :attr:`ServeSettings.cluster` describes (an embedded
LocalCluster by default, ``--scheduler``, ``--slurm``...), and starts up to
``jobs_in_flight`` queued jobs at once, highest priority first, each in a
thread of its own: one :class:`~ebook2audio_dask.pipeline.graph.BookJob` per
unfinished book, driven by :func:`~ebook2audio_dask.pipeline.graph.run_jobs`
like ``convert`` does.  Progress (chunks done, from the chunk store, ETA)
goes into the :class:`~.store.JobStore` a few times a second per job.

What survives what:

* a server killed and started again: :meth:`Runner.start` puts the jobs it
  left running back in the queue (:meth:`~.store.JobStore.recover`); their
  unfinished books convert again, the chunks already in the chunk store are
  not synthesised again;
* a clean stop (SIGTERM, :meth:`Runner.stop`): running jobs go back to the
  queue, nothing fails;
* a scheduler that goes away (``--scheduler``): books failing because of it
  are not failed; their job goes to ``waiting``, the runner closes the client
  and connects again every ``reconnect_interval`` seconds, then queues the
  waiting jobs again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Ebook2AudioError, UsageError, one_line
from ..logs import get_logger
from ..pipeline.graph import BookJob, BookResult, run_jobs
from ..pipeline.options import parse_chapters, split_options
from ..storage import get_fs, stem_of
from ..storage.names import book_stem
from .settings import ServeSettings
from .store import FINAL_STATES, JobStore

__all__ = ["Runner"]

logger = get_logger(__name__)

#: Least seconds between two progress writes of one job (the final ones are not held back).
PROGRESS_INTERVAL = 0.25
#: Seconds the runner's thread sleeps when nothing wakes it.
TICK = 0.5
#: What a book's error says when it failed because the scheduler went away (run_jobs).
LOST_MARKS = ("lost the connection to the scheduler", "scheduler-connection-lost")
#: Dask priority step between jobs' priorities (books of a job are 100 apart below it).
JOB_PRIORITY_STEP = 10**6


@dataclass
class _Book:
    """A book of a running job: its place in the store and its progress this run."""

    job_id: str
    index: int
    book_job: BookJob
    #: The book's file name as uploaded (what its error lines name).
    name: str = ""
    total: int = 0
    done: int = 0
    from_cache: int = 0
    started: float = 0.0
    dirty: bool = False


@dataclass
class _Active:
    """A job the runner is converting."""

    job_id: str
    thread: threading.Thread | None = None
    books: list[_Book] = field(default_factory=list)
    cancel_requested: bool = False
    #: Set when a book failed because the scheduler went away.
    lost: bool = False
    last_write: float = 0.0
    #: The job's progress sink (:class:`_Progress`), once its books are made.
    sink: Any = None


class Runner:
    """Drives the jobs of *store* on the cluster *settings* describe.

    Parameters
    ----------
    store : JobStore
        The job queue.
    settings : ServeSettings
        The server's settings (cluster, cache, output, limits).

    Attributes
    ----------
    client : distributed.Client or None
        The client, None while (re)connecting.
    connected : bool
        True while the client is connected.
    dashboard_link : str or None
        The Dask dashboard of the cluster, when there is one.
    """

    def __init__(self, store: JobStore, settings: ServeSettings):
        self.store = store
        self.settings = settings
        self.client = None
        self.connected = False
        self.dashboard_link: str | None = None
        self._cluster: contextlib.ExitStack | None = None
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.RLock()
        self._active: dict[str, _Active] = {}
        self._last_requeue = 0.0
        self._outage_logged = False
        self._folder_lock = None

    # -- life ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Queue again the jobs a dead server left, open the cluster and start the thread.

        An embedded cluster that cannot start raises here; an external
        scheduler is connected to from the runner's thread, and tried again
        every ``reconnect_interval`` seconds while it cannot be reached
        (:attr:`connected` stays False meanwhile).

        Raises
        ------
        UsageError
            Another server uses the data folder, the cluster options are
            wrong, or the embedded cluster cannot start.
        """
        self._hold_data_folder()
        requeued = self.store.recover()
        if requeued:
            logger.info("%d job(s) left by the last server queued again", len(requeued))
        try:
            if not self._external():  # an external scheduler is reached by the thread: the
                self._connect(quiet=False)  # page and API answer while it is tried
        except BaseException:
            self._release_data_folder()
            raise
        self._thread = threading.Thread(target=self._loop, name="ebook2audio-runner", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 120) -> None:
        """A clean shutdown: running jobs go back to the queue (resumed at the next start),
        then the cluster is closed."""
        self._stopping.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        if self._thread is not None:  # it starts no job after this
            self._thread.join(max(0.1, deadline - time.monotonic()))
        with self._lock:
            active = list(self._active.values())
        for act in active:
            self._cancel_books(act)
        for act in active:
            if act.thread is not None:
                act.thread.join(max(0.1, deadline - time.monotonic()))
        self._disconnect()
        self._release_data_folder()

    def _hold_data_folder(self) -> None:
        """Lock ``<data>/serve.lock`` for this runner's life: two servers on one queue would
        convert its jobs twice (and each would take the other's running jobs for a dead
        server's).  The lock goes with the process, however it ends."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no guard
            return
        self.settings.data.mkdir(parents=True, exist_ok=True)
        path = self.settings.data / "serve.lock"
        f = open(path, "a+")  # noqa: SIM115 - held open until stop()
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "?"
            f.close()
            raise UsageError(
                f"{self.settings.data}: another ebook2audio serve (pid {holder}) uses this data "
                "folder; stop it or give --data another folder"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._folder_lock = f

    def _release_data_folder(self) -> None:
        if self._folder_lock is not None:
            self._folder_lock.close()  # releases the lock
            self._folder_lock = None

    def wake(self) -> None:
        """Look at the queue now (a job was created, reprioritised or retried)."""
        self._wake.set()

    def cancel(self, job_id: str) -> dict | None:
        """Cancel a job (:meth:`JobStore.cancel`) and stop its tasks if it is running."""
        job = self.store.cancel(job_id)
        with self._lock:
            act = self._active.get(job_id)
        if act is not None and job is not None and job["state"] == "cancelling":
            act.cancel_requested = True
            self._cancel_books(act)
        self._wake.set()
        return job

    def delete_job(self, job_id: str) -> bool:
        """Forget a finished job (:meth:`JobStore.delete_job`) and delete its output folder."""
        job = self.store.get_job(job_id)
        if job is None or not self.store.delete_job(job_id):
            return False
        try:
            shutil.rmtree(self.settings.data / "jobs" / job_id, ignore_errors=True)
            fs, path = get_fs(job["output"], self.settings.storage_options)
            if fs.exists(path):
                fs.rm(path, recursive=True)
        except Exception as exc:  # noqa: BLE001 - the job is gone; its files are reported
            logger.warning(
                "%s: could not delete the job's outputs: %s", job["output"], one_line(exc)
            )
        return True

    def file_path(self, job_id: str, index: int, name: str) -> str | None:
        """The URL of the output file *name* recorded for book *index* of *job_id*, else None.

        Only files the runner recorded (audio, report, subtitles, dead
        letters) are ever returned: *name* is compared with their names, never
        joined to a path.
        """
        return self.store.file_url(job_id, index, name)

    # -- the cluster ---------------------------------------------------------------------------

    def _run_options(self):
        return split_options(self.settings.output, dict(self.settings.cluster))[1]

    def _external(self) -> bool:
        """True when the cluster is one the server does not start (``--scheduler``)."""
        return bool(self.settings.cluster.get("scheduler"))

    def _connect(self, quiet: bool = True) -> bool:
        """Open the cluster; False when it cannot be reached (raises instead unless *quiet*)."""
        stack = contextlib.ExitStack()
        try:
            client = stack.enter_context(
                self._run_options().client_for(None, self.settings.engine_threads)
            )
        except Exception as exc:  # said once per outage; tried again
            stack.close()
            if not quiet:
                raise
            if not self._outage_logged:
                logger.warning("cannot reach the cluster: %s", one_line(exc))
                self._outage_logged = True
            return False
        self._outage_logged = False
        link = _dashboard(client)
        with self._lock:
            self._cluster, self.client, self.dashboard_link = stack, client, link
            self.connected = True
        logger.info("connected to the cluster (dashboard: %s)", link or "none")
        if self.store.requeue_waiting():
            self._last_requeue = time.monotonic()
        return True

    def _disconnect(self) -> None:
        with self._lock:
            stack, self._cluster = self._cluster, None
            self.client, self.connected = None, False
        if stack is not None:
            try:
                stack.close()
            except Exception:  # closing a client whose scheduler is gone
                logger.debug("closing the cluster", exc_info=True)

    def _client_ok(self) -> bool:
        client = self.client
        return client is not None and client.status in ("running", "newly-created")

    # -- the loop ------------------------------------------------------------------------------

    def _loop(self) -> None:
        interval = max(0.1, float(self.settings.reconnect_interval))
        while not self._stopping.is_set():
            try:
                if self.client is None:
                    if not self._connect():
                        self._stopping.wait(interval)
                        continue
                elif not self._client_ok():
                    logger.warning("lost the scheduler; connecting again every %g s", interval)
                    self._disconnect()
                    continue
                self._check_cancels()
                self._requeue_waiting(interval)
                self._start_jobs()
                self._flush()
                self._reap()
            except Exception:  # the runner must outlive any one problem
                logger.exception("runner loop")
            self._wake.wait(TICK)
            self._wake.clear()

    def _check_cancels(self) -> None:
        with self._lock:
            active = list(self._active.values())
        states = self.store.job_states(a.job_id for a in active)
        for act in active:
            if states.get(act.job_id) == "cancelling" and not act.cancel_requested:
                act.cancel_requested = True
                self._cancel_books(act)

    def _requeue_waiting(self, interval: float) -> None:
        """Jobs that waited for a scheduler which is back (the client reconnected by itself)."""
        if time.monotonic() - self._last_requeue < interval:
            return
        self._last_requeue = time.monotonic()
        with self._lock:
            held = set(self._active)
        waiting = [j for j in self.store.list_jobs() if j["state"] == "waiting"]
        if any(j["id"] not in held for j in waiting):
            self.store.requeue_waiting()

    def _start_jobs(self) -> None:
        while not self._stopping.is_set() and self._client_ok():
            with self._lock:
                if len(self._active) >= max(1, int(self.settings.jobs_in_flight)):
                    return
                job = self.store.claim_next()
                if job is None:
                    return
                act = self._active[job["id"]] = _Active(job["id"])
                act.thread = threading.Thread(
                    target=self._run_job, args=(act, job, self.client),
                    name=f"ebook2audio-job-{job['id']}", daemon=True,
                )  # fmt: skip
            act.thread.start()

    def _reap(self) -> None:
        with self._lock:
            for job_id, act in list(self._active.items()):
                if act.thread is not None and not act.thread.is_alive():
                    del self._active[job_id]

    # -- one job -------------------------------------------------------------------------------

    def _run_job(self, act: _Active, job: dict, client) -> None:
        try:
            self._convert(act, job, client)
        except Exception as exc:  # fails this job only, never the runner
            # run_jobs itself raised: e.g. distributed.wait on plans cancelled meanwhile
            state = self._ending(act)
            if state == "finished" and "Cancelled" in type(exc).__name__:
                state = "waiting"  # cancelled by nobody here: the scheduler forgot the tasks
            if state == "finished":
                logger.exception("job %s", act.job_id)
                error = f"{type(exc).__name__}: {one_line(exc)}"
                self.store.release_job(act.job_id, state, error=error)
            else:
                logger.debug("job %s ended early", act.job_id, exc_info=True)
                self.store.release_job(act.job_id, state)
        finally:
            self._wake.set()

    def _convert(self, act: _Active, job: dict, client) -> None:
        books = [b for b in job["books"] if b["state"] not in FINAL_STATES]
        n = len(job["books"])
        folders = _output_folders(job)
        for b in books:
            upload = self.store.get_upload(b["upload_id"]) or {}
            try:
                options = self._book_options(job, b, folders[b["index"]])
                source = self._source(act.job_id, b, upload)
            except (Ebook2AudioError, TypeError, ValueError, OSError) as exc:
                code = exc.exit_code if isinstance(exc, Ebook2AudioError) else 2
                code = 1 if isinstance(exc, OSError) else code  # the book, not the request
                self.store.update_books(act.job_id, {b["index"]: {
                    "state": "failed", "error": f"{b['name']}: {one_line(exc)}", "exit_code": code,
                }})  # fmt: skip
                continue
            priority = job["priority"] * JOB_PRIORITY_STEP + 100 * (n - b["index"])
            book_job = BookJob(client, source, options, priority=priority, start=False)
            act.books.append(_Book(act.job_id, b["index"], book_job, name=b["name"]))
        by_job = {id(book.book_job): book for book in act.books}
        by_source = {book.book_job.source: book for book in act.books}
        sink = _Progress(self, act, by_job)

        def on_start(book_job: BookJob) -> None:
            book = by_job[id(book_job)]
            if act.cancel_requested or self._stopping.is_set():
                book_job.cancel()
                return
            self.store.update_books(act.job_id, {book.index: {"state": "running"}})

        def on_result(result: BookResult) -> None:
            book = by_source[result.source]
            sink.flush(force=True)
            self.store.update_books(act.job_id, {book.index: self._outcome(act, book, result)})

        if act.books:
            run_jobs([b.book_job for b in act.books], bars=sink, on_start=on_start,
                     on_result=on_result)  # fmt: skip
        sink.flush(force=True)
        self.store.release_job(act.job_id, self._ending(act))

    def _ending(self, act: _Active) -> str:
        """How the runner lets go of a job whose books ended (:meth:`JobStore.release_job`)."""
        if self._stopping.is_set():
            return "queued"
        if act.cancel_requested or self.store.job_states([act.job_id]).get(act.job_id) == (
            "cancelling"
        ):
            return "cancelled"
        if act.lost or not self._client_ok():
            logger.warning("job %s waits for the scheduler", act.job_id)
            return "waiting"
        return "finished"

    def _book_options(self, job: dict, book: dict, output: str):
        given: dict[str, Any] = {k: v for k, v in job["options"].items() if v is not None}
        given["chapters"] = parse_chapters(book["chapters"]) if book["chapters"] else None
        given["cache"] = self.settings.cache
        given["storage_options"] = self.settings.storage_options
        options = split_options(output, given, caller="job")[0]
        options.output_spec()  # a bad format or split: this book's failure, now
        return options

    def _source(self, job_id: str, book: dict, upload: dict) -> str:
        """The book's input: ``<data>/jobs/<job>/<index>/<uploaded file name>``, a link to
        the upload (stored under a generated name), so its outputs and errors carry the
        name the user gave it."""
        stored = Path(upload.get("path") or "")
        if not upload or not stored.is_file():
            raise FileNotFoundError("the uploaded file is no longer on the server")
        folder = self.settings.data / "jobs" / job_id / str(book["index"])
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / _file_name(book["name"], stored.name)
        if not link.is_symlink() or link.resolve() != stored.resolve():
            link.unlink(missing_ok=True)
            link.symlink_to(stored.resolve())
        return str(link)

    def _outcome(self, act: _Active, book: _Book, result: BookResult) -> dict:
        """The store fields of a book that ended with *result*."""
        if result.ok:
            return {"state": "done", "error": None, "exit_code": 0, "eta_s": None,
                    "chunks_done": book.total, "files": self._files(book, result)}  # fmt: skip
        # the user's file name, not the server's path
        error = (result.error or "failed").replace(book.book_job.source, book.name)
        if self._stopping.is_set():
            return {"state": "queued", "eta_s": None}
        if any(mark in error for mark in LOST_MARKS) or not self._client_ok():
            act.lost = True
            return {"state": "queued", "eta_s": None}
        if act.cancel_requested:
            return {"state": "cancelled", "eta_s": None}
        if error.endswith("conversion cancelled") or "CancelledError" in error:
            # cancelled by nobody here: the scheduler forgot the tasks (it went away)
            act.lost = True
            return {"state": "queued", "eta_s": None}
        return {"state": "failed", "error": error, "exit_code": result.exit_code or 1,
                "eta_s": None, "files": self._failures_file(book)}  # fmt: skip

    def _failures_file(self, book: _Book) -> list[dict]:
        """The dead-letter file a failed book's merge wrote (chunks it could not make), if
        this run wrote one."""
        url = book.book_job.failures_url
        try:
            fs, path = get_fs(url, self.settings.storage_options)
            if not fs.exists(path):
                return []
            info = fs.info(path)
        except Exception:  # none to list
            logger.debug("failures file of %s", url, exc_info=True)
            return []
        mtime = info.get("mtime") or info.get("created")
        if isinstance(mtime, (int, float)) and mtime < book.book_job.started - 2:
            return []  # an earlier run's
        name = url.rstrip("/").rsplit("/", 1)[-1]
        return [{"name": name, "kind": "failures", "size": info.get("size"), "url": url}]

    def _files(self, book: _Book, result: BookResult) -> list[dict]:
        """The files a finished book published: name, kind, size, and their URL (kept)."""
        report = result.report or {}
        urls: list[tuple[str, str]] = [(o["url"], "audio") for o in report.get("outputs", ())]
        if not urls and result.output:
            urls.append((result.output, "audio"))
        urls.append((book.book_job.report_url, "report"))
        urls += [(s, "subtitles") for s in report.get("subtitles", ()) if s]
        if report.get("readalong"):
            urls.append((report["readalong"]["url"], "readalong"))
        if report.get("failures"):
            urls.append((report["failures"], "failures"))
        files, seen = [], set()
        storage = self.settings.storage_options
        for url, kind in urls:
            name = url.rstrip("/").rsplit("/", 1)[-1]
            if name in seen:
                continue
            seen.add(name)
            try:
                fs, path = get_fs(url, storage)
                size = int(fs.size(path))
            except Exception:  # listed without a size
                logger.debug("size of %s", url, exc_info=True)
                size = None
            files.append({"name": name, "kind": kind, "size": size, "url": url})
        return files

    def _cancel_books(self, act: _Active) -> None:
        for book in list(act.books):
            if book.book_job.is_started:
                try:
                    book.book_job.cancel()
                except Exception:  # the scheduler may be gone already
                    logger.debug("cancel %s", book.book_job.source, exc_info=True)

    def _flush(self) -> None:
        with self._lock:
            active = list(self._active.values())
        for act in active:
            sink = getattr(act, "sink", None)
            if sink is not None:
                sink.flush()


class _Progress:
    """The ``bars`` of one job's :func:`run_jobs`: chunk counts and ETA into the store."""

    def __init__(self, runner: Runner, act: _Active, books: dict[int, _Book]):
        self.runner = runner
        self.act = act
        self.books = books
        self.lock = threading.Lock()
        act.sink = self  # the runner's loop flushes what the throttle held back

    def book_total(self, job: BookJob, n: int) -> None:
        """*job*'s plan arrived: *n* chunks, of which those not batched are in the store."""
        with self.lock:
            book = self.books[id(job)]
            book.total = n
            book.from_cache = n - sum(job.n_batches_chunks)
            book.done = 0
            book.started = time.monotonic()
            book.dirty = True
            title = job.book_plan.title if job.book_plan is not None else None
        if title:
            self.runner.store.update_books(self.act.job_id, {book.index: {"title": title}})
        self.flush(force=True)

    def book_chunks(self, job: BookJob, n: int) -> None:
        """*n* more chunks of *job* are in the store."""
        with self.lock:
            book = self.books[id(job)]
            book.done = min(book.total, book.done + n) if book.total else book.done + n
            book.dirty = True
        self.flush()

    def book_done(self, job: BookJob) -> None:
        """*job* ended (its result follows)."""
        self.flush(force=True)

    def write(self, text: str, *, err: bool = False) -> None:
        """A line for the user: the server's log."""
        (logger.warning if err else logger.info)("%s", text)

    def flush(self, force: bool = False) -> None:
        """Write the changed books' counts and ETAs (at most every PROGRESS_INTERVAL s)."""
        now = time.monotonic()
        with self.lock:
            if not force and now - self.act.last_write < PROGRESS_INTERVAL:
                return
            dirty = [b for b in self.books.values() if b.dirty]
            if not dirty:
                return
            self.act.last_write = now
            fields = {}
            for b in dirty:
                b.dirty = False
                fields[b.index] = {"chunks_total": b.total, "chunks_done": b.done,
                                   "chunks_from_cache": b.from_cache,
                                   "eta_s": _eta(b.total - b.done, b.done - b.from_cache,
                                                 now - b.started)}  # fmt: skip
            planned = [b for b in self.books.values() if b.total]
            made = sum(max(0, b.done - b.from_cache) for b in planned)
            since = min((b.started for b in planned), default=now)
            job_eta = _eta(sum(b.total - b.done for b in planned), made, now - since)
        self.runner.store.update_books(self.act.job_id, fields, eta_s=job_eta)


def _file_name(name: str, fallback: str) -> str:
    """*name* as one safe file name (its last path part, no NUL or control character),
    else *fallback*."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    if name in ("", ".", "..") or len(name.encode()) > 240:
        return fallback
    return name


def _output_folders(job: dict) -> dict[int, str]:
    """Each book's output folder: the job's, or ``<job output>/<index>`` for a book whose
    outputs would take the names of an earlier book's (the same file name)."""
    seen: set[str] = set()
    folders = {}
    for b in job["books"]:
        stem = book_stem(stem_of(_file_name(b["name"], "book"))).casefold()
        folders[b["index"]] = job["output"] if stem not in seen else f"{job['output']}/{b['index']}"
        seen.add(stem)
    return folders


def _dashboard(client) -> str | None:
    """The cluster's dashboard URL, or None when its scheduler serves none."""
    try:
        if "dashboard" not in client.scheduler_info().get("services", {}):
            return None
        return client.dashboard_link
    except Exception:  # noqa: BLE001 - an old scheduler, a closing client: no link
        return None


def _eta(left: int, made: int, elapsed: float) -> float | None:
    """Seconds to make *left* chunks at the rate of *made* in *elapsed* s (None: no rate yet)."""
    if left <= 0:
        return 0.0
    if made <= 0 or elapsed <= 0:
        return None
    return round(left * elapsed / made, 1)
