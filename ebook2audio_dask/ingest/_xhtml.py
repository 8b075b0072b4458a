"""XHTML/HTML → paragraphs, shared by the EPUB and single-file HTML readers.

A content document is turned into a flat list of :class:`Block` objects
(paragraphs and headings, in reading order) plus a map from every ``id`` /
``<a name>`` in the document to the index of the block where that anchor
starts.  The anchor map is what lets a chapter start in the middle of a file.

What is *not* read aloud: ``<head>``, scripts, styles, SVG/MathML, images
(and their ``alt`` text), navigation (``<nav>``), hidden content, footnote
and endnote bodies (``epub:type`` footnote/endnote/rearnote…, ``<aside>``,
``class="footnote"``), note references (``epub:type="noteref"``, links or
``<sup>`` whose text is only a marker such as ``1``, ``[12]`` or ``*``),
page numbers (``epub:type="pagebreak"``, ``class="pagenum"``, ``[Pg 6]``),
``<figcaption>`` and a caption that merely repeats the ``alt`` text of the
picture just before it.

Parsing: documents are parsed as XML first (they are XHTML); a document that
is not well-formed XML is parsed again with the forgiving HTML parser, so a
single broken chapter does not lose the book (``Doc.recovered`` is set).
"""

from __future__ import annotations

import html.entities
import re
import warnings
from dataclasses import dataclass, field

from bs4 import BeautifulSoup, Comment, Declaration, Doctype, NavigableString, ProcessingInstruction
from bs4.builder import LXMLTreeBuilder
from lxml import etree

from ..safexml import XML_ENTITIES, as_utf8, fix_char_refs, safe_xml, strip_internal_subset
from ._text import PAGE_MARKER_RE, clean, fold

__all__ = ["Block", "Doc", "extract", "parse_markup", "read_document"]

_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_BLOCK_TAGS = frozenset(
    [
        "address",
        "article",
        "blockquote",
        "body",
        "caption",
        "center",
        "dd",
        "details",
        "dialog",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figure",
        "footer",
        "form",
        "header",
        "hgroup",
        "hr",
        "html",
        "li",
        "main",
        "ol",
        "p",
        "pre",
        "section",
        "summary",
        "table",
        "tbody",
        "thead",
        "tfoot",
        "tr",
        "ul",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
    ]
)
_CELL_TAGS = frozenset(("td", "th"))
_SKIP_TAGS = frozenset(
    [
        "head",
        "script",
        "style",
        "noscript",
        "template",
        "svg",
        "math",
        "object",
        "embed",
        "iframe",
        "audio",
        "video",
        "canvas",
        "map",
        "area",
        "img",
        "image",
        "input",
        "select",
        "textarea",
        "button",
        "nav",
        "aside",
        "figcaption",
        "title",
        "meta",
        "link",
        "rt",
        "rp",
    ]
)
_FIGURE_TAGS = frozenset(("img", "image", "svg", "figure", "picture"))

# epub:type / role values that mark text that is not part of the running text.
_NOTE_TYPES = frozenset(
    [
        "footnote",
        "footnotes",
        "endnote",
        "endnotes",
        "rearnote",
        "rearnotes",
        "note",
        "notes",
        "annotation",
        "doc-footnote",
        "doc-endnote",
        "doc-endnotes",
        "doc-notes",
    ]
)
_NOTEREF_TYPES = frozenset(("noteref", "doc-noteref"))
_PAGE_TYPES = frozenset(("pagebreak", "doc-pagebreak"))
_SKIP_CLASSES = frozenset(
    [
        "footnote",
        "footnotes",
        "endnote",
        "endnotes",
        "fnblock",
        "pagenum",
        "pageno",
        "page-num",
        "pagenumber",
        "page-number",
        "linenum",
        "linenumber",
        "line-number",
    ]
)
_NOTEREF_CLASSES = frozenset(
    ("fnanchor", "noteref", "footnote-ref", "footnote-link", "fn-ref", "fnref")
)

#: Structural semantics kept on blocks (epub:type and ARIA role values, with
#: the "doc-" prefix of roles removed).  Anything else is ignored.
STRUCTURE_TYPES = frozenset(
    [
        "cover",
        "titlepage",
        "halftitlepage",
        "title-page",
        "imprint",
        "imprimatur",
        "copyright-page",
        "toc",
        "loi",
        "lot",
        "loa",
        "lov",
        "landmarks",
        "page-list",
        "dedication",
        "epigraph",
        "contributors",
        "other-credits",
        "acknowledgments",
        "errata",
        "revision-history",
        "foreword",
        "preface",
        "introduction",
        "preamble",
        "frontispiece",
        "frontmatter",
        "colophon",
        "appendix",
        "index",
        "glossary",
        "bibliography",
        "credits",
        "afterword",
        "backmatter",
        "bodymatter",
        "chapter",
        "part",
        "volume",
    ]
)

_MARKER_TEXT_RE = re.compile(
    r"^[\[\(\{]?\s*(?:\d{1,4}|[*†‡§¶#]+|[ivxlc]{1,6}|[a-z])\s*[\]\)\}]?$", re.IGNORECASE
)
_BRACKETED_OR_SYMBOL_RE = re.compile(r"^(?:[\[\(\{]\s*\w{1,4}\s*[\]\)\}]|[*†‡§¶#]+)$")
_PG_CLASS_RE = re.compile(r"pg-?boilerplate|^pg-?(?:header|footer)$", re.IGNORECASE)
_PG_IDS = frozenset(
    ("pg-header", "pg-footer", "pg-machine-header", "pg-start-separator", "pg-end-separator")
)
_HIDDEN_STYLE_RE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)

_ENTITY_RE = re.compile(rb"&([A-Za-z][A-Za-z0-9]*);")
_SELF_CLOSING_RE = re.compile(
    rb"<((?!(?:area|base|br|col|embed|hr|img|input|link|meta|param|source|track|wbr)\b)"
    rb"[A-Za-z][\w:.-]*)(\s[^<>]*?)?/>"
)


_CELL_SEP = "\ue000"  # private-use placeholder between table cells, resolved in flush()


def _join_cells(text: str) -> str:
    """Join table cells with ", " (or a space after punctuation), dropping empty ones."""
    cells = [c.strip() for c in text.split(_CELL_SEP)]
    out = ""
    for cell in cells:
        if not cell:
            continue
        if out:
            out += " " if out[-1] in ",;:.!?—–-" else ", "
        out += cell
    return out


@dataclass(slots=True)
class Block:
    """One paragraph or heading of running text.

    Attributes
    ----------
    text : str
        Whitespace-normalised text.
    level : int
        1–6 for ``<h1>``–``<h6>``, 0 for any other block.
    marks : frozenset of str
        Structural ``epub:type``/``role`` values of the block and its
        ancestors, plus ``"pg"`` inside Project Gutenberg boilerplate.
    link_chars : int
        Characters of *text* that sit inside ``<a href>`` (contents pages).
    links : int
        Number of links in the block.
    """

    text: str
    level: int = 0
    marks: frozenset = frozenset()
    link_chars: int = 0
    links: int = 0

    @property
    def words(self) -> int:
        return len(self.text.split())


@dataclass
class Doc:
    """A content document reduced to blocks and anchors."""

    blocks: list[Block] = field(default_factory=list)
    #: id/name → index in :attr:`blocks` where that anchor starts.
    anchors: dict[str, int] = field(default_factory=dict)
    #: Anchors that sit on or label a picture (img/figure, or a caption
    #: repeating the picture's alt text); TOC entries pointing there are
    #: illustration captions, not chapters.
    figure_anchors: set[str] = field(default_factory=set)
    title: str = ""
    lang: str | None = None
    #: Structural marks of ``<body>`` (and ``<html>``).
    body_marks: frozenset = frozenset()
    #: True when the document was not well-formed XML and was read with the
    #: forgiving HTML parser.
    recovered: bool = False


# --------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------
def _html_entities_to_numeric(data: bytes) -> bytes:
    def repl(m: re.Match) -> bytes:
        name = m.group(1)
        if name in XML_ENTITIES:
            return m.group(0)
        cp = html.entities.name2codepoint.get(name.decode("ascii"))
        return b"&#%d;" % cp if cp is not None else m.group(0)

    return _ENTITY_RE.sub(repl, data)


def parse_markup(data: bytes, *, prefer_html: bool = False) -> tuple[BeautifulSoup, bool]:
    """Parse an XHTML or HTML document with BeautifulSoup (lxml).

    The document is tried as XML first (after turning HTML named entities
    such as ``&nbsp;`` into numeric references, which XML lacks).  When it is
    not well-formed, it is parsed with the lxml HTML parser, which repairs
    unclosed tags the way a browser does; self-closing non-void tags
    (``<a id="x"/>``, ``<div/>``) are expanded first because the HTML parser
    would otherwise leave them open.

    An internal DTD subset (``<!DOCTYPE x [ <!ENTITY ...> ]>``) is removed
    before parsing, so no custom entity is ever expanded (no "billion
    laughs", no external entity / XXE), and so are the references to its
    entities.  UTF-16/32 documents are turned into UTF-8 first, so that their
    subset is found too.

    Parameters
    ----------
    data : bytes
        The document.
    prefer_html : bool
        Skip the XML attempt unless the document declares itself as XML.

    Returns
    -------
    soup : bs4.BeautifulSoup
    recovered : bool
        True when the XML parse failed and the HTML parser was used.
    """
    utf8 = as_utf8(data)
    transcoded = utf8 is not data
    data = fix_char_refs(strip_internal_subset(utf8))
    head = data[:512].lstrip()
    try_xml = not prefer_html or head.startswith((b"<?xml", b"\xef\xbb\xbf<?xml"))
    if try_xml:
        candidate = data
        for attempt in range(2):
            try:
                safe_xml(candidate)
            except etree.XMLSyntaxError:
                if attempt == 0 and _ENTITY_RE.search(candidate):
                    candidate = _html_entities_to_numeric(candidate)
                    continue
                break
            return _soup(candidate, "lxml-xml"), False
    fixed = _SELF_CLOSING_RE.sub(rb"<\1\2></\1>", data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # XMLParsedAsHTMLWarning
        soup = _soup(fixed, "lxml", "utf-8" if transcoded else None)
    return soup, try_xml


#: Deepest element nesting kept by the HTML parse (what libxml2 allows in XML
#: without ``huge_tree``).  Elements nested deeper are dropped and their text
#: is kept: BeautifulSoup's tree builder walks up every open ancestor for each
#: piece of text after a sibling, so a deep document is quadratic (60,000
#: unclosed ``<span>`` and 6,000 ``<br>`` took 27 s for 700 kB).
MAX_DEPTH = 256


class _DepthCappedBuilder(LXMLTreeBuilder):
    """BeautifulSoup's lxml HTML tree builder, keeping at most MAX_DEPTH open elements.

    A start tag deeper than that is not passed on (nor its end tag); the text
    inside goes to the deepest element kept, in order, with a line break
    where a dropped block element or ``<br>`` was (words stay apart).
    """

    def initialize_soup(self, soup) -> None:
        super().initialize_soup(soup)
        self._kept: list[bool] = []  # per open element from lxml: passed on or not
        self._depth = 0  # open elements passed on

    def start(self, tag, attrib, nsmap={}) -> None:  # noqa: B006 - lxml's signature
        if self._depth >= MAX_DEPTH:
            self._kept.append(False)
            name = str(tag).rsplit("}", 1)[-1].lower()
            if name in _BLOCK_TAGS or name in _CELL_TAGS or name == "br":
                self.soup.handle_data("\n")
            return
        self._kept.append(True)
        self._depth += 1
        super().start(tag, attrib, nsmap)

    def end(self, tag) -> None:
        if not (self._kept.pop() if self._kept else True):
            return
        self._depth -= 1
        super().end(tag)


def _soup(markup: bytes, features: str, encoding: str | None = None) -> BeautifulSoup:
    """``BeautifulSoup(markup, features)``, as UTF-8 when the declared encoding is junk.

    BeautifulSoup hands lxml the encoding the document declares
    (``<?xml ... encoding="..."?>``, ``<meta charset>``) unchecked; a
    declaration with control characters or binary bytes in it (a damaged
    file) makes lxml raise ``ValueError`` / ``UnicodeDecodeError`` instead of
    parsing.  EPUB content documents are UTF-8 (or UTF-16 with a BOM, made
    UTF-8 before this), so UTF-8 is what they are read as then.
    """

    def parse(encoding: str | None) -> BeautifulSoup:
        if features == "lxml":  # HTML: deep nesting capped (see MAX_DEPTH)
            return BeautifulSoup(markup, builder=_DepthCappedBuilder(), from_encoding=encoding)
        return BeautifulSoup(markup, features, from_encoding=encoding)

    try:
        return parse(encoding)
    except ValueError:  # UnicodeDecodeError too
        if encoding == "utf-8":
            raise
        return parse("utf-8")


# --------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------
def _tokens(value) -> list[str]:
    if not value:
        return []
    if isinstance(value, (list, tuple)):
        value = " ".join(value)
    return str(value).lower().split()


def _semantics(tag) -> set[str]:
    """epub:type and role tokens of *tag*, prefixes ("z3998:", "doc-") removed too."""
    out: set[str] = set()
    for key in ("epub:type", "role"):
        for tok in _tokens(tag.attrs.get(key)):
            out.add(tok)
            if ":" in tok:
                out.add(tok.split(":", 1)[1])
            if tok.startswith("doc-"):
                out.add(tok[4:])
    return out


def _is_hidden(tag) -> bool:
    attrs = tag.attrs
    if "hidden" in attrs:
        return True
    if str(attrs.get("aria-hidden", "")).lower() == "true":
        return True
    style = attrs.get("style")
    return bool(style and _HIDDEN_STYLE_RE.search(str(style)))


def _text_of(tag) -> str:
    return clean(tag.get_text(" "))


class _Extractor:
    def __init__(self) -> None:
        self.doc = Doc()
        self.buf: list[str] = []
        self.buf_link_chars = 0
        self.buf_links = 0
        self.pending_ids: list[str] = []
        self.last_alt: str | None = None

    # -- blocks --------------------------------------------------------
    def flush(self, level: int, marks: frozenset, pre: bool = False) -> None:
        if not self.buf:
            return
        raw = "".join(self.buf)
        link_chars, links = self.buf_link_chars, self.buf_links
        self.buf.clear()
        self.buf_link_chars = 0
        self.buf_links = 0
        pieces = re.split(r"\n[ \t\r\f\v]*\n", raw) if pre else [raw]
        for piece in pieces:
            text = clean(PAGE_MARKER_RE.sub("", piece))
            if _CELL_SEP in text:
                text = _join_cells(text)
            if not text:
                continue
            if self.last_alt is not None and fold(text) == self.last_alt:
                # A caption repeating the picture's alt text: not read, and
                # anchors on it label the picture.
                self.doc.figure_anchors.update(self.pending_ids)
                self.last_alt = None
                continue
            self.last_alt = None
            self.pending_ids.clear()
            share = len(text) / max(1, len(raw))
            self.doc.blocks.append(
                Block(text, level, marks, min(len(text), int(link_chars * share)), links)
            )

    def anchor(self, ident: str | None, figure: bool = False) -> None:
        if not ident or ident in self.doc.anchors:
            return
        busy = any(s.strip() for s in self.buf)
        pos = len(self.doc.blocks) + (1 if busy else 0)
        self.doc.anchors[ident] = pos
        if figure:
            self.doc.figure_anchors.add(ident)
        elif not busy:
            self.pending_ids.append(ident)

    # -- walk ----------------------------------------------------------
    def run(self, soup: BeautifulSoup) -> Doc:
        doc = self.doc
        root = soup.find("html") or soup
        title = soup.find("title")
        if title is not None:
            doc.title = _text_of(title)
        for key in ("xml:lang", "lang"):
            if root is not soup and root.attrs.get(key):
                doc.lang = str(root.attrs[key]).strip() or None
                break
        body = soup.find("body") or root
        base_marks = frozenset()
        if root is not soup:
            base_marks |= frozenset(_semantics(root) & STRUCTURE_TYPES)
        if body is not root:
            base_marks |= frozenset(_semantics(body) & STRUCTURE_TYPES)
            if doc.lang is None and body.attrs.get("lang"):
                doc.lang = str(body.attrs["lang"]).strip() or None
        doc.body_marks = base_marks
        self.walk(body, base_marks)
        self.flush(0, base_marks)  # text right in <body>, after its last block
        return doc

    def walk(self, top, base_marks: frozenset) -> None:
        # Iterative traversal: real ebooks can nest deeper than Python's
        # recursion limit.  Stack items are ("enter", node, marks, level,
        # in_link, pre) or ("exit", name, outer_marks, inner_marks, level,
        # pre, in_link, is_block, is_cell).
        stack: list = [
            ("enter", child, base_marks, 0, False, False) for child in reversed(list(top.children))
        ]
        while stack:
            item = stack.pop()
            if item[0] == "exit":
                _, name, outer_marks, inner_marks, level, pre, in_link, is_block, is_cell = item
                if is_block:
                    self.flush(level, inner_marks, pre)
                elif is_cell:
                    self._cell_separator()
                continue
            _, node, marks, level, in_link, pre = item
            if isinstance(node, NavigableString):
                if isinstance(node, (Comment, ProcessingInstruction, Declaration, Doctype)):
                    continue
                text = str(node)
                if text:
                    self.buf.append(text)
                    if in_link:
                        self.buf_link_chars += len(text.strip())
                continue
            name = (node.name or "").lower()
            if ":" in name:
                name = name.split(":", 1)[1]
            attrs = node.attrs
            ident = attrs.get("id") or (attrs.get("name") if name == "a" else None)
            if isinstance(ident, list):
                ident = ident[0] if ident else None
            sem = _semantics(node)
            classes = set(_tokens(attrs.get("class")))
            ident_l = str(ident).lower() if ident else ""

            # --- content that is never read --------------------------------
            skip = (
                name in _SKIP_TAGS
                or _is_hidden(node)
                or bool(sem & _NOTE_TYPES)
                or bool(sem & _PAGE_TYPES)
                or bool(classes & _SKIP_CLASSES)
            )
            if not skip:
                skip = self._is_note_reference(node, name, sem, classes, in_heading=level > 0)
            if skip:
                is_figure = name in _FIGURE_TAGS
                if name in ("img", "image"):
                    alt = attrs.get("alt")
                    alt = fold(str(alt)) if alt else ""
                    self.last_alt = alt or None
                    self.pending_ids.clear()  # only anchors after the picture label it
                self.anchor(ident, figure=is_figure)
                if is_figure:
                    for sub in node.find_all(id=True):
                        self.anchor(sub.get("id"), figure=True)
                elif name not in ("head", "script", "style"):
                    for sub in node.find_all(id=True):
                        self.anchor(sub.get("id"))
                continue

            new_marks = marks
            extra = sem & STRUCTURE_TYPES
            if (classes and any(_PG_CLASS_RE.search(c) for c in classes)) or ident_l in _PG_IDS:
                extra = set(extra) | {"pg"}
            if extra:
                new_marks = marks | frozenset(extra)

            is_block = name in _BLOCK_TAGS or name in _HEADINGS
            is_cell = name in _CELL_TAGS
            new_level = _HEADINGS.get(name, level)
            new_pre = pre or name == "pre"
            if is_block:
                self.flush(level, marks, pre)
            if name == "br":
                self.buf.append("\n")
            self.anchor(ident, figure=name in _FIGURE_TAGS)
            new_link = in_link or (name == "a" and bool(attrs.get("href")))
            if name == "a" and attrs.get("href") and not in_link:
                self.buf_links += 1
            stack.append(
                ("exit", name, marks, new_marks, new_level, new_pre, new_link, is_block, is_cell)
            )
            children = list(node.children)
            for child in reversed(children):
                stack.append(("enter", child, new_marks, new_level, new_link, new_pre))

    def _cell_separator(self) -> None:
        self.buf.append(_CELL_SEP)

    @staticmethod
    def _is_note_reference(node, name: str, sem: set, classes: set, in_heading: bool) -> bool:
        if sem & _NOTEREF_TYPES or classes & _NOTEREF_CLASSES:
            return True
        if in_heading:
            return False  # "<h2><a href='#toc'>IV</a></h2>" is a heading, not a note mark
        if name == "a":
            href = str(node.attrs.get("href") or "")
            if "#" in href and not href.startswith(("http:", "https:", "mailto:")):
                return bool(_MARKER_TEXT_RE.match(_text_of(node)))
            return False
        if name == "sup":
            text = _text_of(node)
            if not text or not _MARKER_TEXT_RE.match(text):
                return False
            # "[12]", "*", "†" or a marker that is a link: a note reference;
            # a plain "2" (m², 1st) is kept.
            return (
                bool(_BRACKETED_OR_SYMBOL_RE.match(text)) or node.find("a", href=True) is not None
            )
        return False


def extract(soup: BeautifulSoup) -> Doc:
    """Reduce a parsed document to blocks and anchors (see module docstring).

    Parameters
    ----------
    soup : bs4.BeautifulSoup
        A document from :func:`parse_markup`.

    Returns
    -------
    Doc
    """
    return _Extractor().run(soup)


def read_document(data: bytes, *, prefer_html: bool = False) -> tuple[Doc, BeautifulSoup]:
    """Parse and extract a document in one go; see :func:`parse_markup`."""
    soup, recovered = parse_markup(data, prefer_html=prefer_html)
    doc = extract(soup)
    doc.recovered = recovered
    return doc, soup
