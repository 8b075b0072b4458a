"""Building and running the task graph on a Dask client.

For each book::

    parse ──► chunk ──► synthesize[0..n] (resource-tagged) ──► merge

``parse`` and ``chunk`` are submitted for every book at once.  When a book's
plan arrives at the client, the chunk store is listed once, the chunks not in
it are grouped into batches and submitted as synthesize tasks that request
the configured worker resources (default ``{"GPU": 1}``), and a merge task
that depends on them is submitted with a higher priority, so finished books
are written before new synthesis starts.

Jupyter users can drive the stages themselves with :func:`submit_book`, which
returns a :class:`BookJob` holding the futures.
"""

from __future__ import annotations

import threading
import time
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from dask.base import tokenize
from distributed import Client, Event, Future, Variable, as_completed, span, wait

from ..logs import get_logger
from .. import config
from ..audio.formats import OutputSpec
from ..errors import EXIT_BOOK_FAILED, BookError, Ebook2AudioError, one_line, terminal_safe
from ..storage import ChunkStore, join, stem_of
from ..storage.names import book_stem, fit_name
from ..text.chunk import BookPlan, Pauses
from ..text.lexicon import configured_lexicon
from ..text.spoken import normalize_features
from .metrics import ensure_job_metrics, log_book_event
from .report import build_report, dumps_report
from ..engines import get_engine_class, with_runtime
from .tasks import (
    BatchResult,
    _killed_worker,
    MergeResult,
    PlanRequest,
    merge_task,
    parse_task,
    plan_task,
    prepare_voice_task,
    synthesize_task,
)

__all__ = ["ConvertOptions", "BookJob", "submit_book", "run_jobs"]

logger = get_logger(__name__)

#: Priority of every book's parse and chunk tasks: above all synthesis, so every
#: book is planned early (they are cheap), in submission order.
PLAN_PRIORITY = 10**9

#: Times a book's merge is submitted again after Dask gave up on it (KilledWorker).
MERGE_RESTARTS = 2

#: Smallest batch worth a task (~25 s of speech, a few seconds of work on one CPU thread).
MIN_BATCH_CHARS = 400


@dataclass(frozen=True)
class ConvertOptions:
    """Settings of one conversion run (shared by all its books).

    Every ``None`` is taken from the ``ebook2audio`` dask config namespace.

    Parameters
    ----------
    output : str
        Output folder (path or fsspec URL).
    engine, voice, language : str, optional
        Force an engine / voice / language instead of routing by the book's
        language.
    model : str, optional
        Model of engines that load one (Coqui: a folder, checkpoint, fsspec
        URL or downloaded Coqui model name); default ``ebook2audio.coqui.model``.
    chapters : tuple of int, optional
        Chapter indices to convert (as ``inspect`` numbers them); all if None.
    include_matter : bool, optional
        Keep front/back matter (title page, licence, colophon...).
    cache : str, optional
        Chunk store URL.
    storage_options : dict, optional
        fsspec options for inputs, outputs and the chunk store: flat
        (``{"key": ..., "client_kwargs": {"endpoint_url": ...}}``, used for
        every remote URL) or keyed by protocol (``{"s3": {...}, "gs": {...}}``).
    output_storage_options, cache_storage_options : dict, optional
        Options for the output folder / the chunk store only, when they differ
        from the inputs' (another account, another endpoint).
    batch_chars : int, optional
        Characters per synthesize task.
    resources : dict, optional
        Worker resources each synthesize task requests.
    engine_threads : int, optional
        CPU threads per engine instance.
    settings : dict, optional
        Engine settings that change the audio (e.g. ``{"length_scale": 1.1}``).
    retries : int, optional
        How many more times a chunk the engine failed on is tried (and Dask
        retries a synthesize task that failed as a whole); default
        ``ebook2audio.synthesize.retries``.
    allow_gaps : bool, optional
        Finish a book whose chunks could not all be synthesised, with
        silence in their place (listed in the report and the book's
        ``<stem>.failures.jsonl``); default ``ebook2audio.synthesize.allow-gaps``.
        Otherwise such a book fails.
    slots : int, optional
        Synthesize tasks the cluster can run at once, for sizing batches;
        default: counted from the workers present (an adaptive cluster passes
        its maximum).
    format, split, split_hours, loudnorm, subtitles : optional
        Output format (``m4b``, ``mp3``, ``opus``, ``flac``, ``wav``), split
        (``"chapters"``), parts of at most *split_hours* hours, EBU R128
        loudness normalisation, subtitles (``"srt"``, ``"vtt"``); default
        ``ebook2audio.output.*`` (see :meth:`OutputSpec.resolve
        <ebook2audio_dask.audio.formats.OutputSpec.resolve>`).
    pauses : dict, optional
        Seconds of silence by kind (``sentence``, ``paragraph``, ``title``,
        ``chapter``), over ``ebook2audio.pauses``.
    normalize : bool, optional
        Write numbers, Roman numerals and abbreviations out in words before
        synthesis; default ``ebook2audio.text.normalize`` (see docs/text.md).
    lexicons : tuple of str, optional
        User pronunciation lexicons (paths/URLs, YAML/JSON or PLS), read
        after those of ``ebook2audio.text.lexicons``.
    """

    output: str
    engine: str | None = None
    voice: str | None = None
    language: str | None = None
    model: str | None = None
    chapters: tuple[int, ...] | None = None
    include_matter: bool | None = None
    cache: str | None = None
    storage_options: dict[str, Any] | None = field(default=None, hash=False, compare=False, repr=False)
    output_storage_options: dict[str, Any] | None = field(default=None, hash=False, compare=False, repr=False)
    cache_storage_options: dict[str, Any] | None = field(default=None, hash=False, compare=False, repr=False)
    batch_chars: int | None = None
    resources: dict[str, float] | None = field(default=None, hash=False, compare=False)
    engine_threads: int | None = None
    settings: dict[str, Any] | None = field(default=None, hash=False, compare=False)
    retries: int | None = None
    allow_gaps: bool | None = None
    slots: int | None = None
    format: str | None = None
    split: str | None = None
    split_hours: float | None = None
    loudnorm: bool | None = None
    subtitles: str | None = None
    pauses: dict[str, float] | None = field(default=None, hash=False, compare=False)
    normalize: bool | None = None
    lexicons: tuple[str, ...] | None = None

    def output_spec(self) -> OutputSpec:
        """The merge's output settings (arguments over ``ebook2audio.output``)."""
        return OutputSpec.resolve(self.format, self.split, self.split_hours, self.loudnorm, self.subtitles)

    def store(self) -> ChunkStore:
        return ChunkStore.make(config.get("cache", override=self.cache), self.cache_options)

    @property
    def output_options(self) -> dict[str, Any] | None:
        return self.output_storage_options if self.output_storage_options is not None else self.storage_options

    @property
    def cache_options(self) -> dict[str, Any] | None:
        return self.cache_storage_options if self.cache_storage_options is not None else self.storage_options

    def plan_request(self) -> PlanRequest:
        return PlanRequest(
            chapters=self.chapters,
            engine=config.get("engine", override=self.engine),
            voice=config.get("voice", override=self.voice),
            language=self.language,
            model=self.model,  # None: each engine's own default (coqui.model, kokoro.model)
            settings=tuple(sorted((self.settings or {}).items())),
            max_chars=config.get("chunk.max-chars", None),
            speak_titles=bool(config.get("chunk.speak-titles", True)),
            pauses=dataclasses.replace(Pauses.from_config(), **{k: float(v) for k, v in (self.pauses or {}).items()}),
            fallback_language=config.get("fallback-language"),
            routing=tuple(config.get("routing")),
            normalize=normalize_features(self.normalize),
            lexicon=configured_lexicon(self.lexicons, self.storage_options),
        )


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

    def __init__(self, client: Client, source: str, options: ConvertOptions, *, priority: int = 0):
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
        self.priority = priority
        self.started = time.time()
        self.store = options.store()
        request = options.plan_request()
        token = tokenize(source, options.include_matter, request, self.started)
        include_matter = bool(config.get("include-matter", override=options.include_matter))
        with self.span():
            self.parse: Future = client.submit(
                parse_task, source, include_matter, options.storage_options,
                key=f"parse-{self.stem}-{token}", priority=PLAN_PRIORITY, pure=False,
            )
            self.plan: Future = client.submit(
                plan_task, self.parse, request,
                key=f"chunk-{self.stem}-{token}", priority=PLAN_PRIORITY, pure=False,
            )
        self.token = token
        self.batches: list[Future] = []
        self.batch_vars: list[Variable] = []
        self.merge: Future | None = None
        self.book_plan: BookPlan | None = None
        self.cached_sizes: dict[str, int] = {}
        self.n_batches_chunks: list[int] = []
        #: Name of the distributed.Event that tells this book's merge to stop.
        self.stop_event = f"ebook2audio-stop-{self.stem}-{token}"
        self.resources: dict[str, float] = {}
        #: The merge's arguments, kept to submit it again after KilledWorker.  Plain
        #: submit arguments, not a partial: Dask finds the parse future only there.
        self._merge_args: tuple = ()
        self._merge_kwargs: dict[str, Any] = {}
        #: Times the merge was submitted again after Dask gave up on it (KilledWorker).
        self.merge_restarts = 0
        #: Set when the book is failed from outside its tasks (no worker offers the resources).
        self.stall_error: Ebook2AudioError | None = None
        #: The merge's result, once :meth:`report` has fetched it.
        self.merged: MergeResult | None = None

    def span(self):
        """The Dask span of the book's tasks: tags ``ebook2audio`` and the book's stem.

        The dashboard's fine performance metrics can be filtered by these tags.
        """
        return span("ebook2audio", self.stem)

    def submit_synthesis(self, backlog: int = 0) -> None:
        """Gather the plan, list the chunk store once and submit synthesize + merge.

        *backlog*: characters of the run's other books that will be
        synthesised after this one (see :meth:`BookPlan.batches`).
        """
        with self.span():
            self._submit_synthesis(backlog)

    def _submit_synthesis(self, backlog: int) -> None:
        plan: BookPlan = self.plan.result()
        self.book_plan = plan
        present = self.store.list_sizes(plan.spec.engine)
        wanted = {c.key for c in plan.chunks}
        self.cached_sizes = {k: v for k, v in present.items() if k in wanted}
        batch_chars = int(config.get("synthesize.batch-chars", override=self.options.batch_chars))
        resources = self.options.resources
        if resources is None:  # {} (no restriction) is a valid choice; None means "from config"
            resources = dict(config.get("synthesize.resources") or {})
        self.resources = dict(resources)
        threads = int(config.get("synthesize.engine-threads", override=self.options.engine_threads))
        retries = int(config.get("synthesize.retries", override=self.options.retries))
        batches = plan.batches(
            batch_chars, skip=set(self.cached_sizes), slots=self._synth_slots(resources),
            min_chars=MIN_BATCH_CHARS, backlog=backlog,
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
                prepare_voice_task, spec, self.store, threads,
                key=f"voice-{self.stem}-{self.token}", resources=resources or None, retries=retries,
                priority=self.priority + 2, pure=False,
            )
        for i, batch in enumerate(batches):
            items = tuple((c.key, c.text) for c in batch)
            chunk_batch.update((c.key, i) for c in batch)
            self.n_batches_chunks.append(len(items))
            self.batches.append(
                self.client.submit(
                    synthesize_task, spec, items, self.store, threads, voice, retries,
                    key=f"synthesize-{self.stem}-{i}-{self.token}",
                    resources=resources or None, retries=retries,
                    # book order (large batches first, the small ones last); Dask does
                    # not keep submission order among equal priorities
                    priority=self.priority + 1 - i / len(batches), pure=False,
                )
            )
        # The merge does not depend on the batches (Dask would start it only after
        # the last one): it starts at once and gets each batch's future through a
        # named Variable, so it streams chunks into the encoder as they are made.
        for i, future in enumerate(self.batches):
            var = Variable(f"ebook2audio-{self.stem}-{self.token}-{i}", client=self.client)
            var.set(future)
            self.batch_vars.append(var)
        allow_gaps = bool(config.get("synthesize.allow-gaps", False, override=self.options.allow_gaps))
        self._merge_args = (
            self.parse, plan, tuple(v.name for v in self.batch_vars), chunk_batch, self.store,
            self.output, self.options.output_options, None, self.cached_sizes, self.stop_event,
        )
        self._merge_kwargs = {"allow_gaps": allow_gaps, "failures_url": self.failures_url,
                              "output_spec": self.output_spec}
        self.submit_merge()

    def submit_merge(self) -> None:
        """Submit the merge task (again, after its workers kept dying: a new key)."""
        suffix = f"-{self.merge_restarts}" if self.merge_restarts else ""
        with self.span():
            self.merge = self.client.submit(
                merge_task, *self._merge_args, **self._merge_kwargs,
                key=f"merge-{self.stem}-{self.token}{suffix}", priority=self.priority + 10, pure=False,
            )

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
        return len(self.book_plan.chunks) if self.book_plan else 0

    def report(self) -> dict:
        """The book's report (see :func:`ebook2audio_dask.pipeline.report.build_report`)."""
        self.merged = merged = self.merge.result()
        self.output = merged.output  # the first file of a split book
        # a batch that failed as a whole (KilledWorker) is in the merge's dead letters
        batches: list[BatchResult] = [f.result() for f in self.batches if f.status == "finished"]
        return build_report(
            self.book_plan, merged, batches, self.cached_sizes, wall_s=time.time() - self.started,
            source=self.source, started=self.started,
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
            publication.stage_bytes(dumps_report(report).encode("utf-8"), self.report_url, options)
            publication.commit(options)
        except Exception as exc:
            publication.discard(options)
            raise BookError(self.source, f"nothing was published: {exc}") from exc

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

    def cancel(self) -> None:
        """Cancel the book's remaining tasks.

        ``force=True`` also cancels them for the merge task's worker client,
        so a merge waiting for a batch stops at once (its ffmpeg is killed and
        its temporary file removed).  The Variables are kept until the merge
        has ended (:meth:`release`): a merge that has not fetched a batch yet
        must find it, cancelled, rather than wait for it.
        """
        if self.merge is not None:
            try:  # the merge polls this: it stops (and kills its ffmpeg) within a second
                Event(self.stop_event, client=self.client).set()
            except Exception:  # pragma: no cover - scheduler already gone
                logger.debug("could not set %s", self.stop_event, exc_info=True)
        self.client.cancel(self.futures(), force=True)

    def futures(self) -> list[Future]:
        """Every future of the book: parse, plan, batches and merge (once submitted)."""
        return [self.parse, self.plan, *self.batches] + ([self.merge] if self.merge else [])

    def forget(self) -> None:
        """Release the book's futures once its result is known.

        A finished task whose result lived on a worker that then died is
        recomputed as long as a future holds it: a done book must not be
        merged (or synthesised) again because a worker went away later.
        """
        for future in self.futures():
            try:
                future.release()
            except Exception:  # pragma: no cover - client already closing
                logger.debug("could not release %s", future.key, exc_info=True)

    def release(self) -> None:
        """Delete the Variables that handed the batches to the merge task (and its stop event)."""
        for var in self.batch_vars:
            try:
                var.delete()
            except Exception:  # pragma: no cover - scheduler already gone
                pass
        self.batch_vars = []
        if self.merge is not None and self.merge.done():
            try:
                Event(self.stop_event, client=self.client).clear()
            except Exception:  # pragma: no cover - scheduler already gone
                pass



def submit_book(client: Client, source: str, options: ConvertOptions, *, priority: int = 0) -> BookJob:
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
    """
    results: dict[int, BookResult] = {}
    by_future: dict[Future, tuple[str, BookJob, int]] = {}
    for client in {id(job.client): job.client for job in jobs}.values():
        ensure_job_metrics(client)  # ebook2audio_* at the scheduler's /metrics, once per scheduler
    pending = as_completed()
    watch = _ResourceWatch([job for job in jobs], float(config.get("cluster.no-workers-timeout")))
    watch.start()
    for job in jobs:
        by_future[job.plan] = ("plan", job, 0)
        pending.add(job.plan)
    # Plans are cheap and run first: give them a moment, so each book's batches
    # can be sized knowing the books queued behind it.
    try:
        wait([job.plan for job in jobs], timeout=float(config.get("synthesize.plan-wait", 0.5)))
    except TimeoutError:
        pass

    def backlog(job: BookJob) -> int:
        later = [j for j in jobs if j is not job and j.priority < job.priority and id(j) not in results]
        return sum(j.plan.result().chars for j in later if j.plan.done() and j.plan.status == "finished")

    def fail(job: BookJob, exc: BaseException) -> None:
        if id(job) in results:
            return
        lost = _scheduler_lost(job.client, exc)
        if lost:
            exc = BookError(job.source, f"lost the connection to the scheduler {_address(job.client)}; the chunks "
                                        "made so far are kept in the store: run the same command again to resume")  # fmt: skip
        logger.debug("book %s failed", job.source, exc_info=exc)
        code = exc.exit_code if isinstance(exc, Ebook2AudioError) else EXIT_BOOK_FAILED
        results[id(job)] = BookResult(job.source, False, error=_error_line(job.source, exc), exit_code=code)
        if not lost:
            log_book_event(job.client, "book-failed", job.source, output=job.output,
                           error=results[id(job)].error, exit_code=code)
        job.cancel()
        if bars is not None:
            bars.book_done(job)
        if on_result:
            on_result(results[id(job)])

    try:
        for future in pending:
            stage, job, n = by_future.pop(future)
            restart = (stage == "merge" and id(job) not in results and future.status == "error"
                       and job.merge_restarts < MERGE_RESTARTS and _killed_worker(future.exception()))  # fmt: skip
            if (stage == "merge" and not restart) or (id(job) in results and job.merge is None):
                job.release()  # the merge has ended (or never started): its Variables can go
            if id(job) in results:
                continue
            if restart:
                # The merge only waits and streams: it dies with a worker that another
                # task kills.  A new merge reads what is in the store and goes on.
                job.merge_restarts += 1
                logger.warning("%s: the merge's workers died; merging again (%d)", job.source, job.merge_restarts)
                job.submit_merge()
                by_future[job.merge] = ("merge", job, 0)
                pending.add(job.merge)
                continue
            if stage == "synthesize" and future.status == "error":
                # Not the book's end: the merge writes the batch's chunks to the
                # dead-letter file (KilledWorker) or fails the book with its error.
                logger.debug("%s: a synthesize task failed: %s", job.source, future.exception())
                continue
            try:
                future.result()
            except Exception as exc:
                fail(job, job.stall_error or exc)
                continue
            if stage == "plan":
                try:
                    job.submit_synthesis(backlog=backlog(job))
                except Exception as exc:
                    fail(job, exc)
                    continue
                log_book_event(
                    job.client, "book-started", job.source, title=job.book_plan.title, engine=job.book_plan.spec.engine,
                    voice=job.book_plan.spec.voice, chars=job.book_plan.chars, chunks=job.n_chunks,
                    chunks_from_cache=len(job.cached_sizes), synthesize_tasks=len(job.batches), output=job.output,
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
            elif stage == "synthesize":
                if on_chunks:
                    on_chunks(n)
                if bars is not None:
                    bars.book_chunks(job, n)
            elif stage == "merge":
                try:
                    report = job.report()
                    if write_report:
                        write_report(job, report)
                    job.publish(report)
                except Exception as exc:
                    job.discard()
                    fail(job, exc)
                    continue
                results[id(job)] = BookResult(job.source, True, output=job.output, report=report)
                log_book_event(job.client, "book-finished", job.source, output=job.output, **_event_totals(report))
                job.forget()
                if bars is not None:
                    bars.book_done(job)
                if on_result:
                    on_result(results[id(job)])
    except BaseException:
        # Ctrl-C, or the client itself failing: stop every unfinished book's work on
        # the cluster (an external cluster would otherwise go on for nobody).
        for job in jobs:
            if id(job) not in results:
                try:
                    job.cancel()
                    job.release()
                except Exception:  # noqa: BLE001 - the scheduler may be gone already
                    logger.debug("could not cancel %s", job.source, exc_info=True)
        raise
    finally:
        watch.stop()
    for job in jobs:
        job.release()
    return [results[id(job)] for job in jobs]


#: Report totals copied into the ``book-finished`` event.
_EVENT_TOTALS = ("chars", "chunks", "chunks_from_cache", "chunks_synthesized", "chunks_failed",
                 "audio_s", "wall_s", "synth_s", "rtf")  # fmt: skip


def _event_totals(report: dict) -> dict:
    totals = report.get("totals", {})
    return {"chapters": len(report.get("chapters", ())), **{k: totals.get(k) for k in _EVENT_TOTALS}}


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
        self._thread = threading.Thread(target=self._run, name="ebook2audio-resource-watch", daemon=True)

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
                workers = list(self.jobs[0].client.scheduler_info(n_workers=-1).get("workers", {}).values())
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
                    f"no worker offers the synthesize resources {wanted} (waited {self.timeout:g} s; "
                    f"start workers with --resources {wanted.replace(', ', ',')} or change "
                    "ebook2audio.synthesize.resources)",
                )
                logger.warning("%s", job.stall_error)
                job.cancel()
