"""``ebook2audio submit``: convert books on a running ``ebook2audio serve``.

Uploads the books, creates one job with the options given as ``convert``'s
flags, and with ``--wait`` (the default) follows the job's events, shows
progress on stderr, downloads every output of each book as soon as it is
finished and prints ``done:`` / ``error:`` lines as ``convert`` does, with
``convert``'s exit codes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click

from ..errors import (
    EXIT_BOOK_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    Ebook2AudioError,
    UsageError,
    one_line,
)
from ..pipeline.options import options, parse_chapters
from .main import click_option, debug_option, echo, fail, setup_logging

__all__ = ["JOB_OPTIONS", "job_options", "submit"]

#: The options a job takes through the API (``POST /api/jobs``'s ``options``), as flags here.
#: ``chapters`` goes with each book.  Never a server path (model, cache, lexicons, storage).
JOB_OPTIONS = (
    "engine",
    "voice",
    "language",
    "include_matter",
    "format",
    "split",
    "split_hours",
    "subtitles",
    "loudnorm",
    "normalize",
    "allow_gaps",
    "retries",
    "settings",
    "pauses",
)

#: Seconds ``--wait`` keeps reconnecting to a server that went away (restarting).
RECONNECT_FOR = 300.0

_HELP = """Convert BOOK files on a running ``ebook2audio serve`` at --server URL.

Uploads the books (files, folders or glob patterns), creates one job with the
options below (the server's defaults for those not given) and, with --wait
(the default), follows it: progress on stderr, every output of each book
(audio, report, subtitles, failures) downloaded to -o DIR as soon as the book
is finished, one ``done: ...`` or ``error: ...`` line per book.  With
--no-wait it prints the job's id and URL and returns; the job goes on on the
server (and so it does when --wait is interrupted).

\b
Token: --token-file FILE, else $EBOOK2AUDIO_TOKEN, else ebook2audio.serve.token.
Exit codes: 0 every book done; 1 at least one book failed or the job was
cancelled (the others still finish), or the server failed (5xx) or went away
while the job ran; 2 usage: a bad option, no server answering at URL, a
missing or refused token (401/403), a request the server refuses (an unknown
engine or voice, a book over its size limit); 130 interrupted by Ctrl-C (the
job goes on on the server).
"""


def job_options(flags: dict[str, Any]) -> dict[str, Any]:
    """The API's job ``options`` from this command's flag values (those given only).

    Each value is parsed as ``convert`` parses its flag (``--voice`` clips
    joined by ``|``, ``--setting``/``--pause`` into dicts).

    Raises
    ------
    UsageError
        A value the option's parser refuses.
    """
    out: dict[str, Any] = {}
    for name in JOB_OPTIONS:
        opt = options()[name]
        value = flags.get(name)
        if opt.parse is not None:
            value = opt.parse(value)
        if value is not None and value != ():
            out[name] = value
    return out


class _Progress:
    """Progress of a job on stderr: convert's bars on a terminal, state lines otherwise."""

    def __init__(self, shown: bool):
        from ..pipeline.progress import ProgressBars

        self.bars = ProgressBars() if shown else None
        self.books: dict[int, Any] = {}
        self.done: dict[int, int] = {}
        self.state: str | None = None

    def write(self, line: str, err: bool = False) -> None:
        if self.bars is not None:
            self.bars.write(line, err=err)
        else:
            echo(line, err=err)

    def update(self, job: dict) -> None:
        if job["state"] != self.state:
            self.state = job["state"]
            if self.state == "queued" and job.get("position") is not None:
                self.write(f"job {job['id']}: queued, position {job['position']}", err=True)
            elif self.state == "waiting":
                self.write(f"job {job['id']}: waiting for the cluster to come back", err=True)
            elif self.state not in ("done", "failed", "cancelled"):
                self.write(f"job {job['id']}: {self.state}", err=True)
        if self.bars is None:
            return
        for book in job["books"]:
            index, total = book["index"], book.get("chunks_total") or 0
            if index not in self.books and total:
                stand_in = SimpleNamespace(stem=book.get("title") or book.get("name") or "book")
                self.books[index] = stand_in
                self.done[index] = 0
                self.bars.book_total(stand_in, total)
            if index in self.books:
                done = book.get("chunks_done") or 0
                if done > self.done[index]:
                    self.bars.book_chunks(self.books[index], done - self.done[index])
                    self.done[index] = done
                if book["state"] in ("done", "failed", "cancelled"):
                    self.bars.book_done(self.books[index])

    def close(self) -> None:
        if self.bars is not None:
            self.bars.close()


def _problem(error: str, name: str) -> str:
    """The server's one-line *error* without the upload's *name* it may start with."""
    return error[len(name) + 2 :] if name and error.startswith(f"{name}: ") else error


def _book_line(
    book: dict, source: str, paths: list[tuple[Path, dict]], report: dict | None
) -> tuple[str, bool]:
    """``("done: ...", False)`` or ``("error: SOURCE: ...", True)`` for one finished book."""
    name = book.get("name") or ""
    if book["state"] != "done":
        return f"error: {source}: {_problem(book.get('error') or book['state'], name)}", True
    audio = [p for p, f in paths if f.get("kind") == "audio"]
    if len(audio) == 1:
        shown = str(audio[0])
    else:
        shown = f"{len(audio)} files in {audio[0].parent}" if audio else source
    if report is None:
        return f"done: {shown}", False
    t = report["totals"]
    line = (
        f"done: {shown} ({len(report['chapters'])} chapters, {t['audio_s'] / 60:.1f} min, "
        f"{t['chunks_from_cache']}/{t['unique_chunks']} chunks from cache, {t['wall_s']:.1f} s)"
    )
    if t.get("chunks_failed"):
        line += (
            f"; WARNING: {t['chunks_failed']} chunk(s) could not be synthesised, "
            f"{len(report.get('gaps') or [])} gap(s) of silence: see the failures file"
        )
    if report.get("skipped"):
        from ..pipeline.report import skipped_summary

        line += f"; {skipped_summary(report['skipped'])}"
    return line, bool(t.get("chunks_failed"))


def _fetch(server, job: dict, book: dict, outdir: Path) -> tuple[list, dict | None]:
    """Download every file of *book*; ``[(path, file record)], report or None``.

    With ``split: chapters`` the audio (and subtitle) files go to
    ``<outdir>/<stem>/`` as ``convert`` writes them; the rest to *outdir*.
    """
    import json

    from ..storage import stem_of

    split = (job.get("options") or {}).get("split") == "chapters"
    got, report = [], None
    for f in book.get("files") or []:
        dest = outdir
        if split and f.get("kind") in ("audio", "subtitles"):
            dest = outdir / stem_of(book.get("name") or "book")
            dest.mkdir(parents=True, exist_ok=True)
        path = server.download(job["id"], book["index"], f["name"], dest, RECONNECT_FOR)
        got.append((path, f))
        if f.get("kind") == "report":
            try:
                report = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                report = None
    return got, report


def _follow(
    server, job: dict, sources: list[str], outdir: Path, progress: _Progress
) -> tuple[int, int]:
    """Follow *job* to its end, downloading each book's files as it finishes.

    Returns its exit code and how many of its books failed.  *sources* are the
    books as given on the command line, in the job's order.
    """
    reported: set[int] = set()
    code = EXIT_OK
    failed = 0
    final = job
    for final in server.events(job["id"], reconnect_for=RECONNECT_FOR):
        progress.update(final)
        for book in final["books"]:
            if book["index"] in reported or book["state"] not in ("done", "failed"):
                continue
            reported.add(book["index"])
            paths, report = _fetch(server, final, book, outdir)
            index = book["index"]
            source = sources[index] if index < len(sources) else book.get("name") or str(index)
            line, err = _book_line(book, source, paths, report)
            progress.write(line, err=err)
            if book["state"] != "done":
                failed += 1
                code = max(code, book.get("exit_code") or EXIT_BOOK_FAILED)
    if final["state"] == "cancelled":
        progress.write(f"error: job {final['id']} was cancelled", err=True)
        code = max(code, EXIT_BOOK_FAILED)
    elif final["state"] == "failed":
        code = max(code, EXIT_BOOK_FAILED)
        if final.get("error"):
            progress.write(f"error: job {final['id']}: {final['error']}", err=True)
    return code, failed


@click.command(help=_HELP, short_help="Convert books on a running ebook2audio serve.")
@click.argument("books", nargs=-1, required=True)
@click.option(
    "--server",
    required=True,
    metavar="URL",
    help="The server's URL, e.g. http://127.0.0.1:7860.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    help="File holding the server's API token (first line); default $EBOOK2AUDIO_TOKEN.",
)
@click.option(
    "-o",
    "--output",
    "output",
    default=".",
    show_default=True,
    help="Folder the outputs are downloaded to (created if missing).",
)
@click.option(
    "--wait/--no-wait",
    default=True,
    help="Follow the job and download its outputs (default), or print its id and return.",
)
@click.option(
    "--priority",
    "job_priority",
    type=int,
    default=0,
    show_default=True,
    help="The job's priority in the server's queue: higher runs first.",
)
@click_option(options()["engine"])
@click_option(options()["voice"])
@click_option(options()["language"])
@click_option(options()["chapters"])
@click_option(options()["include_matter"])
@click_option(options()["format"])
@click_option(options()["split"])
@click_option(options()["split_hours"])
@click_option(options()["subtitles"])
@click_option(options()["loudnorm"])
@click_option(options()["normalize"])
@click_option(options()["pauses"])
@click_option(options()["settings"])
@click_option(options()["retries"])
@click_option(options()["allow_gaps"])
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@debug_option
def submit(
    books, server, token_file, output, wait, job_priority, chapters, no_progress, debug, **flags
) -> None:
    """``ebook2audio submit`` (its help is ``_HELP``)."""
    setup_logging(debug)
    failed = 0
    try:
        from ..pipeline.api import expand_inputs
        from ..serve.client import ServerClient
        from ..serve.settings import read_token

        token = read_token(token_file)
        given = job_options(flags)
        parse_chapters(chapters)  # a bad range is a usage error here, before any upload
        spec = ",".join(chapters) or None
        inputs = expand_inputs(books)
        outdir = Path(output).expanduser()
        if wait:
            try:
                outdir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"{output}: cannot create the folder ({exc.strerror})") from None
        with ServerClient(server, token) as client:
            uploads: list[dict] = []
            sources: list[str] = []
            for book in inputs:
                try:
                    record = client.upload(book)
                except OSError as exc:
                    echo(f"error: {book}: cannot read it ({one_line(exc)})", err=True)
                    failed += 1
                    continue
                if record.get("error"):
                    problem = _problem(record["error"], record.get("name") or "")
                    echo(f"error: {book}: {problem}", err=True)
                    failed += 1
                    _forget(client, record)
                    continue
                uploads.append(record)
                sources.append(book)
            if not uploads:
                echo(f"{failed} of {len(inputs)} book(s) failed", err=True)
                sys.exit(EXIT_BOOK_FAILED)
            try:
                job = client.create_job(
                    [{"upload_id": u["id"], "chapters": spec} for u in uploads],
                    given,
                    priority=job_priority,
                )
            except Ebook2AudioError:
                for record in uploads:
                    _forget(client, record)
                raise
            if not wait:
                echo(f"job {job['id']}: {client.url}/api/jobs/{job['id']}")
                sys.exit(EXIT_BOOK_FAILED if failed else EXIT_OK)
            echo(f"job {job['id']}: {client.url}/api/jobs/{job['id']}", err=True)
            progress = _Progress(not no_progress)
            try:
                code, lost = _follow(client, job, sources, outdir, progress)
                failed += lost
            except KeyboardInterrupt:
                progress.close()
                echo(
                    f"interrupted: job {job['id']} goes on on the server "
                    f"({client.url}/api/jobs/{job['id']})",
                    err=True,
                )
                sys.exit(EXIT_INTERRUPTED)
            finally:
                progress.close()
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - one line + exit code
        fail(exc, debug)
        return
    if failed:
        echo(f"{failed} of {len(inputs)} book(s) failed", err=True)
    sys.exit(max(code, EXIT_BOOK_FAILED if failed else EXIT_OK))


def _forget(client, record: dict) -> None:
    """Delete an upload no job will use (best effort: the server also limits pending ones)."""
    try:
        client.request("DELETE", f"api/uploads/{record['id']}")
    except Ebook2AudioError:
        pass
