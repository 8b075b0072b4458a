"""Building and running the task graph on a Dask client.

For each book::

    parse ──► chunk ──► synthesize[0..n] (resource-tagged) ──► merge
          └─► cover ───────────────────────────────────────────┘

``parse``, ``chunk`` and ``cover`` are submitted for a window of books at a
time (``ebook2audio.books-in-flight``), at a priority above all synthesis.
When a book's plan arrives at the client, the chunk store is asked about
that book's keys only, the chunks not in it are grouped into batches and
submitted as synthesize tasks that request the configured worker resources
(default ``{"GPU": 1}``), and a merge task that *depends* on them is
submitted with a higher priority: Dask starts it when the last batch is
done, before any later book's synthesis, so books finish in order and a
merge costs no worker and no scheduler traffic while it waits.  As each
book ends, the next one in the input is started.

Jupyter users can drive the stages themselves with :func:`submit_book`, which
returns a :class:`BookJob` holding the futures.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import Any

from dask.base import tokenize
from distributed import Client, Event, Future, as_completed, span, wait

from .. import config
from ..engines import get_engine_class, with_runtime
from ..errors import EXIT_BOOK_FAILED, BookError, Ebook2AudioError, one_line, terminal_safe
from ..logs import get_logger
from ..storage import join, stem_of
from ..storage.audiobookshelf import epub_description, place_book, sidecar_files
from ..storage.names import book_stem, fit_name
from ..text.chunk import BookPlan
from .coordination import killed_worker
from .merge import merge_task
from .metrics import ensure_job_metrics, log_book_event
from .options import ConvertOptions
from .report import build_report, dumps_report
from .results import BatchResult, LostBatch, MergeResult
from .tasks import (
    cover_task,
    ingest_settings,
    parse_task,
    plan_task,
    prepare_voice_task,
    synthesize_task,
)

__all__ = ["BookJob", "run_jobs", "submit_book"]

logger = get_logger(__name__)

#: Priority of every book's parse and chunk tasks: above all synthesis, so every
#: book is planned early (they are cheap), in submission order.
PLAN_PRIORITY = 10**9

#: Times a book's merge is submitted again after Dask gave up on it (KilledWorker).
MERGE_RESTARTS = 2

#: Smallest batch worth a task (~25 s of speech, a few seconds of work on one CPU thread).
MIN_BATCH_CHARS = 400


class BookJob:
    """One book's futures and figures while it converts.

    Attributes
    ----------
    source : str
        Input path or URL.
    output : str
        Where the M4B will be written.
    parse, plan : distributed.Future
        The parse and chunk tasks.
    batches : list of distributed.Future
        Synthesize tasks (empty until :meth:`submit_synthesis`).
    merge : distributed.Future or None
        The merge task.
    """

    def __init__(self, client: Client, source: str, options: ConvertOptions, *, priority: int = 0,
                 start: bool = True):  # fmt: skip
        self.client = client
        self.source = source
        self.options = options
        self.stem = stem_of(source)
        self.output_spec = options.output_spec()
        #: What every output name of the book starts with: the stem, shortened to
        #: 223 bytes when longer (see :func:`~ebook2audio_dask.storage.names.book_stem`).
        self.name = book_stem(self.stem)
        #: The (unsplit) output file; a split book's files are named after it (see merge_task).
        self.output = join(options.output, fit_name(self.name, self.output_spec.info.ext))
        self.report_url = join(options.output, fit_name(self.name, ".report.json"))
        #: The dead-letter file: chunks that could not be synthesised (JSON lines).
        self.failures_url = join(options.output, fit_name(self.name, ".failures.jsonl"))
        #: ``flat`` or ``audiobookshelf`` (``<output>/<Author>/<Title>/``: the names above are
        #: chosen again once the plan gives the title and authors, see :meth:`place`).
        self.layout = str(config.get("output.layout", override=options.layout) or "flat")
        #: The folder of the book's own files (the output folder, or its title folder).
        self.folder = options.output.rstrip("/")
        self.priority = priority
        self.store = options.store()
        self.parse: Future | None = None
        self.plan: Future | None = None
        self.cover: Future | None = None
        self.token = ""
        self.started = 0.0
        self.batches: list[Future] = []
        self.merge: Future | None = None
        self.book_plan: BookPlan | None = None
        self.cached_sizes: dict[str, int] = {}
        self._n_chunks = 0
        self.n_batches_chunks: list[int] = []
        #: Name of the distributed.Event that tells this book's merge to stop.
        self.stop_event = ""
        self.resources: dict[str, float] = {}
        #: The merge's arguments, kept to submit it again (KilledWorker).  Plain submit
        #: arguments, not a partial: Dask finds the futures (its dependencies) only there.
        self._merge_args: tuple = ()
        self._merge_kwargs: dict[str, Any] = {}
        #: Batches Dask gave up on (KilledWorker), by index: their chunks are dead letters.
        self.lost: dict[int, LostBatch] = {}
        #: Times the merge was submitted again after Dask gave up on the merge itself
        #: (KilledWorker).
        self.merge_restarts = 0
        #: Set when the book is failed from outside its tasks (no worker offers the resources).
        self.stall_error: Ebook2AudioError | None = None
        #: The merge's result, once :meth:`report` has fetched it.
        self.merged: MergeResult | None = None
        if start:
            self.start()

    @property
    def is_started(self) -> bool:
        return self.plan is not None

    def start(self) -> None:
        """Submit the book's parse, chunk and cover tasks.

        :func:`run_jobs` starts books a window at a time.
        """
        if self.plan is not None:
            return
        options = self.options
        self.started = time.time()
        request = options.plan_request()
        token = tokenize(self.source, options.include_matter, request, self.started)
        include_matter = bool(config.get("include-matter", override=options.include_matter))
        with self.span():
            self.parse = self.client.submit(
                parse_task,
                self.source,
                include_matter,
                options.storage_options,
                ingest_settings(),  # the client's limits count on an external cluster too
                key=f"parse-{self.stem}-{token}",
                priority=PLAN_PRIORITY,
                pure=False,
            )
            self.plan = self.client.submit(
                plan_task,
                self.parse,
                request,
                key=f"chunk-{self.stem}-{token}",
                priority=PLAN_PRIORITY,
                pure=False,
            )
            self.cover = self.client.submit(
                cover_task,
                self.parse,
                key=f"cover-{self.stem}-{token}",
                priority=PLAN_PRIORITY,
                pure=False,
            )
        self.token = token
        self.stop_event = f"ebook2audio-stop-{self.stem}-{token}"

    def span(self):
        """The Dask span of the book's tasks: tags ``ebook2audio`` and the book's stem.

        The dashboard's fine performance metrics can be filtered by these tags.
        """
        return span("ebook2audio", self.stem)

    def submit_synthesis(self, backlog: int = 0) -> None:
        """Gather the plan, look up its chunks in the store and submit synthesize + merge.

        *backlog*: characters of the run's other books that will be
        synthesised after this one (see :meth:`BookPlan.batches`).
        """
        with self.span():
            self._submit_synthesis(backlog)

    def fetch_plan(self) -> BookPlan:
        """The book's plan, fetched from its worker once (then kept until the book is done)."""
        if self.book_plan is None:
            self.book_plan = self.plan.result()
            self._n_chunks = len(self.book_plan.chunks)
        return self.book_plan

    def place(self, plan: BookPlan) -> None:
        """Name the book's files after its title and authors (``--layout audiobookshelf``).

        ``<output>/<Author>/<Title>/<Title>.<ext>`` and the report, dead-letter
        file and split files there too (see
        :func:`~ebook2audio_dask.storage.audiobookshelf.place_book`); nothing
        changes in the flat layout.
        """
        if self.layout != "audiobookshelf":
            return
        spec = self.output_spec
        where = place_book(
            self.options.output, plan.title, plan.authors, self.stem, spec.info.ext, spec.split
        )
        self.folder, self.name, self.output = where.folder, where.name, where.output
        self.report_url = where.file(".report.json")
        self.failures_url = where.file(".failures.jsonl")

    def _submit_synthesis(self, backlog: int) -> None:
        plan: BookPlan = self.fetch_plan()
        self.place(plan)
        # One lookup per key of this book (never a listing of the whole store, whose
        # cost would grow with every book converted before).
        self.cached_sizes = self.store.sizes(
            plan.spec.engine, list({c.key: None for c in plan.chunks})
        )
        batch_chars = int(config.get("synthesize.batch-chars", override=self.options.batch_chars))
        self.resources = resources = self.synth_resources()
        threads = int(config.get("synthesize.engine-threads", override=self.options.engine_threads))
        retries = int(config.get("synthesize.retries", override=self.options.retries))
        batches = plan.batches(
            batch_chars,
            skip=set(self.cached_sizes),
            slots=self._synth_slots(resources),
            min_chars=MIN_BATCH_CHARS,
            backlog=backlog,
        )
        chunk_batch: dict[str, int] = {}
        voice = None
        # How the engine runs (a server's endpoints, its API key), read here on the client;
        # it travels with the spec to the workers and stays out of every key.
        spec = with_runtime(plan.spec)
        if batches and get_engine_class(plan.spec.engine).prepares_voice(plan.spec):
            # A voice computed from reference audio (XTTS cloning): once, before
            # any batch, so every worker then reads it from the chunk store.
            voice = self.client.submit(
                prepare_voice_task,
                spec,
                self.store,
                threads,
                key=f"voice-{self.stem}-{self.token}",
                resources=resources or None,
                retries=retries,
                priority=self.priority + 2,
                pure=False,
            )
        for i, batch in enumerate(batches):
            items = tuple((c.key, c.text) for c in batch)
            chunk_batch.update((c.key, i) for c in batch)
            self.n_batches_chunks.append(len(items))
            self.batches.append(
                self.client.submit(
                    synthesize_task,
                    spec,
                    items,
                    self.store,
                    threads,
                    voice,
                    retries,
                    key=f"synthesize-{self.stem}-{i}-{self.token}",
                    resources=resources or None,
                    retries=retries,
                    # book order (large batches first, the small ones last); Dask does
                    # not keep submission order among equal priorities
                    priority=self.priority + 1 - i / len(batches),
                    pure=False,
                )
            )
        allow_gaps = bool(config.get("synthesize.allow-gaps", override=self.options.allow_gaps))
        # The merge depends on the plan, the cover and every batch: Dask starts it when
        # the last batch is done (ahead of later books' synthesis: a higher priority).
        self._merge_args = (
            self.plan,
            self.cover,
            tuple(self.batches),
            chunk_batch,
            self.store,
            self.output,
            self.options.output_options,
            None,
            self.cached_sizes,
            self.stop_event,
        )
        self._merge_kwargs = {
            "allow_gaps": allow_gaps,
            "failures_url": self.failures_url,
            "output_spec": self.output_spec,
        }
        if self.output_spec.readalong:  # the merge reads the book's text again, as parse did
            self._merge_kwargs["readalong"] = {
                "include_matter": bool(
                    config.get("include-matter", override=self.options.include_matter)
                ),
                "storage_options": self.options.storage_options,
                "ingest": ingest_settings(),
                # beside the report, in the book's folder (its own with --layout audiobookshelf)
                "url": join(self.folder, fit_name(self.name, ".readalong.epub")),
            }
        self.submit_merge()
        # The parsed book is no longer needed (Dask recomputes it should the plan or
        # cover be lost with a worker).
        if self.parse is not None:
            self.parse.release()
            self.parse = None

    def submit_merge(self) -> None:
        """Submit the merge task (again after KilledWorker: a new key, lost batches left out)."""
        args = list(self._merge_args)
        args[2] = tuple(None if i in self.lost else f for i, f in enumerate(self.batches))
        attempt = self.merge_restarts + len(self.lost)
        suffix = f"-{attempt}" if attempt else ""
        with self.span():
            self.merge = self.client.submit(
                merge_task,
                *args,
                **self._merge_kwargs,
                lost=dict(self.lost),
                key=f"merge-{self.stem}-{self.token}{suffix}",
                priority=self.priority + 10,
                pure=False,
            )

    def merge_failed(self, exc: BaseException) -> bool:
        """The merge erred with *exc*: submit it again if a batch or the merge's worker was lost.

        A batch Dask gave up on (KilledWorker) becomes dead letters and the
        merge goes on without it; a merge killed with its workers is tried
        again :data:`MERGE_RESTARTS` times.  Returns False when the book has
        failed (a batch's own error, or too many restarts).
        """
        if not killed_worker(exc):
            return False
        newly = {
            i: LostBatch.from_exception(f.exception())
            for i, f in enumerate(self.batches)
            if i not in self.lost and f.status == "error" and killed_worker(f.exception())
        }
        if newly:
            self.lost.update(newly)
            logger.warning(
                "%s: %d synthesize task(s) kept killing their workers; their chunks go to the "
                "dead-letter file",
                self.source,
                len(newly),
            )
        elif self.merge_restarts < MERGE_RESTARTS:
            self.merge_restarts += 1
            logger.warning(
                "%s: the merge's workers died; merging again (%d)", self.source, self.merge_restarts
            )
        else:
            return False
        self.submit_merge()
        return True

    def synth_resources(self) -> dict[str, float]:
        """The worker resources each synthesize task requests.

        The options', else ``synthesize.resources``.
        """
        resources = self.options.resources
        if resources is None:  # {} (no restriction) is a valid choice; None means "from config"
            resources = config.get("synthesize.resources") or {}
        return dict(resources)

    def _synth_slots(self, resources: dict[str, float] | None) -> int:
        """How many synthesize tasks the cluster can run at once right now."""
        if self.options.slots:
            return int(self.options.slots)
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        if not resources:
            return max(1, sum(w.get("nthreads", 1) for w in workers.values()))
        slots = 0
        for w in workers.values():
            have = w.get("resources", {}) or {}
            slots += int(min((have.get(k, 0) // v) if v else 0 for k, v in resources.items()))
        return max(1, slots)

    @property
    def n_chunks(self) -> int:
        """Chunks in the book's plan (0 until the plan is known; kept after :meth:`forget`)."""
        return self._n_chunks

    def report(self) -> dict:
        """The book's report (see :func:`ebook2audio_dask.pipeline.report.build_report`)."""
        self.merged = merged = self.merge.result()
        self.output = merged.output  # the first file of a split book
        # a batch that failed as a whole (KilledWorker) is in the merge's dead letters
        finished = [f for f in self.batches if f.status == "finished"]
        batches: list[BatchResult] = (
            self.client.gather(finished) if finished else []
        )  # one round trip
        return build_report(
            self.book_plan,
            merged,
            batches,
            self.cached_sizes,
            wall_s=time.time() - self.started,
            source=self.source,
            started=self.started,
        )

    def publish(self, report: dict) -> None:
        """Publish the book's files and its report together, all or nothing.

        The merge left the audio, subtitles (and, with gaps, the dead-letter
        file) at temporary names beside their final ones; the report is
        written beside them, then all are renamed in one quick sequence (see
        :class:`~ebook2audio_dask.storage.fs.Publication`).  When anything
        fails, the final paths are left as they were and the temporary files
        are deleted; a :class:`~ebook2audio_dask.errors.BookError` says why.
        """
        publication = (self.merged or self.merge.result()).publication
        options = self.options.output_options
        try:
            for name, data in self.sidecars(report):
                publication.stage_bytes(data, join(self.folder, name), options)
            publication.stage_bytes(dumps_report(report).encode("utf-8"), self.report_url, options)
            publication.commit(options)
        except Exception as exc:
            publication.discard(options)
            raise BookError(self.source, f"nothing was published: {exc}") from exc

    def sidecars(self, report: dict) -> list[tuple[str, bytes]]:
        """The files published beside the audio in the audiobookshelf layout (none when flat):
        ``metadata.json``, ``reader.txt``, ``desc.txt`` (an EPUB's ``dc:description``) and
        ``cover.jpg`` (when the book has them), see
        :func:`~ebook2audio_dask.storage.audiobookshelf.sidecar_files`."""
        if self.layout != "audiobookshelf":
            return []
        cover = None
        if self.cover is not None:
            try:
                cover = self.cover.result()
            except Exception as exc:  # noqa: BLE001 - no cover.jpg, the book is fine
                logger.warning("%s: no cover.jpg: %s", self.source, one_line(exc))
        return sidecar_files(
            report,
            cover=cover.data if cover is not None else None,
            cover_suffix=cover.suffix if cover is not None else "",
            description=epub_description(self.source, self.options.storage_options),
        )

    def discard(self) -> None:
        """Delete what a finished merge staged but was not published (the book failed after it)."""
        merged = self.merged
        if merged is None and self.merge is not None and self.merge.status == "finished":
            try:
                merged = self.merge.result()
            except Exception:  # noqa: BLE001 - nothing to fetch: nothing to delete
                return
        if merged is not None and merged.publication is not None:
            merged.publication.discard(self.options.output_options)

    def discard_if_done(self) -> None:
        """Delete what a merge staged when it finished after its book had failed."""
        if self.merge is not None and self.merge.status == "finished":
            self.discard()

    def cancel(self) -> None:
        """Cancel the book's remaining tasks.

        A merge already running finishes its file but, seeing the book's stop
        event set, publishes nothing and removes what it staged.
        """
        if self.merge is not None:
            try:
                Event(self.stop_event, client=self.client).set()
            except Exception:  # pragma: no cover - scheduler already gone
                logger.debug("could not set %s", self.stop_event, exc_info=True)
        futures = self.futures()
        if futures:
            self.client.cancel(futures, force=True)

    def futures(self) -> list[Future]:
        """Every future of the book still held: parse, plan, cover, batches and merge."""
        return [
            f
            for f in (self.parse, self.plan, self.cover, *self.batches, self.merge)
            if f is not None
        ]

    def forget(self) -> None:
        """Release the book's futures once its result is known.

        A finished task whose result lived on a worker that then died is
        recomputed as long as a future holds it: a done book must not be
        merged (or synthesised) again because a worker went away later.
        The plan is dropped from the client too: a long run holds only its
        books in flight.
        """
        for future in self.futures():
            try:
                future.release()
            except Exception:  # pragma: no cover - client already closing
                logger.debug("could not release %s", future.key, exc_info=True)
        self._merge_args = ()
        self.book_plan = None
        self.cached_sizes = {}
        self.batches = []

    def release(self) -> None:
        """Clear the book's stop event once its merge has ended."""
        if self.merge is not None and self.merge.done():
            try:
                Event(self.stop_event, client=self.client).clear()
            except Exception:  # noqa: BLE001  # pragma: no cover - scheduler already gone
                pass


def submit_book(
    client: Client, source: str, options: ConvertOptions, *, priority: int = 0
) -> BookJob:
    """Submit the parse and chunk tasks of one book; returns its :class:`BookJob`.

    Call ``job.submit_synthesis()`` once ``job.plan`` is done (or use
    :func:`run_jobs`) to submit the synthesize and merge tasks.  The merge
    leaves the book's files at temporary names: :func:`run_jobs` publishes
    them with the report; driving the job yourself, call
    ``job.publish(job.report())`` once ``job.merge`` is done.
    """
    return BookJob(client, source, options, priority=priority)


@dataclass
class BookResult:
    """Outcome of one book.

    Attributes
    ----------
    source : str
        Input path or URL.
    ok : bool
        True when the M4B and report were written.
    output : str or None
        The M4B's URL.
    report : dict or None
        The report (also written next to the M4B).
    error : str or None
        One-line error message when the book failed.
    exit_code : int
        0 when done; else the failure's CLI exit code (1 for a bad or
        unconvertible book, 2 for a request the book cannot satisfy, such as
        a chapter it does not have).
    """

    source: str
    ok: bool
    output: str | None = None
    report: dict | None = None
    error: str | None = None
    exit_code: int = 0


def _error_line(source: str, exc: BaseException) -> str:
    if isinstance(exc, BookError):
        return str(exc)
    if isinstance(exc, Ebook2AudioError):
        return str(exc) if str(exc).startswith(f"{source}: ") else f"{source}: {exc}"
    return f"{terminal_safe(source)}: {type(exc).__name__}: {one_line(exc)}"


def run_jobs(
    jobs: list[BookJob],
    *,
    on_chunks: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    write_report: Callable[[BookJob, dict], None] | None = None,
    on_result: Callable[[BookResult], None] | None = None,
    bars: Any = None,
    on_start: Callable[[BookJob], None] | None = None,
) -> list[BookResult]:
    """Drive submitted books to the end; one failing book never stops the others.

    Parameters
    ----------
    jobs : list of BookJob
        Books from :func:`submit_book`.
    on_chunks : callable, optional
        Called with the number of chunks each finished synthesize task made
        (progress bars); cached chunks are reported when a plan arrives.
    on_total : callable, optional
        Called with the number of chunks of each book once its plan is known.
    write_report : callable, optional
        Called with ``(job, report)`` when a book's merge is done, before its
        files are published: if it raises, the book fails and nothing is
        published.  The report itself is always published with the audio
        (``<stem>.report.json``, :meth:`BookJob.publish`).
    on_result : callable, optional
        Called with each book's :class:`BookResult` as soon as the book is
        done or has failed (books finish in the order work allows).
    bars : ProgressBars, optional
        Per-book and total progress (:class:`~.progress.ProgressBars`).
    on_start : callable, optional
        Called with each book this function starts (a :class:`BookJob` made
        with ``start=False``), once its parse, chunk and cover tasks are
        submitted.  At most ``ebook2audio.books-in-flight`` books run at once,
        highest priority first; books started by the caller count too.
    """
    results: dict[int, BookResult] = {}
    by_future: dict[Future, tuple[str, BookJob, int]] = {}
    for client in {id(job.client): job.client for job in jobs}.values():
        ensure_job_metrics(client)  # ebook2audio_* at the scheduler's /metrics, once per scheduler
    pending = as_completed()
    timeout = float(config.get("cluster.no-workers-timeout"))
    watch = _ResourceWatch(
        [job for job in jobs], timeout, interval=min(5.0, max(0.2, timeout / 10))
    )
    watch.start()
    # Books start a window at a time, highest priority first (input order within a
    # priority): a long library holds only its books in flight, on the client and
    # on the cluster, and the first books do not wait for every book to be parsed.
    queue = sorted((job for job in jobs if not job.is_started), key=lambda j: -j.priority)
    window = _books_in_flight(jobs)

    #: Books started and not yet done (at most the window, plus those the caller started).
    active: dict[int, BookJob] = {id(job): job for job in jobs if job.is_started}
    queue.reverse()  # popped from the end: the highest priority first

    def start_more() -> None:
        for key in [k for k in active if k in results]:
            del active[key]
        while queue and len(active) < window:
            job = queue.pop()
            active[id(job)] = job
            try:
                job.start()
            except Exception as exc:  # noqa: BLE001 - e.g. the scheduler went away
                fail(job, exc)
                continue
            by_future[job.plan] = ("plan", job, 0)
            pending.add(job.plan)
            if on_start:
                on_start(job)

    def backlog(job: BookJob) -> int:
        later = [
            j
            for j in active.values()
            if j is not job
            and j.priority < job.priority
            and id(j) not in results
            and j.plan is not None
            and j.plan.status == "finished"
        ]
        return sum(j.fetch_plan().chars for j in later)  # each plan fetched once

    def fail(job: BookJob, exc: BaseException) -> None:
        if id(job) in results:
            return
        lost = _scheduler_lost(job.client, exc)
        if lost:
            exc = BookError(
                job.source,
                f"lost the connection to the scheduler {_address(job.client)}; the chunks "
                "made so far are kept in the store: run the same command again to resume",
            )
        logger.debug("book %s failed", job.source, exc_info=exc)
        code = exc.exit_code if isinstance(exc, Ebook2AudioError) else EXIT_BOOK_FAILED
        results[id(job)] = BookResult(
            job.source, False, error=_error_line(job.source, exc), exit_code=code
        )
        if not lost:
            log_book_event(
                job.client,
                "book-failed",
                job.source,
                output=job.output,
                error=results[id(job)].error,
                exit_code=code,
            )
        if job.is_started:
            job.cancel()
        if bars is not None:
            bars.book_done(job)
        if on_result:
            on_result(results[id(job)])

    for job in jobs:
        if job.is_started:  # started by the caller (submit_book)
            by_future[job.plan] = ("plan", job, 0)
            pending.add(job.plan)
    start_more()
    # Plans are cheap and run first: give them a moment, so each book's batches
    # can be sized knowing the books queued behind it.
    try:
        wait([job.plan for job in jobs if job.plan is not None],
             timeout=float(config.get("synthesize.plan-wait")))  # fmt: skip
    except (TimeoutError, CancelledError):
        pass  # a plan cancelled meanwhile fails its own book in the loop below

    try:
        for future in pending:
            stage, job, n = by_future.pop(future)
            if id(job) in results:
                if stage == "merge":
                    job.release()
                    job.discard_if_done()
                continue
            if stage == "synthesize":
                if future.status == "error" and not killed_worker(future.exception()):
                    fail(
                        job, job.stall_error or future.exception()
                    )  # that batch failed: so does the book
                elif future.status == "cancelled":
                    fail(job, job.stall_error or BookError(job.source, "conversion cancelled"))
                elif future.status == "finished":
                    if on_chunks:
                        on_chunks(n)
                    if bars is not None:
                        bars.book_chunks(job, n)
                # a batch Dask gave up on (KilledWorker) fails the merge, which goes on without it
                start_more()
                continue
            if stage == "merge" and future.status == "error":
                try:
                    again = job.stall_error is None and job.merge_failed(future.exception())
                except Exception as exc:  # noqa: BLE001 - the scheduler went away meanwhile
                    fail(job, exc)
                    again = False
                if again:
                    by_future[job.merge] = ("merge", job, 0)
                    pending.add(job.merge)
                    continue
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - a book's failure must not stop the others
                fail(job, job.stall_error or exc)
                if stage == "merge":
                    job.release()
                start_more()
                continue
            if stage == "plan":
                try:
                    job.submit_synthesis(backlog=backlog(job))
                except Exception as exc:  # noqa: BLE001 - fails this book only
                    fail(job, exc)
                    start_more()
                    continue
                log_book_event(
                    job.client,
                    "book-started",
                    job.source,
                    title=job.book_plan.title,
                    engine=job.book_plan.spec.engine,
                    voice=job.book_plan.spec.voice,
                    chars=job.book_plan.chars,
                    chunks=job.n_chunks,
                    chunks_from_cache=len(job.cached_sizes),
                    synthesize_tasks=len(job.batches),
                    output=job.output,
                )
                if on_total:
                    on_total(job.n_chunks)
                if on_chunks and job.n_chunks - sum(job.n_batches_chunks):
                    on_chunks(job.n_chunks - sum(job.n_batches_chunks))
                if bars is not None:
                    bars.book_total(job, job.n_chunks)
                    if job.n_chunks - sum(job.n_batches_chunks):
                        bars.book_chunks(job, job.n_chunks - sum(job.n_batches_chunks))
                for f, count in zip(job.batches, job.n_batches_chunks):
                    by_future[f] = ("synthesize", job, count)
                    pending.add(f)
                by_future[job.merge] = ("merge", job, 0)
                pending.add(job.merge)
            elif stage == "merge":
                job.release()
                try:
                    report = job.report()
                    if write_report:
                        write_report(job, report)
                    job.publish(report)
                except Exception as exc:  # noqa: BLE001 - fails this book only
                    job.discard()
                    fail(job, exc)
                    start_more()
                    continue
                results[id(job)] = BookResult(job.source, True, output=job.output, report=report)
                log_book_event(
                    job.client,
                    "book-finished",
                    job.source,
                    output=job.output,
                    **_event_totals(report),
                )
                job.forget()
                if bars is not None:
                    bars.book_done(job)
                if on_result:
                    on_result(results[id(job)])
                start_more()
    except BaseException:
        # Ctrl-C, or the client itself failing: stop every unfinished book's work on
        # the cluster (an external cluster would otherwise go on for nobody).
        for job in jobs:
            if id(job) not in results and job.is_started:
                try:
                    job.cancel()
                    job.release()
                except Exception:
                    logger.debug("could not cancel %s", job.source, exc_info=True)
        raise
    finally:
        watch.stop()
    for job in jobs:
        job.release()
    return [results[id(job)] for job in jobs]


def _books_in_flight(jobs: list[BookJob]) -> int:
    """How many books run at once (``ebook2audio.books-in-flight``).

    0: four per synthesize slot, at least 8.
    """
    configured = int(config.get("books-in-flight") or 0)
    if configured > 0:
        return configured
    if not jobs:
        return 1
    try:
        slots = jobs[0]._synth_slots(jobs[0].synth_resources())
    except Exception:  # noqa: BLE001 - the scheduler will say more when the books start
        slots = 1
    return max(8, 4 * slots)


#: Report totals copied into the ``book-finished`` event.
_EVENT_TOTALS = ("chars", "chunks", "chunks_from_cache", "chunks_synthesized", "chunks_failed",
                 "audio_s", "wall_s", "synth_s", "rtf")  # fmt: skip


def _event_totals(report: dict) -> dict:
    totals = report.get("totals", {})
    return {
        "chapters": len(report.get("chapters", ())),
        **{k: totals.get(k) for k in _EVENT_TOTALS},
    }


def _scheduler_lost(client: Client, exc: BaseException) -> bool:
    """Did this failure come from losing the scheduler (not from the book)?"""
    from distributed.comm.core import CommClosedError

    if isinstance(exc, CommClosedError) or "scheduler-connection-lost" in str(exc):
        return True
    return client.status not in ("running", "newly-created")


def _address(client: Client) -> str:
    try:
        return str(client.scheduler.address)
    except AttributeError:  # pragma: no cover
        return "(unknown)"


def _offers(worker: dict, resources: dict[str, float]) -> bool:
    have = worker.get("resources") or {}
    return all(have.get(name, 0) >= amount for name, amount in resources.items())


class _ResourceWatch:
    """Fails books whose synthesize tasks wait for resources no worker offers.

    Dask keeps such a task waiting forever (an external scheduler's own
    ``no-workers-timeout`` is usually unset).  Every second the client looks
    at the workers; when none has offered a book's resources for *timeout*
    seconds, the book is cancelled with a clear error, and the others go on.
    """

    def __init__(self, jobs: list[BookJob], timeout: float, interval: float = 1.0):
        self.jobs = jobs
        self.timeout = timeout
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="ebook2audio-resource-watch", daemon=True
        )

    def start(self) -> None:
        if self.timeout > 0 and self.jobs:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        since: float | None = None
        while not self._stop.wait(self.interval):
            waiting = [j for j in self.jobs if j.resources and j.batches and j.stall_error is None
                       and not all(f.done() for f in j.batches)]  # fmt: skip
            if not waiting:
                since = None
                continue
            try:
                workers = list(
                    self.jobs[0].client.scheduler_info(n_workers=-1).get("workers", {}).values()
                )
            except Exception:  # the scheduler is going away: the main loop will notice
                logger.debug("resource watch: scheduler_info failed", exc_info=True)
                continue
            starved = [j for j in waiting if not any(_offers(w, j.resources) for w in workers)]
            if not starved:
                since = None
                continue
            since = since if since is not None else time.monotonic()
            if time.monotonic() - since < self.timeout:
                continue
            for job in starved:
                wanted = ", ".join(f"{k}={v:g}" for k, v in job.resources.items())
                job.stall_error = BookError(
                    job.source,
                    f"no worker offers the synthesize resources {wanted} "
                    f"(waited {self.timeout:g} s; "
                    f"start workers with --resources {wanted.replace(', ', ',')} or change "
                    "ebook2audio.synthesize.resources)",
                )
                logger.warning("%s", job.stall_error)
                job.cancel()
