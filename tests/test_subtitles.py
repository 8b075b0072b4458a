"""Subtitles, output naming and the format encoders, without a cluster (fast)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from ebook2audio_dask.audio import (
    FORMATS,
    BookTags,
    ChapterMark,
    OutputSpec,
    PartEncoder,
    decode_to_pcm,
    ffmpeg_exe,
    finish_file,
    prepare_cover,
)
from ebook2audio_dask.audio.subtitles import (
    Cue,
    format_srt,
    format_vtt,
    parse_subtitles,
)
from ebook2audio_dask.errors import UsageError
from ebook2audio_dask.pipeline import layout
from ebook2audio_dask.pipeline.layout import chunk_cues
from ebook2audio_dask.text.chunk import ChapterPlan, Chunk, split_cue_text


def test_srt_numbering_and_clock():
    text = format_srt([Cue(0.0, 1.5, "One."), Cue(3661.25, 3662.0004, "Two  words\nhere.")])
    assert text == (
        "1\n00:00:00,000 --> 00:00:01,500\nOne.\n\n"
        "2\n01:01:01,250 --> 01:01:02,000\nTwo words here.\n"
    )
    assert parse_subtitles(text) == [Cue(0.0, 1.5, "One."), Cue(3661.25, 3662.0, "Two words here.")]


def test_vtt_header_and_escaping():
    text = format_vtt([Cue(1.0, 2.0, "Fish & <chips> --> now")])
    assert text.startswith("WEBVTT\n\n1\n00:00:01.000 --> 00:00:02.000\n")
    assert "Fish &amp; &lt;chips&gt; -&gt; now" in text
    assert parse_subtitles(text)[0].start_s == 1.0


def test_chunk_cues_split_per_sentence_in_proportion_to_characters():
    assert split_cue_text('He said "Go!" Then she left. And so on') == [
        'He said "Go!"',
        "Then she left.",
        "And so on",
    ]
    assert split_cue_text("Dr. Smith came. Then J. R. R. Tolkien left.", "en") == [
        "Dr. Smith came.",
        "Then J. R. R. Tolkien left.",
    ]
    cues = chunk_cues("Aaaa. Bbbbbbbbbbbbbb.", 10.0, 12.0)  # 5 and 15 characters
    assert [c.text for c in cues] == ["Aaaa.", "Bbbbbbbbbbbbbb."]
    assert cues[0].start_s == 10.0 and cues[-1].end_s == 12.0
    assert cues[0].end_s == pytest.approx(10.5) and cues[1].start_s == cues[0].end_s
    assert chunk_cues("   ", 0, 1) == [] and chunk_cues("x", 1, 1) == []


def _plan(chunks, chapters):
    class P:  # the fields the merge helpers read
        pass

    p = P()
    p.chunks, p.chapters, p.language = tuple(chunks), tuple(chapters), "en"
    return p


def test_part_cues_use_the_written_text_skip_gaps_and_are_relative_to_the_file():
    chunks = [
        Chunk("a", "Chapter one", 0, 1.0),
        Chunk("b", "Doctor Smith came.", 0, 0.5, display="Dr. Smith came."),
        Chunk("c", "Lost.", 0, 0.5),
        Chunk("d", "Last one.", 0, 0.0),
    ]
    plan = _plan(chunks, [ChapterPlan(1, "Chapter one", 0, 4, 40)])
    rate = 1000
    timeline = layout.timeline(plan, {"a": 800, "b": 1500, "c": 700, "d": 900}, rate)
    assert [t[0] for t in timeline] == [0, 1800, 3800, 5000]
    part = layout.Part(start=1800, first=1, path="", end=5900, stop=4)
    cues = layout.part_cues(plan, timeline, part, gap_at={2}, rate=rate)
    assert cues == [Cue(0.0, 1.5, "Dr. Smith came."), Cue(3.2, 4.1, "Last one.")]


def test_part_marks_continue_a_chapter_cut_across_files_and_names_are_safe():
    chunks = [Chunk(k, k, 0 if k < "c" else 1, 0.0) for k in "abcd"]
    chapters = [ChapterPlan(1, "One", 0, 2, 2), ChapterPlan(2, 'Two: "A/B"?', 2, 4, 2)]
    plan = _plan(chunks, chapters)
    timeline = layout.timeline(plan, dict.fromkeys("abcd", 100), 1000)
    part = layout.Part(start=100, first=1, path="", end=300, stop=3)
    assert layout.part_marks(plan, timeline, part, 400) == [
        ChapterMark("One (continued)", 0, 100),
        ChapterMark('Two: "A/B"?', 100, 200),
    ]
    spec = OutputSpec(split="chapters")
    parts = [layout.Part(0, 0, "", 200, 2), layout.Part(200, 2, "", 400, 4)]
    assert layout.output_names("s3://b/out/My Book.mp3", spec, plan, parts) == [
        "s3://b/out/My Book/01 - One.mp3",
        "s3://b/out/My Book/02 - Two A B.mp3",
    ]
    hours = OutputSpec(split="hours", split_hours=1.0)
    assert layout.output_names("/o/x.m4b", hours, plan, parts) == [
        "/o/x - Part 1 of 2.m4b",
        "/o/x - Part 2 of 2.m4b",
    ]


def test_split_hours_cuts_before_the_chunk_that_would_not_fit_or_at_a_close_chapter():
    spec = OutputSpec(split="hours", split_hours=1.0)
    chapter = ChapterPlan(2, "Two", 5, 9, 1000)
    cut = layout.cut_before
    assert not cut(spec, 3, 0, 500, 100, {}, [10, 10])  # a part holds at least one chunk
    assert cut(spec, 3, 60, 41, 100, {}, [10, 10])
    assert not cut(spec, 3, 60, 40, 100, {}, [10, 10])
    assert cut(
        spec, 5, 85, 5, 100, {5: chapter}, [10, 10]
    )  # close to the limit, the chapter will not fit
    assert not cut(
        spec, 5, 50, 5, 100, {5: chapter}, [10, 10]
    )  # far from it: cut inside the chapter later
    assert cut(OutputSpec(split="chapters"), 5, 1, 1, None, {5: chapter}, [0, 0])


def test_output_spec_validation():
    assert OutputSpec.resolve().format == "m4b"
    spec = OutputSpec.resolve("MP3", split_hours=0.5, loudnorm=True, subtitles="vtt")
    assert (spec.format, spec.split, spec.split_hours, spec.subtitles) == (
        "mp3",
        "hours",
        0.5,
        "vtt",
    )
    assert spec.loudnorm.integrated == -16.0 and spec.cache_token() == {
        "format": "mp3",
        "loudnorm": [-16.0, -1.5, 11.0],
    }
    assert (
        OutputSpec.resolve().cache_token() == {}
    )  # plain M4B: the encoded-audio key of earlier versions
    for bad in ({"format": "ogg"}, {"split": "pages"}, {"split_hours": 0}, {"subtitles": "ass"},
                {"split": "chapters", "split_hours": 1}):  # fmt: skip
        with pytest.raises(UsageError):
            OutputSpec.resolve(**bad)


def test_pause_option_parsing():
    from ebook2audio_dask.cli.main import parse_pauses
    from ebook2audio_dask.pipeline.options import check_pauses

    assert parse_pauses(("chapter=3", "sentence=0.4")) == {"chapter": 3.0, "sentence": 0.4}
    for bad in (("chapter",), ("=1",), ("title=x",)):
        with pytest.raises(UsageError):
            parse_pauses(bad)
    with pytest.raises(UsageError):
        check_pauses({"verse": 1})
    with pytest.raises(UsageError):
        check_pauses({"title": -1})


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_format_streams_and_tags_a_file(fmt, tmp_path):
    """Two passes on a synthetic tone: exact length after decoding, tags, chapters and cover."""
    import mutagen

    rate = 22050
    spec = OutputSpec(format=fmt, split="chapters")
    enc = PartEncoder(spec, rate, tmp_path / f"pass1{spec.info.ext}")
    tone = (3000 * np.sin(np.arange(rate) / 5)).astype("<i2").tobytes()
    for _ in range(3):
        enc.write(tone)
    assert enc.close() == 3 * rate
    png = tmp_path / "c.png"
    red = [ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "color=red:s=16x16",
           "-frames:v", "1", "-f", "image2", "-c:v", "png", str(png)]  # fmt: skip
    subprocess.run(red, check=True)
    cover = prepare_cover(png.read_bytes(), "image/png", tmp_path)
    out = tmp_path / f"book{spec.info.ext}"
    finish_file(
        spec,
        enc.path,
        out,
        sample_rate=rate,
        chapters=[ChapterMark("A", 0, rate), ChapterMark("B", rate, 3 * rate)],
        tags=BookTags("Title", ("Ann", "Bob"), "en", track=(2, 5)),
        cover_path=cover,
        workdir=tmp_path,
    )
    assert len(decode_to_pcm(out, rate)) == 3 * rate
    f = mutagen.File(str(out))
    if fmt == "wav":
        meta = subprocess.run(
            [ffmpeg_exe(), "-i", str(out), "-f", "ffmetadata", "-"], capture_output=True, text=True
        )
        assert "title=Title" in meta.stdout and "track=2/5" in meta.stdout
        return
    tags = {k.lower(): v for k, v in f.tags.items()}
    if fmt == "m4b":
        assert f.tags["\xa9nam"] == ["Title"] and f.tags["trkn"] == [(2, 5)] and "covr" in f.tags
        assert [c.title for c in f.chapters] == ["A", "B"]
    elif fmt == "mp3":
        assert (
            str(f.tags["TIT2"]) == "Title"
            and str(f.tags["TRCK"]) == "2/5"
            and f.tags.getall("APIC")
        )
        assert [c.start_time for c in f.tags.getall("CHAP")] == [0, 1000]
    else:  # Vorbis comments
        assert (
            tags["title"] == ["Title"]
            and tags["artist"] == ["Ann, Bob"]
            and tags["tracknumber"] == ["2/5"]
        )
        assert tags["chapter001name"] == ["B"] and tags["chapter001"] == ["00:00:01.000"]
        if fmt == "flac":
            assert f.pictures
        else:
            assert tags["metadata_block_picture"]


def test_killed_encoder_leaves_no_file(tmp_path):
    enc = PartEncoder(OutputSpec(format="mp3"), 16000, tmp_path / "x.mp3")
    enc.write(bytes(3200))
    enc.kill()
    assert not Path(tmp_path / "x.mp3").exists()
    with pytest.raises(ValueError):
        PartEncoder(OutputSpec(format="flac"), 16000, tmp_path / "y.flac").close()
