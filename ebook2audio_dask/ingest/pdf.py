"""PDF reader (text layer through :mod:`pypdf`, no Calibre needed).

A PDF holds positioned lines, not paragraphs or chapters, so this reader
guesses them back:

1. **Text** of every page with pypdf's text extraction (the text layer: a
   scanned book without one has no text to read, and fails with a clear
   error).
2. **Running headers and footers**: a line among the first or last three of
   a page whose text, with digits ignored ("Page 12" = "Page 7"), recurs
   at that edge on at least three pages, and on at least a fifth of all
   pages or on at least 40 % of the pages of its own stretch of pages (a
   chapter's running title), is removed from every page's edge.  So is a
   bare page number ("12", "- 12 -", "xii", "Page 12", "12 / 300") in the
   first or last two lines.
3. **Paragraphs**: lines are joined with spaces; a word hyphenated at a
   line end is joined without its hyphen when the next line starts with a
   lower-case letter; a paragraph ends at a blank line, and after a line
   clearly shorter than the text's usual line length (the last line of a
   paragraph).  Paragraphs run on across page breaks.
4. **Chapters** come from the PDF's outline (bookmarks) when it has one:
   the top level, or the first level with several entries when the top
   level is a single entry wrapping the book.  A chapter starts where its
   title appears on the destination page (else at the top of the page);
   the title lines become headings, and a first sub-entry whose title is
   printed right under it on the same page is taken as its subtitle
   ("STAVE ONE." + "MARLEY'S GHOST.").  Pages before the first entry are
   front matter candidates; front/back matter is then recognised by the
   shared rules (titles such as "Contents", "Licence").
5. **Without an outline** the cleaned text is read by the plain-text
   reader's chapter heading rules ("CHAPTER IV", "Chapter 4: ...",
   "STAVE ONE."...), a short line at the top of a page counting as set
   apart like a heading after blank lines.
6. **Metadata**: ``/Title`` and ``/Author`` of the document information
   (a title that is a file name, such as "Microsoft Word - book.docx", is
   ignored) and the catalog's ``/Lang``.

Encrypted PDFs that open with an empty password (only copying/printing
restricted) are read; others fail with a clear error.
"""

from __future__ import annotations

import io
import re
import statistics
from dataclasses import dataclass

from ..errors import BookError
from ..logs import get_logger
from ._sections import BookContent, Section, mark_gutenberg
from ._text import clean, fold, split_authors
from ._xhtml import Block

__all__ = ["read_pdf"]

log = get_logger(__name__)

_EDGE_LINES = 3
_PAGE_NUMBER_RE = re.compile(
    r"^[\s\-–—·•|\[\]()]*(?:(?:page|p\.|pg\.?|seite|pagina|página|bladzijde)\s*)?"
    r"(?:\d{1,4}|[ivxlcdm]{1,7})(?:\s*(?:/|of|de|von|sur|van)\s*\d{1,4})?[\s\-–—·•|\[\]()]*$",
    re.IGNORECASE,
)
_DIGITS_RE = re.compile(r"\d+")
_FILE_TITLE_RE = re.compile(
    r"(?:^microsoft\s+\w+\s+-\s+)|(?:\.(?:docx?|odt|rtf|txt|pdf|tex|indd|html?|pages)$)|^untitled$",
    re.IGNORECASE,
)
_PARA_END_CHARS = '.!?:;"”’»)…]'


@dataclass
class _Entry:
    title: str
    page: int
    children: list


def _open(data: bytes, source: str):
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        encrypted = reader.is_encrypted
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise BookError(source, f"not a valid PDF: {exc}") from exc
    if encrypted:
        try:
            ok = reader.decrypt("")
        except DependencyError as exc:
            raise BookError(
                source, "encrypted PDF: reading it needs the 'cryptography' package"
            ) from exc
        except (PdfReadError, NotImplementedError, ValueError, KeyError) as exc:
            raise BookError(source, f"encrypted PDF: cannot decrypt it ({exc})") from exc
        if not ok:
            raise BookError(source, "encrypted PDF: its text cannot be read without the password")
    return reader


def _metadata(reader) -> tuple[str | None, tuple[str, ...], str | None]:
    try:
        info = reader.metadata or {}
    except Exception:  # noqa: BLE001 - a damaged info dictionary is no reason to fail the book
        info = {}
    title = clean(str(info.get("/Title") or ""))
    if title and _FILE_TITLE_RE.search(title):
        title = ""
    author = clean(str(info.get("/Author") or ""))
    authors = split_authors(author) if author else ()
    language = None
    try:
        lang = reader.trailer["/Root"].get("/Lang")
        language = clean(str(lang)) if lang else None
    except Exception:  # noqa: BLE001 - a damaged catalogue: no language, the book is read
        language = None
    return title or None, tuple(authors), language or None


def _outline(reader) -> list[_Entry]:
    """The outline as a tree of entries with 0-based page numbers."""

    def build(items) -> list[_Entry]:
        out: list[_Entry] = []
        for item in items:
            if isinstance(item, list):
                if out:
                    out[-1].children.extend(build(item))
                else:
                    out.extend(build(item))
                continue
            try:
                page = reader.get_destination_page_number(item)
            except Exception:  # noqa: BLE001 - a damaged outline entry points nowhere
                page = None
            title = clean(str(getattr(item, "title", "") or ""))
            if page is None or page < 0 or not title:
                continue
            out.append(_Entry(title, page, []))
        return out

    try:
        return build(reader.outline)
    except Exception:
        log.debug("unreadable PDF outline", exc_info=True)
        return []


def _key(line: str) -> str:
    return _DIGITS_RE.sub("#", " ".join(line.casefold().split()))


def _is_page_number(line: str) -> bool:
    return _PAGE_NUMBER_RE.match(line.strip()) is not None


def _edge(lines: list[str], top: bool) -> list[int]:
    """Indices of the first (or last) few non-blank lines."""
    order = range(len(lines)) if top else range(len(lines) - 1, -1, -1)
    return [i for i in order if lines[i]][:_EDGE_LINES]


def _strip_running_lines(pages: list[list[str]], titles: set[str]) -> list[list[str]]:
    """Remove running headers/footers and page numbers (see the module docstring)."""
    n = len(pages)
    seen: dict[tuple[bool, str], list[int]] = {}
    for p, lines in enumerate(pages):
        for top in (True, False):
            for key in {_key(lines[i]) for i in _edge(lines, top)}:
                seen.setdefault((top, key), []).append(p)
    running = set()
    for (top, key), where in seen.items():
        count = len(where)
        if count < 3:
            continue
        span = where[-1] - where[0] + 1
        if count >= 0.2 * n or count >= 0.4 * span or key in titles:
            running.add((top, key))

    out = []
    for lines in pages:
        drop = set()
        for top in (True, False):
            for k, i in enumerate(_edge(lines, top)):
                line = lines[i]
                if (top, _key(line)) in running or (k < 2 and _is_page_number(line)):
                    drop.add(i)
                else:
                    break
        kept = [line for i, line in enumerate(lines) if i not in drop]
        while kept and not kept[0]:
            kept.pop(0)
        while kept and not kept[-1]:
            kept.pop()
        out.append(kept)
    return out


def _page_lines(text: str) -> list[str]:
    """Lines of a page's layout text: cleaned, each prefixed by its indentation (spaces)."""
    lines = []
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        raw = raw.replace("\u00a0", " ").replace("\t", "    ").rstrip()
        indent = len(raw) - len(raw.lstrip(" "))
        text = clean(raw)
        lines.append(" " * indent + text if text else "")
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _relative(pages: list[list[str]]) -> list[list[tuple[str, int]]]:
    """Lines as (text, indentation beyond the page's left margin)."""
    out = []
    for lines in pages:
        indents = [len(x) - len(x.lstrip(" ")) for x in lines if len(x.strip()) >= 20]
        base = min(indents) if indents else 0
        out.append(
            [
                (x.strip(), max(0, len(x) - len(x.lstrip(" ")) - base)) if x else ("", 0)
                for x in lines
            ]
        )
    return out


def _paragraphs(lines: list[tuple[str, int]], typical: float) -> list[str]:
    """Join (text, indent) lines ("" = blank line) into paragraphs (see the module docstring)."""
    paras: list[str] = []
    current = ""
    prev_line, prev_indent = "", 0
    for line, indent in lines:
        if not line:
            if current:
                paras.append(current)
            current, prev_line, prev_indent = "", "", 0
            continue
        if current:
            short = len(prev_line) < 0.6 * typical and prev_line[-1] in _PARA_END_CHARS
            # a first-line indent; the same indent after a short line (two one-line
            # paragraphs); a different indent for centred lines
            indented = (
                indent > prev_indent + 1
                or (
                    indent >= 2
                    and abs(indent - prev_indent) <= 1
                    and (len(prev_line) < 0.8 * typical or prev_line[-1] in _PARA_END_CHARS)
                )
                or (indent >= 6 and abs(indent - prev_indent) > 1)
            )
            marker = line.startswith("***") or prev_line.endswith("***")  # Gutenberg's markers
            if short or indented or marker:
                paras.append(current)
                current = line
            elif (
                current.endswith("-")
                and len(current) > 1
                and current[-2].isalpha()
                and line[:1].islower()
            ):
                current = current[:-1] + line
            else:
                current = f"{current} {line}"
        else:
            current = line
        prev_line, prev_indent = line, indent
    if current:
        paras.append(current)
    return [p for p in (clean(p) for p in paras) if p]


def _text_of(line) -> str:
    return line[0] if isinstance(line, tuple) else line


def _find_title(
    lines: list[str], title: str, start: int = 0, window: int = 15
) -> tuple[int, int] | None:
    """(first, end) line indices where *title* is printed (over up to 3 lines), or None."""
    want = fold(title).replace(" ", "")
    if not want:
        return None
    for i in range(start, min(len(lines), start + window)):
        if not _text_of(lines[i]):
            continue
        got = ""
        for j in range(i, min(len(lines), i + 3)):
            got += fold(_text_of(lines[j])).replace(" ", "")
            if got == want:
                return i, j + 1
            if not want.startswith(got):
                break
    return None


def _extract(page) -> str:
    """A page's text in pypdf's layout mode (indentation and blank lines kept)."""
    try:
        return page.extract_text(extraction_mode="layout") or ""
    except (RecursionError, MemoryError):
        raise
    except Exception:  # noqa: BLE001 - layout mode is stricter about odd fonts: plain mode
        return page.extract_text() or ""


def _choose_level(entries: list[_Entry]) -> list[_Entry]:
    while len(entries) == 1 and len(entries[0].children) >= 2:
        entries = entries[0].children
    return entries


def read_pdf(data: bytes, source: str) -> BookContent:
    """Read the text of a PDF book.

    Parameters
    ----------
    data : bytes
        The ``.pdf`` file.
    source : str
        Path or URL, for messages.

    Returns
    -------
    BookContent
        Metadata and the proposed sections (not yet classified).

    Raises
    ------
    BookError
        Not a readable PDF, encrypted with a password, or without text.
    """
    reader = _open(data, source)
    title, authors, language = _metadata(reader)
    raw_pages: list[list[str]] = []
    try:
        for page in reader.pages:
            try:
                text = _extract(page)
            except RecursionError:
                raise
            except Exception as exc:  # noqa: BLE001 - one damaged page does not lose the book
                log.warning("%s: a page's text cannot be extracted (%s); skipped", source, exc)
                text = ""
            raw_pages.append(_page_lines(text))
    except RecursionError:
        raise
    except Exception as exc:
        raise BookError(source, f"not a valid PDF: {exc}") from exc
    if not any(any(lines) for lines in raw_pages):
        raise BookError(
            source, "no readable text (the PDF has no text layer: a scan needs OCR first)"
        )

    entries = _choose_level(_outline(reader))
    titles = {_key(e.title) for e in entries}
    if title:
        titles.add(_key(title))
    pages = _relative(_strip_running_lines(raw_pages, titles))
    lengths = [len(t) for lines in pages for t, _ in lines if len(t) >= 20]
    typical = statistics.median(lengths) if lengths else 60.0

    if len(entries) < 2:
        return BookContent(title, authors, language, _sections_from_text(pages, typical, source))

    # chapter starts: (page, line, title, heading lines)
    starts: list[tuple[int, int, str, list[str]]] = []
    sub_titles: dict[tuple[int, int], set[str]] = {}  # start → its sub-entries' titles
    for e in sorted(entries, key=lambda e: e.page):
        if e.page >= len(pages):
            continue
        lines = pages[e.page]
        found = _find_title(lines, e.title)
        line, heads, label = 0, [], e.title
        if found:
            line, end = found
            heads = [t for x in lines[line:end] if (t := _text_of(x))]
            sub = e.children[0] if e.children else None
            if sub is not None and sub.page == e.page:
                nxt = next((k for k in range(end, len(lines)) if _text_of(lines[k])), end)
                below = _find_title(lines, sub.title, nxt, window=1)
                if below and below[0] == nxt:
                    label = clean(f"{e.title} {sub.title}")
                    heads += [t for x in lines[below[0] : below[1]] if (t := _text_of(x))]
        if starts and (starts[-1][0], starts[-1][1]) == (e.page, line):
            prev = starts.pop()
            starts.append((prev[0], prev[1], clean(f"{prev[2]} {label}"), prev[3] + heads))
            continue
        starts.append((e.page, line, label, heads))
        sub_titles[(e.page, line)] = {fold(c.title) for c in e.children} - {""}

    sections: list[Section] = []
    bounds = starts + [(len(pages), 0, "", [])]
    if starts and (starts[0][0], starts[0][1]) != (0, 0):
        lines = [line for p in pages[: starts[0][0]] for line in p + [("", 0)]]
        lines += pages[starts[0][0]][: starts[0][1]]
        blocks = [Block(t) for t in _paragraphs(lines, typical)]
        if blocks:
            sections.append(Section("", blocks, "page 1"))
    for (page, line, label, heads), (end_page, end_line, _, _) in zip(starts, bounds[1:]):
        lines: list[str] = []
        for p in range(page, min(end_page, len(pages) - 1) + 1):
            lo = line if p == page else 0
            hi = end_line if p == end_page else len(pages[p])
            lines.extend(pages[p][lo:hi])
        # the heading lines come back as heading blocks, not as text
        skip = 0
        for h in heads:
            found = _find_title(lines, h, skip, window=4)
            if found:
                skip = found[1]
        body = lines
        blocks = [Block(h, 1) for h in heads]
        blocks += [Block(t) for t in _paragraphs(body[skip:], typical)]
        # the entry's own text ends where its first sub-entry's title is printed
        # (a title-page line such as the author's name with the preface under it)
        subs = sub_titles.get((page, line), set())
        own_end = next(
            (i for i in range(len(heads), len(blocks)) if fold(blocks[i].text) in subs), None
        )
        sections.append(Section(label, blocks, f"page {page + 1}", own_end=own_end))
    mark_gutenberg([b for sec in sections for b in sec.blocks])
    return BookContent(title, authors, language, sections)


def _sections_from_text(pages: list[list[str]], typical: float, source: str) -> list[Section]:
    """No usable outline: paragraphs → plain text → the plain-text reader's chapter rules."""
    from .txt import read_txt

    out: list[str] = []
    for lines in pages:
        paras = _paragraphs(lines, typical)
        for k, para in enumerate(paras):
            top = k == 0 and len(para) <= 80
            out.append("\n\n\n" if top else "\n")
            out.append(para + "\n")
    return read_txt("".join(out), source).sections
