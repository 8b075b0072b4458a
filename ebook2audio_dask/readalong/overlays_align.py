"""Finding spoken sentences in a content document's text, and wrapping them.

The text of a document's ``<body>`` is read as *slots* (an element's ``text``
or ``tail``) in document order; their concatenation is the document's *raw*
text.  Its *normalised* form keeps letters and digits only (compatibility
decomposed, case-folded), with a map from each normalised character back to
its raw offset.  A sentence, normalised the same way, is searched near a
cursor that only moves forward (:class:`Aligner`): near-linear in the book's
length.  Wrapping a raw range in ``<span>`` elements never changes the raw
text, so the offsets of everything before a range stay valid while the
ranges of a document are wrapped from the last to the first.
"""

from __future__ import annotations

import bisect
import unicodedata
from array import array
from dataclasses import dataclass

from ..safexml import local_name

__all__ = ["Aligner", "DocText", "Match", "fold_text"]

#: Elements whose text is never spoken nor wrapped.
_SKIP = frozenset(("script", "style", "template"))
#: Elements a ``<span>`` may hold whole (HTML phrasing content).
_PHRASING = frozenset(
    (
        "a",
        "abbr",
        "b",
        "bdi",
        "bdo",
        "br",
        "cite",
        "code",
        "data",
        "del",
        "dfn",
        "em",
        "i",
        "img",
        "ins",
        "kbd",
        "mark",
        "q",
        "rp",
        "rt",
        "ruby",
        "s",
        "samp",
        "small",
        "span",
        "strong",
        "sub",
        "sup",
        "time",
        "u",
        "var",
        "wbr",
        "big",
        "tt",
        "font",
    )
)
#: Exact matches are looked for this many normalised characters past the cursor.
_WINDOW = 6000
_FOLD: dict[str, str] = {}


def _fold_char(ch: str) -> str:
    got = _FOLD.get(ch)
    if got is None:
        got = "".join(c for c in unicodedata.normalize("NFKD", ch).casefold() if c.isalnum())
        _FOLD[ch] = got
    return got


def fold_text(text: str) -> str:
    """*text* normalised for alignment: letters and digits only, decomposed and case-folded."""
    return "".join(_fold_char(ch) for ch in unicodedata.normalize("NFC", text))


def _counted(el) -> bool:
    """Whether an element's own text is part of the document's text."""
    return isinstance(el.tag, str) and local_name(el.tag) not in _SKIP


class DocText:
    """The text of one XHTML document's ``<body>``, raw and normalised.

    Parameters
    ----------
    root : lxml.etree._Element
        The document's root element.
    """

    def __init__(self, root):
        self.root = root
        self.body = next(
            (el for el in root.iter() if isinstance(el.tag, str) and local_name(el.tag) == "body"),
            None,
        )
        self.slot_start: list[int] = []
        self.slot_el: list = []
        self.slot_tail: list[bool] = []
        self.span: dict = {}
        self._ids: dict | None = None
        self.pos = 0
        self.nmap = array("q")
        parts: list[str] = []
        self._parts = parts
        if self.body is not None:
            self._walk(self.body)
        self.norm = "".join(parts)
        del self._parts

    def _add(self, el, tail: bool, text: str) -> None:
        self.slot_start.append(self.pos)
        self.slot_el.append(el)
        self.slot_tail.append(tail)
        for i, ch in enumerate(text):
            f = _fold_char(ch)
            if f:
                self._parts.append(f)
                self.nmap.extend([self.pos + i] * len(f))
        self.pos += len(text)

    def _walk(self, el) -> None:
        start = self.pos
        if _counted(el):
            if el.text:
                self._add(el, False, el.text)
            for child in el:
                self._walk(child)
                if child.tail:
                    self._add(child, True, child.tail)
        self.span[el] = (start, self.pos)

    def anchor(self, ident: str | None) -> int | None:
        """Normalised offset where the element with id (or ``name``) *ident* starts."""
        if not ident:
            return 0
        if self._ids is None:  # made once: a book may start hundreds of chapters in one file
            self._ids = {}
            for el in reversed(list(self.span)):
                if isinstance(el.tag, str):
                    for name in (el.get("name"), el.get("id")):
                        if name:
                            self._ids[name] = el
        el = self._ids.get(ident)
        return None if el is None else bisect.bisect_left(self.nmap, self.span[el][0])

    def raw_range(self, nstart: int, nend: int, floor: int, lead: int, trail: int):
        """The raw range of normalised ``[nstart, nend)``, widened over adjoining punctuation.

        Up to *lead* punctuation characters (neither letter, digit nor space)
        just before the range in the same slot join it (opening quotes), never
        reaching below *floor* (the previous range's end), and up to *trail*
        just after it (closing stops and quotes): as many as the sentence has.
        """
        a = self.nmap[nstart]
        b = self.nmap[nend - 1] + 1
        k = bisect.bisect_right(self.slot_start, a) - 1
        text, s0 = self._slot_text(k), self.slot_start[k]
        while lead > 0 and a - 1 >= max(s0, floor) and _is_punct(text[a - 1 - s0]):
            a -= 1
            lead -= 1
        k = bisect.bisect_right(self.slot_start, b - 1) - 1
        text, s0 = self._slot_text(k), self.slot_start[k]
        while trail > 0 and b < s0 + len(text) and _is_punct(text[b - s0]):
            b += 1
            trail -= 1
        return a, b

    def punct_range(self, floor: int, count: int) -> tuple[int, int] | None:
        """The first *count* punctuation characters after raw offset *floor*, past white space.

        Where a sentence of punctuation alone (a closing quote the splitter
        cut off) is in the text; ``None`` when a letter or digit comes first.
        """
        k = max(0, bisect.bisect_right(self.slot_start, floor) - 1)
        while k < len(self.slot_start):
            text, s0 = self._slot_text(k), self.slot_start[k]
            i = max(floor, s0) - s0
            while i < len(text) and text[i].isspace():
                i += 1
            if i < len(text):
                if not _is_punct(text[i]):
                    return None
                j = i
                while j < len(text) and j - i < count and _is_punct(text[j]):
                    j += 1
                return s0 + i, s0 + j
            k += 1
            if k < len(self.slot_start) and self.slot_start[k] - floor > 200:
                return None
        return None

    def _slot_text(self, k: int) -> str:
        el = self.slot_el[k]
        return (el.tail if self.slot_tail[k] else el.text) or ""

    def _length(self, el) -> int:
        got = self.span.get(el)
        if got is not None:
            return got[1] - got[0]
        if not _counted(el):
            return 0
        n = len(el.text or "")
        for child in el:
            n += self._length(child) + len(child.tail or "")
        return n

    def wrap(self, a: int, b: int, make) -> int:
        """Wrap raw ``[a, b)`` in spans made by ``make(n)`` (n: 0 for the first fragment...).

        Call for the document's ranges from the last to the first.  Returns
        the number of fragments made (0: nothing but white space was there).
        """
        k = bisect.bisect_right(self.slot_start, a) - 1
        hint = (self.slot_el[k], self.slot_tail[k])
        el = hint[0].getparent() if hint[1] else hint[0]
        while not (self.span[el][0] <= a and b <= self.span[el][1]):
            el = el.getparent()
        ops: list[tuple] = []
        self._plan(el, a, b, ops, hint)
        spans = [make(n) for n in range(len(ops))]
        for (parent, s, i, e, j), span in reversed(list(zip(ops, spans))):
            _apply(parent, s, i, e, j, span)
        return len(ops)

    def _plan(self, el, a: int, b: int, ops: list, hint) -> None:
        """Plan the runs of *el*'s content inside ``[a, b)`` (children walked as siblings).

        A run goes from an offset in a text slot to an offset in a later one,
        the slots named by their owner: ``None`` for *el*'s ``text``, a child
        for its ``tail``; the children between them are held whole.
        """
        run: list | None = None

        def text(owner) -> str:
            return (el.text if owner is None else owner.tail) or ""

        def close() -> None:
            nonlocal run
            if run is not None:
                s, i, e, j, whole = run
                st, et = text(s), text(e)
                while i < len(st) and (whole or s is not e or i < j) and st[i].isspace():
                    i += 1
                while j > 0 and (whole or s is not e or j > i) and et[j - 1].isspace():
                    j -= 1
                if whole or (s is e and i < j) or (s is not e):
                    ops.append((el, s, i, e, j))
                run = None

        def slot(owner, ts: int) -> int:
            nonlocal run
            t = text(owner)
            te = ts + len(t)
            lo, hi = max(a, ts), min(b, te)
            if lo < hi:
                if run is None:
                    run = [owner, lo - ts, owner, hi - ts, False]
                else:
                    run[2], run[3] = owner, hi - ts
            elif ts >= b:
                close()
            return te

        # where to begin: the child holding the range's start, not el's first child
        # (el may be a <div> holding a whole book's text between <br/>s)
        start_el, is_tail = hint if hint is not None else (el, False)
        child = None
        if start_el is el and not is_tail:
            pos = slot(None, self.span[el][0]) if _counted(el) else self.span[el][0]
            child = next(iter(el), None)
        elif is_tail and start_el.getparent() is el:
            pos = slot(start_el, self.span[start_el][1])
            child = start_el.getnext()
        else:
            top = start_el
            while top.getparent() is not el:
                top = top.getparent()
            pos, child = self.span[top][0], top
        while child is not None and pos < b:
            nxt = child.getnext()
            cs = pos
            ce = cs + self._length(child)
            if ce <= a:
                pass
            elif cs >= b:
                close()
                break
            elif a <= cs and ce <= b and _phrasing(child):
                if run is None:
                    prev = child.getprevious()
                    run = [prev, len(text(prev)), child, 0, True]
                else:
                    run[2], run[3], run[4] = child, 0, True
            else:
                close()
                inner = hint if hint is not None and self.span.get(child, (0, 0))[0] < a else None
                if inner is not None and not _holds(child, inner[0]):
                    inner = None
                self._plan(child, a, b, ops, inner)
            pos = slot(child, ce)
            child = nxt
        close()


def _holds(el, other) -> bool:
    """Whether *other* is *el* or inside it."""
    while other is not None:
        if other is el:
            return True
        other = other.getparent()
    return False


def _phrasing(el) -> bool:
    return not isinstance(el.tag, str) or local_name(el.tag) in _PHRASING


def _is_punct(ch: str) -> bool:
    return not ch.isspace() and not _fold_char(ch)


def _apply(el, s, i: int, e, j: int, span) -> None:
    """Move *el*'s content from slot *s* offset *i* to slot *e* offset *j* into *span*.

    A slot is named by its owner: ``None`` for ``el.text``, a child for its tail.
    """

    def get(owner) -> str:
        return (el.text if owner is None else owner.tail) or ""

    def put(owner, value: str) -> None:
        if owner is None:
            el.text = value or None
        else:
            owner.tail = value or None

    first = get(s)
    if s is e:
        span.text, span.tail = first[i:j] or None, first[j:] or None
        put(s, first[:i])
    else:
        last = get(e)
        span.text = first[i:] or None
        put(s, first[:i])
        moved = []
        child = next(iter(el), None) if s is None else s.getnext()
        while child is not None:
            moved.append(child)
            if child is e:
                break
            child = child.getnext()
        for child in moved:
            span.append(child)
        e.tail = last[:j] or None
        span.tail = last[j:] or None
    if s is None:
        el.insert(0, span)
    else:
        s.addnext(span)


@dataclass(frozen=True)
class Match:
    """Where a sentence was found: document *doc*, normalised ``[start, end)``."""

    doc: int
    start: int
    end: int


class Aligner:
    """Sequential search of sentences through the documents, in spine order.

    Parameters
    ----------
    docs : list of DocText
        The spine's content documents (``None`` for one that could not be read).
    """

    def __init__(self, docs: list[DocText | None]):
        self.docs = docs
        self.doc = 0
        self.cursor = 0

    def seek(self, doc: int, offset: int) -> None:
        """Move the cursor forward to *offset* of *doc* (never back)."""
        if (doc, offset) > (self.doc, self.cursor):
            self.doc, self.cursor = doc, offset

    def _windows(self, width: int):
        """``(doc, start, stop)`` spans of normalised text within *width* of the cursor."""
        d, c, left = self.doc, self.cursor, width
        while d < len(self.docs) and left > 0:
            doc = self.docs[d]
            if doc is not None:
                stop = min(len(doc.norm), c + left)
                yield d, c, stop
                left -= stop - c
            d, c = d + 1, 0

    def find(self, sentence: str) -> Match | None:
        """Find *sentence* (raw text) after the cursor; move the cursor past it."""
        q = fold_text(sentence)
        if not q:
            return None
        width = _WINDOW + 2 * len(q)
        for d, lo, hi in self._windows(width):
            hit = self.docs[d].norm.find(q, lo, hi + len(q))
            if hit >= 0:
                return self._take(d, hit, hit + len(q))
        got = self._tolerant(q, width)
        return self._take(*got) if got else None

    def _take(self, d: int, start: int, end: int) -> Match:
        self.doc, self.cursor = d, end
        return Match(d, start, end)

    def _tolerant(self, q: str, width: int) -> tuple[int, int, int] | None:
        """Anchor the sentence on its first and last few characters.

        Ingest leaves out things the document holds (note references, page
        numbers, ruby): between the anchors the document may have more or
        fewer characters than the sentence (within a quarter of its length
        plus a little).
        """
        n = len(q)
        if n < 6:
            return None
        k = min(12, n // 3)
        slack = 40 + n // 4
        heads = [o for o in (0, k, 2 * k) if o + k <= n - k]
        tails = [o for o in (n - k, n - 2 * k, n - 3 * k) if o >= k]
        for hoff in heads:
            head = q[hoff : hoff + k]
            for d, lo, hi in self._windows(width):
                norm = self.docs[d].norm
                h = norm.find(head, lo, hi + k)
                if h < 0:
                    continue
                start = max(lo, h - hoff)
                if hoff:  # the characters before the head anchor, with gaps
                    p = _back(norm, q[:hoff], h, lo)
                    start = p if p is not None else start
                for toff in tails:
                    if toff <= hoff:
                        continue
                    want = h + (toff - hoff)
                    t = norm.find(q[toff : toff + k], max(h + k, want - slack), want + slack + k)
                    if t < 0:
                        continue
                    end = t + k
                    rest = q[toff + k :]
                    if rest:  # the characters after the tail anchor, with gaps
                        e = _forward(norm, rest, end)
                        end = e if e is not None else end + len(rest)
                    return d, start, min(len(norm), end)
                break
        return None


#: Most characters the document may hold between two of a sentence's, at its ends.
_GAP = 12


def _back(norm: str, part: str, pos: int, lo: int) -> int | None:
    """Where *part* starts if its characters precede *pos* in order, each within a gap."""
    for ch in reversed(part):
        got = norm.rfind(ch, max(lo, pos - 1 - _GAP), pos)
        if got < 0:
            return None
        pos = got
    return pos


def _forward(norm: str, part: str, pos: int) -> int | None:
    """Where *part* ends if its characters follow *pos* in order, each within a gap."""
    for ch in part:
        got = norm.find(ch, pos, pos + 1 + _GAP)
        if got < 0:
            return None
        pos = got + 1
    return pos
