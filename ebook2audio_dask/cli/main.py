"""The ``ebook2audio`` command line (click).

Exit codes: 0 every book converted; 1 at least one book failed (the others
still finished); 2 bad usage (unknown option, bad chapter range, unknown
engine, an input that is a FIFO, an output that cannot be written...); 130
interrupted by Ctrl-C.  Errors are printed as one line; ``--debug`` adds
tracebacks and debug logging.  Everything printed goes through :func:`echo`
(or :func:`echo_json`), which escapes control characters.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from typing import Any

import click
import yaml

from ..errors import (
    EXIT_BOOK_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Ebook2AudioError,
    UsageError,
    one_line,
    terminal_safe,
)

__all__ = ["cli", "main", "parse_chapters", "parse_settings", "parse_storage_options"]


#: A ``--chapters`` value of numbers and ranges only (anything else is a title).
_NUMBERS = re.compile(r"^[\s\d,-]+$")


def parse_chapters(
    spec: str | tuple[str, ...] | list[str] | None,
) -> tuple[int | range | str, ...] | None:
    """``--chapters`` values → chapter numbers, ranges and titles; none → ``None`` (all chapters).

    A value made of numbers and ranges (``"1-3,7"``) gives ``range(1, 4)``
    and ``7``: a range stays a range, however wide (``1-20000000`` costs
    nothing), and is checked against each book's chapter count by
    :meth:`~ebook2audio_dask.model.Book.select`.  Any other value is one
    chapter title or pattern (``"The Real Princess"``, ``"Stave*"``), commas
    included, matched per book by
    :meth:`~ebook2audio_dask.model.Book.find_chapters`.  Repeat the option
    for several titles.  A title made only of digits is read as a number.
    """
    if not spec:
        return None
    values = [spec] if isinstance(spec, str) else list(spec)
    out: list[int | range | str] = []
    for value in values:
        if not value.strip():
            continue
        if not _NUMBERS.match(value):
            out.append(" ".join(value.split()))
            continue
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                if "-" in part:
                    a, b = (int(x) for x in part.split("-", 1))
                    if a > b or a < 1:
                        raise ValueError
                    out.append(range(a, b + 1) if b > a else a)
                else:
                    n = int(part)
                    if n < 1:
                        raise ValueError
                    out.append(n)
            except ValueError:
                raise UsageError(
                    f"bad chapter range {one_line(part, 40)!r} in --chapters (use e.g. 1-3,7)"
                ) from None
    return tuple(dict.fromkeys(out)) or None


def parse_settings(pairs: tuple[str, ...] | list[str]) -> dict[str, Any] | None:
    """``("length_scale=1.1", "speaker_id=3")`` → ``{"length_scale": 1.1, "speaker_id": 3}``.

    Values are read as YAML scalars (numbers, booleans, strings), as dask does
    for config values.
    """
    if not pairs:
        return None
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"bad --setting {pair!r} (use KEY=VALUE, e.g. length_scale=1.1)")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def parse_pauses(pairs: tuple[str, ...] | list[str]) -> dict[str, float] | None:
    """``("chapter=3", "sentence=0.4")`` → ``{"chapter": 3.0, "sentence": 0.4}`` (kinds checked by convert)."""
    if not pairs:
        return None
    out: dict[str, float] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise UsageError(f"bad --pause {pair!r} (use KIND=SECONDS, e.g. chapter=3)")
    return out


def parse_storage_options(
    text: str | None, s3_endpoint: str | None = None
) -> dict[str, Any] | None:
    """``--storage-options JSON`` and ``--s3-endpoint URL`` → fsspec storage options.

    The endpoint goes under ``{"s3": {"client_kwargs": {"endpoint_url": URL}}}``
    (only s3:// URLs get it); flat JSON options apply to every remote URL, or to
    s3:// URLs only when an endpoint is given too.
    """
    options: dict[str, Any] = {}
    if text:
        try:
            options = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"--storage-options is not valid JSON: {exc.msg} at character {exc.pos}"
            ) from None
        if not isinstance(options, dict):
            raise UsageError("--storage-options must be a JSON object")
    if s3_endpoint:
        import fsspec

        known = set(fsspec.available_protocols())
        per_protocol = bool(options) and all(
            k in known and isinstance(v, dict) for k, v in options.items()
        )
        if not per_protocol:  # a flat dict applies to every remote protocol: keep that for s3 too
            options = {"s3": dict(options)} if options else {}
        s3 = options.setdefault("s3", {})
        s3.setdefault("client_kwargs", {})["endpoint_url"] = s3_endpoint
    return options or None


def echo(text: object = "", err: bool = False) -> None:
    """Print *text* with every control and bidi-override character escaped.

    Everything the CLI prints goes through here (or :func:`echo_json`), so a
    title, file name or archive member name cannot move the cursor, rewrite
    the clipboard (``ESC ] 52``) or reorder a line.  Line breaks the CLI
    itself puts between lines are kept.
    """
    click.echo("\n".join(terminal_safe(line) for line in str(text).split("\n")), err=err)


def echo_json(data: Any) -> None:
    """Print *data* as JSON; characters a terminal would act on are ``\\uXXXX`` escapes (still valid JSON)."""
    text = json.dumps(data, indent=2, ensure_ascii=False)  # json escapes C0 controls itself
    click.echo(_JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text))


#: What json.dumps(ensure_ascii=False) leaves raw but a terminal acts on (C1 controls, bidi overrides...).
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


class _SafeFormatter(logging.Formatter):
    """Log lines with control characters escaped (tracebacks, shown with --debug, as they are)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return terminal_safe(super().formatMessage(record))


def _setup_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_SafeFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, handlers=[handler])
    logging.captureWarnings(
        True
    )  # Python warnings (e.g. distributed's) become log lines, made safe too
    if not debug:
        logging.getLogger("py.warnings").setLevel(logging.ERROR)
        for name in ("distributed", "bokeh", "tornado"):
            logging.getLogger(name).setLevel(logging.ERROR)
        # Losing the scheduler is reported once per book, as one line; the
        # client's own reconnection errors (and asyncio's) are for --debug.
        # Tornado's "Exception in callback" tracebacks (e.g. distributed's sync()
        # cancelling its callbacks when Ctrl-C interrupts the client) too.
        for name in ("distributed.client", "asyncio", "tornado.application"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


#: Printed when Ctrl-C stops a run before the library could count what is kept.
INTERRUPTED = (
    "interrupted: the chunks synthesised so far are kept in the chunk store; "
    "the same command resumes from them"
)


def _fail(exc: BaseException, debug: bool) -> None:
    """Print *exc* as one line (plus a traceback with --debug) and exit.

    Exit codes: the error's own (1 a book failed, 2 usage), 130 for Ctrl-C,
    1 for anything unexpected.
    """
    if debug:
        traceback.print_exception(exc)
    if isinstance(exc, KeyboardInterrupt):
        echo(INTERRUPTED, err=True)
        sys.exit(EXIT_INTERRUPTED)
    if isinstance(exc, Ebook2AudioError):
        prefix = "interrupted" if exc.exit_code == EXIT_INTERRUPTED else "error"
        echo(f"{prefix}: {exc}", err=True)
        sys.exit(exc.exit_code)
    text = one_line(exc) or type(exc).__name__
    hint = "" if debug else " (run with --debug for details)"
    echo(f"error: {type(exc).__name__}: {text}{hint}", err=True)
    sys.exit(EXIT_BOOK_FAILED)


debug_option = click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
_cache_url = click.option(
    "--cache", "cache_url", help="Chunk store URL (default: ebook2audio.cache)."
)
_storage = click.option(
    "--storage-options", "storage_json", metavar="JSON", help="fsspec options (JSON)."
)
_endpoint = click.option(
    "--s3-endpoint", metavar="URL", help="S3-compatible endpoint for s3:// URLs."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ebook2audio_dask")
def cli() -> None:
    """Turn ebooks (EPUB, TXT, HTML, FB2, PDF, Markdown; MOBI, AZW3, DOCX, RTF, ODT through
    Calibre) into chaptered audiobooks (M4B by default) on a Dask cluster.

    \b
    Exit codes: 0 all books done, 1 at least one book failed (the others
    still finish), 2 usage error (bad option, unknown engine or voice, a
    chapter the book does not have, an input that is a FIFO or device, an
    output that cannot be written), 130 interrupted by Ctrl-C (the chunks
    made so far are kept: the same command resumes).
    Configuration: dask config key "ebook2audio" (env DASK_EBOOK2AUDIO__...).
    """


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", "output", required=True, help="Output folder (path or fsspec URL).")
@click.option(
    "--engine",
    help="Speech engine (piper, espeak, coqui, kokoro, openai...; see `ebook2audio engines`); "
    "default: chosen by language.",
)
@click.option(
    "--voice",
    "voices",
    multiple=True,
    help="Voice id, Piper .onnx model, Coqui speaker name, XTTS reference clip(s) to clone "
    "(repeat for several clips; a folder or glob works too), or a Kokoro voice or blend "
    '("af_heart:0.7+bf_emma:0.3"). Default: by language.',
)
@click.option(
    "--model",
    help="Coqui model: folder (config.json + checkpoint), checkpoint file, fsspec URL "
    "or a Coqui model name already downloaded. Default: ebook2audio.coqui.model. "
    "With --engine kokoro: a Kokoro-82M folder (.onnx + voices, or .pth + config.json "
    "+ voices/), model file or fsspec URL (default ebook2audio.kokoro.model). "
    "With --engine openai: the server's model name (tts-1, kokoro...).",
)
@click.option(
    "--endpoint",
    "endpoints",
    multiple=True,
    metavar="URL",
    help="With --engine openai: base URL of an OpenAI-compatible speech server "
    "(http://127.0.0.1:8880/v1); repeat to spread the requests over several. API key: "
    "$OPENAI_API_KEY or $EBOOK2AUDIO_OPENAI_API_KEY. See ebook2audio.openai.",
)
@click.option(
    "--setting",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Engine setting that changes the audio (e.g. length_scale=1.1, temperature=0.7). Repeatable.",
)
@click.option("--language", help="Override the book's language (BCP 47, e.g. fr, en-GB).")
@click.option(
    "--chapters",
    multiple=True,
    help="Chapters to convert: numbers as `inspect` shows them (1-3,7), or a title or part of "
    'one ("The Real Princess", "Stave*"); repeatable.',
)
@click.option(
    "--include-matter",
    is_flag=True,
    default=None,
    help="Also read front/back matter (title page, contents, licence, colophon).",
)
@click.option(
    "--workers", "n_workers", type=click.IntRange(1), help="Workers of the embedded cluster."
)
@click.option(
    "--gpus", help="GPUs of the embedded cluster, one worker each: auto (default), none, or 0,1."
)
@click.option(
    "--slots-per-gpu",
    type=click.IntRange(1),
    metavar="N",
    help="Synthesize tasks each embedded GPU worker runs at once, sharing one copy of the engine "
    "(default 1: ebook2audio.cluster.slots-per-gpu). 2-4 help a small model (Kokoro) that "
    "leaves a big GPU idle.",
)
@click.option(
    "--memory-limit",
    help="Memory limit of each embedded worker: 4GiB, auto (default: the "
    "machine's memory shared among the workers) or 0 (none).",
)
@click.option(
    "--adapt",
    metavar="MIN:MAX",
    help="Adaptive cluster (embedded or --slurm): MIN to MAX workers, following the queued synthesis.",
)
@click.option(
    "--slurm",
    is_flag=True,
    help="Run the workers as SLURM jobs (dask-jobqueue; settings: ebook2audio.slurm config section).",
)
@click.option(
    "--scheduler", help="Run on an existing Dask scheduler (tcp://HOST:PORT or tls://HOST:PORT)."
)
@click.option(
    "--tls-ca-file",
    type=click.Path(dir_okay=False),
    help="CA certificate (PEM) of a tls:// scheduler.",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False),
    help="This client's certificate (PEM) for a tls:// scheduler.",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False),
    help="This client's private key (PEM), unless in --tls-cert.",
)
@click.option(
    "--tls",
    "tls",
    is_flag=True,
    default=None,
    help="TLS inside the embedded cluster (throw-away certificate; it listens on 127.0.0.1 anyway).",
)
@click.option("--cache", help="Chunk store URL (default ~/.cache/ebook2audio/chunks).")
@click.option(
    "--storage-options",
    "storage_json",
    metavar="JSON",
    help="fsspec options for inputs, output and cache: flat, or per protocol "
    '({"s3": {"profile": "books"}}). Also FSSPEC_S3_* environment variables.',
)
@click.option(
    "--s3-endpoint",
    metavar="URL",
    help="S3-compatible endpoint (MinIO, Ceph, moto...) for s3:// URLs.",
)
@click.option("--batch-chars", type=click.IntRange(1), help="Characters per synthesize task.")
@click.option("--engine-threads", type=click.IntRange(1), help="CPU threads per engine.")
@click.option(
    "--retries",
    type=click.IntRange(0),
    help="More attempts for a chunk the engine fails on (default 2). Chunks that fail them all "
    "are listed in OUTPUT/<stem>.failures.jsonl and the book fails (exit 1).",
)
@click.option(
    "--allow-gaps",
    is_flag=True,
    default=None,
    help="Finish books whose chunks could not all be synthesised, with silence in their place "
    "(listed in the report and OUTPUT/<stem>.failures.jsonl).",
)
@click.option(
    "--format",
    "audio_format",
    type=click.Choice(["m4b", "mp3", "opus", "flac", "wav"]),
    help="Audio format (default m4b: AAC with chapters). mp3: ID3v2.3 tags and CHAP chapters; opus: "
    "Ogg Opus; flac; wav (no chapters in the file). See ebook2audio.output.format.",
)
@click.option(
    "--split",
    type=click.Choice(["none", "chapters"]),
    help="chapters: one file per chapter, OUTPUT/<stem>/<NN> - <title>.<ext>, with track numbers.",
)
@click.option(
    "--split-hours",
    type=click.FloatRange(min=0, min_open=True),
    metavar="HOURS",
    help="Parts of at most HOURS hours (e.g. 10 or 0.5): OUTPUT/<stem> - Part i of n.<ext>, cut "
    "between sentences, at a chapter's start when one is close.",
)
@click.option(
    "--loudnorm/--no-loudnorm",
    default=None,
    help="EBU R128 loudness normalisation (ffmpeg loudnorm; -16 LUFS, -1.5 dBTP, LRA 11 by default: "
    "ebook2audio.output.loudness).",
)
@click.option(
    "--subtitles",
    type=click.Choice(["none", "srt", "vtt"]),
    help="Write subtitles (read-along text) next to each audio file: one cue per sentence, timed "
    "from the real audio.",
)
@click.option(
    "--pause",
    "pauses",
    multiple=True,
    metavar="KIND=SECONDS",
    help="Silence after a sentence group, paragraph, title or chapter, e.g. --pause chapter=3 "
    "(repeatable; default: ebook2audio.pauses).",
)
@click.option(
    "--priority",
    "priority",
    multiple=True,
    metavar="BOOK",
    help="Convert this book first (path, file name or glob; repeatable). Default: input order.",
)
@click.option(
    "--normalize/--no-normalize",
    "normalize",
    default=None,
    help="Say numbers, Roman numerals and abbreviations in words (en, fr, nl rules; default: "
    "ebook2audio.text.normalize, on). --no-normalize sends the text as written.",
)
@click.option(
    "--lexicon",
    "lexicons",
    multiple=True,
    metavar="FILE",
    help="Pronunciation lexicon (path or URL; repeatable): YAML/JSON {language: {word: "
    "respelling or /IPA/}} or PLS XML. See docs/text.md.",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@debug_option
def convert(
    inputs,
    output,
    engine,
    voices,
    model,
    endpoints,
    settings,
    language,
    chapters,
    include_matter,
    n_workers,
    gpus,
    slots_per_gpu,
    memory_limit,
    adapt,
    slurm,
    scheduler,
    tls_ca_file,
    tls_cert,
    tls_key,
    tls,
    cache,
    storage_json,
    s3_endpoint,
    batch_chars,
    engine_threads,
    retries,
    allow_gaps,
    audio_format,
    split,
    split_hours,
    loudnorm,
    subtitles,
    pauses,
    priority,
    normalize,
    lexicons,
    no_progress,
    debug,
) -> None:
    """Convert INPUT books to OUTPUT/<stem>.m4b (or --format/--split files) and OUTPUT/<stem>.report.json.

    INPUT may be files, folders or glob patterns (paths or fsspec URLs).
    """
    _setup_logging(debug)
    try:
        from ..cluster import client_for
        from ..pipeline import convert as run_convert

        chapter_list = parse_chapters(chapters)
        setting_map = parse_settings(settings)
        pause_map = parse_pauses(pauses)
        storage_options = parse_storage_options(storage_json, s3_endpoint)
        voice = "|".join(voices) if voices else None
        from ..cluster import parse_adapt

        try:
            adapt_range = parse_adapt(adapt)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if scheduler and (adapt_range or slurm):
            raise UsageError(
                "--scheduler runs on an existing cluster: it cannot be combined with --adapt or --slurm"
            )
        from ..cluster import client_security

        security = client_security(tls_ca_file, tls_cert, tls_key)
        from ..pipeline.api import check_request

        if endpoints:  # read where synthesis is submitted (engines.with_runtime), never in a key
            import dask

            dask.config.set({"ebook2audio.openai.endpoints": list(endpoints)})
        check_request(
            list(inputs),
            output,
            engine=engine,
            storage_options=storage_options,
            lexicons=lexicons,
            format=audio_format,
            split=split,
            split_hours=split_hours,
            loudnorm=loudnorm,
            subtitles=subtitles,
        )  # before the cluster starts
        with client_for(
            None,
            scheduler,
            n_workers,
            engine_threads,
            gpus=gpus or "default",
            adapt=adapt_range,
            slurm=slurm,
            security=security,
            tls=tls,
            memory_limit=memory_limit or "default",
            slots_per_gpu=slots_per_gpu,
        ) as client:
            if client.dashboard_link:
                echo(f"dashboard: {client.dashboard_link}", err=True)
            bars = None
            if not no_progress:
                from ..pipeline.progress import ProgressBars

                bars = ProgressBars()

            def finished(r) -> None:  # each book's line as soon as it is done
                line, err = _result_line(r)
                if bars is not None:
                    bars.write(terminal_safe(line), err=err)
                else:
                    echo(line, err=err)

            try:
                results = run_convert(
                    list(inputs),
                    output,
                    engine=engine,
                    voice=voice,
                    model=model,
                    language=language,
                    settings=setting_map,
                    storage_options=storage_options,
                    chapters=chapter_list,
                    include_matter=include_matter,
                    cache=cache,
                    client=client,
                    batch_chars=batch_chars,
                    engine_threads=engine_threads,
                    retries=retries,
                    allow_gaps=allow_gaps,
                    bars=bars,
                    on_result=finished,
                    priority=priority,
                    format=audio_format,
                    split=split,
                    split_hours=split_hours,
                    loudnorm=loudnorm,
                    subtitles=subtitles,
                    pauses=pause_map,
                    normalize=normalize,
                    lexicons=lexicons or None,
                    slots=adapt_range[1] if adapt_range else None,
                )
            finally:
                if bars is not None:
                    bars.close()
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - one line + exit code
        _fail(exc, debug)
        return
    failed = [r for r in results if not r.ok]
    exit_code = max([EXIT_OK] + [r.exit_code for r in failed])
    if len(results) > 1:
        echo(_summary_table(results))
    if failed:
        echo(f"{len(failed)} of {len(results)} book(s) failed", err=True)
    sys.exit(exit_code)


def _result_line(r) -> tuple[str, bool]:
    """``("done: ...", False)`` or ``("error: ...", True)`` for one book."""
    if not r.ok:
        return f"error: {r.error}", True
    t = r.report["totals"]
    line = (
        f"done: {r.output} ({len(r.report['chapters'])} chapters, {t['audio_s'] / 60:.1f} min, "
        f"{t['chunks_from_cache']}/{t['unique_chunks']} chunks from cache, {t['wall_s']:.1f} s)"
    )
    if t.get("chunks_failed"):  # --allow-gaps: finished, with silence for what failed
        line += (f"; WARNING: {t['chunks_failed']} chunk(s) could not be synthesised, "
                 f"{len(r.report['gaps'])} gap(s) of silence: see {r.report['failures']}")  # fmt: skip
    if r.report.get("skipped"):  # front/back matter left out: said, so nothing disappears unseen
        from ..pipeline.report import skipped_summary

        line += f"; {skipped_summary(r.report['skipped'])}"
    return line, bool(t.get("chunks_failed"))


def _summary_table(results) -> str:
    """The end-of-run table: one row per book, in input order."""
    rows = [("book", "status", "chapters", "audio", "wall", "output / error")]
    for r in results:
        name = r.source.rstrip("/").rsplit("/", 1)[-1]
        if r.ok:
            t = r.report["totals"]
            status = "GAPS" if t.get("chunks_failed") else "done"
            rows.append((name, status, str(len(r.report["chapters"])), f"{t['audio_s'] / 60:.1f} min",
                         f"{t['wall_s']:.0f} s", r.output))  # fmt: skip
        else:
            problem = (
                r.error[len(r.source) + 2 :] if r.error.startswith(r.source + ": ") else r.error
            )
            rows.append((name, "FAILED", "-", "-", "-", problem))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths)) + "  " + row[5] for row in rows
    ]
    return "\n".join(lines)


def _book_summary(book, include_matter: bool = False) -> dict[str, Any]:
    """What ``inspect`` shows of *book*, read with its front/back matter.

    ``chapters``: what a conversion with the same *include_matter* speaks,
    ``index`` as ``--chapters`` takes it; ``skipped``: the front/back matter
    it leaves out, each with the ``reason`` it was taken for matter;
    ``listing``: every section in reading order (``index`` None when skipped).
    """
    listing, n = [], 0
    for c in book.chapters:
        skipped = c.kind != "body" and not include_matter
        if not skipped:
            n += 1
        listing.append({"index": None if skipped else n, "title": c.title, "kind": c.kind,
                        "chars": c.chars, "words": c.words, "reason": c.reason})  # fmt: skip
    return {
        "source": book.source,
        "format": book.format,
        "title": book.title,
        "authors": list(book.authors),
        "language": book.language,
        "cover": book.cover.media_type if book.cover else None,
        "chapters": [row for row in listing if row["index"] is not None],
        "skipped": [row for row in listing if row["index"] is None],
        "listing": listing,
    }


@cli.command()
@click.argument("input")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--include-matter",
    is_flag=True,
    default=None,
    help="Number front/back matter (title page, contents, licence, colophon) too, as "
    "convert --include-matter does.",
)
@_storage
@_endpoint
@debug_option
def inspect(input, as_json, include_matter, storage_json, s3_endpoint, debug) -> None:
    """Show INPUT's metadata and chapter list without synthesising anything (INPUT: path or fsspec URL).

    Chapters are numbered as ``convert --chapters`` takes them.  Front and
    back matter that a conversion leaves out (title page, contents, licence,
    colophon...) is listed too, unnumbered, with the reason it was taken for
    matter; ``--include-matter`` numbers it as ``convert --include-matter``
    would.
    """
    _setup_logging(debug)
    try:
        from .. import config
        from ..ingest import read_book
        from ..storage.checks import check_input

        keep = bool(config.get("include-matter", override=include_matter))
        storage_options = parse_storage_options(storage_json, s3_endpoint)
        check_input(input, storage_options)  # a FIFO or device would block inspect forever
        book = read_book(input, include_matter=True, storage_options=storage_options)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001
        _fail(exc, debug)
        return
    info = _book_summary(book, keep)
    if as_json:
        echo_json(info)
        return
    chapters, skipped = info["chapters"], info["skipped"]
    echo(f"Title:    {info['title']}")
    echo(f"Authors:  {', '.join(info['authors']) or '-'}")
    echo(f"Language: {info['language'] or '-'}")
    echo(f"Format:   {info['format']}   Cover: {info['cover'] or 'none'}")
    line = f"Chapters: {len(chapters)}"
    if skipped:
        line += f" (+{len(skipped)} front/back matter, skipped unless --include-matter)"
    echo(line)
    width = max([len(str(len(chapters)))] + [1])
    for ch in info["listing"]:
        size = f"({ch['chars']} chars, {ch['words']} words)"
        title = ch["title"] if len(ch["title"]) <= 80 else ch["title"][:79] + "…"
        if ch["index"] is None:
            echo(
                f"  {'-':>{width}}  {title}  {size}  [skipped: {ch['kind']} matter, {ch['reason']}]"
            )
        else:
            kind = "" if ch["kind"] == "body" else f" [{ch['kind']} matter: {ch['reason']}]"
            echo(f"  {ch['index']:>{width}}. {title}{kind}  {size}")


@cli.command()
@click.argument("outdir")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the summary as JSON (rows, totals, problems)."
)
@_storage
@_endpoint
@debug_option
def report(outdir, as_json, storage_json, s3_endpoint, debug) -> None:
    """Summarise the books converted into OUTDIR from their reports (path or fsspec URL).

    One row per book: chapters, audio length, wall time, real-time factor
    (engine seconds per second of audio), cache hits (chunks found in the
    store / unique chunks) and failures (chunks that could not be
    synthesised), then the batch's totals.  Books that failed with a
    dead-letter file and no report are listed as failed.  Exit code 1 when a
    book failed or a report could not be read, 2 when OUTDIR holds no report.
    """
    _setup_logging(debug)
    try:
        from ..pipeline.report import format_summary, summarize_reports

        summary = summarize_reports(outdir, parse_storage_options(storage_json, s3_endpoint))
        if not summary["books"] and not summary["problems"]:
            raise UsageError(
                f"{outdir}: no *.report.json here (ebook2audio convert -o {outdir} writes them)"
            )
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001
        _fail(exc, debug)
        return
    if as_json:
        echo_json(summary)
    else:
        if summary["books"]:
            echo(format_summary(summary))
        for line in summary["problems"]:
            echo(f"error: {line}", err=True)
    sys.exit(EXIT_BOOK_FAILED if summary["problems"] or summary["totals"]["failed"] else EXIT_OK)


def _engine_info(name: str, model: str | None = None) -> dict[str, Any]:
    from ..engines import get_engine_class

    info: dict[str, Any] = {
        "name": name,
        "available": False,
        "why": "",
        "devices": [],
        "max_chars": None,
        "languages": [],
        "voices": [],
        "sample_rate": None,
    }
    try:
        cls = get_engine_class(name)
    except Exception as exc:  # noqa: BLE001 - a broken plugin is listed, not fatal
        info["why"] = f"cannot import: {exc}"
        return info
    ok, why = cls.availability()
    info.update(
        available=ok,
        why=why,
        devices=list(cls.devices),
        max_chars=cls.max_chars,
        seeded=cls.seeded,
        uses_model=cls.uses_model,
    )
    if not ok:
        return info
    try:
        info.update(cls.describe())
        model = model or (cls.default_model() if cls.uses_model else None)
        if cls.uses_model:
            info["model"] = model
        if cls.uses_model and not model:
            info["why"] = f"no model configured (--model or ebook2audio.{name}.model)"
        voices = cls.voices(model)
        info["voices"] = [{"id": v.id, "language": v.language} for v in voices]
        info["languages"] = cls.languages(model)
        if voices or model:
            info["sample_rate"] = cls.sample_rate_for(voices[0].id if voices else "", model)
    except Ebook2AudioError as exc:  # e.g. a configured model that cannot be read
        info.update(available=False, why=str(exc))
    return info


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--model",
    help="Describe this Coqui or Kokoro model (default: ebook2audio.coqui.model, "
    "ebook2audio.kokoro.model).",
)
@debug_option
def engines(as_json, model, debug) -> None:
    """List the speech engines: installed or not (and why), languages, voices, devices."""
    _setup_logging(debug)
    from ..engines import engine_names

    infos = [_engine_info(name, model) for name in engine_names()]
    if as_json:
        echo_json(infos)
        return
    for info in infos:
        state = "available" if info["available"] else f"not available: {info['why']}"
        echo(f"{info['name']}: {state}")
        if not info["available"]:
            continue
        if info.get("uses_model"):
            echo(f"  model:       {info.get('model') or '- (' + info['why'] + ')'}")
            if info.get("downloaded_models"):
                echo(f"  downloaded:  {', '.join(info['downloaded_models'])}")
        langs = info["languages"]
        shown = ", ".join(langs[:12]) + (f", ... ({len(langs)} in all)" if len(langs) > 12 else "")
        echo(f"  languages:   {shown or '-'}")
        echo(
            f"  voices:      {len(info['voices'])} (e.g. {info['voices'][0]['id'] if info['voices'] else '-'})"
        )
        devices = ", ".join(info["devices"])
        if "cuda_devices" in info:
            devices += f" ({info['cuda_devices']} CUDA device(s) visible)"
        echo(
            f"  sample rate: {info['sample_rate'] or '-'} Hz   devices: {devices}"
            f"   max chars per chunk: {info['max_chars']}"
        )


@cli.group()
def cache() -> None:
    """Look after the chunk store: what is in it, and pruning it."""


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"


@cache.command("info")
@_cache_url
@_storage
@_endpoint
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@debug_option
def cache_info_cmd(cache_url, storage_json, s3_endpoint, as_json, debug) -> None:
    """Size of the chunk store: chunks, stored voices and bytes per engine."""
    _setup_logging(debug)
    try:
        from .. import config
        from ..pipeline.cache import cache_info
        from ..storage import ChunkStore

        store = ChunkStore.make(
            config.get("cache", override=cache_url),
            parse_storage_options(storage_json, s3_endpoint),
        )
        info = cache_info(store)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001
        _fail(exc, debug)
        return
    if as_json:
        echo_json(info)
        return
    echo(
        f"{info['url']}: {info['chunks']} chunks, {info['voices']} voices, "
        f"{info['encoded_books']} encoded books, {_human(info['bytes'])}"
    )
    for name, e in info["engines"].items():
        echo(f"  {name}: {e['chunks']} chunks, {e['voices']} voices, {_human(e['bytes'])}")


@cache.command("prune")
@_cache_url
@_storage
@_endpoint
@click.option(
    "--keep",
    "keep_books",
    multiple=True,
    metavar="BOOK",
    help="Keep the chunks these books use (files, folders, globs; planned with --engine/--voice/"
    "--language/--setting as convert would); delete the others. Repeatable.",
)
@click.option(
    "--older-than",
    "older_than",
    type=click.FloatRange(min=0),
    metavar="DAYS",
    help="Delete what was written more than DAYS ago (with --keep: only unused and old).",
)
@click.option("--engine", help="Engine the --keep books are converted with.")
@click.option("--voice", help="Voice the --keep books are converted with.")
@click.option("--language", help="Language override the --keep books are converted with.")
@click.option(
    "--setting", "settings", multiple=True, metavar="KEY=VALUE", help="Engine setting (repeatable)."
)
@click.option(
    "--normalize/--no-normalize",
    "normalize",
    default=None,
    help="Whether the --keep books are converted with text normalisation (default: on).",
)
@click.option(
    "--lexicon",
    "lexicons",
    multiple=True,
    metavar="FILE",
    help="Pronunciation lexicon the --keep books are converted with (repeatable).",
)
@click.option("--dry-run", is_flag=True, help="Only say what would be deleted.")
@debug_option
def cache_prune_cmd(
    cache_url,
    storage_json,
    s3_endpoint,
    keep_books,
    older_than,
    engine,
    voice,
    language,
    settings,
    normalize,
    lexicons,
    dry_run,
    debug,
) -> None:
    """Delete chunks no given book uses, and/or chunks older than some days."""
    _setup_logging(debug)
    try:
        from .. import config
        from ..pipeline.api import expand_inputs
        from ..pipeline.cache import keys_for_books, prune_cache
        from ..pipeline.graph import ConvertOptions
        from ..storage import ChunkStore

        if not keep_books and older_than is None:
            raise UsageError("cache prune needs --keep BOOK and/or --older-than DAYS")
        options_ = parse_storage_options(storage_json, s3_endpoint)
        store = ChunkStore.make(config.get("cache", override=cache_url), options_)
        keep = None
        if keep_books:
            opts = ConvertOptions(output=".", engine=engine, voice=voice, language=language,
                                  settings=parse_settings(settings), storage_options=options_,
                                  normalize=normalize, lexicons=tuple(lexicons) or None)  # fmt: skip
            keep = keys_for_books(expand_inputs(keep_books, options_), opts)
        result = prune_cache(store, keep=keep, older_than_days=older_than, dry_run=dry_run)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001
        _fail(exc, debug)
        return
    verb = "would delete" if dry_run else "deleted"
    echo(f"{verb} {result['deleted']} object(s), {_human(result['bytes'])}; kept {result['kept']}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``ebook2audio`` script."""
    try:
        cli.main(args=argv, prog_name="ebook2audio", standalone_mode=True)
    except SystemExit:
        raise
    except UsageError as exc:  # pragma: no cover - raised before a command runs
        echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)


if __name__ == "__main__":  # pragma: no cover
    main()
