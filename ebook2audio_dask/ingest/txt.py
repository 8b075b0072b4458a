"""Plain-text reader (Project Gutenberg ``.txt`` and similar).

Rules
-----
* The file is decoded and cut into paragraphs as it is read, block by block
  (:func:`read_txt_blocks`): only the paragraphs are kept, never the whole
  text (docs/ingest.md, "Size and memory").
* Line endings are normalised (CRLF/CR → LF), a BOM is dropped.
* The Project Gutenberg header (up to ``*** START OF ...``, plus the
  "Produced by" credits) and footer (from "End of the Project Gutenberg
  EBook" / ``*** END OF ...``) become front/back matter; ``Title:``,
  ``Author:`` and ``Language:`` are read from the header.
* Paragraphs are runs of non-blank lines; their lines are joined with
  spaces.  ``[Illustration...]``, ``[Footnote ...]`` and similar
  placeholders, footnote markers like ``[12]``, page markers ``[Pg 6]``,
  ``_italics_`` / ``=bold=`` markup and ``*   *   *`` separators are removed.
* Chapter headings are single-line paragraphs such as ``CHAPTER IV``,
  ``Chapter 4: Title``, ``IV.`` or ``II. Papa se fâche.`` preceded by at
  least two blank lines (one for keyword headings, unless the book sets
  its headings apart with two or more, as Gutenberg texts do: then
  single-spaced ones are a contents list).  Headings are grouped
  by keyword; the biggest group is the chapter sequence.  The sequence
  is cut into runs where the numbering starts again without a ``PART`` /
  ``BOOK`` heading in between (a glossary or notes numbered like the
  chapters, or a contents list typed as headings), and the run holding the
  most text is taken as the chapters.
* Before the first and after the last chapter, all-capital single-line
  headings preceded by three or more blank lines ("PRÉFACE.", "INDEX.",
  "MOTS ET EXPRESSIONS.") start front/back-matter sections.
* A heading that is only a number takes its title from the in-text
  contents list when there is one ("I." → "I. Deux Parents et Deux
  Enfants"), or from a short title line right under it.
"""

from __future__ import annotations

import bisect
import copy
import functools
import re
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import accumulate

from ..numerals import roman_value
from ._sections import BookContent, Section
from ._text import (
    PAGE_MARKER_RE,
    PG_CREDITS_RE,
    PG_END_RE,
    PG_FIELD_RE,
    PG_START_RE,
    clean,
    decoded_text,
    fallback_encoding,
    pg_header_fields,
    split_authors,
    text_lines,
)
from ._xhtml import Block

__all__ = ["read_txt", "read_txt_blocks"]

_NUMBER_WORDS = {
    w: i + 1
    for i, w in enumerate(
        [
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
            "twenty",
        ]
    )
}
_KEYWORDS = (
    r"chapter|chap\.|chapitre|kapitel|hoofdstuk|cap[ií]tulo|capitolo|stave|book|part|livre"
    r"|partie|teil|deel|buch|volume|canto|letter|section|act|scene"
)
_PART_KEYWORDS = frozenset(["book", "part", "livre", "partie", "teil", "deel", "buch", "volume"])
_KW_HEADING_RE = re.compile(
    rf"^(?P<kw>{_KEYWORDS})\s+(?P<num>[ivxlcdm]+|\d{{1,3}}|{'|'.join(_NUMBER_WORDS)})\b\.?"
    r"(?:\s*[:.\-—–]\s*|\s+)?(?P<title>.*)$",
    re.IGNORECASE,
)
_NUM_HEADING_RE = re.compile(r"^(?P<num>[IVXLCDM]+|\d{1,3})(?:\.(?:\s+(?P<title>\S.*))?)?$")
_CONTENTS_LINE_RE = re.compile(
    r"^\s*(?P<num>[IVXLCDM]+|\d{1,3})\.\s+(?P<title>\S.*?)\s*(?:\.{2,}\s*)?(?:\s\d{1,4})?\s*$"
)
# The start of a placeholder; it runs to the first "]" after it.
_PLACEHOLDER_START_RE = re.compile(
    r"\[\s*(?:Illustration|Ilustración|Vignette|Image|Picture|Figure|Frontispiece|Footnote|Note"
    r"|Transcriber.s Note)\b",
    re.IGNORECASE,
)
_FOOTNOTE_MARK_RE = re.compile(r"\[(?:\d{1,3}|[*†‡])\]")
# _italics_: an opening "_" (not after a word character, before a non-space)
# up to the first closing "_" (after a non-space, not before a word character).
_ITALIC_OPEN_RE = re.compile(r"(?<![\w_])_(?=\S)")
_ITALIC_CLOSE_RE = re.compile(r"(?<=\S)_(?![\w_])")
_BOLD_RE = re.compile(r"(?<![\w=])=(?=\S)([^=]+?)(?<=\S)=(?![\w=])")
_SEPARATOR_RE = re.compile(r"^[\s*\-_=~#.·•—–]+$")


@dataclass(frozen=True, slots=True)
class _Para:
    """A paragraph: a run of non-blank lines, cleaned into one string (see :class:`_Paragraphs`)."""

    line: int  # 0-based index of its first line
    n_lines: int
    blank_before: int
    text: str
    head: str | None = None  # its only line, stripped, when it looks like a numbered heading
    contents: dict[str, str] | None = None  # numeral -> title, when it is a contents list


def _drop_placeholders(text: str) -> str:
    """Replace ``[Illustration ...]``, ``[Footnote ...]``... (up to the first "]") by a space.

    A linear scan: a regex ``\\[Illustration[^\\]]*\\]`` tries every start
    again up to the end of the text when no "]" follows (quadratic).
    """
    out: list[str] = []
    pos = 0
    while (m := _PLACEHOLDER_START_RE.search(text, pos)) is not None:
        end = text.find("]", m.end())
        if end < 0:  # no "]" after this start, nor after any later one
            break
        out += (text[pos : m.start()], " ")
        pos = end + 1
    return "".join(out) + text[pos:] if out else text


def _drop_italics(text: str) -> str:
    """``_word_`` → ``word``, in linear time (a lazy ``_(.+?)_`` regex is quadratic
    on text full of underscores that never close)."""
    if "_" not in text:
        return text
    closes = [m.start() for m in _ITALIC_CLOSE_RE.finditer(text)]
    if not closes:
        return text
    out: list[str] = []
    pos = 0
    for m in _ITALIC_OPEN_RE.finditer(text):
        start = m.start()
        if start < pos:
            continue  # inside the previous match
        k = bisect.bisect_left(closes, start + 2)  # at least one character in between
        if k == len(closes):
            break
        out += (text[pos:start], text[start + 1 : closes[k]])
        pos = closes[k] + 1
    return "".join(out) + text[pos:] if out else text


def _clean_para(lines: list[str]) -> str:
    text = " ".join(line.strip() for line in lines)
    if "[" in text:  # placeholders, page and footnote markers all start with "["
        text = _drop_placeholders(text)
        text = PAGE_MARKER_RE.sub(" ", text)
        text = _FOOTNOTE_MARK_RE.sub("", text)
    text = _drop_italics(text)
    if "=" in text:
        text = _BOLD_RE.sub(r"\1", text)
    text = text.replace("--", "\u2014")  # Gutenberg's typewriter em dash
    text = clean(text)
    if _SEPARATOR_RE.match(text or "*"):
        return ""
    return text


class _Paragraphs:
    """The paragraphs of a book (or of its Gutenberg header or footer), built line by line.

    Only the lines of the paragraph being read are held.  The paragraphs are
    kept compactly, so that a long book's cost little more than their text:
    each one's text, three integers in an array, and for the few that may be
    a heading or a contents list, their line or titles.  ``paras[i]`` makes
    the :class:`_Para` on demand; ``paras[i:j]`` is a view.  The passes over
    a whole book use the accessors (:meth:`texts`, :meth:`blank_before`,
    :meth:`heads`...) instead: making a :class:`_Para` for each paragraph,
    several times over, was most of the time spent on a book of many short
    paragraphs.
    """

    def __init__(self) -> None:
        self._texts: list[str] = []
        self._ints = array("q")  # line, n_lines, blank_before of each paragraph, in a row
        self._heads: dict[int, str] = {}
        self._contents: dict[int, dict[str, str]] = {}
        self._start, self._stop = 0, None  # the view's range (stop None: to the end)
        self._lines: list[str] = []  # the paragraph being read
        self._first = 0
        self._blank = 0  # blank lines since the last paragraph

    def add(self, n: int, line: str) -> None:
        """Add line *n* (0-based, in the whole book)."""
        if not line or line.isspace():
            if self._lines:
                self._close()
            self._blank += 1
        else:
            if not self._lines:
                self._first = n
            self._lines.append(line)

    def _close(self) -> None:
        lines = self._lines
        if not lines:
            return
        k = len(self._texts)
        text = _clean_para(lines)
        self._texts.append(text)
        self._ints.extend((self._first, len(lines), self._blank))
        if len(lines) == 1 and text and len(text) <= 80:
            head = lines[0].strip()
            if _KW_HEADING_RE.match(head) or _NUM_HEADING_RE.match(head):
                self._heads[k] = head
        if len(lines) >= 3 and (contents := _contents_list(lines)):
            self._contents[k] = contents
        self._lines = []
        self._blank = 0

    def finish(self) -> _Paragraphs:
        """Close the last paragraph; return the paragraphs."""
        self._close()
        return self

    def __len__(self) -> int:
        return (len(self._texts) if self._stop is None else self._stop) - self._start

    def __getitem__(self, i):
        if isinstance(i, slice):
            start, stop, _ = i.indices(len(self))
            view = copy.copy(self)
            view._start, view._stop = self._start + start, self._start + max(start, stop)
            return view
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = self._start + i
        line, n_lines, blank = self._ints[3 * k : 3 * k + 3]
        text, head, contents = self._texts[k], self._heads.get(k), self._contents.get(k)
        return _Para(line, n_lines, blank, text, head, contents)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def _stop_k(self) -> int:
        return len(self._texts) if self._stop is None else self._stop

    def texts(self) -> list[str]:
        """The paragraphs' texts (``texts()[i] == self[i].text``)."""
        return self._texts[self._start : self._stop_k()]

    def blank_before(self, i: int) -> int:
        """``self[i].blank_before`` (*i* in range)."""
        return self._ints[3 * (self._start + i) + 2]

    def first_line(self, i: int) -> int:
        """``self[i].line`` (*i* in range)."""
        return self._ints[3 * (self._start + i)]

    def heads(self) -> Iterable[tuple[int, str]]:
        """``(i, self[i].head)`` for the paragraphs that have one, in order."""
        start, stop = self._start, self._stop_k()
        return ((k - start, head) for k, head in self._heads.items() if start <= k < stop)

    def contents(self) -> dict[str, str]:
        """The first paragraph's :attr:`_Para.contents` that is a contents list, else ``{}``."""
        start, stop = self._start, self._stop_k()
        return next((c for k, c in self._contents.items() if start <= k < stop), {})

    def unnumbered_heading(self, i: int) -> bool:
        """Whether paragraph *i* is an all-capital heading (see :func:`_unnumbered_heading_of`)."""
        k = 3 * (self._start + i)
        return _unnumbered_heading_of(
            self._texts[self._start + i], self._ints[k + 1], self._ints[k + 2]
        )


@functools.lru_cache(maxsize=1024)  # a book's headings repeat the same few numerals
def _number(value: str) -> int | None:
    if value.isdigit():
        return int(value)
    low = value.lower()
    if low in _NUMBER_WORDS:
        return _NUMBER_WORDS[low]
    return roman_value(value, max_thousands=4)  # headings may number past 3999


def _numbered_heading(line: str | None, blank_before: int) -> tuple[str | None, int, str] | None:
    """(keyword, number, title) when a paragraph is a numbered chapter heading.

    *line* is the paragraph's :attr:`_Para.head` (its only line when that
    looks like a heading), *blank_before* the blank lines before it.
    """
    if line is None:
        return None
    m = _KW_HEADING_RE.match(line)
    if m and blank_before >= 1:
        num = _number(m.group("num"))
        if num is not None:
            return m.group("kw").lower().rstrip("."), num, clean(line)
    m = _NUM_HEADING_RE.match(line)
    if m and blank_before >= 2:
        num = _number(m.group("num"))
        if num is not None:
            return None, num, clean(line)
    return None


def _unnumbered_heading_of(text: str, n_lines: int, blank_before: int) -> bool:
    """Whether a paragraph (its text, lines and blank lines before it) is an
    all-capital heading such as "PRÉFACE."."""
    if n_lines != 1 or not text or len(text) > 60 or blank_before < 3:
        return False
    letters = [c for c in text if c.isalpha()]
    if len(letters) < 3:
        return False
    upper = sum(1 for c in letters if c.isupper())
    return upper >= 0.8 * len(letters)


def _contents_list(lines: list[str]) -> dict[str, str] | None:
    """Numeral → title when the lines of a paragraph are a contents list, else None."""
    found: dict[str, str] = {}
    for line in lines:
        m = _CONTENTS_LINE_RE.match(line)
        if m:
            title = clean(re.sub(r"[\s.]+\d{1,4}\s*$", "", m.group("title")))
            found.setdefault(m.group("num"), clean(f"{m.group('num')}. {title}"))
    return found if len(found) >= 3 and len(found) >= 0.5 * len(lines) else None


def _title_line(p: _Para | None) -> bool:
    if p is None or p.n_lines != 1 or not p.text or len(p.text) > 70:
        return False
    if _numbered_heading(p.head, p.blank_before) is not None:
        return False
    letters = [c for c in p.text if c.isalpha()]
    if not letters or p.text[-1] in ",;:?!" or p.text.count(". ") > 1:
        return False
    upper = sum(1 for c in letters if c.isupper())
    words = p.text.split()
    capitalised = sum(1 for w in words if w[:1].isupper())
    return upper >= 0.8 * len(letters) or capitalised >= 0.6 * len(words)


def _chapter_run(paras: _Paragraphs, headings: dict[int, tuple[str | None, int, str]]) -> list[int]:
    """Indices (into *paras*) of the chapter headings: see the module docstring."""
    if not headings:
        return []
    groups: dict[str | None, list[int]] = {}
    for i, (kw, _, _) in headings.items():
        if kw in _PART_KEYWORDS:
            continue
        groups.setdefault(kw, []).append(i)
    if not groups:
        return []
    kw = max(groups, key=lambda k: (len(groups[k]), -groups[k][0]))
    members = groups[kw]
    parts = sorted(i for i, (k, _, _) in headings.items() if k in _PART_KEYWORDS)

    runs: list[list[int]] = []
    current: list[int] = []
    prev = None
    for i in members:
        num = headings[i][1]
        if current and prev is not None and num <= prev:
            k = bisect.bisect_right(parts, current[-1])  # a part heading in between?
            restart_ok = num == 1 and k < len(parts) and parts[k] < i
            if not restart_ok:
                runs.append(current)
                current = []
        current.append(i)
        prev = num
    if current:
        runs.append(current)

    bounds = sorted(members + parts)
    words = array("q", accumulate((len(t.split()) for t in paras.texts()), initial=0))
    # words[j]: words in paras[:j]

    def weight(run: list[int]) -> int:
        k = bisect.bisect_right(bounds, run[-1])
        end = bounds[k] if k < len(bounds) else len(paras)
        return words[max(end, run[0])] - words[run[0]]

    return max(runs, key=weight)


def read_txt(text: str, source: str) -> BookContent:
    """Read a plain-text book held in a string (the PDF reader's text).

    Parameters
    ----------
    text : str
        The decoded text.
    source : str
        Path or URL, for messages.

    Returns
    -------
    BookContent
        Metadata and the proposed sections (not yet classified).
    """
    return _read_lines(text_lines([text]), source)


def read_txt_blocks(blocks: Callable[[], Iterable[bytes]], source: str) -> BookContent:
    """Read a plain-text book from its bytes, decoded and split into paragraphs as they come.

    The book is never in memory whole: only its paragraphs (the text the
    :class:`~ebook2audio_dask.model.Book` keeps) and one block at a time.

    Parameters
    ----------
    blocks : callable
        Returns the file's bytes from its start, in blocks.  Called once for
        a UTF-8 (or UTF-16/32) book; a book that is not valid UTF-8 is read
        twice more: once to choose its encoding, once to decode it.
    source : str
        Path or URL, for messages.

    Returns
    -------
    BookContent
        Metadata and the proposed sections (not yet classified).

    Raises
    ------
    BookError
        The bytes are binary data, not text (see :func:`._text.decoded_text`).
    """
    try:
        return _read_lines(text_lines(decoded_text(blocks(), source)), source)
    except UnicodeDecodeError:
        encoding = fallback_encoding(blocks(), source)
    return _read_lines(text_lines(decoded_text(blocks(), source, encoding)), source)


def _read_lines(lines: Iterable[str], source: str) -> BookContent:
    """Read a plain-text book given line by line (see the module docstring for the rules)."""
    start = end = None  # the Gutenberg START and END lines
    field_lines: list[str] = []  # "Title: ..." lines before the START line
    fields: dict[str, str] = {}
    header = body = _Paragraphs()  # the Gutenberg header (up to the START line), the text
    part = _Paragraphs()  # the part being read: the header or the text, the text, the footer
    n = -1
    for n, line in enumerate(lines):
        if start is None:
            # (the "in" tests only skip lines the patterns cannot match, quickly)
            if "***" in line and PG_START_RE.match(line):
                start = n
                part.add(n, line)
                header = part.finish()
                fields = pg_header_fields(field_lines)
                part = _Paragraphs()
                continue
            if ":" in line and PG_FIELD_RE.match(line):
                field_lines.append(line)
        elif end is None and PG_END_RE.match(line):
            end = n
            body = part.finish()
            part = _Paragraphs()
        part.add(n, line)
    rest = part.finish()
    body, footer_paras = (body, rest) if end is not None else (rest, _Paragraphs())
    text_to = end if end is not None else n + 1
    paras = body

    header_section = Section("", [], "line 1", hint="pg")
    if start is not None:
        header_section.blocks = [Block(t) for t in header.texts() if t]
        first_text = next((k for k, t in enumerate(paras.texts()) if t), len(paras))
        paras = paras[first_text:]
        if paras and PG_CREDITS_RE.match(paras[0].text):
            header_section.blocks.append(Block(paras[0].text))
            paras = paras[1:]
        header_section.title = (
            header_section.blocks[0].text
            if header_section.blocks and len(header_section.blocks[0].text) <= 100
            else ""
        )
    footer = Section("", [], f"line {text_to + 1}", hint="pg")
    if end is not None:
        footer.blocks = [Block(t) for t in footer_paras.texts() if t]
        footer.title = (
            footer.blocks[0].text if footer.blocks and len(footer.blocks[0].text) <= 100 else ""
        )

    texts = paras.texts()  # texts[i] == paras[i].text
    headings = {
        i: h
        for i, head in paras.heads()
        if (h := _numbered_heading(head, paras.blank_before(i))) is not None
    }
    if sum(1 for i in headings if paras.blank_before(i) >= 2) >= 2:
        # The book sets its headings apart with blank lines (Gutenberg uses
        # four): single-spaced "CHAPTER I. ..." lines are a contents list.
        headings = {i: h for i, h in headings.items() if paras.blank_before(i) >= 2}
    run = _chapter_run(paras, headings)
    # numeral -> title, from the first paragraph before the chapters that is a contents list
    contents = (paras[: run[0]] if run else paras).contents()

    starts: dict[int, str] = {}  # para index -> title
    tail_from = len(paras)  # first paragraph after the last chapter
    body_start = 0  # first paragraph of the first chapter
    chapters: set[int] = set()
    if run:
        first, last = run[0], run[-1]
        for i in run:
            title = headings[i][2]
            if _NUM_HEADING_RE.match(title) and not _NUM_HEADING_RE.match(title).group("title"):
                numeral = _NUM_HEADING_RE.match(title).group("num")
                nxt = next((paras[j] for j in range(i + 1, len(paras)) if texts[j]), None)
                if numeral in contents:
                    title = contents[numeral]
                elif _title_line(nxt):
                    title = f"{title} {nxt.text}"
            elif _KW_HEADING_RE.match(title) and not _KW_HEADING_RE.match(title).group("title"):
                nxt = next((paras[j] for j in range(i + 1, len(paras)) if texts[j]), None)
                if _title_line(nxt):
                    title = f"{title} {nxt.text}"
            starts[i] = title
        # A part heading ("BOOK TWO") followed, after nothing but short
        # lines, by a chapter heading opens that chapter: the chapter starts
        # at the part heading and the two titles are joined.  A part heading
        # with text of its own (an introduction) is a section of its own.
        chapters = set(run)
        ordered = sorted(chapters)  # the same, in order (for bisect)
        parts = [i for i, (kw, _, _) in headings.items() if kw in _PART_KEYWORDS and i < last]
        long_from = array("q", [len(paras)]) * (len(paras) + 1)  # first paragraph >= j of 15+ words
        for j in range(len(paras) - 1, -1, -1):
            long_from[j] = j if len(texts[j].split()) >= 15 else long_from[j + 1]
        for p in reversed(parts):  # "VOLUME I" / "BOOK ONE" / "CHAPTER I" nest
            k = bisect.bisect_right(ordered, p)
            if k == len(ordered):
                continue
            nxt = ordered[k]
            if long_from[p] >= nxt:  # nothing but short lines up to the chapter
                starts[p] = clean(f"{headings[p][2]} {starts.pop(nxt)}")
                chapters.discard(nxt)
                chapters.add(p)
                ordered[k] = p  # p < nxt and p > ordered[k - 1]: still sorted
                first = min(first, p)
            elif p > first:
                starts[p] = headings[p][2]
        # The end of the last chapter: the next heading that is not part of
        # the run (numbered or not).
        tail_from = next(
            (
                j
                for j in range(last + 1, len(paras))
                if (j in headings and j not in starts) or paras.unnumbered_heading(j)
            ),
            len(paras),
        )
        body_start = first
        for j in list(range(first)) + list(range(tail_from, len(paras))):
            if paras.unnumbered_heading(j) or j == tail_from:
                starts.setdefault(j, texts[j])
    else:
        for j in range(len(paras)):
            if paras.unnumbered_heading(j):
                starts[j] = texts[j]
    if 0 not in starts:
        starts[0] = ""

    sections: list[Section] = []
    if header_section.blocks:
        sections.append(header_section)
    order = sorted(starts)
    for n, i in enumerate(order):
        stop = order[n + 1] if n + 1 < len(order) else len(paras)
        chunk = [t for t in texts[i:stop] if t]
        if not chunk:
            continue
        blocks = [Block(t, 2 if (j == 0 and starts[i]) else 0) for j, t in enumerate(chunk)]
        title = starts[i] or (chunk[0] if len(chunk[0]) <= 80 else "")
        hint = None
        if run:
            # The chapter sequence defines the body: what comes before it is
            # front matter, what follows its last chapter is back matter.
            if i in chapters:
                hint = "body"
            elif i < body_start:
                hint = "front"
            elif i >= tail_from:
                hint = "back"
            # else: a part heading, classified (and folded) by assemble()
        sections.append(Section(title, blocks, f"line {paras.first_line(i) + 1}", hint=hint))
    if footer.blocks:
        sections.append(footer)

    title = fields.get("title")
    authors = split_authors(fields["author"]) if "author" in fields else ()
    return BookContent(title, authors, fields.get("language"), sections)
