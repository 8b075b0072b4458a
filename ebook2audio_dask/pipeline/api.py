"""The one-call API: :func:`convert`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from distributed import Client

from ..cluster import client_for
from ..engines import get_engine_class
from ..errors import Interrupted, UsageError
from ..ingest.registry import BOOK_SUFFIXES  # file name endings picked up from a folder
from ..logs import get_logger
from ..storage import get_fs, stem_of
from ..storage.checks import check_input, check_output
from ..text.lexicon import configured_lexicon
from .graph import BookJob, BookResult, ConvertOptions, run_jobs

__all__ = ["BOOK_SUFFIXES", "check_request", "convert", "expand_inputs"]

logger = get_logger(__name__)

def expand_inputs(
    inputs: Iterable[str], storage_options: dict[str, Any] | None = None
) -> list[str]:
    """Turn files, folders and glob patterns into a list of book URLs.

    A folder contributes the books directly inside it (``*.epub``, ``*.txt``,
    ``*.html``...), sorted.  A file is taken as-is whatever its extension
    (its content decides its format).  A pattern or folder matching nothing is
    a :class:`~ebook2audio_dask.errors.UsageError`.
    """
    out: list[str] = []
    for item in inputs:
        fs, path = get_fs(item, storage_options)
        proto = fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol
        prefix = "" if proto in ("file", "local") else f"{proto}://"
        if any(ch in item for ch in "*?["):
            matches = sorted(p for p in fs.glob(path) if fs.isfile(p))
            if not matches:
                raise UsageError(f"{item}: no file matches")
            out.extend(prefix + p for p in matches)
        elif fs.isdir(path):
            books = sorted(
                p for p in fs.ls(path, detail=False) if p.lower().endswith(BOOK_SUFFIXES)
            )
            if not books:
                raise UsageError(f"{item}: folder holds no ebook ({', '.join(BOOK_SUFFIXES)})")
            out.extend(prefix + p for p in books)
        else:
            # a missing file is the book's own failure (reported per book), not a usage error
            out.append(item)
    for url in out:
        check_input(url, storage_options)  # a FIFO or device would block or never end
    stems: dict[str, str] = {}
    for url in out:
        other = stems.setdefault(stem_of(url), url)
        if other != url:
            raise UsageError(f"{other} and {url} would both be written as {stem_of(url)}.m4b")
    return list(dict.fromkeys(out))


def _check_pauses(pauses: dict[str, float] | None) -> dict[str, float] | None:
    """Validate ``pauses=``: known kinds, non-negative seconds."""
    if not pauses:
        return None
    kinds = ("sentence", "paragraph", "title", "chapter")
    out = {}
    for kind, value in pauses.items():
        if kind not in kinds:
            raise UsageError(f"unknown pause {kind!r}; choose from {', '.join(kinds)}")
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            raise UsageError(f"pause {kind}: {value!r} is not a number of seconds") from None
        if not 0 <= seconds <= 60:
            raise UsageError(f"pause {kind}: {seconds:g} s is out of range (0 to 60)")
        out[kind] = seconds
    return out


def _kept_after_interrupt(jobs: list[BookJob]) -> str:
    """What an interrupted run leaves: its unfinished books' chunks now in the chunk store."""
    unfinished = [
        j for j in jobs if j.merge is None or not j.merge.done() or j.merge.status != "finished"
    ]
    planned = [j for j in unfinished if j.book_plan is not None]
    stored = total = 0
    try:
        for job in planned:  # the books' own keys: never a listing of the whole store
            wanted = list({c.key: None for c in job.book_plan.chunks})
            total += len(wanted)
            stored += len(job.store.sizes(job.book_plan.spec.engine, wanted))
    except Exception:
        logger.debug("could not count the stored chunks", exc_info=True)
        planned = []
    if not planned:
        return (
            f"{len(unfinished)} book(s) not finished; the chunks synthesised so far are kept in the "
            "chunk store: the same command resumes from them"
        )
    return (
        f"{len(unfinished)} book(s) not finished; {stored} of their {total} chunks are in the chunk "
        "store: the same command resumes from them"
    )


def _chapter_selection(chapters) -> tuple | None:
    """``chapters=`` as a tuple of numbers, ranges and titles (a range is never expanded)."""
    if chapters is None:
        return None
    if isinstance(chapters, (int, range, str)):
        return (chapters,)
    return tuple(chapters)


def book_priorities(books: list[str], first: Iterable[str] | None = None) -> dict[str, int]:
    """Dask priority of each book, in submission order (highest first).

    Books matching *first* (paths, URLs or glob patterns, matched against the
    whole source and its file name) come first, then the rest, each group in
    input order.  Priorities are 100 apart, so a book's synthesize (+0..1),
    voice (+2) and merge (+10) tasks stay between its neighbours'.
    """
    import fnmatch

    patterns = list(first or [])

    def wanted(source: str) -> bool:
        name = source.rstrip("/").rsplit("/", 1)[-1]
        return any(
            fnmatch.fnmatch(source, p) or fnmatch.fnmatch(name, p) or source.endswith(p)
            for p in patterns
        )

    ordered = [b for b in books if wanted(b)] + [b for b in books if not wanted(b)]
    return {source: 100 * (len(ordered) - i) for i, source in enumerate(ordered)}


def check_request(
    inputs: str | Iterable[str],
    output: str,
    *,
    engine: str | None = None,
    storage_options: dict[str, Any] | None = None,
    output_storage_options: dict[str, Any] | None = None,
    lexicons: str | Iterable[str] | None = None,
    format: str | None = None,
    split: str | None = None,
    split_hours: float | None = None,
    loudnorm: bool | None = None,
    subtitles: str | None = None,
) -> list[str]:
    """Check a conversion request before any cluster starts; return its books.

    :func:`convert` calls it first, and the CLI before it starts a cluster:
    the output options, lexicons and engine name are valid, every input
    exists as a file, folder or pattern and none is a FIFO or device, and the
    output folder can be written to (:mod:`ebook2audio_dask.storage.checks`).

    Raises
    ------
    UsageError
        What is wrong, on one line (exit code 2).
    """
    from ..audio.formats import OutputSpec

    if isinstance(inputs, str):
        inputs = [inputs]
    OutputSpec.resolve(format, split, split_hours, loudnorm, subtitles)
    lexicon_list = (
        (lexicons,) if isinstance(lexicons, str) else tuple(lexicons) if lexicons else None
    )
    configured_lexicon(lexicon_list, storage_options)  # an unreadable lexicon is a usage error
    if engine is not None:
        get_engine_class(
            engine
        ).runtime_options()  # unknown engine, or a server engine with no endpoint
    books = expand_inputs(inputs, storage_options)
    if not books:
        raise UsageError("no input books given")
    check_output(
        output, output_storage_options if output_storage_options is not None else storage_options
    )
    return books


def convert(
    inputs: str | Iterable[str],
    output: str,
    *,
    engine: str | None = None,
    voice: str | None = None,
    model: str | None = None,
    language: str | None = None,
    chapters: Iterable[int | str] | None = None,
    include_matter: bool | None = None,
    cache: str | None = None,
    client: Client | None = None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    gpus: str | Iterable[str] | None = None,
    memory_limit: str | float | None = None,
    slots_per_gpu: int | None = None,
    adapt: tuple[int, int] | None = None,
    slurm: bool | dict[str, Any] | None = None,
    slots: int | None = None,
    storage_options: dict[str, Any] | None = None,
    output_storage_options: dict[str, Any] | None = None,
    cache_storage_options: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    batch_chars: int | None = None,
    engine_threads: int | None = None,
    retries: int | None = None,
    allow_gaps: bool | None = None,
    format: str | None = None,
    split: str | None = None,
    split_hours: float | None = None,
    loudnorm: bool | None = None,
    subtitles: str | None = None,
    pauses: dict[str, float] | None = None,
    normalize: bool | None = None,
    lexicons: str | Iterable[str] | None = None,
    progress: bool | Callable[[int], None] | None = None,
    progress_total: Callable[[int], None] | None = None,
    on_job: Callable[[BookJob], None] | None = None,
    on_result: Callable[[BookResult], None] | None = None,
    priority: Iterable[str] | None = None,
    bars: Any = None,
) -> list[BookResult]:
    """Convert ebooks into chaptered M4B audiobooks.

    Writes ``<output>/<stem>.m4b`` and ``<output>/<stem>.report.json`` for
    every book that succeeds.  A book that fails (unreadable file, no text...)
    is reported in its :class:`BookResult` and never stops the others; nothing
    is written at its output path.

    Parameters
    ----------
    inputs : str or iterable of str
        Book files, folders or glob patterns (paths or fsspec URLs).
    output : str
        Output folder (path or fsspec URL), created if needed.
    engine, voice : str, optional
        Speech engine (``"piper"``, ``"espeak"``, ``"coqui"``) and voice; by
        default chosen from each book's language.  For Coqui XTTS the voice
        may be reference clip(s) to clone: a path/URL, several joined by
        ``|``, a folder or a glob.
    model : str, optional
        Coqui model (folder, checkpoint, fsspec URL or downloaded model name);
        default ``ebook2audio.coqui.model``.
    language : str, optional
        Override the books' language (BCP 47).
    chapters : iterable of int or str, optional
        Chapters to convert: indices as :func:`ebook2audio_dask.read_book`
        numbers them, and/or titles (a whole title, a unique part of one, or
        a ``*`` pattern; see :meth:`ebook2audio_dask.Book.find_chapters`).
    include_matter : bool, optional
        Also convert front/back matter (title page, licence...).
    cache : str, optional
        Chunk store URL (default: config ``ebook2audio.cache``).
    client : distributed.Client, optional
        Run on this client's cluster.
    scheduler : str, optional
        Address of an existing scheduler (``tcp://host:8786``).
    n_workers : int, optional
        Workers of the embedded cluster (when neither *client* nor *scheduler*).
    gpus : str or iterable of str, optional
        GPUs of the embedded cluster, one worker each (``"0,1"``, ``"none"``,
        ``"auto"``); default ``ebook2audio.cluster.gpus``.
    memory_limit : str or float, optional
        Memory limit of each embedded worker (``"4GiB"``, ``"auto"``, ``0``
        for none); default ``ebook2audio.cluster.memory-limit``.
    slots_per_gpu : int, optional
        Synthesize tasks each embedded GPU worker runs at once, sharing its
        engines; default ``ebook2audio.cluster.slots-per-gpu`` (1).
    adapt : (int, int), optional
        ``(minimum, maximum)`` workers: an adaptive embedded or SLURM cluster
        that grows with the queued synthesis and shrinks when idle.
    slurm : bool or dict, optional
        Run the workers as SLURM jobs (``True``, or overrides of the
        ``ebook2audio.slurm`` config section, e.g. ``{"partition": "gpu"}``).
    slots : int, optional
        Synthesize tasks the cluster will run at once, for sizing batches
        (default: the workers present, or *adapt*'s maximum).
    storage_options : dict, optional
        fsspec options for inputs, output and cache: flat (every remote URL)
        or keyed by protocol (``{"s3": {"client_kwargs": {"endpoint_url":
        ...}}}``).  fsspec's own ``FSSPEC_S3_...`` environment variables work
        too.  Never printed, logged, or put in task names or reports.
    output_storage_options, cache_storage_options : dict, optional
        Options for the output folder / chunk store when they differ.
    settings : dict, optional
        Engine settings that change the audio.
    batch_chars : int, optional
        Characters per synthesize task.
    engine_threads : int, optional
        Threads per engine instance.
    retries : int, optional
        More attempts for a chunk the engine raised on (default
        ``ebook2audio.synthesize.retries``, 2).  A chunk that fails them all
        is written to ``<output>/<stem>.failures.jsonl`` (chunk key, chapter,
        text excerpt, error, worker, attempts), as are the chunks of a task
        that killed its worker more often than Dask's
        ``distributed.scheduler.allowed-failures``.
    allow_gaps : bool, optional
        Finish such a book with silence in place of those chunks (listed in
        the report's ``gaps``) instead of failing it (default
        ``ebook2audio.synthesize.allow-gaps``, false).
    format : str, optional
        Audio format: ``"m4b"`` (AAC, the default: ``ebook2audio.output.format``),
        ``"mp3"`` (ID3v2.3 tags, CHAP chapters), ``"opus"`` (Ogg Opus),
        ``"flac"`` or ``"wav"`` (no chapters in the file).  See
        :doc:`/outputs`.
    split : str, optional
        ``"chapters"``: one file per chapter, ``<output>/<stem>/<NN> -
        <title>.<ext>``, with track numbers (default
        ``ebook2audio.output.split``: one file).
    split_hours : float, optional
        Parts of at most this many hours, ``<stem> - Part i of n.<ext>``,
        cut between chunks (at a chapter's start when one is close); each
        part holds its chapters (one cut across parts appears in both,
        "(continued)").
    loudnorm : bool, optional
        EBU R128 loudness normalisation with ffmpeg's ``loudnorm`` (one pass,
        dynamic; targets ``ebook2audio.output.loudness``: -16 LUFS, -1.5 dBTP,
        LRA 11).
    subtitles : str, optional
        ``"srt"`` or ``"vtt"``: subtitles next to each audio file, one cue
        per sentence, timed from the real chunk lengths.
    pauses : dict, optional
        Seconds of silence after a ``sentence`` group, ``paragraph``,
        ``title`` and ``chapter`` (over ``ebook2audio.pauses``), e.g.
        ``{"chapter": 3.0}``.
    normalize : bool, optional
        Write numbers, Roman numerals and abbreviations out in words, per
        language, before synthesis (default ``ebook2audio.text.normalize``,
        true); ``False`` sends the text as written.
    lexicons : str or iterable of str, optional
        User pronunciation lexicons (paths/URLs): YAML/JSON ``{language:
        {word: replacement}}`` (a respelling, or ``/IPA/``) or PLS XML, used
        after those of ``ebook2audio.text.lexicons``; see docs/text.md.
    progress : bool or callable, optional
        ``True``: progress bars, one for all chunks and one per book in
        flight (``tqdm.auto``: widgets in Jupyter, text in a terminal).  A
        callable is called with chunk counts as work completes.
    progress_total : callable, optional
        Called with chunk counts as they become known (with a callable *progress*).
    bars : ProgressBars, optional
        Bars to drive instead (the CLI passes its own, on stderr).
    on_job : callable, optional
        Called with each :class:`BookJob` once its first tasks are submitted
        (books start ``ebook2audio.books-in-flight`` at a time, in order), e.g.
        to show the dashboard or keep the futures.
    on_result : callable, optional
        Called with each :class:`BookResult` as soon as its book is done or
        has failed.
    priority : iterable of str, optional
        Books to convert first: paths/URLs or glob patterns (matched against
        each input's full path and its file name).  Otherwise books are
        worked on in input order: the first finishes first, and a book's
        merge goes before new synthesis.

    Returns
    -------
    list of BookResult
        One per input book, in input order.

    Examples
    --------
    >>> import ebook2audio_dask as e2a
    >>> results = e2a.convert("book.epub", "out/", chapters=[1, 2])  # doctest: +SKIP
    >>> results[0].report["totals"]["audio_s"]  # doctest: +SKIP
    """
    books = check_request(
        inputs,
        output,
        engine=engine,
        storage_options=storage_options,
        output_storage_options=output_storage_options,
        lexicons=lexicons,
        format=format,
        split=split,
        split_hours=split_hours,
        loudnorm=loudnorm,
        subtitles=subtitles,
    )
    lexicon_list = (
        (lexicons,) if isinstance(lexicons, str) else tuple(lexicons) if lexicons else None
    )
    options = ConvertOptions(
        output=output,
        engine=engine,
        voice=voice,
        model=model,
        language=language,
        chapters=_chapter_selection(chapters),
        include_matter=include_matter,
        cache=cache,
        storage_options=storage_options,
        output_storage_options=output_storage_options,
        cache_storage_options=cache_storage_options,
        batch_chars=batch_chars,
        engine_threads=engine_threads,
        retries=retries,
        allow_gaps=allow_gaps,
        format=format,
        split=split,
        split_hours=split_hours,
        loudnorm=loudnorm,
        subtitles=subtitles,
        pauses=_check_pauses(pauses),
        normalize=normalize,
        lexicons=lexicon_list,
        settings=settings,
        slots=slots or (adapt[1] if adapt and client is None and scheduler is None else None),
    )

    with client_for(
        client,
        scheduler,
        n_workers,
        engine_threads,
        gpus=gpus,
        adapt=adapt,
        slurm=slurm,
        memory_limit="default" if memory_limit is None else memory_limit,
        slots_per_gpu=slots_per_gpu,
    ) as c:
        # Not started yet: run_jobs starts them a window at a time (ebook2audio.books-in-flight).
        jobs = [BookJob(c, source, options, priority=rank, start=False)
                for source, rank in book_priorities(books, priority).items()]  # fmt: skip
        given_bars, bars = bars, None
        if progress is True and given_bars is None:
            from .progress import ProgressBars

            bars = ProgressBars(notebook=True)
        try:
            results = run_jobs(
                jobs,
                on_chunks=progress if callable(progress) else None,
                on_total=progress_total,
                on_result=on_result,
                bars=bars or given_bars,
                on_start=on_job,
            )
        except KeyboardInterrupt:  # run_jobs has cancelled the unfinished books' tasks
            raise Interrupted(_kept_after_interrupt(jobs)) from None
        finally:
            if bars is not None:
                bars.close()
        by_source = {r.source: r for r in results}
        return [by_source[source] for source in books]  # input order
