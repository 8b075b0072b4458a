"""Output file names that fit every file system: at most 255 bytes of UTF-8.

Linux, macOS and most object-store tools limit one path component to 255
bytes (Windows to 255 UTF-16 units, never more than the UTF-8 bytes), so a
name is measured in bytes, not characters: 70 Thai or CJK characters are
already 210 bytes.  :func:`fit_name` is the one function that shortens a
name; every output name of a book (audio, report, dead-letter file,
subtitles, the ``--split chapters`` folder and files, the parts of
``--split-hours``) is made with it from the same shortened stem
(:func:`book_stem`).  See ``docs/outputs.md``.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

__all__ = [
    "NAME_MAX",
    "SUFFIX_ROOM",
    "book_stem",
    "chapter_name",
    "fit_name",
    "part_name",
    "safe_title",
]

#: Bytes in one file or folder name.
NAME_MAX = 255
#: Bytes a book's stem leaves for what its names add (``.failures.jsonl``,
#: `` - Part 12 of 40.flac``): a stem is at most ``NAME_MAX - SUFFIX_ROOM`` bytes.
SUFFIX_ROOM = 32
#: Hex digits of the SHA-1 of the whole name added to a shortened name.
HASH_DIGITS = 8

_ZWJ = "\u200d"
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]+')


def _size(text: str) -> int:
    """Bytes of *text* in a file name (undecodable bytes of a local name count one each)."""
    return len(text.encode("utf-8", "surrogateescape"))


def _extends(ch: str) -> bool:
    """True for a character that belongs to the one before it.

    A mark, joiner, selector, modifier or tag.
    """
    cp = ord(ch)
    return (
        unicodedata.category(ch) in ("Mn", "Mc", "Me")
        or ch == _ZWJ
        or 0xFE00 <= cp <= 0xFE0F  # variation selectors
        or 0xE0100 <= cp <= 0xE01EF
        or 0x1F3FB <= cp <= 0x1F3FF  # emoji skin tones
        or 0xE0020 <= cp <= 0xE007F  # emoji tag sequences (subdivision flags)
    )


def _regional(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def _boundary(text: str, i: int) -> bool:
    """Is cutting *text* before index *i* safe: not inside a user-perceived character?"""
    if i <= 0 or i >= len(text):
        return True
    prev, nxt = text[i - 1], text[i]
    if _extends(nxt) or prev == _ZWJ:
        return False
    if unicodedata.combining(prev) == 9 and unicodedata.category(nxt).startswith("L"):
        return False  # virama + consonant: an Indic conjunct
    if _regional(prev) and _regional(nxt):  # flags are pairs of regional indicators
        run = 0
        while i - 1 - run >= 0 and _regional(text[i - 1 - run]):
            run += 1
        return run % 2 == 0
    return True


def _cut(text: str, room: int) -> str:
    """The longest start of *text* of at most *room* bytes that ends between two characters."""
    end = size = 0
    for ch in text:
        size += _size(ch)
        if size > room:
            break
        end += 1
    safe = end
    while safe > 0 and not _boundary(text, safe):
        safe -= 1
    # one "character" longer than the room (a mark-laden run): cut between code points
    return text[: safe or end]


def fit_name(name: str, suffix: str = "", limit: int = NAME_MAX) -> str:
    """``name + suffix``, shortened to at most *limit* bytes of UTF-8 when longer.

    *suffix* (an extension, `` - Part 2 of 5.mp3``) is kept whole.  A name
    that fits is returned unchanged.  Otherwise *name* is cut between two
    characters (never inside a UTF-8 sequence, nor before a combining mark,
    joiner, variation selector or skin tone that belongs to the character
    before, nor inside an Indic conjunct or a flag) and ``~`` plus the first
    8 hex digits of the SHA-1 of the whole *name* is added: the same name
    always gives the same result, and two long names that start alike stay
    distinct.

    Parameters
    ----------
    name : str
        The part that may be shortened; no ``/`` (one path component).
    suffix : str
        Kept as it is, after the (shortened) name.
    limit : int
        Bytes allowed for the whole result.

    Returns
    -------
    str
        At most *limit* bytes of UTF-8.

    Examples
    --------
    >>> fit_name("Book", ".m4b")
    'Book.m4b'
    >>> name = fit_name("é" * 200, ".m4b")
    >>> len(name.encode()), name[-13:]
    (255, '~41f11f3d.m4b')
    """
    if _size(name) + _size(suffix) <= limit:
        return name + suffix
    digest = hashlib.sha1(name.encode("utf-8", "surrogateescape")).hexdigest()[:HASH_DIGITS]
    tag = f"~{digest}"
    room = limit - _size(suffix) - len(tag)
    if room < 1:
        raise ValueError(f"{suffix!r} leaves no room for a name in {limit} bytes")
    return _cut(name, room) + tag + suffix


def book_stem(stem: str) -> str:
    """The stem every output name of a book starts with.

    The input's file name without its extension (``/`` and NUL, which no
    file name can hold, become spaces; ``.``, ``..`` or nothing become
    ``book``), shortened by :func:`fit_name` to ``NAME_MAX - SUFFIX_ROOM``
    (223) bytes, so that ``<stem>.failures.jsonl`` and ``<stem> - Part i of
    n.flac`` fit as well.
    """
    clean = stem.replace("/", " ").replace("\x00", " ")
    if clean.strip(" .") == "":
        clean = "book"
    return fit_name(clean, limit=NAME_MAX - SUFFIX_ROOM)


def safe_title(title: str) -> str:
    """A title as part of a file name: one line, no path separators nor characters Windows refuses.

    ``/ \\ : * ? " < > |`` and control characters become spaces, runs of
    spaces one space, and leading or trailing spaces and dots go.
    """
    return " ".join(_UNSAFE.sub(" ", title).split()).strip(" .")


def chapter_name(number: str, title: str, ext: str) -> str:
    """``<number> - <title><ext>``, a file of ``--split chapters``.

    The title is made safe, then fitted.
    """
    return fit_name(f"{number} - {safe_title(title) or 'chapter'}", ext)


def part_name(stem: str, n: int, total: int, ext: str) -> str:
    """``<stem> - Part n of total<ext>``, a file of ``--split-hours``."""
    return fit_name(stem, f" - Part {n} of {total}{ext}")
