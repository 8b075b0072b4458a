"""Helpers shared by the end-to-end tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, timeout: float = 600, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run ``ebook2audio ARGS`` in a fresh process (the installed entry point's module)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "ebook2audio_dask", *args],
        capture_output=True, text=True, timeout=timeout, env=full_env, cwd=str(ROOT), **kwargs,
    )


def load_report(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def check_m4b_against_report(m4b: Path, report: dict, *, expect_cover: bool) -> None:
    """The M4B's chapters, durations, tags, cover and audio agree with its report."""
    from mutagen.mp4 import MP4

    from ebook2audio_dask.audio.m4b import decode_to_pcm

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
