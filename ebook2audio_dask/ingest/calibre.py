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

Calibre runs headless (``QT_QPA_PLATFORM=offscreen``) with its own
configuration and temporary folders inside the private folder, so it never
touches the user's Calibre settings and works with a read-only home.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile

from .. import config
from ..errors import BookError, UsageError

__all__ = ["convert_to_epub", "find_ebook_convert", "CALIBRE_FORMATS"]

#: Formats converted by Calibre (PDF only with ``ingest.pdf: calibre``).
CALIBRE_FORMATS = ("mobi", "azw3", "docx", "rtf", "odt", "pdf")
_DEFAULT_PROGRAM = "ebook-convert"
_DEFAULT_TIMEOUT = 600.0
_TAIL_CHARS = 300
_BLOCK = 1024 * 1024
#: RTF and ODT have no table of contents Calibre reads: it would only list
#: headings with words like "Chapter"; the headings (as word processors mark
#: them) make the TOC instead.
_HEADING_TOC = ("--level1-toc", "//h:h1", "--level2-toc", "//h:h2", "--level3-toc", "//h:h3")
_TOC_OPTIONS = {"rtf": _HEADING_TOC, "odt": _HEADING_TOC}


def find_ebook_convert() -> str | None:
    """Path of the configured ``ebook-convert`` (``ingest.calibre``), or ``None``."""
    program = str(config.get("ingest.calibre", None) or _DEFAULT_PROGRAM)
    return shutil.which(os.path.expanduser(program))


def _timeout() -> float:
    value = config.get("ingest.calibre-timeout", None)
    if value is None:
        return _DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"ebook2audio.ingest.calibre-timeout: not a number: {value!r}") from exc
    if seconds <= 0:
        raise UsageError(f"ebook2audio.ingest.calibre-timeout: must be positive, not {value!r}")
    return seconds


def missing_message(fmt: str) -> str:
    """The problem text when ``ebook-convert`` is not installed."""
    program = str(config.get("ingest.calibre", None) or _DEFAULT_PROGRAM)
    where = "" if program == _DEFAULT_PROGRAM else f" (ingest.calibre: {program})"
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


def _copy_in(book, source: str, path: str, limit: int) -> None:
    """Stream *book* (a seekable file object) into *path*, at most *limit* bytes."""
    book.seek(0)
    size = 0
    with open(path, "wb") as out:
        while True:
            block = book.read(_BLOCK)
            if not block:
                return
            size += len(block)
            if size > limit:
                raise BookError(source, "file is more than the limit ingest.max-file-size")
            out.write(block)


def convert_to_epub(
    book, source: str, fmt: str, *, limit: int, read_epub_file, stem: str = "book"
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

    Raises
    ------
    BookError
        ``ebook-convert`` is not installed, the conversion failed or took
        longer than ``ingest.calibre-timeout``.
    """
    program = find_ebook_convert()
    if program is None:
        raise BookError(source, missing_message(fmt))
    timeout = _timeout()
    with tempfile.TemporaryDirectory(prefix="ebook2audio-calibre-") as tmp:
        safe = re.sub(r"[^\w.\- ]+", "_", stem).strip(" .") or "book"
        src = os.path.join(tmp, f"{safe[:100]}.{fmt}")
        out = os.path.join(tmp, "book.epub")
        log_path = os.path.join(tmp, "calibre.log")
        _copy_in(book, source, src, limit)
        for sub in ("config", "tmp"):
            os.mkdir(os.path.join(tmp, sub))
        env = dict(os.environ)
        env.update(
            QT_QPA_PLATFORM="offscreen",
            CALIBRE_CONFIG_DIRECTORY=os.path.join(tmp, "config"),
            CALIBRE_TEMP_DIR=os.path.join(tmp, "tmp"),
            CALIBRE_NO_NATIVE_FILEDIALOGS="1",
        )
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [program, src, out, "--no-default-epub-cover", *_TOC_OPTIONS.get(fmt, ())],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=tmp,
                env=env,
                start_new_session=True,  # its own process group: a timeout kills its helpers too
            )
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                rc = None
            finally:
                if proc.poll() is None or rc is None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        if rc is None:
            raise BookError(
                source,
                f"Calibre's ebook-convert did not finish converting the {fmt.upper()} file "
                f"in {timeout:g} s (ingest.calibre-timeout)",
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
