"""Pronunciation lexicons (user YAML/JSON/PLS, the EPUB's PLS and ssml:ph) reaching the engines as
phonemes."""

from __future__ import annotations

import numpy as np
import pytest

from ebook2audio_dask.engines import get_engine_class
from ebook2audio_dask.engines.base import EngineSpec
from ebook2audio_dask.errors import UsageError
from ebook2audio_dask.ingest import read_book
from ebook2audio_dask.model import Book, Chapter, Pronunciation
from ebook2audio_dask.pipeline.tasks import PlanRequest, plan_task, synthesize_task
from ebook2audio_dask.storage import ChunkStore
from ebook2audio_dask.text import plan_book
from ebook2audio_dask.text.lexicon import (
    Lexicon,
    ipa_for_piper,
    ipa_to_espeak,
    load_lexicons,
    parse_lexicon,
    render_phonemes,
    xsampa_to_ipa,
)
from ebook2audio_dask.text.spoken import Speaker

PLS = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE lexicon [<!ENTITY boom "BOOM">]>
<lexicon version="1.0" alphabet="ipa" xml:lang="en-US" xmlns="http://www.w3.org/2005/01/pronunciation-lexicon">
  <lexeme><grapheme>Macon</grapheme><phoneme>\xcb\x88me\xc9\xaak\xc9\x99n</phoneme></lexeme>
  <lexeme><grapheme>WHO</grapheme><alias>World Health Organization</alias></lexeme>
  <lexeme><grapheme>tomato</grapheme><grapheme>tomatoes</grapheme>
    <phoneme alphabet="x-sampa">t@"mA:toU</phoneme></lexeme>
  <lexeme><grapheme>&boom;</grapheme><phoneme>bum</phoneme></lexeme>
</lexicon>
"""


@pytest.fixture(scope="module")
def georgia(corpus) -> Book:
    return read_book(str(corpus / "georgia-britannica-pls-ssml.epub"))


# --------------------------------------------------------------------------- lexicon files
def test_yaml_lexicon_respellings_and_phonemes(tmp_path):
    path = tmp_path / "lex.yaml"
    path.write_text(
        "en:\n  Dr.: Doctor\n  Ceres: /ˈsɪəriːz/\n"
        "  Xoco: {phonemes: 'S@\"koU', alphabet: x-sampa, alias: Shocko}\n"
        "'*':\n  Zeus: Zoos\nfr:\n  Zeus: Zeuce\n",
        encoding="utf-8",
    )
    entries = load_lexicons([str(path)])
    by_word = {(e.grapheme, e.language): e for e in entries}
    assert by_word[("Dr.", "en")] == Pronunciation("Dr.", "", "ipa", "en", "user", "Doctor")
    assert by_word[("Ceres", "en")].phonemes == "ˈsɪəriːz" and not by_word[("Ceres", "en")].alias
    assert (
        by_word[("Xoco", "en")].alphabet == "x-sampa" and by_word[("Xoco", "en")].alias == "Shocko"
    )
    assert by_word[("Zeus", "")].alias == "Zoos"
    # language-specific entries win over "*" ones; other languages' entries are left out
    assert Speaker("fr", entries=entries).speak("Zeus et Ceres") == "Zeuce et Ceres"
    assert Speaker("en", entries=entries).speak("Zeus and Dr. Who") == "Zoos and Doctor Who"
    json_path = tmp_path / "lex.json"
    json_path.write_text('{"nl": {"Gabriël": "Gabrie-el"}}', encoding="utf-8")
    assert load_lexicons([str(json_path)])[0].alias == "Gabrie-el"


def test_bad_lexicons_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        load_lexicons([str(tmp_path / "missing.yaml")])
    for text, match in [
        ("- a\n- b\n", "mapping"),
        ("en: [1]\n", "must map"),
        ("en:\n  x: ''\n", "empty"),
        ("en:\n  x: {phonemes: a, alphabet: klingon}\n", "alphabet"),
        ("<lexicon", "not valid XML"),
        ("<html/>", "not a PLS lexicon"),
    ]:
        with pytest.raises(UsageError, match=match):
            parse_lexicon(text, "bad")


def test_pls_lexicon_is_read_safely():
    entries = parse_lexicon(PLS, "user.pls")
    assert [(e.grapheme, e.phonemes, e.alphabet, e.alias, e.origin) for e in entries] == [
        ("Macon", "ˈmeɪkən", "ipa", "", "user"),
        ("WHO", "", "ipa", "World Health Organization", "user"),
        ("tomato", 't@"mA:toU', "x-sampa", "", "user"),
        ("tomatoes", 't@"mA:toU', "x-sampa", "", "user"),
    ]  # the entity from the internal subset is never expanded
    assert {e.language for e in entries} == {"en-US"}


def test_matching_whole_words_case_sensitive_first():
    lex = Lexicon(
        [
            Pronunciation("E.", "ist", origin="ssml"),
            Pronunciation("Macon", "x", alias="MAY-kon"),
            Pronunciation("macon", "y", alias="bacon"),
            Pronunciation('"', "dɛm", origin="ssml"),
            Pronunciation("81.8°", "a"),
            Pronunciation("8°", "b"),
        ],
        "en",
    )

    def found(text):
        return [(text[m.start : m.end], m.entry.alias or m.entry.phonemes) for m in lex.find(text)]

    assert found("Macon, macon, MACON and Maconville") == [
        ("Macon", "MAY-kon"),
        ("macon", "bacon"),
        ("MACON", "MAY-kon"),
    ]  # first entry wins
    assert found("i.e. E. of here") == [("E.", "ist")]  # one-letter graphemes match their case only
    assert found('said "yes"') == []  # punctuation-only graphemes (ditto marks) are never applied
    assert found("81.8° and 8°") == [("81.8°", "a"), ("8°", "b")]


def test_phonemes_rendered_for_each_engine():
    entry = Pronunciation("Chattahoochee", "ˌtʃætəˈhutʃi", origin="pls")
    assert render_phonemes(entry, "espeak", "en") == "[[,tSat@'hu:tSi]]"
    assert (
        render_phonemes(entry, "ipa", "en-US") == "[[" + ipa_for_piper("ˌtʃætəˈhutʃi", "en") + "]]"
    )
    assert (
        ipa_for_piper("ˌtʃætəˈhutʃi", "en") == "tʃˌætəhˈuːtʃi"
    )  # stress before the vowel, long u, as espeak-ng writes
    assert render_phonemes(entry, None, "en") is None
    assert xsampa_to_ipa('t@"mA:toU') == "təˈmɑːtoʊ"
    assert ipa_to_espeak("ˈθɜrti dɪˈgriz", "en") == "'T3:ti dI'gri:z"
    assert ipa_to_espeak("ʒə sɥi", "fr") == "Z@ sji"


def test_engines_without_phonemes_use_the_alias_or_keep_the_word():
    entries = [
        Pronunciation("Macon", "ˈmeɪkən", origin="pls"),
        Pronunciation("WHO", "", alias="World Health Organization"),
    ]
    coqui = Speaker(
        "en",
        entries=entries,
        phoneme_alphabet=get_engine_class("coqui").phoneme_alphabet,
        engine="coqui",
    )
    assert coqui.speak("Macon and the WHO.") == "Macon and the World Health Organization."
    assert coqui.warnings() and "Macon" in coqui.warnings()[0]
    espeak = Speaker("en", entries=entries, phoneme_alphabet="espeak", engine="espeak")
    assert espeak.speak("Macon and the WHO.") == "[['meIk@n]] and the World Health Organization."
    assert espeak.warnings() == []


# --------------------------------------------------------------------------- the Georgia book
def test_georgia_book_pls_and_ssml_entries(georgia):
    origins = [p.origin for p in georgia.pronunciations]
    assert origins.count("pls") == 71 and origins.count("ssml") >= 30
    by = {(p.grapheme, p.origin): p for p in georgia.pronunciations}
    assert by[("Chattahoochee", "pls")].phonemes and by[("Chattahoochee", "pls")].language == "en"
    assert by[("S.W.", "ssml")].phonemes == "ˌsaʊθˈwɛst" and by[("S.W.", "ssml")].alphabet == "ipa"
    assert by[("30°", "ssml")].phonemes == "ˈθɜrti dɪˈgriz"


def _chunk_with(plan, written: str):
    return next(c for c in plan.chunks if written in (c.display or c.text))


@pytest.mark.parametrize("engine", ["espeak", "piper"])
def test_georgia_words_reach_the_engine_as_phonemes(georgia, engine, tmp_path, monkeypatch):
    cls = get_engine_class(engine)
    plan = plan_task(georgia, PlanRequest(engine=engine, chapters=(1,)))
    chunk = _chunk_with(plan, "Chattahoochee")
    assert "Chattahoochee" not in chunk.text and "Chattahoochee" in chunk.display
    chatta = Pronunciation(
        "Chattahoochee",
        next(p.phonemes for p in georgia.pronunciations if p.grapheme == "Chattahoochee"),
    )
    assert render_phonemes(chatta, cls.phoneme_alphabet, "en-US") in chunk.text
    ssml = _chunk_with(plan, "S.W.")
    assert (
        render_phonemes(Pronunciation("S.W.", "ˌsaʊθˈwɛst"), cls.phoneme_alphabet, "en-US")
        in ssml.text
    )
    # the synthesize stage hands exactly these texts to the real engine
    seen: list[str] = []
    real = cls.synthesize

    def spy(self, texts, seeds=None):
        seen.extend(texts)
        return real(self, texts, seeds)

    monkeypatch.setattr(cls, "synthesize", spy)
    store = ChunkStore.make(str(tmp_path / "chunks"))
    result = synthesize_task(plan.spec, ((chunk.key, chunk.text), (ssml.key, ssml.text)), store)
    assert not result.failures
    assert sorted(seen) == sorted({chunk.text, ssml.text})
    assert all("[[" in t and "]]" in t for t in seen)


@pytest.mark.parametrize(
    "engine, voice, settings",
    [
        ("espeak", "en-us", {}),
        ("piper", "en_US-joe-medium", {"noise_scale": 0, "noise_w_scale": 0}),
    ],
)
def test_engines_speak_phoneme_markup(engine, voice, settings):
    from ebook2audio_dask.engines import load_engine

    spec = EngineSpec.make(engine, voice, settings)
    cls = get_engine_class(engine)
    speaker = Speaker(
        "en-US",
        entries=[Pronunciation("Altamaha", "ˈɔltəməˌhɔ", origin="pls")],
        phoneme_alphabet=cls.phoneme_alphabet,
    )
    marked = speaker.speak("The Altamaha river.")
    assert marked.startswith("The [[") and "Altamaha" not in marked
    plain, phonemes = load_engine(spec).synthesize(["The Altamaha river.", marked])
    assert plain.size > 2000 and phonemes.size > 2000
    assert plain.dtype == phonemes.dtype == np.int16
    assert plain.size != phonemes.size or not np.array_equal(plain, phonemes)


def test_user_lexicon_wins_and_changes_only_the_keys_it_touches(georgia):
    base = plan_task(georgia, PlanRequest(engine="espeak", chapters=(1,)))
    user = (Pronunciation("Augusta", "", language="en", origin="user", alias="Aw-gusta"),)
    edited = plan_task(georgia, PlanRequest(engine="espeak", chapters=(1,), lexicon=user))
    assert len(base.chunks) == len(edited.chunks)
    changed = [(a, b) for a, b in zip(base.chunks, edited.chunks) if a.key != b.key]
    assert changed and all("Augusta" in a.display for a, _ in changed)
    assert all(
        "Aw-gusta" in b.text for _, b in changed
    )  # the user's respelling beat the book's PLS
    assert sum(a.key == b.key for a, b in zip(base.chunks, edited.chunks)) > len(changed)
    # a different lexicon content gives different keys again; normalisation off too
    other = plan_task(
        georgia,
        PlanRequest(
            engine="espeak",
            chapters=(1,),
            lexicon=(user[0].__class__("Augusta", "ɔˈgʌstə", origin="user"),),
        ),
    )
    assert {b.key for _, b in changed}.isdisjoint({c.key for c in other.chunks})
    raw = plan_task(georgia, PlanRequest(engine="espeak", chapters=(1,), normalize=()))
    assert any("59,265" in c.text for c in raw.chunks)
    assert not any("59,265" in c.text for c in base.chunks)


def test_plan_book_takes_user_lexicon_entries():
    book = Book("mem://b", "B", (), "en", (Chapter(1, "T", ("Ceres rose.",)),))
    plan = plan_book(
        book,
        EngineSpec.make("espeak", "en-us"),
        sample_rate=22050,
        max_chars=200,
        language="en",
        speak_titles=False,
        lexicon=[Pronunciation("Ceres", "ˈsɪəriz")],
        phoneme_alphabet="espeak",
    )
    assert [(c.text, c.display) for c in plan.chunks] == [("[['si@ri:z]] rose.", "Ceres rose.")]


def test_convert_a_georgia_chapter_with_espeak_and_a_lexicon(corpus, tmp_path, cache_dir):
    from distributed import Client

    import ebook2audio_dask as e2a

    lexicon = tmp_path / "lex.yaml"
    lexicon.write_text("en:\n  Georgia: /ˈdʒɔrdʒə/\n", encoding="utf-8")
    plans = []
    with e2a.local_cluster(1, dashboard_address=None) as cluster, Client(cluster) as client:
        [result] = e2a.convert(
            str(corpus / "georgia-britannica-pls-ssml.epub"),
            str(tmp_path / "out"),
            engine="espeak",
            chapters=[8],
            client=client,
            cache=cache_dir,
            lexicons=[str(lexicon)],
            on_job=lambda job: plans.append(job.plan.result()),
        )
    [plan] = plans
    assert result.ok, result.error
    assert result.report["engine"] == "espeak" and result.report["totals"]["audio_s"] > 5
    texts = [c.text for c in plan.chunks]
    assert any("[['dZO@dZ@]]" in t for t in texts)  # the user's phonemes
    assert not any("Georgia" in t for t in texts)
    assert (tmp_path / "out" / "georgia-britannica-pls-ssml.m4b").stat().st_size > 1000

    # `cache prune --keep` plans the book as convert did only when given the same lexicon:
    # without it, the chunks spoken with the user's phonemes look unused.
    from helpers import run_cli

    book = str(corpus / "georgia-britannica-pls-ssml.epub")
    without = run_cli(
        "cache", "prune", "--cache", cache_dir, "--keep", book, "--engine", "espeak", "--dry-run"
    )
    assert without.returncode == 0, without.stderr
    assert without.stdout.startswith("would delete ") and not without.stdout.startswith(
        "would delete 0 "
    )
    same = run_cli(
        "cache",
        "prune",
        "--cache",
        cache_dir,
        "--keep",
        book,
        "--engine",
        "espeak",
        "--dry-run",
        "--lexicon",
        str(lexicon),
    )
    assert same.returncode == 0, same.stderr
    assert same.stdout.startswith("would delete 0 object(s)"), same.stdout
