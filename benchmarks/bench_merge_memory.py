"""Peak memory and speed of the merge step (``encode_m4b``) for long books.

A pool of synthetic, speech-like chunks (harmonic "voiced" sounds with a
syllable-rate envelope and noise bursts, 22050 Hz mono) is written once as
WAV files, like the chunk store holds them.  A 1-hour and a 10-hour book are
then made by cycling through the pool: each chunk is read from disk, decoded
with :func:`~ebook2audio_dask.audio.decode_wav` and streamed, with short
pauses, into :func:`~ebook2audio_dask.audio.encode_m4b` (the merge task's
encoder, :class:`~ebook2audio_dask.audio.formats.PartEncoder`, then its M4B
remux pass), with a chapter every 15 minutes (marks computed from the WAV
headers, as the pipeline does) and a PNG cover.

Each size runs in a fresh child process so that the kernel's peak-RSS
counters (``ru_maxrss``) cover that size alone.  One JSON line is printed per
size::

    {"hours": 10.0, "audio_s": ..., "wall_s": ..., "x_realtime": ...,
     "peak_rss_mb": {"python": ..., "ffmpeg": ..., "combined": ...}, ...}

``python`` and ``ffmpeg`` are the kernel's peaks for this process and for the
ffmpeg child; ``combined`` is the largest sum of both seen by a sampler thread
polling every 20 ms (needs psutil).  The target is < 300 MB whatever the
length of the book.

Usage::

    python benchmarks/bench_merge_memory.py              # 1 h and 10 h
    python benchmarks/bench_merge_memory.py --hours 0.1  # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from ebook2audio_dask.audio import (
    WAV_HEADER_BYTES,
    BookTags,
    ChapterMark,
    decode_wav,
    encode_m4b,
    encode_wav,
    silence,
    wav_info,
)

SAMPLE_RATE = 22050
POOL_SIZE = 48
PAUSE = silence(int(0.25 * SAMPLE_RATE))
CHAPTER_SECONDS = 15 * 60
DEFAULT_WORKDIR = Path(__file__).resolve().parent / "_work" / "merge_memory"


def speechlike_chunk(rng: np.random.Generator) -> np.ndarray:
    """Two to eight seconds of sound with roughly the texture of speech."""
    n = int(rng.uniform(2.0, 8.0) * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    pitch = rng.uniform(90, 220) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.3, 1.2) * t))
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) * rng.uniform(0.2, 1.0) / k for k in range(1, 9))
    syllables = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6)), 0, None)
    hiss = rng.standard_normal(n) * (syllables < 0.1) * 0.3
    signal = 5000 * (voiced * syllables + hiss)
    return np.clip(signal, -32768, 32767).astype(np.int16)


def make_pool(workdir: Path) -> list[Path]:
    """Write the chunk pool (once) and return the WAV paths."""
    chunk_dir = workdir / "chunks"
    chunk_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20240611)
    paths = []
    for i in range(POOL_SIZE):
        path = chunk_dir / f"chunk-{i:03d}.wav"
        chunk = speechlike_chunk(rng)
        if not path.exists():
            path.write_bytes(encode_wav(chunk, SAMPLE_RATE))
        paths.append(path)
    return paths


def tiny_png() -> bytes:
    """A 300x450 PNG cover, written by hand."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    width, height = 300, 450
    raw = b"".join(b"\x00" + bytes((y % 256, 80, 160)) * width for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))  # fmt: skip


class RssSampler(threading.Thread):
    """Poll the RSS of this process and its children; keep the peaks."""

    def __init__(self, interval: float = 0.02):
        super().__init__(daemon=True)
        import psutil

        self.me = psutil.Process()
        self.interval = interval
        self.peak = {"python": 0, "ffmpeg": 0, "combined": 0}
        self.done = threading.Event()

    def run(self):
        import psutil

        while not self.done.wait(self.interval):
            try:
                own = self.me.memory_info().rss
                kids = sum(c.memory_info().rss for c in self.me.children(recursive=True))
            except psutil.Error:  # a child came or went while we looked
                continue
            self.peak["python"] = max(self.peak["python"], own)
            self.peak["ffmpeg"] = max(self.peak["ffmpeg"], kids)
            self.peak["combined"] = max(self.peak["combined"], own + kids)


def run_one(hours: float, workdir: Path, keep: bool) -> dict:
    """Encode one synthetic book of *hours* and measure it (child process)."""
    pool = sorted((workdir / "chunks").glob("chunk-*.wav"))
    lengths = []
    for path in pool:
        with open(path, "rb") as f:
            lengths.append(wav_info(f.read(WAV_HEADER_BYTES))[1])

    # The book's plan: which chunk follows which, and the chapter marks.
    pause = len(PAUSE) // 2
    target = int(hours * 3600 * SAMPLE_RATE)
    order, marks, position, chapter_start = [], [], 0, 0
    rng = np.random.default_rng(7)
    while position < target:
        index = int(rng.integers(len(pool)))
        order.append(index)
        position += lengths[index] + pause
        if position - chapter_start >= CHAPTER_SECONDS * SAMPLE_RATE or position >= target:
            marks.append(ChapterMark(f"Chapter {len(marks) + 1}", chapter_start, position))
            chapter_start = position

    def blocks():
        for index in order:
            samples, _ = decode_wav(pool[index].read_bytes())
            yield samples.tobytes()
            yield PAUSE

    out = workdir / f"book-{hours:g}h.m4b"
    sampler = None
    try:
        sampler = RssSampler()
        sampler.start()
    except ImportError:
        pass
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    from ebook2audio_dask import config

    # The pipeline's way: chapter times resolved after the stream (two passes),
    # with the configured AAC coder.
    seconds = encode_m4b(
        blocks(),
        sample_rate=SAMPLE_RATE,
        chapters=lambda: marks,
        aac_coder=config.get("merge.aac-coder", None),
        tags=BookTags("Synthetic", ("Benchmark",), "en-GB"),
        out_path=out,
        cover=tiny_png(),
        cover_media_type="image/png",
    )
    wall = time.perf_counter() - start
    peak_python = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_ffmpeg = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if sampler is not None:
        sampler.done.set()
        sampler.join()

    from mutagen.mp4 import MP4

    mp4 = MP4(out)
    result = {
        "hours": hours,
        "audio_s": round(seconds, 1),
        "wall_s": round(wall, 1),
        "x_realtime": round(seconds / wall, 1),
        "peak_rss_mb": {
            "python": round(peak_python, 1),
            "ffmpeg": round(peak_ffmpeg, 1),
            "combined": round(sampler.peak["combined"] / 2**20, 1) if sampler else None,
        },
        "python_rss_before_encode_mb": round(rss_before, 1),
        "file_mb": round(out.stat().st_size / 2**20, 1),
        "chapters": len(mp4.chapters),
        "mp4_length_s": round(mp4.info.length, 1),
    }
    if not keep:
        out.unlink()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", default="1,10", help="comma-separated book lengths")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--keep", action="store_true", help="keep the M4B files")
    parser.add_argument("--one", type=float, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args(argv)

    if args.one is not None:
        print(json.dumps(run_one(args.one, args.workdir, args.keep)), flush=True)
        return 0

    make_pool(args.workdir)
    status = 0
    for hours in (float(h) for h in args.hours.split(",")):
        cmd = [sys.executable, os.path.abspath(__file__), "--one", str(hours),
               "--workdir", str(args.workdir)] + (["--keep"] if args.keep else [])  # fmt: skip
        status |= subprocess.run(cmd, check=False).returncode
    return status


if __name__ == "__main__":
    sys.exit(main())
