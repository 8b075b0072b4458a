"""The merge's layout without a cluster, an engine or ffmpeg: timeline, part cuts,
chapter marks, cues and output names are pure functions of the plan and the
chunks' lengths (fast)."""

from __future__ import annotations

from ebook2audio_dask.audio import ChapterMark, Cue, OutputSpec
from ebook2audio_dask.engines.base import EngineSpec
from ebook2audio_dask.model import Book, Chapter
from ebook2audio_dask.pipeline import layout
from ebook2audio_dask.pipeline.layout import Part, PartCuts
from ebook2audio_dask.text.chunk import (
    BookPlan,
    ChapterPlan,
    Chunk,
    plan_book,
    sentence_ends,
    split_cue_text,
)

RATE = 1000  # samples per second: pauses of 0.1 s are 100 samples
SPEC = EngineSpec.make("piper", "en_US-joe-medium")


def _plan(chapters: list[tuple[str, list[tuple[str, float]]]]) -> BookPlan:
    """A plan of chapters of ``(key, pause)`` chunks (the chunk's text is its key)."""
    chunks, marks = [], []
    for index, (title, items) in enumerate(chapters, 1):
        start = len(chunks)
        chunks += [Chunk(key, key, index, pause) for key, pause in items]
        marks.append(ChapterPlan(index, title, start, len(chunks), 10 * len(items)))
    return BookPlan("mem://b.txt", "B", ("A",), "en", SPEC, RATE, tuple(chunks), tuple(marks))


def _cut(plan: BookPlan, lengths: dict[str, int], spec: OutputSpec, spoken=(0, 0)) -> list[Part]:
    """The parts the merge makes when the chunks have *lengths*."""
    chapter_at = {ch.start: ch for ch in plan.chapters if ch.stop > ch.start}
    cuts = PartCuts(spec, RATE, chapter_at, spoken)
    for i, chunk in enumerate(plan.chunks):
        cuts.add(i, lengths[chunk.key], int(round(chunk.pause_after * RATE)))
    return cuts.close(len(plan.chunks))


def _spans(parts: list[Part]) -> list[tuple[int, int, int, int]]:
    return [(p.start, p.end, p.first, p.stop) for p in parts]


THREE = _plan(
    [("One", [("a", 0.1), ("b", 0.2)]), ("Two", [("c", 0.0), ("a", 0.5)]), ("Three", [("d", 1.0)])]
)
LENGTHS = {"a": 400, "b": 300, "c": 500, "d": 200}


def test_timeline_from_lengths_and_pauses_with_a_repeated_chunk():
    times = layout.timeline(THREE, LENGTHS, RATE)
    # a: 400 + 100, b: 300 + 200, c: 500 + 0, a again: 400 + 500, d: 200 + 1000
    assert times == [(0, 400), (500, 300), (1000, 500), (1500, 400), (2400, 200)]


def test_an_unsplit_book_is_one_part_with_every_chapter_marked():
    parts = _cut(THREE, LENGTHS, OutputSpec())
    assert _spans(parts) == [(0, 3600, 0, 5)]
    times = layout.timeline(THREE, LENGTHS, RATE)
    assert layout.part_marks(THREE, times, parts[0], 3600) == [
        ChapterMark("One", 0, 1000),
        ChapterMark("Two", 1000, 2400),
        ChapterMark("Three", 2400, 3600),
    ]


def test_split_by_chapters_starts_a_file_at_each_chapter():
    parts = _cut(THREE, LENGTHS, OutputSpec(split="chapters"))
    assert _spans(parts) == [(0, 1000, 0, 2), (1000, 2400, 2, 4), (2400, 3600, 4, 5)]
    times = layout.timeline(THREE, LENGTHS, RATE)
    assert [layout.part_marks(THREE, times, p, 3600) for p in parts] == [
        [ChapterMark("One", 0, 1000)],
        [ChapterMark("Two", 0, 1400)],
        [ChapterMark("Three", 0, 1200)],
    ]


def test_split_by_hours_cuts_before_the_chunk_that_would_not_fit():
    spec = OutputSpec(split="hours", split_hours=1.6 / 3600)  # about 1,600 samples a file
    parts = _cut(THREE, LENGTHS, spec)
    # a, b and c (1,500 with their pauses) fit; a again would pass the limit, then d too
    assert _spans(parts) == [(0, 1500, 0, 3), (1500, 2400, 3, 4), (2400, 3600, 4, 5)]
    times = layout.timeline(THREE, LENGTHS, RATE)
    # the second file starts inside chapter Two: it continues there
    assert layout.part_marks(THREE, times, parts[1], 3600) == [
        ChapterMark("Two (continued)", 0, 900)
    ]
    assert layout.part_marks(THREE, times, parts[0], 3600) == [
        ChapterMark("One", 0, 1000),
        ChapterMark("Two", 1000, 1500),
    ]


def test_split_by_hours_prefers_a_chapter_start_when_the_chapter_will_not_fit():
    plan = _plan([("One", [("a", 0.0), ("b", 0.0)]), ("Two", [("c", 0.0), ("d", 0.0)])])
    lengths = {"a": 450, "b": 400, "c": 100, "d": 450}
    spec = OutputSpec(split="hours", split_hours=1.0 / 3600)  # about 1,000 samples a file
    # 850 samples in (over 80 % of the limit), chunk c would fit, but at 45 samples a
    # character chapter Two's 20 characters will not: the file ends at the chapter
    assert _spans(_cut(plan, lengths, spec, spoken=(10, 450))) == [
        (0, 850, 0, 2),
        (850, 1400, 2, 4),
    ]
    # far from the limit (a file of 4,000): no cut at all
    wide = OutputSpec(split="hours", split_hours=4.0 / 3600)
    assert _spans(_cut(plan, lengths, wide, spoken=(10, 450))) == [(0, 1400, 0, 4)]
    # a chunk longer than the limit still makes a file of its own (never an empty one)
    assert _spans(_cut(plan, dict.fromkeys("abcd", 2000), spec)) == [
        (0, 2000, 0, 1),
        (2000, 4000, 1, 2),
        (4000, 6000, 2, 3),
        (6000, 8000, 3, 4),
    ]


def test_cues_follow_the_sentence_ends_the_plan_carries():
    text = "Dr. Smith came. He left."
    assert split_cue_text(text, "en") == ["Dr. Smith came.", "He left."]
    assert sentence_ends(text, "en") == (15, 24)
    assert sentence_ends("  Odd   spacing.  Here  ", "en") == (12, 17)
    # the plan's ends are used as they are (here: one sentence), the text is not split again
    chunks = [
        Chunk("a", text, 1, 0.5, sentences=(24,)),
        Chunk("b", text, 1, 0.0),
        Chunk("c", "Gone.", 1, 0.0, sentences=(5,)),
    ]
    plan = BookPlan(
        "mem://b", "B", (), "en", SPEC, RATE, tuple(chunks), (ChapterPlan(1, "One", 0, 3, 60),)
    )
    times = layout.timeline(plan, {"a": 1000, "b": 1500, "c": 300}, RATE)
    part = Part(start=0, first=0, path="", end=3300, stop=3)
    assert layout.part_cues(plan, times, part, {2}, RATE) == [
        Cue(0.0, 1.0, text),
        # without ends (a plan made without them): split here, the same sentences
        Cue(1.5, 1.5 + 1.5 * 15 / 23, "Dr. Smith came."),
        Cue(1.5 + 1.5 * 15 / 23, 3.0, "He left."),
    ]
    # relative to the file: a part starting at chunk b
    later = Part(start=1500, first=1, path="", end=3300, stop=2)
    assert [c.start_s for c in layout.part_cues(plan, times, later, set(), RATE)] == [
        0.0,
        1.5 * 15 / 23,
    ]


def test_a_plan_with_sentences_has_the_same_keys_and_the_splitters_sentences():
    long = " ".join(f'"Quote number {i}. It goes on," she said; and on.' for i in range(12))
    book = Book(
        source="mem://b.txt",
        title="B",
        authors=("A",),
        language="en",
        chapters=(Chapter(1, "Chapter I. The Start", ("Dr. Who came. Mr. X left.", long)),),
    )
    plain = plan_book(book, SPEC, sample_rate=22050, max_chars=120, language="en")
    with_ends = plan_book(
        book, SPEC, sample_rate=22050, max_chars=120, language="en", sentences=True
    )
    assert [c.key for c in with_ends.chunks] == [c.key for c in plain.chunks]
    assert all(c.sentences is None for c in plain.chunks)
    assert len(with_ends.chunks) > 5
    for chunk in with_ends.chunks:
        text = chunk.display or chunk.text
        cues = layout.chunk_cues(text, 0.0, 1.0, ends=chunk.sentences)
        assert [c.text for c in cues] == split_cue_text(text, "en")


def test_output_names_unsplit_by_hours_and_by_chapters():
    parts = _cut(THREE, LENGTHS, OutputSpec(split="chapters"))
    assert layout.output_names("s3://b/out/Book.m4b", OutputSpec(), THREE, parts[:1]) == [
        "s3://b/out/Book.m4b"
    ]
    assert layout.output_names("/o/Book.m4b", OutputSpec(split="chapters"), THREE, parts) == [
        "/o/Book/01 - One.m4b",
        "/o/Book/02 - Two.m4b",
        "/o/Book/03 - Three.m4b",
    ]
    hours = OutputSpec(split="hours", split_hours=1.0)
    assert layout.output_names("/o/Book.mp3", hours, THREE, parts[:2]) == [
        "/o/Book - Part 1 of 2.mp3",
        "/o/Book - Part 2 of 2.mp3",
    ]
    assert layout.with_suffix("s3://b/o/Book - Part 1 of 2.mp3", ".srt") == (
        "s3://b/o/Book - Part 1 of 2.srt"
    )


def test_output_names_of_many_chapters_and_long_titles_fit():
    title = "A very long chapter title, " * 20 + "é" * 50
    plan = _plan([(f"{title} {n}", [(f"k{n}", 0.0)]) for n in range(120)])
    parts = _cut(plan, {f"k{n}": 10 for n in range(120)}, OutputSpec(split="chapters"))
    assert len(parts) == 120
    stem = "S" * 223  # the longest stem a book's names start with
    names = layout.output_names(f"/o/{stem}.opus", OutputSpec(split="chapters"), plan, parts)
    assert len(set(names)) == 120
    for n, name in enumerate(names, 1):
        folder, _, leaf = name.rpartition("/")
        assert folder == f"/o/{stem}"
        assert leaf.startswith(f"{n:03d} - A very long") and leaf.endswith(".opus")
        assert len(leaf.encode("utf-8")) <= 255
        assert len(layout.with_suffix(leaf, ".vtt").encode("utf-8")) <= 255
    hours = layout.output_names(
        f"/o/{stem}.m4b", OutputSpec(split="hours", split_hours=1.0), plan, parts[:3]
    )
    assert all(len(n.rpartition("/")[2].encode("utf-8")) <= 255 for n in hours)
    assert hours[2].endswith(" - Part 3 of 3.m4b")
