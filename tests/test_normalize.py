"""Spoken forms per language: a table of written -> expected spoken text for en, fr and nl."""

from __future__ import annotations

import pytest

from ebook2audio_dask.engines.base import EngineSpec
from ebook2audio_dask.model import Book, Chapter
from ebook2audio_dask.text import plan_book, split_sentences
from ebook2audio_dask.text.spoken import Speaker, normalize_features, roman_value, spoken_form

EN = [
    # cardinals, thousands separators, decimals
    (
        "There were 1,500 men and 59,265 acres.",
        "There were one thousand five hundred men and fifty-nine thousand two hundred and "
        "sixty-five acres.",
    ),
    ("It measured 3.14 feet.", "It measured three point one four feet."),
    ("1,000,000 people", "one million people"),
    # ordinals
    (
        "the 1st, 2nd, 3rd, 11th and 21st day",
        "the first, second, third, eleventh and twenty-first day",
    ),
    ("the 20th century", "the twentieth century"),
    # years (year context) and decades, ranges, dates
    ("In 1851 the fair opened.", "In eighteen fifty-one the fair opened."),
    (
        "He was born in 1905 and died in 2005.",
        "He was born in nineteen oh-five and died in two thousand and five.",
    ),
    ("from 1861-1865", "from eighteen sixty-one to eighteen sixty-five"),
    ("the 1850s", "the eighteen fifties"),
    ("It was July 4, 1776.", "It was July fourth, seventeen seventy-six."),
    # currencies
    ("It cost $5 or $3.50.", "It cost five dollars or three dollars and fifty cents."),
    ("£10 and €20 and $1", "ten pounds and twenty euros and one dollar"),
    ("$2 million", "two million dollars"),
    # times, percentages, degrees
    (
        "At 10:30 and at 7:05 pm and at 10:00.",
        "At ten thirty and at seven oh five p m and at ten o'clock.",
    ),
    ("5% of them, 36.9% of those", "five percent of them, thirty-six point nine percent of those"),
    ("It was 45° F. at noon.", "It was forty-five degrees Fahrenheit at noon."),
    # Roman numerals: after title words, regnal names, headings
    ("Chapter IV", "Chapter four"),
    ("CHAPTER XII. The Return", "CHAPTER twelve. The Return"),
    ("Book II, Part I", "Book two, Part one"),
    ("Louis XIV and Henry VIII.", "Louis the fourteenth and Henry the eighth."),
    ("World War II", "World War two"),
    # abbreviations
    ("Dr. Smith met Mr. and Mrs. Jones.", "Doctor Smith met Mister and Missus Jones."),
    ("St. Paul lived on Baker St. then.", "Saint Paul lived on Baker Street then."),
    (
        "No. 5 and apples, pears, etc. Then more.",
        "Number five and apples, pears, et cetera. Then more.",
    ),
    (
        "fruit, e.g. apples, i.e. food, vs. meat",
        "fruit, for example apples, that is food, versus meat",
    ),
    ("He ran 100 ft. away.", "He ran one hundred feet away."),
    # negatives: the pronoun I, capitalised words, ISBN-like numbers, plain words
    ("I think I can. Then I went.", "I think I can. Then I went."),
    ("MIX the CIVIL DID; I, Claudius", "MIX the CIVIL DID; I, Claudius"),
    ('"No. I should like it," said Part I think.', '"No. I should like it," said Part I think.'),
    (
        "ISBN 978-0-14-143960-0",
        "ISBN nine seven eight, zero, one four, one four three nine six zero, zero",
    ),
    ("Call 0123 now", "Call zero one two three now"),
    ("The Vivid Civic Mix", "The Vivid Civic Mix"),
]

FR = [
    ("Il y avait 1 000 francs et 3 000 hommes.", "Il y avait mille francs et trois mille hommes."),
    ("1.500 ans", "mille cinq cents ans"),
    ("3,5 kilos", "trois virgule cinq kilos"),
    ("21 chats et 80 chiens", "vingt et un chats et quatre-vingts chiens"),
    ("le 1er mai, la 1re fois, le 2e jour", "le premier mai, la première fois, le deuxième jour"),
    ("au XIXe siècle, au Ve siècle", "au dix-neuvième siècle, au cinquième siècle"),
    ("en 1851", "en mille huit cent cinquante et un"),
    ("3,50 €, 20 € et €20", "trois euros cinquante, vingt euros et vingt euros"),
    ("à 10h30, à 1h et à 21 heures", "à dix heures trente, à une heure et à vingt et une heures"),
    ("5 % et 3,5 %", "cinq pour cent et trois virgule cinq pour cent"),
    ("CHAPITRE III", "CHAPITRE trois"),
    ("Chapitre Ier", "Chapitre premier"),
    ("Louis XIV et François Ier", "Louis quatorze et François premier"),
    ("II. Papa se fâche.", "deux. Papa se fâche."),  # a heading (see test_headings below)
    ("M. Dupont, Mme Durand et Mlle Rose", "Monsieur Dupont, Madame Durand et Mademoiselle Rose"),
    ("Le Dr Martin vit à St-Denis.", "Le Docteur Martin vit à Saint-Denis."),
    (
        "p. ex. le chat, c.-à-d. le tigre, etc.",
        "par exemple le chat, c'est-à-dire le tigre, et cetera.",
    ),
    ("le n° 5", "le numéro cinq"),
    # negatives
    ("Le chat. Ce jour. De rien.", "Le chat. Ce jour. De rien."),
    ("Je suis ici. MIX", "Je suis ici. MIX"),
]

NL = [
    ("1.000 mensen en 3,5 kilo", "duizend mensen en drie komma vijf kilo"),
    ("21 katten", "eenentwintig katten"),
    ("de 1e, 2de, 3de en 21ste", "de eerste, tweede, derde en eenentwintigste"),
    ("in 1851", "in achttien honderd eenenvijftig"),
    ("October, 1865.", "October, achttien honderd vijfenzestig."),
    ("€ 20 en € 3,50 en ƒ 5", "twintig euro en drie euro vijftig en vijf gulden"),
    ("Het was 10.30 uur.", "Het was tien uur dertig."),
    ("5% en 43° OL.", "vijf procent en drieënveertig graden OL."),
    ("Hoofdstuk II", "Hoofdstuk twee"),
    ("Willem III en Lodewijk XIV", "Willem de derde en Lodewijk de veertiende"),
    ("de XIXe eeuw", "de negentiende eeuw"),
    ("dhr. Jansen en mevr. De Vries", "de heer Jansen en mevrouw De Vries"),
    ("bijv. appels, d.w.z. fruit, enz.", "bijvoorbeeld appels, dat wil zeggen fruit, enzovoort."),
    ("Zie blz. 12.", "Zie bladzijde twaalf."),
    ("nr. 7, o.a. dit", "nummer zeven, onder andere dit"),
    ("van 10-20 dagen", "van tien tot twintig dagen"),
    # negatives
    ("Ik ben hier. De man.", "Ik ben hier. De man."),
    ("Ik zag hem.", "Ik zag hem."),
]


@pytest.mark.parametrize("written, spoken", EN, ids=[w for w, _ in EN])
def test_english(written, spoken):
    assert spoken_form(written, "en-US") == spoken


@pytest.mark.parametrize("written, spoken", FR, ids=[w for w, _ in FR])
def test_french(written, spoken):
    assert spoken_form(written, "fr", heading=written.startswith("II.")) == spoken


@pytest.mark.parametrize("written, spoken", NL, ids=[w for w, _ in NL])
def test_dutch(written, spoken):
    assert spoken_form(written, "nl") == spoken


def test_headings_read_a_leading_roman_numeral_only_in_headings():
    assert spoken_form("IV. The Return", "en", heading=True) == "four. The Return"
    assert spoken_form("I.", "en", heading=True) == "one."
    assert spoken_form("IV. The Return", "en") == "IV. The Return"
    assert spoken_form("I Remember", "en", heading=True) == "I Remember"  # no dot: the pronoun
    assert spoken_form("MIX.", "en", heading=True) == "MIX."  # 1009: not a heading number


def test_other_languages_get_cardinals_or_nothing():
    assert spoken_form("Ich habe 5 Katzen.", "de") == "Ich habe fünf Katzen."
    assert spoken_form("5 cats", "tlh") == "5 cats"  # num2words does not speak Klingon
    assert spoken_form("Chapter IV, 1851", "en", features=()) == "Chapter IV, 1851"
    assert spoken_form("Chapter IV, 1851", "en", features=("roman",)) == "Chapter four, 1851"


def test_roman_values():
    assert [
        roman_value(r) for r in ("IV", "xlviii", "MCMXC", "IIII", "DID", "MIX", "CIVIL", "")
    ] == [4, 48, 1990, None, None, 1009, None, None]


def test_sentences_do_not_break_after_abbreviations():
    assert split_sentences("Ensuite, p. ex. le chat, c.-à-d. le tigre. Fin.", "fr") == [
        "Ensuite, p. ex. le chat, c.-à-d. le tigre.",
        "Fin.",
    ]
    assert split_sentences("Dhr. Jansen en mevr. De Vries kwamen. Zie blz. 12.", "nl") == [
        "Dhr. Jansen en mevr. De Vries kwamen.",
        "Zie blz. 12.",
    ]
    assert split_sentences("Dr. Smith saw No. 5 at St. Paul's. Then e.g. more.", "en") == [
        "Dr. Smith saw No. 5 at St. Paul's.",
        "Then e.g. more.",
    ]


def test_switches_from_config():
    import dask

    assert normalize_features() == ("numbers", "abbreviations", "roman")
    assert normalize_features(False) == ()
    with dask.config.set({"ebook2audio.text.normalize": False}):
        assert normalize_features() == ()
        assert normalize_features(True) == ("numbers", "abbreviations", "roman")
    with dask.config.set({"ebook2audio.text.roman-numerals": False}):
        assert normalize_features() == ("numbers", "abbreviations")


def test_plan_keeps_written_text_as_display_and_keys_the_spoken_text():
    spec = EngineSpec.make("espeak", "en-us")
    book = Book(
        "mem://b",
        "B",
        (),
        "en",
        (Chapter(1, "Chapter IV", ("Chapter IV", "Dr. Who came in 1851. He left.")),),
    )
    plan = plan_book(book, spec, sample_rate=22050, max_chars=200, language="en")
    assert [(c.text, c.display) for c in plan.chunks] == [
        ("Chapter four", "Chapter IV"),
        ("Doctor Who came in eighteen fifty-one. He left.", "Dr. Who came in 1851. He left."),
    ]
    raw = plan_book(book, spec, sample_rate=22050, max_chars=200, language="en", normalize=())
    assert [(c.text, c.display) for c in raw.chunks] == [
        ("Chapter IV", ""),
        ("Dr. Who came in 1851. He left.", ""),
    ]
    assert raw.chunks[1].key != plan.chunks[1].key
    # the spoken form obeys the engine's limit even when it grew
    long = Book("mem://b", "B", (), "en", (Chapter(1, "T", (" ".join(["1,234,567"] * 12) + ".",)),))
    chunks = plan_book(
        long, spec, sample_rate=22050, max_chars=120, language="en", speak_titles=False
    ).chunks
    assert len(chunks) > 1 and all(len(c.text) <= 120 for c in chunks)
    assert (
        " ".join(c.display for c in chunks).split() == (" ".join(["1,234,567"] * 12) + ".").split()
    )


def test_literal_double_brackets_are_not_phoneme_markup():
    speaker = Speaker("en", phoneme_alphabet="espeak")
    assert speaker.speak("a [[b]] c") == "a [ [b] ] c"
    assert Speaker("en").speak("a [[b]] c") == "a [[b]] c"
