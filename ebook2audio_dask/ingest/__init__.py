"""Ingest (parse) stage: read an ebook into a :class:`~ebook2audio_dask.model.Book`.

Supported inputs are EPUB 2 / EPUB 3, plain text (``.txt``), single-file
HTML, FictionBook 2 (``.fb2``, ``.fb2.zip``), PDF (its text layer, through
pypdf), Markdown (``.md``), and MOBI, AZW3, DOCX, RTF and ODT through
Calibre's ``ebook-convert`` (converted to EPUB first).  The format is
recognised from the content, not only the file name (see
:func:`detect_format`); anything unrecognised is rejected.  See
``docs/formats.md``.

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

import codecs
import contextlib
import dataclasses
import functools
import posixpath
import re

import fsspec
from dask.utils import format_bytes, parse_bytes

from .. import config
from ..errors import BookError, StorageError, UsageError
from ..logs import get_logger
from ..model import Book, Chapter
from ..storage.fs import options_for
from ..storage.retry import with_retries
from ._sections import assemble

__all__ = ["FORMATS", "detect_format", "read_book"]

log = get_logger(__name__)

#: Formats :func:`read_book` understands (the values of :attr:`Book.format`).
FORMATS = ("epub", "txt", "html", "fb2", "pdf", "md", "mobi", "azw3", "docx", "rtf", "odt")
#: Formats converted to EPUB by Calibre's ``ebook-convert`` (PDF only with
#: ``ingest.pdf: calibre``).
CALIBRE_FORMATS = ("mobi", "azw3", "docx", "rtf", "odt")
_MD_EXTS = (".md", ".markdown", ".mdown", ".mkd")
_ODF_TEXT = b"application/vnd.oasis.opendocument.text"

_HTML_EXTS = (".html", ".htm", ".xhtml", ".xht")
_HTML_SNIFF_RE = re.compile(rb"<(?:!doctype\s+html|html[\s>]|head[\s>]|body[\s>])", re.IGNORECASE)
_TAG_SNIFF_RE = re.compile(rb"<(?:p|div|h[1-6]|br|span)[\s/>]", re.IGNORECASE)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
# UTF-32 first: its little-endian BOM starts with UTF-16's.
_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

#: Longest paragraph :func:`read_book` returns.  A longer one (a book with no
#: paragraph breaks, megabytes without punctuation) is cut into paragraphs of
#: at most this many characters, at a sentence end when there is one in the
#: second half of the piece, else at a space: sentence splitting and chunking
#: never see an unbounded string.  Real paragraphs are far shorter.
MAX_PARAGRAPH_CHARS = 10_000
_SENTENCE_END_RE = re.compile(r"[.!?\u2026;:][\"'\u201d\u2019\u00bb)\]]*(?= )|[\u3002\uff01\uff1f]")

#: Defaults of ``ingest.max-member-size`` / ``ingest.max-total-size`` /
#: ``ingest.max-file-size`` / ``ingest.calibre-max-output-size``.
_SIZE_LIMITS = {
    "max-member-size": 256 * 1024**2,
    "max-total-size": 1024**3,
    "max-file-size": 512 * 1024**2,
    "max-text-size": 64 * 1024**2,
    "calibre-max-output-size": 2 * 1024**3,
}
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


def _damaged_utf8(data: bytes) -> tuple[str, int] | None:
    """Decode UTF-8 with a few invalid byte sequences: ``(text, sequences dropped)``.

    ``None`` when the bytes do not look like UTF-8 at all (no valid
    multi-byte character, or more invalid sequences than valid ones): then
    they are cp1252/Latin-1 text.
    """
    text = data.decode("utf-8-sig", errors="replace")
    bad = text.count("\ufffd") - data.count(b"\xef\xbf\xbd")
    non_ascii = len(text) - len(text.encode("ascii", "ignore"))
    valid = non_ascii - text.count("\ufffd")
    if valid <= max(0, bad):
        return None
    return text.replace("\ufffd", ""), bad


def _decode_text(data: bytes, source: str | None = None) -> str | None:
    """Decode *data* as text, or return ``None`` when it is binary.

    UTF-8 (BOM optional) and UTF-16/32 with a BOM are decoded as such.  UTF-8
    with a few invalid byte sequences (a damaged file) keeps its valid text
    and drops the invalid bytes; anything else is cp1252, or Latin-1 when
    cp1252 leaves many undefined bytes.  With *source*, the fallbacks are
    logged as warnings naming it.
    """
    for bom, codec in _WIDE_BOMS:
        if data.startswith(bom):
            # "replace": a character cut at the end of a sniffed head is not an error
            text = data.decode(codec, errors="replace")
            return None if text.count("\ufffd") > max(8, len(text) // 200) else text
    if b"\x00" in data:
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        damaged = _damaged_utf8(data)
        if damaged is not None:
            text, dropped = damaged
            if source:
                log.warning(
                    "%s: not valid UTF-8; %d invalid byte sequence(s) dropped", source, dropped
                )
        else:
            text = data.decode("cp1252", errors="replace")
            encoding = "cp1252"
            if text.count("\ufffd") > max(8, len(text) // 200):
                text = data.decode("latin-1")
                encoding = "Latin-1"
            if source:
                log.warning("%s: not UTF-8 text; read as %s", source, encoding)
    sample = text[:65536]
    controls = sum(1 for c in sample if ord(c) < 32 and c not in "\t\n\r\f\v\x1a")
    controls += sum(1 for c in sample if 0x7F <= ord(c) < 0xA0)
    if controls > max(2, len(sample) // 100):
        return None
    return text


def _zip_format(data: bytes, name: str = "") -> str:
    """The kind of zip archive *data* starts (from its first member), by default EPUB."""
    if data[30:38] == b"mimetype":  # a stored "mimetype" member first: EPUB, ODF
        start = 30 + 8 + int.from_bytes(data[28:30], "little")
        mimetype = data[start : start + 80]
        if mimetype.startswith(_ODF_TEXT):
            return "odt"
        if mimetype.startswith(b"application/epub+zip"):
            return "epub"
    if b"word/document.xml" in data[:65536]:
        return "docx"
    lowered = name.lower()
    if lowered.endswith(".fb2.zip") or lowered.endswith(".fbz"):
        return "fb2"
    first = data[30 : 30 + int.from_bytes(data[26:28], "little")].lower()
    if first.endswith(b".fb2") and b"/" not in first:
        return "fb2"
    return "epub"


def _mobi_format(data: bytes) -> str:
    """``"azw3"`` for a KF8-only Kindle book, else ``"mobi"`` (MOBI 6, or MOBI + KF8)."""
    try:
        record0 = int.from_bytes(data[78:82], "big")
        header = data[record0 + 16 : record0 + 40]
        if header[:4] == b"MOBI" and int.from_bytes(header[20:24], "big") >= 8:
            return "azw3"
    except (IndexError, ValueError):
        pass
    return "mobi"


def detect_format(data: bytes, name: str = "") -> str | None:
    """Recognise an ebook's format from its bytes.

    The content decides; the file name only breaks ties (``.html`` text with
    a few tags, ``.md`` text, a zip named ``.fb2.zip``):

    * zip archives: a ``mimetype`` member ``application/epub+zip`` → EPUB,
      ``application/vnd.oasis.opendocument.text`` → ODT; ``word/document.xml``
      → DOCX; a single ``.fb2`` member → FB2; any other zip → EPUB (whose
      reader then says what is missing);
    * ``%PDF-`` → PDF; ``{\\rtf`` → RTF; ``BOOKMOBI`` at byte 60 → MOBI, or
      AZW3 when its MOBI header is version 8 (KF8 only);
    * XML whose root element is ``FictionBook`` → FB2;
    * text that starts like HTML → HTML; other text → Markdown when named
      ``.md``/``.markdown``, else plain text.

    Parameters
    ----------
    data : bytes
        The file's content (the first few kilobytes are enough).
    name : str
        File name; only used to break ties.

    Returns
    -------
    str or None
        One of :data:`FORMATS`, or ``None`` when the content is not a
        supported ebook.
    """
    from .fb2 import is_fb2

    if data.startswith(_ZIP_MAGIC):
        return _zip_format(data, name)
    if data.lstrip(b"\xef\xbb\xbf \t\r\n")[:5] == b"%PDF-":
        return "pdf"
    if data.lstrip(b"\xef\xbb\xbf \t\r\n")[:5] == b"{\\rtf":
        return "rtf"
    if data[60:68] == b"BOOKMOBI":
        return _mobi_format(data)
    if name.lower().endswith((".epub", ".kepub")):
        # an EPUB is always a zip: text inside a .epub is a broken download, not a book
        return None
    head = data[:8192]
    text = _decode_text(head)
    if text is None:
        return None
    if head.startswith(tuple(bom for bom, _ in _WIDE_BOMS)):
        head = text.encode("utf-8")  # sniff the markup, not its UTF-16/32 bytes
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped.startswith(b"<") and is_fb2(head):
        return "fb2"
    if _HTML_SNIFF_RE.search(head) or (stripped.startswith(b"<?xml") and b"<html" in head.lower()):
        return "html"
    if name.lower().endswith(_HTML_EXTS) and _TAG_SNIFF_RE.search(head):
        return "html"
    if name.lower().endswith(_MD_EXTS):
        return "md"
    return "txt"


def _size_limit(key: str) -> int:
    """The ``ingest.<key>`` size limit in bytes (an int, or a string like "256MiB")."""
    value = config.get(f"ingest.{key}", None)
    if value is None:
        return _SIZE_LIMITS[key]
    try:
        limit = parse_bytes(value) if isinstance(value, str) else int(value)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"ebook2audio.ingest.{key}: not a size: {value!r}") from exc
    if limit <= 0:
        raise UsageError(f"ebook2audio.ingest.{key}: must be positive, not {value!r}")
    return limit


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
    """Read an ebook (EPUB, plain text or HTML) into a :class:`Book`.

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
    max_member_size = _size_limit("max-member-size")
    max_total_size = _size_limit("max-total-size")
    max_file_size = _size_limit("max-file-size")
    with _open_book(source, storage_options) as book:
        size = book.size()
        if size > max_file_size:
            raise _too_big(source, size, max_file_size)
        head = book.read(_HEAD_BYTES)
        if len(head) < _HEAD_BYTES and not head.strip():
            raise BookError(source, "no readable text")
        fmt = detect_format(head, _name(source))
        if fmt is None:
            if _name(source).lower().endswith((".epub", ".kepub")):
                raise BookError(source, "not a valid EPUB: not a zip archive")
            raise BookError(source, "not an ebook (unrecognised content)")
        if fmt == "epub" and head[30:38] != b"mimetype":
            fmt = _zip_members_format(book, source)  # no EPUB signature: look inside
        if fmt in CALIBRE_FORMATS or (fmt == "pdf" and _pdf_reader() == "calibre"):
            return _via_calibre(
                book, source, fmt,
                include_matter=include_matter,
                max_file_size=max_file_size,
                max_member_size=max_member_size,
                max_total_size=max_total_size,
            )  # fmt: skip
        if fmt == "epub" or (fmt == "fb2" and head.startswith(_ZIP_MAGIC)):
            book.seek(0)
            data = book
        elif fmt == "txt":  # decoded and cut into paragraphs block by block, never whole
            max_text_size = _size_limit("max-text-size")
            if size > max_text_size:
                raise _too_big(source, size, max_text_size, "max-text-size")
            limit = min((max_file_size, "max-file-size"), (max_text_size, "max-text-size"))
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


def _pdf_reader() -> str:
    """``ingest.pdf``: ``"pypdf"`` (default) or ``"calibre"``."""
    value = str(config.get("ingest.pdf", None) or "pypdf").strip().lower()
    if value not in ("pypdf", "calibre"):
        raise UsageError(f"ebook2audio.ingest.pdf: 'pypdf' or 'calibre', not {value!r}")
    return value


def _zip_members_format(book: _BookFile, source: str) -> str:
    """A zip without the EPUB signature: DOCX, zipped FB2, or (by default) EPUB."""
    from .epub import _Archive

    try:
        archive = _Archive(book, source)
    except BookError:
        return "epub"  # the EPUB reader reports the damage
    try:
        names = list(archive.names)
    finally:
        with contextlib.suppress(Exception):
            archive.close()
    book.seek(0)
    if "word/document.xml" in names:
        return "docx"
    if "META-INF/container.xml" not in names:
        fb2 = [n for n in names if n.lower().endswith(".fb2")]
        if len(fb2) == 1:
            return "fb2"
    return "epub"


def _zipped_fb2(book: _BookFile, source: str, max_member_size: int, max_total_size: int) -> bytes:
    """The ``.fb2`` document inside a ``.fb2.zip`` (within the zip-bomb limits)."""
    from .epub import _Archive

    try:
        archive = _Archive(book, source, max_member=max_member_size, max_total=max_total_size)
    except BookError as exc:
        raise BookError(
            source, exc.problem.replace("not a valid EPUB", "not a valid FB2 zip")
        ) from exc
    try:
        members = [n for n in archive.names if n.lower().endswith(".fb2")]
        if len(members) != 1:
            raise BookError(
                source, f"not a valid FB2 zip: {len(members)} .fb2 documents in the archive, not 1"
            )
        return archive.read(members[0])
    finally:
        archive.close()


def _via_calibre(
    book: _BookFile,
    source: str,
    fmt: str,
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
    from dataclasses import replace

    from .calibre import convert_to_epub

    def read(path: str) -> Book:
        with open(path, "rb") as fh:
            epub = _parse(
                fh, source, "epub",
                include_matter=include_matter,
                max_member_size=max_member_size,
                max_total_size=max_total_size,
            )  # fmt: skip
        # Calibre writes "Unknown" when the book names no author
        authors = tuple(a for a in epub.authors if a.casefold() not in ("unknown", "inconnu(e)"))
        return replace(epub, format=fmt, authors=authors)

    return convert_to_epub(
        book, source, fmt,
        limit=max_file_size,
        read_epub_file=read,
        stem=_stem(source),
        max_member_size=max_member_size,
        max_total_size=max_total_size,
        max_output_size=_size_limit("calibre-max-output-size"),
    )  # fmt: skip


def _parse(
    data, source: str, fmt: str, *, include_matter: bool, max_member_size: int, max_total_size: int
) -> Book:
    """Read *data* as *fmt*: bytes, an open :class:`_BookFile` (EPUB, zipped FB2), or for
    plain text a callable returning the file's blocks (see :func:`.txt.read_txt_blocks`)."""
    cover = None
    try:
        if fmt == "fb2":
            from .fb2 import read_fb2

            if not isinstance(data, (bytes, bytearray)):  # a .fb2.zip
                data = _zipped_fb2(data, source, max_member_size, max_total_size)
            content = read_fb2(data, source)
            cover = content.cover
        elif fmt == "pdf":
            from .pdf import read_pdf

            content = read_pdf(data, source)
        elif fmt == "md":
            from .markdown import read_markdown

            text = _decode_text(data, source)
            if text is None:
                raise BookError(source, "not an ebook (unrecognised content)")
            content = read_markdown(text, source)
        elif fmt == "epub":
            from .epub import read_epub

            content = read_epub(
                data, source, max_member_size=max_member_size, max_total_size=max_total_size
            )
            cover = content.cover
        elif fmt == "html":
            from .html import read_html

            content = read_html(data, source)
        else:
            from .txt import read_txt_blocks

            content = read_txt_blocks(data, source)
        title = content.title or _stem(source)
        chapters, skipped = assemble(
            content.sections,
            authors=content.authors,
            include_matter=include_matter,
        )
    except BookError:
        raise
    except RecursionError as exc:
        raise BookError(source, f"cannot parse {fmt.upper()}: document nested too deeply") from exc
    except Exception as exc:  # a parser bug must not escape as a raw error
        log.debug("unexpected error while reading %s", source, exc_info=True)
        raise BookError(source, f"cannot parse {fmt.upper()}: {type(exc).__name__}: {exc}") from exc
    if not chapters:
        raise BookError(source, "no readable text")
    chapters = _bounded(chapters)
    return Book(
        source=source,
        title=title,
        authors=tuple(content.authors),
        language=content.language,
        chapters=chapters,
        cover=cover,
        format=fmt,
        pronunciations=tuple(getattr(content, "pronunciations", ())),
        skipped=skipped,
    )
