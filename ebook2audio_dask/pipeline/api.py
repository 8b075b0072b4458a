"""The one-call API: :func:`convert`.

Its options (engine, voice, chapters, output format, cluster...) are defined
once, in :mod:`ebook2audio_dask.pipeline.options`: ``convert`` takes them as
keyword arguments, and its signature and the ``Parameters`` entries of its
docstring are generated from there.  The arguments that are Python objects
rather than options (*client*, the progress callbacks, *bars*) are written
out here, where a type checker and a reader see them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from distributed import Client

from ..engines import get_engine_class
from ..errors import Interrupted, UsageError
from ..ingest.registry import BOOK_SUFFIXES  # file name endings picked up from a folder
from ..logs import get_logger
from ..storage import get_fs, stem_of
from ..storage.checks import check_input, check_output
from ..text.lexicon import configured_lexicon
from .graph import BookJob, BookResult, run_jobs
from .options import numpydoc_parameters, signature_parameters, split_options

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
            f"{len(unfinished)} book(s) not finished; the chunks synthesised so far are kept in "
            "the chunk store: the same command resumes from them"
        )
    return (
        f"{len(unfinished)} book(s) not finished; {stored} of their {total} chunks are in the "
        "chunk store: the same command resumes from them"
    )


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


def check_request(inputs: str | Iterable[str], output: str, **options: Any) -> list[str]:
    """Check a conversion request before any cluster starts; return its books.

    :func:`convert` calls it first, and the CLI before it starts a cluster:
    the options are known and valid (:func:`~.options.split_options`), the
    output options, lexicons and engine name are valid, every input exists
    as a file, folder or pattern and none is a FIFO or device, and the output
    folder can be written to (:mod:`ebook2audio_dask.storage.checks`).

    Parameters
    ----------
    inputs : str or iterable of str
        Book files, folders or glob patterns (paths or fsspec URLs).
    output : str
        Output folder (path or fsspec URL).
    **options
        Options of :func:`convert`.

    Raises
    ------
    UsageError
        What is wrong, on one line (exit code 2).
    TypeError
        A keyword that is not an option of :func:`convert`.
    """
    if isinstance(inputs, str):
        inputs = [inputs]
    opts, _ = split_options(output, options, caller="check_request")
    opts.output_spec()
    configured_lexicon(opts.lexicons, opts.storage_options)  # an unreadable lexicon: usage error
    if opts.engine is not None:  # unknown engine, or a server engine with no endpoint
        get_engine_class(opts.engine).runtime_options()
    books = expand_inputs(inputs, opts.storage_options)
    if not books:
        raise UsageError("no input books given")
    check_output(output, opts.output_options)
    return books


def convert(
    inputs: str | Iterable[str],
    output: str,
    *,
    client: Client | None = None,
    progress: bool | Callable[[int], None] | None = None,
    progress_total: Callable[[int], None] | None = None,
    on_job: Callable[[BookJob], None] | None = None,
    on_result: Callable[[BookResult], None] | None = None,
    bars: Any = None,
    **options: Any,
) -> list[BookResult]:
    given = dict(options)
    adapt, scheduler = given.get("adapt"), given.get("scheduler")
    if not given.get("slots") and adapt and client is None and scheduler is None:
        given["slots"] = adapt[1]  # batches sized for the adaptive cluster's maximum
    book_options, run = split_options(output, given)  # an unknown keyword: TypeError
    books = check_request(inputs, output, **options)
    with run.client_for(client, book_options.engine_threads) as c:
        # Not started yet: run_jobs starts them a window at a time (ebook2audio.books-in-flight).
        jobs = [BookJob(c, source, book_options, priority=rank, start=False)
                for source, rank in book_priorities(books, run.priority).items()]  # fmt: skip
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


convert.__doc__ = f"""Convert ebooks into chaptered M4B audiobooks.

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
    client : distributed.Client, optional
        Run on this client's cluster (the cluster options are then unused).
    progress : bool or callable, optional
        ``True``: progress bars, one for all chunks and one per book in
        flight (``tqdm.auto``: widgets in Jupyter, text in a terminal).  A
        callable is called with chunk counts as work completes.
    progress_total : callable, optional
        Called with chunk counts as they become known (with a callable *progress*).
    on_job : callable, optional
        Called with each :class:`BookJob` once its first tasks are submitted
        (books start ``ebook2audio.books-in-flight`` at a time, in order), e.g.
        to show the dashboard or keep the futures.
    on_result : callable, optional
        Called with each :class:`BookResult` as soon as its book is done or
        has failed.
    bars : ProgressBars, optional
        Bars to drive instead (the CLI passes its own, on stderr).
{numpydoc_parameters()}

    Returns
    -------
    list of BookResult
        One per input book, in input order.

    Raises
    ------
    UsageError
        A bad option or input, before anything starts (see :func:`check_request`).
    TypeError
        A keyword that is not an option.

    Examples
    --------
    >>> import ebook2audio_dask as e2a
    >>> results = e2a.convert("book.epub", "out/", chapters=[1, 2])  # doctest: +SKIP
    >>> results[0].report["totals"]["audio_s"]  # doctest: +SKIP
    """

_explicit = list(inspect.signature(convert).parameters.values())[:-1]  # all but **options
convert.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    _explicit + signature_parameters(),
    return_annotation=inspect.signature(convert).return_annotation,
)
