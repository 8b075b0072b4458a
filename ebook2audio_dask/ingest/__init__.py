"""Ingest (parse) stage: read an ebook into a :class:`~ebook2audio_dask.model.Book`.

Supported inputs are EPUB 2 / EPUB 3, plain text (``.txt``), single-file
HTML, FictionBook 2 (``.fb2``, ``.fb2.zip``), PDF (its text layer, through
pypdf), Markdown (``.md``), and MOBI, AZW3, DOCX, RTF and ODT through
Calibre's ``ebook-convert`` (converted to EPUB first).  The format is
recognised from the content, not only the file name (see
:func:`detect_format`); anything unrecognised is rejected.  See
``docs/formats.md``.

The formats are one table, :data:`.registry.INPUT_FORMATS` (its module
docstring says how to add one): :func:`detect_format`, :func:`read_book`'s
dispatch to the readers (``epub``, ``fb2``, ``html``, ``markdown``, ``pdf``,
``txt``; ``calibre`` for the rest) and folder expansion all read it.  Every
reader returns a :class:`._sections.BookContent`.  Size limits are read from
the configuration at each call (:func:`.limits.size_limit`).

Every problem with an input is reported as :class:`~ebook2audio_dask.errors.BookError`
with a one-line message naming the file.  The rules used to find chapters
and to recognise front/back matter are described in ``docs/ingest.md``.

Examples
--------
>>> from ebook2audio_dask.ingest import read_book
>>> book = read_book("books/christmas-carol.epub")      # doctest: +SKIP
>>> [c.title for c in book.chapters][:2]                # doctest: +SKIP
['STAVE ONE. MARLEY’S GHOST.', 'STAVE TWO. THE FIRST OF THE THREE SPIRITS.']
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import posixpath
import re

import fsspec
from dask.utils import format_bytes

from ..errors import BookError, StorageError
from ..logs import get_logger
from ..model import Book, Chapter
from ..storage.fs import options_for
from ..storage.retry import with_retries
from ._sections import BookContent, assemble
from ._text import decode_text
from .epub import ZIP_MAGIC, Archive
from .limits import size_limit
from .registry import (
    CALIBRE_FORMATS,
    FORMATS,
    InputFormat,
    detect_format,
    get_format,
    refused_name,
    signed_zip,
    uses_calibre,
    zip_format_by_members,
)

__all__ = [
    "CALIBRE_FORMATS",
    "FORMATS",
    "MAX_PARAGRAPH_CHARS",
    "BookContent",
    "detect_format",
    "read_book",
]

log = get_logger(__name__)

#: Longest paragraph :func:`read_book` returns.  A longer one (a book with no
#: paragraph breaks, megabytes without punctuation) is cut into paragraphs of
#: at most this many characters, at a sentence end when there is one in the
#: second half of the piece, else at a space: sentence splitting and chunking
#: never see an unbounded string.  Real paragraphs are far shorter.
MAX_PARAGRAPH_CHARS = 10_000
_SENTENCE_END_RE = re.compile(r"[.!?\u2026;:][\"'\u201d\u2019\u00bb)\]]*(?= )|[\u3002\uff01\uff1f]")

#: Bytes read from the start of a book to recognise its format.
_HEAD_BYTES = 64 * 1024
_READ_BLOCK = 1024 * 1024


def _name(url: str) -> str:
    path = str(url).split("?", 1)[0].rstrip("/")
    return posixpath.basename(path.replace("\\", "/"))


def _stem(url: str) -> str:
    name = _name(url)
    stem, _ext = posixpath.splitext(name)
    return stem or name or str(url)


def _cut_paragraph(text: str, limit: int = MAX_PARAGRAPH_CHARS) -> list[str]:
    """Cut *text* into pieces of at most *limit* characters (see MAX_PARAGRAPH_CHARS)."""
    if len(text) <= limit:
        return [text]
    pieces = []
    pos, n = 0, len(text)
    while n - pos > limit:
        window_end = pos + limit  # the piece is text[pos:cut], cut <= window_end
        cut = None
        for m in _SENTENCE_END_RE.finditer(text, pos + limit // 2, window_end):
            cut = m.end()
        if cut is None:
            space = text.rfind(" ", pos + limit // 2, window_end + 1)
            cut = space if space > pos else window_end
        piece = text[pos:cut].strip()
        if piece:
            pieces.append(piece)
        pos = cut
    rest = text[pos:].strip()
    if rest:
        pieces.append(rest)
    return pieces


def _bounded(chapters: tuple[Chapter, ...]) -> tuple[Chapter, ...]:
    """Chapters whose over-long paragraphs are cut (see :data:`MAX_PARAGRAPH_CHARS`)."""
    out = []
    for chapter in chapters:
        if all(len(p) <= MAX_PARAGRAPH_CHARS for p in chapter.paragraphs):
            out.append(chapter)
            continue
        paragraphs = tuple(piece for p in chapter.paragraphs for piece in _cut_paragraph(p))
        out.append(dataclasses.replace(chapter, paragraphs=paragraphs))
    return tuple(out)


def _storage_call(url: str, fn):
    """Call *fn* (a read of the book), retrying transient errors; failures are BookErrors."""
    try:  # transient storage errors (throttling, resets) are retried
        return with_retries(fn, url=url, action="read the book", translate=False)
    except BookError:
        raise
    except StorageError as exc:
        raise BookError(url, str(exc).removeprefix(f"{url}: ")) from exc
    except FileNotFoundError as exc:
        raise BookError(url, "file not found") from exc
    except IsADirectoryError as exc:
        raise BookError(url, "is a directory, not an ebook") from exc
    except PermissionError as exc:
        raise BookError(url, "permission denied") from exc
    except (OSError, ValueError, ImportError) as exc:
        raise BookError(url, f"cannot read file: {exc}") from exc


class _BookFile:
    """A book opened through fsspec, read-only and seekable, as :mod:`zipfile` needs it.

    Every read is retried on transient storage errors and a failure is a
    :class:`BookError` naming the book (never a raw ``OSError`` that a
    parser could take for a damaged archive).  Reads go through fsspec's
    file object: a local file, or a remote one with its block cache, so
    only the bytes asked for are fetched.
    """

    def __init__(self, fh, url: str):
        self._fh = fh
        self.url = url
        self.name = url

    def read(self, n: int = -1) -> bytes:
        pos = self._fh.tell()

        def attempt() -> bytes:
            if self._fh.tell() != pos:  # a failed attempt may have moved
                self._fh.seek(pos)
            return self._fh.read(n)

        return _storage_call(self.url, attempt)

    def seek(self, offset: int, whence: int = 0) -> int:
        # no storage call (fsspec files only move their position), and zipfile
        # expects a raw OSError for a seek before the start of a short file
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def size(self) -> int:
        """Size in bytes (from the file system's metadata: nothing is read)."""
        size = getattr(self._fh, "size", None)
        if isinstance(size, int):
            return size

        def seek_end() -> int:
            pos = self._fh.tell()
            end = self._fh.seek(0, 2)
            self._fh.seek(pos)
            return end

        return _storage_call(self.url, seek_end)

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:  # closed by _open_book
        pass


@contextlib.contextmanager
def _open_book(url: str, storage_options: dict | None):
    """The book at *url* as a :class:`_BookFile` (open errors are BookErrors)."""
    options = options_for(url, storage_options)
    fh = _storage_call(url, lambda: fsspec.open(url, "rb", **options).open())
    try:
        yield _BookFile(fh, url)
    finally:
        with contextlib.suppress(Exception):
            fh.close()


def _too_big(url: str, size: int, limit: int, key: str = "max-file-size") -> BookError:
    limit_text = format_bytes(limit)
    return BookError(
        url, f"file is {format_bytes(size)}, over the limit ingest.{key} ({limit_text})"
    )


def _blocks(book: _BookFile, limit: int, key: str):
    """The book from its start, block by block; never more than *limit* bytes (``ingest.<key>``)."""
    book.seek(0)
    size = 0
    while block := book.read(min(_READ_BLOCK, limit + 1 - size)):
        size += len(block)
        if size > limit:  # the file grew since its size was checked
            raise BookError(
                book.url, f"file is more than the limit ingest.{key} ({format_bytes(limit)})"
            )
        yield block


def _read_all(book: _BookFile, head: bytes, limit: int) -> bytes:
    """The whole book, *head* already read; never more than *limit* bytes."""
    blocks = [head]
    size = len(head)
    while size <= limit:
        block = book.read(min(_READ_BLOCK, limit + 1 - size))
        if not block:
            return b"".join(blocks)
        size += len(block)
        blocks.append(block)
    # the file grew since its size was checked, or its size was not known
    raise BookError(
        book.url, f"file is more than the limit ingest.max-file-size ({format_bytes(limit)})"
    )


def read_book(url, *, include_matter: bool = False, storage_options: dict | None = None) -> Book:
    """Read an ebook (any of :data:`FORMATS`) into a :class:`Book`.

    Parameters
    ----------
    url : str or os.PathLike
        Local path or fsspec URL (``s3://bucket/book.epub``...).
    include_matter : bool, default False
        Also return front matter (title page, contents, preface,
        Gutenberg header...) and back matter (colophon, licence,
        glossary...) as chapters, with ``kind`` ``"front"``/``"back"``.
        By default only body chapters are returned, and the matter left out
        is listed in :attr:`Book.skipped` (title, kind, reason, characters).
    storage_options : dict, optional
        Passed to :func:`fsspec.open` (credentials, endpoint...).

    Returns
    -------
    Book
        Metadata and chapters numbered 1..N in reading order.  No
        paragraph is longer than :data:`MAX_PARAGRAPH_CHARS`.

    Raises
    ------
    BookError
        The file cannot be read, is larger than ``ingest.max-file-size``
        (plain text: ``ingest.max-text-size``, checked from its size too),
        is not a supported ebook, is a damaged EPUB, is DRM-protected,
        inflates past ``ingest.max-member-size`` / ``ingest.max-total-size``
        (a zip bomb: an EPUB, a zipped FB2, or a DOCX/ODT before Calibre
        sees it), makes Calibre write more than
        ``ingest.calibre-max-output-size``, or holds no readable text.  The
        message is one line that names the file.
    UsageError
        A size limit in the configuration is not a positive size.

    Notes
    -----
    The whole file is never loaded into memory: the book is opened as a
    seekable file through fsspec, its size is checked against
    ``ingest.max-file-size`` before anything is read, and the format is
    recognised from its first 64 kB.  From an EPUB only the archive's
    directory and the members the reader needs are read (and inflated,
    within the zip-bomb limits).  Plain text is decoded and cut into
    paragraphs block by block (:func:`.txt.read_txt_blocks`); HTML is read
    whole, up to ``ingest.max-file-size``.
    """
    source = str(url)
    max_member_size = size_limit("max-member-size")
    max_total_size = size_limit("max-total-size")
    max_file_size = size_limit("max-file-size")
    with _open_book(source, storage_options) as book:
        size = book.size()
        if size > max_file_size:
            raise _too_big(source, size, max_file_size)
        head = book.read(_HEAD_BYTES)
        if len(head) < _HEAD_BYTES and not head.strip():
            raise BookError(source, "no readable text")
        name = detect_format(head, _name(source))
        if name is None:
            refused = refused_name(_name(source))
            if refused is not None:
                raise BookError(source, f"not a valid {refused.name.upper()}: not a zip archive")
            raise BookError(source, "not an ebook (unrecognised content)")
        fmt = get_format(name)
        zipped = head.startswith(ZIP_MAGIC)
        if fmt.default and zipped and not signed_zip(head):
            fmt = get_format(_zip_members_format(book, source))  # no signature: look inside
        if uses_calibre(fmt):
            return _via_calibre(
                book, source, fmt,
                include_matter=include_matter,
                max_file_size=max_file_size,
                max_member_size=max_member_size,
                max_total_size=max_total_size,
            )  # fmt: skip
        if fmt.takes == "file" or (zipped and fmt.zip_member):
            book.seek(0)
            data = book
        elif fmt.takes == "blocks":  # decoded and cut into paragraphs block by block, never whole
            limit = (max_file_size, "max-file-size")
            if fmt.max_size_key:
                own = size_limit(fmt.max_size_key)
                if size > own:
                    raise _too_big(source, size, own, fmt.max_size_key)
                limit = min(limit, (own, fmt.max_size_key))
            data = functools.partial(_blocks, book, *limit)
        else:  # the text is needed whole anyway
            data = _read_all(book, head, max_file_size)
            if not data.strip():
                raise BookError(source, "no readable text")
        return _parse(
            data, source, fmt,
            include_matter=include_matter,
            max_member_size=max_member_size,
            max_total_size=max_total_size,
        )  # fmt: skip


def _zip_members_format(book: _BookFile, source: str) -> str:
    """A zip without a ``mimetype`` signature: its format from its member names
    (:func:`.registry.zip_format_by_members`; DOCX, zipped FB2, by default EPUB)."""
    try:
        archive = Archive(book, source)
    except BookError:
        return get_format("epub").name  # the EPUB reader reports the damage
    try:
        names = list(archive.names)
    finally:
        with contextlib.suppress(Exception):
            archive.close()
    book.seek(0)
    return zip_format_by_members(names)


def _unzipped(
    book: _BookFile, source: str, fmt: InputFormat, max_member_size: int, max_total_size: int
) -> bytes:
    """The one document (:attr:`~.registry.InputFormat.zip_member`) of a zipped book
    (a ``.fb2.zip``), inflated within the zip-bomb limits."""
    what = f"not a valid {fmt.name.upper()} zip"
    try:
        archive = Archive(book, source, max_member=max_member_size, max_total=max_total_size)
    except BookError as exc:
        raise BookError(source, exc.problem.replace("not a valid EPUB", what)) from exc
    try:
        members = [n for n in archive.names if n.lower().endswith(fmt.zip_member)]
        if len(members) != 1:
            raise BookError(
                source, f"{what}: {len(members)} {fmt.zip_member} documents in the archive, not 1"
            )
        return archive.read(members[0])
    finally:
        archive.close()


def _via_calibre(
    book: _BookFile,
    source: str,
    fmt: InputFormat,
    *,
    include_matter: bool,
    max_file_size: int,
    max_member_size: int,
    max_total_size: int,
) -> Book:
    """Convert *book* to EPUB with Calibre, read that; source and format stay the original's.

    A zip (DOCX, ODT) must pass the EPUB reader's inflate limits before
    Calibre runs; Calibre's folder is capped by ``ingest.calibre-max-output-size``
    (see :func:`.calibre.convert_to_epub`).
    """
    from .calibre import convert_to_epub

    def read(path: str) -> Book:
        with open(path, "rb") as fh:
            epub = _parse(
                fh, source, get_format("epub"),
                include_matter=include_matter,
                max_member_size=max_member_size,
                max_total_size=max_total_size,
            )  # fmt: skip
        # Calibre writes "Unknown" when the book names no author
        authors = tuple(a for a in epub.authors if a.casefold() not in ("unknown", "inconnu(e)"))
        return dataclasses.replace(epub, format=fmt.name, authors=authors)

    return convert_to_epub(
        book, source, fmt.name,
        limit=max_file_size,
        read_epub_file=read,
        stem=_stem(source),
        max_member_size=max_member_size,
        max_total_size=max_total_size,
        max_output_size=size_limit("calibre-max-output-size"),
        options=fmt.calibre_options,
    )  # fmt: skip


def _parse(
    data,
    source: str,
    fmt: InputFormat,
    *,
    include_matter: bool,
    max_member_size: int,
    max_total_size: int,
) -> Book:
    """Read *data* with *fmt*'s reader: bytes, an open :class:`_BookFile` (a reader that
    takes the file, a zipped book), or for a reader that takes blocks a callable returning
    the file's blocks (see :func:`.txt.read_txt_blocks`)."""
    try:
        if fmt.takes == "file":
            content: BookContent = fmt.read(
                data, source, max_member_size=max_member_size, max_total_size=max_total_size
            )
        else:
            if fmt.zip_member and not isinstance(data, (bytes, bytearray)):  # zipped
                data = _unzipped(data, source, fmt, max_member_size, max_total_size)
            if fmt.takes == "text":
                data = decode_text(data, source)
                if data is None:
                    raise BookError(source, "not an ebook (unrecognised content)")
            content = fmt.read(data, source)
        title = content.title or _stem(source)
        chapters, skipped = assemble(
            content.sections,
            authors=content.authors,
            include_matter=include_matter,
        )
    except BookError:
        raise
    except RecursionError as exc:
        raise BookError(
            source, f"cannot parse {fmt.name.upper()}: document nested too deeply"
        ) from exc
    except Exception as exc:  # a parser bug must not escape as a raw error
        log.debug("unexpected error while reading %s", source, exc_info=True)
        raise BookError(
            source, f"cannot parse {fmt.name.upper()}: {type(exc).__name__}: {exc}"
        ) from exc
    if not chapters:
        raise BookError(source, "no readable text")
    chapters = _bounded(chapters)
    return Book(
        source=source,
        title=title,
        authors=tuple(content.authors),
        language=content.language,
        chapters=chapters,
        cover=content.cover,
        format=fmt.name,
        pronunciations=tuple(content.pronunciations),
        skipped=skipped,
    )
