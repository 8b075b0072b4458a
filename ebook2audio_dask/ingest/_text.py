"""Text helpers shared by the EPUB, HTML and plain-text readers.

Everything here is pure string work: whitespace normalisation, the
Project Gutenberg boilerplate markers, the title keyword tables used to
recognise front and back matter, language-name lookup, and the decoding
of a plain-text book block by block (:func:`decoded_lines`).
"""

from __future__ import annotations

import codecs
import io
import re
import unicodedata
from collections.abc import Iterable, Iterator

from ..errors import BookError
from ..logs import get_logger
from ..safexml import WIDE_BOMS

log = get_logger(__package__)

# Characters that are invisible formatting, never spoken: zero-width space,
# word joiner, BOM / zero-width no-break space, soft hyphen.  ZWJ/ZWNJ are
# kept: they change the spelling of Arabic, Persian and Indic words.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u2060\ufeff\u00ad"), None)

#: Page-number markers left in the running text by Gutenberg-style editions:
#: ``[Pg 6]``, ``[Page 12]``, ``[p. 7]``, ``[pg xiv]``.
PAGE_MARKER_RE = re.compile(r"\[\s*(?:pg|page|p\.?)\s*[0-9ivxlcdm]+\s*\]", re.IGNORECASE)

#: ``*** START OF THE PROJECT GUTENBERG EBOOK ... ***`` (and older variants).
PG_START_RE = re.compile(
    r"^\W*\*{3}\s*START\s+OF\s+(?:THE|THIS)\s+PROJECT\s+GUTENBERG", re.IGNORECASE
)
#: ``*** END OF THE PROJECT GUTENBERG EBOOK ... ***`` and the
#: ``End of the Project Gutenberg EBook of ...`` line that precedes it.
PG_END_RE = re.compile(
    r"^\W*(?:\*{3}\s*END\s+OF\s+(?:THE|THIS)\s+PROJECT\s+GUTENBERG"
    r"|END\s+OF\s+(?:THE\s+)?PROJECT\s+GUTENBERG)",
    re.IGNORECASE,
)
#: Credits line that Gutenberg puts right after the START marker.
PG_CREDITS_RE = re.compile(
    r"^\W*(?:produced\s+by|e-?text\s+prepared\s+by|transcribed\s+(?:from|by))\b",
    re.IGNORECASE,
)
#: A TOC label or heading that is itself Project Gutenberg boilerplate.
PG_LABEL_RE = re.compile(r"project\s+gutenberg|gutenberg\s*(?:-tm|™)?\s+licen[cs]e", re.I)


def clean(text: str) -> str:
    """Whitespace-normalise *text*: one space between words, no newlines.

    Invisible formatting characters (zero-width space, word joiner, BOM,
    soft hyphen) are removed; every Unicode space (including no-break
    spaces) becomes a plain space.

    Parameters
    ----------
    text : str
        Any text.

    Returns
    -------
    str
        The normalised text, stripped at both ends.
    """
    return " ".join(text.translate(_INVISIBLE).split())


def word_count(text: str) -> int:
    """Number of whitespace-separated words in *text*."""
    return len(text.split())


def fold(text: str) -> str:
    """Lower-case *text*, drop accents and punctuation (for comparisons)."""
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(c for c in text if not unicodedata.combining(c))
    return " ".join(re.sub(r"[^\w]+", " ", text).split())


# --------------------------------------------------------------------------
# Front / back matter recognised from a section's title.  A title matches
# when the *whole* folded title (leading numbering removed) matches one of
# these patterns, so a chapter called "The Index of Forbidden Books" is not
# mistaken for an index.  Several languages are covered because the corpus
# and real users are multilingual.
# --------------------------------------------------------------------------
_FRONT_TITLES = r"""
    (?:the\s)?(?:table\sof\s)?contents? | toc | inhoud | inhoudsopgave | inhalt
  | inhaltsverzeichnis | table\sdes\smatieres | sommaire | indice | indholt
  | innehall | sisallys | spis\stresci | index
  | title\s?page | half\s?title(?:\spage)? | (?:front\s)?cover | couverture
  | page\sde\stitre | titelseite | titelpagina | titlepage
  | copyright(?:\spage|\snotice)? | imprint | impressum | imprimatur
  | dedication | dedicace | opdracht | widmung | epigraph | epigraphe
  | preface | voorrede | voorwoord | vorwort | vorrede | prefacio | prefazione
  | foreword | avant\spropos | introduction | introductory(?:\snote)? | inleiding
  | einleitung | introduccion | introduzione
  | acknowledge?ments? | remerciements | dankwoord | danksagung
  | (?:list\sof\s)?(?:illustrations|figures|tables|plates|maps)
  | table\sdes\sillustrations | frontispiece
  | also\sby\s.* | by\sthe\ssame\sauthor | other\sbooks\sby\s.* | praise\sfor\s.*
  | about\sthis\se?book | note\son\sthe\stext | au\slecteur
"""
_BACK_TITLES = r"""
    colophon | uncopyright | licen[cs]e | (?:the\s)?full\sproject\sgutenberg\slicen[cs]e
  | about\sthe\s(?:author|authors|publisher|translator)
  | glossary | glossaire | glossar | woordenlijst | vocabulary | vocabulaire | lexique
  | worterverzeichnis | bibliography | bibliographie | references | works\scited
  | further\sreading | notes | endnotes | end\snotes | footnotes | annotations
  | appendix(?:\s.*)? | appendices | errata | erratum | corrigenda | verbeteringen
  | afterword | credits | advertisements? | transcriber\s?s?\snotes?(?:\s.*)?
  | transcribers?\snotes?(?:\s.*)?
"""
FRONT_TITLE_RE = re.compile(rf"^(?:{_FRONT_TITLES})$", re.VERBOSE)
BACK_TITLE_RE = re.compile(rf"^(?:{_BACK_TITLES})$", re.VERBOSE)

# "1.", "I.", "Chapter 3:", "12 " in front of a title; removed before the
# keyword match so that "1. Introduction" is still an introduction.
_LEADING_NUMBER_RE = re.compile(r"^(?:(?:chapter|part|section)\s+)?(?:\d+|[ivxlcdm]+)\s+")


def matter_group(title: str) -> str | None:
    """Say whether a section *title* names front or back matter.

    Parameters
    ----------
    title : str
        A TOC label or heading.

    Returns
    -------
    {"front", "back"} or None
        The group the title belongs to (``"front"`` for contents, title
        page, preface...; ``"back"`` for colophon, licence, glossary...), or
        ``None`` for an ordinary chapter title.
    """
    folded = fold(title)
    if not folded:
        return None
    candidates = {folded, _LEADING_NUMBER_RE.sub("", folded)}
    for cand in candidates:
        if FRONT_TITLE_RE.match(cand):
            return "front"
        if BACK_TITLE_RE.match(cand):
            return "back"
    if PG_LABEL_RE.search(title):
        return "back" if re.search(r"licen[cs]e", title, re.I) else "front"
    return None


_ORDINAL_ONLY_RE = re.compile(
    r"^(?:(?:chapter|part|book|section|stave|canto|act|scene)\s+)?"
    r"(?:\d+|[ivxlcdm]+|one|two|three|four|five|six|seven|eight|nine|ten)$"
)


def is_bare_ordinal(label: str) -> bool:
    """True for labels that only number something ("I", "2.", "Part III")."""
    return bool(_ORDINAL_ONLY_RE.match(fold(label)))


# Language names as written in Project Gutenberg headers ("Language: French").
LANGUAGE_CODES = {
    "afrikaans": "af",
    "arabic": "ar",
    "bulgarian": "bg",
    "catalan": "ca",
    "chinese": "zh",
    "czech": "cs",
    "danish": "da",
    "dutch": "nl",
    "english": "en",
    "esperanto": "eo",
    "estonian": "et",
    "finnish": "fi",
    "french": "fr",
    "galician": "gl",
    "german": "de",
    "greek": "el",
    "hebrew": "he",
    "hungarian": "hu",
    "icelandic": "is",
    "indonesian": "id",
    "irish": "ga",
    "italian": "it",
    "japanese": "ja",
    "korean": "ko",
    "latin": "la",
    "latvian": "lv",
    "lithuanian": "lt",
    "norwegian": "no",
    "persian": "fa",
    "polish": "pl",
    "portuguese": "pt",
    "romanian": "ro",
    "russian": "ru",
    "serbian": "sr",
    "slovak": "sk",
    "slovenian": "sl",
    "spanish": "es",
    "swedish": "sv",
    "tagalog": "tl",
    "turkish": "tr",
    "ukrainian": "uk",
    "welsh": "cy",
    "yiddish": "yi",
}

#: A ``Title:``, ``Author:`` or ``Language:`` line of a Gutenberg header.
PG_FIELD_RE = re.compile(r"^\s*(Title|Author|Language)\s*:\s*(.*\S)\s*$", re.IGNORECASE)


def pg_header_fields(lines: list[str]) -> dict[str, str]:
    """Read ``Title:``, ``Author:`` and ``Language:`` from a Gutenberg header.

    Parameters
    ----------
    lines : list of str
        The header lines (everything before the ``*** START OF`` marker).

    Returns
    -------
    dict
        Keys ``"title"``, ``"author"`` and ``"language"`` (a language code)
        for the fields found; the title keeps only its first line.
    """
    fields: dict[str, str] = {}
    for line in lines:
        m = PG_FIELD_RE.match(line)
        if not m:
            continue
        key, value = m.group(1).lower(), clean(m.group(2))
        if key in fields or not value:
            continue
        if key == "language":
            name = fold(value).split(" ")[0] if fold(value) else ""
            code = LANGUAGE_CODES.get(name)
            if code:
                fields["language"] = code
        else:
            fields[key] = value
    return fields


def split_authors(value: str) -> tuple[str, ...]:
    """Split an ``Author:`` field on semicolons (names themselves may hold "and")."""
    return tuple(a for a in (clean(p) for p in value.split(";")) if a)


# --------------------------------------------------------------------------
# Decoding a book read whole (and the head sniffed for its format).
# --------------------------------------------------------------------------
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


def decode_text(data: bytes, source: str | None = None) -> str | None:
    """Decode *data* as text, or return ``None`` when it is binary.

    UTF-8 (BOM optional) and UTF-16/32 with a BOM are decoded as such.  UTF-8
    with a few invalid byte sequences (a damaged file) keeps its valid text
    and drops the invalid bytes; anything else is cp1252, or Latin-1 when
    cp1252 leaves many undefined bytes.  With *source*, the fallbacks are
    logged as warnings naming it.
    """
    for bom, codec in WIDE_BOMS:
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


# --------------------------------------------------------------------------
# Decoding a plain-text book block by block.  The rules are those of
# ``decode_text`` (which decodes a whole file at once, for the
# formats read whole): UTF-16/32 by their BOM; UTF-8 (BOM optional); UTF-8
# with a few invalid byte sequences, which are dropped; otherwise cp1252, or
# Latin-1 when cp1252 leaves many bytes undefined.  NUL bytes, or control
# characters in the first 64k characters, mean binary data.
# --------------------------------------------------------------------------
#: Bytes decoded at a time (a 64 kB piece is at most 256 kB of text).
_PIECE = 64 * 1024
#: Decoded characters searched for control characters (binary data).
_SNIFF_CHARS = 65536
#: Bytes cp1252 leaves undefined.
_CP1252_UNDEFINED = tuple(bytes([b]) for b in (0x81, 0x8D, 0x8F, 0x90, 0x9D))
_REPLACEMENT = "\ufffd"
_REPLACEMENT_UTF8 = _REPLACEMENT.encode()
_CONTROL_RE = re.compile("[\x00-\x08\x0e-\x19\x1b-\x1f\x7f-\x9f]")


def _not_text(source: str) -> BookError:
    return BookError(source, "not an ebook (unrecognised content)")


def fallback_encoding(blocks: Iterable[bytes], source: str) -> str:
    """The encoding of a text that is not valid UTF-8, from one pass over its bytes.

    Parameters
    ----------
    blocks : iterable of bytes
        The whole file, in order.
    source : str
        Path or URL, for messages.

    Returns
    -------
    {"utf-8-damaged", "cp1252", "latin-1"}
        ``"utf-8-damaged"`` when the bytes are UTF-8 with a few invalid
        sequences (more valid non-ASCII characters than invalid sequences);
        otherwise cp1252, or Latin-1 when more than 1 byte in 200 is one
        cp1252 leaves undefined.  The choice is logged as a warning.

    Raises
    ------
    BookError
        The bytes hold a NUL byte (binary data).
    """
    decoder = codecs.getincrementaldecoder("utf-8-sig")("replace")
    replaced = genuine = non_ascii = undefined = size = 0
    tail = b""  # the previous block's last two bytes: a U+FFFD may straddle blocks
    for block in blocks:
        if b"\x00" in block:
            raise _not_text(source)
        text = decoder.decode(block)
        replaced += text.count(_REPLACEMENT)
        non_ascii += len(text) - len(text.encode("ascii", "ignore"))
        genuine += (tail + block).count(_REPLACEMENT_UTF8)
        undefined += sum(block.count(b) for b in _CP1252_UNDEFINED)
        size += len(block)
        tail = block[-2:]
    replaced += decoder.decode(b"", final=True).count(_REPLACEMENT)
    bad = replaced - genuine
    if non_ascii - replaced > max(0, bad):
        log.warning("%s: not valid UTF-8; %d invalid byte sequence(s) dropped", source, bad)
        return "utf-8-damaged"
    latin1 = undefined > max(8, size // 200)
    log.warning("%s: not UTF-8 text; read as %s", source, "Latin-1" if latin1 else "cp1252")
    return "latin-1" if latin1 else "cp1252"


def decoded_text(
    blocks: Iterable[bytes], source: str, encoding: str | None = None
) -> Iterator[str]:
    """Decode a plain-text book block by block: its text, in pieces.

    Only one block is decoded at a time, so the book is never in memory
    whole, nor twice (bytes and text).

    Parameters
    ----------
    blocks : iterable of bytes
        The file, in order.
    source : str
        Path or URL, for messages.
    encoding : str, optional
        ``None``: UTF-16/32 when the file starts with their BOM, else strict
        UTF-8 (BOM optional).  Or what :func:`fallback_encoding` returned.

    Raises
    ------
    UnicodeDecodeError
        With ``encoding=None``, the bytes are not valid UTF-8: decode them
        again with the :func:`fallback_encoding`.
    BookError
        The bytes are binary data: NUL bytes (except in UTF-16/32), control
        characters in the first 64k characters, or UTF-16/32 with more than
        1 character in 200 undecodable.
    """
    blocks = _pieces(blocks)
    first = next(blocks)
    wide = None
    if encoding is None:
        wide = next((codec for bom, codec in WIDE_BOMS if first.startswith(bom)), None)
        codec, errors = (wide, "replace") if wide else ("utf-8-sig", "strict")
    elif encoding == "utf-8-damaged":
        codec, errors = "utf-8-sig", "replace"
    else:
        codec, errors = encoding, "replace"
    decoder = codecs.getincrementaldecoder(codec)(errors)
    chars = replaced = controls = 0
    sniffed = bool(wide)  # UTF-16/32 are judged by their undecodable characters instead
    block: bytes | None = first
    while block is not None:
        following = next(blocks, None)
        final = following is None
        if not wide and b"\x00" in block:
            raise _not_text(source)
        text = decoder.decode(block, final=final)
        if encoding == "utf-8-damaged":
            text = text.replace(_REPLACEMENT, "")
        if wide:
            replaced += text.count(_REPLACEMENT)
        if not sniffed:
            controls += len(_CONTROL_RE.findall(text, 0, _SNIFF_CHARS - chars))
            if final or chars + len(text) >= _SNIFF_CHARS:
                sniffed = True
                if controls > max(2, min(_SNIFF_CHARS, chars + len(text)) // 100):
                    raise _not_text(source)
        chars += len(text)
        if wide and final and replaced > max(8, chars // 200):
            raise _not_text(source)
        yield text
        block = following


def _pieces(blocks: Iterable[bytes], size: int = _PIECE) -> Iterator[bytes]:
    """*blocks* cut again into pieces of *size* bytes: the last one shorter, maybe empty."""
    pending = bytearray()
    for block in blocks:
        pending += block
        while len(pending) >= size:
            yield bytes(pending[:size])
            del pending[:size]
    yield bytes(pending)


def text_lines(pieces: Iterable[str]) -> Iterator[str]:
    """The lines of a text given in pieces (as :func:`decoded_text` yields it).

    Line ends are ``\\n``, ``\\r\\n`` or ``\\r``; the lines come without
    them (a text that ends with a line end ends with an empty line), and
    leading BOMs are dropped.  Only the line being read is held.
    """
    newlines = io.IncrementalNewlineDecoder(None, translate=True)
    pending: list[str] = []  # the start of a line that goes on in the next piece
    at_start = True
    for piece, final in _with_final(pieces):
        if at_start:
            piece = piece.lstrip("\ufeff")
            at_start = not piece
        lines = newlines.decode(piece, final=final).split("\n")
        pending.append(lines[0])
        if len(lines) > 1:
            yield "".join(pending)
            yield from lines[1:-1]
            pending = [lines[-1]]
    yield "".join(pending)


def _with_final(pieces: Iterable[str]) -> Iterator[tuple[str, bool]]:
    """``(piece, is_last)`` for each piece; an empty last one when there is none."""
    previous = None
    for piece in pieces:
        if previous is not None:
            yield previous, False
        previous = piece
    yield previous or "", True
