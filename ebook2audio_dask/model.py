"""Small frozen data classes shared by every stage.

A :class:`Book` is what the *parse* stage produces: metadata plus an ordered
tuple of :class:`Chapter` objects, each holding its text as paragraphs.  The
objects are plain, picklable and immutable, so they travel between Dask
workers and the client unchanged.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["Book", "Chapter", "Cover", "Pronunciation", "Skipped"]

#: Values of :attr:`Chapter.kind`.
CHAPTER_KINDS = ("body", "front", "back")


@dataclass(frozen=True)
class Cover:
    """A cover image taken from the book.

    Parameters
    ----------
    data : bytes
        The image file's bytes, unchanged.
    media_type : str
        Its MIME type, e.g. ``"image/jpeg"``.
    """

    data: bytes = field(repr=False)
    media_type: str


@dataclass(frozen=True)
class Pronunciation:
    """How to say one word or phrase: a lexicon entry.

    Entries come from the book (EPUB 3 PLS lexicons, inline ``ssml:ph``
    attributes) or from user lexicons (``--lexicon``); see docs/text.md.

    Parameters
    ----------
    grapheme : str
        The written form matched in the text (whole words; case-sensitive
        first, then case-insensitive).
    phonemes : str
        The pronunciation in *alphabet*; empty when only *alias* is given.
    alphabet : str
        ``"ipa"`` or ``"x-sampa"``.
    language : str
        BCP 47 tag the entry applies to (its primary subtag is compared);
        empty or ``"*"`` for every language.
    origin : str
        ``"pls"``, ``"ssml"`` or ``"user"``.
    alias : str
        A respelling to speak instead (PLS ``<alias>``, a user lexicon's
        plain replacement); used when the engine cannot take phonemes.
    """

    grapheme: str
    phonemes: str = ""
    alphabet: str = "ipa"
    language: str = ""
    origin: str = "user"
    alias: str = ""


@dataclass(frozen=True)
class Chapter:
    """One chapter of a book, in reading order.

    Parameters
    ----------
    index : int
        1-based position in the book's chapter list (the number shown by
        ``ebook2audio inspect`` and accepted by ``--chapters``).
    title : str
        The chapter's real title (from the TOC, the heading or the text).
    paragraphs : tuple of str
        The text to read aloud, one string per paragraph, whitespace-normalised.
    kind : {"body", "front", "back"}
        Front matter (title page, contents, licence...) and back matter
        (colophon, licence, glossary...) are left out of conversions unless
        asked for.
    source : str
        Where the chapter starts inside the ebook, e.g. ``"text/ch1.xhtml#c1"``.
    reason : str
        For front and back matter: why the reader took it for matter (e.g.
        ``"epub:type titlepage"``, ``"title names front matter"``); empty
        for body chapters.
    """

    index: int
    title: str
    paragraphs: tuple[str, ...]
    kind: str = "body"
    source: str = ""
    reason: str = ""

    @property
    def text(self) -> str:
        """The whole chapter as one string, paragraphs separated by blank lines."""
        return "\n\n".join(self.paragraphs)

    @property
    def chars(self) -> int:
        """Number of characters in the chapter's paragraphs."""
        return sum(len(p) for p in self.paragraphs)

    @property
    def words(self) -> int:
        """Number of whitespace-separated words in the chapter."""
        return sum(len(p.split()) for p in self.paragraphs)


@dataclass(frozen=True)
class Skipped:
    """A section of the book that a conversion leaves out (front or back matter).

    Parameters
    ----------
    title : str
        Its title, as ``inspect`` lists it.
    kind : {"front", "back"}
        Front or back matter.
    reason : str
        Why the reader took it for matter (``"epub:type titlepage"``...).
    chars : int
        Characters of text it holds.
    """

    title: str
    kind: str
    reason: str
    chars: int


@dataclass(frozen=True)
class Book:
    """An ebook read into memory: metadata plus chapters.

    Parameters
    ----------
    source : str
        The path or fsspec URL the book was read from.
    title : str
        The book's title (the file name's stem when the book has none).
    authors : tuple of str
        Authors in the order the book lists them (may be empty).
    language : str or None
        BCP 47 language tag as given by the book (``"en-GB"``, ``"fr"``), or
        ``None`` when the book does not say.
    chapters : tuple of Chapter
        The chapters, in reading order, numbered from 1.
    cover : Cover or None
        The cover image, when the book has one that could be read.
    format : str
        The detected input format: ``"epub"``, ``"txt"``, ``"html"``,
        ``"fb2"``, ``"pdf"``, ``"md"``, or (read through Calibre)
        ``"mobi"``, ``"azw3"``, ``"docx"``, ``"rtf"``, ``"odt"``.
    pronunciations : tuple of Pronunciation
        The book's own pronunciations (EPUB 3 PLS lexicons and inline
        ``ssml:ph`` attributes), applied when the book is spoken.
    skipped : tuple of Skipped
        The front and back matter left out of :attr:`chapters`, in reading
        order (empty when it was read with ``include_matter=True``): what a
        conversion reports as skipped.
    """

    source: str
    title: str
    authors: tuple[str, ...]
    language: str | None
    chapters: tuple[Chapter, ...]
    cover: Cover | None = None
    format: str = "epub"
    pronunciations: tuple[Pronunciation, ...] = ()
    skipped: tuple[Skipped, ...] = ()

    @property
    def chars(self) -> int:
        """Characters in all chapters."""
        return sum(c.chars for c in self.chapters)

    def select(self, indices: Iterable[int | range | str] | None) -> Book:
        """Return a copy holding only the chapters *indices* name, in book order.

        Each item is a chapter ``index`` (an int), a ``range`` of them (kept as
        a range, never expanded: ``range(1, 20_000_001)`` costs nothing), or a
        title (a str, see :meth:`find_chapters`).  Chapter indices are kept, so
        a report still says "chapter 7".  ``None`` selects every chapter.

        Raises
        ------
        UsageError
            A number or range names chapters the book does not have (one
            line, the missing numbers given as ranges), or a title matches
            nothing or several chapters.
        """
        if indices is None:
            return self
        from .errors import UsageError

        items = [indices] if isinstance(indices, (int, range, str)) else list(indices)
        have = sorted(c.index for c in self.chapters)
        wanted: set[int] = set()
        missing: list[tuple[int, int]] = []
        for item in items:
            if isinstance(item, str):
                wanted.update(c.index for c in self.find_chapters(item))
                continue
            span = item if isinstance(item, range) else range(int(item), int(item) + 1)
            if span.step != 1:
                span = range(span.start, span.stop)  # ranges of chapters are contiguous
            present = have[
                bisect.bisect_left(have, span.start) : bisect.bisect_left(have, span.stop)
            ]
            wanted.update(present)
            missing += _gaps(span, present)
        if missing:
            shown = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in sorted(set(missing))[:5])
            more = f" and {len(set(missing)) - 5} more" if len(set(missing)) > 5 else ""
            raise UsageError(
                f"{self.source}: no chapter {shown}{more} (the book has {len(self.chapters)})"
            )
        return replace(self, chapters=tuple(c for c in self.chapters if c.index in wanted))

    def summary(self, include_matter: bool = False) -> dict[str, Any]:
        """What ``ebook2audio inspect --json`` and the server show of this book.

        Read the book with its front/back matter (``include_matter=True`` in
        :func:`~ebook2audio_dask.read_book`).  ``chapters``: what a conversion
        with the same *include_matter* speaks, ``index`` as ``--chapters``
        takes it; ``skipped``: the front/back matter it leaves out, each with
        the ``reason`` it was taken for matter; ``listing``: every section in
        reading order (``index`` None when skipped).
        """
        listing, n = [], 0
        for c in self.chapters:
            skipped = c.kind != "body" and not include_matter
            if not skipped:
                n += 1
            listing.append({"index": None if skipped else n, "title": c.title, "kind": c.kind,
                            "chars": c.chars, "words": c.words, "reason": c.reason})  # fmt: skip
        return {
            "source": self.source,
            "format": self.format,
            "title": self.title,
            "authors": list(self.authors),
            "language": self.language,
            "cover": self.cover.media_type if self.cover else None,
            "chapters": [row for row in listing if row["index"] is not None],
            "skipped": [row for row in listing if row["index"] is None],
            "listing": listing,
        }

    def find_chapters(self, title: str) -> list[Chapter]:
        """The chapters a title names, for ``--chapters "The Real Princess"``.

        Case, punctuation and spacing are ignored.  A title equal to one
        chapter's title selects it; a pattern with ``*``, ``?`` or ``[``
        selects every chapter whose title it matches (``"Stave*"``);
        otherwise a part of exactly one chapter's title selects that chapter.

        Raises
        ------
        UsageError
            No chapter matches, or a part of a title matches several.
        """
        import fnmatch

        from .errors import UsageError

        want = _fold_title(title)
        if not want:
            raise UsageError(f"{self.source}: empty chapter title in --chapters")
        exact = [c for c in self.chapters if _fold_title(c.title) == want]
        if exact:
            return exact
        if any(ch in title for ch in "*?["):
            pattern = " ".join(title.casefold().split())
            found = [
                c
                for c in self.chapters
                if fnmatch.fnmatchcase(" ".join(c.title.casefold().split()), pattern)
            ]
        else:
            found = [c for c in self.chapters if want in _fold_title(c.title)]
            if len(found) > 1:
                listed = "; ".join(f"{c.index} {c.title!r}" for c in found[:5])
                raise UsageError(
                    f"{self.source}: chapter title {title!r} matches "
                    f"{len(found)} chapters ({listed}"
                    f"{'; ...' if len(found) > 5 else ''}): give more of the title, or numbers"
                )
        if not found:
            raise UsageError(
                f"{self.source}: no chapter titled {title!r} "
                "(ebook2audio inspect lists the chapters)"
            )
        return found


def _fold_title(title: str) -> str:
    """Title for matching: case-folded, punctuation and spacing ignored."""
    import re

    return " ".join(re.sub(r"[\W_]+", " ", title.casefold()).split())


def _gaps(span: range, present: list[int]) -> list[tuple[int, int]]:
    """The numbers of *span* not in *present*, as ``(first, last)`` runs.

    *present* is sorted, all within *span*.
    """
    out, expect = [], span.start
    for n in present:
        if n > expect:
            out.append((expect, n - 1))
        expect = n + 1
    if expect < span.stop:
        out.append((expect, span.stop - 1))
    return out
