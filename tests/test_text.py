"""The chunk stage: normalisation, sentence splitting, chunk limits, content keys, pauses."""

from __future__ import annotations

import itertools

import pytest

from ebook2audio_dask.engines.base import EngineSpec
from ebook2audio_dask.model import Book, Chapter
from ebook2audio_dask.text import (
    Pauses,
    content_key,
    normalize_text,
    plan_book,
    split_long,
    split_sentences,
)

SPEC = EngineSpec.make("piper", "en_US-joe-medium")


def test_normalize_quotes_whitespace_and_invisible_marks():
    raw = (
        "\u201cWell,\u201d said he\u2014\u00a0\u2018quite\u2019 so\u2026"
        "\r\n  next\u00ad line\u200b."
    )
    assert normalize_text(raw) == "\"Well,\" said he\u2014 'quite' so... next line."
    assert normalize_text("\u00ab Bonjour ! \u00bb") == '"Bonjour !"'
    assert normalize_text(" \n\t ") == ""


def test_sentences_english_abbreviations_are_not_boundaries():
    text = "Mr. Holmes arrived at 3 p.m. on Tuesday. Dr. Watson was late! Was he? Yes."
    assert split_sentences(text, "en-GB") == [
        "Mr. Holmes arrived at 3 p.m. on Tuesday.",
        "Dr. Watson was late!",
        "Was he?",
        "Yes.",
    ]


@pytest.mark.parametrize(
    "language, text, n",
    [
        ("fr", "M. Dupont est arrivé. Il a dit bonjour. Puis il est parti.", 3),
        ("nl", "Het was koud. De heer Jansen bleef thuis. Hij las een boek.", 3),
        ("xx-unknown", "One. Two. Three.", 3),
    ],
)
def test_sentences_other_languages(language, text, n):
    assert len(split_sentences(text, language)) == n


def test_split_long_respects_limit_and_loses_no_words():
    sentence = ("word " * 500).strip()
    pieces = split_long(sentence, 120)
    assert all(len(p) <= 120 for p in pieces)
    assert " ".join(pieces).split() == sentence.split()
    hard = "x" * 1000
    assert "".join(split_long(hard, 300)) == hard


def test_content_key_depends_on_every_input():
    base = content_key("Hello.", SPEC, 22050)
    assert base == content_key("Hello.", EngineSpec.make("piper", "en_US-joe-medium"), 22050)
    assert (
        len(
            {
                base,
                content_key("Hello!", SPEC, 22050),
                content_key("Hello.", EngineSpec.make("espeak", "en-us"), 22050),
                content_key("Hello.", EngineSpec.make("piper", "other"), 22050),
                content_key(
                    "Hello.",
                    EngineSpec.make("piper", "en_US-joe-medium", {"length_scale": 1.2}),
                    22050,
                ),
                content_key("Hello.", SPEC, 16000),
            }
        )
        == 6
    )


def _book(*chapters):
    return Book(
        source="mem://b.txt", title="B", authors=("A",), language="en", chapters=tuple(chapters)
    )


def test_plan_chunks_pauses_and_titles():
    long_para = " ".join(f"Sentence number {i} is here." for i in range(60))
    book = _book(
        Chapter(1, "Chapter One", ("Chapter One", "It was a dark night.", long_para)),
        Chapter(2, "The Second", ("Short.",)),
        Chapter(3, "Empty", ()),
    )
    pauses = Pauses(sentence=0.1, paragraph=0.5, title=0.9, chapter=2.5)
    plan = plan_book(book, SPEC, sample_rate=22050, max_chars=200, language="en", pauses=pauses)
    assert [c.index for c in plan.chapters] == [1, 2]  # the empty chapter is dropped
    assert all(len(c.text) <= 200 for c in plan.chunks)
    ch1 = plan.chunks[plan.chapters[0].start : plan.chapters[0].stop]
    # the first paragraph already is the title: it is not spoken twice
    assert ch1[0].text == "Chapter One" and ch1[1].text == "It was a dark night."
    assert ch1[1].pause_after == 0.5  # paragraph end
    assert ch1[2].pause_after == 0.1  # inside the long paragraph
    assert ch1[-1].pause_after == 2.5  # chapter end
    ch2 = plan.chunks[plan.chapters[1].start : plan.chapters[1].stop]
    assert [c.text for c in ch2] == ["The Second", "Short."]
    assert ch2[0].pause_after == 0.9
    # every word of the text is in the chunks, in order (as written: display; numbers spoken: text)
    words = " ".join(c.display or c.text for c in ch1[2:]).split()
    assert words == long_para.split()
    assert ch1[2].text.startswith("Sentence number zero is here.") and ch1[2].display.startswith(
        "Sentence number 0 is"
    )


def test_batches_skip_cached_and_duplicate_chunks():
    book = _book(Chapter(1, "T", ("Same text.", "Other text.", "Same text.", "Third one here.")))
    plan = plan_book(
        book, SPEC, sample_rate=22050, max_chars=100, language="en", speak_titles=False
    )
    keys = [c.key for c in plan.chunks]
    assert keys[0] == keys[2]
    batches = plan.batches(batch_chars=1000)
    assert [len(b) for b in batches] == [3]
    skipped = plan.batches(batch_chars=1000, skip={keys[1]})
    assert [c.text for c in skipped[0]] == ["Same text.", "Third one here."]
    small = plan.batches(batch_chars=12)
    assert [len(b) for b in small] == [1, 1, 1]


def test_batches_shrink_towards_the_end_so_workers_finish_together():
    paragraphs = tuple(
        f"Paragraph {i} has a sentence of moderate length in it." for i in range(400)
    )
    plan = plan_book(
        _book(Chapter(1, "T", paragraphs)),
        SPEC,
        sample_rate=22050,
        max_chars=200,
        language="en",
        speak_titles=False,
    )
    sizes = [sum(len(c.text) for c in b) for b in plan.batches(3000, slots=2, min_chars=400)]
    assert sum(sizes) == plan.chars
    assert max(sizes) <= 3000 and sizes[0] > 2500
    assert sizes[-1] <= 500  # the last tasks are short: no worker is left with a long tail
    assert all(
        b <= a + 200 for a, b in itertools.pairwise(sizes)
    )  # sizes only shrink (up to packing)
    one_slot = plan.batches(3000, slots=1, min_chars=400)
    assert len(one_slot) < len(sizes)


def test_length_buckets_group_similar_lengths():
    from ebook2audio_dask.pipeline.tasks import length_buckets

    items = tuple((str(i), "x" * n) for i, n in enumerate([10, 200, 45, 50, 60, 250, 30, 90, 100]))
    groups = length_buckets(items, 3)
    assert [[len(t) for _, t in g] for g in groups] == [
        [10, 30, 45],
        [50, 60],
        [90, 100],
        [200, 250],
    ]
    assert sorted(k for g in groups for k, _ in g) == sorted(k for k, _ in items)  # nothing lost
    assert all(len(g) <= 3 for g in groups)
    assert length_buckets(items, 1) == [[item] for item in items]  # batch size 1: book order kept


def test_sentence_splitting_is_thread_safe(corpus):
    """Chunk tasks run in threads of one worker: concurrent planning must give what sequential
    planning does
    (a shared pySBD segmenter used to drop text under concurrency)."""
    from concurrent.futures import ThreadPoolExecutor

    from ebook2audio_dask import read_book
    from ebook2audio_dask.text import split_sentences

    book = read_book(str(corpus / "christmas-carol-gutenberg-epub2.epub"))
    paragraphs = [p for c in book.chapters for p in c.paragraphs][:600]
    expected = [split_sentences(p, "en") for p in paragraphs]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(2):
            assert list(pool.map(lambda p: split_sentences(p, "en"), paragraphs)) == expected
