"""Output formats, splits, loudness and subtitles, end to end on a real book (espeak: fast).

Every conversion here reads chapters 2 and 3 of the children's literature
EPUB (about 9 minutes of espeak speech) through one module-wide chunk store,
so the chunks are synthesised once and each test mostly measures the merge.
"""

from __future__ import annotations

import itertools
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, check_m4b_against_report, load_report, run_cli

import ebook2audio_dask as e2a
from ebook2audio_dask.audio import decode_to_pcm, ffmpeg_exe, parse_subtitles

BOOK = ROOT / "examples" / "childrens-literature.epub"
STEM = "childrens-literature"
CHAPTERS = [2, 3]
TITLES = ["191 THE LORD HELPETH MAN AND BEAST", "192 THE REAL PRINCESS"]
RATE = 22050  # espeak's


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("chunks"))


def convert(client, store, out: Path, chapters=CHAPTERS, **kwargs) -> dict:
    [result] = e2a.convert(
        str(BOOK),
        str(out),
        chapters=chapters,
        engine="espeak",
        client=client,
        cache=store,
        **kwargs,
    )
    assert result.ok, result.error
    report = load_report(out / f"{STEM}.report.json")
    assert report == result.report
    return report


def seconds(path) -> float:
    return len(decode_to_pcm(str(path), RATE)) / RATE


def ffmeta_chapters(path) -> list[tuple[str, float]]:
    """(title, start seconds) of the chapters ffmpeg reads from a file."""
    meta = subprocess.run(
        [ffmpeg_exe(), "-i", str(path), "-f", "ffmetadata", "-"], capture_output=True, text=True
    ).stdout
    out = []
    for block in meta.split("[CHAPTER]")[1:]:
        base = int(re.search(r"TIMEBASE=1/(\d+)", block).group(1))
        start = int(re.search(r"START=(\d+)", block).group(1))
        out.append((re.search(r"title=(.*)", block).group(1), start / base))
    return out


@pytest.fixture(scope="module")
def m4b_run(client, store, tmp_path_factory) -> tuple[Path, dict]:
    """The unsplit M4B with SRT subtitles: the reference for the other tests."""
    out = tmp_path_factory.mktemp("m4b")
    return out, convert(client, store, out, subtitles="srt")


def test_m4b_subtitles_match_the_chunk_audio(m4b_run, store):
    """Cue times equal the chunks' real starts (chunk WAVs in the store + the plan's pauses)
    within 50 ms; the speech in the decoded M4B begins there; each chapter starts with its first
    cue."""
    from mutagen.mp4 import MP4

    from ebook2audio_dask.audio.wav import decode_wav
    from ebook2audio_dask.ingest import read_book
    from ebook2audio_dask.pipeline.tasks import PlanRequest, plan_task
    from ebook2audio_dask.storage import ChunkStore

    out, report = m4b_run
    m4b = out / f"{STEM}.m4b"
    check_m4b_against_report(m4b, report, expect_cover=True)
    assert report["format"] == "m4b" and report["subtitles"] == [str(out / f"{STEM}.srt")]
    assert [o["url"] for o in report["outputs"]] == [str(m4b)]
    cues = parse_subtitles((out / f"{STEM}.srt").read_text(encoding="utf-8"))

    # independent expectation: the plan again, the chunk WAVs in the store, the pauses
    plan = plan_task(read_book(str(BOOK)), PlanRequest(chapters=tuple(CHAPTERS), engine="espeak"))
    wavs = ChunkStore.make(store).read_many("espeak", list({c.key for c in plan.chunks}))
    audio = decode_to_pcm(str(m4b), RATE).astype(np.float64)
    position, starts = 0, []
    for chunk in plan.chunks:
        samples, rate = decode_wav(wavs[chunk.key])
        assert rate == RATE
        starts.append((position / RATE, (position + len(samples)) / RATE))
        # the chunk's first sound, found in the M4B itself, is where the chunk's own audio has it
        lead = int(np.argmax(np.abs(samples.astype(np.float64)) > 1000))
        lo = max(0, position + lead - 2205)
        window = audio[lo : position + lead + 2205]
        onset = lo + int(np.argmax(np.abs(window) > 1000)) - (position + lead)
        assert abs(onset) < 0.05 * RATE, (chunk.text[:40], onset / RATE)
        position += len(samples) + int(round(chunk.pause_after * RATE))
    assert abs(position / RATE - report["totals"]["audio_s"]) < 0.002
    cue_starts = np.array([c.start_s for c in cues])
    for start, end in starts:  # every chunk starts a cue, and its last cue ends with its audio
        assert np.min(np.abs(cue_starts - start)) < 0.05, start
        assert any(abs(c.end_s - end) < 0.05 for c in cues), end
    assert len(cues) >= len(plan.chunks)
    assert all(a.end_s <= b.start_s + 0.001 for a, b in itertools.pairwise(cues))
    for chapter in MP4(str(m4b)).chapters:
        first = min(cues, key=lambda c: abs(c.start_s - chapter.start))
        assert abs(first.start_s - chapter.start) < 0.05


@pytest.mark.parametrize("fmt", ["mp3", "opus", "flac", "wav"])
def test_formats_decode_to_the_report_duration_with_tags_and_chapters(
    fmt, client, store, tmp_path, m4b_run
):
    import mutagen

    report = convert(client, store, tmp_path, format=fmt)
    path = tmp_path / f"{STEM}.{fmt}"
    assert report["format"] == fmt and report["output"] == str(path) and path.is_file()
    assert report["totals"]["merge_passes"] == 1  # tags, chapters and cover written with the audio
    assert report["totals"]["audio_s"] == m4b_run[1]["totals"]["audio_s"]
    assert abs(seconds(path) - report["totals"]["audio_s"]) < 0.1
    f = mutagen.File(str(path))
    starts = [c["start_s"] for c in report["chapters"]]
    if fmt == "mp3":
        assert str(f.tags["TIT2"]) == report["title"] and str(f.tags["TPE1"]) == ", ".join(
            report["authors"]
        )
        chaps = sorted(f.tags.getall("CHAP"), key=lambda c: c.start_time)
        assert [str(c.sub_frames["TIT2"]) for c in chaps] == TITLES
        assert all(abs(c.start_time / 1000 - s) < 0.05 for c, s in zip(chaps, starts))
        assert f.tags.getall("APIC")
        # a rerun with every chunk and the encoded MP3 cached still writes the file, and the
        # subtitles asked for
        path.unlink()
        again = convert(client, store, tmp_path, format=fmt, subtitles="vtt")
        assert (
            again["totals"]["audio_reused"]
            and abs(seconds(path) - report["totals"]["audio_s"]) < 0.1
        )
        assert mutagen.File(str(path)).tags.getall("CHAP") and again["subtitles"] == [
            str(tmp_path / f"{STEM}.vtt")
        ]
        cues = parse_subtitles((tmp_path / f"{STEM}.vtt").read_text(encoding="utf-8"))
        whole = parse_subtitles((m4b_run[0] / f"{STEM}.srt").read_text(encoding="utf-8"))
        assert [(c.start_s, c.text) for c in cues] == [(c.start_s, c.text) for c in whole]
    elif fmt == "wav":
        meta = subprocess.run(
            [ffmpeg_exe(), "-i", str(path), "-f", "ffmetadata", "-"], capture_output=True, text=True
        )
        assert f"title={report['title']}" in meta.stdout.replace("\\", "")
    else:
        assert f.tags["title"] == [report["title"]] and f.tags["artist"] == [
            ", ".join(report["authors"])
        ]
        chapters = ffmeta_chapters(path)
        assert [t for t, _ in chapters] == TITLES
        assert all(abs(got - want) < 0.05 for (_, got), want in zip(chapters, starts))
        assert f.pictures if fmt == "flac" else f.tags["metadata_block_picture"]


def test_split_hours_parts_add_up(client, store, tmp_path, m4b_run):
    hours = 0.02  # 72 s
    report = convert(client, store, tmp_path, split_hours=hours, subtitles="vtt")
    assert report["totals"]["merge_passes"] == 2  # each part encoded, then chapters and tags added
    outputs = report["outputs"]
    n = len(outputs)
    assert n >= 7
    names = [Path(o["url"]).name for o in outputs]
    assert names == [f"{STEM} - Part {i} of {n}.m4b" for i in range(1, n + 1)]
    assert not (tmp_path / f"{STEM}.m4b").exists()
    durations = [seconds(o["url"]) for o in outputs]
    assert all(d <= hours * 3600 + 0.05 for d in durations)
    assert abs(sum(durations) - m4b_run[1]["totals"]["audio_s"]) < 0.1
    assert all(abs(d - o["duration_s"]) < 0.1 for d, o in zip(durations, outputs))
    assert [o["start_s"] for o in outputs[1:]] == [o["end_s"] for o in outputs[:-1]]
    from mutagen.mp4 import MP4

    titles = []
    for i, o in enumerate(outputs, 1):
        mp4 = MP4(o["url"])
        assert mp4.tags["trkn"] == [(i, n)] and mp4.tags["\xa9alb"] == [report["title"]]
        assert [c.title for c in mp4.chapters] == [c["title"] for c in o["chapters"]]
        titles += [c.title for c in mp4.chapters]
        vtt = Path(o["subtitles"]).read_text(encoding="utf-8")
        assert vtt.startswith("WEBVTT\n") and o["subtitles"].endswith(f"Part {i} of {n}.vtt")
        cues = parse_subtitles(vtt)
        assert cues[0].start_s < 1.0 and cues[-1].end_s <= o["duration_s"] + 0.001
    assert titles[0] == TITLES[0] and f"{TITLES[0]} (continued)" in titles and TITLES[1] in titles
    # the parts' cues, shifted by their part's start, are the unsplit book's cues
    whole = parse_subtitles((m4b_run[0] / f"{STEM}.srt").read_text(encoding="utf-8"))
    shifted = [
        c.start_s + o["start_s"]
        for o in outputs
        for c in parse_subtitles(Path(o["subtitles"]).read_text())
    ]
    assert len(shifted) == len(whole)
    assert max(abs(a - b.start_s) for a, b in zip(shifted, whole)) < 0.005


def test_loudnorm_reaches_the_target(client, store, tmp_path):
    """EBU R128 integrated loudness of the output, measured by ffmpeg's ebur128 filter: -16 LUFS ± 1
    LU."""

    def integrated(path) -> float:
        measured = subprocess.run(
            [
                ffmpeg_exe(),
                "-hide_banner",
                "-nostats",
                "-i",
                str(path),
                "-af",
                "ebur128=framelog=quiet",
                "-f",
                "null",
                "-",
            ],
            capture_output=True,
            text=True,
        )
        return float(re.findall(r"I:\s+(-?[\d.]+) LUFS", measured.stderr)[-1])

    report = convert(client, store, tmp_path, chapters=[2], loudnorm=True, format="opus")
    path = tmp_path / f"{STEM}.opus"
    assert abs(seconds(path) - report["totals"]["audio_s"]) < 0.1
    assert abs(integrated(path) + 16.0) <= 1.0
    plain = convert(client, store, tmp_path / "plain", chapters=[2], format="flac")
    assert (
        abs(integrated(tmp_path / "plain" / f"{STEM}.flac") + 16.0) > 1.0
    )  # espeak alone is not at -16
    assert plain["totals"]["audio_s"] == report["totals"]["audio_s"]


def test_cli_split_chapters_pauses_and_cached_rerun(store, tmp_path):
    """--split chapters with --pause: one tagged file per chapter; a rerun from the cache writes
    them again."""
    import mutagen

    out = tmp_path / "out"
    args = [
        "convert",
        str(BOOK),
        "-o",
        str(out),
        "--chapters",
        "2,3",
        "--engine",
        "espeak",
        "--cache",
        store,
        "--workers",
        "1",
        "--no-progress",
        "--format",
        "mp3",
        "--split",
        "chapters",
        "--subtitles",
        "srt",
        "--pause",
        "title=2.5",
    ]
    for run in range(2):
        proc = run_cli(*args)
        assert proc.returncode == 0, proc.stderr
        report = load_report(out / f"{STEM}.report.json")
        files = [Path(o["url"]) for o in report["outputs"]]
        assert files == [out / STEM / "01 - 191 THE LORD HELPETH MAN AND BEAST.mp3",
                         out / STEM / "02 - 192 THE REAL PRINCESS.mp3"]  # fmt: skip
        if run == 1:
            assert report["totals"]["chunks_synthesized"] == 0
        for i, (path, chapter) in enumerate(zip(files, report["chapters"]), 1):
            tags = mutagen.File(str(path)).tags
            assert str(tags["TIT2"]) == TITLES[i - 1] and str(tags["TRCK"]) == f"{i}/2"
            assert str(tags["TALB"]) == report["title"]
            assert abs(seconds(path) - (chapter["end_s"] - chapter["start_s"])) < 0.1
            cues = parse_subtitles(path.with_suffix(".srt").read_text(encoding="utf-8"))
            # the title is chunk 1; the 2.5 s title pause separates it from the text
            assert cues[1].start_s - cues[0].end_s == pytest.approx(2.5, abs=0.002)
        if run == 0:
            for path in files:
                path.unlink()
