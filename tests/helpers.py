"""Helpers shared by the end-to-end tests."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(
    *args: str, timeout: float = 600, env: dict | None = None, **kwargs
) -> subprocess.CompletedProcess:
    """Run ``ebook2audio ARGS`` in a fresh process (the installed entry point's module)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "ebook2audio_dask", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=str(ROOT),
        **kwargs,
    )


def load_report(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def check_m4b_against_report(m4b: Path, report: dict, *, expect_cover: bool) -> None:
    """The M4B's chapters, durations, tags, cover and audio agree with its report."""
    from mutagen.mp4 import MP4

    from ebook2audio_dask.audio import decode_to_pcm

    mp4 = MP4(str(m4b))
    chapters = list(mp4.chapters)
    assert [c.title for c in chapters] == [c["title"] for c in report["chapters"]]
    for got, want in zip(chapters, report["chapters"]):
        assert abs(got.start - want["start_s"]) < 0.05, (got.start, want)
    assert abs(mp4.info.length - report["totals"]["audio_s"]) < 0.25
    assert report["chapters"][-1]["end_s"] == report["totals"]["audio_s"]
    assert mp4.tags["\xa9nam"] == [report["title"]]
    if report["authors"]:
        assert mp4.tags["\xa9ART"] == [", ".join(report["authors"])]
    assert ("covr" in mp4.tags) is expect_cover
    with open(m4b, "rb") as f:
        assert f.read(12)[8:12] == b"M4B "
    pcm = decode_to_pcm(str(m4b), 16000).astype(np.float64)
    assert len(pcm) / 16000 > 0.9 * report["totals"]["audio_s"]
    rms = float(np.sqrt(np.mean(pcm**2)))
    assert rms > 300, f"audio is (nearly) silent: RMS {rms:.1f}"
    # every chapter has speech, not only the first
    for ch in report["chapters"]:
        part = pcm[int(ch["start_s"] * 16000) : int(ch["end_s"] * 16000)]
        assert np.sqrt(np.mean(part**2)) > 200, f"chapter {ch['title']!r} is silent"


def _cpu_seconds(run: Callable[[], object]) -> float:
    gc.collect()
    start = time.process_time()
    run()
    return time.process_time() - start


def assert_scales_linearly(
    make: Callable[[int], Callable[[], object]],
    n: int,
    *,
    factor: int = 4,
    limit: float = 6.0,
    repeats: int = 3,
) -> float:
    """Assert that the work ``make(size)`` returns grows about linearly with *size*.

    Times ``make(n)()`` and ``make(factor * n)()`` in CPU seconds of this
    process (:func:`time.process_time`, which other processes on a busy
    machine barely change) and asserts the ratio stays under *limit*: with
    the default factor 4 a linear cost gives about 4, ``n log n`` about 4.5 and
    a quadratic one about 16.  No absolute time limit, so a slow or loaded
    machine does not fail it.  Each size is timed up to *repeats* times and
    the fastest run is kept (the larger one only again while the ratio is
    over *limit*), which damps noise without hiding a real quadratic path.

    Parameters
    ----------
    make : callable
        ``make(size)`` prepares an input of *size* (untimed) and returns the
        call to time.
    n : int
        The smaller size; choose it so that ``make(factor * n)()`` takes a
        second or two, well above timer noise.
    factor, limit, repeats
        Size ratio, largest time ratio accepted, most timings per size.

    Returns
    -------
    float
        The measured time ratio.
    """
    small_run, large_run = make(n), make(factor * n)
    small = min(_cpu_seconds(small_run) for _ in range(repeats))
    large = _cpu_seconds(large_run)
    for _ in range(repeats - 1):
        if large < limit * small:
            break
        large = min(large, _cpu_seconds(large_run))
    ratio = large / max(small, 1e-6)
    assert ratio < limit, (
        f"{factor}x the input took {ratio:.1f}x the CPU time ({small:.3f} s -> {large:.3f} s); "
        f"linear would be about {factor}"
    )
    return ratio


def traced_peak(fn: Callable[[], object]) -> tuple[object, int]:
    """``(result, peak bytes allocated by Python while fn ran)`` (:mod:`tracemalloc`)."""
    tracemalloc.start()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def roman(n: int) -> str:
    """*n* in Roman numerals (the ``CHAPTER XIV.`` headings of generated books)."""
    out = ""
    for value, numeral in ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"),
                           (90, "XC"), (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"),
                           (4, "IV"), (1, "I")):  # fmt: skip
        while n >= value:
            out, n = out + numeral, n - value
    return out


def wrap(paragraph: str, width: int = 70) -> str:
    """*paragraph* in lines of at most *width* characters, cut at spaces, as Gutenberg texts are."""
    lines, current = [], ""
    for word in paragraph.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    return "\n".join(lines + [current])


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    """*predicate()*'s first true value, polled every *interval* s; ``TimeoutError`` naming
    *what* after *timeout* s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


def epubcheck(path: Path) -> list[dict]:
    """Run Debian's epubcheck on *path*; return its messages (fatal, error, warning...).

    ``/usr/bin/epubcheck`` may be a link to the jar itself, run then with ``java -jar``.
    """
    import shutil

    program = shutil.which("epubcheck")
    if program is None:
        pytest.fail("epubcheck is not installed (Debian package epubcheck; .ci/install-dev.sh)")
    real = os.path.realpath(program)
    command = ["java", "-jar", real] if real.endswith(".jar") else [program]
    out = path.with_suffix(".epubcheck.json")
    proc = subprocess.run(
        [*command, str(path), "--json", str(out)], capture_output=True, text=True, timeout=600
    )
    assert out.is_file(), f"epubcheck wrote no report: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return json.loads(out.read_text(encoding="utf-8"))["messages"]
