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
from collections.abc import Callable
from typing import Any

import click

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
from ..pipeline.options import (
    Option,
    cli_help,
    options,
    parse_chapters,
    parse_flags,
    parse_pauses,
    parse_settings,
    split_options,
)

__all__ = [
    "cli",
    "click_option",
    "fail",
    "main",
    "option_flags",
    "parse_chapters",
    "parse_pauses",
    "parse_settings",
    "parse_storage_options",
    "setup_logging",
]


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
    """Print *data* as JSON.

    Characters a terminal would act on are ``\\uXXXX`` escapes (still valid JSON).
    """
    text = json.dumps(data, indent=2, ensure_ascii=False)  # json escapes C0 controls itself
    click.echo(_JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text))


#: What json.dumps(ensure_ascii=False) leaves raw but a terminal acts on
#: (C1 controls, bidi overrides...).
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


class _SafeFormatter(logging.Formatter):
    """Log lines with control characters escaped (tracebacks, shown with --debug, as they are)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return terminal_safe(super().formatMessage(record))


def setup_logging(debug: bool) -> None:
    """Log to stderr, control characters escaped; quiet Dask and tornado unless *debug*."""
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


def fail(exc: BaseException, debug: bool) -> None:
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
_cache_url = click.option("--cache", "cache_url", metavar="URL", help=cli_help("cache"))
_storage = click.option(
    "--storage-options",
    "storage_json",
    metavar="JSON",
    help=f"{cli_help('storage_options')} As a JSON object.",
)
_endpoint = click.option(
    "--s3-endpoint",
    metavar="URL",
    help="S3-compatible endpoint (MinIO, Ceph, moto...) for s3:// URLs.",
)


def click_option(opt: Option, **overrides: Any) -> Callable:
    """The click option of *opt* (:mod:`ebook2audio_dask.pipeline.options`), as a decorator.

    Flags, help, value type, ``multiple`` and flag-ness all come from the
    option's definition; *overrides* replace click arguments (another
    ``help=`` for a subcommand that uses the option differently).
    """
    kwargs: dict[str, Any] = {"help": cli_help(opt.name), "metavar": opt.metavar}
    if opt.multiple:
        kwargs["multiple"] = True
    if opt.is_flag:
        kwargs.update(is_flag=True, default=None)
    elif "/" in opt.flags[0]:  # --x/--no-x: None when neither is given
        kwargs["default"] = None
    if opt.choices:
        kwargs["type"] = click.Choice(list(opt.choices))
    elif opt.number is int:
        kwargs["type"] = click.IntRange(min=opt.min)
    elif opt.number is float:
        kwargs["type"] = click.FloatRange(min=opt.min, min_open=opt.min_open)
    kwargs.update(overrides)
    return click.option(*opt.flags, opt.dest, **kwargs)


def option_flags(function: Callable) -> Callable:
    """Decorate a click command with a flag for every option that has one, in definition order."""
    for opt in reversed(list(options().values())):
        if opt.flags:
            function = click_option(opt)(function)
    return function


def _input_formats() -> str:
    """The book formats read, as the top-level help says them (from the ingest package)."""
    from ..ingest import CALIBRE_FORMATS, FORMATS

    shown = {"md": "Markdown"}
    direct = [shown.get(f, f.upper()) for f in FORMATS if f not in CALIBRE_FORMATS]
    calibre = [shown.get(f, f.upper()) for f in FORMATS if f in CALIBRE_FORMATS]
    text = ", ".join(direct)
    return f"{text}; {', '.join(calibre)} through Calibre" if calibre else text


_CLI_HELP = f"""Turn ebooks ({_input_formats()}) into chaptered audiobooks (M4B by default) on a
Dask cluster.

\b
Exit codes: 0 all books done, 1 at least one book failed (the others
still finish), 2 usage error (bad option, unknown engine or voice, a
chapter the book does not have, an input that is a FIFO or device, an
output that cannot be written), 130 interrupted by Ctrl-C (the chunks
made so far are kept: the same command resumes).
Configuration: dask config key "ebook2audio" (env DASK_EBOOK2AUDIO__...).
"""


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, help=_CLI_HELP)
@click.version_option(package_name="ebook2audio_dask")
def cli() -> None:
    """The ``ebook2audio`` group (its help is ``_CLI_HELP``)."""


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", "output", required=True, help="Output folder (path or fsspec URL).")
@option_flags
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
    help="TLS inside the embedded cluster (throw-away certificate; it listens on 127.0.0.1 "
    "anyway).",
)
@_storage
@_endpoint
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@debug_option
def convert(
    inputs,
    output,
    endpoints,
    tls_ca_file,
    tls_cert,
    tls_key,
    tls,
    storage_json,
    s3_endpoint,
    no_progress,
    debug,
    **flags,
) -> None:
    """Convert INPUT books to OUTPUT/<stem>.m4b (or --format/--split files) and
    OUTPUT/<stem>.report.json.

    INPUT may be files, folders or glob patterns (paths or fsspec URLs).  The
    options are those of ebook2audio_dask.convert() in Python.
    """
    setup_logging(debug)
    try:
        from ..cluster import client_security
        from ..pipeline import convert as run_convert
        from ..pipeline.api import check_request

        given = parse_flags(flags)
        given["storage_options"] = parse_storage_options(storage_json, s3_endpoint)
        adapt = given["adapt"]
        if given["scheduler"] and (adapt or given["slurm"]):
            raise UsageError(
                "--scheduler runs on an existing cluster: "
                "it cannot be combined with --adapt or --slurm"
            )
        security = client_security(tls_ca_file, tls_cert, tls_key)
        if endpoints:  # read where synthesis is submitted (engines.with_runtime), never in a key
            import dask

            dask.config.set({"ebook2audio.openai.endpoints": list(endpoints)})
        check_request(list(inputs), output, **given)  # before the cluster starts
        _, run = split_options(output, given)
        with run.client_for(None, given["engine_threads"], security=security, tls=tls) as client:
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
                    client=client,
                    bars=bars,
                    on_result=finished,
                    **{**given, "slots": adapt[1] if adapt else None},
                )
            finally:
                if bars is not None:
                    bars.close()
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - one line + exit code
        fail(exc, debug)
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
        line += (
            f"; WARNING: {t['chunks_failed']} chunk(s) could not be synthesised, "
            f"{len(r.report['gaps'])} gap(s) of silence: see {r.report['failures']}"
        )
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
            audio, wall = f"{t['audio_s'] / 60:.1f} min", f"{t['wall_s']:.0f} s"
            rows.append((name, status, str(len(r.report["chapters"])), audio, wall, r.output))
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


@cli.command()
@click.argument("input")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click_option(
    options()["include_matter"],
    help="Number front/back matter (title page, contents, licence, colophon) too, as "
    "convert --include-matter does.",
)
@_storage
@_endpoint
@debug_option
def inspect(input, as_json, include_matter, storage_json, s3_endpoint, debug) -> None:
    """Show INPUT's metadata and chapter list without synthesising anything.

    INPUT: a path or fsspec URL.

    Chapters are numbered as ``convert --chapters`` takes them.  Front and
    back matter that a conversion leaves out (title page, contents, licence,
    colophon...) is listed too, unnumbered, with the reason it was taken for
    matter; ``--include-matter`` numbers it as ``convert --include-matter``
    would.
    """
    setup_logging(debug)
    try:
        from .. import config
        from ..ingest import read_book
        from ..storage.checks import check_input

        keep = bool(config.get("include-matter", override=include_matter))
        storage_options = parse_storage_options(storage_json, s3_endpoint)
        check_input(input, storage_options)  # a FIFO or device would block inspect forever
        book = read_book(input, include_matter=True, storage_options=storage_options)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001
        fail(exc, debug)
        return
    info = book.summary(keep)
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
    setup_logging(debug)
    try:
        from ..pipeline.report import format_summary, summarize_reports

        summary = summarize_reports(outdir, parse_storage_options(storage_json, s3_endpoint))
        if not summary["books"] and not summary["problems"]:
            raise UsageError(
                f"{outdir}: no *.report.json here (ebook2audio convert -o {outdir} writes them)"
            )
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001
        fail(exc, debug)
        return
    if as_json:
        echo_json(summary)
    else:
        if summary["books"]:
            echo(format_summary(summary))
        for line in summary["problems"]:
            echo(f"error: {line}", err=True)
    sys.exit(EXIT_BOOK_FAILED if summary["problems"] or summary["totals"]["failed"] else EXIT_OK)


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
    setup_logging(debug)
    from ..engines import engine_info, engine_names

    infos = [engine_info(name, model) for name in engine_names()]
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
        example = info["voices"][0]["id"] if info["voices"] else "-"
        echo(f"  voices:      {len(info['voices'])} (e.g. {example})")
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
    setup_logging(debug)
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
        fail(exc, debug)
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
@click_option(options()["engine"], help="Engine the --keep books are converted with.")
@click_option(options()["voice"], multiple=False, help="Voice the --keep books are converted with.")
@click_option(options()["language"], help="Language override the --keep books are converted with.")
@click_option(options()["settings"], help="Engine setting (repeatable).")
@click_option(
    options()["normalize"],
    help="Whether the --keep books are converted with text normalisation (default: "
    "ebook2audio.text.normalize).",
)
@click_option(
    options()["lexicons"],
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
    setup_logging(debug)
    try:
        from .. import config
        from ..pipeline.api import expand_inputs
        from ..pipeline.cache import keys_for_books, prune_cache
        from ..pipeline.options import ConvertOptions
        from ..storage import ChunkStore

        if not keep_books and older_than is None:
            raise UsageError("cache prune needs --keep BOOK and/or --older-than DAYS")
        options_ = parse_storage_options(storage_json, s3_endpoint)
        store = ChunkStore.make(config.get("cache", override=cache_url), options_)
        keep = None
        if keep_books:
            opts = ConvertOptions(
                output=".",
                engine=engine,
                voice=voice,
                language=language,
                settings=parse_settings(settings),
                storage_options=options_,
                normalize=normalize,
                lexicons=tuple(lexicons) or None,
            )
            keep = keys_for_books(expand_inputs(keep_books, options_), opts)
        result = prune_cache(store, keep=keep, older_than_days=older_than, dry_run=dry_run)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001
        fail(exc, debug)
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
