"""Tests of the audio layer: WAV chunk helpers, tags, the M4B encoder (real ffmpeg), the formats."""

from __future__ import annotations

import base64
import io
import itertools
import logging
import re
import struct
import subprocess
import wave
import zlib
from pathlib import Path

import numpy as np
import pytest

mutagen_mp4 = pytest.importorskip("mutagen.mp4")

from ebook2audio_dask.audio import (  # noqa: E402
    FORMATS,
    WAV_HEADER_BYTES,
    BookTags,
    ChapterMark,
    FormatInfo,
    OutputSpec,
    decode_to_pcm,
    decode_wav,
    encode_m4b,
    encode_wav,
    ffmpeg_exe,
    silence,
    wav_info,
)
from ebook2audio_dask.audio.tags import ffmetadata, iso639_2, tag_args  # noqa: E402

SR = 22050


# --------------------------------------------------------------------------
# helpers


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """A few seconds of tones with a syllable-rate envelope, as int16."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    pitch = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SR
    voice = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    signal = 6000 * voice * envelope + 300 * rng.standard_normal(len(t))
    return np.clip(signal, -32768, 32767).astype(np.int16)


def png_bytes(width: int = 8, height: int = 6, rgb=(200, 30, 60)) -> bytes:
    """A tiny valid RGB PNG, written by hand."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def ffmpeg_image(codec: str, fmt: str = "image2") -> bytes:
    """A small test image encoded by ffmpeg (skips the test if it cannot)."""
    result = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi",
         "-i", "testsrc=size=64x48:rate=1", "-frames:v", "1", "-c:v", codec,
         "-f", fmt, "-update", "1", "pipe:1"],
        capture_output=True, check=False,
    )  # fmt: skip
    if result.returncode != 0 or not result.stdout:
        pytest.skip(f"this ffmpeg cannot write {codec} images")
    return result.stdout


def encode(tmp_path, samples=None, *, chapters=(), tags=None, name="book.m4b", **kwargs):
    if samples is None:
        samples = speechlike(3)
    out = tmp_path / name
    duration = encode_m4b(
        [samples.tobytes()],
        sample_rate=SR,
        chapters=chapters,
        tags=tags or BookTags("Test"),
        out_path=out,
        **kwargs,
    )
    return out, duration


def covers(path) -> list:
    return list(mutagen_mp4.MP4(path).tags.get("covr", []))


def audio_track_language(path) -> str:
    """The ISO 639-2 code in the mdhd box of the first sound track."""
    with open(path, "rb") as f:
        atoms = mutagen_mp4.Atoms(f)
        for trak in atoms.path(b"moov")[-1].findall(b"trak"):
            hdlr = trak[b"mdia", b"hdlr"]
            f.seek(hdlr.offset + 16)
            if f.read(4) != b"soun":
                continue
            mdhd = trak[b"mdia", b"mdhd"]
            f.seek(mdhd.offset + 8)
            version = f.read(1)[0]
            f.seek(mdhd.offset + 8 + 4 + (28 if version == 1 else 16))
            (code,) = struct.unpack(">H", f.read(2))
            return "".join(chr(((code >> s) & 0x1F) + 0x60) for s in (10, 5, 0))
    raise AssertionError("no sound track")


# --------------------------------------------------------------------------
# wav.py


def test_wav_round_trip():
    samples = speechlike(1.5, seed=3)
    data = encode_wav(samples, SR)
    assert data[:4] == b"RIFF" and len(data) == WAV_HEADER_BYTES + 2 * len(samples)
    decoded, rate = decode_wav(data)
    assert rate == SR
    assert decoded.dtype == np.int16
    np.testing.assert_array_equal(decoded, samples)
    decoded[0] = 1  # writable copy
    assert wav_info(data) == (SR, len(samples))
    assert wav_info(data[:WAV_HEADER_BYTES]) == (SR, len(samples))
    assert wav_info(io.BytesIO(data)) == (SR, len(samples))


def test_wav_big_endian_and_empty_input():
    samples = np.array([1, -2, 300, -32768, 32767], dtype=">i2")
    decoded, _ = decode_wav(encode_wav(samples, 16000))
    np.testing.assert_array_equal(decoded, samples.astype(np.int16))
    empty, rate = decode_wav(encode_wav(np.zeros(0, np.int16), 8000))
    assert len(empty) == 0 and rate == 8000


def test_wav_truncated_raises():
    data = encode_wav(speechlike(0.5), SR)
    with pytest.raises(ValueError, match="truncated"):
        decode_wav(data[:-10])
    with pytest.raises(ValueError):
        decode_wav(data[:30])  # header cut short
    with pytest.raises(ValueError):
        wav_info(data[:30])
    with pytest.raises(ValueError):
        decode_wav(b"this is not a wav file at all")


def _wave_file(channels: int, width: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(SR)
        w.writeframes(b"\x00" * channels * width * 100)
    return buf.getvalue()


@pytest.mark.parametrize("channels,width", [(2, 2), (1, 1), (1, 3)])
def test_wav_rejects_other_formats(channels, width):
    data = _wave_file(channels, width)
    with pytest.raises(ValueError):
        decode_wav(data)
    with pytest.raises(ValueError):
        wav_info(data)


@pytest.mark.parametrize(
    "samples,rate",
    [
        (np.zeros(10, np.float32), SR),
        (np.zeros((10, 2), np.int16), SR),
        (np.zeros(10, np.int32), SR),
        (np.zeros(10, np.int16), 0),
        (np.zeros(10, np.int16), 22050.0),
    ],
)
def test_encode_wav_validates(samples, rate):
    with pytest.raises(ValueError):
        encode_wav(samples, rate)


# --------------------------------------------------------------------------
# wav.py: silence; tags.py: chapters and tags for ffmpeg


def test_silence():
    assert silence(0) == b""
    assert silence(3) == b"\x00" * 6
    with pytest.raises(ValueError):
        silence(-1)


def test_ffmetadata_escaping():
    """Chapter titles are escaped as ffmpeg reads them; tags go as arguments, unescaped."""
    text = ffmetadata([ChapterMark("one = 1; #1", 0, 100), ChapterMark("A\\", 100, 200)], SR)
    lines = text.split("\n")
    assert lines[0] == ";FFMETADATA1"
    assert "TIMEBASE=1/22050" in lines
    assert "title=one \\= 1\\; \\#1" in lines
    assert "title=A\\\\\0" in lines  # a trailing backslash is closed by a NUL
    args = tag_args(BookTags("A=B;C#D\\E\nF", ("X", "Y")))
    assert args == [
        "-metadata",
        "title=A=B;C#D\\E F",
        "-metadata",
        "artist=X, Y",
        "-metadata",
        "album_artist=X, Y",
        "-metadata",
        "album=A=B;C#D\\E F",
        "-metadata",
        "genre=Audiobook",
    ]


@pytest.mark.parametrize(
    "tag,code",
    [("en-GB", "eng"), ("de", "deu"), ("fr_CA", "fra"), ("zh-Hant-TW", "zho"),
     ("fil", "fil"), ("EN", "eng"), ("xx", None), ("", None), (None, None)],
)  # fmt: skip
def test_language_codes(tag, code):
    assert iso639_2(tag) == code


# --------------------------------------------------------------------------
# m4b.py: encoding


@pytest.mark.parametrize("two_pass", [False, True], ids=["one-pass", "two-pass"])
def test_encode_m4b_chapters_tags_cover(tmp_path, two_pass):
    samples = speechlike(20.3, seed=1)
    marks = [
        ChapterMark("Chapter 1: Zoë's = beginning; part #1", 0, 5 * SR),
        ChapterMark("Ch. 2 \\ the middle", 5 * SR, 12 * SR + 1234),
        ChapterMark("Épilogue — fin", 12 * SR + 1234, len(samples)),
    ]
    tags = BookTags(
        title="Crime = Punishment; a novel",
        authors=("Фёдор Достоевский", "Constance Garnett"),
        language="en-GB",
        comment="Read by a robot\nsecond line",
    )
    # Uneven blocks, one of them splitting a sample in two.
    raw = samples.tobytes()
    cuts = [0, 1, 4097, 70001, 300000, len(raw)]
    blocks = [raw[a:b] for a, b in itertools.pairwise(cuts)]
    out = tmp_path / "book.m4b"

    duration = encode_m4b(
        iter(blocks),
        sample_rate=SR,
        # two-pass: chapter times known only once the stream is consumed (the pipeline's way)
        chapters=(lambda: marks) if two_pass else marks,
        tags=tags,
        out_path=out,
        cover=png_bytes(),
        cover_media_type="image/png",
    )

    assert duration == pytest.approx(len(samples) / SR)
    assert out.read_bytes()[4:12] == b"ftypM4B "
    mp4 = mutagen_mp4.MP4(out)
    assert abs(mp4.info.length - len(samples) / SR) < 0.1
    assert mp4.info.sample_rate == SR and mp4.info.channels == 1
    assert [c.title for c in mp4.chapters] == [m.title for m in marks]
    for chapter, mark in zip(mp4.chapters, marks):
        assert abs(chapter.start - mark.start_sample / SR) < 0.05
    assert mp4.tags["\xa9nam"] == [tags.title]
    assert mp4.tags["\xa9ART"] == ["Фёдор Достоевский, Constance Garnett"]
    assert mp4.tags["aART"] == ["Фёдор Достоевский, Constance Garnett"]
    assert mp4.tags["\xa9alb"] == [tags.title]
    assert mp4.tags["\xa9gen"] == ["Audiobook"]
    assert mp4.tags["\xa9cmt"] == ["Read by a robot\nsecond line"]
    (cover,) = mp4.tags["covr"]
    assert cover.imageformat == mutagen_mp4.MP4Cover.FORMAT_PNG
    assert bytes(cover) == png_bytes()
    assert audio_track_language(out) == "eng"

    decoded = decode_to_pcm(out, SR)
    assert abs(len(decoded) - len(samples)) < SR // 10
    assert np.sqrt(np.mean(decoded.astype(np.float64) ** 2)) > 500


def test_two_pass_chapters_past_the_end_fail_and_leave_nothing(tmp_path):
    samples = speechlike(2.0)
    out = tmp_path / "late.m4b"
    with pytest.raises(ValueError, match="chapters end at sample"):
        encode_m4b(
            [samples.tobytes()],
            sample_rate=SR,
            tags=BookTags("L"),
            out_path=out,
            chapters=lambda: [ChapterMark("too long", 0, 3 * SR)],
        )
    assert not out.exists()


def test_encode_numpy_blocks_and_silence(tmp_path):
    part = speechlike(1.0)
    blocks = [part, silence(SR // 2), part[::-1].copy()]
    out = tmp_path / "np.m4b"
    duration = encode_m4b(blocks, sample_rate=SR, chapters=[], tags=BookTags("N"), out_path=out)
    assert duration == pytest.approx(2.5)
    mp4 = mutagen_mp4.MP4(out)
    assert len(mp4.chapters or []) == 0
    assert "covr" not in mp4.tags


def test_jpeg_cover_is_copied(tmp_path):
    jpeg = ffmpeg_image("mjpeg")
    assert jpeg[:3] == b"\xff\xd8\xff"
    out, _ = encode(tmp_path, cover=jpeg, cover_media_type="image/jpeg")
    (cover,) = covers(out)
    assert cover.imageformat == mutagen_mp4.MP4Cover.FORMAT_JPEG
    assert bytes(cover) == jpeg


@pytest.mark.parametrize("codec", ["gif", "bmp", "libwebp"])
def test_other_raster_covers_become_png(tmp_path, codec):
    image = ffmpeg_image(codec, fmt="image2pipe" if codec == "libwebp" else "image2")
    out, _ = encode(tmp_path, cover=image, cover_media_type="image/whatever")
    (cover,) = covers(out)
    assert cover.imageformat == mutagen_mp4.MP4Cover.FORMAT_PNG
    assert bytes(cover)[:8] == b"\x89PNG\r\n\x1a\n"


def test_svg_cover_with_embedded_png(tmp_path):
    small = png_bytes(2, 2, (0, 0, 0))
    big = png_bytes(40, 30, (10, 200, 10))
    b64 = base64.b64encode(big).decode()
    wrapped = "&#10;".join(b64[i : i + 60] for i in range(0, len(b64), 60))
    svg = (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<svg xmlns="http://www.w3.org/2000/svg" '
        'xmlns:xlink="http://www.w3.org/1999/xlink" viewBox="0 0 40 30">\n'
        f'<image width="2" height="2" xlink:href="data:image/png;base64,'
        f'{base64.b64encode(small).decode()}"/>\n'
        f'<image width="40" height="30" href="data:image/png;base64,{wrapped}"/>\n'
        '<text x="1" y="20">Title</text></svg>\n'
    ).encode()
    out, _ = encode(tmp_path, cover=svg, cover_media_type="image/svg+xml")
    (cover,) = covers(out)
    assert bytes(cover) == big


@pytest.mark.parametrize(
    "cover,media_type",
    [
        (b'<svg xmlns="http://www.w3.org/2000/svg"><rect width="5" height="5"/></svg>',
         "image/svg+xml"),
        (bytes(range(256)) * 8, "image/jpeg"),
        (b"\xff\xd8\xff\xe0 definitely not a real jpeg" * 4, "image/jpeg"),
        (png_bytes()[:40], "image/png"),  # truncated PNG
        (b'<svg><image href="data:image/png;base64,AAAAAAAA"/></svg>', None),
    ],
    ids=["svg-no-raster", "garbage", "broken-jpeg", "truncated-png", "svg-bad-raster"],
)  # fmt: skip
def test_unusable_cover_is_left_out(tmp_path, caplog, cover, media_type):
    with caplog.at_level(logging.WARNING, logger="ebook2audio_dask.audio.cover"):
        out, duration = encode(tmp_path, cover=cover, cover_media_type=media_type)
    assert out.exists() and duration == pytest.approx(3.0)
    assert covers(out) == []
    assert "without a cover" in caplog.text


@pytest.fixture
def spawned(monkeypatch):
    """Record every process the encoder starts."""
    procs = []
    real_popen = subprocess.Popen

    def recording_popen(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        procs.append(proc)
        return proc

    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    return procs


def test_iterator_error_kills_ffmpeg_and_removes_output(tmp_path, spawned):
    out = tmp_path / "broken.m4b"
    block = speechlike(1.0).tobytes()

    def failing_blocks():
        for _ in range(5):
            yield block
        raise KeyError("chunk 17 is missing")

    with pytest.raises(KeyError, match="chunk 17"):
        encode_m4b(
            failing_blocks(),
            sample_rate=SR,
            chapters=[ChapterMark("One", 0, 5 * SR)],
            tags=BookTags("Broken"),
            out_path=out,
        )
    assert not out.exists()
    assert spawned and all(proc.poll() is not None for proc in spawned)


def test_ffmpeg_failure_raises_runtime_error(tmp_path, spawned):
    out = tmp_path / "fail.m4b"
    block = speechlike(1.0).tobytes()
    with pytest.raises(RuntimeError, match="ffmpeg") as info:
        encode_m4b(
            (block for _ in range(200)),  # far more than a pipe buffer holds
            sample_rate=SR,
            chapters=[],
            tags=BookTags("Fail"),
            out_path=out,
            bitrate="not-a-bitrate",
        )
    assert "not-a-bitrate" in str(info.value) or "bitrate" in str(info.value).lower()
    assert not out.exists()
    assert all(proc.poll() is not None for proc in spawned)


@pytest.mark.parametrize(
    "blocks,chapters,match",
    [
        ([], [], "empty"),
        ([b"\x00\x00\x00"], [], "partial sample"),
        ([silence(100)], [ChapterMark("A", 0, 200)], "chapters end"),
        ([silence(100)], [ChapterMark("A", 0, 60), ChapterMark("B", 50, 100)], "overlap"),
        ([silence(100)], [ChapterMark("A", 10, 5)], "invalid"),
    ],
)
def test_invalid_input_raises_value_error(tmp_path, spawned, blocks, chapters, match):
    out = tmp_path / "bad.m4b"
    with pytest.raises(ValueError, match=match):
        encode_m4b(blocks, sample_rate=SR, chapters=chapters, tags=BookTags("X"), out_path=out)
    assert not out.exists()
    assert all(proc.poll() is not None for proc in spawned)


def test_empty_chapter_is_dropped(tmp_path, caplog):
    marks = [ChapterMark("Empty", 0, 0), ChapterMark("Real", 0, 3 * SR)]
    with caplog.at_level(logging.WARNING):
        out, _ = encode(tmp_path, chapters=marks)
    assert [c.title for c in mutagen_mp4.MP4(out).chapters] == ["Real"]
    assert "Empty" in caplog.text


# --------------------------------------------------------------------------
# formats.py: the table of output formats


def test_output_formats_are_one_table():
    """``--format``, its validation and docs/outputs.md all list the rows of FORMATS."""
    from ebook2audio_dask.cli.main import cli
    from ebook2audio_dask.errors import UsageError

    convert = cli.commands["convert"]
    choice = next(p for p in convert.params if "--format" in p.opts).type
    assert list(choice.choices) == list(FORMATS)
    for name, info in FORMATS.items():
        assert info.name == name and info.ext == f".{name}"
        assert OutputSpec.resolve(format=name.upper()).info is info
    with pytest.raises(UsageError, match="choose one of m4b, mp3, opus, flac, wav"):
        OutputSpec.resolve(format="aiff")
    docs = (Path(__file__).resolve().parents[1] / "docs" / "outputs.md").read_text("utf-8")
    section = docs.split("## Formats: `--format`", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"^\| `(\w+)`", section, re.M) == list(FORMATS)


def test_format_row_says_how_tags_are_written():
    with pytest.raises(ValueError, match="chapters must be one of"):
        FormatInfo("aiff", ".aiff", "aiff", ("-c:a", "pcm_s16be"), cache=False, chapters="id3")
    with pytest.raises(ValueError, match="cover must be one of"):
        FormatInfo("aiff", ".aiff", "aiff", ("-c:a", "pcm_s16be"), cache=False, cover="apic")
    spec = OutputSpec(format="m4b", bitrate="48k", aac_coder="fast")
    assert spec.codec_args() == ["-c:a", "aac", "-b:a", "48k", "-aac_coder", "fast"]
    mp3 = OutputSpec(format="mp3", bitrate="48k", aac_coder="fast")  # no AAC coder for LAME
    assert mp3.codec_args() == ["-c:a", "libmp3lame", "-b:a", "48k"]
