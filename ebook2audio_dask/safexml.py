"""Hardened XML parsing, shared by the readers (:mod:`.ingest`) and the lexicons (:mod:`.text`).

Untrusted XML (an EPUB's package document, an FB2 book, a PLS lexicon) is
parsed with :func:`safe_xml`: no entity expansion, no DTD, no network, and an
internal DTD subset that declares entities removed first.  The byte-level
guards (:func:`as_utf8`, :func:`strip_internal_subset`, :func:`fix_char_refs`)
are public for the XHTML reader, which parses with BeautifulSoup after them.

This module depends on nothing else in the package, so both :mod:`.ingest`
and :mod:`.text` can use it without depending on each other.
"""

from __future__ import annotations

import codecs
import html.entities
import re
from typing import Any

from lxml import etree

__all__ = [
    "WIDE_BOMS",
    "XML_ENTITIES",
    "as_utf8",
    "fix_char_refs",
    "local_name",
    "safe_xml",
    "strip_internal_subset",
]

#: Byte-order marks of UTF-32 and UTF-16 and their codecs, UTF-32 first: its
#: little-endian BOM starts with UTF-16's.
WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
#: The entities XML predefines (names as bytes).
XML_ENTITIES = frozenset((b"amp", b"lt", b"gt", b"quot", b"apos"))

# An internal DTD subset; quoted strings and comments may hold "]>".  The
# alternatives are mutually exclusive, so a failed match cannot backtrack badly.
_INTERNAL_SUBSET_RE = re.compile(
    rb"<!DOCTYPE[^\[>]*\[(?:\"[^\"]*\"|'[^']*'|<!--.*?-->|<(?!!--)|[^\]\"'<])*\]\s*>",
    re.DOTALL | re.IGNORECASE,
)
_ENTITY_DECL_RE = re.compile(rb"<!ENTITY\s+([^\s%\"'>]+)", re.IGNORECASE)
_XML_DECL_ENCODING_RE = re.compile(r"""^(\s*<\?xml[^>]*?\bencoding\s*=\s*["'])[^"']*(["'])""")
# Character references that may name a UTF-16 surrogate (checked in fix_char_refs).
_SURROGATE_REF_RE = re.compile(rb"&#(?:[xX]0*([dD][0-9a-fA-F]{3})|0*(5[5-7][0-9]{3}));")


def local_name(tag: Any, *, lower: bool = False) -> str:
    """The local part of an lxml tag or attribute name (``"{ns}p"`` -> ``"p"``).

    Parameters
    ----------
    tag : str or object
        An element's ``tag`` or an attribute's key; comments and processing
        instructions (whose ``tag`` is not a string) give ``""``.
    lower : bool
        Lower-case the name (EPUB package documents are matched case-blind).

    Returns
    -------
    str
    """
    if not isinstance(tag, str):
        return ""
    name = tag.rsplit("}", 1)[-1]
    return name.lower() if lower else name


def as_utf8(data: bytes) -> bytes:
    """UTF-16/32 XML (with a BOM) as UTF-8, so that byte-level guards see the markup.

    The XML declaration's ``encoding`` is rewritten to ``utf-8``.  Anything
    else (and a wide document that does not decode) is returned as it is,
    the same object.
    """
    for bom, codec in WIDE_BOMS:
        if data.startswith(bom):
            try:
                text = data.decode(codec)
            except UnicodeDecodeError:
                return data
            return _XML_DECL_ENCODING_RE.sub(r"\1utf-8\2", text, count=1).encode("utf-8")
    return data


def strip_internal_subset(data: bytes) -> bytes:
    """Remove an internal DTD subset that declares entities (``<!DOCTYPE x [...]>``).

    References to the entities it declared are removed too (they would be
    read out as "&xxe;"), except those named like HTML entities (``&nbsp;``,
    which old books declare for themselves): they are read as HTML's.
    """
    if b"<!ENTITY" not in data and b"<!entity" not in data:
        return data
    m = _INTERNAL_SUBSET_RE.search(data)
    if m is None:
        return data
    rest = data[m.end() :]
    names = {
        n
        for n in _ENTITY_DECL_RE.findall(m.group(0))
        if n not in XML_ENTITIES and n.decode("latin-1") not in html.entities.name2codepoint
    }
    if names:
        refs = re.compile(rb"&(?:" + b"|".join(re.escape(n) for n in sorted(names)) + rb");")
        rest = refs.sub(b"", rest)
    return data[: m.start()] + rest


def fix_char_refs(data: bytes) -> bytes:
    """Character references to UTF-16 surrogates (``&#xD800;``) become U+FFFD.

    They are not XML characters: a strict parse refuses the document, and a
    recovering one keeps the surrogate, after which lxml raises
    ``UnicodeDecodeError`` when the attribute or text holding it is read.
    """
    if b"&#" not in data:
        return data

    def repl(m: re.Match) -> bytes:
        value = int(m.group(1), 16) if m.group(1) else int(m.group(2))
        return b"&#xFFFD;" if 0xD800 <= value <= 0xDFFF else m.group(0)

    return _SURROGATE_REF_RE.sub(repl, data)


def safe_xml(data: bytes, *, recover: bool = False, huge_tree: bool = False) -> etree._Element:
    """Parse XML bytes with entity expansion and network access disabled.

    An internal DTD subset that declares entities is removed first (UTF-16
    and UTF-32 documents are turned into UTF-8 for that), so a reference to
    one of its entities is left undefined: libxml2 would otherwise refuse the
    whole document (or, recovering, drop everything after the reference)
    when the declarations are an entity bomb, even without expanding them.
    Character references to UTF-16 surrogates (``&#xD800;``) become U+FFFD.

    Parameters
    ----------
    data : bytes
        The XML document.
    recover : bool
        Let libxml2 repair errors instead of raising.
    huge_tree : bool
        Lift libxml2's 10 MB limit on one text node (and its depth limit
        from 256 to 2048), for documents whose size the caller has already
        bounded (an FB2 book within ``ingest.max-file-size``).  Entities
        stay unexpanded either way, so the tree is no bigger than the bytes.

    Returns
    -------
    lxml.etree._Element
        The root element.

    Raises
    ------
    lxml.etree.XMLSyntaxError
        When the document is not well-formed (and *recover* is false), or
        is empty.
    """
    data = fix_char_refs(strip_internal_subset(as_utf8(data)))
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=huge_tree,
        recover=recover,
        remove_comments=True,
        remove_pis=True,
    )
    root = etree.fromstring(data, parser)
    if root is None:
        raise etree.XMLSyntaxError("empty document", None, 0, 0, "<bytes>")
    return root
