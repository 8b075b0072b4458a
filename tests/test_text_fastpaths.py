"""Planning shortcuts give exactly what the slow paths give (issue 16, item 2).

Planning a book was mostly pySBD and the spoken-form regexes.  Three
shortcuts cut it by about three: a paragraph that is surely one sentence to
pySBD skips pySBD (``segment._one_sentence``); pySBD's abbreviation pass skips
abbreviations never followed by a "." (``segment._search_abbreviations``); a
spoken-form rule whose literal text is missing from a sentence, and the
number rules in a sentence without a digit, are not run (``spoken._needles``).
Each must change nothing: here every shortcut is compared with the code it
stands for (pySBD run as before, every rule run), on the corpus and on
generated text full of what the rules look at (abbreviations, initials,
numbers, quotes, ellipses, lists).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebook2audio_dask import read_book
from ebook2audio_dask.model import Book, Chapter
from ebook2audio_dask.text import normalize_text, plan_book, segment, split_sentences
from ebook2audio_dask.text.spoken import rules_for

SETTINGS = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
#: pySBD languages with the common rules (the one-sentence shortcut applies),
#: and some with their own (it must not).
LANGUAGES = ("en", "fr", "nl", "es", "it", "de", "da", "ru", "ar", "el")


def _pysbd(text: str, language: str) -> list[str]:
    """pySBD's sentences, its abbreviation pass untouched (a fresh segmenter)."""
    import pysbd

    code = language if language in pysbd.languages.LANGUAGE_CODES else "en"
    return pysbd.Segmenter(language=code, clean=False).processor(text).process()


def reference_split(text: str, language: str) -> list[str]:
    """``split_sentences`` without its shortcuts: every paragraph through pySBD."""
    if not text.strip():
        return []
    protected = segment._protect(text, language)
    try:
        parts = _pysbd(protected, language)
    except Exception:  # noqa: BLE001 - as split_sentences
        parts = [protected]
    if protected is not text:
        parts = [p.replace(segment._DOT, ".") for p in parts]
    return [s.strip() for s in parts if s.strip()]


def reference_speak(rules, text: str, heading: bool = False) -> str:
    """``Rules.speak`` running every abbreviation and number rule."""
    if not rules.n2w:
        return text
    if "roman" in rules.features:
        text = rules.roman(text, heading)
    if "abbreviations" in rules.features:
        for pattern, repl, final, _ in rules._abbr:
            text = pattern.sub(lambda m, r=repl, f=final: rules._abbr_sub(m, r, f), text)
    if "numbers" in rules.features:
        text = rules.numbers(text)
    return re.sub(r"[ \t]{2,}", " ", text).strip()


# --------------------------------------------------------------------------- corpus
@pytest.fixture(scope="module")
def corpus_paragraphs(corpus) -> dict[str, list[str]]:
    """Normalised paragraphs of every corpus book (front matter included), by book language."""
    out: dict[str, list[str]] = {}
    for path in sorted(corpus.iterdir()):
        if path.name == "SOURCES.md":
            continue
        book = read_book(str(path), include_matter=True)
        lang = (book.language or "en").split("-")[0]
        paras = [normalize_text(p) for c in book.chapters for p in (c.title, *c.paragraphs)]
        out.setdefault(lang, []).extend(p for p in paras if p)
    return out


def test_corpus_sentences_are_pysbd_sentences(corpus_paragraphs):
    """Every corpus paragraph, in its own language and another one's rules, splits as pySBD splits
    it."""
    assert set(corpus_paragraphs) >= {"en", "fr", "nl", "ar"}
    shortcut = 0
    for lang, paras in corpus_paragraphs.items():
        for rules in (lang, "nl" if lang == "en" else "en"):
            sample = paras if rules == lang else paras[::5]
            for p in sample:
                assert split_sentences(p, rules) == reference_split(p, rules), (rules, p)
                shortcut += segment._one_sentence(segment._segmenter(rules).language_module, p)
    assert shortcut > 3000  # the shortcut is taken, not just harmless


def test_one_sentence_shortcut_covers_most_dialogue(corpus):
    """Counted, not timed: most paragraphs of a story never reach pySBD."""
    book = read_book(str(corpus / "adventures-of-sherlock-holmes-standardebooks.epub"))
    paras = [normalize_text(p) for c in book.chapters[2:5] for p in c.paragraphs]
    lang = segment._segmenter("en").language_module
    taken = sum(segment._one_sentence(lang, p) for p in paras)
    assert len(paras) > 300 and taken > 0.5 * len(paras)


def test_corpus_spoken_forms_are_unchanged(corpus_paragraphs):
    for lang, paras in corpus_paragraphs.items():
        rules = rules_for(lang)
        for p in paras[::3]:
            for sentence in split_sentences(p, lang):
                assert rules.speak(sentence) == reference_speak(rules, sentence), sentence
                assert rules.speak(sentence, heading=True) == reference_speak(rules, sentence, True)


# --------------------------------------------------------------------------- generated
#: Pieces a paragraph is made of: words and sentences (some from the corpus),
#: and what pySBD's and the spoken-form rules look at.
WORDS = (
    "Holmes",
    "said he",
    "Watson",
    "quite so",
    "I",
    "a",
    "the",
    "man",
    "Street",
    "Baker Street",
    "in",
    "it",
    "Il a dit",
    "bonjour",
    "De heer",
    "Jansen",
    "zei",
    "het",
    "was",
    "koud",
    "Le",
    "monsieur",
    "A Scandal in Bohemia",
    "It was a dark night",
    "I had seen little of Holmes lately",
    "My marriage had drifted us away from each other",
    "Mr.",
    "Mrs.",
    "Dr.",
    "St.",
    "Mt.",
    "No.",
    "no.",
    "Nos.",
    "vs.",
    "vs",
    "viz.",
    "cf.",
    "e.g.",
    "i.e.",
    "etc.",
    "&c.",
    "p.m.",
    "a.m.",
    "A.M.",
    "U.S.",
    "Ph.D.",
    "Co.",
    "Co. KG",
    "Jr.",
    "Capt.",
    "Col.",
    "Gen.",
    "Prof.",
    "Rev.",
    "M.",
    "MM.",
    "Mme",
    "Mlle",
    "p. ex.",
    "c.-à-d.",
    "J.-C.",
    "av. J.-C.",
    "n°",
    "dhr.",
    "bijv.",
    "d.w.z.",
    "blz.",
    "nr.",
    "ca.",
    "v. Chr.",
    "J. H. Watson",
    "A. B.",
    "J.",
    "a.",
    "b.",
    "c.",
    "i.",
    "ii.",
    "iv",
    "IV",
    "XIV",
    "Chapter IV",
    "Louis XIV",
    "1.",
    "2.",
    "3)",
    "12",
    "1889",
    "1,000",
    "3.5",
    "10:30",
    "$5",
    "£10",
    "50%",
    "21st",
    "1861-1865",
    "No. 5",
    "7 ft.",
    "Yahoo!",
    "Yum!",
    "don't",
    "'Tis",
    "boys'",
    "ſ",
    "İ",
    "\u212a",
    "é",
    "Ä",
)
MARKS = (
    " ",
    " ",
    " ",
    ", ",
    ". ",
    "! ",
    "? ",
    "; ",
    ": ",
    ".",
    "!",
    "?",
    '"',
    "'",
    ' "',
    '" ',
    "' ",
    " '",
    '."',
    '!"',
    '?"',
    ".'",
    "!'",
    "?'",
    '," ',
    "...",
    ". . .",
    "?!",
    "!!",
    "--",
    " — ",
    "-",
    "(",
    ")",
    " (see) ",
    "[1]",
    "\u2026",
    "\n",
    "\t",
    "&",
    "\\",
    "ȸ",
    "ȹ",
    "∯",
    "&ᓴ&",
    "♨",
    "☝",
    "ƪ",
    "☏",
    "«",
    "“",
    "‘",
    "°",
    "/",
    "*",  # pySBD's own marks
)
pieces = st.one_of(
    st.sampled_from(WORDS), st.sampled_from(MARKS), st.text(alphabet="aAbB1.!?\"' ,-", max_size=4)
)
paragraphs = st.lists(pieces, min_size=1, max_size=30).map("".join)
#: Text that the one-sentence shortcut often takes: quoted speech and one stop.
quoted = st.tuples(
    st.sampled_from(('"', "", "'")),
    st.lists(
        st.sampled_from(WORDS[:40] + (", ", " ", ". ", "! ", "? ", '!" ', '?" ', " 'so' ")),
        max_size=12,
    ),
    st.sampled_from((".", "!", "?", '."', '!"', '?"', ".'", "", '"', ',"')),
).map(lambda t: (t[0] + "".join(t[1]) + t[2]).strip())


@SETTINGS
@given(text=st.one_of(paragraphs, quoted), language=st.sampled_from(LANGUAGES))
def test_generated_sentences_are_pysbd_sentences(text, language):
    assert split_sentences(text, language) == reference_split(text, language)
    if segment._one_sentence(segment._segmenter(language).language_module, text):
        assert [s.strip() for s in _pysbd(text, language) if s.strip()] == [text]


@SETTINGS
@given(text=st.one_of(paragraphs, quoted), language=st.sampled_from(("en", "fr", "nl", "de", "es")))
def test_generated_spoken_forms_are_unchanged(text, language):
    rules = rules_for(language)
    assert rules.speak(text) == reference_speak(rules, text)
    assert rules.speak(text, heading=True) == reference_speak(rules, text, True)
    for pattern, _, _, needles in rules._abbr:
        if needles is not None and pattern.search(text):
            assert any(n in text for n in needles), (pattern.pattern, needles, text)


def test_shortcuts_follow_this_pysbd():
    """The shortcuts were worked out for pySBD 0.3.4 and use its quote pairing."""
    import pysbd
    from pysbd.between_punctuation import BetweenPunctuation

    assert segment._DOUBLE_QUOTED.pattern == BetweenPunctuation.BETWEEN_DOUBLE_QUOTES_REGEX_2
    plain = {
        code for code, lang in pysbd.languages.LANGUAGE_CODES.items() if segment._plain_rules(lang)
    }
    assert plain == (
        {"en", "fr", "nl", "es", "it", "pl"} if pysbd.__version__ == "0.3.4" else set()
    )


def test_needles_of_patterns():
    from ebook2audio_dask.text.spoken import _needles

    assert _needles(r"\bMr\.") == ("Mr.",)
    assert _needles(r"(?<=[a-z] )Dr\.(?=\s)") == ("Dr.",)
    assert _needles(r"(?<=\d )ft\.|(?<=\d)feet") == ("feet", "ft.")
    assert _needles(r"\b[Ee]\.\s?g\.") == ("g.",)
    assert _needles(r"(?i)\bMr\.") is None  # case-insensitive: "MR." matches too
    assert _needles(r"\b[Nn][°o]\s?(?=\d)") is None  # no literal row


def test_plans_of_generated_books_are_unchanged(monkeypatch):
    """A plan made with the shortcuts is the plan made without them."""
    import random

    from ebook2audio_dask.engines.base import EngineSpec
    from ebook2audio_dask.text import chunk, spoken

    rng = random.Random(16)
    paras = tuple(
        "".join(rng.choice(WORDS + MARKS) for _ in range(rng.randint(1, 40))).strip() or "x"
        for _ in range(300)
    )
    book = Book(
        source="mem://b",
        title="B",
        authors=("A",),
        language="en",
        chapters=(Chapter(1, "Chapter I", paras),),
    )
    spec = EngineSpec.make("piper", "en_US-joe-medium")
    fast = plan_book(book, spec, sample_rate=22050, max_chars=200, language="en")
    monkeypatch.setattr(chunk, "split_sentences", reference_split)
    monkeypatch.setattr(spoken.Rules, "speak", reference_speak)
    slow = plan_book(book, spec, sample_rate=22050, max_chars=200, language="en")
    assert fast == slow
