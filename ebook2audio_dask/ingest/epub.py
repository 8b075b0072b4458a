"""EPUB 2 / EPUB 3 reader.

The archive is opened with :mod:`zipfile` on a seekable file object (the
book opened through fsspec), so only its directory and the members the
reader needs are read, never the whole file; the
container, package document (OPF) and NCX are read with a hardened lxml
parser (no entity expansion, no network), content documents and the EPUB 3
navigation document with BeautifulSoup/lxml (see :mod:`._xhtml`).

``ebooklib.epub.read_epub`` is not used for reading: it raises ``KeyError``
as soon as one manifest item is missing from the archive (a missing cover
must not fail the book), and it does not expose where TOC anchors fall
inside a file, which is what chapter splitting needs.

Chapters come from the TOC: the nav document (EPUB 3) or the NCX (EPUB 2).
Every TOC target — a file, or an anchor in the middle of one — is mapped to
a position in the text of the whole spine, so a chapter may start mid-file
and run across several files, up to the next chapter's start.
"""

from __future__ import annotations

import bisect
import io
import mimetypes
import posixpath
import re
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import BinaryIO
from urllib.parse import unquote, urldefrag

from dask.utils import format_bytes
from lxml import etree

from ..errors import BookError
from ..logs import get_logger
from ..model import Cover, Pronunciation
from ..pls import parse_pls
from ..safexml import local_name, safe_xml
from ._sections import (
    BACK_TYPES,
    FRONT_TYPES,
    BookContent,
    Section,
    heading_title,
    mark_gutenberg,
)
from ._text import clean, fold, is_bare_ordinal, matter_group
from ._xhtml import Block, Doc, read_document
from .limits import size_limit

log = get_logger(__name__)

__all__ = ["MAX_DIRECTORY_BYTES", "ZIP_MAGIC", "Archive", "read_epub"]

#: Largest archive directory read (its entries are all held in memory while
#: the book is read: about 80,000 members with the usual name lengths; real
#: EPUBs list a few hundred at most).
MAX_DIRECTORY_BYTES = 8 * 1024 * 1024
#: How a zip archive starts (a local file header, an empty archive's end record,
#: a spanned archive's marker): EPUB, DOCX, ODT and zipped FB2 all do.
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_READ_BLOCK = 1024 * 1024
_CONTENT_TYPES = frozenset(("application/xhtml+xml", "text/html", "application/xml", "text/xml"))
_CONTENT_EXTS = (".xhtml", ".html", ".htm", ".xml")
_NCX_TYPE = "application/x-dtbncx+xml"

# Landmark (EPUB 3) and guide (EPUB 2) types.
_LANDMARK_FRONT = frozenset(
    [
        "cover",
        "titlepage",
        "title-page",
        "toc",
        "copyright-page",
        "dedication",
        "epigraph",
        "foreword",
        "preface",
        "acknowledgements",
        "acknowledgments",
        "loi",
        "lot",
        "imprint",
        "frontmatter",
    ]
)
_LANDMARK_BACK = frozenset(
    ["colophon", "index", "glossary", "bibliography", "notes", "backmatter", "appendix"]
)
_LANDMARK_BODY = frozenset(("bodymatter", "text", "start"))

_FILE_MATTER_RE = re.compile(
    r"(?:^|[-_.\s])(cover|title-?page|half-?title(?:page)?|imprint|(?:un)?copyright|colophon|toc"
    r"|contents|dedication|epigraph|licen[cs]e|acknowledge?ments?|frontmatter|backmatter"
    r"|loi|lot|endnotes|footnotes|glossary|bibliography|about-?the-?author|also-?by)(?:$|[-_.\s\d])"
)
_FILE_BACK = frozenset(
    [
        "colophon",
        "uncopyright",
        "licence",
        "license",
        "backmatter",
        "endnotes",
        "footnotes",
        "glossary",
        "bibliography",
    ]
)
_GENERIC_LABEL_RE = re.compile(
    r"^(?:start|begin|start reading|begin reading|beginning|text|main text|content|body"
    r"|commencer la lecture|debut|lire|beginnen|beginnen met lezen|lesen|anfang|inicio|comenzar)$"
)


@dataclass
class _Entry:
    label: str
    path: str | None  # absolute zip path of the target document
    frag: str | None
    href: str  # as written relative to the OPF directory (for Chapter.source)
    children: list[_Entry] = field(default_factory=list)
    pos: int | None = None
    figure: bool = False
    title: str = ""
    own_end: int | None = None
    part: bool = False  # a "Part One" entry whose chapters were promoted


class Archive:
    """Safe access to the members of the EPUB zip.

    The archive is read from a seekable file object (or bytes), never
    whole: only its directory (at most :data:`MAX_DIRECTORY_BYTES`) and the
    members the reader asks for.  Nothing is ever extracted to disk:
    members are inflated in memory, only when the reader needs them
    (package, navigation, spine documents, cover), in blocks.  A member
    whose size (declared in the central directory, and counted again while
    inflating) is over *max_member* bytes, or that would take the bytes
    inflated for the whole book over *max_total*, is refused: a zip bomb
    fails the book instead of the worker.
    """

    def __init__(
        self,
        data: bytes | BinaryIO,
        source: str,
        *,
        max_member: int | None = None,
        max_total: int | None = None,
    ):
        self.source = source
        self.max_member = size_limit("max-member-size") if max_member is None else max_member
        self.max_total = size_limit("max-total-size") if max_total is None else max_total
        self.inflated = 0  # bytes inflated so far, all members together
        fp = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
        try:
            self._check_directory(fp)
            self.zf = zipfile.ZipFile(fp)
            infos = self.zf.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
            raise BookError(source, "not a valid EPUB: unreadable zip archive") from exc
        self.names = {i.filename: i for i in infos if not i.is_dir()}
        self.folded = {n.casefold(): n for n in self.names}

    def _check_directory(self, fp) -> None:
        """Refuse an archive whose central directory is too big to hold in memory."""
        end_record = getattr(zipfile, "_EndRecData", None)
        if end_record is None:  # pragma: no cover - a future zipfile
            return
        record = end_record(fp)
        if record is None:
            return  # not a zip: ZipFile says so
        size = record[zipfile._ECD_SIZE]
        entries = record[zipfile._ECD_ENTRIES_TOTAL]
        if size > MAX_DIRECTORY_BYTES:
            raise BookError(
                self.source,
                f"not a valid EPUB: the archive's directory is {format_bytes(size)} "
                f"({entries} members), over the {format_bytes(MAX_DIRECTORY_BYTES)} an ebook may "
                "take",
            )

    def close(self) -> None:
        self.zf.close()

    def find(self, path: str) -> str | None:
        if path in self.names:
            return path
        return self.folded.get(path.casefold())

    def _too_large(self, name: str, size: int, *, declared: bool) -> BookError:
        """The error for member *name*, *size* bytes (as declared, or counted so far)."""
        if size > self.max_member:
            limit = format_bytes(self.max_member)
            what = (
                f"inflates to {format_bytes(size)}, which exceeds the {limit} limit"
                if declared
                else f"inflates to more than the {limit} limit"
            )
            return BookError(
                self.source,
                f"archive member {name} {what} per member (ingest.max-member-size); a zip bomb?",
            )
        return BookError(
            self.source,
            f"the archive members read inflate to more than the {format_bytes(self.max_total)} "
            f"limit per book (ingest.max-total-size), at {name}; a zip bomb?",
        )

    def read(self, path: str, *, required: str | None = None) -> bytes | None:
        """Bytes of member *path*; ``None`` when absent (or BookError if *required*)."""
        name = self.find(path)
        if name is None:
            if required:
                raise BookError(self.source, required)
            return None
        blocks: list[bytes] = []
        self._inflate(self.names[name], blocks.append)
        return b"".join(blocks)

    def check_all(self, max_members: int) -> None:
        """Inflate every member, keeping nothing, within the limits: refuse a zip bomb.

        What a tool that extracts the whole archive (Calibre converting a
        DOCX or an ODT) would write: at most *max_members* members, none
        over ``max_member`` bytes, all together at most ``max_total``.  The
        sizes the archive declares are checked first (nothing is inflated
        when they are over a limit); then every member is inflated in
        blocks, counted, and thrown away, so one that inflates to more than
        it declares is caught too.
        """
        infos = [i for i in self.zf.infolist() if not i.is_dir()]
        if len(infos) > max_members:
            raise BookError(
                self.source,
                f"the archive holds {len(infos)} members, over the {max_members} a book may "
                "have; a zip bomb?",
            )
        declared = sum(i.file_size for i in infos)
        if declared > self.max_total:
            raise BookError(
                self.source,
                f"the archive's members inflate to {format_bytes(declared)}, over the "
                f"{format_bytes(self.max_total)} limit per book (ingest.max-total-size); "
                "a zip bomb?",
            )
        for info in infos:
            self._inflate(info, lambda block: None)

    def _inflate(self, info: zipfile.ZipInfo, sink) -> None:
        """Inflate member *info* in blocks into *sink*, within the limits."""
        name = info.filename
        budget = min(self.max_member, self.max_total - self.inflated)
        if info.file_size > budget:
            raise self._too_large(name, info.file_size, declared=True)
        if info.flag_bits & 0x1:
            raise BookError(
                self.source, f"not a valid EPUB: archive member {name} is password-protected"
            )
        size = 0
        try:
            with self.zf.open(info) as fh:
                while True:
                    # never inflate more than the budget (+1 byte to notice going over),
                    # whatever the archive declares
                    block = fh.read(min(_READ_BLOCK, budget + 1 - size))
                    if not block:
                        break
                    size += len(block)
                    if size > budget:
                        raise self._too_large(name, size, declared=False)
                    sink(block)
        except BookError:
            raise
        except (
            zipfile.BadZipFile,
            zlib.error,
            EOFError,
            OSError,
            NotImplementedError,
            RuntimeError,
            ValueError,
        ) as exc:
            raise BookError(
                self.source, f"not a valid EPUB: damaged archive member {name} ({exc})"
            ) from exc
        self.inflated += size


def _children(el, name: str):
    return [c for c in el if local_name(c.tag, lower=True) == name]


def _descendants(el, name: str):
    return [c for c in el.iter() if local_name(c.tag, lower=True) == name]


def _attr(el, name: str) -> str | None:
    """Attribute by local name, whatever its namespace (``opf:role``, ``role``)."""
    for key, value in el.attrib.items():
        if local_name(key, lower=True) == name:
            return value
    return None


def _parse_xml(data: bytes, source: str, what: str) -> etree._Element:
    try:
        return safe_xml(data)
    except etree.XMLSyntaxError:
        try:
            return safe_xml(data, recover=True)
        except etree.XMLSyntaxError as exc:
            raise BookError(source, f"not a valid EPUB: {what} is not valid XML") from exc


def _join(base_dir: str, href: str) -> tuple[str, str | None]:
    """Resolve *href* against *base_dir*; return (zip path, fragment or None).

    The path is ``""`` for a link to a place in the same document (``#id``).
    A path starting with ``/`` is relative to the root of the archive.
    """
    url, frag = urldefrag(href.strip())
    path = posixpath.normpath(posixpath.join(base_dir, unquote(url))).lstrip("/") if url else ""
    if path.startswith("./"):
        path = path[2:]
    return path, (unquote(frag) or None)


# --------------------------------------------------------------------------
# Package document
# --------------------------------------------------------------------------
def _metadata(opf: etree._Element) -> tuple[str | None, tuple[str, ...], str | None, dict]:
    meta_el = next(iter(_children(opf, "metadata")), None)
    if meta_el is None:
        return None, (), None, {}
    refines: dict[str, dict[str, list[str]]] = {}
    plain_meta: dict[str, str] = {}
    for m in meta_el.iter():
        if local_name(m.tag, lower=True) != "meta":
            continue
        ref = m.get("refines")
        if ref:
            prop = (m.get("property") or "").lower()
            refines.setdefault(ref.lstrip("#"), {}).setdefault(prop, []).append(clean(m.text or ""))
        elif m.get("name"):
            plain_meta[m.get("name").lower()] = m.get("content") or ""

    titles = [t for t in _descendants(meta_el, "title") if clean("".join(t.itertext()))]
    title = None
    for t in titles:
        if "main" in refines.get(t.get("id") or "", {}).get("title-type", []):
            title = clean("".join(t.itertext()))
            break
    if title is None and titles:
        title = clean("".join(titles[0].itertext()))

    creators = []
    for n, c in enumerate(_descendants(meta_el, "creator")):
        name = clean("".join(c.itertext()))
        if not name:
            continue
        ref = refines.get(c.get("id") or "", {})
        role = (_attr(c, "role") or (ref.get("role") or [""])[0] or "").strip().lower() or None
        try:
            seq = int((ref.get("display-seq") or [""])[0])
        except ValueError:
            seq = 10_000 + n
        creators.append((seq, n, name, role))
    creators.sort()
    authors = tuple(name for _, _, name, role in creators if role in (None, "aut"))
    if not authors:
        authors = tuple(name for _, _, name, _ in creators)

    language = None
    for lang in _descendants(meta_el, "language"):
        value = clean("".join(lang.itertext()))
        if value and value.lower() not in ("und", "zxx"):
            language = value
            break
    return title, authors, language, plain_meta


def _cover(archive: Archive, manifest: dict, plain_meta: dict) -> Cover | None:
    item = next((it for it in manifest.values() if "cover-image" in it["properties"]), None)
    if item is None and plain_meta.get("cover"):
        ref = plain_meta["cover"].strip()
        item = manifest.get(ref) or next(
            (it for it in manifest.values() if it["href"] == ref or it["path"].endswith("/" + ref)),
            None,
        )
    if item is None:
        return None
    media_type = (item["media_type"] or "").lower().strip()
    if media_type == "image/jpg":
        media_type = "image/jpeg"
    if not media_type.startswith("image/"):
        guessed = mimetypes.guess_type(item["path"])[0]
        if not (guessed and guessed.startswith("image/")):
            return None  # the "cover" is an XHTML page, not an image
        media_type = guessed
    try:
        data = archive.read(item["path"])
    except BookError as exc:
        log.warning(
            "%s: cover image unreadable (%s); continuing without cover", archive.source, exc.problem
        )
        return None
    if not data:
        log.warning(
            "%s: cover image %s missing from the archive; continuing without cover",
            archive.source,
            item["href"],
        )
        return None
    return Cover(data=data, media_type=media_type)


# --------------------------------------------------------------------------
# Navigation: nav document (EPUB 3) and NCX (EPUB 2)
# --------------------------------------------------------------------------
def _nav_types(tag) -> set[str]:
    value = tag.attrs.get("epub:type") or tag.attrs.get("type") or ""
    if isinstance(value, list):
        value = " ".join(value)
    return set(str(value).lower().split())


def _target(href: str | None, doc: str, opf_dir: str) -> tuple[str | None, str | None, str]:
    """A TOC link's archive path, fragment and path relative to the OPF folder.

    *doc* is the archive path of the document holding the link (nav or NCX):
    a link to ``#id`` is a place in that document.
    """
    if not href:
        return None, None, ""
    path, frag = _join(posixpath.dirname(doc), href)
    path = path or doc
    return path, frag, posixpath.relpath(path, opf_dir) if opf_dir else path


def _nav_entries(ol, doc: str, opf_dir: str) -> list[_Entry]:
    entries: list[_Entry] = []
    if ol is None:
        return entries
    for li in ol.find_all("li", recursive=False):
        label_el = None
        for child in li.children:
            if getattr(child, "name", None) in ("a", "span"):
                label_el = child
                break
        if label_el is None:
            label_el = li.find("a") or li.find("span")
        sub = li.find(["ol", "ul"], recursive=False)
        label = clean(label_el.get_text(" ")) if label_el is not None else ""
        href = label_el.get("href") if label_el is not None and label_el.name == "a" else None
        path, frag, rel = _target(href, doc, opf_dir)
        entries.append(_Entry(label, path, frag, rel, _nav_entries(sub, doc, opf_dir)))
    return entries


def _read_nav(
    soup, doc: str, opf_dir: str
) -> tuple[list[_Entry], list[tuple[str, str, str | None]]]:
    toc: list[_Entry] = []
    landmarks: list[tuple[str, str, str | None]] = []
    navs = soup.find_all("nav")
    toc_nav = next((n for n in navs if "toc" in _nav_types(n)), None)
    if toc_nav is None and navs:
        toc_nav = next((n for n in navs if not _nav_types(n) & {"landmarks", "page-list"}), None)
    if toc_nav is not None:
        toc = _nav_entries(toc_nav.find(["ol", "ul"]), doc, opf_dir)
    for nav in navs:
        if "landmarks" in _nav_types(nav):
            for a in nav.find_all("a", href=True):
                path, frag = _join(posixpath.dirname(doc), a["href"])
                path = path or doc
                for t in _nav_types(a):
                    landmarks.append((t.split(":")[-1], path, frag))
    return toc, landmarks


def _ncx_entries(parent, doc: str, opf_dir: str) -> list[_Entry]:
    entries = []
    for np_ in _children(parent, "navpoint"):
        label_el = next(iter(_children(np_, "navlabel")), None)
        label = clean(" ".join(label_el.itertext())) if label_el is not None else ""
        content = next(iter(_children(np_, "content")), None)
        src = content.get("src") if content is not None else None
        path, frag, rel = _target(src, doc, opf_dir)
        entries.append(_Entry(label, path, frag, rel, _ncx_entries(np_, doc, opf_dir)))
    return entries


# --------------------------------------------------------------------------
# Chapter mapping
# --------------------------------------------------------------------------
class _Spine:
    """The text of all spine documents as one stream of blocks."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.paths: list[str] = []
        self.hrefs: list[str] = []
        self.offsets: dict[str, int] = {}
        self.starts: list[int] = []  # offsets, in spine order (non-decreasing)
        self.docs: dict[str, Doc] = {}

    def add(self, path: str, href: str, doc: Doc) -> None:
        if path in self.offsets:
            return
        self.offsets[path] = len(self.blocks)
        self.starts.append(len(self.blocks))
        self.paths.append(path)
        self.hrefs.append(href)
        self.docs[path] = doc
        self.blocks.extend(doc.blocks)

    def position(self, path: str | None, frag: str | None) -> int | None:
        if path is None or path not in self.offsets:
            return None
        base = self.offsets[path]
        if frag:
            doc = self.docs[path]
            if frag in doc.anchors:
                return base + doc.anchors[frag]
            log.debug("anchor #%s not found in %s; using the start of the file", frag, path)
        return base

    def is_figure(self, path: str | None, frag: str | None) -> bool:
        return bool(path in self.docs and frag and frag in self.docs[path].figure_anchors)

    def doc_at(self, pos: int) -> str | None:
        """The last document starting at or before *pos* (bisect: books with
        thousands of spine documents and chapters stay linear)."""
        k = bisect.bisect_right(self.starts, pos)
        return self.paths[k - 1] if k else None


def _resolve(entries: list[_Entry], spine: _Spine) -> list[_Entry]:
    """Give entries positions; replace unlinked ones (no target) by their children."""
    out: list[_Entry] = []
    for e in entries:
        e.children = _resolve(e.children, spine)
        e.pos = spine.position(e.path, e.frag)
        e.figure = spine.is_figure(e.path, e.frag)
        e.title = e.label
        empty = e.path in spine.docs and not spine.docs[e.path].blocks
        if e.pos is None or e.figure or empty:
            # A grouping label (<span>), a target outside the spine, an
            # illustration caption or a page with no text (cover image):
            # not a chapter start of its own.
            out.extend(e.children)
        else:
            out.append(e)
    return out


def _only_headings(spine: _Spine, start: int, end: int) -> bool:
    return all(spine.blocks[k].level > 0 for k in range(start, min(end, len(spine.blocks))))


def _take_subtitle(e: _Entry, spine: _Spine) -> None:
    """Fold a first sub-entry that is just the chapter's subtitle into its title.

    "STAVE ONE." whose first sub-entry "MARLEY'S GHOST." points to the
    heading right after it becomes "STAVE ONE. MARLEY'S GHOST.".  Bare
    ordinals ("I", "Part 2") are real subdivisions and are left alone.
    """
    if not e.children:
        return
    c = e.children[0]
    if c.pos is None or c.pos < e.pos or is_bare_ordinal(c.label) or matter_group(c.label):
        return
    if c.pos < len(spine.blocks) and spine.blocks[c.pos].level == 0:
        return
    if not _only_headings(spine, e.pos, c.pos):
        return
    if fold(c.label) and fold(c.label) not in fold(e.title):
        e.title = clean(f"{e.title} {c.label}")
    e.children = c.children + e.children[1:]


def _looks_like_matter(e: _Entry, spine: _Spine) -> bool:
    if matter_group(e.label):
        return True
    marks = FRONT_TYPES | BACK_TYPES | {"pg", "frontmatter", "backmatter"}
    if e.pos is not None and e.pos < len(spine.blocks) and spine.blocks[e.pos].marks & marks:
        return True
    return bool(
        not e.frag
        and e.path
        and _FILE_MATTER_RE.search(posixpath.splitext(posixpath.basename(e.path))[0].lower())
    )


_PART_LABEL_RE = re.compile(r"^(?:part|book|volume|vol|livre|partie|tome|teil|buch|deel|boek)\b")


def _is_part(e: _Entry, spine: _Spine) -> bool:
    """A "Part One" / "Book II" entry made of chapters, with no text of its own."""
    if len(e.children) < 2:
        return False
    if not (_PART_LABEL_RE.match(fold(e.label)) or is_bare_ordinal(e.label)):
        return False
    return Section("", spine.blocks[e.pos : e.children[0].pos]).is_tiny()


def _choose_level(top: list[_Entry], spine: _Spine) -> list[_Entry]:
    """Pick the TOC level whose entries are the chapters.

    * When only one non-matter entry is left and it has sub-entries (a book
      with a single "Section IV" or "Georgia" entry), its sub-entries become
      the chapters; the parent keeps its own leading text.
    * When (nearly) every chapter-level entry is a part ("Part One",
      "Book II", "III") with two or more sub-entries and no text of its own,
      the sub-entries become the chapters.
    * Otherwise sub-entries (story parts, picture captions) are folded into
      their chapter.
    """
    level = list(top)
    for e in level:
        _take_subtitle(e, spine)
    for _ in range(8):
        cands = [e for e in level if not _looks_like_matter(e, spine)]
        expand: list[_Entry] = []
        if len(cands) == 1 and cands[0].children:
            expand = cands
        elif len(cands) >= 2:
            parts = [e for e in cands if _is_part(e, spine)]
            if len(parts) >= 0.8 * len(cands):
                expand = parts
        if not expand:
            break
        expand_ids = {id(e) for e in expand}
        new_level: list[_Entry] = []
        for e in level:
            new_level.append(e)
            if id(e) in expand_ids:
                e.part = len(expand) > 1 or _is_part(e, spine)
                kids, e.children = e.children, []
                for k in kids:
                    _take_subtitle(k, spine)
                new_level.extend(kids)
        level = new_level
    for e in level:
        firsts = [c.pos for c in e.children if c.pos is not None and c.pos > e.pos]
        e.own_end = min(firsts) if firsts else None
    return level


def _landmark_positions(landmarks, spine: _Spine) -> tuple[dict[int, str], int | None]:
    hints: dict[int, str] = {}
    body_start = None
    for kind, path, frag in landmarks:
        pos = spine.position(path, frag)
        if pos is None:
            continue
        if kind in _LANDMARK_BODY:
            body_start = pos if body_start is None else min(body_start, pos)
        elif kind in _LANDMARK_FRONT:
            hints.setdefault(pos, "front")
        elif kind in _LANDMARK_BACK:
            hints.setdefault(pos, "back")
    return hints, body_start


def _file_hint(path: str, doc: Doc) -> str | None:
    marks = doc.body_marks
    if marks & FRONT_TYPES or "frontmatter" in marks:
        return "front"
    if marks & BACK_TYPES or "backmatter" in marks:
        return "back"
    m = _FILE_MATTER_RE.search(posixpath.splitext(posixpath.basename(path))[0].lower())
    if m:
        word = m.group(1).replace("-", "")
        return "back" if word in _FILE_BACK or word.startswith("licen") else "front"
    return None


def _sections(entries: list[_Entry], spine: _Spine, landmarks) -> list[Section]:
    total = len(spine.blocks)
    hints, body_start = _landmark_positions(landmarks, spine)

    # position -> (title, source, own_end, from_toc)
    starts: dict[int, tuple[str, str, int | None, bool]] = {}
    part_starts: set[int] = set()
    for e in sorted(entries, key=lambda e: e.pos):
        if e.pos >= total or e.pos in starts:
            continue  # same position as the previous entry: a duplicate
        source = e.href + (f"#{e.frag}" if e.frag else "")
        starts[e.pos] = (e.title, source, e.own_end, True)
        if e.part:
            part_starts.add(e.pos)

    first_entry = min(starts) if starts else total
    for path, href in zip(spine.paths, spine.hrefs, strict=True):
        off = spine.offsets[path]
        if off >= total or off in starts:
            continue
        doc = spine.docs[path]
        if not doc.blocks:
            continue
        # Files before the first TOC entry, and unlisted files that say they
        # are front/back matter, start sections of their own; other unlisted
        # files continue the chapter before them.
        if off < first_entry or _file_hint(path, doc):
            title = heading_title(doc.blocks, 1) or doc.title
            starts[off] = (title, href, None, False)
    if not starts:
        return []

    positions = sorted(starts)
    sections: list[Section] = []
    for i, pos in enumerate(positions):
        end = positions[i + 1] if i + 1 < len(positions) else total
        title, source, own_end, from_toc = starts[pos]
        blocks = spine.blocks[pos:end]
        if not blocks:
            continue
        hint = hints.get(pos)
        path = spine.doc_at(pos)
        if hint is None and path is not None and spine.offsets[path] == pos:
            hint = _file_hint(path, spine.docs[path])
        if hint is None and pos in part_starts:
            hint = "part"
        if hint is None and body_start is not None and end <= body_start:
            hint = "before-body"  # a section holding the landmark's target is not before it
        if from_toc and _GENERIC_LABEL_RE.match(fold(title)):
            # "Start reading" / "Commencer la lecture": use the real heading.
            title = heading_title(blocks) or title
        sections.append(
            Section(title, blocks, source, (own_end - pos) if own_end is not None else None, hint)
        )
    return sections


_FONT_OBFUSCATION = frozenset(
    ("http://www.idpf.org/2008/embedding", "http://ns.adobe.com/pdf/enc#rc")
)


def _refuse_drm(archive: Archive, content_paths: set[str]) -> None:
    """Raise BookError when spine documents are encrypted (DRM).

    Font obfuscation (IDPF / Adobe algorithms) is not DRM and is ignored.
    """
    raw = archive.read("META-INF/encryption.xml")
    if not raw:
        return
    try:
        root = safe_xml(raw, recover=True)
    except etree.XMLSyntaxError:
        return
    for data in _descendants(root, "encrypteddata"):
        method = next(iter(_descendants(data, "encryptionmethod")), None)
        algorithm = (method.get("Algorithm") or "").strip().lower() if method is not None else ""
        if algorithm in _FONT_OBFUSCATION:
            continue
        for ref in _descendants(data, "cipherreference"):
            path, _ = _join("", ref.get("URI") or "")
            if path in content_paths:
                raise BookError(
                    archive.source, "encrypted (DRM-protected) EPUB: its text cannot be read"
                )


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------
def read_epub(
    data: bytes | BinaryIO,
    source: str,
    *,
    max_member_size: int | None = None,
    max_total_size: int | None = None,
) -> BookContent:
    """Read an EPUB 2 or EPUB 3 book.

    Parameters
    ----------
    data : bytes or binary file object
        The ``.epub`` file: its bytes, or (what :func:`read_book` passes) a
        seekable file object, from which only the archive's directory and
        the members needed are read.
    source : str
        Path or URL, for error messages.
    max_member_size : int, optional
        Largest archive member inflated, in bytes (default:
        ``ingest.max-member-size``, read now).
    max_total_size : int, optional
        Most bytes inflated from the archive, all members read together
        (default: ``ingest.max-total-size``).

    Returns
    -------
    BookContent
        Metadata, cover and the proposed sections (not yet classified).

    Raises
    ------
    BookError
        When the archive or its package document cannot be read.
    """
    archive = Archive(data, source, max_member=max_member_size, max_total=max_total_size)
    try:
        return _read_archive(archive, source)
    finally:
        archive.close()


def _unrepeated(refs: list[tuple[dict, bool]], source: str) -> list[tuple[dict, bool]]:
    """The spine without repeats: each document once, where the spine first lists it.

    An EPUB's spine never lists a document twice (EPUB 3.3 requires each
    ``itemref`` to name a different manifest item); a spine that does (the
    same ``idref`` a thousand times, or several manifest items with one
    ``href``) would make the book read, parse and speak that document again
    and again.  Its later mentions are left out, with one warning.
    """
    times = Counter(item["path"] for item, _ in refs)
    repeated = [path for path, n in times.items() if n > 1]
    if not repeated:
        return refs
    log.warning(
        "%s: the spine lists %d document(s) more than once (%s%s, %d times in all); "
        "each is read once, where the spine first lists it",
        source,
        len(repeated),
        repeated[0],
        f" and {len(repeated) - 1} more" if len(repeated) > 1 else "",
        sum(times[p] for p in repeated),
    )
    seen: set[str] = set()
    out: list[tuple[dict, bool]] = []
    for item, linear in refs:
        if item["path"] not in seen:
            seen.add(item["path"])
            out.append((item, linear))
    return out


def _read_archive(archive: Archive, source: str) -> BookContent:
    container = archive.read(
        "META-INF/container.xml", required="not a valid EPUB: META-INF/container.xml missing"
    )
    croot = _parse_xml(container, source, "META-INF/container.xml")
    rootfiles = [r for r in _descendants(croot, "rootfile") if r.get("full-path")]
    rootfiles.sort(key=lambda r: (r.get("media-type") or "") != "application/oebps-package+xml")
    if not rootfiles:
        raise BookError(source, "not a valid EPUB: container.xml names no package document")
    opf_path = posixpath.normpath(unquote(rootfiles[0].get("full-path").strip().lstrip("/")))
    opf_data = archive.read(
        opf_path, required=f"not a valid EPUB: package document {opf_path} missing"
    )
    opf = _parse_xml(opf_data, source, f"package document {opf_path}")
    opf_dir = posixpath.dirname(opf_path)

    title, authors, language, plain_meta = _metadata(opf)

    manifest: dict[str, dict] = {}
    for el in _descendants(opf, "item"):
        href = el.get("href")
        if not href:
            continue
        path, _ = _join(opf_dir, href)
        manifest[el.get("id") or href] = {
            "href": unquote(urldefrag(href)[0]),
            "path": path,
            "media_type": (el.get("media-type") or "").lower(),
            "properties": set((el.get("properties") or "").lower().split()),
        }

    spine_el = next(iter(_descendants(opf, "spine")), None)
    itemrefs = _children(spine_el, "itemref") if spine_el is not None else []
    refs = []
    for ref in itemrefs:
        item = manifest.get(ref.get("idref") or "")
        if item is None:
            continue
        if item["media_type"] not in _CONTENT_TYPES and not item["path"].lower().endswith(
            _CONTENT_EXTS
        ):
            continue
        refs.append((item, (ref.get("linear") or "yes").strip().lower() != "no"))
    if not refs:
        raise BookError(source, "not a valid EPUB: the spine lists no content documents")
    if any(linear for _, linear in refs):
        refs = [r for r in refs if r[1]]

    _refuse_drm(archive, {item["path"] for item, _ in refs})

    refs = _unrepeated(refs, source)
    spine = _Spine()
    recovered = []
    missing = []
    ssml: list[Pronunciation] = []
    pls_langs: dict[str, str] = {}  # PLS path -> language from <link rel="pronunciation" hreflang>
    nav_item = next((it for it in manifest.values() if "nav" in it["properties"]), None)
    nav_soup = None  # the nav document's parse, when the spine lists it too
    for item, _ in refs:
        raw = archive.read(item["path"])
        if raw is None:
            log.warning(
                "%s: spine document %s missing from the archive; skipped", source, item["href"]
            )
            missing.append(item["href"])
            continue
        doc, soup = read_document(raw)
        if nav_item is not None and item["path"] == nav_item["path"]:
            nav_soup = soup
        ssml.extend(_ssml_pronunciations(soup, language))
        pls_langs.update(_pronunciation_links(soup, posixpath.dirname(item["path"])))
        if doc.recovered:
            recovered.append(item["href"])
        spine.add(item["path"], item["href"], doc)
    if missing and not spine.paths:
        listed = ", ".join(missing[:3])
        if len(missing) > 3:
            listed += f" and {len(missing) - 3} more"
        raise BookError(
            source, f"not a valid EPUB: no spine document is in the archive (missing: {listed})"
        )
    if recovered:
        log.warning(
            "%s: %s not well-formed XHTML (or nested too deeply); "
            "read with the forgiving HTML parser",
            source,
            ", ".join(recovered),
        )
    mark_gutenberg(spine.blocks)

    # Table of contents: nav document first (EPUB 3), NCX otherwise.
    toc: list[_Entry] = []
    landmarks: list[tuple[str, str, str | None]] = []
    if nav_item is not None and nav_soup is None:
        raw = archive.read(nav_item["path"])
        if raw:
            _doc, nav_soup = read_document(raw)
    if nav_soup is not None:
        toc, landmarks = _read_nav(nav_soup, nav_item["path"], opf_dir)
    if not toc:
        ncx_id = spine_el.get("toc") if spine_el is not None else None
        ncx_item = manifest.get(ncx_id or "") or next(
            (it for it in manifest.values() if it["media_type"] == _NCX_TYPE), None
        )
        if ncx_item is not None:
            raw = archive.read(ncx_item["path"])
            if raw:
                try:
                    ncx = safe_xml(raw, recover=True)
                except etree.XMLSyntaxError:
                    ncx = None
                if ncx is not None:
                    navmap = next(iter(_descendants(ncx, "navmap")), None)
                    if navmap is not None:
                        toc = _ncx_entries(navmap, ncx_item["path"], opf_dir)
    for ref in _descendants(opf, "reference"):  # EPUB 2 guide
        if ref.get("href") and ref.get("type"):
            path, frag = _join(opf_dir, ref.get("href"))
            landmarks.append((ref.get("type").strip().lower(), path, frag))

    entries = _choose_level(_resolve(toc, spine), spine)
    if not entries:
        # No usable TOC: one section per spine document.
        entries = []
        for path, href in zip(spine.paths, spine.hrefs, strict=True):
            doc = spine.docs[path]
            if not doc.blocks:
                continue
            e = _Entry(heading_title(doc.blocks, 2) or doc.title, path, None, href)
            e.pos = spine.offsets[path]
            e.title = e.label
            entries.append(e)
    sections = _sections(entries, spine, landmarks)

    cover = _cover(archive, manifest, plain_meta)
    pls = _pls_pronunciations(archive, manifest, pls_langs, language)
    return BookContent(title, authors, language, sections, cover, _unique(ssml + pls))


# --------------------------------------------------------------------------
# Pronunciations: EPUB 3 PLS lexicons and inline SSML attributes
# --------------------------------------------------------------------------
_PLS_TYPE = "application/pls+xml"


def _ssml_attr(tag, name: str) -> str | None:
    """``ssml:<name>`` of *tag* (any prefix bound to the SSML namespace is read as ``ssml``)."""
    for key, value in tag.attrs.items():
        if str(key).lower() == f"ssml:{name}":
            return str(value)
    return None


def _inherited(tag, names: tuple[str, ...]) -> str | None:
    """The nearest value of one of *names* on *tag* or its ancestors."""
    node = tag
    while node is not None and getattr(node, "attrs", None) is not None:
        for key, value in node.attrs.items():
            if str(key).lower() in names and str(value).strip():
                return str(value).strip()
        node = node.parent
    return None


def _ssml_pronunciations(soup, language: str | None) -> list[Pronunciation]:
    """Entries for the elements carrying ``ssml:ph`` (EPUB 3 SSML attributes).

    The element's text is the grapheme; ``ssml:alphabet`` is inherited from
    the nearest ancestor that has it (IPA by default), the language likewise
    from ``xml:lang``/``lang``.
    """
    out: list[Pronunciation] = []
    for tag in soup.find_all(True):
        ph = _ssml_attr(tag, "ph")
        if not ph or not ph.strip():
            continue
        grapheme = clean(tag.get_text(" "))
        if not grapheme:
            continue
        alphabet = (_inherited(tag, ("ssml:alphabet",)) or "ipa").lower()
        lang = _inherited(tag, ("xml:lang", "lang")) or language or ""
        out.append(Pronunciation(grapheme, " ".join(ph.split()), alphabet, lang, "ssml"))
    return out


def _pronunciation_links(soup, doc_dir: str) -> dict[str, str]:
    """PLS files a content document links (``<link rel="pronunciation">``) -> their hreflang."""
    out: dict[str, str] = {}
    for link in soup.find_all("link"):
        rel = link.get("rel")
        rels = rel if isinstance(rel, list) else str(rel or "").split()
        if "pronunciation" in [r.lower() for r in rels] and link.get("href"):
            path, _ = _join(doc_dir, link.get("href"))
            out[path] = str(link.get("hreflang") or "")
    return out


def _pls_pronunciations(
    archive: Archive, manifest: dict, linked: dict[str, str], language: str | None
) -> list[Pronunciation]:
    """Entries of the PLS lexicons the package declares (or its documents link)."""
    paths = [it["path"] for it in manifest.values() if it["media_type"] == _PLS_TYPE]
    paths += [p for p in linked if p not in paths]
    out: list[Pronunciation] = []
    for path in paths:
        try:
            data = archive.read(path)
        except BookError as exc:  # too large, damaged: the book is still read
            log.warning("%s: pronunciation lexicon %s skipped: %s", archive.source, path, exc)
            continue
        if not data:
            continue
        try:
            out.extend(
                parse_pls(data, origin="pls", language=linked.get(path) or language, source=path)
            )
        except ValueError as exc:
            log.warning("%s: pronunciation lexicon %s skipped: %s", archive.source, path, exc)
    return out


def _unique(entries: list[Pronunciation]) -> tuple[Pronunciation, ...]:
    """Entries without repeats; when one text has several pronunciations (the
    same ``ssml:ph`` word said differently in places), the most frequent, then
    the longest, comes first: it is the one applied everywhere."""
    counts: dict[Pronunciation, int] = {}
    for e in entries:
        counts[e] = counts.get(e, 0) + 1
    order = {e: i for i, e in enumerate(counts)}
    first: dict[str, int] = {}
    for e in counts:
        first.setdefault(e.grapheme, order[e])
    return tuple(
        sorted(
            counts,
            key=lambda e: (
                e.origin != "ssml",
                first[e.grapheme],
                -counts[e],
                -len(e.phonemes),
                order[e],
            ),
        )
    )
