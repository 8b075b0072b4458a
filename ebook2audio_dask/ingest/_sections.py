"""From raw sections to numbered chapters: front/back matter and clean-up.

Every reader (EPUB, HTML, plain text) cuts its text into :class:`Section`
objects, in reading order, each with the structural evidence the reader
found (TOC label, landmarks, file name...).  :func:`assemble` then decides
which sections are body chapters and which are front or back matter, using
the same rules for every format:

1. Project Gutenberg boilerplate (``pg`` mark, or a title naming Project
   Gutenberg / its licence) is matter.
2. Semantics: ``epub:type``/``role`` of the section's first block
   (``titlepage``, ``imprint``, ``toc``, ``colophon``, ``dedication``...),
   EPUB 3 landmarks / EPUB 2 guide types, the file name (``colophon.xhtml``,
   ``titlepage.xhtml``, ``uncopyright.xhtml``...) and the title itself
   ("Contents", "Preface", "Glossary", "Licence"...) mark matter.
3. ``chapter``/``part``/``bodymatter`` semantics mark a body chapter.
4. A contents page (most of its text is links) is matter.
5. A *tiny* section (fewer than 40 words, no sentence-length paragraph:
   title-page lines, part headings) is matter before the first body chapter
   and after the last one, and is folded into the following chapter in
   between.
6. Anything else is a body chapter.

Matter before the first body chapter is ``"front"``, after the last one
``"back"``; matter in between keeps the group its evidence points to.
Sections without any text are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model import Chapter, Cover, Pronunciation, Skipped
from ._text import PG_CREDITS_RE, PG_END_RE, PG_START_RE, clean, fold, matter_group
from ._xhtml import Block

__all__ = [
    "BACK_TYPES",
    "BEFORE_BODY_CHARS",
    "FRONT_TYPES",
    "TINY_WORDS",
    "BookContent",
    "Section",
    "assemble",
    "mark_gutenberg",
]

#: Semantic types that make a section front / back matter.
FRONT_TYPES = frozenset(
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
        "acknowledgements",
        "revision-history",
        "foreword",
        "preface",
        "introduction",
        "preamble",
        "frontispiece",
    ]
)
BACK_TYPES = frozenset(
    [
        "colophon",
        "appendix",
        "index",
        "glossary",
        "bibliography",
        "credits",
        "afterword",
        "errata",
        "notes",
    ]
)
_BODY_TYPES = frozenset(("chapter", "part", "volume"))

#: A section with fewer words than this, and no paragraph of
#: :data:`_SENTENCE_WORDS` words or more, is "tiny" (title-page lines,
#: part headings, "THE END").
TINY_WORDS = 40
_SENTENCE_WORDS = 15
#: A section before the book's ``bodymatter`` landmark is front matter for
#: that position alone only when it holds fewer characters than this (a
#: title page, an epigraph, a half title); a longer one needs a named reason
#: (its own ``epub:type``, a landmark on it, its title) or is read.
BEFORE_BODY_CHARS = 2000


@dataclass
class Section:
    """A run of blocks that a reader proposes as one chapter.

    Parameters
    ----------
    title : str
        TOC label or heading ("" when none; a heading is then used).
    blocks : list of Block
        The section's text.
    source : str
        Where it starts (``"text/ch1.xhtml#c1"``, ``"line 175"``, ``"#ch3"``).
    own_end : int or None
        ``blocks[:own_end]`` is the entry's own text, before sub-entries that
        were folded into it (used for title-page detection).
    hint : str or None
        Matter group implied by structure outside the text: ``"front"`` or
        ``"back"`` (landmark/guide type, file name), ``"pg"``
        (Gutenberg boilerplate), ``"before-body"`` (ends before the
        bodymatter landmark's target: front matter only when shorter than
        :data:`BEFORE_BODY_CHARS`), ``"body"`` (a reader-level rule says it
        is a chapter),
        ``"part"`` (a part heading whose chapters follow: folded into the
        first of them).
    """

    title: str
    blocks: list[Block]
    source: str = ""
    own_end: int | None = None
    hint: str | None = None
    # filled by assemble()
    kind: str = field(default="", repr=False)
    weak: bool = field(default=False, repr=False)
    reason: str = field(default="", repr=False)

    @property
    def words(self) -> int:
        return sum(b.words for b in self.blocks)

    def is_tiny(self, blocks: list[Block] | None = None) -> bool:
        blocks = self.blocks if blocks is None else blocks
        total = 0
        for b in blocks:
            w = b.words
            if w >= _SENTENCE_WORDS:
                return False
            total += w
        return total < TINY_WORDS


@dataclass
class BookContent:
    """What a reader found in a book, the one result type of every reader.

    Parameters
    ----------
    title : str or None
        The book's title, when the book names one (else the file name is used).
    authors : tuple of str
    language : str or None
        Language code, when the book says.
    sections : list of Section
        Proposed chapters, in reading order (see :func:`assemble`).
    cover : Cover or None
        Cover image (EPUB, FB2).
    pronunciations : tuple of Pronunciation
        The book's own pronunciation entries (EPUB 3 PLS lexicons, ``ssml:ph``).
    """

    title: str | None
    authors: tuple[str, ...]
    language: str | None
    sections: list[Section]
    cover: Cover | None = None
    pronunciations: tuple[Pronunciation, ...] = ()


def heading_title(blocks: list[Block], limit: int = 2) -> str:
    """Title made of the leading headings of *blocks* (at most *limit*)."""
    parts: list[str] = []
    for b in blocks:
        if b.level == 0 or len(parts) >= limit:
            break
        parts.append(b.text)
    title = clean(" ".join(parts))
    return title if len(title) <= 200 else ""


def _first_title(blocks: list[Block]) -> str:
    for b in blocks[:6]:
        if b.level and len(b.text) <= 150:
            return b.text
    if blocks and len(blocks[0].text) <= 80:
        return blocks[0].text
    return ""


def mark_gutenberg(blocks: list[Block]) -> None:
    """Mark Project Gutenberg boilerplate found by its text markers.

    Everything up to the ``*** START OF THE PROJECT GUTENBERG EBOOK`` line
    (searched in the first half of the text) and the "Produced by" credits
    right after it, and everything from ``*** END OF ...`` / "End of the
    Project Gutenberg EBook" (searched in the second half) gets the ``pg``
    mark.

    Parameters
    ----------
    blocks : list of Block
        The whole book's text, modified in place.
    """
    n = len(blocks)
    for i, b in enumerate(blocks[: max(1, (n + 1) // 2)]):
        if PG_START_RE.match(b.text):
            end = i + 1
            if end < n and PG_CREDITS_RE.match(blocks[end].text):
                end += 1
            for prev in blocks[:end]:
                prev.marks = prev.marks | {"pg"}
            break
    for i in range(n // 2, n):
        if PG_END_RE.match(blocks[i].text):
            for b in blocks[i:]:
                b.marks = b.marks | {"pg"}
            break


def split_boilerplate(sections: list[Section]) -> list[Section]:
    """Cut Project Gutenberg boilerplate (``pg``-marked blocks) into sections of its own.

    The section's own title goes to its first non-boilerplate part; a
    boilerplate part is titled by its first line.
    """
    out: list[Section] = []
    for sec in sections:
        flags = ["pg" in b.marks for b in sec.blocks]
        if not any(flags) or all(flags):
            if flags and all(flags):
                sec.hint = "pg"
            out.append(sec)
            continue
        start = 0
        titled = False
        for i in range(1, len(flags) + 1):
            if i == len(flags) or flags[i] != flags[start]:
                chunk = sec.blocks[start:i]
                if flags[start]:
                    out.append(Section(_first_title(chunk), chunk, sec.source, None, "pg"))
                else:
                    title = "" if titled else sec.title
                    own_end = sec.own_end if start == 0 else None
                    out.append(Section(title, chunk, sec.source, own_end, sec.hint))
                    titled = True
                start = i
    return out


def _classify(sec: Section, authors: tuple[str, ...]) -> tuple[str, str | None, str]:
    """Return (verdict, group, reason): verdict is matter/body/part/tiny/unknown;
    *reason* says, for matter, what gave it away."""
    marks = sec.blocks[0].marks if sec.blocks else frozenset()
    if sec.hint == "pg" or "pg" in marks:
        return "matter", "front", "Project Gutenberg header or licence"
    specific_front = marks & FRONT_TYPES
    specific_back = marks & BACK_TYPES
    if marks & _BODY_TYPES:
        specific_front = specific_front - {"epigraph"}  # an epigraph opening a chapter
    if specific_front:
        return "matter", "front", f"epub:type {', '.join(sorted(specific_front))}"
    if specific_back:
        return "matter", "back", f"epub:type {', '.join(sorted(specific_back))}"
    if sec.hint in ("front", "back"):
        return (
            "matter",
            sec.hint,
            f"the book's landmarks/guide or file name mark it as {sec.hint} matter",
        )
    group = matter_group(sec.title) if sec.title else None
    if group:
        return "matter", group, f"its title names {group} matter"
    if not sec.title:
        group = matter_group(_first_title(sec.blocks))
        if group:
            return "matter", group, f"its heading names {group} matter"
    if sec.hint == "body":
        return "body", None, ""
    if sec.hint == "part" and sec.is_tiny():
        return "part", None, ""
    if "frontmatter" in marks:
        return "matter", "front", "epub:type frontmatter"
    if "backmatter" in marks:
        return "matter", "back", "epub:type backmatter"
    if marks & _BODY_TYPES or "bodymatter" in marks:
        return "body", None, ""
    chars = sum(len(b.text) for b in sec.blocks)
    links = sum(b.links for b in sec.blocks)
    if links >= 3 and chars and sum(b.link_chars for b in sec.blocks) >= 0.5 * chars:
        return "matter", "front", "mostly links: a contents page or list"
    if sec.hint == "before-body" and chars < BEFORE_BODY_CHARS:
        return "matter", "front", "a short section before the book's bodymatter landmark"
    if sec.is_tiny():
        return "tiny", None, ""
    if sec.own_end is not None and sec.title and sec.is_tiny(sec.blocks[: sec.own_end]):
        # "CHARLES DICKENS" (a title-page line) with the preface nested under
        # it in the TOC: the author's name is not a chapter title.
        label = f" {fold(sec.title)} "
        if any(f" {fold(a)} " in label for a in authors if fold(a)):
            return "matter", "front", "a title-page line (the author's name)"
    return "unknown", None, ""


def assemble(
    sections: list[Section],
    *,
    authors: tuple[str, ...],
    include_matter: bool,
) -> tuple[tuple[Chapter, ...], tuple[Skipped, ...]]:
    """Classify *sections*, fold tiny ones, number them and make chapters.

    Parameters
    ----------
    sections : list of Section
        In reading order.
    authors : tuple of str
        The book's authors (a TOC entry named after one is a title-page line).
    include_matter : bool
        Keep front and back matter (with ``kind`` set) instead of dropping it.

    Returns
    -------
    chapters : tuple of Chapter
        Numbered from 1 in reading order; empty when the book has no text.
    skipped : tuple of Skipped
        The front and back matter left out (none with *include_matter*).
    """
    sections = [s for s in split_boilerplate(sections) if s.blocks]
    if not sections:
        return (), ()
    verdicts = [_classify(s, authors) for s in sections]
    body = [i for i, (v, _, _) in enumerate(verdicts) if v in ("body", "unknown")]
    if not body:
        # Nothing looks like a chapter (e.g. a one-page book): read what is
        # not explicitly matter, or failing that everything.
        body = [i for i, (v, _, _) in enumerate(verdicts) if v == "tiny"]
        if body:
            verdicts = [("body", None, "") if v == "tiny" else (v, g, r) for v, g, r in verdicts]
        else:
            verdicts = [("body", None, "")] * len(verdicts)
            body = list(range(len(verdicts)))
    first, last = body[0], body[-1]
    for i, (sec, (verdict, group, reason)) in enumerate(zip(sections, verdicts, strict=True)):
        sec.weak = verdict in ("tiny", "part")
        sec.reason = reason
        if verdict in ("body", "unknown"):
            sec.kind = "body"
        elif verdict == "part" and i < last:
            sec.kind = "body"  # a part heading opens the chapter after it
        elif i < first:
            sec.kind = "front"
            sec.reason = reason or "a short section before the first chapter"
        elif i > last:
            sec.kind = "back"
            sec.reason = reason or "a short section after the last chapter"
        elif verdict == "tiny":
            sec.kind = "body"
        else:
            sec.kind = group or "front"

    # Fold tiny sections into their neighbours: in the body a part heading
    # or a title split over two headings joins the chapter after it (titles
    # joined); in the back matter a tiny section joins the next one; in the
    # front matter consecutive title-page lines form one section.
    merged: list[Section] = []
    carry: Section | None = None
    for sec in sections:
        if carry is not None:
            if carry.kind == sec.kind and (sec.kind != "front" or sec.weak):
                if sec.kind == "front":
                    title = carry.title or sec.title
                elif sec.kind == "body":
                    title = (
                        clean(f"{carry.title} {sec.title}")
                        if carry.title and sec.title
                        else (sec.title or carry.title)
                    )
                else:
                    title = sec.title or carry.title
                weak = sec.weak
                reason = carry.reason or sec.reason
                sec = Section(title, carry.blocks + sec.blocks, carry.source, None, sec.hint)
                sec.kind = carry.kind
                sec.weak = weak
                sec.reason = reason
            else:
                merged.append(carry)
            carry = None
        if sec.weak:
            carry = sec
            continue
        merged.append(sec)
    if carry is not None:
        merged.append(carry)

    chapters: list[Chapter] = []
    skipped: list[Skipped] = []
    for sec in merged:
        title = clean(sec.title) or heading_title(sec.blocks) or _first_title(sec.blocks)
        if not title and sec.hint == "pg":
            title = (
                "Project Gutenberg header" if sec.kind == "front" else "Project Gutenberg licence"
            )
        if not include_matter and sec.kind != "body":
            chars = sum(len(b.text) for b in sec.blocks)
            skipped.append(Skipped(title or "untitled", sec.kind, sec.reason, chars))
            continue
        index = len(chapters) + 1
        chapters.append(
            Chapter(
                index=index,
                title=title or f"Chapter {index}",
                paragraphs=tuple(b.text for b in sec.blocks),
                kind=sec.kind,
                source=sec.source,
                reason=sec.reason if sec.kind != "body" else "",
            )
        )
    return tuple(chapters), tuple(skipped)
