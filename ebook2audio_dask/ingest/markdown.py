"""Markdown (``.md``) reader.

The Markdown is rendered to HTML with :mod:`markdown_it` (CommonMark) and
read by the single-file HTML reader, so chapters are cut at headings by the
same rule: the highest heading level that occurs at least twice
(``#``, else ``##``...).  A YAML front-matter block (``---`` ... ``---``)
gives ``title``, ``author`` and ``lang``/``language``; otherwise the title
is the first ``#`` heading when there is only one.
"""

from __future__ import annotations

import html
import re

import yaml

from ._sections import BookContent
from ._text import clean, split_authors
from .html import read_html

__all__ = ["read_markdown"]

_FRONT_MATTER_RE = re.compile(
    r"\A\ufeff?---[ \t]*\r?\n(.*?)\r?\n(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.DOTALL
)
_H1_RE = re.compile(r"^#[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def _front_matter(text: str) -> tuple[dict, str]:
    m = _FRONT_MATTER_RE.match(text)
    if not m or len(m.group(1)) > 65536:
        return {}, text
    try:
        meta = yaml.safe_load(m.group(1))
    except yaml.YAMLError:
        return {}, text
    if not isinstance(meta, dict):
        return {}, text
    return meta, text[m.end() :]


def _str(value) -> str:
    if isinstance(value, (list, tuple)):
        return "; ".join(_str(v) for v in value)
    return clean(str(value)) if value is not None else ""


def read_markdown(text: str, source: str) -> BookContent:
    """Read a Markdown book (already decoded).

    Parameters
    ----------
    text : str
        The Markdown text.
    source : str
        Path or URL, for messages.

    Returns
    -------
    BookContent
        Metadata and the proposed sections (not yet classified).
    """
    from markdown_it import MarkdownIt

    meta, body = _front_matter(text)
    title = _str(meta.get("title"))
    if not title:
        h1 = _H1_RE.findall(body)
        if len(h1) == 1:
            title = clean(re.sub(r"[*_`]", "", h1[0]))
    author = _str(meta.get("author") or meta.get("authors") or meta.get("creator"))
    language = _str(meta.get("lang") or meta.get("language")) or None
    rendered = MarkdownIt("commonmark", {"html": True}).render(body)
    head = f"<title>{html.escape(title)}</title>" if title else ""
    if author:
        head += f'<meta name="author" content="{html.escape(author)}"/>'
    lang = f' lang="{html.escape(language)}"' if language else ""
    page = (
        f'<!DOCTYPE html><html{lang}><head><meta charset="utf-8"/>{head}</head>'
        f"<body>{rendered}</body></html>"
    )
    content = read_html(page.encode("utf-8"), source)
    if title:
        content.title = title
    if author:
        content.authors = split_authors(author)
    return content
