"""Text helpers shared by the EPUB, HTML and plain-text readers.

Everything here is pure string work: whitespace normalisation, the
Project Gutenberg boilerplate markers, the title keyword tables used to
recognise front and back matter, and language-name lookup.
"""

from __future__ import annotations

import re
import unicodedata

# Characters that are invisible formatting, never spoken: zero-width space,
# word joiner, BOM / zero-width no-break space, soft hyphen.  ZWJ/ZWNJ are
# kept: they change the spelling of Arabic, Persian and Indic words.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u2060\ufeff\u00ad"), None)

#: Page-number markers left in the running text by Gutenberg-style editions:
#: ``[Pg 6]``, ``[Page 12]``, ``[p. 7]``, ``[pg xiv]``.
PAGE_MARKER_RE = re.compile(r"\[\s*(?:pg|page|p\.?)\s*[0-9ivxlcdm]+\s*\]", re.IGNORECASE)

#: ``*** START OF THE PROJECT GUTENBERG EBOOK ... ***`` (and older variants).
PG_START_RE = re.compile(
    r"^\W*\*{3}\s*START\s+OF\s+(?:THE|THIS)\s+PROJECT\s+GUTENBERG", re.IGNORECASE
)
#: ``*** END OF THE PROJECT GUTENBERG EBOOK ... ***`` and the
#: ``End of the Project Gutenberg EBook of ...`` line that precedes it.
PG_END_RE = re.compile(
    r"^\W*(?:\*{3}\s*END\s+OF\s+(?:THE|THIS)\s+PROJECT\s+GUTENBERG"
    r"|END\s+OF\s+(?:THE\s+)?PROJECT\s+GUTENBERG)",
    re.IGNORECASE,
)
#: Credits line that Gutenberg puts right after the START marker.
PG_CREDITS_RE = re.compile(
    r"^\W*(?:produced\s+by|e-?text\s+prepared\s+by|transcribed\s+(?:from|by))\b",
    re.IGNORECASE,
)
#: A TOC label or heading that is itself Project Gutenberg boilerplate.
PG_LABEL_RE = re.compile(r"project\s+gutenberg|gutenberg\s*(?:-tm|™)?\s+licen[cs]e", re.I)


def clean(text: str) -> str:
    """Whitespace-normalise *text*: one space between words, no newlines.

    Invisible formatting characters (zero-width space, word joiner, BOM,
    soft hyphen) are removed; every Unicode space (including no-break
    spaces) becomes a plain space.

    Parameters
    ----------
    text : str
        Any text.

    Returns
    -------
    str
        The normalised text, stripped at both ends.
    """
    return " ".join(text.translate(_INVISIBLE).split())


def word_count(text: str) -> int:
    """Number of whitespace-separated words in *text*."""
    return len(text.split())


def fold(text: str) -> str:
    """Lower-case *text*, drop accents and punctuation (for comparisons)."""
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(c for c in text if not unicodedata.combining(c))
    return " ".join(re.sub(r"[^\w]+", " ", text).split())


# --------------------------------------------------------------------------
# Front / back matter recognised from a section's title.  A title matches
# when the *whole* folded title (leading numbering removed) matches one of
# these patterns, so a chapter called "The Index of Forbidden Books" is not
# mistaken for an index.  Several languages are covered because the corpus
# and real users are multilingual.
# --------------------------------------------------------------------------
_FRONT_TITLES = r"""
    (?:the\s)?(?:table\sof\s)?contents? | toc | inhoud | inhoudsopgave | inhalt
  | inhaltsverzeichnis | table\sdes\smatieres | sommaire | indice | indholt
  | innehall | sisallys | spis\stresci | index
  | title\s?page | half\s?title(?:\spage)? | (?:front\s)?cover | couverture
  | page\sde\stitre | titelseite | titelpagina | titlepage
  | copyright(?:\spage|\snotice)? | imprint | impressum | imprimatur
  | dedication | dedicace | opdracht | widmung | epigraph | epigraphe
  | preface | voorrede | voorwoord | vorwort | vorrede | prefacio | prefazione
  | foreword | avant\spropos | introduction | introductory(?:\snote)? | inleiding
  | einleitung | introduccion | introduzione
  | acknowledge?ments? | remerciements | dankwoord | danksagung
  | (?:list\sof\s)?(?:illustrations|figures|tables|plates|maps)
  | table\sdes\sillustrations | frontispiece
  | also\sby\s.* | by\sthe\ssame\sauthor | other\sbooks\sby\s.* | praise\sfor\s.*
  | about\sthis\se?book | note\son\sthe\stext | au\slecteur
"""
_BACK_TITLES = r"""
    colophon | uncopyright | licen[cs]e | (?:the\s)?full\sproject\sgutenberg\slicen[cs]e
  | about\sthe\s(?:author|authors|publisher|translator)
  | glossary | glossaire | glossar | woordenlijst | vocabulary | vocabulaire | lexique
  | worterverzeichnis | bibliography | bibliographie | references | works\scited
  | further\sreading | notes | endnotes | end\snotes | footnotes | annotations
  | appendix(?:\s.*)? | appendices | errata | erratum | corrigenda | verbeteringen
  | afterword | credits | advertisements? | transcriber\s?s?\snotes?(?:\s.*)?
  | transcribers?\snotes?(?:\s.*)?
"""
FRONT_TITLE_RE = re.compile(rf"^(?:{_FRONT_TITLES})$", re.VERBOSE)
BACK_TITLE_RE = re.compile(rf"^(?:{_BACK_TITLES})$", re.VERBOSE)

# "1.", "I.", "Chapter 3:", "12 " in front of a title; removed before the
# keyword match so that "1. Introduction" is still an introduction.
_LEADING_NUMBER_RE = re.compile(r"^(?:(?:chapter|part|section)\s+)?(?:\d+|[ivxlcdm]+)\s+")


def matter_group(title: str) -> str | None:
    """Say whether a section *title* names front or back matter.

    Parameters
    ----------
    title : str
        A TOC label or heading.

    Returns
    -------
    {"front", "back"} or None
        The group the title belongs to (``"front"`` for contents, title
        page, preface...; ``"back"`` for colophon, licence, glossary...), or
        ``None`` for an ordinary chapter title.
    """
    folded = fold(title)
    if not folded:
        return None
    candidates = {folded, _LEADING_NUMBER_RE.sub("", folded)}
    for cand in candidates:
        if FRONT_TITLE_RE.match(cand):
            return "front"
        if BACK_TITLE_RE.match(cand):
            return "back"
    if PG_LABEL_RE.search(title):
        return "back" if re.search(r"licen[cs]e", title, re.I) else "front"
    return None


#: Roman numeral (upper or lower case), strict form.
ROMAN_RE = re.compile(
    r"^(?=[MDCLXVI])M{0,4}(CM|CD|D?C{0,3})(XC|XL|L?X{0,3})(IX|IV|V?I{0,3})$", re.IGNORECASE
)
_ROMAN_VALUES = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}


def roman_to_int(numeral: str) -> int | None:
    """Value of a Roman numeral, or ``None`` when *numeral* is not one."""
    if not numeral or not ROMAN_RE.match(numeral):
        return None
    total = 0
    prev = 0
    for ch in reversed(numeral.upper()):
        value = _ROMAN_VALUES[ch]
        total = total - value if value < prev else total + value
        prev = max(prev, value)
    return total


_ORDINAL_ONLY_RE = re.compile(
    r"^(?:(?:chapter|part|book|section|stave|canto|act|scene)\s+)?"
    r"(?:\d+|[ivxlcdm]+|one|two|three|four|five|six|seven|eight|nine|ten)$"
)


def is_bare_ordinal(label: str) -> bool:
    """True for labels that only number something ("I", "2.", "Part III")."""
    return bool(_ORDINAL_ONLY_RE.match(fold(label)))


# Language names as written in Project Gutenberg headers ("Language: French").
LANGUAGE_CODES = {
    "afrikaans": "af",
    "arabic": "ar",
    "bulgarian": "bg",
    "catalan": "ca",
    "chinese": "zh",
    "czech": "cs",
    "danish": "da",
    "dutch": "nl",
    "english": "en",
    "esperanto": "eo",
    "estonian": "et",
    "finnish": "fi",
    "french": "fr",
    "galician": "gl",
    "german": "de",
    "greek": "el",
    "hebrew": "he",
    "hungarian": "hu",
    "icelandic": "is",
    "indonesian": "id",
    "irish": "ga",
    "italian": "it",
    "japanese": "ja",
    "korean": "ko",
    "latin": "la",
    "latvian": "lv",
    "lithuanian": "lt",
    "norwegian": "no",
    "persian": "fa",
    "polish": "pl",
    "portuguese": "pt",
    "romanian": "ro",
    "russian": "ru",
    "serbian": "sr",
    "slovak": "sk",
    "slovenian": "sl",
    "spanish": "es",
    "swedish": "sv",
    "tagalog": "tl",
    "turkish": "tr",
    "ukrainian": "uk",
    "welsh": "cy",
    "yiddish": "yi",
}

_PG_FIELD_RE = re.compile(r"^\s*(Title|Author|Language)\s*:\s*(.*\S)\s*$", re.IGNORECASE)


def pg_header_fields(lines: list[str]) -> dict[str, str]:
    """Read ``Title:``, ``Author:`` and ``Language:`` from a Gutenberg header.

    Parameters
    ----------
    lines : list of str
        The header lines (everything before the ``*** START OF`` marker).

    Returns
    -------
    dict
        Keys ``"title"``, ``"author"`` and ``"language"`` (a language code)
        for the fields found; the title keeps only its first line.
    """
    fields: dict[str, str] = {}
    for line in lines:
        m = _PG_FIELD_RE.match(line)
        if not m:
            continue
        key, value = m.group(1).lower(), clean(m.group(2))
        if key in fields or not value:
            continue
        if key == "language":
            name = fold(value).split(" ")[0] if fold(value) else ""
            code = LANGUAGE_CODES.get(name)
            if code:
                fields["language"] = code
        else:
            fields[key] = value
    return fields


def split_authors(value: str) -> tuple[str, ...]:
    """Split an ``Author:`` field on semicolons (names themselves may hold "and")."""
    return tuple(a for a in (clean(p) for p in value.split(";")) if a)
