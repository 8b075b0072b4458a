"""Tags and chapter marks: what a file says about the book, and how ffmpeg is told.

:func:`clean_tag` is the one cleaning of titles, authors and chapter titles;
:class:`BookTags` and :class:`ChapterMark` hold them, cleaned.
:func:`check_chapters` validates a chapter list before anything is encoded.
The tags reach ffmpeg as ``-metadata`` arguments (:func:`tag_args`), which
need no escaping; the chapters go in an FFMETADATA1 file (:func:`ffmetadata`),
escaped as ffmpeg's reader needs (a trailing backslash included).
:func:`iso639_2` turns the book's BCP 47 language into the three-letter code
containers store.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..logs import get_logger

__all__ = [
    "TAG_MAX_BYTES",
    "BookTags",
    "ChapterMark",
    "check_chapters",
    "clean_tag",
    "ffmetadata",
    "iso639_2",
    "tag_args",
]

log = get_logger(__name__)

#: Longest tag value or chapter title written, in bytes of UTF-8 (see :func:`clean_tag`):
#: the Nero ``chpl`` box of an M4B stores a chapter title's length in one byte.
TAG_MAX_BYTES = 255

# What clean_tag turns into a line break, collapses, and drops.
_LINE_BREAK = re.compile("\r\n|[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]")
_BLANKS = re.compile("[ \t\x1f]+")
_UNHOLDABLE = re.compile("[\x00-\x08\x0a-\x1e\x7f-\x9f\ud800-\udfff]")  # controls but tab, US


def clean_tag(value: str, *, multiline: bool = False) -> str:
    """Make *value* a tag or chapter title that every output container holds as it is.

    The one cleaning of book titles, authors and chapter titles: the plan
    (:func:`~ebook2audio_dask.text.chunk.plan_book`) stores its titles
    cleaned, so the report shows exactly what the files hold, and
    :class:`BookTags` and :class:`ChapterMark` clean again (a no-op for
    clean text) whatever their caller passes.

    1. Line breaks (LF, CR, CRLF, VT, FF, U+001C-U+001E, NEL, U+2028, U+2029)
       become one space, or, with *multiline*, one ``"\\n"``.
    2. Tabs and runs of spaces become one space; every other control
       character (C0, DEL, C1: NUL, ESC, BEL...) and any lone surrogate is
       dropped; whitespace at the ends (of each line) is stripped.
    3. A value longer than :data:`TAG_MAX_BYTES` (255) bytes of UTF-8 is cut
       at a character boundary to at most 252 bytes and ends in ``"…"``, so
       it is at most 255 bytes and never ends in a partial character.

    Everything else is kept: bidi marks, combining marks, emoji, ``=;#\\``.
    The function is idempotent: ``clean_tag(clean_tag(s)) == clean_tag(s)``.

    Parameters
    ----------
    value : str
        Any text.
    multiline : bool
        Keep line breaks (as ``"\\n"``); for free-text comments.

    Returns
    -------
    str
        The cleaned value (empty when nothing printable was left).
    """
    lines = (
        _BLANKS.sub(" ", _UNHOLDABLE.sub("", ln)).strip() for ln in _LINE_BREAK.split(str(value))
    )
    text = "\n".join(lines).strip() if multiline else " ".join(ln for ln in lines if ln)
    data = text.encode("utf-8")
    if len(data) <= TAG_MAX_BYTES:
        return text
    return data[: TAG_MAX_BYTES - 3].decode("utf-8", "ignore").rstrip() + "…"


@dataclass(frozen=True)
class ChapterMark:
    """Where one chapter lies in the audio stream.

    Parameters
    ----------
    title : str
        The chapter's title, as players show it; cleaned by :func:`clean_tag`.
    start_sample : int
        First sample of the chapter (inclusive), counted from the start of
        the book at the stream's sample rate.
    end_sample : int
        One past the chapter's last sample (exclusive).
    """

    title: str
    start_sample: int
    end_sample: int

    def __post_init__(self):
        object.__setattr__(self, "title", clean_tag(self.title))


@dataclass(frozen=True)
class BookTags:
    """The tags written into the M4B file.

    Every text value is cleaned with :func:`clean_tag` (the comment keeps
    its line breaks); authors that clean to nothing are left out.

    Parameters
    ----------
    title : str
        The book's title (``\\xa9nam``).
    authors : tuple of str
        Authors, joined with ``", "`` into the artist and album-artist tags.
    language : str or None
        BCP 47 tag such as ``"en-GB"``.  MP4 has no iTunes language tag; it
        is written as the audio track's ISO 639-2 language (``"eng"``).
    album : str or None
        Album tag; defaults to *title*.
    comment : str or None
        Free-text comment (``\\xa9cmt``).
    genre : str
        Genre tag, ``"Audiobook"`` unless told otherwise.
    track : (int, int), optional
        Track number and total (``trkn`` / ID3 ``TRCK`` / ``TRACKNUMBER``),
        for books written as several files.
    """

    title: str
    authors: tuple[str, ...] = ()
    language: str | None = None
    album: str | None = None
    comment: str | None = None
    genre: str = "Audiobook"
    track: tuple[int, int] | None = None

    def __post_init__(self):
        authors = (self.authors,) if isinstance(self.authors, str) else self.authors
        object.__setattr__(self, "authors", tuple(a for a in map(clean_tag, authors) if a))
        object.__setattr__(self, "title", clean_tag(self.title))
        object.__setattr__(self, "genre", clean_tag(self.genre))
        for name in ("album", "comment"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, clean_tag(value, multiline=name == "comment"))


def _escape_ffmetadata(value: str) -> str:
    """Escape a clean value (:func:`clean_tag`) for an FFMETADATA1 file.

    ffmpeg's writer (``libavformat/ffmetaenc.c``) puts a backslash before
    ``=``, ``;``, ``#``, ``\\`` and newline, and so does this function.  Its
    reader (``ffmetadec.c``, ``read_line_to_bprint_escaped``) has a flaw: a
    line ends at a newline *unless the byte before it is a backslash*, so a
    value ending in an (escaped) backslash swallows the next line -- the
    title of a chapter called ``Part 1\\`` took in the next ``[CHAPTER]``.
    Such a value is closed with a NUL byte: the reader keeps the NUL in the
    line, then ends the value there (C string), and a reader that ends a
    line at a NUL, as older ffmpeg releases did, ends it there too.
    """
    escaped = re.sub(r"([=;#\\\n])", r"\\\1", value)
    return escaped + "\0" if escaped.endswith("\\") else escaped


def ffmetadata(chapters: Sequence[ChapterMark], sample_rate: int) -> str:
    """Build the FFMETADATA1 text holding the chapters (the tags go by :func:`tag_args`).

    Parameters
    ----------
    chapters : sequence of ChapterMark
        The chapters, checked (:func:`check_chapters`).
    sample_rate : int
        The audio's rate: the chapters' time base.

    Returns
    -------
    str
        The file's text; titles escaped by ``_escape_ffmetadata``.
    """
    lines = [";FFMETADATA1"]
    for ch in chapters:
        lines += [
            "[CHAPTER]",
            f"TIMEBASE=1/{sample_rate}",
            f"START={ch.start_sample}",
            f"END={ch.end_sample}",
            f"title={_escape_ffmetadata(ch.title)}",
        ]
    return "\n".join(lines) + "\n"


def tag_args(tags: BookTags) -> list[str]:
    """The book's tags as ffmpeg ``-metadata key=value`` arguments.

    An argument needs no escaping (ffmpeg splits it at the first ``=``, the
    key's, and takes the rest as it is), and its size is bounded (seven
    values of at most :data:`TAG_MAX_BYTES`; the artist, all authors joined
    with ``", "``, is cleaned again and so cut too), so the tags do not go
    through the FFMETADATA1 file.  Chapters must: ffmpeg takes them only
    from an input file, and a book may have thousands, too many for a
    command line; their titles are escaped by ``_escape_ffmetadata``.

    Parameters
    ----------
    tags : BookTags
        The (clean) tags.

    Returns
    -------
    list of str
        ``["-metadata", "key=value", ...]``, empty values left out.
    """
    artist = clean_tag(", ".join(tags.authors))
    values = {
        "title": tags.title,
        "artist": artist,
        "album_artist": artist,
        "album": tags.album if tags.album is not None else tags.title,
        "genre": tags.genre,
        "comment": tags.comment,
        "track": f"{tags.track[0]}/{tags.track[1]}" if tags.track else None,
    }
    return [arg for key, val in values.items() if val for arg in ("-metadata", f"{key}={val}")]


def check_chapters(chapters: Sequence[ChapterMark]) -> list[ChapterMark]:
    """Validate chapter marks; drop empty ones (with a warning).

    Parameters
    ----------
    chapters : sequence of ChapterMark
        Marks in samples.

    Returns
    -------
    list of ChapterMark
        The marks that hold audio, in order.

    Raises
    ------
    ValueError
        If a mark's range is invalid, or marks are out of order or overlap.
    """
    kept: list[ChapterMark] = []
    previous_end = 0
    for ch in chapters:
        start, end = int(ch.start_sample), int(ch.end_sample)
        if start < 0 or end < start:
            raise ValueError(f"chapter {ch.title!r}: invalid sample range {start}..{end}")
        if start < previous_end:
            raise ValueError(
                f"chapter {ch.title!r} starts at sample {start}, before the end of "
                f"the previous chapter ({previous_end}); chapters must be in order "
                "and must not overlap"
            )
        if end == start:
            log.warning("chapter %r has no audio; it is left out of the chapter list", ch.title)
            continue
        kept.append(ch)
        previous_end = end
    return kept


# ISO 639-1 -> ISO 639-2/T, as MP4 track languages use three-letter codes.
_ISO639_PAIRS = """
    aa:aar ab:abk af:afr ak:aka am:amh an:arg ar:ara as:asm av:ava ay:aym az:aze ba:bak
    be:bel bg:bul bi:bis bm:bam bn:ben bo:bod br:bre bs:bos ca:cat ce:che ch:cha co:cos
    cr:cre cs:ces cu:chu cv:chv cy:cym da:dan de:deu dv:div dz:dzo ee:ewe el:ell en:eng
    eo:epo es:spa et:est eu:eus fa:fas ff:ful fi:fin fj:fij fo:fao fr:fra fy:fry ga:gle
    gd:gla gl:glg gn:grn gu:guj gv:glv ha:hau he:heb hi:hin ho:hmo hr:hrv ht:hat hu:hun
    hy:hye hz:her ia:ina id:ind ie:ile ig:ibo ii:iii ik:ipk io:ido is:isl it:ita iu:iku
    ja:jpn jv:jav ka:kat kg:kon ki:kik kj:kua kk:kaz kl:kal km:khm kn:kan ko:kor kr:kau
    ks:kas ku:kur kv:kom kw:cor ky:kir la:lat lb:ltz lg:lug li:lim ln:lin lo:lao lt:lit
    lu:lub lv:lav mg:mlg mh:mah mi:mri mk:mkd ml:mal mn:mon mr:mar ms:msa mt:mlt my:mya
    na:nau nb:nob nd:nde ne:nep ng:ndo nl:nld nn:nno no:nor nr:nbl nv:nav ny:nya oc:oci
    oj:oji om:orm or:ori os:oss pa:pan pi:pli pl:pol ps:pus pt:por qu:que rm:roh rn:run
    ro:ron ru:rus rw:kin sa:san sc:srd sd:snd se:sme sg:sag si:sin sk:slk sl:slv sm:smo
    sn:sna so:som sq:sqi sr:srp ss:ssw st:sot su:sun sv:swe sw:swa ta:tam te:tel tg:tgk
    th:tha ti:tir tk:tuk tl:tgl tn:tsn to:ton tr:tur ts:tso tt:tat tw:twi ty:tah ug:uig
    uk:ukr ur:urd uz:uzb ve:ven vi:vie vo:vol wa:wln wo:wol xh:xho yi:yid yo:yor za:zha
    zh:zho zu:zul
"""
_ISO639_1_TO_2 = dict(pair.split(":") for pair in _ISO639_PAIRS.split())


def iso639_2(language: str | None) -> str | None:
    """Map a BCP 47 tag (``"en-GB"``) to an ISO 639-2 code (``"eng"``), or None.

    Parameters
    ----------
    language : str or None
        A BCP 47 tag; a three-letter primary subtag is kept as it is.

    Returns
    -------
    str or None
        The ISO 639-2/T code, or None when the language is unknown or empty.
    """
    if not language:
        return None
    primary = language.strip().replace("_", "-").split("-")[0].lower()
    if len(primary) == 3 and primary.isascii() and primary.isalpha():
        return primary
    return _ISO639_1_TO_2.get(primary)
