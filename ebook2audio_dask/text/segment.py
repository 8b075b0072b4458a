"""Sentence segmentation (pySBD, rule-based, multilingual) and length limits."""

from __future__ import annotations

import re
import threading
from functools import partial

__all__ = ["split_long", "split_sentences"]

# Break points for over-long sentences, best first.
_CLAUSE_BREAKS = (
    re.compile(r"(?<=[;:])\s+"),
    re.compile(r"(?<=[,\u2014\u2013)])\s+|\s+(?=[\u2014\u2013(])"),
)


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

    Notes
    -----
    The sentences are pySBD's exactly; a paragraph that is surely one
    sentence to pySBD (:func:`_one_sentence`) does not run it.
    """
    if not text.strip():
        return []
    lang = (language or "en").replace("_", "-").split("-")[0].lower()
    protected = _protect(text, lang)
    segmenter = _segmenter(language or "en")
    if _one_sentence(segmenter.language_module, protected):
        # what pySBD would return (see _one_sentence), at a fraction of the cost
        parts = [protected]
    else:
        try:
            parts = _segment(segmenter, protected)
        except Exception:  # noqa: BLE001 - pySBD's rare regex failures on odd input
            parts = [protected]  # keep the text whole
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
    one that ``segment`` could not find back is kept, not dropped.  The
    processor's abbreviation pass skips the abbreviations that cannot change
    the text (:func:`_search_abbreviations`).
    """
    if not text:
        return []
    processor = segmenter.processor(text)
    processor.abbreviations_replacer = partial(_abbreviation_replacer, processor)
    return processor.process()


# -- pySBD's abbreviation pass, without the work that cannot change the text ----
#
# ``AbbreviationReplacer.search_for_abbreviations_in_string`` (pySBD 0.3.4)
# walks the language's whole abbreviation list (about 190 in English, 2,800 in
# Dutch) for every paragraph.  An abbreviation whose letters occur anywhere in
# the paragraph ("ad" in "made") is searched for with ``re.findall`` and, for
# each word that starts with it, the paragraph is rewritten with a
# ``re.sub``: most of the planning time of a book.  Each of those ``re.sub``
# only turns a "." that follows the abbreviation's letters into pySBD's
# placeholder, so an abbreviation that is never followed by a "." in the
# paragraph cannot change it, whatever the rest.  Here such abbreviations are
# skipped, and every other one runs exactly pySBD's own code, in the list's
# order: the output is pySBD's, character for character.
#
# "Never followed by a '.'" is decided on the lower-cased paragraph for the
# abbreviations written with ASCII letters only: their matches (pySBD matches
# case-insensitively) are ASCII letters, the same letters lower-cased, except
# for the four characters :mod:`re` also folds to ASCII letters ("İ", "ı",
# "ſ" and the Kelvin sign): a paragraph holding one of those is left to
# pySBD's own loop, as are the other abbreviations (dots, spaces, accents).

_PLAIN_ABBREVIATION = re.compile(r"[a-z]+")
_FOLDS_TO_ASCII = re.compile("[\u0130\u0131\u017f\u212a]")
_LETTERS_BEFORE_DOT = re.compile(r"[a-z]+(?=\.)")
_FAST_SEARCH: dict[
    type, bool
] = {}  # replacer class -> its scan is pySBD's own (the skipping is exact)
_TABLES: dict[type, _AbbreviationTable] = {}


class _AbbreviationTable:
    """One language's abbreviation list, split for :func:`_search_abbreviations`."""

    def __init__(self, abbreviations: list[str]):
        self.stripped = [a.strip() for a in abbreviations]
        #: plain (ASCII letters) abbreviation -> its places in the list
        self.plain: dict[str, list[int]] = {}
        #: (place, abbreviation) of the others, checked as pySBD does
        self.other: list[tuple[int, str]] = []
        for i, s in enumerate(self.stripped):
            if _PLAIN_ABBREVIATION.fullmatch(s):
                self.plain.setdefault(s, []).append(i)
            else:
                self.other.append((i, s))
        self.longest = max(map(len, self.plain), default=0)


def _abbreviation_replacer(processor):
    """The language's pySBD abbreviation replacer, with the fast search when it is exact."""
    from pysbd.abbreviation_replacer import AbbreviationReplacer as Base

    replacer = type(processor).abbreviations_replacer(processor)
    cls = type(replacer)
    if cls not in _FAST_SEARCH:
        _FAST_SEARCH[cls] = (
            cls.search_for_abbreviations_in_string is Base.search_for_abbreviations_in_string
            and cls.scan_for_replacements is Base.scan_for_replacements
            and cls.replace_period_of_abbr is Base.replace_period_of_abbr
        )
    if _FAST_SEARCH[cls]:
        replacer.search_for_abbreviations_in_string = partial(_search_abbreviations, replacer)
    return replacer


def _search_abbreviations(replacer, text: str) -> str:
    """pySBD's ``search_for_abbreviations_in_string``, skipping abbreviations
    that are never followed by a "." in *text* (see above)."""
    lang = replacer.lang
    if _FOLDS_TO_ASCII.search(text):
        return type(replacer).search_for_abbreviations_in_string(replacer, text)
    table = _TABLES.get(lang)
    if table is None:
        table = _TABLES[lang] = _AbbreviationTable(lang.Abbreviation.ABBREVIATIONS)
    lowered = text.lower()
    places = [i for i, s in table.other if s in lowered]
    if "." in lowered:
        before_dot = set()
        for run in _LETTERS_BEFORE_DOT.findall(lowered):
            for start in range(max(0, len(run) - table.longest), len(run)):
                before_dot.add(run[start:])
        for word in before_dot:
            places.extend(table.plain.get(word, ()))
    places.sort()
    for i in places:
        # pySBD 0.3.4's loop body, verbatim
        stripped = table.stripped[i]
        abbrev_match = re.findall(rf"(?:^|\s|\r|\n){stripped}", text, flags=re.IGNORECASE)
        if not abbrev_match:
            continue
        next_word_start = r"(?<={" + str(re.escape(stripped)) + "} ).{1}"
        char_array = re.findall(next_word_start, text)
        for ind, match in enumerate(abbrev_match):
            text = replacer.scan_for_replacements(text, match, ind, char_array)
    return text


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


# -- paragraphs that are one sentence to pySBD --------------------------------
#
# Most paragraphs of a novel are one sentence to pySBD: a line of dialogue
# ('"Quite so," said he.'), or a whole quoted speech, whose inner stops pySBD
# never splits at ('"I see. Then you met him?"').  pySBD spends as long on
# each of them as on a longer one (a hundred regex passes).  _one_sentence
# recognises a class of such paragraphs without running pySBD.  It follows
# pySBD 0.3.4's processor stage by stage, for languages that use the common
# rules unchanged (English, French, Dutch, Spanish, Italian, Polish:
# _plain_rules), on a paragraph T that
#
# 1. is made of letters (ASCII, Latin-1 and Latin Extended-A but "ſ"), ASCII
#    digits, spaces, single and double quotes and , ; : - – — . ! ? only (no
#    brackets, "&", backslash or line break, none of pySBD's own marks), and
#    neither starts nor ends with a space, nor starts with . ! ?;
# 2. has no quote followed by spaces and an ASCII capital ('"Yes" I said.'),
#    no digit followed by ". " and no "." followed by a digit (numbered lists
#    and references), and no one-letter word followed by "." (lettered lists);
# 3. has every ".", and every "!" or "?" not directly followed by a quote,
#    either as its last character or inside a double-quoted span as pySBD
#    pairs the quotes (_DOUBLE_QUOTED, pySBD's own pattern).
#
# Then no stage before the split inserts a line break (lists, references and
# parentheses need what 2 and 1 rule out), and the other stages only turn
# marks into placeholders: abbreviation, number, e-mail and ellipsis rules,
# and the ones that matter here: every mark inside a double-quoted span
# (between-punctuation rules) and every "!" or "?" followed by a quote ("in
# quotation" rules).  pySBD adds its end mark when T does not end with . ! ?.
# The split (SENTENCE_BOUNDARY_REGEX) then matches from T's first character
# up to the first ".", "!", "?" or end mark left, which by 3 is the end of T
# (its quote and bracket alternatives need 2's quote-space-capital, or
# brackets), and the placeholders are turned back: pySBD returns [T].  A
# final '."' whose quote closes no span is the case 3 keeps out: pySBD splits
# 'so I went."' into ['so I went.', '"'].
#
# tests/test_text_fastpaths.py checks that pySBD does return [T] for every
# corpus paragraph _one_sentence accepts, and for generated ones.

_WORD_CHARS = "A-Za-z0-9\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u017e"
_OTHER_CHARS = "'\",;:\\-\u2013\u2014"
_ONE_SENTENCE_CHARS = re.compile(  # condition 1
    rf"[{_WORD_CHARS}{_OTHER_CHARS}]"
    rf"(?:[{_WORD_CHARS}{_OTHER_CHARS} .!?]*[{_WORD_CHARS}{_OTHER_CHARS}.!?])?"
)
_SPLIT_HINT = re.compile(r"""['"] +[A-Z]|\d\. |\.\d|(?<!\S)[a-z]\.""")
_LOOSE_MARK = re.compile(r"""\.|[!?](?!['"])""")
# pySBD's BetweenPunctuation.BETWEEN_DOUBLE_QUOTES_REGEX_2: the spans whose marks it hides
_DOUBLE_QUOTED = re.compile(r'"(?=(?P<tmp>[^\"\\]+|\\{2}|\\.)*)(?P=tmp)"')
_PLAIN: dict[type, bool] = {}


def _plain_rules(lang: type) -> bool:
    """Whether pySBD language class *lang* runs the common rules unchanged
    (its own abbreviation lists and sentence starters aside)."""
    if lang not in _PLAIN:
        import pysbd
        from pysbd.abbreviation_replacer import AbbreviationReplacer
        from pysbd.lang.common import Common, Standard

        def own(cls) -> set[str]:
            return {k for k in vars(cls) if not k.startswith("__")}

        replacer = vars(lang).get("AbbreviationReplacer")
        abbreviation = vars(lang).get("Abbreviation")
        _PLAIN[lang] = (
            pysbd.__version__ == "0.3.4"  # the version _one_sentence was worked out for
            and lang.__mro__[1:] == (Common, Standard, object)
            and own(lang) <= {"iso_code", "AbbreviationReplacer", "Abbreviation"}
            and (
                replacer is None
                or (
                    replacer.__bases__ == (AbbreviationReplacer,)
                    and own(replacer) <= {"SENTENCE_STARTERS"}
                )
            )
            and (
                abbreviation is None
                or (
                    abbreviation.__bases__ == (Standard.Abbreviation,)
                    and own(abbreviation)
                    <= {"ABBREVIATIONS", "PREPOSITIVE_ABBREVIATIONS", "NUMBER_ABBREVIATIONS"}
                )
            )
        )
    return _PLAIN[lang]


def _one_sentence(lang: type, text: str) -> bool:
    """True when pySBD (language class *lang*) surely returns ``[text]``
    for *text* (conditions 1-3 above)."""
    if (
        not _ONE_SENTENCE_CHARS.fullmatch(text)
        or _SPLIT_HINT.search(text)
        or not _plain_rules(lang)
    ):
        return False
    last = len(text) - 1
    loose = [m.start() for m in _LOOSE_MARK.finditer(text) if m.start() != last]
    if not loose:
        return True
    spans = iter(_DOUBLE_QUOTED.finditer(text))
    span = next(spans, None)
    for pos in loose:  # both in text order
        while span is not None and span.end() <= pos:
            span = next(spans, None)
        if span is None or not span.start() < pos:
            return False
    return True
