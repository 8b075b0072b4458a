"""Read-along EPUB 3: a book's own documents with Media Overlays timed from its audio.

:func:`write_readalong` takes an EPUB (2 or 3), the sentences the conversion
spoke with their clips in the audio files, and writes an EPUB 3 whose content
documents have each spoken sentence wrapped in ``<span id="e2a-NNNN"
class="e2a-s">``, one SMIL file per document with a ``<par>`` per sentence,
the audio files themselves, ``media:duration`` for every overlay and the
total, and ``media:active-class`` with its CSS rule, so reading systems
(Thorium, Apple Books...) highlight the sentence being spoken.

Nothing else in the documents changes (one stylesheet link is added to each
overlaid document's head); an EPUB 2 input gets what EPUB 3 requires (package
version, ``dcterms:modified``, a navigation document made from its NCX, the
HTML doctype).  Sentences are found by sequential text alignment
(:mod:`.overlays_align`); one that is not found keeps its audio in the next
(or previous) sentence's clip, so the clips of a file stay contiguous, and is
counted in :class:`ReadAlongStats`.
"""

from __future__ import annotations

import contextlib
import datetime
import html.entities
import os
import posixpath
import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote, urldefrag

from lxml import etree

from ..errors import BookError
from ..logs import get_logger
from ..safexml import as_utf8, fix_char_refs, local_name, strip_internal_subset
from .overlays_align import Aligner, DocText, fold_text
from .overlays_epub3 import (
    OPF_NS,
    html5_markup,
    nav_document,
    relink,
    upgrade_package,
    xhtml_names,
)
from .sentences import AudioFile, TimedSentence

__all__ = ["ACTIVE_CLASS", "ChapterText", "ReadAlongStats", "archive_name", "write_readalong"]

log = get_logger(__name__)

#: The class reading systems put on the sentence being spoken.
ACTIVE_CLASS = "-epub-media-overlay-active"
_CSS = (
    "/* ebook2audio read-along: the sentence being spoken */\n"
    f".{ACTIVE_CLASS} {{\n  background-color: #ffe58a;\n  color: #000;\n}}\n"
)
_SMIL_NS = "http://www.w3.org/ns/SMIL"
_OPS_NS = "http://www.idpf.org/2007/ops"
_CONTAINER_NS = "urn:oasis:names:tc:opendocument:xmlns:container"
_XHTML_TYPES = ("application/xhtml+xml",)
_ENTITY_RE = re.compile(rb"&([A-Za-z][A-Za-z0-9]*);")


@dataclass(frozen=True)
class ChapterText:
    """A planned (spoken) chapter and where its text starts in the EPUB.

    Parameters
    ----------
    chapter : int
        The plan chapter's index.
    source : str
        Where it starts, as :attr:`~ebook2audio_dask.model.Chapter.source`
        gives it (``"text/ch1.xhtml#c1"``: relative to the package document,
        or an archive path); the anchor is optional.
    """

    chapter: int
    source: str


@dataclass(frozen=True)
class ReadAlongStats:
    """What :func:`write_readalong` did.

    Parameters
    ----------
    sentences : int
        Spoken sentences given.
    overlaid : int
        Sentences that got their own ``<par>``.
    unmatched : int
        Sentences not found in the text (their audio joins a neighbouring par).
    documents : int
        Content documents with an overlay.
    """

    sentences: int
    overlaid: int
    unmatched: int
    documents: int


def _parse(data: bytes):
    """Parse XML keeping comments and processing instructions, without entities or DTDs."""
    data = fix_char_refs(strip_internal_subset(as_utf8(data)))
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=True,
        remove_comments=False,
        remove_pis=False,
        strip_cdata=False,
    )
    root = etree.fromstring(data, parser)
    if root is None:
        raise etree.XMLSyntaxError("empty document", None, 0, 0, "<bytes>")
    return root


def _numeric_entities(data: bytes) -> bytes:
    """HTML's named entities as character references (EPUB 2 XHTML may use them)."""

    def repl(m: re.Match) -> bytes:
        code = html.entities.name2codepoint.get(m.group(1).decode("ascii"))
        if code is None or m.group(1) in (b"amp", b"lt", b"gt", b"quot", b"apos"):
            return m.group(0)
        return b"&#%d;" % code

    return _ENTITY_RE.sub(repl, data)


def _punctuation_ends(text: str) -> tuple[int, int]:
    """How many punctuation characters *text* starts and ends with."""
    marks = [not ch.isspace() and not fold_text(ch) for ch in text]
    lead = next((n for n, m in enumerate(marks) if not m), len(marks))
    trail = next((n for n, m in enumerate(reversed(marks)) if not m), len(marks))
    return lead, trail


def _clock(ms: int) -> str:
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h}:{m:02d}:{s:02d}.{ms:03d}"


def _href(target: str, start_dir: str) -> str:
    return quote(posixpath.relpath(target, start_dir or "."))


class _Epub:
    """The input EPUB: its archive, package document and spine documents."""

    def __init__(self, path: str):
        self.path = path
        try:
            self.zip = zipfile.ZipFile(path)
            self.names = self.zip.namelist()
            container = _parse(self.zip.read("META-INF/container.xml"))
            rootfile = next(
                (el for el in container.iter() if local_name(el.tag) == "rootfile"), None
            )
            if rootfile is None or not rootfile.get("full-path"):
                raise BookError(path, "not a valid EPUB: container.xml names no package document")
            self.opf_path = rootfile.get("full-path")
            opf = self.zip.read(self.opf_path)
            self.opf = _parse(opf)
            self.declarations = {self.opf: _declaration(opf)}
        except BookError:
            self.zip.close()
            raise
        except (
            OSError, KeyError, zipfile.BadZipFile, etree.XMLSyntaxError, EOFError, zlib.error
        ) as exc:  # fmt: skip
            if hasattr(self, "zip"):
                self.zip.close()
            raise BookError(path, f"not a valid EPUB: {exc}") from exc
        self.opf_dir = posixpath.dirname(self.opf_path)
        self.version = (self.opf.get("version") or "2.0").strip()
        self.manifest = next((el for el in self.opf if local_name(el.tag) == "manifest"), None)
        self.metadata = next((el for el in self.opf if local_name(el.tag) == "metadata"), None)
        if self.manifest is None or self.metadata is None:
            self.zip.close()
            raise BookError(path, f"not a valid EPUB: {self.opf_path} has no manifest or metadata")
        self.items: dict[str, etree._Element] = {
            el.get("id"): el for el in self.manifest if local_name(el.tag) == "item"
        }
        spine = next((el for el in self.opf if local_name(el.tag) == "spine"), None)
        self.spine = spine
        self.docs: list[tuple[str, etree._Element]] = []  # (archive path, manifest item)
        for ref in spine if spine is not None else ():
            item = (
                self.items.get(ref.get("idref", "")) if local_name(ref.tag) == "itemref" else None
            )
            if item is not None and item.get("media-type") in _XHTML_TYPES:
                name = self.member(item.get("href", ""))
                if all(name != seen for seen, _ in self.docs):  # a document listed twice
                    self.docs.append((name, item))

    def member(self, href: str) -> str:
        """Archive path of a manifest *href* (relative to the package document)."""
        return posixpath.normpath(posixpath.join(self.opf_dir, unquote(href)))

    def read(self, name: str) -> bytes:
        try:
            return self.zip.read(name)
        except (OSError, KeyError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
            raise BookError(self.path, f"not a valid EPUB: {name}: {exc}") from exc


def _load_docs(epub: _Epub) -> list:
    roots = []
    for name, _item in epub.docs:
        data = epub.read(name) if name in epub.names else None
        root = None
        if data is not None:
            for attempt in (data, _numeric_entities(data)):
                try:
                    root = _parse(attempt)
                    epub.declarations[root] = _declaration(attempt)
                    break
                except etree.XMLSyntaxError:
                    continue
        if root is None:
            log.warning("%s: %s is not well-formed XHTML; left without overlay", epub.path, name)
        roots.append(root)
    return roots


def _chapter_starts(epub: _Epub, chapters: Sequence[ChapterText], texts) -> dict:
    index = {name: n for n, (name, _) in enumerate(epub.docs)}
    starts = {}
    for ch in chapters:
        path, frag = urldefrag(ch.source)
        for cand in (epub.member(path), posixpath.normpath(unquote(path))):
            d = index.get(cand)
            if d is not None and texts[d] is not None:
                off = texts[d].anchor(frag or None)
                starts[ch.chapter] = (d, off if off is not None else 0)
                break
    return starts


def _id_prefix(roots) -> str:
    ids = {
        el.get("id")
        for root in roots
        if root is not None
        for el in root.iter()
        if isinstance(el.tag, str) and el.get("id")
    }
    prefix = "e2a-"
    n = 1
    while any(i.startswith(prefix) for i in ids):
        n += 1
        prefix = f"e2a{n}-"
    return prefix


def write_readalong(
    epub_path: str,
    chapters: Sequence[ChapterText],
    sentences: Sequence[TimedSentence],
    audio: Sequence[AudioFile],
    target: str,
    *,
    language: str | None = None,
) -> ReadAlongStats:
    """Write *epub_path* as a read-along EPUB 3 with Media Overlays to *target*.

    Parameters
    ----------
    epub_path : str
        The book (EPUB 2 or 3).
    chapters : sequence of ChapterText
        Where each spoken chapter starts.
    sentences : sequence of TimedSentence
        Every spoken sentence in book order, with its clip.
    audio : sequence of AudioFile
        The audio files the clips are in; embedded as they are (stored).
    target : str
        Path of the EPUB to write; written to a temporary file beside it
        and renamed, so nothing half-written is ever there.
    language : str, optional
        Language of a navigation document made for an EPUB 2 book that
        does not name its own.

    Returns
    -------
    ReadAlongStats

    Raises
    ------
    BookError
        The EPUB cannot be read (damaged archive, missing package document).
    """
    epub = _Epub(epub_path)
    with epub.zip:
        return _readalong(epub, chapters, sentences, audio, target, language)


def _readalong(epub, chapters, sentences, audio, target, language) -> ReadAlongStats:
    epub_path = epub.path
    upgrade = not epub.version.startswith("3")
    roots = _load_docs(epub)
    texts = [DocText(r) if r is not None else None for r in roots]
    starts = _chapter_starts(epub, chapters, texts)
    prefix = _id_prefix(roots)

    # align
    aligner = Aligner(texts)
    floors: dict[int, int] = {}
    found: list[tuple[int, int, int, int]] = []  # (ordinal, doc, a, b)
    chapter = None
    for n, timed in enumerate(sentences):
        if timed.sentence.chapter != chapter:
            chapter = timed.sentence.chapter
            if chapter in starts:
                aligner.seek(*starts[chapter])
        said = timed.sentence.text
        if not fold_text(said):  # punctuation alone: right after the previous sentence
            d = aligner.doc
            got = texts[d].punct_range(floors[d], len(said)) if d in floors else None
            if got is not None:
                floors[d] = got[1]
                found.append((n, d, *got))
            continue
        match = aligner.find(said)
        if match is None:
            continue
        lead, trail = _punctuation_ends(said)
        a, b = texts[match.doc].raw_range(
            match.start, match.end, floors.get(match.doc, 0), lead, trail
        )
        floors[match.doc] = b
        found.append((n, match.doc, a, b))

    # wrap, each document from its last sentence to its first
    sentence_ids: dict[int, str] = {}
    for n, d, a, b in reversed(found):
        text = texts[d]
        ns = etree.QName(text.body).namespace
        tag = f"{{{ns}}}span" if ns else "span"
        ident = f"{prefix}{n + 1:04d}"

        def make(k: int, tag=tag, ident=ident):
            span = etree.Element(tag)
            span.set("id", ident if k == 0 else f"{ident}-{k + 1}")
            span.set("class", "e2a-s")
            return span

        if text.wrap(a, b, make):
            sentence_ids[n] = ident
    doc_of = {n: d for n, d, _a, _b in found if n in sentence_ids}

    # clips: an unmatched sentence's time joins the next overlaid one of its file (or the last)
    clips: dict[int, list[int]] = {}  # ordinal -> [audio, begin_ms, end_ms]
    pending: dict[int, list[int]] = {}  # audio -> [begin_ms, end_ms] of time without a par
    last: dict[int, int] = {}  # audio -> ordinal of its last par
    for n, timed in enumerate(sentences):
        begin, end = round(timed.begin * 1000), round(timed.end * 1000)
        if n in doc_of:
            waiting = pending.get(timed.audio)
            first = waiting[0] if waiting else begin
            if end > first:
                pending.pop(timed.audio, None)
                clips[n] = [timed.audio, first, end]
                last[timed.audio] = n
                continue
            del doc_of[n]  # no time of its own (under a millisecond): wrapped, but no par
        if timed.audio in pending:
            pending[timed.audio][1] = end
        else:
            pending[timed.audio] = [begin, end]
    for file, (_begin, end) in pending.items():
        if file in last:
            clips[last[file]][2] = max(clips[last[file]][2], end)

    stats = ReadAlongStats(
        sentences=len(sentences),
        overlaid=len(doc_of),
        unmatched=len(sentences) - len(doc_of),
        documents=len(set(doc_of.values())),
    )
    if stats.unmatched:
        log.info(
            "%s: %d of %d spoken sentences not found in the text (their audio joins a "
            "neighbouring sentence's)",
            epub_path,
            stats.unmatched,
            stats.sentences,
        )
    _write(epub, roots, upgrade, sentence_ids, doc_of, clips, audio, target, language)
    return stats


def archive_name(name: str) -> str:
    """An audio file's name inside the EPUB: its base name, white space as ``_``.

    epubcheck warns of spaces in file names (PKG-010); ``"01 - Stave One.mp3"``
    becomes ``"01_-_Stave_One.mp3"``.
    """
    base = posixpath.basename(name.replace("\\", "/")) or "audio"
    return re.sub(r"\s+", "_", base.strip())


def _unique(base: str, taken: set[str]) -> str:
    name, n = base, 1
    stem, ext = posixpath.splitext(base)
    while name in taken or name.lower() in {t.lower() for t in taken}:
        n += 1
        name = f"{stem}-{n}{ext}"
    taken.add(name)
    return name


def _write(epub, roots, upgrade, sentence_ids, doc_of, clips, audio, target, language) -> None:
    taken = set(epub.names)
    base = posixpath.join(epub.opf_dir, "e2a") if epub.opf_dir else "e2a"
    css_path = _unique(f"{base}/readalong.css", taken)
    audio_paths = [_unique(f"{base}/audio/{archive_name(a.name)}", taken) for a in audio]
    item_ids = set(epub.items)

    def new_id(want: str) -> str:
        got, n = want, 1
        while got in item_ids:
            n += 1
            got = f"{want}-{n}"
        item_ids.add(got)
        return got

    def add_item(path: str, media_type: str, ident: str, props: str | None = None):
        item = etree.SubElement(epub.manifest, f"{{{OPF_NS}}}item")
        item.set("id", new_id(ident))
        item.set("href", _href(path, epub.opf_dir))
        item.set("media-type", media_type)
        if props:
            item.set("properties", props)
        item.tail = "\n"
        return item

    for item in epub.items.values():  # overlays the book had are replaced by ours
        item.attrib.pop("media-overlay", None)
    replaced: dict[str, bytes] = {}
    # EPUB 3 wants *.xhtml names: an EPUB 2 book's documents are renamed, links followed
    readable = [n for (n, _), root in zip(epub.docs, roots) if root is not None]
    renamed = xhtml_names(readable, taken) if upgrade else {}
    names = [renamed.get(n, n) for n, _ in epub.docs]
    if renamed:
        relink(epub.opf, epub.opf_path, renamed)
        for name, root in zip([n for n, _ in epub.docs], roots):
            if root is not None:
                relink(root, name, renamed)
    by_doc: dict[int, list[int]] = {}
    for n, d in sorted(doc_of.items()):
        by_doc.setdefault(d, []).append(n)
    durations: list[tuple[str, int]] = []
    for d, ordinals in sorted(by_doc.items()):
        name, item = names[d], epub.docs[d][1]
        stem = posixpath.splitext(posixpath.basename(name))[0]
        smil_path = _unique(f"{base}/smil/{stem}.smil", taken)
        smil_dir = posixpath.dirname(smil_path)
        doc_href = _href(name, smil_dir)
        smil = etree.Element(f"{{{_SMIL_NS}}}smil", nsmap={None: _SMIL_NS, "epub": _OPS_NS})
        smil.set("version", "3.0")
        body = etree.SubElement(smil, f"{{{_SMIL_NS}}}body")
        # the text it stands for: the document's body (epubcheck wants an element id)
        body_id = _body_id(roots[d]) or sentence_ids[ordinals[0]]
        body.set(f"{{{_OPS_NS}}}textref", f"{doc_href}#{body_id}")
        total = 0
        for n in ordinals:
            a, begin, end = clips[n]
            ident = sentence_ids[n]
            par = etree.SubElement(body, f"{{{_SMIL_NS}}}par", id=f"par-{ident}")
            etree.SubElement(par, f"{{{_SMIL_NS}}}text", src=f"{doc_href}#{ident}")
            etree.SubElement(
                par,
                f"{{{_SMIL_NS}}}audio",
                src=_href(audio_paths[a], smil_dir),
                clipBegin=_clock(begin),
                clipEnd=_clock(end),
            )
            total += end - begin
        replaced[smil_path] = etree.tostring(
            smil, xml_declaration=True, encoding="utf-8", pretty_print=True
        )
        smil_item = add_item(smil_path, "application/smil+xml", f"e2a-smil-{stem}")
        item.set("media-overlay", smil_item.get("id"))
        durations.append((smil_item.get("id"), total))
        _link_css(roots[d], _href(css_path, posixpath.dirname(name)))

    for d, name in enumerate(names):
        root = roots[d]
        if root is None or (d not in by_doc and not upgrade):
            continue
        if upgrade:
            html5_markup(root)
        doctype = "<!DOCTYPE html>" if upgrade else None
        replaced[name] = _serialise(root, doctype, epub.declarations.get(root))

    replaced[css_path] = _CSS.encode("utf-8")
    add_item(css_path, "text/css", "e2a-css")
    for a, path in zip(audio, audio_paths):
        add_item(path, a.media_type, "e2a-audio")
    _metadata(epub, durations, upgrade)
    if upgrade:
        nav_path = _unique(f"{base}/nav.xhtml", taken)
        ncx_item = next(
            (i for i in epub.items.values() if i.get("media-type") == "application/x-dtbncx+xml"),
            None,
        )
        ncx = None
        ncx_path = nav_path
        if ncx_item is not None:
            ncx_path = epub.member(ncx_item.get("href", ""))
            with contextlib.suppress(BookError, etree.XMLSyntaxError):
                data = epub.read(ncx_path)
                ncx = _parse(data)
                epub.declarations[ncx] = _declaration(data)
            if ncx is not None and renamed:
                relink(ncx, ncx_path, renamed)
                replaced[ncx_path] = _serialise(ncx, None, epub.declarations.get(ncx))
        lang = next(
            (
                (el.text or "").strip()
                for el in epub.metadata
                if local_name(el.tag) == "language" and (el.text or "").strip()
            ),
            language or "",
        )
        replaced[nav_path] = nav_document(ncx, ncx_path, nav_path, "Contents", lang)
        add_item(nav_path, "application/xhtml+xml", "e2a-nav", "nav")
    replaced[epub.opf_path] = _serialise(epub.opf, None, epub.declarations.get(epub.opf))

    _zip(epub, replaced, set(renamed), audio, audio_paths, target)


def _body_id(root) -> str | None:
    """The ``id`` of a document's ``<body>``, if it has one."""
    body = next(
        (el for el in root if isinstance(el.tag, str) and local_name(el.tag) == "body"), None
    )
    return body.get("id") if body is not None else None


def _link_css(root, href: str) -> None:
    head = next(
        (el for el in root if isinstance(el.tag, str) and local_name(el.tag) == "head"), None
    )
    if head is None:
        return
    ns = etree.QName(root).namespace
    link = etree.SubElement(head, f"{{{ns}}}link" if ns else "link")
    link.set("rel", "stylesheet")
    link.set("type", "text/css")
    link.set("href", href)


_DECLARATION_RE = re.compile(rb"^(<\?xml[^>]*\?>)")
_UTF8_RE = re.compile(rb"""encoding\s*=\s*["']utf-?8["']""", re.IGNORECASE)


def _declaration(data: bytes) -> bytes | None:
    """A document's XML declaration, if it declares UTF-8 (or no encoding)."""
    m = _DECLARATION_RE.match(data.lstrip(b"\xef\xbb\xbf"))
    if m and (b"encoding" not in m.group(1) or _UTF8_RE.search(m.group(1))):
        return m.group(1)
    return None


def _serialise(root, doctype: str | None, declaration: bytes | None = None) -> bytes:
    """The document as UTF-8, its own XML declaration kept (lxml's otherwise)."""
    tree = root.getroottree()
    kwargs = {"doctype": doctype} if doctype else {}
    data = etree.tostring(tree, xml_declaration=True, encoding="utf-8", **kwargs)
    if declaration is not None:
        data = _DECLARATION_RE.sub(lambda m: declaration, data, count=1)
    return data


def _metadata(epub, durations, upgrade) -> None:
    md = epub.metadata
    if upgrade:
        upgrade_package(epub.opf)
    for el in list(md):
        if local_name(el.tag) == "meta" and el.get("property") in (
            "dcterms:modified",
            "media:duration",
            "media:active-class",
        ):
            md.remove(el)

    def meta(prop: str, value: str, refines: str | None = None) -> None:
        el = etree.SubElement(md, f"{{{OPF_NS}}}meta")
        if refines:
            el.set("refines", refines)
        el.set("property", prop)
        el.text = value
        el.tail = "\n"

    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    meta("dcterms:modified", now.strftime("%Y-%m-%dT%H:%M:%SZ"))
    for ident, ms in durations:
        meta("media:duration", _clock(ms), f"#{ident}")
    meta("media:duration", _clock(sum(ms for _, ms in durations)))
    meta("media:active-class", ACTIVE_CLASS)


def _zip(epub, replaced: dict[str, bytes], dropped, audio, audio_paths, target: str) -> None:
    folder = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(prefix=".e2a-", suffix=".epub.part", dir=folder)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
            out.writestr(zipfile.ZipInfo("mimetype"), b"application/epub+zip", zipfile.ZIP_STORED)
            for info in epub.zip.infolist():
                if info.filename == "mimetype" or info.is_dir() or info.filename in dropped:
                    continue
                data = replaced.pop(info.filename, None)
                if data is not None:
                    out.writestr(info.filename, data, zipfile.ZIP_DEFLATED)
                    continue
                copy = zipfile.ZipInfo(info.filename, info.date_time)
                copy.compress_type = info.compress_type
                copy.external_attr = info.external_attr
                copy.file_size = info.file_size  # zip64 only where the member needs it
                try:  # streamed, in blocks: a member may be large (video, audio)
                    with epub.zip.open(info) as src, out.open(copy, "w") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError) as exc:
                    raise BookError(epub.path, f"not a valid EPUB: {info.filename}: {exc}") from exc
            for name, data in replaced.items():
                out.writestr(name, data, zipfile.ZIP_DEFLATED)
            for a, path in zip(audio, audio_paths):
                out.write(a.path, path, compress_type=zipfile.ZIP_STORED)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
