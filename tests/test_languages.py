"""Every corpus book is spoken in its own language.

For each book of the shared corpus (EPUB, TXT and HTML; English, British and
American English, Arabic, French, Dutch) the book is read, its language is
routed to an espeak-ng voice, and a real paragraph of it is spoken: the voice
must be one for that very language (no fallback), and the audio must be
speech-like (not silent, about as long as the text).  The default routing
(Piper first, then espeak-ng) must send the English books to Piper and the
others to espeak-ng.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pytest

from ebook2audio_dask import config
from ebook2audio_dask.engines import get_engine_class, load_engine, resolve_spec
from ebook2audio_dask.engines.piper import BUNDLED_VOICE
from ebook2audio_dask.ingest import read_book
from ebook2audio_dask.model import Book

#: Longest text spoken per book.
MAX_CHARS = 200


@dataclass(frozen=True)
class Sample:
    file: str
    format: str
    language: str  # as the book declares it (SOURCES.md)
    espeak_voice: str  # the espeak-ng voice for exactly that language
    opening: str  # how the paragraph spoken starts


SAMPLES = [
    # The paragraph spoken is the first one of at least 8 words in the book's body
    # (chapter headings and short title lines skipped) ...
    Sample(
        "adventures-of-sherlock-holmes-standardebooks.epub",
        "epub",
        "en-GB",
        "en-gb",
        "To Sherlock Holmes she is always the woman.",
    ),
    Sample(
        "childrens-literature.epub",
        "epub",
        "en",
        "en",
        "The rabbis of old were good story-tellers.",
    ),
    Sample(
        "christmas-carol-gutenberg-epub2.epub",
        "epub",
        "en",
        "en",
        "Marley was dead: to begin with.",
    ),
    Sample(
        "georgia-britannica-pls-ssml.epub",
        "epub",
        "en-US",
        "en-us",
        "GEORGIA, a southern state of the United States",
    ),
    Sample("regime-anticancer-arabic.epub", "epub", "ar", "ar", "حسنًا! إن أردنا أن نفهم"),
    Sample("entre-nous-lectures-francaises.txt", "txt", "fr", "fr", "M. —Il est gourmand!"),
    # ... except in the Dutch book, whose first one is an English epigraph (Sterne)
    Sample("ontboezemingen-dutch.html", "html", "nl", "nl", "Hebt ge wel eens een neef, of broêr"),
    # The broken sample's only paragraph is unclosed (<p without ">"): all that is
    # left to read is its heading.
    Sample("broken-xhtml-epubsample007.epub", "epub", "en-US", "en-us", "1. main"),
]
PARAMS = [pytest.param(s, id=s.file) for s in SAMPLES]


@functools.cache
def _book(path: str) -> Book:
    return read_book(path)


def _paragraph(book: Book, opening: str) -> str:
    """The first body paragraph starting with *opening*, cut to MAX_CHARS at a word boundary."""
    for chapter in book.chapters:
        if chapter.kind != "body":
            continue
        for text in chapter.paragraphs:
            if text.startswith(opening):
                if len(text) > MAX_CHARS:
                    text = text[:MAX_CHARS].rsplit(" ", 1)[0]
                return text
    raise AssertionError(f"{book.source}: no body paragraph starts with {opening!r}")


def _first_long_paragraph(book: Book) -> str | None:
    for chapter in book.chapters:
        if chapter.kind == "body":
            for text in chapter.paragraphs:
                if len(text.split()) >= 8:
                    return text
    return None


@pytest.mark.parametrize("sample", PARAMS)
def test_espeak_speaks_each_book_in_its_own_language(sample: Sample, corpus):
    book = _book(str(corpus / sample.file))
    assert book.format == sample.format
    assert book.language == sample.language

    spec, language, warnings = resolve_spec(book.language, routing=("espeak",))
    assert warnings == []  # no fallback
    assert language == book.language
    assert (spec.engine, spec.voice, spec.settings) == ("espeak", sample.espeak_voice, ())
    espeak = get_engine_class("espeak")
    voices = {v.id: v.language for v in espeak.voices()}
    assert voices[spec.voice].lower() == book.language.lower()  # that very language, not a relative

    text = _paragraph(book, sample.opening)
    first = _first_long_paragraph(book)
    if sample.file.startswith("broken-"):
        assert first is None and [p for c in book.chapters for p in c.paragraphs] == [text]
    elif sample.language == "nl":
        assert len(text.split()) >= 8 and not first.startswith(text)
    else:
        assert first.startswith(text)  # the first real paragraph of the book
    engine = load_engine(spec)
    assert engine.sample_rate == espeak.sample_rate_for(spec.voice) == 22050
    [pcm] = engine.synthesize([text])
    assert pcm.dtype == np.int16 and pcm.ndim == 1

    seconds = len(pcm) / engine.sample_rate
    per_char = seconds / len(text)
    # espeak-ng speaks ~175 words a minute: roughly 0.05-0.1 s per character
    assert 0.03 < per_char < 0.2, f"{seconds:.2f} s for {len(text)} characters"
    samples = pcm.astype(np.float64)
    rms = float(np.sqrt(np.mean(samples**2)))
    assert rms > 300, f"(nearly) silent: RMS {rms:.1f}"
    # speech all along, not a blip followed by silence: most 20 ms frames are voiced
    frame = engine.sample_rate // 50
    frames = samples[: len(samples) // frame * frame].reshape(-1, frame)
    voiced = float(np.mean(np.sqrt(np.mean(frames**2, axis=1)) > 300))
    assert voiced > 0.4, f"only {voiced:.0%} of the audio is voiced"


@pytest.mark.parametrize("sample", PARAMS)
def test_default_routing_piper_for_english_espeak_for_the_rest(sample: Sample, corpus):
    book = _book(str(corpus / sample.file))
    if book.language.split("-")[0] == "en":
        want = ("piper", BUNDLED_VOICE)
    else:
        want = ("espeak", sample.espeak_voice)
    # resolve_spec's own default, and the routing the converter reads from the config
    # (it may list more engines first, e.g. ones that need a model; none is set up here)
    routing = tuple(config.get("routing"))
    assert routing.index("piper") < routing.index("espeak")
    for spec, language, warnings in (
        resolve_spec(book.language),
        resolve_spec(book.language, routing=routing),
    ):
        assert warnings == [] and language == book.language
        assert (spec.engine, spec.voice) == want
