"""The ``audiobookshelf`` output layout: one folder per book, as Audiobookshelf's scanner reads it.

Audiobookshelf (https://www.audiobookshelf.org) groups a library by folder:
``<Author>/<Title>/`` holds one book's audio files (several files are its
tracks, in name order), and the scanner reads beside them:

* ``metadata.json`` -- its own metadata file (the flat form it writes since
  v2.5: ``title``, ``authors``, ``narrators``, ``language``, ``description``,
  ``chapters`` as ``{id, start, end, title}`` in seconds of the whole book,
  ``tags``, ``genres``, ``series``...), which takes priority over the other
  sources with the scanner's default settings;
* ``reader.txt`` -- the narrator (several split at commas);
* ``desc.txt`` -- the description;
* ``cover.jpg`` -- the cover (an image named ``cover`` comes first).

An author folder may name several authors, ``A & B``; a book with no author
is a title folder at the library's root.  :func:`place_book` chooses the
folder and the names of a book's files; :func:`sidecar_files` makes the files
above from the book's report, its cover and (:func:`epub_description`) an
EPUB's ``dc:description`` (``docs/outputs.md``, "Audiobookshelf layout").

Names follow :mod:`~ebook2audio_dask.storage.names`: NFC, no ``/ \\ : * ? "
< > |``, control or bidirectional-control characters, no leading or
trailing dots or spaces (so never ``.`` or ``..``), no Windows device names
(``CON``, ``NUL``, ``COM1``...), at most 255 bytes of UTF-8 per folder
(shortened with a hash, :func:`~ebook2audio_dask.storage.names.fit_name`).
"""

from __future__ import annotations

import html
import json
import posixpath
import re
import tempfile
import unicodedata
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..logs import get_logger
from ..safexml import local_name, safe_xml
from .fs import join, open_url
from .names import NAME_MAX, book_stem, fit_name, safe_title

__all__ = [
    "LAYOUTS",
    "SIDECARS",
    "BookPlace",
    "author_folder",
    "cover_jpeg",
    "epub_description",
    "folder_name",
    "metadata_json",
    "narrator",
    "place_book",
    "safe_line",
    "sidecar_files",
]

#: The values of ``--layout``.
LAYOUTS = ("flat", "audiobookshelf")
#: The files written beside a book's audio in the audiobookshelf layout.
SIDECARS = ("metadata.json", "reader.txt", "desc.txt", "cover.jpg")

#: Characters no name keeps: bidirectional controls, line and paragraph separators.
_INVISIBLE = re.compile(r"[\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")
#: Names Windows gives to devices, with or without an extension.
_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{p}{n}" for p in ("COM", "LPT") for n in (*"0123456789", "¹", "²", "³")]
)
logger = get_logger(__name__)

#: Largest package document (or container.xml) read for a description, in bytes.
_XML_MAX = 4 * 1024 * 1024
#: Longest description kept, in characters.
_DESCRIPTION_MAX = 20_000
#: Separators of several narrators in reader.txt (the scanner splits there).
_NARRATOR_SEPARATORS = re.compile(r"[,;]+")


def safe_line(text: str) -> str:
    """*text* on one line: NFC, control characters become spaces, bidirectional controls go,
    runs of white space become one space."""
    text = _INVISIBLE.sub("", unicodedata.normalize("NFC", text or ""))
    return " ".join("".join(" " if unicodedata.category(c) == "Cc" else c for c in text).split())


def folder_name(text: str, fallback: str = "book") -> str:
    """*text* as one folder name: safe on every file system, at most 255 bytes.

    :func:`safe_line`, then ``/ \\ : * ? " < > |`` become spaces and leading
    and trailing spaces and dots go (:func:`~.names.safe_title`: ``..``
    leaves nothing); a Windows device name (``CON``, ``com1.txt``) gets ``_``
    after its device part; a name longer than 255 bytes is shortened with a
    hash (:func:`~.names.fit_name`).  *fallback*, made safe the same way
    (else ``book``), when nothing is left.
    """
    name = safe_title(safe_line(text)) or safe_title(safe_line(fallback)) or "book"
    device, dot, rest = name.partition(".")
    if device.rstrip(" ").upper() in _RESERVED:
        name = device.rstrip(" ") + "_" + dot + rest
    return fit_name(name, limit=NAME_MAX)


def author_folder(authors: Sequence[str]) -> str | None:
    """The author folder of a book by *authors*: their names joined by `` & ``, made safe.

    Audiobookshelf reads ``A & B`` (and ``Last, First``) as its authors.
    None when the book names no author (or none that is left once made safe):
    its title folder then sits at the library's root, which the scanner reads
    as a book without author.
    """
    names = [safe_title(safe_line(a)) for a in authors]
    names = [n for n in names if n]
    return folder_name(" & ".join(names)) if names else None


@dataclass(frozen=True)
class BookPlace:
    """Where a book's files go in the audiobookshelf layout.

    Attributes
    ----------
    folder : str
        The book's folder, ``<output>/<Author>/<Title>`` (``<output>/<Title>``
        without author): its audio, subtitles, report, read-along EPUB and
        sidecar files.
    name : str
        What the book's file names start with: the title folder's name,
        shortened to 223 bytes (room for every suffix, as
        :func:`~.names.book_stem`).
    output : str
        The audio URL the merge is given; its files are named after it.  By
        chapters the merge writes ``<dirname>/<stem>/<NN> - <title>.<ext>``,
        so this is ``<output>/<Author>/<Title><ext>``: the chapter files land
        in the title folder itself (a folder below it would be another book to
        the scanner).
    """

    folder: str
    name: str
    output: str

    def file(self, suffix: str) -> str:
        """The URL of the book's file ``<name><suffix>`` in its folder (``.report.json``...)."""
        return join(self.folder, fit_name(self.name, suffix))


def place_book(
    output: str, title: str, authors: Sequence[str], stem: str, ext: str, split: str | None
) -> BookPlace:
    """The folder and file names of a book in the audiobookshelf layout.

    Parameters
    ----------
    output : str
        The output folder (the library's root).
    title, authors : str, sequence of str
        The book's; the input's *stem* stands in for an empty title.
    stem : str
        The input's file name without extension.
    ext : str
        The audio extension (``.m4b``).
    split : str or None
        The output's split: ``"chapters"``, ``"hours"`` or None.

    Returns
    -------
    BookPlace
    """
    title_folder = folder_name(title, fallback=stem)
    author = author_folder(authors)
    parent = join(output, author) if author else output.rstrip("/")
    folder = join(parent, title_folder)
    name = book_stem(title_folder)
    if split == "chapters":
        audio = join(parent, title_folder + ext)  # never written: names the chapter files
    else:
        audio = join(folder, fit_name(name, ext))
    return BookPlace(folder, name, audio)


def narrator(engine: str, voice: str | None = None) -> str:
    """The narrator's name for Audiobookshelf: ``<engine> (<voice>)``.

    A voice given as a file (a reference recording) is named by its file
    name, never its path; commas and semicolons (where the scanner splits
    several narrators) become spaces.
    """
    voice = (voice or "").strip()
    if "/" in voice or "\\" in voice:
        voice = posixpath.basename(voice.replace("\\", "/").rstrip("/"))
    text = f"{engine} ({voice})" if voice else engine
    return " ".join(_NARRATOR_SEPARATORS.sub(" ", safe_line(text)).split())


def metadata_json(report: dict[str, Any], *, description: str | None = None) -> bytes:
    """``metadata.json`` in Audiobookshelf's own form, from a book's report.

    Title, authors, language, the narrator (:func:`narrator`: engine and
    voice), the chapters (``id``, ``start``, ``end``, ``title``; seconds of
    the whole book, its files one after the other) and *description*; the
    fields the book does not give are null or empty, as Audiobookshelf writes
    them.  UTF-8, indented.
    """
    chapters = [
        {
            "id": i,
            "start": round(float(ch["start_s"]), 3),
            "end": round(float(ch["end_s"]), 3),
            "title": safe_line(ch.get("title") or "") or f"Chapter {i + 1}",
        }
        for i, ch in enumerate(report.get("chapters") or ())
    ]
    data = {
        "tags": [],
        "chapters": chapters,
        "title": safe_line(report.get("title") or ""),
        "subtitle": None,
        "authors": [safe_line(a) for a in report.get("authors") or () if safe_line(a)],
        "narrators": [narrator(report.get("engine") or "ebook2audio", report.get("voice"))],
        "series": [],
        "genres": [],
        "publishedYear": None,
        "publishedDate": None,
        "publisher": None,
        "description": description or None,
        "isbn": None,
        "asin": None,
        "language": report.get("language") or None,
        "explicit": False,
        "abridged": False,
    }
    return (json.dumps(data, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def cover_jpeg(data: bytes, suffix: str) -> bytes | None:
    """The cover as JPEG bytes: a JPEG as it is, another image converted with ffmpeg.

    None when ffmpeg cannot convert it (the book then has no ``cover.jpg``;
    Audiobookshelf falls back on the cover embedded in the audio).
    """
    if data[:3] == b"\xff\xd8\xff":
        return data
    from ..audio.ffmpeg import run_ffmpeg

    with tempfile.TemporaryDirectory(prefix="ebook2audio-abs-cover-") as tmp:
        src = Path(tmp) / f"cover{suffix or '.png'}"
        dst = Path(tmp) / "cover.jpg"
        src.write_bytes(data)
        # a transparent PNG on white, not on black
        done = run_ffmpeg(
            ["-i", str(src), "-filter_complex",
             "color=white,format=rgb24[bg];[bg][0:v]scale2ref[bg][img];"
             "[bg][img]overlay=shortest=1,format=yuvj420p",
             "-frames:v", "1", "-q:v", "2", "-y", str(dst)]
        )  # fmt: skip
        if done.returncode != 0 or not dst.is_file() or dst.stat().st_size == 0:
            return None
        return dst.read_bytes()


def _member(book: zipfile.ZipFile, name: str) -> bytes:
    """A small member of an EPUB (never more than ``_XML_MAX`` bytes, whatever it claims)."""
    info = book.getinfo(name)
    if info.file_size > _XML_MAX:
        raise ValueError(f"{name}: {info.file_size} bytes")
    with book.open(info) as f:
        data = f.read(_XML_MAX + 1)
    if len(data) > _XML_MAX:
        raise ValueError(f"{name}: over {_XML_MAX} bytes")
    return data


def _plain(text: str) -> str:
    """A description as plain text: HTML markup (often escaped in ``dc:description``)
    removed, paragraphs kept, each on one line."""
    text = re.sub(r"(?i)<\s*(br|/p|/div|/li|/h[1-6])\b[^>]*>", "\n", text)
    text = html.unescape(re.sub(r"<[^>]*>", " ", text))
    lines = (safe_line(line) for line in text.splitlines())
    return "\n".join(line for line in lines if line)[:_DESCRIPTION_MAX].strip()


def epub_description(url: str, storage_options: dict[str, Any] | None = None) -> str | None:
    """The ``dc:description`` of the EPUB at *url* as plain text, else None.

    Only ``META-INF/container.xml`` and the package document are read (each
    at most 4 MiB, parsed without entities or network access).  None for a
    book that is not an EPUB, has no description or cannot be read: a
    description is never worth failing a book; a reason is logged.
    """
    if not url.lower().rstrip("/").endswith(".epub"):
        return None
    try:
        with open_url(url, "rb", storage_options) as f, zipfile.ZipFile(f) as book:
            container = safe_xml(_member(book, "META-INF/container.xml"), recover=True)
            paths = [
                el.get("full-path", "").strip().lstrip("/")
                for el in container.iter()
                if isinstance(el.tag, str) and local_name(el.tag) == "rootfile"
            ]
            if not paths or not paths[0]:
                return None
            package = safe_xml(_member(book, posixpath.normpath(paths[0])), recover=True)
            for el in package.iter():
                if isinstance(el.tag, str) and local_name(el.tag) == "description":
                    text = _plain("".join(el.itertext()))
                    if text:
                        return text
    except Exception as exc:  # noqa: BLE001 - no desc.txt, the book is fine
        logger.info("%s: no description read: %s", url, exc)
    return None


def sidecar_files(
    report: dict[str, Any],
    *,
    cover: bytes | None = None,
    cover_suffix: str = "",
    description: str | None = None,
) -> list[tuple[str, bytes]]:
    """The files written beside a book's audio: ``(file name, bytes)``.

    ``metadata.json`` and ``reader.txt`` always; ``desc.txt`` when there is a
    *description*; ``cover.jpg`` when the book has a *cover* (JPEG or an
    image ffmpeg converts, :func:`cover_jpeg`).
    """
    meta = metadata_json(report, description=description)
    files = [("metadata.json", meta)]
    files.append(("reader.txt", (json.loads(meta)["narrators"][0] + "\n").encode("utf-8")))
    if description and description.strip():
        files.append(("desc.txt", (description.strip() + "\n").encode("utf-8")))
    if cover:
        jpeg = cover_jpeg(cover, cover_suffix)
        if jpeg:
            files.append(("cover.jpg", jpeg))
    return files
