"""Spoken forms: what a sentence sounds like, written out for the engine.

Engines guess at digits, Roman numerals and abbreviations, and guess wrong
("Chapter IV" as "Chapter I V", "Dr." as "drive", "1851" as "one eight five
one").  :func:`spoken_form` writes them out in words, per language, with
`num2words <https://pypi.org/project/num2words/>`_ for the numbers:

* cardinals with the language's thousands and decimal separators
  (``1,000.5`` en, ``1 000,5`` / ``1.000,5`` fr, ``1.000,5`` nl);
* ordinals (``21st``; ``1er``, ``1re``, ``2e``, ``XIXe siècle``; ``1e``, ``2de``, ``21ste``);
* years in a year context (``in 1851`` -> "in eighteen fifty-one"; French
  reads years as cardinals, Dutch as "achttien honderd eenenvijftig");
* currencies (``$5``, ``$3.50``, ``£10``, ``€20``, ``20 €``, ``3,50 €``, ``ƒ 5``),
  times (``10:30``, ``7:05 pm``, ``10h30``, ``10.30 uur``), percentages, degrees;
* Roman numerals after title words (``Chapter IV``, ``CHAPITRE III``,
  ``Hoofdstuk II``), at the start of headings (``IV. The Return``), in
  regnal names (``Louis XIV``) and French/Dutch ordinals (``XIXe``) — never
  the pronoun "I" or words such as "MIX", "CIVIL", "DID";
* common abbreviations (``Dr.``, ``Mr.``, ``St.``, ``No. 5``, ``etc.``,
  ``e.g.``; ``M.``, ``Mme``, ``p. ex.``, ``c.-à-d.``; ``dhr.``, ``bijv.``,
  ``d.w.z.``, ``blz.``...).

Languages without rules here get cardinals only, when num2words speaks them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from ..numerals import roman_value

__all__ = ["FEATURES", "roman_value", "rules_for", "spoken_form"]

#: Normalisation features that can be switched off one by one.
FEATURES = ("numbers", "abbreviations", "roman")


def _n2w(number, lang: str, to: str = "cardinal") -> str:
    from num2words import num2words

    return num2words(number, lang=lang, to=to)


_DIGIT = re.compile(r"\d")
_SPACE_RUN = re.compile(r"[ \t]{2,}")


def _needles(pattern: str) -> tuple[str, ...] | None:
    """Strings one of which is in every text *pattern* matches, or ``None``.

    A rule whose needles are all missing from a text cannot change it, and
    ``in`` finds that out much faster than the rule's regex (``\\bMr\\.``
    tries every word boundary).  The needles come from the parsed pattern: a
    row of literal characters (zero-width assertions such as ``\\b`` or a
    lookahead do not break the row) is in every match as it is; for an
    alternation, one row per branch.  ``None`` (the rule always runs) when the
    pattern ignores case or has no such row.
    """
    try:
        from re import _parser
    except ImportError:  # Python 3.10
        import sre_parse as _parser  # type: ignore[no-redef]

    def pick(a, b):  # the needles with the longest shortest needle: the rarest
        if a is None or b is None:
            return a or b
        return a if min(map(len, a)) >= min(map(len, b)) else b

    def sequence(items) -> tuple[str, ...] | None:
        best, row = None, ""
        for op, av in items:
            if op is _parser.LITERAL:
                row += chr(av)
                continue
            if op in (_parser.AT, _parser.ASSERT, _parser.ASSERT_NOT):
                continue  # zero-width: the characters around it are consecutive in the text
            best, row = pick(best, (row,) if row else None), ""
            found = None
            if op is _parser.BRANCH:
                branches = [sequence(b) for b in av[1]]
                if all(b is not None for b in branches):
                    found = tuple(sorted({n for b in branches for n in b}))
            elif op is _parser.SUBPATTERN and not av[1] & re.IGNORECASE:
                found = sequence(av[-1])
            elif op in (_parser.MAX_REPEAT, _parser.MIN_REPEAT) and av[0] >= 1:
                found = sequence(av[2])
            best = pick(best, found)
        return pick(best, (row,) if row else None)

    try:
        parsed = _parser.parse(pattern)
    except Exception:  # noqa: BLE001 - not a pattern this knows: no shortcut
        return None
    if parsed.state.flags & re.IGNORECASE:
        return None
    return sequence(parsed)


# Characters that end the "word" a pattern may touch: letters, digits and the
# lexicon placeholders (private use area) count as word characters here.
_W = r"[^\W_]|[\ue000-\uf8ff]"


class Rules:
    """Spoken-form rules of one language (the base class: cardinals only)."""

    lang = ""
    n2w: str | None = None
    # Numbers: an integer part with thousands groups, or plain digits; decimals.
    grouped = r"\d{1,3}(?:,\d{3})+"
    decimal = "."
    point = "point"
    digits_each_decimal = True
    percent = "percent"
    range_word = "to"
    degree = ("degree", "degrees")
    scale_words = ("thousand", "million", "billion")
    title_words: tuple[str, ...] = ()
    regnal = "ordinal"  # "ordinal" (Louis the fourteenth), "cardinal" (Louis quatorze)
    regnal_article = "the"
    regnal_stop: frozenset[str] = frozenset()
    currencies: dict[str, tuple[str, str, str, str]] = {}
    currency_and = "and"
    year_cues = ""
    abbreviations: tuple[tuple[str, str, bool], ...] = ()

    def __init__(self, features: Iterable[str] = FEATURES):
        self.features = frozenset(features)
        self._abbr = [(re.compile(p), r, final, _needles(p)) for p, r, final in self.abbreviations]
        # Every rule's needles in one search: a sentence without any (most) skips the pass.
        needles = {n for *_, ns in self._abbr for n in (ns or ())}
        self._abbr_needles = (
            re.compile("|".join(map(re.escape, sorted(needles))))
            if self._abbr and all(ns is not None for *_, ns in self._abbr)
            else None
        )
        num = rf"(?:{self.grouped}|\d+)(?:{re.escape(self.decimal)}\d+)?"
        self.num = num
        self._num_re = re.compile(rf"(?<![\w.,])(?<!\d[.,]){num}(?![\w]|[.,]\d)")
        self._title_re = (
            re.compile(
                rf"\b(?P<w>{'|'.join(self.title_words)})(?P<sp>\.?\s+)(?P<r>[MDCLXVI]+|[mdclxvi]+)"
                rf"(?P<suf>er|re|ère|e|ème)?(?!{_W}|['’]\w)",
                re.IGNORECASE,
            )
            if self.title_words
            else None
        )
        self._year_before = (
            re.compile(
                rf"(?:\b(?:{self.year_cues})\.?,?|\(|\d{{1,2}}(?:st|nd|rd|th|e)?,?)\s*$", re.I
            )
            if self.year_cues
            else None
        )

    # -- helpers ---------------------------------------------------------------
    def cardinal(self, n: int) -> str:
        # num2words writes "one thousand, five hundred": no pause wanted there.
        return _n2w(n, self.n2w).replace(",", "") if self.n2w else str(n)

    def ordinal(self, n: int) -> str:
        return _n2w(n, self.n2w, "ordinal") if self.n2w else str(n)

    def year(self, n: int) -> str:
        return self.cardinal(n)

    def digit_words(self, digits: str) -> str:
        return " ".join(self.cardinal(int(d)) for d in digits if d.isdigit())

    def number(self, token: str) -> str:
        """Words of a number token (thousands groups, decimals)."""
        whole, _, frac = token.partition(self.decimal) if self.decimal in token else (token, "", "")
        whole = re.sub(r"\D", "", whole)
        if not whole:
            return token
        if (len(whole) > 1 and whole.startswith("0")) or (token.isdigit() and len(token) >= 7):
            words = self.digit_words(whole)  # 007, phone and ISBN-like digit strings
        else:
            words = self.cardinal(int(whole))
        if frac:
            if self.digits_each_decimal or frac.startswith("0") or len(frac) > 2:
                words += f" {self.point} {self.digit_words(frac)}"
            else:
                words += f" {self.point} {self.cardinal(int(frac))}"
        return words

    def value(self, token: str) -> float:
        whole, _, frac = token.partition(self.decimal) if self.decimal in token else (token, "", "")
        return float(re.sub(r"\D", "", whole) + "." + (frac or "0"))

    # -- stages ---------------------------------------------------------------
    def speak(self, text: str, heading: bool = False) -> str:
        if not self.n2w:
            return text
        if "roman" in self.features:
            text = self.roman(text, heading)
        if "abbreviations" in self.features:
            text = self.expand_abbreviations(text)
        if "numbers" in self.features and _DIGIT.search(text):
            text = self.numbers(
                text
            )  # every number rule starts from a digit: text without one skips them
        return _SPACE_RUN.sub(" ", text).strip()

    def roman(self, text: str, heading: bool) -> str:
        return text

    def expand_abbreviations(self, text: str) -> str:
        if self._abbr_needles is not None and not self._abbr_needles.search(text):
            return text
        for pattern, repl, final, needles in self._abbr:
            if needles is not None and not any(n in text for n in needles):
                continue  # cannot match: "Mr." is not in the text (most rules, most sentences)
            text = pattern.sub(lambda m, r=repl, f=final: self._abbr_sub(m, r, f), text)
        return text

    @staticmethod
    def _abbr_sub(m: re.Match, repl: str, final: bool) -> str:
        out = m.expand(repl)
        word = m.group(0)
        if (word[:1].isupper() and out[:1].islower() and not word[1:2].isupper()) or (
            word.isupper() and len(word) > 2
        ):
            out = out[:1].upper() + out[1:]
        if final and word.endswith("."):
            rest = m.string[m.end() :]
            if re.match(r"\s*[\"')\]]*\s*$", rest) or re.match(r"\s+[\"'(]?[A-Z]", rest):
                out += "."
        return out

    def numbers(self, text: str) -> str:
        return self._num_re.sub(lambda m: self.number(m.group(0)), text)


# ----------------------------------------------------------------------------- English
_EN_MONTHS = (
    "January|February|March|April|May|June|July|August|September|October|November|December"
    "|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec"
)


class EnglishRules(Rules):
    lang = "en"
    n2w = "en"
    title_words = (
        "chapter", "chap", "book", "part", "volume", "vol", "section", "act", "scene", "canto",
        "stave", "appendix", "lesson", "article", "psalm", "letter", "no", "number", "page", "p",
        "pp", "vols", "chapters", "parts", "books", "plate", "figure", "fig", "class", "type",
        "grade", "phase",
    )  # fmt: skip
    regnal_stop = frozenset(
        [
            "The",
            "A",
            "An",
            "And",
            "But",
            "Or",
            "Nor",
            "So",
            "Then",
            "When",
            "While",
            "If",
            "In",
            "On",
            "At",
            "Of",
            "To",
            "For",
            "By",
            "With",
            "From",
            "As",
            "Is",
            "Was",
            "It",
            "He",
            "She",
            "We",
            "They",
            "You",
            "Yes",
            "No",
            "Not",
            "Now",
            "Here",
            "There",
            "This",
            "That",
            "These",
            "Those",
            "What",
            "Who",
            "Why",
            "How",
            "Which",
            "Where",
            "Mr",
            "Mrs",
            "Dr",
            "St",
            "Mt",
            "Sir",
            "My",
            "His",
            "Her",
            "Our",
            "Their",
            "Its",
            "Did",
            "Do",
            "Does",
            "Had",
            "Has",
            "Have",
            "Will",
            "Would",
            "Shall",
            "Should",
            "Can",
            "Could",
            "May",
            "Might",
            "Must",
            "Let",
            "Oh",
            "Ah",
            "Well",
            "Dear",
            "Said",
            "Says",
            "Before",
            "After",
            "Since",
            "Until",
            "Till",
            "During",
            "Chapter",
            "Section",
        ]
    )
    currencies = {
        "$": ("dollar", "dollars", "cent", "cents"),
        "£": ("pound", "pounds", "penny", "pence"),
        "€": ("euro", "euros", "cent", "cents"),
        "¥": ("yen", "yen", "sen", "sen"),
    }
    year_cues = (
        "in|of|since|until|till|from|to|by|before|after|during|between|and|or|circa|c|ca|about|around|year|"
        "years|spring|summer|autumn|fall|winter|early|late|mid|born|died|b|d|fl|anno|" + _EN_MONTHS
    )
    abbreviations = (
        (r"\bMr\.", "Mister", False),
        (r"\bMrs\.", "Missus", False),
        (r"\bMessrs\.", "Messieurs", False),
        (r"\bMs\.", "Miz", False),
        (r"\bDr\.(?=\s+[A-Z])", "Doctor", False),
        (r"(?<=[a-z] )Dr\.", "Drive", True),
        (r"\bDr\.", "Doctor", False),
        (r"\bProf\.", "Professor", False),
        (r"\bRev\.", "Reverend", False),
        (r"\bCapt\.", "Captain", False),
        (r"\bCol\.(?=\s+[A-Z])", "Colonel", False),
        (r"\bGen\.(?=\s+[A-Z])", "General", False),
        (r"\bLieut?\.", "Lieutenant", False),
        (r"\bLt\.", "Lieutenant", False),
        (r"\bSgt\.", "Sergeant", False),
        (r"\bGov\.", "Governor", False),
        (r"\bHon\.", "Honourable", False),
        (r"\bJr\.", "Junior", True),
        (r"\bSr\.", "Senior", True),
        (r"\bMt\.(?=\s+[A-Z])", "Mount", False),
        (r"\bSt\.(?=\s*[A-Z])", "Saint", False),
        (r"(?<=[a-z] )St\.", "Street", True),
        (r"\bNos\.(?=\s*\d)", "numbers", False),
        (r"\bNo\.(?=\s*\d)", "number", False),
        (r"\bno\.(?=\s*\d)", "number", False),
        (r"\b[Vv]s\.?(?=\s)", "versus", False),
        (r"\b[Ee]tc\.", "et cetera", True),
        (r"&c\.", "et cetera", True),
        (r"\b[Ee]\.\s?g\.(?!\w)", "for example", False),
        (r"\b[Ii]\.\s?e\.(?!\w)", "that is", False),
        (r"\b[Vv]iz\.", "namely", False),
        (r"\b[Cc]f\.", "compare", False),
        (r"\b[Aa]pprox\.", "approximately", False),
        (r"(?<=\d )ft\.(?!\w)|(?<=\d)ft\.(?!\w)", "feet", True),
        (r"(?<=\d )lbs?\.(?!\w)|(?<=\d)lbs?\.(?!\w)", "pounds", True),
        (r"(?<=\d )oz\.(?!\w)", "ounces", True),
        (r"(?<=\d )sq\.(?=\s)", "square", False),
    )

    def __init__(self, features: Iterable[str] = FEATURES):
        super().__init__(features)
        self._ordinal_re = re.compile(
            rf"(?<![\w.,])({self.grouped}|\d+)(st|nd|rd|th|d)(?!\w)", re.I
        )

    def year(self, n: int) -> str:
        return _n2w(n, "en", "year")

    def roman(self, text: str, heading: bool) -> str:
        return _roman_common(self, text, heading)

    def regnal_words(self, n: int, suffix: str) -> str:
        return f"the {self.ordinal(n)}"

    def numbers(self, text: str) -> str:
        text = _digit_chains(self, text)
        text = _times_en(self, text)
        text = _currency(self, text)
        text = _percent_degrees(self, text)
        text = self._ordinal_re.sub(lambda m: self._ordinal(m), text)
        text = _ranges(self, text)
        text = _years(self, text)
        # "July 4" -> "July fourth"
        text = re.sub(
            rf"\b({_EN_MONTHS})(\.?\s+)([1-9]|[12]\d|3[01])(?![\w:]|[.,]\d)",
            lambda m: f"{m.group(1)}{m.group(2)}{self.ordinal(int(m.group(3)))}",
            text,
        )
        return super().numbers(text)

    def _ordinal(self, m: re.Match) -> str:
        suffix = m.group(2).lower()
        n = int(re.sub(r"\D", "", m.group(1)))
        expected = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
        if suffix != expected and not (suffix == "d" and n % 10 in (2, 3)):
            return m.group(0)
        return self.ordinal(n)


# ----------------------------------------------------------------------------- French
class FrenchRules(Rules):
    lang = "fr"
    n2w = "fr"
    grouped = r"\d{1,3}(?:[ .]\d{3})+"
    decimal = ","
    point = "virgule"
    digits_each_decimal = False
    percent = "pour cent"
    range_word = "à"
    degree = ("degré", "degrés")
    scale_words = ("mille", "millions?", "milliards?")
    title_words = (
        "chapitre", "chap", "livre", "partie", "tome", "acte", "scène", "leçon", "section",
        "article", "volume", "vol", "chant", "lettre", "page", "p", "numéro", "n°", "no", "psaume",
        "planche", "figure",
    )  # fmt: skip
    regnal = "cardinal"
    regnal_stop = frozenset(
        [
            "Le",
            "La",
            "Les",
            "Un",
            "Une",
            "Des",
            "Et",
            "Ou",
            "Mais",
            "Donc",
            "Car",
            "Ni",
            "Si",
            "Il",
            "Elle",
            "Ils",
            "Elles",
            "On",
            "Nous",
            "Vous",
            "Je",
            "Tu",
            "Ce",
            "Cette",
            "Ces",
            "Qui",
            "Que",
            "Quoi",
            "Dans",
            "Sur",
            "Sous",
            "Avec",
            "Pour",
            "Par",
            "Sans",
            "En",
            "Au",
            "Aux",
            "Du",
            "De",
            "Oui",
            "Non",
            "Mon",
            "Ma",
            "Mes",
            "Son",
            "Sa",
            "Ses",
        ]
    )
    currencies = {
        "€": ("euro", "euros", "centime", "centimes"),
        "$": ("dollar", "dollars", "cent", "cents"),
        "£": ("livre", "livres", "penny", "pence"),
        "F": ("franc", "francs", "centime", "centimes"),
        "fr.": ("franc", "francs", "centime", "centimes"),
    }
    currency_and = ""
    abbreviations = (
        (r"\bMM\.(?=\s+[A-Z])", "Messieurs", False),
        (r"\bM\.(?=\s+[A-ZÀ-Ý])", "Monsieur", False),
        (r"\bMmes\b\.?", "Mesdames", False),
        (r"\bMme\b\.?", "Madame", False),
        (r"\bMlles\b\.?", "Mesdemoiselles", False),
        (r"\bMlle\b\.?", "Mademoiselle", False),
        (r"\bMgr\b\.?", "Monseigneur", False),
        (r"\b(?:Dr|Docteur)\b\.?(?=\s+[A-ZÀ-Ý])", "Docteur", False),
        (r"\bSte\b\.?(?=[\s-]+[A-ZÀ-Ý])", "Sainte", False),
        (r"\bSt\b\.?(?=[\s-]+[A-ZÀ-Ý])", "Saint", False),
        (r"\b[Ee]tc\.", "et cetera", True),
        (r"\b[Pp]\.\s?ex\.", "par exemple", False),
        (r"\b[Cc]\.-à-d\.", "c'est-à-dire", False),
        (r"\b[Cc]\.à\.d\.", "c'est-à-dire", False),
        (r"\bav\.\s?J\.-C\.", "avant Jésus-Christ", True),
        (r"\bapr\.\s?J\.-C\.", "après Jésus-Christ", True),
        (r"\bJ\.-C\.", "Jésus-Christ", True),
        (r"\b[Nn][°o]\s?(?=\d)", "numéro ", False),
        (r"\b[Cc]f\.", "voir", False),
        (r"\benv\.(?=\s*\d)", "environ", False),
        (r"(?<=\d )kg\b", "kilos", False),
        (r"(?<=\d )km\b", "kilomètres", False),
    )

    def __init__(self, features: Iterable[str] = FEATURES):
        super().__init__(features)
        self._ordinal_re = re.compile(
            r"(?<![\w.,])(\d+)(er|re|ère|ers|res|ères|e|es|ème|èmes|eme|nd|nde|nds|ndes)(?!\w)"
        )

    def cardinal(self, n: int) -> str:
        return _n2w(n, "fr")

    def ordinal(self, n: int, suffix: str = "") -> str:
        suffix = suffix.lower()
        plural = suffix.endswith("s") and suffix not in ("s",)
        base = suffix.rstrip("s")
        if n == 1:
            word = "première" if base in ("re", "ère") else "premier"
        elif n == 2 and base in ("nd", "nde"):
            word = "seconde" if base == "nde" else "second"
        else:
            word = _n2w(n, "fr", "ordinal")
        return word + ("s" if plural else "")

    def regnal_words(self, n: int, suffix: str) -> str:
        if n == 1 or suffix:
            return self.ordinal(n, suffix or "er")
        return self.cardinal(n)

    def roman(self, text: str, heading: bool) -> str:
        text = _roman_common(self, text, heading)
        # XIXe siècle, Ier, Ire: ordinals wherever they are.
        return re.sub(
            r"\b([IVXLC]{2,}|I(?=er|re|ère)|[IVXLC](?=e\s+"
            + _FR_ORDINAL_NOUNS
            + r"))(er|re|ère|e|ème)(?!\w)",
            lambda m: (
                self.ordinal(v, m.group(2))
                if (v := roman_value(m.group(1)))
                and (v == 1) == (m.group(2) in ("er", "re", "ère"))
                else m.group(0)
            ),
            text,
        )

    def numbers(self, text: str) -> str:
        text = _digit_chains(self, text)
        text = _times_fr(self, text)
        text = _currency(self, text)
        text = _percent_degrees(self, text)
        text = self._ordinal_re.sub(lambda m: self.ordinal(int(m.group(1)), m.group(2)), text)
        text = _ranges(self, text)
        return super().numbers(text)


# ----------------------------------------------------------------------------- Dutch
class DutchRules(Rules):
    lang = "nl"
    n2w = "nl"
    grouped = r"\d{1,3}(?:\.\d{3})+"
    decimal = ","
    point = "komma"
    digits_each_decimal = False
    percent = "procent"
    range_word = "tot"
    degree = ("graad", "graden")
    scale_words = ("duizend", "miljoen", "miljard")
    title_words = (
        "hoofdstuk", "deel", "boek", "bedrijf", "tooneel", "toneel", "les", "afdeling", "zang",
        "artikel", "bladzijde", "blz", "nummer", "nr", "no", "psalm", "brief", "afbeelding", "fig",
        "plaat",
    )  # fmt: skip
    regnal_article = "de"
    regnal_stop = frozenset(
        [
            "De",
            "Het",
            "Een",
            "En",
            "Of",
            "Maar",
            "Dus",
            "Want",
            "Als",
            "Dan",
            "Toen",
            "Ik",
            "Jij",
            "Je",
            "Hij",
            "Zij",
            "Ze",
            "Wij",
            "We",
            "Gij",
            "Dit",
            "Dat",
            "Deze",
            "Die",
            "Wie",
            "Wat",
            "Waar",
            "In",
            "Op",
            "Aan",
            "Van",
            "Voor",
            "Met",
            "Bij",
            "Uit",
            "Om",
            "Ja",
            "Nee",
            "Neen",
            "Mijn",
            "Zijn",
            "Haar",
            "Ons",
            "Hun",
            "Er",
            "Hier",
            "Daar",
        ]
    )
    currencies = {
        "€": ("euro", "euro", "cent", "cent"),
        "ƒ": ("gulden", "gulden", "cent", "cent"),
        "fl.": ("gulden", "gulden", "cent", "cent"),
        "$": ("dollar", "dollar", "cent", "cent"),
        "£": ("pond", "pond", "penny", "pence"),
    }
    currency_and = ""
    year_cues = (
        "in|van|sinds|sedert|tot|tussen|en|of|omstreeks|circa|ca|rond|jaar|jare|anno|voor|na|geboren|"
        "gestorven|januari|januarij|februari|februarij|maart|april|mei|juni|junij|juli|julij|augustus|september|"
        "oktober|october|november|december"
    )
    abbreviations = (
        (r"\b[Dd]hr\.", "de heer", False),
        (r"\b[Mm]evr\.", "mevrouw", False),
        (r"\b[Mm]ej\.", "mejuffrouw", False),
        (r"\b[Bb]ijv\.", "bijvoorbeeld", False),
        (r"\b[Bb]\.v\.", "bijvoorbeeld", False),
        (r"\b[Dd]\.w\.z\.", "dat wil zeggen", False),
        (r"\b[Ee]nz\.", "enzovoort", True),
        (r"\b[Ee]\.d\.", "en dergelijke", True),
        (r"\b[Bb]lz\.", "bladzijde", False),
        (r"\b[Oo]\.a\.", "onder andere", False),
        (r"\b[Mm]\.a\.w\.", "met andere woorden", False),
        (r"\b[Ii]\.p\.v\.", "in plaats van", False),
        (r"\b[Tt]\.a\.v\.", "ten aanzien van", False),
        (r"\b[Nn]r\.(?=\s*\d)", "nummer", False),
        (r"\b[Nn]o\.(?=\s*\d)", "nummer", False),
        (r"\b[Cc]a\.(?=\s*\d)", "circa", False),
        (r"\bv\.\s?Chr\.", "voor Christus", True),
        (r"\bn\.\s?Chr\.", "na Christus", True),
        (r"\bjl\.", "jongstleden", True),
        (r"\bDr\.(?=\s+[A-Z])", "dokter", False),
        (r"\bSt\.(?=\s+[A-Z])", "Sint", False),
        (r"\bProf\.(?=\s+[A-Z])", "professor", False),
    )

    def __init__(self, features: Iterable[str] = FEATURES):
        super().__init__(features)
        self._ordinal_re = re.compile(r"(?<![\w.,])(\d+)(ste|de|e)(?!\w)")

    def year(self, n: int) -> str:
        return _n2w(n, "nl", "year")

    def regnal_words(self, n: int, suffix: str) -> str:
        return f"de {self.ordinal(n)}"

    def roman(self, text: str, heading: bool) -> str:
        text = _roman_common(self, text, heading)
        return re.sub(
            r"\b([IVXLC]{2,}|[IVXLC](?=e\s+eeuw))(ste|de|e)(?!\w)",
            lambda m: self.ordinal(v) if (v := roman_value(m.group(1))) else m.group(0),
            text,
        )

    def numbers(self, text: str) -> str:
        text = _digit_chains(self, text)
        text = _times_nl(self, text)
        text = _currency(self, text)
        text = _percent_degrees(self, text)
        text = self._ordinal_re.sub(lambda m: self._ordinal(m), text)
        text = _ranges(self, text)
        text = _years(self, text)
        return super().numbers(text)

    def _ordinal(self, m: re.Match) -> str:
        n, suffix = int(m.group(1)), m.group(2)
        word = self.ordinal(n)
        # 1e/1ste, 2e/2de, 8e/8ste: any suffix fits; the written one is a hint only.
        return word if suffix in ("e", "de", "ste") else m.group(0)


# ----------------------------------------------------------------------------- shared stages
#: Nouns after which a one-letter Roman ordinal is one ("Ve siècle", not "Le", "Ce").
_FR_ORDINAL_NOUNS = (
    r"(?:siècle|millénaire|arrondissement|République|Empire|dynastie|congrès|régiment|livre|chant)"
)

#: Title words that never number with a lone "I" (it is the pronoun after them).
_NOT_BEFORE_I = frozenset(
    [
        "no",
        "number",
        "p",
        "pp",
        "page",
        "nr",
        "nummer",
        "numéro",
        "n°",
        "letter",
        "lettre",
        "brief",
        "les",
    ]
)


def _roman_common(rules: Rules, text: str, heading: bool) -> str:
    """Roman numerals after title words, at a heading's start and in regnal names."""
    if rules._title_re is not None:

        def title(m: re.Match) -> str:
            numeral, word, suffix = m.group("r"), m.group("w"), m.group("suf") or ""
            value = roman_value(numeral)
            if value is None:
                return m.group(0)
            if (
                numeral.upper() == "I"
                and not suffix
                and (
                    word.islower()  # "the book I read"
                    or "." in m.group("sp")  # "No. I should like"
                    or word.lower() in _NOT_BEFORE_I
                    or re.match(r"\s+[a-z]|['’]", m.string[m.end() :])  # "Part I think", "Part I'm"
                )
            ):
                return m.group(0)
            if numeral.islower() and len(numeral) == 1 and numeral not in ("i", "v", "x"):
                return m.group(0)
            if suffix:
                spoken = (
                    rules.ordinal(value, suffix)
                    if isinstance(rules, FrenchRules)
                    else rules.ordinal(value)
                )
            else:
                spoken = rules.cardinal(value)
            return f"{word}{m.group('sp')}{spoken}"

        text = rules._title_re.sub(title, text)
    if heading:

        def head(m: re.Match) -> str:
            value = roman_value(m.group(2))
            if value is None or value > 399:
                return m.group(0)
            return m.group(1) + rules.cardinal(value)

        text = re.sub(r"^(\s*[\"'(\[]?)([MDCLXVI]+)(?=\s*(?:[.:)\]\u2014\u2013-]|$))", head, text)

    def regnal(m: re.Match) -> str:
        name, numeral, suffix = m.group(1), m.group(2), m.group(3) or ""
        value = roman_value(numeral)
        if (
            value is None
            or name in rules.regnal_stop
            or not (1 < value < 40 or (suffix and value < 40))
        ):
            return m.group(0)
        if isinstance(rules, EnglishRules) and name in ("War", "Vatican"):
            return f"{name} {rules.cardinal(value)}"
        return f"{name} {rules.regnal_words(value, suffix)}"

    suffix = r"(er|re|ère)?" if isinstance(rules, FrenchRules) else r"()"
    return re.sub(
        r"\b([A-ZÀ-Ý][a-zà-ÿ]+)\s+([IVX]{2,}|I(?=er\b|re\b|ère\b)|[IVX]+(?=er\b))"
        + suffix
        + rf"(?!{_W}|['’]\w)",
        regnal,
        text,
    )


def _digit_chains(rules: Rules, text: str) -> str:
    """ISBN-like and phone-like groups (three or more joined by hyphens): digit by digit."""
    return re.sub(
        r"(?<![\w.,-])\d+(?:-\d+){2,}(?![\w-])",
        lambda m: ", ".join(rules.digit_words(g) for g in m.group(0).split("-")),
        text,
    )


def _ranges(rules: Rules, text: str) -> str:
    """``1861-1865``, ``10–20``: the dash between numbers is said ("to", "à", "tot")."""
    text = re.sub(r"(?<=\d)\s*[\u2013\u2014]\s*(?=\d)", f" {rules.range_word} ", text)
    return re.sub(
        r"(?<![\w.,-])(\d{1,4})-(\d{1,4})(?![\w-]|[.,]\d)", rf"\1 {rules.range_word} \2", text
    )


def _years(rules: Rules, text: str) -> str:
    """Four-digit numbers 1000-2099 in a year context: year words."""
    if rules._year_before is None:
        return text
    era = re.compile(
        r"\s*(?:A\.?\s?D\.?|B\.?\s?C\.?(?:E\.?)?|C\.?E\.?|v\.\s?Chr\.|n\.\s?Chr\.)(?!\w)"
    )
    after_range = re.compile(rf"\s*(?:{rules.range_word})\s+\d")

    def year(m: re.Match) -> str:
        n = int(m.group(1))
        decade = m.group(2)
        before = text[max(0, m.start() - 40) : m.start()]
        after = text[m.end() :]
        if not (
            decade
            or rules._year_before.search(before)
            or era.match(after)
            or after_range.match(after)
            or re.search(rf"\b{rules.range_word}\s*$", before)
        ):
            return m.group(0)
        words = rules.year(n)
        if decade:
            words = re.sub(r"y$", "ies", words) if words.endswith("y") else words + "s"
        return words

    return re.sub(r"(?<![\w.,])(1\d{3}|20\d{2})('?s)?(?![\w]|[.,]\d)", year, text)


def _currency_words(rules: Rules, amount: str, symbol: str, scale: str = "") -> str:
    names = rules.currencies[symbol]
    whole, _, cents = (
        amount.partition(rules.decimal) if rules.decimal in amount else (amount, "", "")
    )
    whole_n = int(re.sub(r"\D", "", whole) or 0)
    if scale:
        words = f"{rules.number(amount)} {scale} {names[1]}"
        if rules.lang == "fr":
            words = words.replace(
                f"{scale} {names[1]}",
                f"{scale} d'{names[1]}" if names[1][0] in "aeiou" else f"{scale} de {names[1]}",
            )
        return words
    unit = names[0] if whole_n == 1 else names[1]
    words = f"{rules.cardinal(whole_n)} {unit}"
    if cents and int(cents):
        cents_n = int((cents + "0")[:2])
        if rules.lang == "en":
            cents_name = names[2] if cents_n == 1 else names[3]
            words += f" {rules.currency_and} {rules.cardinal(cents_n)} {cents_name}"
        else:
            words += f" {rules.cardinal(cents_n)}"
    return words


def _currency(rules: Rules, text: str) -> str:
    if not rules.currencies:
        return text
    symbols = "|".join(re.escape(s) for s in sorted(rules.currencies, key=len, reverse=True))
    scales = "|".join(rules.scale_words)
    num = rules.num
    # Symbol first: $5, € 20, ƒ 3,50, $2 million.  ("F" and "fr." only after the number.)
    before = re.compile(rf"(?<!\w)({symbols})\s?({num})(?:\s+({scales}))?(?![\w]|[.,]\d)")
    after = re.compile(rf"(?<![\w.,])({num})\s?(?:({scales})\s+)?({symbols})(?![\w])")

    def sub_before(m: re.Match) -> str:
        if m.group(1) in ("F", "fr."):
            return m.group(0)
        return _currency_words(rules, m.group(2), m.group(1), m.group(3) or "")

    def sub_after(m: re.Match) -> str:
        return _currency_words(rules, m.group(1), m.group(3), m.group(2) or "")

    text = before.sub(sub_before, text)
    return after.sub(sub_after, text)


def _percent_degrees(rules: Rules, text: str) -> str:
    num = rules.num
    text = re.sub(
        rf"(?<![\w.,])({num})\s?%", lambda m: f"{rules.number(m.group(1))} {rules.percent}", text
    )
    scales = {"C": "Celsius", "F": "Fahrenheit"}

    def degrees(m: re.Match) -> str:
        value = rules.value(m.group(1))
        unit = rules.degree[0] if value == 1 else rules.degree[1]
        scale = f" {scales[m.group(2)]}" if m.group(2) else ""
        return f"{rules.number(m.group(1))} {unit}{scale}"

    return re.sub(rf"(?<![\w.,])({num})\s?°(?:\s?([CF])\b\.?)?", degrees, text)


def _minutes(rules: Rules, mm: str, oh: bool) -> str:
    n = int(mm)
    if n == 0:
        return ""
    if oh and n < 10:
        return f"oh {rules.cardinal(n)}"
    return rules.cardinal(n)


def _times_en(rules: Rules, text: str) -> str:
    def clock(m: re.Match) -> str:
        h, mm, ampm = int(m.group(1)), m.group(2), m.group(3)
        if h > 24 or (mm and int(mm) > 59):
            return m.group(0)
        words = rules.cardinal(h)
        minutes = _minutes(rules, mm, True) if mm else ""
        if minutes:
            words += f" {minutes}"
        elif not ampm:
            words += " o'clock"
        if ampm:
            words += " a m" if ampm[0].lower() == "a" else " p m"
            if m.group(0).endswith(".") and re.match(r"\s*$|\s+[A-Z]", text[m.end() :]):
                words += "."
        return words

    text = re.sub(
        r"(?<![\w.,:])(\d{1,2}):(\d{2})(?:\s?([AaPp]\.?\s?[Mm]\.?)(?!\w))?(?![\w:])", clock, text
    )
    return re.sub(r"(?<![\w.,:])(\d{1,2})()\s?([AaPp]\.\s?[Mm]\.|[AaPp][Mm](?!\w))", clock, text)


def _times_fr(rules: Rules, text: str) -> str:
    def clock(m: re.Match) -> str:
        h, mm = int(m.group(1)), m.group(2)
        if h > 24 or (mm and int(mm) > 59):
            return m.group(0)
        hour = re.sub(r"\bun$", "une", rules.cardinal(h))
        words = f"{hour} {'heure' if h <= 1 else 'heures'}"
        if mm and int(mm):
            words += f" {re.sub(r'un$', 'une', rules.cardinal(int(mm)))}"
        return words

    text = re.sub(r"(?<![\w.,:])(\d{1,2})\s?h\s?(\d{2})?(?!\w)", clock, text)
    text = re.sub(
        r"(?<![\w.,:])(\d{1,2})\s+(?=heures?\b)",
        lambda m: re.sub(r"\bun$", "une", rules.cardinal(int(m.group(1)))) + " ",
        text,
    )
    return re.sub(r"(?<![\w.,:])(\d{1,2}):(\d{2})(?![\w:])", clock, text)


def _times_nl(rules: Rules, text: str) -> str:
    def clock(m: re.Match) -> str:
        h, mm = int(m.group(1)), m.group(2)
        if h > 24 or int(mm) > 59:
            return m.group(0)
        words = f"{rules.cardinal(h)} uur"
        if int(mm):
            words += f" {rules.cardinal(int(mm))}"
        return words

    text = re.sub(r"(?<![\w.,:])(\d{1,2})[.:](\d{2})\s?(?:uur|u\.)(?!\w)", clock, text)
    return re.sub(r"(?<![\w.,:])(\d{1,2}):(\d{2})(?![\w:])", clock, text)


# ----------------------------------------------------------------------------- entry points
class _Generic(Rules):
    """Cardinals only (plain digit strings), for languages num2words speaks."""

    def numbers(self, text: str) -> str:
        return re.sub(
            r"(?<![\w.,])\d{1,6}(?![\w]|[.,]\d)", lambda m: self.cardinal(int(m.group(0))), text
        )


_RULES: dict[str, type[Rules]] = {"en": EnglishRules, "fr": FrenchRules, "nl": DutchRules}


@lru_cache(maxsize=64)
def rules_for(
    language: str | None, features: frozenset[str] | tuple[str, ...] = tuple(FEATURES)
) -> Rules:
    """The rules for *language* (BCP 47; its primary subtag is used) with *features* on.

    Languages without their own rules get cardinals from num2words when it
    speaks them, else nothing is changed.
    """
    lang = (language or "").replace("_", "-").split("-")[0].lower()
    cls = _RULES.get(lang)
    if cls is not None:
        return cls(features)
    generic = _Generic(features)
    try:
        _n2w(1, lang)
        generic.n2w = lang
    except (NotImplementedError, KeyError, ValueError, TypeError):
        generic.n2w = None
    return generic


def spoken_form(
    text: str, language: str | None, *, heading: bool = False, features: Iterable[str] = FEATURES
) -> str:
    """Write numbers, Roman numerals and abbreviations of *text* out in words.

    Parameters
    ----------
    text : str
        One sentence or heading, already cleaned by :func:`normalize_text`.
    language : str or None
        BCP 47 language of the text.
    heading : bool
        The text is a chapter title or heading line: a Roman numeral that
        starts it ("IV.", "XII: The Return") is a number.
    features : iterable of str
        Which of :data:`FEATURES` to apply.

    Returns
    -------
    str
    """
    rules = rules_for(language, tuple(sorted(set(features) & set(FEATURES))))
    return rules.speak(text, heading)


# ----------------------------------------------------------------------------- lexicons + rules
_PLACEHOLDER = 0xE000  # private use area: one code point per lexicon replacement in a text
_PUA = re.compile("[\ue000-\uf8ff]")
_TEXT_END = re.compile(r"\s*[\"')\]]*\s*$")
_END_OF_SENTENCE = re.compile(r"\s+[\"'(]?[A-Z]")


class Speaker:
    """Turns written sentences into what one engine is given to say.

    Lexicon entries (the user's, then the book's ``ssml:ph`` and PLS ones)
    are found first and replaced by the engine's phoneme markup, or by their
    respelling; the rest of the text then goes through the language's rules
    (:func:`spoken_form`).

    Parameters
    ----------
    language : str or None
        BCP 47 language spoken.
    features : iterable of str
        Normalisation features on (see :data:`FEATURES`); empty: none.
    entries : iterable of Pronunciation
        Lexicon entries (user and book).
    phoneme_alphabet : str or None
        The engine's ``phoneme_alphabet`` (``"ipa"``, ``"espeak"`` or ``None``).
    engine : str
        Engine name, for warnings.
    """

    def __init__(
        self, language, *, features=FEATURES, entries=(), phoneme_alphabet=None, engine=""
    ):
        from .lexicon import Lexicon

        self.language = language
        features = tuple(sorted(set(features) & set(FEATURES)))
        self.rules = rules_for(language, features) if features else None
        self.lexicon = Lexicon(entries, language)
        self.alphabet = phoneme_alphabet
        self.engine = engine
        self.unspoken: dict[str, int] = {}  # graphemes whose phonemes the engine could not take
        self._cache: dict[str, str | None] = {}

    def _replacement(self, entry) -> str | None:
        from .lexicon import render_phonemes

        key = entry.grapheme
        if key not in self._cache:
            markup = render_phonemes(entry, self.alphabet, self.language)
            if markup is None and entry.alias:
                markup = entry.alias
            self._cache[key] = markup
        markup = self._cache[key]
        if markup is None:
            self.unspoken[key] = self.unspoken.get(key, 0) + 1
        return markup

    def speak(self, text: str, heading: bool = False) -> str:
        """The spoken form of *text* (a sentence or a heading)."""
        if _PUA.search(text):
            text = _PUA.sub("", text)  # unspeakable private glyphs; the range is ours below
        replacements: list[str] = []
        if self.lexicon:
            matches = self.lexicon.find(text)
            if matches:
                pieces: list[str] = []
                last = 0
                for m in matches:
                    pieces.append(text[last : m.start])
                    repl = self._replacement(m.entry)
                    if repl is None:
                        pieces.append(text[m.start : m.end])
                    else:
                        if text[m.end - 1] == "." and (
                            _TEXT_END.match(text, m.end)
                            or (repl.startswith("[[") and _END_OF_SENTENCE.match(text, m.end))
                        ):
                            repl += "."  # "... 38″ W. It is": the dot also ended the sentence
                        pieces.append(chr(_PLACEHOLDER + len(replacements)))
                        replacements.append(repl)
                    last = m.end
                pieces.append(text[last:])
                text = "".join(pieces)
        if self.rules is not None:
            text = self.rules.speak(text, heading)
        if self.alphabet and ("[[" in text or "]]" in text):
            text = text.replace("[[", "[ [").replace("]]", "] ]")  # not phoneme markup
        if replacements:
            text = re.sub(
                "[\ue000-\uf8fe]",
                lambda m: (
                    replacements[i]
                    if (i := ord(m.group(0)) - _PLACEHOLDER) < len(replacements)
                    else m.group(0)
                ),
                text,
            )
        return text

    def warnings(self) -> list[str]:
        """Notes for the book's report (pronunciations the engine could not use)."""
        if not self.unspoken:
            return []
        words = sorted(self.unspoken, key=lambda w: -self.unspoken[w])
        shown = ", ".join(words[:5]) + (f" and {len(words) - 5} more" if len(words) > 5 else "")
        return [
            f"engine {self.engine or '?'} cannot take phonemes: the pronunciations of "
            f"{len(words)} word(s) with no respelling were not applied ({shown})"
        ]


_CONFIG_FEATURES = {
    "numbers": "numbers",
    "abbreviations": "abbreviations",
    "roman": "roman-numerals",
}


def normalize_features(normalize: bool | None = None) -> tuple[str, ...]:
    """The features to apply: none when *normalize* (default
    ``ebook2audio.text.normalize``) is false, else those of :data:`FEATURES`
    whose ``ebook2audio.text.<feature>`` switch is on."""
    from .. import config

    if not config.get("text.normalize", override=normalize):
        return ()
    return tuple(f for f in FEATURES if config.get(f"text.{_CONFIG_FEATURES[f]}"))
