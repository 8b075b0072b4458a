"""Stream PCM into ffmpeg and write a chaptered, tagged M4B audiobook.

:func:`encode_m4b` turns an iterator of raw PCM blocks (mono, signed 16-bit
little-endian), chapter marks in samples, the book's tags and optionally its
cover into one M4B.  The blocks are piped into ffmpeg as they come (AAC), so
memory use does not grow with the length of the book; a second, fast ffmpeg
pass copies that audio into an MP4 container with the ``"M4B "`` brand, the
chapters, the tags and the cover.

It is the one-call form of what the pipeline's merge task does with
:class:`~ebook2audio_dask.audio.formats.PartEncoder` (pass 1) and
:func:`~ebook2audio_dask.audio.formats.finish_file` (pass 2, for M4B this
module's remux), which the merge also uses for the other formats, split
files and loudness normalisation.  :func:`prepare_cover` readies the cover.

Every title, author and chapter title is cleaned by :func:`clean_tag` (the
plan's titles already are, so the report shows what the file holds).  The
tags reach ffmpeg as ``-metadata`` arguments, which need no escaping; the
chapters go in an FFMETADATA1 file, escaped as ffmpeg's reader needs
(:func:`_escape`).

ffmpeg comes from :mod:`imageio_ffmpeg` (a static build, no ffprobe); set the
``IMAGEIO_FFMPEG_EXE`` environment variable to use another binary.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import re
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..logs import get_logger

__all__ = [
    "TAG_MAX_BYTES",
    "BookTags",
    "ChapterMark",
    "clean_tag",
    "decode_to_pcm",
    "encode_m4b",
    "ffmpeg_exe",
    "prepare_cover",
    "remux_m4b",
    "silence",
]

log = get_logger(__name__)

#: How much of ffmpeg's stderr is quoted in an error message.
_STDERR_TAIL_BYTES = 4096

#: Decompressed size limit for a gzip-compressed (``.svgz``) cover.
_MAX_SVG_BYTES = 64 * 1024 * 1024

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


# --------------------------------------------------------------------------
# ffmpeg


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Return the path of the ffmpeg executable.

    The binary bundled with :mod:`imageio_ffmpeg` is used, or the one named by
    the ``IMAGEIO_FFMPEG_EXE`` environment variable.  The answer is cached.

    Returns
    -------
    str
        Absolute path of ffmpeg.

    Raises
    ------
    RuntimeError
        If imageio-ffmpeg is not installed or cannot find a binary.
    """
    try:
        import imageio_ffmpeg
    except ImportError:
        raise RuntimeError(
            "ffmpeg is needed to write M4B files: install the imageio-ffmpeg package"
        ) from None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as exc:  # imageio-ffmpeg raises RuntimeError or OSError
        raise RuntimeError(
            f"ffmpeg is needed to write M4B files but none was found ({exc}); "
            "reinstall imageio-ffmpeg or set IMAGEIO_FFMPEG_EXE to an ffmpeg binary"
        ) from None


def _stderr_tail(fileobj, max_lines: int = 5) -> str:
    """Return the last non-empty lines of a file ffmpeg wrote its stderr to."""
    fileobj.flush()
    size = fileobj.seek(0, os.SEEK_END)
    fileobj.seek(max(0, size - _STDERR_TAIL_BYTES))
    text = fileobj.read().decode("utf-8", "replace")
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    return " | ".join(lines[-max_lines:]) or "no message"


def _run_ffmpeg(args: list[str]) -> subprocess.CompletedProcess:
    """Run a short ffmpeg command, capturing its output."""
    return subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )


# --------------------------------------------------------------------------
# Metadata


def _escape(value: str) -> str:
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


def _ffmetadata(chapters: Sequence[ChapterMark], sample_rate: int) -> str:
    """Build the FFMETADATA1 text holding the chapters (the tags go by :func:`_tag_args`)."""
    lines = [";FFMETADATA1"]
    for ch in chapters:
        lines += [
            "[CHAPTER]",
            f"TIMEBASE=1/{sample_rate}",
            f"START={ch.start_sample}",
            f"END={ch.end_sample}",
            f"title={_escape(ch.title)}",
        ]
    return "\n".join(lines) + "\n"


def _tag_args(tags: BookTags) -> list[str]:
    """The book's tags as ffmpeg ``-metadata key=value`` arguments.

    An argument needs no escaping (ffmpeg splits it at the first ``=``, the
    key's, and takes the rest as it is), and its size is bounded (seven
    values of at most :data:`TAG_MAX_BYTES`; the artist, all authors joined
    with ``", "``, is cleaned again and so cut too), so the tags do not go
    through the FFMETADATA1 file.  Chapters must: ffmpeg takes them only
    from an input file, and a book may have thousands, too many for a
    command line; their titles are escaped by :func:`_escape`.
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


def _check_chapters(chapters: Sequence[ChapterMark]) -> list[ChapterMark]:
    """Validate chapter marks; drop empty ones (with a warning)."""
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
_ISO639_1_TO_2 = dict(
    pair.split(":")
    for pair in [
        "aa:aar",
        "ab:abk",
        "af:afr",
        "ak:aka",
        "am:amh",
        "an:arg",
        "ar:ara",
        "as:asm",
        "av:ava",
        "ay:aym",
        "az:aze",
        "ba:bak",
        "be:bel",
        "bg:bul",
        "bi:bis",
        "bm:bam",
        "bn:ben",
        "bo:bod",
        "br:bre",
        "bs:bos",
        "ca:cat",
        "ce:che",
        "ch:cha",
        "co:cos",
        "cr:cre",
        "cs:ces",
        "cu:chu",
        "cv:chv",
        "cy:cym",
        "da:dan",
        "de:deu",
        "dv:div",
        "dz:dzo",
        "ee:ewe",
        "el:ell",
        "en:eng",
        "eo:epo",
        "es:spa",
        "et:est",
        "eu:eus",
        "fa:fas",
        "ff:ful",
        "fi:fin",
        "fj:fij",
        "fo:fao",
        "fr:fra",
        "fy:fry",
        "ga:gle",
        "gd:gla",
        "gl:glg",
        "gn:grn",
        "gu:guj",
        "gv:glv",
        "ha:hau",
        "he:heb",
        "hi:hin",
        "ho:hmo",
        "hr:hrv",
        "ht:hat",
        "hu:hun",
        "hy:hye",
        "hz:her",
        "ia:ina",
        "id:ind",
        "ie:ile",
        "ig:ibo",
        "ii:iii",
        "ik:ipk",
        "io:ido",
        "is:isl",
        "it:ita",
        "iu:iku",
        "ja:jpn",
        "jv:jav",
        "ka:kat",
        "kg:kon",
        "ki:kik",
        "kj:kua",
        "kk:kaz",
        "kl:kal",
        "km:khm",
        "kn:kan",
        "ko:kor",
        "kr:kau",
        "ks:kas",
        "ku:kur",
        "kv:kom",
        "kw:cor",
        "ky:kir",
        "la:lat",
        "lb:ltz",
        "lg:lug",
        "li:lim",
        "ln:lin",
        "lo:lao",
        "lt:lit",
        "lu:lub",
        "lv:lav",
        "mg:mlg",
        "mh:mah",
        "mi:mri",
        "mk:mkd",
        "ml:mal",
        "mn:mon",
        "mr:mar",
        "ms:msa",
        "mt:mlt",
        "my:mya",
        "na:nau",
        "nb:nob",
        "nd:nde",
        "ne:nep",
        "ng:ndo",
        "nl:nld",
        "nn:nno",
        "no:nor",
        "nr:nbl",
        "nv:nav",
        "ny:nya",
        "oc:oci",
        "oj:oji",
        "om:orm",
        "or:ori",
        "os:oss",
        "pa:pan",
        "pi:pli",
        "pl:pol",
        "ps:pus",
        "pt:por",
        "qu:que",
        "rm:roh",
        "rn:run",
        "ro:ron",
        "ru:rus",
        "rw:kin",
        "sa:san",
        "sc:srd",
        "sd:snd",
        "se:sme",
        "sg:sag",
        "si:sin",
        "sk:slk",
        "sl:slv",
        "sm:smo",
        "sn:sna",
        "so:som",
        "sq:sqi",
        "sr:srp",
        "ss:ssw",
        "st:sot",
        "su:sun",
        "sv:swe",
        "sw:swa",
        "ta:tam",
        "te:tel",
        "tg:tgk",
        "th:tha",
        "ti:tir",
        "tk:tuk",
        "tl:tgl",
        "tn:tsn",
        "to:ton",
        "tr:tur",
        "ts:tso",
        "tt:tat",
        "tw:twi",
        "ty:tah",
        "ug:uig",
        "uk:ukr",
        "ur:urd",
        "uz:uzb",
        "ve:ven",
        "vi:vie",
        "vo:vol",
        "wa:wln",
        "wo:wol",
        "xh:xho",
        "yi:yid",
        "yo:yor",
        "za:zha",
        "zh:zho",
        "zu:zul",
    ]
)


def _iso639_2(language: str | None) -> str | None:
    """Map a BCP 47 tag (``"en-GB"``) to an ISO 639-2 code (``"eng"``), or None."""
    if not language:
        return None
    primary = language.strip().replace("_", "-").split("-")[0].lower()
    if len(primary) == 3 and primary.isascii() and primary.isalpha():
        return primary
    return _ISO639_1_TO_2.get(primary)


# --------------------------------------------------------------------------
# Cover


_RASTER_MAGIC = (
    # (prefix, offset, format)
    (b"\xff\xd8\xff", 0, "jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "png"),
    (b"GIF87a", 0, "gif"),
    (b"GIF89a", 0, "gif"),
    (b"WEBP", 8, "webp"),  # after b"RIFF" + size
    (b"BM", 0, "bmp"),
    (b"II*\x00", 0, "tiff"),
    (b"MM\x00*", 0, "tiff"),
)

_DATA_URI = re.compile(rb"data:image/[a-zA-Z0-9.+-]*\s*;\s*base64\s*,([^\"'<>()]+)")
_XML_CHAR_REF = re.compile(rb"&#(?:x[0-9a-fA-F]+|[0-9]+);")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")  # padding is stripped, then restored


def _raster_format(data: bytes) -> str | None:
    """Recognise a raster image by its magic bytes."""
    for prefix, offset, fmt in _RASTER_MAGIC:
        if data[offset : offset + len(prefix)] == prefix:
            if fmt == "webp" and data[:4] != b"RIFF":
                continue
            return fmt
    return None


def _svg_text(data: bytes, media_type: str | None) -> bytes | None:
    """Return the SVG document in *data* (gunzipping ``.svgz``), or None."""
    if data[:2] == b"\x1f\x8b":
        if media_type != "image/svg+xml":
            return None
        try:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            data = inflater.decompress(data, _MAX_SVG_BYTES)
        except zlib.error:
            return None
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if media_type == "image/svg+xml" or (head.startswith(b"<") and b"<svg" in head):
        return data if b"<svg" in data[:65536].lower() else None
    return None


def _svg_rasters(svg: bytes) -> list[bytes]:
    """Decode the base64 ``data:image/...`` URIs embedded in an SVG, largest first."""
    found = []
    for match in _DATA_URI.finditer(svg):
        payload = _NOT_BASE64.sub(b"", _XML_CHAR_REF.sub(b"", match.group(1)))
        if len(payload) % 4 == 1:  # cannot be valid: drop the stray character
            payload = payload[:-1]
        payload += b"=" * (-len(payload) % 4)
        try:
            image = base64.b64decode(payload)
        except (binascii.Error, ValueError):
            continue
        if image:
            found.append(image)
    return sorted(found, key=len, reverse=True)


def prepare_cover(cover: bytes, media_type: str | None, workdir: Path) -> Path | None:
    """Turn the book's cover into a JPEG or PNG file ffmpeg can attach.

    JPEG and PNG are kept as they are (after checking that ffmpeg can decode
    them); GIF, WebP, BMP and TIFF are converted to PNG; an SVG contributes
    its largest embedded raster image.  Anything else gives ``None``.
    """
    fmt = _raster_format(cover)
    if fmt is None:
        svg = _svg_text(cover, media_type)
        if svg is None:
            log.warning(
                "cover (%s, %d bytes) is not a recognised image; writing the "
                "audiobook without a cover",
                media_type or "unknown type",
                len(cover),
            )
            return None
        for image in _svg_rasters(svg):
            if _raster_format(image) is not None:
                path = prepare_cover(image, None, workdir)
                if path is not None:
                    return path
        log.warning(
            "SVG cover holds no usable embedded raster image; writing the audiobook without a cover"
        )
        return None

    source = workdir / f"cover-in.{fmt}"
    source.write_bytes(cover)
    demuxer = ["-f", f"{fmt}_pipe", "-i", str(source)]
    if fmt in ("jpeg", "png"):
        result = _run_ffmpeg([*demuxer, "-frames:v", "1", "-f", "null", "-"])
        if result.returncode == 0:
            return source
    else:
        target = workdir / "cover.png"
        result = _run_ffmpeg(
            [
                *demuxer,
                "-frames:v",
                "1",
                "-c:v",
                "png",
                "-update",
                "1",
                "-f",
                "image2",
                "-y",
                str(target),
            ]
        )
        if result.returncode == 0 and target.exists() and target.stat().st_size:
            return target
    message = result.stderr.decode("utf-8", "replace").strip().splitlines()
    log.warning(
        "cover image (%s) cannot be decoded (%s); writing the audiobook without a cover",
        fmt,
        message[-1] if message else f"ffmpeg exit status {result.returncode}",
    )
    return None


# --------------------------------------------------------------------------
# Encoding


def encode_m4b(
    pcm: Iterable[bytes],
    *,
    sample_rate: int,
    chapters: Sequence[ChapterMark] | Callable[[], Sequence[ChapterMark]],
    tags: BookTags,
    out_path: str | os.PathLike,
    cover: bytes | None = None,
    cover_media_type: str | None = None,
    bitrate: str = "64k",
    aac_coder: str | None = None,
    keep_audio: str | os.PathLike | None = None,
) -> float:
    """Encode a stream of PCM blocks into a chaptered, tagged M4B file.

    The blocks are piped into ffmpeg as they come, so the whole book is never
    held in memory.  ffmpeg encodes AAC into an MP4 container whose major
    brand is ``"M4B "``, with the moov box at the front (``faststart``).

    Parameters
    ----------
    pcm : iterable of bytes-like
        Mono, signed 16-bit little-endian PCM, in blocks of any size
        (``bytes``, ``bytearray``, ``memoryview`` or C-contiguous ``int16``
        NumPy arrays).  A block may end in the middle of a sample as long as
        the stream as a whole holds whole samples.
    sample_rate : int
        Samples per second of the stream.
    chapters : sequence of ChapterMark, or callable returning one
        Chapter marks in samples, in order and not overlapping.  Marks with
        no audio are left out (with a warning).  May be empty.  When a
        callable is given, it is called once the stream is exhausted (so
        chapter times may be computed while the audio is produced).  Either
        way the audio is encoded as it arrives (by the merge task's encoder,
        :class:`~ebook2audio_dask.audio.formats.PartEncoder`), then remuxed
        with the chapters, tags and cover without re-encoding (a fast second
        pass over the file).
    tags : BookTags
        Title, authors, language and the other tags.
    out_path : str or os.PathLike
        Local path of the file to write (overwritten if it exists).
    cover : bytes, optional
        The cover image.  JPEG and PNG are attached unchanged; GIF, WebP, BMP
        and TIFF are converted to PNG; for an SVG the largest embedded raster
        image is used.  A cover that cannot be used is left out with a
        logged warning; it never fails the book.
    cover_media_type : str, optional
        The cover's MIME type; only needed to recognise compressed SVG, as
        image formats are recognised by their content.
    aac_coder : str, optional
        ffmpeg's AAC coder: ``"twoloop"`` (ffmpeg's default, best quality) or
        ``"fast"`` (about 5x faster, slightly lower quality); ``None`` keeps
        ffmpeg's default.
    bitrate : str
        AAC bit rate in ffmpeg's notation, ``"64k"`` by default.
    keep_audio : str or os.PathLike, optional
        Also keep the encoded audio of pass 1 (AAC in MP4, no chapters or
        tags) at this path, so a later
        :func:`remux_m4b` can make the book again without encoding.

    Returns
    -------
    float
        Duration of the audio in seconds (samples written / *sample_rate*).

    Raises
    ------
    ValueError
        If the arguments are invalid, the stream is empty or holds a partial
        sample, or the chapter marks reach past the end of the audio.
    RuntimeError
        If ffmpeg is missing or fails; the message ends with ffmpeg's own.
    Exception
        Whatever the *pcm* iterator raises is propagated.

    Notes
    -----
    On any error the ffmpeg process is killed and *out_path* is removed.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise ValueError(f"sample rate must be an integer, got {sample_rate!r}")
    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, got {sample_rate}")
    sample_rate = int(sample_rate)
    from .formats import OutputSpec, PartEncoder, finish_file  # formats builds on this module

    two_pass = callable(chapters)
    marks = None if two_pass else _check_chapters(chapters)  # bad marks fail before any encoding
    out_path = Path(out_path)
    spec = OutputSpec(format="m4b", bitrate=str(bitrate), aac_coder=aac_coder)
    with tempfile.TemporaryDirectory(prefix="ebook2audio-m4b-", dir=out_path.parent) as tmp:
        workdir = Path(tmp)
        # Pass 1 (the merge task's own encoder): the stream as it comes, AAC in MP4, no tags.
        audio_path = workdir / "audio.m4a"
        encoder = PartEncoder(spec, sample_rate, audio_path)
        try:
            for block in pcm:
                encoder.write(block)
            n_samples = encoder.close()
        except BaseException:
            encoder.kill()
            raise
        if two_pass:
            marks = _check_chapters(chapters())
        if marks and marks[-1].end_sample > n_samples:
            raise ValueError(
                f"the chapters end at sample {marks[-1].end_sample} but the audio has only {n_samples} samples"
            )
        # Pass 2: copy the AAC stream, adding chapters, tags and cover (fast).
        cover_path = prepare_cover(bytes(cover), cover_media_type, workdir) if cover else None
        finish_file(spec, audio_path, out_path, sample_rate=sample_rate, chapters=marks, tags=tags,
                    cover_path=cover_path, workdir=workdir)  # fmt: skip
        if keep_audio is not None:
            shutil.copyfile(audio_path, keep_audio)

    log.debug("wrote %s: %d samples at %d Hz", out_path, n_samples, sample_rate)
    return n_samples / sample_rate


def _remux(
    head, audio_path, tags, marks, sample_rate, cover_path, workdir, out_path, stderr
) -> None:
    """ffmpeg pass that copies the AAC stream of *audio_path* and adds chapters, tags and cover."""
    cmd = head + ["-i", str(audio_path)]
    cmd += _mux_args(tags, marks, sample_rate, cover_path, workdir) + ["-c:a", "copy"]
    cmd += _container_args(tags, out_path)
    try:
        done = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"ffmpeg failed (exit status {done.returncode}) writing {out_path.name}: {_stderr_tail(stderr)}"
            )
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise


def remux_m4b(
    audio_path: str | os.PathLike,
    *,
    sample_rate: int,
    n_samples: int,
    chapters: Sequence[ChapterMark],
    tags: BookTags,
    out_path: str | os.PathLike,
    cover: bytes | None = None,
    cover_media_type: str | None = None,
) -> float:
    """Make an M4B from audio already encoded by :func:`encode_m4b` (``keep_audio``).

    Only the fast second pass runs: the AAC stream is copied, chapters, tags
    and cover are added.  *n_samples* is the audio's length (for checking the
    chapter marks).  Returns the duration in seconds.
    """
    marks = _check_chapters(chapters)
    if marks and marks[-1].end_sample > n_samples:
        raise ValueError(
            f"the chapters end at sample {marks[-1].end_sample} but the audio has only {n_samples}"
        )
    out_path = Path(out_path)
    head = [ffmpeg_exe(), "-hide_banner", "-nostats", "-nostdin", "-loglevel", "error", "-y"]
    with tempfile.TemporaryDirectory(prefix="ebook2audio-m4b-", dir=Path(out_path).parent) as tmp:
        workdir = Path(tmp)
        cover_path = prepare_cover(bytes(cover), cover_media_type, workdir) if cover else None
        with tempfile.TemporaryFile(dir=tmp) as stderr:
            _remux(
                head,
                Path(audio_path),
                tags,
                marks,
                int(sample_rate),
                cover_path,
                workdir,
                out_path,
                stderr,
            )
    return n_samples / sample_rate


def _mux_args(
    tags: BookTags,
    chapters: Sequence[ChapterMark],
    sample_rate: int,
    cover_path: Path | None,
    workdir: Path,
) -> list[str]:
    """Inputs 1 (chapters) and 2 (cover), the maps and the tags, after audio input 0."""
    meta_path = workdir / "metadata.txt"
    meta_path.write_text(_ffmetadata(chapters, sample_rate), encoding="utf-8")
    args = ["-f", "ffmetadata", "-i", str(meta_path)]
    if cover_path is not None:
        args += ["-f", f"{cover_path.suffix[1:]}_pipe", "-i", str(cover_path)]
    args += ["-map", "0:a", "-map_metadata", "1", "-map_chapters", "1", *_tag_args(tags)]
    if cover_path is not None:
        args += ["-map", "2:v", "-c:v", "copy", "-disposition:v:0", "attached_pic"]
    return args


def _container_args(tags: BookTags, out_path: Path) -> list[str]:
    """Track language, the "M4B " brand, faststart and the output path."""
    args: list[str] = []
    language = _iso639_2(tags.language)
    if language:
        args += ["-metadata:s:a:0", f"language={language}"]
    return args + ["-brand", "M4B ", "-movflags", "+faststart", "-f", "mp4", str(out_path)]


# --------------------------------------------------------------------------
# Helpers


def silence(n_samples: int) -> bytes:
    """Return *n_samples* of silence as int16 PCM bytes.

    Parameters
    ----------
    n_samples : int
        Number of samples (not bytes).

    Returns
    -------
    bytes
        ``2 * n_samples`` zero bytes.
    """
    if n_samples < 0:
        raise ValueError(f"cannot make {n_samples} samples of silence")
    return bytes(2 * int(n_samples))


def decode_to_pcm(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Decode an audio file to mono int16 samples with ffmpeg.

    Meant for tests and checks: the whole file is decoded into memory.

    Parameters
    ----------
    path : str or os.PathLike
        The audio file (any format ffmpeg reads).
    sample_rate : int
        Rate to resample to.

    Returns
    -------
    numpy.ndarray
        The first audio stream, downmixed to mono, as ``int16`` samples.

    Raises
    ------
    RuntimeError
        If ffmpeg cannot decode the file.
    """
    result = _run_ffmpeg(
        ["-i", str(path), "-map", "0:a:0", "-f", "s16le", "-acodec", "pcm_s16le",
         "-ac", "1", "-ar", str(int(sample_rate)), "pipe:1"]
    )  # fmt: skip
    if result.returncode != 0:
        lines = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RuntimeError(
            f"ffmpeg cannot decode {path}: {lines[-1] if lines else result.returncode}"
        )
    return np.frombuffer(result.stdout, dtype="<i2").astype(np.int16)
