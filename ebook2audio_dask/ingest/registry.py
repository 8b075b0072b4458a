"""The input formats: one table, used by detection, dispatch, folder expansion and the docs.

Each row of :data:`INPUT_FORMATS` is an :class:`InputFormat`: its name (the
value of :attr:`Book.format`), how its content is recognised (a *sniffer*,
``(head bytes, lower-case file name) -> bool``), its reader, the file
suffixes picked up from a folder, and whether it is read through Calibre.
:func:`detect_format` tries the sniffers in table order, within the
format's container group: zip archives first, then binary signatures, then
text (decoded first, so UTF-16/32 markup is sniffed as UTF-8);
:func:`ebook2audio_dask.ingest.read_book` hands the book to the row's
reader in the form the row's ``takes`` names; :data:`BOOK_SUFFIXES` (folder
expansion) and the input table of ``docs/formats.md`` (:func:`formats_table`)
come from the rows too.

Adding a format
---------------
Write a reader module next to the others: a function taking the book in
one of the forms of :attr:`InputFormat.takes` and the source (its URL, for
messages), that returns a :class:`~._sections.BookContent` and raises
:class:`~ebook2audio_dask.errors.BookError` for a bad book.  Then add one
row below, at the place in its container group where its sniffer should be
tried, and paste :func:`formats_table`'s output over the table in
``docs/formats.md`` (``tests/test_ingest.py`` checks it).
A format Calibre converts needs no reader: a row with ``calibre=True``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from .. import config
from ..errors import UsageError
from ..safexml import WIDE_BOMS
from ._text import decode_text
from .epub import ZIP_MAGIC, read_epub
from .fb2 import is_fb2, read_fb2
from .html import read_html
from .markdown import read_markdown
from .pdf import read_pdf
from .txt import read_txt_blocks

__all__ = [
    "BOOK_SUFFIXES",
    "CALIBRE_FORMATS",
    "FORMATS",
    "INPUT_FORMATS",
    "InputFormat",
    "detect_format",
    "formats_table",
    "get_format",
    "refused_name",
    "signed_zip",
    "uses_calibre",
    "zip_format_by_members",
]

#: What a reader may be given (:attr:`InputFormat.takes`).
TAKES = ("file", "bytes", "text", "blocks")
#: The container groups, in the order detection tries them.
CONTAINERS = ("zip", "binary", "text")


@dataclass(frozen=True)
class InputFormat:
    """One input format: a row of :data:`INPUT_FORMATS`.

    Parameters
    ----------
    name : str
        The format's name, the value of :attr:`Book.format`.
    label : str
        Its name in the docs (``"EPUB 2/3"``).
    container : str
        ``"zip"`` (sniffed when the file is a zip archive), ``"binary"``
        (a signature in the raw bytes) or ``"text"`` (sniffed in the text,
        decoded and re-encoded as UTF-8).
    sniff : callable
        ``sniff(head, name) -> bool``: the first bytes (64 kB; text: its
        first 8 kB, as UTF-8) and the lower-case file name (for ties only).
    read : callable or None
        The built-in reader (``None``: only through Calibre), called as
        ``read(data, source)``, and for ``takes="file"`` with the zip-bomb
        limits as ``max_member_size=`` / ``max_total_size=`` too.
    takes : str
        What *read* is given: ``"file"`` (the seekable file), ``"bytes"``
        (the whole file, within ``ingest.max-file-size``), ``"text"`` (the
        whole file decoded) or ``"blocks"`` (a callable returning the file's
        blocks, never held whole).
    suffixes : tuple of str
        File name endings picked up when an input is a folder (lower case).
    aliases : tuple of str
        More endings that name this format (for :attr:`refuse_other` and
        sniffers' ties) but are not picked up from a folder.
    default : bool
        The format of a zip archive no sniffer recognised; its members are
        then looked at (:func:`zip_format_by_members`) unless the archive is
        :func:`signed_zip`.
    members : callable, optional
        ``members(names) -> bool``: a zip without a ``mimetype`` signature is
        this format (zipped, for a text format), from the names of its members.
    zip_sniff : callable, optional
        For a text format that also comes zipped (FB2's ``.fb2.zip``): the
        sniffer tried on a zip archive, in table order with the zip formats'.
    zip_member : str, optional
        Suffix of the one document a zipped book of this format holds (FB2:
        ``".fb2"``); it is unpacked, within the zip-bomb limits, and read.
    refuse_other : bool
        A file named with one of :attr:`suffixes` / :attr:`aliases` whose
        content is not this format's container is refused (not read as text).
    max_size_key : str, optional
        A size limit of its own (``ingest.<key>``), checked against the file's
        size before anything is read, besides ``ingest.max-file-size``.
    calibre : bool
        Always converted to EPUB by Calibre's ``ebook-convert``.
    calibre_switch : str, optional
        Configuration key (``ingest.<key>``) naming the reader: the value
        :attr:`builtin` (the built-in reader) or ``"calibre"``.
    builtin : str
        The built-in reader's name in :attr:`calibre_switch`'s values.
    calibre_options : tuple of str
        More ``ebook-convert`` arguments for this format.
    recognised_by, read_by, needs : str
        The format's row in the table of ``docs/formats.md`` (Markdown).
    """

    name: str
    label: str
    container: str
    sniff: Callable[[bytes, str], bool]
    read: Callable | None = None
    takes: str = "bytes"
    suffixes: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    default: bool = False
    members: Callable[[list[str]], bool] | None = None
    zip_sniff: Callable[[bytes, str], bool] | None = None
    zip_member: str | None = None
    refuse_other: bool = False
    max_size_key: str | None = None
    calibre: bool = False
    calibre_switch: str | None = None
    builtin: str = ""
    calibre_options: tuple[str, ...] = ()
    recognised_by: str = ""
    read_by: str = ""
    needs: str = "—"

    def __post_init__(self):
        if self.container not in CONTAINERS:
            raise ValueError(f"{self.name}: container must be one of {CONTAINERS}")
        if self.takes not in TAKES:
            raise ValueError(f"{self.name}: takes must be one of {TAKES}")
        if self.read is None and not self.calibre:
            raise ValueError(f"{self.name}: a reader, or calibre=True")


# --------------------------------------------------------------------------- sniffers
_ODF_TEXT = b"application/vnd.oasis.opendocument.text"
_HTML_SNIFF_RE = re.compile(rb"<(?:!doctype\s+html|html[\s>]|head[\s>]|body[\s>])", re.IGNORECASE)
_TAG_SNIFF_RE = re.compile(rb"<(?:p|div|h[1-6]|br|span)[\s/>]", re.IGNORECASE)
_LEADING_SPACE = b"\xef\xbb\xbf \t\r\n"
_HTML_NAMES = (".html", ".htm", ".xhtml", ".xht")
_MD_NAMES = (".md", ".markdown", ".mdown", ".mkd")
#: RTF and ODT have no table of contents Calibre reads: it would only list
#: headings with words like "Chapter"; the headings (as word processors mark
#: them) make the TOC instead.
_HEADING_TOC = ("--level1-toc", "//h:h1", "--level2-toc", "//h:h2", "--level3-toc", "//h:h3")


def signed_zip(head: bytes) -> bool:
    """Whether a zip archive starts with a stored ``mimetype`` member (EPUB, ODF)."""
    return head[30:38] == b"mimetype"


def _mimetype(head: bytes) -> bytes:
    """The content of a zip's first member when it is ``mimetype``, else ``b""``."""
    if not signed_zip(head):
        return b""
    start = 30 + 8 + int.from_bytes(head[28:30], "little")
    return head[start : start + 80]


def _first_member(head: bytes) -> bytes:
    """The lower-case name of a zip's first member."""
    return head[30 : 30 + int.from_bytes(head[26:28], "little")].lower()


def _zipped_fb2(head: bytes, name: str) -> bool:
    if name.endswith((".fb2.zip", ".fbz")):
        return True
    first = _first_member(head)
    return first.endswith(b".fb2") and b"/" not in first


def _fb2_members(names: list[str]) -> bool:
    if "META-INF/container.xml" in names:
        return False
    return len([n for n in names if n.lower().endswith(".fb2")]) == 1


def _mobi(head: bytes, name: str) -> bool:
    return head[60:68] == b"BOOKMOBI"


def _kf8_only(head: bytes, name: str) -> bool:
    """A Kindle book whose MOBI header is version 8 or later (KF8 only: AZW3)."""
    if not _mobi(head, name):
        return False
    try:
        record0 = int.from_bytes(head[78:82], "big")
        header = head[record0 + 16 : record0 + 40]
        return header[:4] == b"MOBI" and int.from_bytes(header[20:24], "big") >= 8
    except (IndexError, ValueError):
        return False


def _html(head: bytes, name: str) -> bool:
    if _HTML_SNIFF_RE.search(head):
        return True
    if head.lstrip(_LEADING_SPACE).startswith(b"<?xml") and b"<html" in head.lower():
        return True
    return name.endswith(_HTML_NAMES) and _TAG_SNIFF_RE.search(head) is not None


def _signature(magic: bytes) -> Callable[[bytes, str], bool]:
    """A sniffer: the file starts with *magic* (after a BOM or white space)."""
    return lambda head, name: head.lstrip(_LEADING_SPACE)[: len(magic)] == magic


# --------------------------------------------------------------------------- the table
#: The input formats, in the order their sniffers are tried (within a container group).
INPUT_FORMATS: tuple[InputFormat, ...] = (
    InputFormat(
        "epub", "EPUB 2/3", "zip",
        sniff=lambda head, name: _mimetype(head).startswith(b"application/epub+zip"),
        read=read_epub, takes="file",
        suffixes=(".epub",), aliases=(".kepub",), default=True, refuse_other=True,
        recognised_by="zip with a `mimetype` member `application/epub+zip` "
        "(any other zip, by default)",
        read_by="built-in reader ([ingest](ingest.md))",
    ),
    InputFormat(
        "odt", "ODT", "zip",
        sniff=lambda head, name: _mimetype(head).startswith(_ODF_TEXT),
        calibre=True, suffixes=(".odt",), calibre_options=_HEADING_TOC,
        recognised_by="zip with `mimetype` `application/vnd.oasis.opendocument.text`",
        read_by="Calibre → EPUB reader", needs="Calibre",
    ),
    InputFormat(
        "docx", "DOCX", "zip",
        sniff=lambda head, name: b"word/document.xml" in head[:65536],
        members=lambda names: "word/document.xml" in names,
        calibre=True, suffixes=(".docx",),
        recognised_by="zip with `word/document.xml`",
        read_by="Calibre → EPUB reader", needs="Calibre",
    ),
    InputFormat(
        "pdf", "PDF", "binary", sniff=_signature(b"%PDF-"),
        read=read_pdf, suffixes=(".pdf",), calibre_switch="pdf", builtin="pypdf",
        recognised_by="`%PDF-`",
        read_by="pypdf (text layer), or Calibre with `ingest.pdf: calibre`",
    ),
    InputFormat(
        "rtf", "RTF", "binary", sniff=_signature(b"{\\rtf"),
        calibre=True, suffixes=(".rtf",), calibre_options=_HEADING_TOC,
        recognised_by="`{\\rtf`", read_by="Calibre → EPUB reader", needs="Calibre",
    ),
    InputFormat(
        "azw3", "AZW3", "binary", sniff=_kf8_only, calibre=True, suffixes=(".azw3",),
        recognised_by="`BOOKMOBI` at byte 60, MOBI header version 8 (KF8 only)",
        read_by="Calibre → EPUB reader", needs="Calibre",
    ),
    InputFormat(
        "mobi", "MOBI", "binary", sniff=_mobi, calibre=True, suffixes=(".mobi",),
        recognised_by="`BOOKMOBI` at byte 60",
        read_by="Calibre → EPUB reader", needs="Calibre",
    ),
    InputFormat(
        "fb2", "FB2 (`.fb2`, `.fb2.zip`)", "text",
        sniff=lambda head, name: head.lstrip(_LEADING_SPACE).startswith(b"<") and is_fb2(head),
        zip_sniff=_zipped_fb2, members=_fb2_members, zip_member=".fb2",
        read=read_fb2, suffixes=(".fb2", ".fb2.zip"), aliases=(".fbz",),
        recognised_by="XML whose root element is `FictionBook`; a zip holding one `.fb2`",
        read_by="built-in reader",
    ),
    InputFormat(
        "html", "HTML", "text", sniff=_html,
        read=read_html, suffixes=(".html", ".htm", ".xhtml"), aliases=(".xht",),
        recognised_by="text that starts like HTML", read_by="built-in reader",
    ),
    InputFormat(
        "md", "Markdown (`.md`)", "text",
        sniff=lambda head, name: name.endswith(_MD_NAMES),
        read=read_markdown, takes="text", suffixes=(".md",),
        aliases=(".markdown", ".mdown", ".mkd"),
        recognised_by="text named `.md` / `.markdown`",
        read_by="markdown-it-py → the HTML reader",
    ),
    InputFormat(
        "txt", "plain text", "text",
        sniff=lambda head, name: True,
        read=read_txt_blocks, takes="blocks", suffixes=(".txt",), max_size_key="max-text-size",
        recognised_by="text that is not markup", read_by="built-in reader",
    ),
)  # fmt: skip

_BY_NAME = {f.name: f for f in INPUT_FORMATS}
if len(_BY_NAME) != len(INPUT_FORMATS):
    raise ValueError("INPUT_FORMATS: two rows with one name")

#: Formats :func:`~ebook2audio_dask.ingest.read_book` understands (values of :attr:`Book.format`).
FORMATS = tuple(_BY_NAME)
#: Formats always converted to EPUB by Calibre's ``ebook-convert`` (PDF too, with
#: ``ingest.pdf: calibre``: see :func:`uses_calibre`).
CALIBRE_FORMATS = tuple(f.name for f in _BY_NAME.values() if f.calibre)
#: File name endings picked up when an input is a folder.
BOOK_SUFFIXES = tuple(dict.fromkeys(s for f in INPUT_FORMATS for s in f.suffixes))


def get_format(name: str) -> InputFormat:
    """The row of format *name* (one of :data:`FORMATS`); ``KeyError`` if unknown."""
    return _BY_NAME[name]


def uses_calibre(fmt: InputFormat) -> bool:
    """Whether *fmt* is read through Calibre now (its :attr:`~InputFormat.calibre_switch`
    is read from the configuration at each call).

    Raises
    ------
    UsageError
        The switch's value is neither the built-in reader's name nor ``"calibre"``.
    """
    if fmt.calibre:
        return True
    if fmt.calibre_switch is None:
        return False
    key = fmt.calibre_switch
    value = str(config.get(f"ingest.{key}")).strip().lower()
    if value not in (fmt.builtin, "calibre"):
        raise UsageError(f"ebook2audio.ingest.{key}: '{fmt.builtin}' or 'calibre', not {value!r}")
    return value == "calibre"


def zip_format_by_members(names: list[str]) -> str:
    """The format of a zip archive without a ``mimetype`` signature, from its member names."""
    for fmt in INPUT_FORMATS:
        if fmt.members is not None and fmt.members(names):
            return fmt.name
    return _default_zip().name


def _default_zip() -> InputFormat:
    return next(f for f in INPUT_FORMATS if f.container == "zip" and f.default)


def detect_format(data: bytes, name: str = "") -> str | None:
    """Recognise an ebook's format from its bytes.

    The content decides; the file name only breaks ties (``.html`` text with
    a few tags, ``.md`` text, a zip named ``.fb2.zip``).  The sniffers of
    :data:`INPUT_FORMATS` are tried in order: for a zip archive those of the
    zip formats (none matching: EPUB, whose reader then says what is
    missing); else the binary signatures; then a file named like a zip-only
    format (``.epub``) is refused; else the content must be text, and the
    text formats' sniffers are tried on its first 8 kB:

    * zip archives: a ``mimetype`` member ``application/epub+zip`` → EPUB,
      ``application/vnd.oasis.opendocument.text`` → ODT; ``word/document.xml``
      → DOCX; a single ``.fb2`` member → FB2; any other zip → EPUB;
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
    lowered = name.lower()
    if data.startswith(ZIP_MAGIC):
        for fmt in INPUT_FORMATS:
            sniff = fmt.sniff if fmt.container == "zip" else fmt.zip_sniff
            if sniff is not None and sniff(data, lowered):
                return fmt.name
        return _default_zip().name
    for fmt in INPUT_FORMATS:
        if fmt.container == "binary" and fmt.sniff(data, lowered):
            return fmt.name
    if refused_name(name) is not None:
        return None
    head = data[:8192]
    text = decode_text(head)
    if text is None:
        return None
    if head.startswith(tuple(bom for bom, _ in WIDE_BOMS)):
        head = text.encode("utf-8")  # sniff the markup, not its UTF-16/32 bytes
    for fmt in INPUT_FORMATS:
        if fmt.container == "text" and fmt.sniff(head, lowered):
            return fmt.name
    return None


def refused_name(name: str) -> InputFormat | None:
    """The zip format whose name *name* has, when that format refuses other content.

    An EPUB is always a zip: text inside a ``.epub`` is a broken download, not a book.
    """
    lowered = name.lower()
    for fmt in INPUT_FORMATS:
        if fmt.refuse_other and lowered.endswith(fmt.suffixes + fmt.aliases):
            return fmt
    return None


def formats_table() -> str:
    """The input formats as the Markdown table of ``docs/formats.md``."""
    lines = ["| format | recognised by | read by | needs |", "|---|---|---|---|"]
    for fmt in INPUT_FORMATS:
        if fmt.recognised_by:
            lines.append(f"| {fmt.label} | {fmt.recognised_by} | {fmt.read_by} | {fmt.needs} |")
    return "\n".join(lines) + "\n"
