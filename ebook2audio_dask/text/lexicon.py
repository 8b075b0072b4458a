"""Pronunciation lexicons: user files, EPUB 3 PLS/SSML entries, phoneme rendering.

A lexicon maps written words (graphemes) to how they are said: a respelling
(plain text) or phonemes (IPA or X-SAMPA).  Entries come from

* user lexicon files (``--lexicon``, config ``ebook2audio.text.lexicons``):
  YAML/JSON ``{language: {word: replacement}}`` or W3C PLS XML;
* the book itself (:attr:`ebook2audio_dask.model.Book.pronunciations`): the
  EPUB 3 PLS lexicons it declares and its inline ``ssml:ph`` attributes.

:class:`Lexicon` finds the entries in a text (whole words, longest first,
case-sensitive before case-insensitive); :func:`render_phonemes` writes an
entry's phonemes in the inline form an engine takes (``[[...]]`` IPA for
Piper, ``[[...]]`` espeak mnemonics for espeak-ng).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError, one_line
from ..model import Pronunciation
from ..pls import alphabet_name, parse_pls

__all__ = [
    "Lexicon",
    "Pronunciation",
    "ipa_for_piper",
    "ipa_to_espeak",
    "load_lexicon",
    "load_lexicons",
    "parse_lexicon",
    "parse_pls",
    "render_phonemes",
    "xsampa_to_ipa",
]

#: Alphabets understood (PLS ``alphabet`` / ``ssml:alphabet`` values, lower case).
ALPHABETS = ("ipa", "x-sampa")
#: Order in which entries of different origins win (earlier wins).
_ORIGIN_RANK = {"user": 0, "ssml": 1, "pls": 2}


# --------------------------------------------------------------------------- reading
def _primary(language: str | None) -> str:
    lang = (language or "").strip().replace("_", "-").lower()
    return "" if lang in ("", "*") else lang.split("-")[0]


_SLASHED = re.compile(r"^/(.+)/$", re.S)


def parse_lexicon(data: bytes | str, source: str = "lexicon") -> list[Pronunciation]:
    """Read a user lexicon: PLS XML, or YAML/JSON ``{language: {word: replacement}}``.

    A replacement is a respelling (``"Doctor"``), IPA between slashes
    (``"/ˈmeɪkən/"``), or a mapping with ``phonemes`` (and optional
    ``alphabet``: ``ipa`` or ``x-sampa``) and/or ``alias``.  The language
    ``"*"`` applies to every language.

    Parameters
    ----------
    data : bytes or str
        The file's content.
    source : str
        Name used in error messages.

    Returns
    -------
    list of Pronunciation
        Entries with ``origin="user"``.

    Raises
    ------
    UsageError
        When the file cannot be read as a lexicon.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    head = raw.lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<"):
        try:
            return parse_pls(raw, origin="user", source=source)
        except ValueError as exc:
            raise UsageError(f"lexicon {source}: {exc}") from None
    import yaml

    try:
        text = raw.decode("utf-8-sig")
        tree = (
            json.loads(text)
            if head.startswith(b"{") and source.endswith(".json")
            else yaml.safe_load(text)
        )
    except (UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise UsageError(f"lexicon {source}: not YAML, JSON or PLS ({one_line(exc)})") from None
    if tree is None:
        return []
    if not isinstance(tree, dict):
        raise UsageError(
            f"lexicon {source}: expected a mapping of language -> {{word: replacement}}"
        )
    entries: list[Pronunciation] = []
    for lang, words in tree.items():
        if not isinstance(words, dict):
            raise UsageError(f"lexicon {source}: language {lang!r} must map words to replacements")
        for word, value in words.items():
            word = " ".join(str(word).split())
            if not word:
                continue
            entries.append(_user_entry(word, value, str(lang), source))
    return entries


def _user_entry(word: str, value: Any, lang: str, source: str) -> Pronunciation:
    phonemes, alphabet, alias = "", "ipa", ""
    if isinstance(value, dict):
        phonemes = str(value.get("phonemes") or value.get("phoneme") or "").strip()
        alphabet = alphabet_name(value.get("alphabet"))
        alias = " ".join(str(value.get("alias") or "").split())
        match = _SLASHED.match(phonemes)
        if match:
            phonemes = match.group(1).strip()
    elif isinstance(value, (str, int, float)):
        value = str(value).strip()
        match = _SLASHED.match(value)
        if match:
            phonemes = match.group(1).strip()
        else:
            alias = " ".join(value.split())
    else:
        raise UsageError(f"lexicon {source}: bad replacement for {word!r}: {value!r}")
    if alphabet not in ALPHABETS:
        raise UsageError(
            f"lexicon {source}: unknown phoneme alphabet {alphabet!r} for {word!r} "
            "(use ipa or x-sampa)"
        )
    if not (phonemes or alias):
        raise UsageError(f"lexicon {source}: empty replacement for {word!r}")
    return Pronunciation(word, phonemes, alphabet, "" if lang == "*" else lang, "user", alias)


def load_lexicon(url: str, storage_options: dict | None = None) -> tuple[Pronunciation, ...]:
    """Read one user lexicon file (local path or fsspec URL)."""
    from ..storage.fs import open_url

    try:
        with open_url(url, "rb", storage_options) as fh:
            data = fh.read()
    except FileNotFoundError:
        raise UsageError(f"lexicon not found: {url}") from None
    except OSError as exc:
        raise UsageError(f"lexicon {url} cannot be read: {exc}") from None
    return tuple(parse_lexicon(data, url))


def load_lexicons(
    urls: Iterable[str], storage_options: dict | None = None
) -> tuple[Pronunciation, ...]:
    """Read user lexicon files in order; entries of later files come after earlier ones."""
    out: list[Pronunciation] = []
    for url in urls:
        out.extend(load_lexicon(str(url), storage_options))
    return tuple(out)


# --------------------------------------------------------------------------- matching
def _is_punctuation(text: str) -> bool:
    return all(unicodedata.category(ch)[0] in "PZ" for ch in text)


@dataclass(frozen=True)
class Match:
    """An entry found in a text: ``text[start:end]`` is its grapheme."""

    start: int
    end: int
    entry: Pronunciation


class Lexicon:
    """The entries that apply to one language, ready to be found in texts.

    Parameters
    ----------
    entries : iterable of Pronunciation
        In priority order within an origin; user entries win over the
        book's ``ssml:ph`` entries, which win over its PLS entries.  For one
        grapheme the first entry (after that ordering) is used; language-
        specific entries win over ``"*"`` ones.
    language : str
        Language being spoken; entries for another language are left out.
    """

    def __init__(self, entries: Iterable[Pronunciation], language: str | None):
        lang = _primary(language)
        usable = [
            e for e in entries
            if e.grapheme.strip() and not _is_punctuation(e.grapheme)
            and (not _primary(e.language) or not lang or _primary(e.language) == lang)
        ]  # fmt: skip
        # Stable sort: origin first, then language-specific before "*".
        usable.sort(key=lambda e: (_ORIGIN_RANK.get(e.origin, 3), 0 if _primary(e.language) else 1))
        self.exact: dict[str, Pronunciation] = {}
        self.folded: dict[str, Pronunciation] = {}
        from .normalize import normalize_text

        for e in usable:
            # As the text will be: curly quotes, primes (31′) and spaces made plain.
            g = normalize_text(e.grapheme)
            self.exact.setdefault(g, e)
            # Case-insensitive matching only for graphemes with two letters or
            # more ("E." must not catch the "e." of "i.e.").
            if sum(ch.isalnum() for ch in g) >= 2:
                self.folded.setdefault(g.casefold(), e)
        self.entries = tuple(self.exact.values())
        self._exact_re = self._compile(self.exact, 0)
        self._folded_re = self._compile(
            {e.grapheme: e for e in self.folded.values()}, re.IGNORECASE
        )

    def __bool__(self) -> bool:
        return bool(self.exact)

    @staticmethod
    def _compile(graphemes: dict[str, Pronunciation], flags: int) -> re.Pattern | None:
        if not graphemes:
            return None
        parts = []
        for g in sorted(graphemes, key=len, reverse=True):
            body = r"\s+".join(re.escape(w) for w in g.split())
            # Whole words: no letter/digit glued before or after (and no
            # "1." before a number: "81.8°" is not "8°").
            pre = r"(?<![\w])(?<!\d[.,])" if (g[0].isalnum() or g[0] in "$£€") else ""
            post = r"(?![\w])" if g[-1].isalnum() else ""
            parts.append(pre + body + post)
        return re.compile("|".join(parts), flags)

    def find(self, text: str) -> list[Match]:
        """Entries found in *text*, left to right, not overlapping.

        Case-sensitive matches win; the rest of the text is then searched
        case-insensitively.
        """
        if not self.exact:
            return []
        found: list[Match] = []
        taken = [False] * (len(text) + 1)
        for pattern, table, key in (
            (self._exact_re, self.exact, lambda s: " ".join(s.split())),
            (self._folded_re, self.folded, lambda s: " ".join(s.split()).casefold()),
        ):
            if pattern is None:
                continue
            for m in pattern.finditer(text):
                if any(taken[m.start() : m.end()]):
                    continue
                entry = table.get(key(m.group(0)))
                if entry is None:
                    continue
                found.append(Match(m.start(), m.end(), entry))
                for i in range(m.start(), m.end()):
                    taken[i] = True
        found.sort(key=lambda m: m.start)
        return found


# --------------------------------------------------------------------------- phonemes
_XSAMPA = {
    "r\\`": "ɻ",
    "r\\": "ɹ",
    "R\\": "ʀ",
    "h\\": "ɦ",
    "j\\": "ʝ",
    "x\\": "ɧ",
    "?\\": "ʕ",
    "@\\": "ɘ",
    "3\\": "ɞ",
    "M\\": "ɰ",
    "B\\": "ʙ",
    "G\\": "ɢ",
    "J\\": "ɟ",
    "K\\": "ɮ",
    "L\\": "ʟ",
    "N\\": "ɴ",
    "X\\": "ħ",
    "l\\": "ɺ",
    "s\\": "ɕ",
    "z\\": "ʑ",
    "I\\": "ᵻ",
    "U\\": "ᵿ",
    ":\\": "ˑ",
    "@`": "ɚ",
    "l`": "ɭ",
    "n`": "ɳ",
    "r`": "ɽ",
    "s`": "ʂ",
    "z`": "ʐ",
    "t`": "ʈ",
    "d`": "ɖ",
    "_h": "ʰ",
    "_~": "\u0303",
    "_j": "ʲ",
    "_w": "ʷ",
    "_0": "\u0325",
    "_=": "\u0329",
    "A": "ɑ",
    "{": "æ",
    "6": "ɐ",
    "Q": "ɒ",
    "E": "ɛ",
    "@": "ə",
    "3": "ɜ",
    "I": "ɪ",
    "O": "ɔ",
    "2": "ø",
    "9": "œ",
    "&": "ɶ",
    "U": "ʊ",
    "}": "ʉ",
    "V": "ʌ",
    "Y": "ʏ",
    "B": "β",
    "C": "ç",
    "D": "ð",
    "G": "ɣ",
    "L": "ʎ",
    "J": "ɲ",
    "N": "ŋ",
    "R": "ʁ",
    "S": "ʃ",
    "T": "θ",
    "H": "ɥ",
    "Z": "ʒ",
    "?": "ʔ",
    "X": "χ",
    "W": "ʍ",
    "M": "ɯ",
    "K": "ɬ",
    "F": "ɱ",
    "P": "ʋ",
    "4": "ɾ",
    "5": "ɫ",
    "1": "ɨ",
    "7": "ɤ",
    "8": "ɵ",
    "g": "ɡ",
    ":": "ː",
    '"': "ˈ",
    "%": "ˌ",
    "~": "\u0303",
    "=": "\u0329",
    "'": "ʲ",
}


def _tokenize(text: str, table: dict[str, str]) -> Iterator[str | tuple[str]]:
    """Greedy longest-first replacement; yields mapped strings, or 1-tuples for unmapped chars."""
    longest = max(len(k) for k in table)
    i = 0
    while i < len(text):
        for size in range(min(longest, len(text) - i), 0, -1):
            piece = text[i : i + size]
            if piece in table:
                yield table[piece]
                i += size
                break
        else:
            yield (text[i],)
            i += 1


def xsampa_to_ipa(text: str) -> str:
    """Convert X-SAMPA to IPA (the common symbols; others are kept)."""
    return "".join(p if isinstance(p, str) else p[0] for p in _tokenize(text, _XSAMPA))


def to_ipa(entry: Pronunciation) -> str:
    """The entry's phonemes as IPA (NFC), whatever alphabet it was written in."""
    text = entry.phonemes.strip()
    if entry.alphabet == "x-sampa":
        text = xsampa_to_ipa(text)
    text = text.strip("/[]").strip()
    return unicodedata.normalize("NFC", " ".join(text.replace("'", "ˈ").split()))


_VOWELS = set("aeiouyæɑɒɐəɚɛɜɝɞɪɨʉʊʌɔøœɶɤɯɵɘʏᵻ")
_STRESS = "ˈˌ"

# American dictionary conventions (as in the Georgia book's PLS) -> espeak-ng's
# en-us IPA, which is what Piper's English voices were trained on.
_EN_IPA = [
    (re.compile(r"ɜr|ɝ"), "ɜː"),
    (re.compile(r"ər"), "ɚ"),
    (re.compile(r"ɑr"), "ɑːɹ"),
    (re.compile(r"ɔr"), "ɔːɹ"),
    (re.compile(r"r"), "ɹ"),
    (re.compile(r"y"), "j"),
    (re.compile(r"ɫ"), "l"),
    # Long vowels written short; not at a word's (or a compound part's) end: "happy" i.
    (re.compile(r"i(?![ːəˈˌ])(?=\S)"), "iː"),
    (re.compile(r"([uɑɔɜ])(?![ːʊɪə\u0303])(?=\S)"), r"\1ː"),
]


def _stress_to_vowel(ipa: str) -> str:
    """Move each stress mark from the syllable's start to just before its vowel (espeak's habit)."""
    out: list[str] = []
    pending = ""
    for ch in ipa:
        if ch in _STRESS:
            pending = ch
            continue
        if pending and (ch in _VOWELS or ch == " "):
            out.append(pending)
            pending = ""
        out.append(ch)
    if pending:
        out.append(pending)
    return "".join(out)


def ipa_for_piper(ipa: str, language: str | None) -> str:
    """IPA adjusted to what espeak-ng (Piper's phonemiser) writes for *language*."""
    text = ipa.replace("g", "ɡ").replace("ɚː", "ɚ")
    if _primary(language) == "en":
        for pattern, repl in _EN_IPA:
            text = pattern.sub(repl, text)
    text = _stress_to_vowel(text)
    return unicodedata.normalize("NFD", text)


# IPA -> espeak-ng phoneme mnemonics (its ASCII notation, close to Kirshenbaum).
_ESPEAK_COMMON = {
    "tʃ": "tS",
    "dʒ": "dZ",
    "ts": "ts",
    "eɪ": "eI",
    "aɪ": "aI",
    "ɔɪ": "OI",
    "aʊ": "aU",
    "oʊ": "oU",
    "əʊ": "oU",
    "ɪə": "i@",
    "ɛə": "e@",
    "ʊə": "U@",
    "iː": "i:",
    "uː": "u:",
    "ɑː": "A:",
    "ɔː": "O:",
    "ɜː": "3:",
    "eː": "e:",
    "oː": "o:",
    "aː": "a:",
    "ɛː": "E:",
    "yː": "y:",
    "øː": "2:",
    "θ": "T",
    "ð": "D",
    "ʃ": "S",
    "ʒ": "Z",
    "ŋ": "N",
    "ɲ": "n^",
    "ʎ": "l^",
    "ɹ": "r",
    "r": "r",
    "ɾ": "r",
    "ʁ": "R",
    "ʀ": "R",
    "ɡ": "g",
    "g": "g",
    "ç": "C",
    "x": "x",
    "χ": "X",
    "ɣ": "Q",
    "ʔ": "?",
    "ɦ": "h",
    "ʍ": "w",
    "ɥ": "j",
    "ʋ": "v",
    "ɫ": "l",
    "æ": "a",
    "ɑ": "A",
    "ɒ": "0",
    "ɐ": "a#",
    "ʌ": "V",
    "ə": "@",
    "ɚ": "3",
    "ɜ": "3",
    "ɝ": "3:",
    "ɪ": "I",
    "ʏ": "Y",
    "ʊ": "U",
    "ɛ": "E",
    "ɔ": "O",
    "ø": "Y",
    "œ": "W",
    "ɨ": "i",
    "ʉ": "u",
    "ᵻ": "I2",
    "a": "a",
    "e": "e",
    "i": "i",
    "o": "o",
    "u": "u",
    "y": "y",
    "c": "k",
    "q": "k",
    **{ch: ch for ch in "bdfhjklmnpstvwz"},
    "ˈ": "'",
    "ˌ": ",",
    "ː": ":",
    ".": "",
    "\u0303": "~",
    "\u0329": "",
    "ʰ": "",
    "ʲ": ";",
}
_ESPEAK_LANG = {
    "en": {
        "ɜr": "3:",
        "ər": "3",
        "ɑr": "A@",
        "ɔr": "O@",
        "ɛr": "e@",
        "ɪr": "i@",
        "ʊr": "U@",
        "aɪr": "aI3",
        "ɑ": "A:",
        "ɔ": "O:",
        "ɜ": "3:",
        "i": "i:",
        "u": "u:",
        "o": "oU",
        "e": "eI",
        "y": "j",
        "ɒ": "0",
    },
    "fr": {
        "ɑ": "a",
        "ʁ": "R",
        "ɥ": "j",
        "ø": "Y",
        "œ": "W",
        "ə": "@",
        "e": "e",
        "ɛ": "E",
        "o": "o",
        "ɔ": "O",
    },
    "nl": {
        "ɣ": "Q",
        "x": "x",
        "ʏ": "Y",
        "ø": "Y:",
        "œy": "9y",
        "ɛi": "Ei",
        "ʌu": "Au",
        "ɑ": "A",
        "ɔ": "O",
    },
}


def ipa_to_espeak(ipa: str, language: str | None) -> str:
    """Write IPA in espeak-ng's phoneme mnemonics for *language* (approximate).

    The table covers the IPA symbols of English, French and Dutch
    dictionaries; symbols it does not know are dropped (espeak-ng would
    otherwise read garbage).  English short-vowel spellings used by American
    dictionaries (``i``, ``u``, ``ɔ`` for the long vowels) get their espeak
    long forms, except ``i`` at the end of a word (the "happy" vowel).
    """
    table = dict(_ESPEAK_COMMON)
    table.update(_ESPEAK_LANG.get(_primary(language), {}))
    words = []
    english = _primary(language) == "en"
    if english:
        table["\ue100"] = "i"  # the "happy" vowel: an i ending a word or a compound part
    for word in unicodedata.normalize("NFC", ipa).split():
        if english:
            word = re.sub(r"i(?=$|[ˈˌ])", "\ue100", word)
        text = "".join(p for p in _tokenize(word, table) if isinstance(p, str))
        words.append(text.replace("::", ":"))
    return " ".join(w for w in words if w)


def render_phonemes(entry: Pronunciation, alphabet: str | None, language: str | None) -> str | None:
    """The inline markup that makes an engine say *entry*'s phonemes.

    Parameters
    ----------
    entry : Pronunciation
    alphabet : str or None
        The engine's :attr:`~ebook2audio_dask.engines.base.Engine.phoneme_alphabet`:
        ``"ipa"`` (Piper: ``[[ipa]]``), ``"espeak"`` (espeak-ng: ``[[mnemonics]]``),
        or ``None`` (the engine cannot take phonemes).
    language : str or None
        The language spoken.

    Returns
    -------
    str or None
        The markup, or ``None`` when the entry has no phonemes or the engine
        takes none.
    """
    if not entry.phonemes or alphabet is None:
        return None
    ipa = to_ipa(entry)
    if not ipa:
        return None
    if alphabet == "ipa":
        body = ipa_for_piper(ipa, language)
    elif alphabet == "espeak":
        body = ipa_to_espeak(ipa, language)
    else:
        return None
    body = body.replace("[", "").replace("]", "").strip()
    return f"[[{body}]]" if body else None


def configured_lexicon(
    lexicons: Iterable[str] | None = None, storage_options: dict | None = None
) -> tuple[Pronunciation, ...]:
    """Entries of ``ebook2audio.text.lexicons`` then of *lexicons*, in that order.

    Read on the client when a conversion is planned: the entries (not the
    file names) go into the plan request, so editing a lexicon changes the
    texts, and so the keys, of exactly the chunks it affects.
    """
    from .. import config

    urls = list(config.get("text.lexicons") or []) + list(lexicons or [])
    return load_lexicons(urls, storage_options) if urls else ()
