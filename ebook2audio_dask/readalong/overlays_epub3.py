"""What an EPUB 2 book needs to become EPUB 3: package metadata, a navigation document.

Used by :mod:`.overlays` on an EPUB 2 input; the content documents' doctype
is changed where they are written.
"""

from __future__ import annotations

import posixpath
import re
from urllib.parse import quote, unquote, urldefrag

from lxml import etree

from ..safexml import local_name

__all__ = [
    "OPF_NS",
    "html5_markup",
    "nav_document",
    "relink",
    "upgrade_package",
    "xhtml_names",
]

OPF_NS = "http://www.idpf.org/2007/opf"
_OPF_ATTR_NS = "{http://www.idpf.org/2007/opf}"
_XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
_NCX_NS = "http://www.daisy.org/z3986/2005/ncx/"


def _new_meta(metadata, after, prop: str, value: str, refines: str | None = None, scheme=None):
    meta = etree.Element(f"{{{OPF_NS}}}meta")
    if refines:
        meta.set("refines", refines)
    meta.set("property", prop)
    if scheme:
        meta.set("scheme", scheme)
    meta.text = value
    meta.tail = after.tail
    after.addnext(meta)
    return meta


def upgrade_package(package) -> None:
    """Turn an EPUB 2 package element into an EPUB 3 one, in place.

    ``version`` becomes ``3.0``; the ``opf:`` attributes of the metadata
    (``role``, ``file-as``, ``scheme``, ``event``) and ``xsi:type`` become
    EPUB 3 ``meta`` refinements or are dropped; a second ``dc:date`` (EPUB 3
    allows one) becomes a ``meta`` of its event.  ``dcterms:modified`` is
    the caller's.
    """
    package.set("version", "3.0")
    metadata = next((el for el in package if local_name(el.tag) == "metadata"), None)
    if metadata is None:
        return
    dates = 0
    for n, el in enumerate(list(metadata)):
        if not isinstance(el.tag, str):
            continue
        name = local_name(el.tag)
        role = el.attrib.pop(f"{_OPF_ATTR_NS}role", None)
        file_as = el.attrib.pop(f"{_OPF_ATTR_NS}file-as", None)
        event = el.attrib.pop(f"{_OPF_ATTR_NS}event", None)
        el.attrib.pop(f"{_OPF_ATTR_NS}scheme", None)
        el.attrib.pop(_XSI_TYPE, None)
        if name == "date":
            dates += 1
            if dates > 1:  # EPUB 3 has one dc:date; the others keep their value as a meta
                meta = _new_meta(metadata, el, "dcterms:date", (el.text or "").strip())
                if event:
                    meta.set("id", f"e2a-date-{event}-{n}")
                metadata.remove(el)
                continue
        if role or file_as:
            ident = el.get("id") or f"e2a-{name}-{n}"
            el.set("id", ident)
            last = el
            if role:
                last = _new_meta(metadata, last, "role", role, f"#{ident}", "marc:relators")
            if file_as:
                _new_meta(metadata, last, "file-as", file_as, f"#{ident}")


def _nav_points(parent, ncx_dir: str, nav_dir: str, out) -> None:
    points = [el for el in parent if local_name(el.tag) == "navPoint"]
    if not points:
        return
    ol = etree.SubElement(out, "{http://www.w3.org/1999/xhtml}ol")
    for point in points:
        li = etree.SubElement(ol, "{http://www.w3.org/1999/xhtml}li")
        label = " ".join(
            "".join(
                t for el in point if local_name(el.tag) == "navLabel" for t in el.itertext()
            ).split()
        )
        content = next((el for el in point if local_name(el.tag) == "content"), None)
        src = content.get("src", "") if content is not None else ""
        path, frag = urldefrag(src)
        target = posixpath.normpath(posixpath.join(ncx_dir, unquote(path)))
        href = quote(posixpath.relpath(target, nav_dir)) + (f"#{frag}" if frag else "")
        a = etree.SubElement(li, "{http://www.w3.org/1999/xhtml}a", href=href)
        a.text = label or target
        _nav_points(point, ncx_dir, nav_dir, li)


def nav_document(ncx, ncx_path: str, nav_path: str, title: str, lang: str) -> bytes:
    """An EPUB 3 navigation document holding the NCX's table of contents.

    Parameters
    ----------
    ncx : lxml.etree._Element or None
        The NCX document's root (parsed safely by the caller); ``None``:
        the list holds one entry, the navigation document itself.
    ncx_path, nav_path : str
        Archive paths of the NCX and of the navigation document (the NCX's
        links are rewritten relative to the latter).
    title : str
        Heading of the list.
    lang : str
        Language of the document (``lang`` and ``xml:lang``).

    Returns
    -------
    bytes
        The XHTML document.
    """
    xhtml = "http://www.w3.org/1999/xhtml"
    html = etree.Element(
        f"{{{xhtml}}}html", nsmap={None: xhtml, "epub": "http://www.idpf.org/2007/ops"}
    )
    if lang:
        html.set("{http://www.w3.org/XML/1998/namespace}lang", lang)
        html.set("lang", lang)
    head = etree.SubElement(html, f"{{{xhtml}}}head")
    etree.SubElement(head, f"{{{xhtml}}}title").text = title
    body = etree.SubElement(html, f"{{{xhtml}}}body")
    nav = etree.SubElement(body, f"{{{xhtml}}}nav", id="toc")
    nav.set("{http://www.idpf.org/2007/ops}type", "toc")
    etree.SubElement(nav, f"{{{xhtml}}}h1").text = title
    if ncx is not None:
        navmap = next((el for el in ncx.iter() if local_name(el.tag) == "navMap"), None)
        if navmap is not None:
            _nav_points(navmap, posixpath.dirname(ncx_path), posixpath.dirname(nav_path), nav)
    if len(nav) == 1:  # a nav needs a list
        ol = etree.SubElement(nav, f"{{{xhtml}}}ol")
        li = etree.SubElement(ol, f"{{{xhtml}}}li")
        etree.SubElement(li, f"{{{xhtml}}}a", href="#toc").text = title
    return etree.tostring(
        html, xml_declaration=True, encoding="utf-8", doctype="<!DOCTYPE html>", pretty_print=True
    )


_HTTP_EQUIV = frozenset(("content-type", "default-style", "refresh", "content-language"))
_INTEGER_ATTRS = frozenset(("width", "height"))
_INTEGER_ELEMENTS = frozenset(("img", "video", "canvas", "iframe", "embed", "object", "input"))


def _add_style(el, rule: str) -> None:
    style = (el.get("style") or "").strip()
    if style and not style.endswith(";"):
        style += ";"
    el.set("style", f"{style} {rule}".strip() if style else rule)


def html5_markup(root) -> None:
    """Make an XHTML 1.1 document's markup valid HTML5, in place; its text is untouched.

    Presentational attributes HTML5 dropped (``align``, ``valign``, a
    non-integer ``width``/``height``, ``bgcolor``, a table's ``border``
    other than ``1``, ``cellpadding``...) become CSS in ``style``; a table's
    ``summary`` and ``<meta http-equiv>`` values HTML5 does not know
    (``Content-Style-Type``) are removed.
    """
    for el in list(root.iter()):
        if not isinstance(el.tag, str):
            continue
        name = local_name(el.tag)
        if name == "meta" and el.get("http-equiv"):
            if el.get("http-equiv", "").lower() not in _HTTP_EQUIV:
                parent = el.getparent()
                prev = el.getprevious()
                if el.tail:  # keep the white space that followed it
                    if prev is not None:
                        prev.tail = (prev.tail or "") + el.tail
                    else:
                        parent.text = (parent.text or "") + el.tail
                parent.remove(el)
            continue
        if "align" in el.attrib:
            value = el.attrib.pop("align").strip().lower()
            if name in ("table", "img") and value in ("left", "right"):
                _add_style(el, f"float: {value};")
            elif name == "table" and value == "center":
                _add_style(el, "margin-left: auto; margin-right: auto;")
            elif value in ("left", "right", "center", "justify"):
                _add_style(el, f"text-align: {value};")
        if "valign" in el.attrib:
            _add_style(el, f"vertical-align: {el.attrib.pop('valign').strip()};")
        if "bgcolor" in el.attrib:
            _add_style(el, f"background-color: {el.attrib.pop('bgcolor').strip()};")
        for attr in _INTEGER_ATTRS:
            value = (el.get(attr) or "").strip()
            if value and (name not in _INTEGER_ELEMENTS or not value.isdigit()):
                del el.attrib[attr]
                size = value if not value.isdigit() else f"{value}px"
                _add_style(el, f"{attr}: {size};")
        if name == "table":
            el.attrib.pop("summary", None)
            border = el.get("border")
            if border is not None and border.strip() not in ("", "1"):
                del el.attrib["border"]
                if border.strip().isdigit() and int(border) > 0:
                    _add_style(el, f"border: {int(border)}px solid;")
            for attr in ("cellpadding", "cellspacing", "frame", "rules"):
                el.attrib.pop(attr, None)


def xhtml_names(names: list[str], taken: set[str]) -> dict[str, str]:
    """New archive names ending in ``.xhtml`` for documents named otherwise.

    EPUB 3 wants XHTML content documents named ``*.xhtml`` (epubcheck
    HTM-014a): ``x.htm.html`` becomes ``x.htm.xhtml``.  Names already in
    *taken* are avoided; the new ones are added to it.

    Returns
    -------
    dict
        Old archive path -> new one, for the documents renamed.
    """
    renamed: dict[str, str] = {}
    for name in names:
        if name.lower().endswith(".xhtml") or name in renamed:
            continue
        stem, ext = posixpath.splitext(name)
        stem = stem if ext.lower() in (".html", ".htm", ".xml", "") else name
        new, n = f"{stem}.xhtml", 1
        while new in taken:
            n += 1
            new = f"{stem}-{n}.xhtml"
        taken.add(new)
        renamed[name] = new
    return renamed


_LINK_ATTRS = ("href", "src", "{http://www.w3.org/1999/xlink}href")


def relink(root, path: str, renamed: dict[str, str]) -> None:
    """Point the links of the document at archive path *path* to renamed documents.

    ``href``, ``src`` and ``xlink:href`` values naming a document in
    *renamed* (relative to *path*'s folder, fragment kept) are rewritten;
    absolute URLs and same-document fragments are left alone.
    """
    base = posixpath.dirname(path)
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        for attr in _LINK_ATTRS:
            value = el.get(attr)
            if not value or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", value):
                continue
            ref, frag = urldefrag(value)
            if not ref:
                continue
            new = renamed.get(posixpath.normpath(posixpath.join(base, unquote(ref))))
            if new is not None:
                href = quote(posixpath.relpath(new, base or "."))
                el.set(attr, href + (f"#{frag}" if frag else ""))
