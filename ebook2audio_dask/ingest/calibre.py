"""Formats read through Calibre's ``ebook-convert`` (MOBI, AZW3, DOCX, RTF, ODT; PDF on request).

The book is copied into a private temporary folder (streamed from its
fsspec file, never more than ``ingest.max-file-size``), converted there with
``ebook-convert book.<ext> book.epub`` and the EPUB is read by the EPUB
reader; the folder is removed afterwards, whatever happens.  The extension
given to Calibre is the one of the *detected* format, so a DOCX named
``.txt`` is still converted as a DOCX.

Configuration (``ebook2audio.ingest``):

``calibre``
    The ``ebook-convert`` program: a name looked up on ``PATH`` or a path.
``calibre-timeout``
    Seconds a conversion may take before it is stopped (the whole process
    group is killed) and the book fails.
``calibre-max-output-size``
    Most bytes Calibre may write in the private folder (default 2 GiB); the
    folder is measured ten times a second while Calibre runs, and past the
    limit Calibre is stopped the same way and the book fails.

A zip archive (DOCX, ODT) is checked before Calibre sees it, with the EPUB
reader's limits (``ingest.max-member-size``, ``ingest.max-total-size``, and
at most :data:`MAX_MEMBERS` members): every member is inflated in memory,
counted and thrown away, so a zip bomb is refused without Calibre writing
anything.  The private folder is removed on every path out: success, error,
timeout, the output limit, and ``KeyboardInterrupt`` (Ctrl-C), after
Calibre's whole process group has been killed.

Calibre runs headless (``QT_QPA_PLATFORM=offscreen``) with its own
configuration, cache and temporary folders inside the private folder, so it
never touches the user's Calibre settings and works with a read-only home.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

from dask.utils import format_bytes

from .. import config
from ..errors import BookError, UsageError
from ..logs import get_logger
from .epub import ZIP_MAGIC, Archive
from .limits import size_limit

__all__ = ["MAX_MEMBERS", "convert_to_epub", "find_ebook_convert", "missing_message"]

log = get_logger(__name__)

#: Calibre's converter: ``ingest.calibre`` is named in messages only when it is another.
_PROGRAM = "ebook-convert"
_TAIL_CHARS = 300
_BLOCK = 1024 * 1024
#: Most members a zip archive handed to Calibre may hold (it extracts them
#: all; a real DOCX or ODT has a few dozen, a few hundred with many pictures).
MAX_MEMBERS = 10_000
#: Seconds between two measurements of Calibre's folder while it runs.
_POLL_S = 0.1
#: Seconds to wait for Calibre's helpers to be gone after the kill.
_GONE_S = 2.0


def find_ebook_convert() -> str | None:
    """Path of the configured ``ebook-convert`` (``ingest.calibre``), or ``None``."""
    program = str(config.get("ingest.calibre"))
    return shutil.which(os.path.expanduser(program))


def _timeout() -> float:
    value = config.get("ingest.calibre-timeout")
    try:
        seconds = float(value)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"ebook2audio.ingest.calibre-timeout: not a number: {value!r}") from exc
    if seconds <= 0:
        raise UsageError(f"ebook2audio.ingest.calibre-timeout: must be positive, not {value!r}")
    return seconds


def missing_message(fmt: str) -> str:
    """The problem text when ``ebook-convert`` is not installed."""
    program = str(config.get("ingest.calibre"))
    where = "" if program == _PROGRAM else f" (ingest.calibre: {program})"
    return (
        f"reading {fmt.upper()} needs Calibre's ebook-convert, which is not installed{where} "
        "(Debian/Ubuntu: apt install calibre; or https://calibre-ebook.com)"
    )


def _tail(log_path: str) -> str:
    """The last meaningful line of Calibre's output (its error), shortened."""
    try:
        with open(log_path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [" ".join(line.split()) for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return ""
    tail = lines[-1]
    return tail if len(tail) <= _TAIL_CHARS else tail[: _TAIL_CHARS - 1] + "…"


def _copy_in(book, source: str, path: str, limit: int) -> bytes:
    """Stream *book* (a seekable file object) into *path*, at most *limit* bytes.

    Returns the file's first bytes (to tell a zip archive).
    """
    book.seek(0)
    size = 0
    first = b""
    with open(path, "wb") as out:
        while True:
            block = book.read(_BLOCK)
            if not block:
                return first
            first = first or block[:4]
            size += len(block)
            if size > limit:
                raise BookError(source, "file is more than the limit ingest.max-file-size")
            out.write(block)


def _check_archive(path: str, source: str, fmt: str, *, max_member: int, max_total: int) -> None:
    """Refuse a zip (DOCX, ODT) that would inflate past the EPUB reader's limits.

    Calibre extracts the whole archive into its temporary folder, so every
    member is checked, as :meth:`.Archive.check_all` does: at most
    :data:`MAX_MEMBERS` members, none over ``ingest.max-member-size``, all
    together at most ``ingest.max-total-size`` (declared sizes first, then
    counted while inflating and throwing the bytes away).
    """
    with open(path, "rb") as fh:
        try:
            archive = Archive(fh, source, max_member=max_member, max_total=max_total)
            try:
                archive.check_all(MAX_MEMBERS)
            finally:
                archive.close()
        except BookError as exc:
            what = f"not a valid {fmt.upper()}"
            raise BookError(source, exc.problem.replace("not a valid EPUB", what)) from exc


def _written(folder: str, skip: str, cap: int) -> int:
    """Bytes in the files under *folder* but *skip*; counting stops past *cap*."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if path == skip:
                continue
            with contextlib.suppress(OSError):  # removed meanwhile
                total += os.lstat(path).st_size
            if total > cap:
                return total
    return total


def _stop(proc: subprocess.Popen) -> None:
    """Kill ebook-convert's whole process group and wait until it is gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + _GONE_S
    while time.monotonic() < deadline:  # its helpers too, before the folder is removed
        try:
            os.killpg(proc.pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)


@contextlib.contextmanager
def _private_folder():
    """A private temporary folder, removed on every path out (error, timeout, Ctrl-C)."""
    tmp = tempfile.mkdtemp(prefix="ebook2audio-calibre-")
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if os.path.exists(tmp):  # a helper still closing its files: once more
            time.sleep(0.5)
            shutil.rmtree(tmp, ignore_errors=True)
        if os.path.exists(tmp):
            log.warning("could not remove Calibre's temporary folder %s", tmp)


def _run(argv: list[str], tmp: str, src: str, log_path: str, *, timeout: float, cap: int):
    """Run ebook-convert in *tmp*: its exit status, ``"timeout"`` or ``"cap"``.

    The folder is measured every :data:`_POLL_S` seconds while it runs, and
    once more when it has finished (what Calibre wrote: everything but the
    book's copy *src*); past *cap* bytes, or after *timeout* seconds, the
    whole process group is killed.  It is
    killed too when anything else ends the wait (``KeyboardInterrupt``).
    """
    env = dict(os.environ)
    env.update(
        QT_QPA_PLATFORM="offscreen",
        CALIBRE_CONFIG_DIRECTORY=os.path.join(tmp, "config"),
        CALIBRE_CACHE_DIRECTORY=os.path.join(tmp, "cache"),
        CALIBRE_TEMP_DIR=os.path.join(tmp, "tmp"),
        CALIBRE_NO_NATIVE_FILEDIALOGS="1",
    )
    deadline = time.monotonic() + timeout
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=tmp,
            env=env,
            start_new_session=True,  # its own process group: a timeout kills its helpers too
        )
        try:
            while True:
                left = deadline - time.monotonic()
                try:
                    rc = proc.wait(timeout=max(0.0, min(_POLL_S, left)))
                except subprocess.TimeoutExpired:
                    rc = None
                if _written(tmp, src, cap) > cap:  # also once it has finished
                    return "cap"
                if rc is not None:
                    return rc
                if left <= _POLL_S:
                    return "timeout"
        finally:
            _stop(proc)


def convert_to_epub(
    book,
    source: str,
    fmt: str,
    *,
    limit: int,
    read_epub_file,
    stem: str = "book",
    max_member_size: int | None = None,
    max_total_size: int | None = None,
    max_output_size: int | None = None,
    options: tuple[str, ...] = (),
) -> object:
    """Convert *book* (*fmt*) to EPUB with Calibre and read it.

    Parameters
    ----------
    book : file object
        The book, opened for reading (seekable).
    source : str
        Its path or URL, for messages.
    fmt : str
        The detected format (its extension is given to Calibre).
    limit : int
        Most bytes copied (``ingest.max-file-size``).
    read_epub_file : callable
        ``read_epub_file(path)`` reads the converted EPUB; its result is
        returned.  It is called while the temporary folder still exists.
    stem : str
        The book's file name without extension: Calibre's title when the
        book has none.
    max_member_size, max_total_size : int, optional
        A zip archive (DOCX, ODT) is refused before Calibre runs when it
        would inflate past these (default: ``ingest.max-member-size``,
        ``ingest.max-total-size``) or holds more than :data:`MAX_MEMBERS`
        members.
    max_output_size : int, optional
        Most bytes Calibre may write in its folder (default:
        ``ingest.calibre-max-output-size``).
    options : tuple of str
        More ``ebook-convert`` arguments (the format's
        :attr:`~.registry.InputFormat.calibre_options`).

    Raises
    ------
    BookError
        ``ebook-convert`` is not installed, the archive is over a limit,
        the conversion failed, wrote more than *max_output_size* or took
        longer than ``ingest.calibre-timeout``.
    """
    program = find_ebook_convert()
    if program is None:
        raise BookError(source, missing_message(fmt))
    timeout = _timeout()
    if max_member_size is None:
        max_member_size = size_limit("max-member-size")
    if max_total_size is None:
        max_total_size = size_limit("max-total-size")
    if max_output_size is None:
        max_output_size = size_limit("calibre-max-output-size")
    with _private_folder() as tmp:
        safe = re.sub(r"[^\w.\- ]+", "_", stem).strip(" .") or "book"
        src = os.path.join(tmp, f"{safe[:100]}.{fmt}")
        out = os.path.join(tmp, "book.epub")
        log_path = os.path.join(tmp, "calibre.log")
        if _copy_in(book, source, src, limit).startswith(ZIP_MAGIC):
            _check_archive(src, source, fmt, max_member=max_member_size, max_total=max_total_size)
        for sub in ("config", "cache", "tmp"):
            os.mkdir(os.path.join(tmp, sub))
        argv = [program, src, out, "--no-default-epub-cover", *options]
        rc = _run(argv, tmp, src, log_path, timeout=timeout, cap=max_output_size)
        if rc == "timeout":
            raise BookError(
                source,
                f"Calibre's ebook-convert did not finish converting the {fmt.upper()} file "
                f"in {timeout:g} s (ingest.calibre-timeout)",
            )
        if rc == "cap":
            raise BookError(
                source,
                f"Calibre's ebook-convert wrote more than {format_bytes(max_output_size)} "
                f"converting the {fmt.upper()} file, over the limit "
                "ingest.calibre-max-output-size; stopped",
            )
        if rc != 0 or not os.path.isfile(out):
            tail = _tail(log_path)
            if "DRM" in tail:
                raise BookError(source, f"DRM-protected {fmt.upper()}: its text cannot be read")
            raise BookError(
                source,
                f"Calibre's ebook-convert could not convert the {fmt.upper()} file"
                + (f": {tail}" if tail else f" (exit status {rc})"),
            )
        return read_epub_file(out)
