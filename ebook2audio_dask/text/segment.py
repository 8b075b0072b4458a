"""Sentence segmentation (pySBD, rule-based, multilingual) and length limits."""

from __future__ import annotations

import re
import threading

__all__ = ["split_sentences", "split_long"]

# Break points for over-long sentences, best first.
_CLAUSE_BREAKS = (re.compile(r"(?<=[;:])\s+"), re.compile(r"(?<=[,\u2014\u2013)])\s+|\s+(?=[\u2014\u2013(])"))


_LOCAL = threading.local()

# Abbreviations pySBD breaks sentences at ("p. ex." -> "p." | "ex."): their
# dots are hidden from it (the mark below stands in) and put back after.
_DOT = "\uf8ff"
_NO_BREAK = {
    "en": re.compile(r"\b(?:No|Nos|no|vs|viz|cf|e\.\s?g|i\.\s?e)\.(?=\s*[\w(])"),
    "fr": re.compile(
        r"\b(?:[Pp]\.\s?ex|[Cc]\.-à-d|av|apr|cf|env|MM|M|Mgr|vol|chap|[Nn]o|p)\.(?=\s*[\w(])"
    ),
    "nl": re.compile(
        r"\b(?:[Dd]hr|[Mm]evr|[Mm]ej|[Bb]ijv|[Bb]\.v|[Dd]\.w\.z|[Oo]\.a|[Mm]\.a\.w|[Ii]\.p\.v|[Tt]\.a\.v"
        r"|[Bb]lz|[Nn]r|[Cc]a|St|Dr|Prof|[Nn]o)\.(?=\s*[\w(])"
    ),
}


def _protect(text: str, lang: str) -> str:
    pattern = _NO_BREAK.get(lang)
    if pattern is None or "." not in text:
        return text
    return pattern.sub(lambda m: m.group(0).replace(".", _DOT), text)


def _segmenter(language: str):
    """This thread's pySBD segmenter for *language*.

    A ``pysbd.Segmenter`` keeps the text it works on in attributes, so one
    instance must never serve two threads at once (a Dask worker runs
    several chunk tasks in threads): each thread gets its own.
    """
    import pysbd

    lang = (language or "en").replace("_", "-").split("-")[0].lower()
    if lang not in pysbd.languages.LANGUAGE_CODES:
        lang = "en"  # pySBD's English rules are a fair default for Latin scripts
    cache = getattr(_LOCAL, "segmenters", None)
    if cache is None:
        cache = _LOCAL.segmenters = {}
    if lang not in cache:
        cache[lang] = pysbd.Segmenter(language=lang, clean=False)
    return cache[lang]


def split_sentences(text: str, language: str | None) -> list[str]:
    """Split one paragraph into sentences with pySBD.

    Parameters
    ----------
    text : str
        A normalised paragraph.
    language : str or None
        BCP 47 tag; pySBD's rules for its primary subtag are used (English
        rules when pySBD does not know the language).

    Returns
    -------
    list of str
        Stripped, non-empty sentences whose concatenation is the paragraph
        (up to whitespace).
    """
    if not text.strip():
        return []
    lang = (language or "en").replace("_", "-").split("-")[0].lower()
    protected = _protect(text, lang)
    try:
        parts = _segment(_segmenter(language or "en"), protected)
    except Exception:  # pySBD has rare regex failures on odd input: keep the text whole
        parts = [protected]
    if protected is not text:
        parts = [p.replace(_DOT, ".") for p in parts]
    return [s.strip() for s in parts if s.strip()]


def _segment(segmenter, text: str) -> list[str]:
    """pySBD's sentences of *text*, in one pass.

    ``Segmenter.segment`` finds each sentence back in the text with a regex
    made for it (``re.escape(sentence)``), searched from the text's start:
    time quadratic in the sentences of a paragraph, and a new pattern per
    sentence that evicts pySBD's own rules from :mod:`re`'s cache (most of
    the planning time of a book).  The processor's sentences are the text's
    pieces, in order (whitespace aside): they are returned as they are, and
    one that ``segment`` could not find back is kept, not dropped.
    """
    return segmenter.processor(text).process() if text else []


def split_long(sentence: str, max_chars: int) -> list[str]:
    """Cut a sentence longer than *max_chars* at clause breaks, then at spaces.

    Text without any break point (a very long "word") is cut hard.  Every
    piece is at most *max_chars* long and nothing is lost but whitespace.
    """
    if len(sentence) <= max_chars:
        return [sentence]
    for pattern in _CLAUSE_BREAKS:
        pieces = [p for p in pattern.split(sentence) if p and p.strip()]
        if len(pieces) > 1:
            return _pack(pieces, max_chars)
    words = sentence.split(" ")
    if len(words) > 1:
        return _pack(words, max_chars)
    return [sentence[i : i + max_chars] for i in range(0, len(sentence), max_chars)]


def _pack(pieces: list[str], max_chars: int) -> list[str]:
    """Greedily join pieces with spaces into strings of at most *max_chars*."""
    out: list[str] = []
    current = ""
    for piece in pieces:
        piece = piece.strip()
        for part in split_long(piece, max_chars) if len(piece) > max_chars else [piece]:
            if not current:
                current = part
            elif len(current) + 1 + len(part) <= max_chars:
                current = f"{current} {part}"
            else:
                out.append(current)
                current = part
    if current:
        out.append(current)
    return out
