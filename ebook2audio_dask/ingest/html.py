"""Single-file HTML reader (e.g. a Project Gutenberg ``-h.htm`` book).

The document is reduced to blocks exactly like an EPUB content document
(see :mod:`._xhtml`).  Chapters are cut at headings: the chapter level is
the highest heading level (``h1``, else ``h2``, else ``h3``) that occurs at
least twice, and every heading of that level or above starts a section.
Headings that follow each other with no text in between form one title
(a play's title followed by its subtitle).

Gutenberg boilerplate, the in-document contents table, title pages, errata
and transcriber's notes are recognised by the shared rules in
:mod:`._sections`.
"""

from __future__ import annotations

import re

from ._sections import BookContent, Section, mark_gutenberg
from ._text import clean, pg_header_fields, split_authors
from ._xhtml import Block, read_document

__all__ = ["read_html"]

_PG_TITLE_RES = (
    re.compile(r"^the project gutenberg e-?book of\s+(.*?)(?:,\s*by\s+.*)?$", re.I),
    re.compile(r"^(.*?)(?:,)?\s+by\s+.*?,?\s+a project gutenberg e-?book\.?$", re.I),
    re.compile(r"^(.*?)\s*[-—|:]\s*project gutenberg.*$", re.I),
)


def _meta(soup, *names: str) -> str | None:
    for tag in soup.find_all("meta"):
        key = str(tag.get("name") or tag.get("http-equiv") or tag.get("property") or "").lower()
        if key in names and tag.get("content"):
            value = clean(str(tag["content"]))
            if value:
                return value
    return None


def _clean_title(title: str) -> str:
    for rx in _PG_TITLE_RES:
        m = rx.match(title)
        if m and m.group(1).strip():
            return clean(m.group(1))
    return title


def _chapter_level(blocks: list[Block]) -> int | None:
    counts = {1: 0, 2: 0, 3: 0}
    for b in blocks:
        if b.level in counts and "pg" not in b.marks:
            counts[b.level] += 1
    for level in (1, 2, 3):
        if counts[level] >= 2:
            return level
    return None


def read_html(data: bytes, source: str) -> BookContent:
    """Read a single-file HTML/XHTML book.

    Parameters
    ----------
    data : bytes
        The document; its encoding comes from the BOM / ``<meta charset>``.
    source : str
        Path or URL, for messages.

    Returns
    -------
    BookContent
        Metadata and the proposed sections (not yet classified).
    """
    doc, soup = read_document(data, prefer_html=True)
    blocks = doc.blocks
    mark_gutenberg(blocks)

    header = [b.text for b in blocks if "pg" in b.marks][:80]
    fields = pg_header_fields(header)
    language = (
        doc.lang
        or _meta(soup, "content-language", "language", "dc.language", "dcterms.language")
        or fields.get("language")
    )
    title = fields.get("title") or _meta(soup, "dc.title", "dcterms.title", "og:title")
    if not title and doc.title:
        title = _clean_title(doc.title)
    author_field = fields.get("author") or _meta(soup, "author", "dc.creator", "dcterms.creator")
    authors = split_authors(author_field) if author_field else ()

    first_id: dict[int, str] = {}
    for ident, pos in doc.anchors.items():
        # Document order: the last anchor before a heading is the closest to
        # it (the heading's own id rather than a page anchor before it).
        first_id[pos] = ident

    level = _chapter_level(blocks)
    sections: list[Section] = []
    if level is None:
        if blocks:
            sections.append(Section(title or "", list(blocks), ""))
        return BookContent(title, authors, language, sections)

    starts: list[int] = []
    prev_level = 0
    for i, b in enumerate(blocks):
        is_start = 0 < b.level <= level
        # A heading right after one of the same level continues its title.
        if is_start and b.level != prev_level:
            starts.append(i)
        prev_level = b.level if is_start else 0
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(blocks)
        chunk = blocks[start:end]
        heads = []
        for b in chunk:
            if b.level != chunk[0].level or not 0 < b.level <= level:
                break
            heads.append(b.text)
        ident = first_id.get(start) or next(
            (first_id[k] for k in range(start, start + len(heads)) if k in first_id), None
        )
        sections.append(Section(clean(" ".join(heads)), chunk, f"#{ident}" if ident else ""))
    return BookContent(title, authors, language, sections)
