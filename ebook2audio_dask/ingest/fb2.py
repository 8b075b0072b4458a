"""FictionBook 2 (``.fb2``, ``.fb2.zip``) reader.

FB2 is an XML format, read natively (no conversion):

* Metadata from ``<description><title-info>``: ``<book-title>``,
  ``<author>`` (first, middle and last name, or the nickname), ``<lang>``,
  and the ``<coverpage><image l:href="#id">`` picture, taken from the
  ``<binary id="id">`` element (base64) with its ``content-type``.
* The main ``<body>`` (the first one not named ``notes``/``comments``)
  holds the text as nested ``<section>`` elements.  A section whose child
  sections (at least half of them) have a ``<title>`` is split into them;
  its own text before them (its title, an epigraph) becomes a *part*
  section that is folded into the first child chapter when it is tiny
  (``PART ONE`` + ``Chapter 1`` → ``"PART ONE Chapter 1"``), as for an
  EPUB's part headings.  A single top-level section that wraps the whole
  book is split without joining its title to the first chapter.  Child
  sections without titles (scene breaks) stay in their parent's chapter.
* The body's own ``<title>`` and ``<epigraph>`` (the book's title page)
  are front matter; other bodies (``<body name="notes">``) are back matter.
* Text: ``<p>``, ``<subtitle>``, ``<text-author>``, ``<cite>``,
  ``<epigraph>``, ``<annotation>``, table rows (cells joined with ", ")
  and ``<poem>`` (one paragraph per ``<stanza>``, its ``<v>`` lines joined)
  become paragraphs; a ``<title>``'s paragraphs become headings.  Note
  references (``<a type="note">``), images and ``<empty-line/>`` are not
  read.

Parsing is the hardened lxml parser of :func:`ebook2audio_dask.safexml.safe_xml` (no entity
expansion, no DTD, no network) with ``huge_tree``: libxml2's 10 MB limit on
one text node would cut a long paragraph or drop a big base64 cover, and
the document is already bounded by ``ingest.max-file-size`` (or, zipped, by
``ingest.max-member-size``).  A document that is not well-formed is parsed
again in lxml's recover mode; one over libxml2's remaining limits (1 GB per
text node, 2048 levels of nesting) fails with a one-line message instead.
"""

from __future__ import annotations

import base64
import binascii
import re

from lxml import etree

from ..errors import BookError
from ..logs import get_logger
from ..model import Cover
from ..safexml import local_name, safe_xml
from ._sections import BookContent, Section
from ._text import clean
from ._xhtml import Block

__all__ = ["is_fb2", "read_fb2"]

log = get_logger(__name__)

#: ``<FictionBook`` as the root element, after an optional XML declaration,
#: comments, processing instructions and doctype.
_ROOT_RE = re.compile(
    rb"^(?:\s|<\?[^>]*\?>|<!--.*?-->|<!DOCTYPE[^>]*>)*<(?:[A-Za-z_][\w.-]*:)?FictionBook[\s>/]",
    re.DOTALL,
)
_NOTE_BODIES = frozenset(("notes", "comments", "footnotes", "endnotes"))
_SEPARATOR_RE = re.compile(r"^[\s*\-_=~#.·•—–]*$")
_IMAGE_TYPES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}


def is_fb2(head: bytes) -> bool:
    """True when *head* (the first bytes, UTF-8/ASCII-compatible) is a FictionBook document."""
    return _ROOT_RE.match(head.lstrip(b"\xef\xbb\xbf")) is not None


def _kids(el, name: str | None = None):
    for child in el:
        if name is None or local_name(child.tag) == name:
            yield child


def _first(el, name: str):
    return next(_kids(el, name), None) if el is not None else None


def _href(el) -> str | None:
    for key, value in el.attrib.items():
        if local_name(key) == "href":
            return value
    return None


def _inline_text(el) -> str:
    """The text of an inline container, without note references and images."""
    parts: list[str] = []

    def walk(node) -> None:
        if node.text:
            parts.append(node.text)
        for child in node:
            name = local_name(child.tag)
            skip = name in ("image", "binary") or (
                name == "a" and (child.get("type") or "").lower() == "note"
            )
            if name and not skip:
                walk(child)
            if child.tail:
                parts.append(child.tail)

    walk(el)
    return clean("".join(parts))


class _Walker:
    """Turns FB2 elements into blocks."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []

    def para(self, text: str, level: int = 0) -> None:
        if text and not _SEPARATOR_RE.match(text):
            self.blocks.append(Block(text, level))

    def title(self, el, level: int) -> list[str]:
        """Headings of a ``<title>``; returns their texts."""
        texts = []
        for p in _kids(el):
            if local_name(p.tag) in ("p", "subtitle"):
                text = _inline_text(p)
                if text and not _SEPARATOR_RE.match(text):
                    texts.append(text)
                    self.para(text, min(max(level, 1), 6))
        return texts

    def content(self, el) -> None:
        """Any flow element (p, poem, cite, epigraph, table...)."""
        name = local_name(el.tag)
        if name in ("p", "subtitle", "text-author", "date"):
            self.para(_inline_text(el))
        elif name == "poem":
            for child in _kids(el):
                cname = local_name(child.tag)
                if cname == "title":
                    self.title(child, 0)  # a poem's title is a line of text, not a chapter
                elif cname == "stanza":
                    lines = []
                    for v in _kids(child):
                        vname = local_name(v.tag)
                        if vname == "v":
                            lines.append(_inline_text(v))
                        elif vname in ("title", "subtitle"):
                            self.para(_inline_text(v))
                    self.para(clean(" ".join(line for line in lines if line)))
                else:
                    self.content(child)
        elif name in ("cite", "epigraph", "annotation"):
            for child in _kids(el):
                self.content(child)
        elif name == "table":
            for tr in _kids(el, "tr"):
                cells = [_inline_text(td) for td in _kids(tr)]
                self.para(", ".join(c for c in cells if c))
        elif name == "title":
            for text in [_inline_text(p) for p in _kids(el)]:
                self.para(text)
        # image, empty-line, binary and unknown elements: nothing to read


def _has_title(section) -> bool:
    title = _first(section, "title")
    return title is not None and bool(_inline_text(title))


def _section_path(el, fallback: str) -> str:
    ident = el.get("id")
    return f"#{ident}" if ident else fallback


def _inline(walker: _Walker, section, depth: int) -> str:
    """Add a whole section (subsections included) to *walker*; returns its title."""
    title = ""
    for child in _kids(section):
        name = local_name(child.tag)
        if name == "title":
            texts = walker.title(child, depth)
            title = title or clean(" ".join(texts))
        elif name == "section":
            _inline(walker, child, depth + 1)
        else:
            walker.content(child)
    return title


def _flatten(section, depth: int, path: str, *, part_hint: str | None) -> list[Section]:
    """One ``<section>`` → proposed sections (see the module docstring).

    *part_hint* is the hint of the section's own text when it is split
    into its child sections (``"part"``, or ``None`` for a wrapper).
    """
    source = _section_path(section, path)
    subs = list(_kids(section, "section"))
    if not subs or 2 * sum(1 for s in subs if _has_title(s)) < len(subs):
        walker = _Walker()
        title = _inline(walker, section, depth)
        return [Section(title, walker.blocks, source)]
    walker = _Walker()
    own = Section("", walker.blocks, source, hint=part_hint)
    out = [own]
    n = 0
    for child in _kids(section):
        name = local_name(child.tag)
        if name == "section":
            n += 1
            out.extend(_flatten(child, depth + 1, f"{path}/section[{n}]", part_hint="part"))
        elif name == "title" and not own.title and len(out) == 1:
            own.title = clean(" ".join(walker.title(child, depth)))
        else:  # text before the first subsection is the part's; after one, that chapter's
            tail = _Walker()
            tail.blocks = out[-1].blocks
            tail.content(child)
    return out


def _metadata(root) -> tuple[str | None, tuple[str, ...], str | None, str | None]:
    """(title, authors, language, cover image id)."""
    description = _first(root, "description")
    info = _first(description, "title-info")
    if info is None:
        return None, (), None, None
    title_el = _first(info, "book-title")
    title = _inline_text(title_el) if title_el is not None else None
    authors = []
    for author in _kids(info, "author"):
        names = [
            _inline_text(n)
            for key in ("first-name", "middle-name", "last-name")
            if (n := _first(author, key)) is not None
        ]
        name = clean(" ".join(n for n in names if n))
        if not name and (nick := _first(author, "nickname")) is not None:
            name = _inline_text(nick)
        if name and name not in authors:
            authors.append(name)
    lang_el = _first(info, "lang")
    language = _inline_text(lang_el) if lang_el is not None else None
    if language and language.lower() in ("und", "unknown", "xx"):
        language = None
    cover_id = None
    coverpage = _first(info, "coverpage")
    if coverpage is not None:
        image = _first(coverpage, "image")
        href = _href(image) if image is not None else None
        if href:
            cover_id = href.lstrip("#")
    return title or None, tuple(authors), language or None, cover_id


def _cover(root, cover_id: str | None, source: str) -> Cover | None:
    if not cover_id:
        return None
    for binary in _kids(root, "binary"):
        if binary.get("id") != cover_id:
            continue
        try:
            data = base64.b64decode("".join((binary.text or "").split()), validate=False)
        except (binascii.Error, ValueError):
            log.warning("%s: the cover image %r is not valid base64; no cover", source, cover_id)
            return None
        if not data:
            break
        media_type = (binary.get("content-type") or "").strip().lower() or "image/jpeg"
        return Cover(data, _IMAGE_TYPES.get(media_type, media_type))
    log.warning("%s: the cover image %r is missing from the book; no cover", source, cover_id)
    return None


def _limit_error(exc: etree.XMLSyntaxError) -> str | None:
    """What *exc* says when it is one of libxml2's resource limits (text node, depth), else None."""
    for entry in exc.error_log:
        if entry.type_name != "ERR_RESOURCE_LIMIT":
            continue
        message = entry.message.lower()
        if "depth" in message:
            return "elements nested deeper than the XML parser's limit (libxml2: 2048 levels)"
        if "text node" in message:
            return "a text node longer than the XML parser's limit (libxml2: 1,000,000,000 bytes)"
        return f"over a limit of the XML parser (libxml2: {entry.message})"
    return None


def _parse_fb2(data: bytes, source: str):
    """The FB2 document's root element, read whole or not at all.

    Parsed with ``huge_tree``: a paragraph or a base64 cover over libxml2's
    default 10 MB per text node is read whole (the document is already
    bounded by ``ingest.max-file-size``, and entities are never expanded).
    A document over libxml2's own limits even then (a text node of 1 GB,
    elements nested more than 2048 deep) fails with one line naming the
    limit: recovering would cut it silently.  A document that is merely not
    well-formed is read again in recover mode, with a warning.
    """
    try:
        return safe_xml(data, huge_tree=True)
    except etree.XMLSyntaxError as exc:
        limit = _limit_error(exc)
        if limit:
            raise BookError(source, f"not a readable FB2: {limit}") from exc
    try:
        root = safe_xml(data, recover=True, huge_tree=True)
    except etree.XMLSyntaxError as exc:
        raise BookError(source, f"not a valid FB2: not XML ({exc})") from exc
    log.warning("%s: the FB2 document is not well-formed XML; read what could be recovered", source)
    return root


def read_fb2(data: bytes, source: str) -> BookContent:
    """Read a FictionBook 2 document.

    Parameters
    ----------
    data : bytes
        The ``.fb2`` document.
    source : str
        Path or URL, for messages.

    Returns
    -------
    BookContent
        Metadata, cover and the proposed sections (not yet classified).

    Raises
    ------
    BookError
        When the document is not XML, or its root is not ``FictionBook``.
    """
    root = _parse_fb2(data, source)
    if root is None or local_name(root.tag) != "FictionBook":
        raise BookError(source, "not a valid FB2: the root element is not FictionBook")
    title, authors, language, cover_id = _metadata(root)
    sections: list[Section] = []
    main_seen = False
    for b, body in enumerate(_kids(root, "body"), 1):
        name = (body.get("name") or "").strip().lower()
        path = f"body[{b}]"
        if main_seen and name:  # notes, comments: back matter
            walker = _Walker()
            label = _inline(walker, body, 1)
            if walker.blocks:
                label = label or ("Notes" if name in _NOTE_BODIES else name.title())
                sections.append(Section(label, walker.blocks, path, hint="back"))
            continue
        main_seen = True
        tops = list(_kids(body, "section"))
        front = _Walker()
        front_title = ""
        n = 0
        for child in _kids(body):
            cname = local_name(child.tag)
            if cname == "section":
                n += 1
                if front.blocks:  # the body's title and epigraph: a title page
                    sections.append(Section(front_title, front.blocks, path, hint="front"))
                    front = _Walker()
                # a section wrapping the whole book alone is no part heading
                hint = "part" if len(tops) >= 2 else None
                sections.extend(_flatten(child, 1, f"{path}/section[{n}]", part_hint=hint))
            elif cname == "title":
                front_title = front_title or clean(" ".join(front.title(child, 1)))
            else:
                front.content(child)
        if front.blocks:
            sections.append(
                Section(front_title, front.blocks, path, hint="front" if not n else None)
            )
    if not main_seen:
        raise BookError(source, "not a valid FB2: no <body>")
    return BookContent(title, authors, language, sections, _cover(root, cover_id, source))
